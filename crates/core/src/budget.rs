//! The memory budget, checked before any worker starts (at start, reload and TTIN).
//!
//! needed = (N + 1) x per-worker footprint. The +1 is the replacement a rolling reload or a
//! restart loads while the worker it replaces still holds its memory. The capacity is, in
//! order: a declared `memory.limit` (a GPU or host shared with others), the GPU's memory read
//! through NVML for a CUDA model, or the host memory available to this arbiter for a CPU model
//! (the smaller of `MemAvailable` and the cgroup's headroom, plus what its own workers hold).
//!
//! Every worker holds every model, so a worker's footprint is the sum over the models, and each
//! device the models run on has a budget of its own: the CPU models against the host, the CUDA
//! models against their GPU, each checked (a declared `memory.limit` is every device's capacity,
//! a declared `memory.per_worker` a worker's whole footprint on every device it uses). Adding
//! the models in the file's order, a refusal names the first whose addition does not fit.
//!
//! On a CPU with `model.share_weights` (the default), every worker maps one prepared copy of a
//! model's weights: needed = weights + (N + 1) x private. A worker's private memory for a model on
//! a CPU is estimated as 64 MiB (ONNX Runtime's runtime, the worker's own buffers) plus, per
//! intra-op thread, 40 MiB and 10 MiB per image of the model's `max_batch_size` beyond the first:
//! under load each thread runs a session of its own (a lane) holding the activations of its
//! largest batch, beside a decoding thread. The estimate errs high (with several models the
//! 64 MiB is counted for each), so a worker that fits it fits the machine; how it compares with
//! measured peaks is in docs/shared-weights.md.
//!
//! Otherwise a model's per-worker footprint, when not declared, is estimated from its file: on
//! CPU, one copy of the file per session (each loads its own weights: the lanes with
//! `model.parallel_batches` are one session per thread beside the all-thread one) and one more
//! for what ONNX Runtime re-lays out for the CPU's kernels, plus the private part above; at
//! `precision = "bf16"` (OpenVINO, which shares nothing between processes), three times the file
//! per worker (the model as read, compiled for the whole engine and again for the lanes) plus the
//! private part; on CUDA, three times the file plus 512 MiB for the CUDA context and cuDNN
//! workspaces.

use std::fmt;
use std::path::Path;

use arbiter_config::units::format_size;
use arbiter_config::{Amount, Config, Device, Model, Precision};

use crate::Error;

/// One model's part of a device's budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footprint {
    /// The model's name (`name:version` where several entries share the name).
    pub model: String,
    /// Bytes every worker shares for it, counted once: its prepared weights on a CPU.
    pub shared: u64,
    /// Bytes each worker holds for it alone.
    pub private: u64,
}

/// A checked (or checkable) memory budget of one device: the host, or one GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// Workers asked for.
    pub workers: usize,
    /// One worker's footprint on this device in bytes, every model of the device summed.
    pub per_worker: u64,
    /// Where `per_worker` came from.
    pub per_worker_source: String,
    /// The capacity in bytes.
    pub capacity: u64,
    /// Where `capacity` came from.
    pub capacity_source: String,
    /// What the capacity is called in messages: "the GPU cuda:0", "the host".
    pub device: String,
    /// Memory every worker shares, counted once: the weights of prepared models on a CPU.
    pub shared: u64,
    /// The models on this device in the file's order, with their estimated parts; empty when
    /// `memory.per_worker` is declared (a whole worker's figure, not split by model).
    pub models: Vec<Footprint>,
}

impl Budget {
    /// Bytes needed: shared + (N + 1) x per worker.
    pub fn needed(&self) -> u64 {
        needed(self.workers, self.shared, self.per_worker)
    }

    /// The most workers that fit.
    pub fn max_workers(&self) -> usize {
        (self.capacity.saturating_sub(self.shared) / self.per_worker.max(1)).saturating_sub(1)
            as usize
    }

    fn formula(&self) -> String {
        formula(self.workers, self.shared, self.per_worker)
    }

    /// Refuses a budget that does not fit, naming the numbers.
    pub fn check(&self) -> Result<(), Error> {
        if self.needed() <= self.capacity {
            return Ok(());
        }
        Err(Error::OverBudget(format!(
            "{} workers need {} ({}) but {} has {}: at most {} fit",
            self.workers,
            format_size(self.needed()),
            self.formula(),
            self.device,
            format_size(self.capacity),
            self.max_workers()
        )))
    }

    /// Like [`Budget::check`], but names the first model (in the file's order) whose addition
    /// does not fit, with the figures of the models up to it.
    pub fn check_naming(&self) -> Result<(), Error> {
        if self.needed() <= self.capacity || self.models.is_empty() {
            return self.check();
        }
        let (mut shared, mut private) = (0, 0);
        for (i, m) in self.models.iter().enumerate() {
            shared += m.shared;
            private += m.private;
            let need = needed(self.workers, shared, private);
            if need <= self.capacity {
                continue;
            }
            let names: Vec<String> = self.models[..=i]
                .iter()
                .map(|m| format!("`{}`", m.model))
                .collect();
            let of = if i == 0 {
                String::new()
            } else {
                format!(" for {}", join_and(&names))
            };
            let all = if i + 1 == self.models.len() {
                String::new()
            } else {
                format!(" with all {} of its models", self.models.len())
            };
            return Err(Error::OverBudget(format!(
                "model `{}` does not fit: {} workers need {}{of} ({}) but {} has {}: at most {} fit{all}",
                m.model,
                self.workers,
                format_size(need),
                formula(self.workers, shared, private),
                self.device,
                format_size(self.capacity),
                self.max_workers()
            )));
        }
        self.check()
    }
}

fn needed(workers: usize, shared: u64, per_worker: u64) -> u64 {
    shared + (workers as u64 + 1) * per_worker
}

fn formula(workers: usize, shared: u64, per_worker: u64) -> String {
    let per = format!("({workers}+1) x {}", format_size(per_worker));
    if shared == 0 {
        per
    } else {
        format!("{} shared + {per}", format_size(shared))
    }
}

/// "`a`", "`a` and `b`", "`a`, `b` and `c`".
fn join_and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} workers need {} ({}, {}); {} has {} ({}); at most {} fit",
            self.workers,
            format_size(self.needed()),
            self.formula(),
            self.per_worker_source,
            self.device,
            format_size(self.capacity),
            self.capacity_source,
            self.max_workers()
        )
    }
}

/// The budgets of every device the models run on, in the order the file first names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budgets {
    /// One budget per device; never empty.
    pub devices: Vec<Budget>,
    /// Whether the config has several models, so that a refusal names the one that does not fit.
    pub several_models: bool,
}

impl Budgets {
    /// Refuses the first device whose budget does not fit; with several models, naming the
    /// first model whose addition does not fit.
    pub fn check(&self) -> Result<(), Error> {
        for b in &self.devices {
            if self.several_models {
                b.check_naming()?;
            } else {
                b.check()?;
            }
        }
        Ok(())
    }

    /// The most workers that fit every device.
    pub fn max_workers(&self) -> usize {
        self.devices
            .iter()
            .map(Budget::max_workers)
            .min()
            .unwrap_or(0)
    }
}

impl fmt::Display for Budgets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.devices.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{b}")?;
        }
        Ok(())
    }
}

/// Computes the budgets for `workers` workers of `config`, one per device its models run on;
/// `held` is what this arbiter's running workers hold now (they are replaced, not added to, by a
/// reload), counted back into the host's available memory.
pub fn compute(config: &Config, workers: usize, held: u64) -> Result<Budgets, Error> {
    let mut devices: Vec<(Device, Vec<&Model>)> = Vec::new();
    for model in &config.models {
        match devices.iter_mut().find(|(d, _)| *d == model.device) {
            Some((_, models)) => models.push(model),
            None => devices.push((model.device, vec![model])),
        }
    }
    let devices = devices
        .into_iter()
        .map(|(device, models)| device_budget(config, device, &models, workers, held))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Budgets {
        devices,
        several_models: config.models.len() > 1,
    })
}

fn device_budget(
    config: &Config,
    device: Device,
    models: &[&Model],
    workers: usize,
    held: u64,
) -> Result<Budget, Error> {
    let (per_worker, per_worker_source, shared, footprints) = match config.memory.per_worker {
        Amount::Bytes(b) => (b, "memory.per_worker".to_string(), 0, Vec::new()),
        Amount::Auto => {
            let mut footprints = Vec::new();
            let mut sources = Vec::new();
            for model in models {
                let (footprint, source) = estimate(config, model)?;
                sources.push(format!("`{}` {source}", footprint.model));
                if models.len() == 1 {
                    sources = vec![source];
                }
                footprints.push(footprint);
            }
            let source = if models.len() == 1 {
                format!("estimated: {}", sources.join(""))
            } else {
                format!("estimated per model: {}", sources.join(", "))
            };
            (
                footprints.iter().map(|f| f.private).sum(),
                source,
                footprints.iter().map(|f| f.shared).sum(),
                footprints,
            )
        }
    };
    let (capacity, capacity_source, name) = match (config.memory.limit, device) {
        (Amount::Bytes(b), Device::Cpu) => (b, "memory.limit".to_string(), "the host".to_string()),
        (Amount::Bytes(b), Device::Cuda(n)) => {
            (b, "memory.limit".to_string(), format!("the GPU cuda:{n}"))
        }
        (Amount::Auto, Device::Cuda(n)) => {
            let total = crate::sys::nvml_total_memory(n).map_err(|e| {
                Error::Budget(format!(
                    "model.device is cuda:{n} but its memory cannot be read: {e}. Declare it with memory.limit (like \"12GiB\") to run without NVML"
                ))
            })?;
            (total, "NVML".to_string(), format!("the GPU cuda:{n}"))
        }
        (Amount::Auto, Device::Cpu) => {
            let available = host_available().map_err(Error::Budget)?;
            (
                available + held,
                "available host memory".to_string(),
                "the host".to_string(),
            )
        }
    };
    Ok(Budget {
        workers,
        per_worker,
        per_worker_source,
        capacity,
        capacity_source,
        device: name,
        shared,
        models: footprints,
    })
}
/// `model`'s part of a worker's memory, and where the figure comes from.
fn estimate(config: &Config, model: &Model) -> Result<(Footprint, String), Error> {
    let size = model_size(&model.path).map_err(|e| match e {
        Error::Budget(why) if config.models.len() > 1 => {
            Error::Budget(format!("model `{}`: {why}", label(config, model)))
        }
        e => e,
    })?;
    let private = cpu_private(config, model);
    let (shared, private, source) = match model.device {
        // One OpenVINO process holds the FP32 weights as read (the two compilations share
        // them) and a BF16 copy per compilation (crates/infer/src/openvino.rs).
        Device::Cpu if model.precision == Precision::Bf16 => (
            0,
            3 * size + private,
            format!(
                "3 x model file (OpenVINO at bf16, unshared) + {} private",
                format_size(private)
            ),
        ),
        Device::Cpu if model.share_weights => (
            size,
            private,
            format!(
                "the weights once, shared, + {} private per worker",
                format_size(private)
            ),
        ),
        Device::Cpu => {
            let copies = sessions_per_worker(config, model) + 1;
            (
                0,
                copies * size + private,
                format!("{copies} x model file + {} private", format_size(private)),
            )
        }
        Device::Cuda(_) => (0, 3 * size + (512 << 20), "3 x model file + 512 MiB".into()),
    };
    let footprint = Footprint {
        model: label(config, model),
        shared,
        private,
    };
    Ok((footprint, source))
}

/// How messages name `model`: its name, with its version where several entries share the name.
fn label(config: &Config, model: &Model) -> String {
    if config
        .models
        .iter()
        .filter(|m| m.name == model.name)
        .count()
        > 1
    {
        format!("{}:{}", model.name, model.version)
    } else {
        model.name.clone()
    }
}

/// A worker's private memory for `model` on a CPU, besides the weights (see the module's
/// documentation; the measurements behind it are in docs/shared-weights.md): 64 MiB, plus per
/// intra-op thread 40 MiB and 10 MiB per image of the model's largest batch beyond the first.
fn cpu_private(config: &Config, model: &Model) -> u64 {
    let threads = threads_per_worker(config, model) as u64;
    let extra_images = model.batching.max_batch_size.max(1) as u64 - 1;
    (64 << 20) + threads * ((40 << 20) + extra_images * (10 << 20))
}

fn threads_per_worker(config: &Config, model: &Model) -> usize {
    config.threads_per_worker(
        model,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    )
}

/// ONNX Runtime sessions per worker for `model`: the all-thread one, and on a CPU with
/// `parallel_batches` and several threads, one single-thread lane per thread.
fn sessions_per_worker(config: &Config, model: &Model) -> u64 {
    let threads = threads_per_worker(config, model);
    let on_cpu = model.device == Device::Cpu;
    if arbiter_config::runs_lanes(model.parallel_batches, on_cpu, threads) {
        1 + threads as u64
    } else {
        1
    }
}

fn model_size(model: &Path) -> Result<u64, Error> {
    Ok(std::fs::metadata(model)
        .map_err(|e| {
            Error::Budget(format!(
                "cannot size the model {} to estimate a worker's memory: {e}",
                model.display()
            ))
        })?
        .len())
}

/// Host memory this process could still use: `MemAvailable`, capped by the cgroup's headroom.
fn host_available() -> Result<u64, String> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")
        .map_err(|e| format!("cannot read /proc/meminfo: {e}"))?;
    let available = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or("no MemAvailable in /proc/meminfo")?;
    let cgroup = |name: &str| {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{name}"))
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
    };
    // cgroup v2, else v1 (a v1 "no limit" is a huge number, which min() ignores).
    let headroom = match (cgroup("memory.max"), cgroup("memory.current")) {
        (Some(max), Some(current)) => Some(max.saturating_sub(current)),
        _ => match (
            cgroup("memory/memory.limit_in_bytes"),
            cgroup("memory/memory.usage_in_bytes"),
        ) {
            (Some(max), Some(current)) => Some(max.saturating_sub(current)),
            _ => None,
        },
    };
    Ok(headroom.map_or(available, |h| available.min(h)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(workers: usize, per_worker: u64, capacity: u64) -> Budget {
        Budget {
            workers,
            per_worker,
            per_worker_source: "memory.per_worker".into(),
            capacity,
            capacity_source: "memory.limit".into(),
            device: "the GPU cuda:0".into(),
            shared: 0,
            models: Vec::new(),
        }
    }

    #[test]
    fn refusal_names_the_numbers_and_the_largest_n() {
        let err = budget(4, 3 << 30, 12 << 30).check().unwrap_err();
        assert_eq!(
            err.to_string(),
            "4 workers need 15.0 GiB ((4+1) x 3.0 GiB) but the GPU cuda:0 has 12.0 GiB: at most 3 fit"
        );
        assert!(budget(3, 3 << 30, 12 << 30).check().is_ok());
        assert_eq!(budget(1, 8 << 30, 12 << 30).max_workers(), 0);
    }

    #[test]
    fn declared_amounts_are_used_as_is() {
        let text = "[memory]\nlimit = \"12GiB\"\nper_worker = \"3GiB\"\n[server]\nworkers = 4\n";
        let config = Config::parse(text, Path::new("/x/arbiter.toml")).unwrap();
        let b = &compute(&config, 4, 0).unwrap().devices[0];
        assert_eq!((b.per_worker, b.capacity), (3 << 30, 12 << 30));
        assert!(b.check().is_err());
    }

    #[test]
    fn cuda_without_nvml_is_a_clear_error() {
        let text = "[model]\ndevice = \"cuda:0\"\n[memory]\nper_worker = \"1GiB\"\n";
        let config = Config::parse(text, Path::new("/x/arbiter.toml")).unwrap();
        match compute(&config, 1, 0) {
            // A machine with an NVIDIA driver reads the real size.
            Ok(b) => assert_eq!(b.devices[0].capacity_source, "NVML"),
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("cuda:0") && msg.contains("NVML") && msg.contains("memory.limit"),
                    "{msg}"
                );
            }
        }
    }

    #[test]
    fn cpu_auto_reads_host_memory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.onnx"), vec![0u8; 1 << 20]).unwrap();
        let file = dir.path().join("a.toml");
        let config = Config::parse(
            "[model]\npath = \"m.onnx\"\nthreads = 1\nshare_weights = false\n",
            &file,
        )
        .unwrap();
        let b = &compute(&config, 2, 0).unwrap().devices[0];
        assert_eq!(b.per_worker, (2 << 20) + (104 << 20));
        assert_eq!(
            b.per_worker_source,
            "estimated: 2 x model file + 104.0 MiB private"
        );
        // Unshared lanes load the weights once each.
        let text = "[model]\npath = \"m.onnx\"\nthreads = 2\nshare_weights = false\n";
        let b = &compute(&Config::parse(text, &file).unwrap(), 1, 0)
            .unwrap()
            .devices[0];
        assert_eq!(b.per_worker, (4 << 20) + (144 << 20));
        let text = format!("{text}parallel_batches = false\n");
        let b = &compute(&Config::parse(&text, &file).unwrap(), 1, 0)
            .unwrap()
            .devices[0];
        assert_eq!(b.per_worker, (2 << 20) + (144 << 20));
        assert!(b.capacity > 0);
        assert_eq!(b.capacity_source, "available host memory");
        // OpenVINO at BF16 shares nothing: three copies per worker.
        let text = "[model]\npath = \"m.onnx\"\nthreads = 1\nprecision = \"bf16\"\n";
        let b = &compute(&Config::parse(text, &file).unwrap(), 2, 0)
            .unwrap()
            .devices[0];
        assert_eq!((b.shared, b.per_worker), (0, (3 << 20) + (104 << 20)));
        assert!(b.per_worker_source.contains("OpenVINO at bf16"), "{b:?}");
        // Shared weights count once.
        let text = "[model]\npath = \"m.onnx\"\nthreads = 1\n[memory]\nlimit = \"1GiB\"\n";
        let b = &compute(&Config::parse(text, &file).unwrap(), 4, 0)
            .unwrap()
            .devices[0];
        assert_eq!((b.shared, b.per_worker), (1 << 20, 104 << 20));
        assert_eq!(b.needed(), (1 << 20) + 5 * (104 << 20));
        assert_eq!(b.max_workers(), 8);
        assert!(
            b.to_string().contains("1.0 MiB shared + (4+1) x 104.0 MiB"),
            "{b}"
        );
    }

    /// The private part grows with the threads (a session each under load) and the batch.
    #[test]
    fn cpu_private_memory_counts_threads_and_batch() {
        let config = |extra: &str| {
            let text = format!("[model]\n{extra}\n[server]\nworkers = 2\n");
            Config::parse(&text, Path::new("/x/arbiter.toml")).unwrap()
        };
        let cpu_private = |c: &Config| super::cpu_private(c, c.model());
        assert_eq!(cpu_private(&config("threads = 1")), 104 << 20);
        assert_eq!(cpu_private(&config("threads = 2")), 144 << 20);
        let batch4 = config("threads = 2\n[batching]\nmax_batch_size = 4");
        assert_eq!(cpu_private(&batch4), (144 + 2 * 30) << 20);
        // threads = 0: the cores shared between the workers, at least one each.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let auto = (cores / 2).max(1);
        assert_eq!(cpu_private(&config("")), (64 + 40 * auto) << 20);
    }

    /// Writes three 1 MiB models in a temp dir; `models` is the config's `[[model]]` part.
    fn several(models: &str, tail: &str) -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a", "b", "c"] {
            std::fs::write(dir.path().join(format!("{name}.onnx")), vec![0u8; 1 << 20]).unwrap();
        }
        let file = dir.path().join("arbiter.toml");
        let config = Config::parse(&format!("{models}{tail}"), &file).unwrap();
        (dir, config)
    }

    const ABC: &str = "[[model]]\nname = \"a\"\npath = \"a.onnx\"\nthreads = 1\n\
        [[model]]\nname = \"b\"\npath = \"b.onnx\"\nthreads = 1\nshare_weights = false\n\
        [[model]]\nname = \"c\"\npath = \"c.onnx\"\nthreads = 1\n\
        [model.batching]\nmax_batch_size = 4\n";

    /// Each model counts its own weights once (shared) or per worker, and its own threads and
    /// batch in its private part; the worker's footprint is their sum.
    #[test]
    fn several_models_sum_on_one_device() {
        let (_dir, config) = several(ABC, "[memory]\nlimit = \"4GiB\"\n[server]\nworkers = 2\n");
        let budgets = compute(&config, 2, 0).unwrap();
        assert_eq!(budgets.devices.len(), 1);
        let b = &budgets.devices[0];
        let parts: Vec<(&str, u64, u64)> = b
            .models
            .iter()
            .map(|f| (f.model.as_str(), f.shared, f.private))
            .collect();
        // a: shared, 64 + 40 MiB private; b: unshared, 2 copies + 104 MiB; c: shared, batch 4.
        assert_eq!(
            parts,
            [
                ("a", 1 << 20, 104 << 20),
                ("b", 0, (2 << 20) + (104 << 20)),
                ("c", 1 << 20, (104 + 30) << 20),
            ]
        );
        assert_eq!((b.shared, b.per_worker), (2 << 20, 344 << 20));
        assert_eq!(b.needed(), (2 << 20) + 3 * (344 << 20));
        assert!(budgets.check().is_ok());
        assert!(
            b.per_worker_source
                .starts_with("estimated per model: `a` the weights once")
        );
        assert!(
            budgets
                .to_string()
                .contains("2.0 MiB shared + (2+1) x 344.0 MiB")
        );
    }

    /// The refusal names the first model, in the file's order, whose addition does not fit.
    #[test]
    fn refusal_names_the_first_model_that_does_not_fit() {
        // a alone: 1 + 3 x 104 = 313 MiB; a and b: 1 + 3 x 210 = 631 MiB; all: 2 + 3 x 344.
        let (_dir, config) = several(ABC, "[memory]\nlimit = \"700MiB\"\n[server]\nworkers = 2\n");
        let err = compute(&config, 2, 0).unwrap().check().unwrap_err();
        assert_eq!(
            err.to_string(),
            "model `c` does not fit: 2 workers need 1.0 GiB for `a`, `b` and `c` (2.0 MiB shared + (2+1) x 344.0 MiB) but the host has 700.0 MiB: at most 1 fit"
        );
        let (_dir, config) = several(ABC, "[memory]\nlimit = \"500MiB\"\n[server]\nworkers = 2\n");
        let err = compute(&config, 2, 0).unwrap().check().unwrap_err();
        assert_eq!(
            err.to_string(),
            "model `b` does not fit: 2 workers need 631.0 MiB for `a` and `b` (1.0 MiB shared + (2+1) x 210.0 MiB) but the host has 500.0 MiB: at most 0 fit with all 3 of its models"
        );
        let (_dir, config) = several(ABC, "[memory]\nlimit = \"300MiB\"\n[server]\nworkers = 2\n");
        let err = compute(&config, 2, 0).unwrap().check().unwrap_err();
        assert!(
            err.to_string().starts_with("model `a` does not fit: 2 workers need 313.0 MiB (1.0 MiB shared + (2+1) x 104.0 MiB) but the host"),
            "{err}"
        );
        // A declared per-worker footprint is the whole worker's: no model to name.
        let tail = "[memory]\nlimit = \"1GiB\"\nper_worker = \"400MiB\"\n[server]\nworkers = 2\n";
        let (_dir, config) = several(ABC, tail);
        let err = compute(&config, 2, 0).unwrap().check().unwrap_err();
        assert_eq!(
            err.to_string(),
            "2 workers need 1.2 GiB ((2+1) x 400.0 MiB) but the host has 1.0 GiB: at most 1 fit"
        );
    }

    /// CPU models count against the host, CUDA models against their GPU, each budget checked.
    #[test]
    fn each_device_has_its_own_budget() {
        let models = "[[model]]\nname = \"a\"\npath = \"a.onnx\"\nthreads = 1\n\
            [[model]]\nname = \"b\"\npath = \"b.onnx\"\ndevice = \"cuda:0\"\n\
            [[model]]\nname = \"c\"\npath = \"c.onnx\"\ndevice = \"cuda:1\"\n";
        let (_dir, config) = several(
            models,
            "[memory]\nlimit = \"1200MiB\"\n[server]\nworkers = 1\n",
        );
        let budgets = compute(&config, 1, 0).unwrap();
        let devices: Vec<(&str, u64, u64)> = budgets
            .devices
            .iter()
            .map(|b| (b.device.as_str(), b.shared, b.per_worker))
            .collect();
        assert_eq!(
            devices,
            [
                ("the host", 1 << 20, 104 << 20),
                ("the GPU cuda:0", 0, 515 << 20),
                ("the GPU cuda:1", 0, 515 << 20),
            ]
        );
        assert!(budgets.check().is_ok());
        assert_eq!(budgets.max_workers(), 1);
        // Two workers: the host still fits, the first GPU does not, and it names its model.
        let err = compute(&config, 2, 0).unwrap().check().unwrap_err();
        assert_eq!(
            err.to_string(),
            "model `b` does not fit: 2 workers need 1.5 GiB ((2+1) x 515.0 MiB) but the GPU cuda:0 has 1.2 GiB: at most 1 fit"
        );
    }

    /// Entries that share a name are named with their version.
    #[test]
    fn a_shared_name_is_told_apart_by_version() {
        let models = "[[model]]\nname = \"a\"\nversion = \"1\"\npath = \"a.onnx\"\nthreads = 1\n\
            [[model]]\nname = \"a\"\nversion = \"2\"\npath = \"b.onnx\"\nthreads = 1\n";
        let (_dir, config) = several(models, "[memory]\nlimit = \"500MiB\"\n");
        let err = compute(&config, 2, 0).unwrap().check().unwrap_err();
        assert!(
            err.to_string().starts_with("model `a:2` does not fit:"),
            "{err}"
        );
        // A model whose file is missing is named.
        std::fs::remove_file(config.models[1].path.clone()).unwrap();
        let err = compute(&config, 2, 0).unwrap_err().to_string();
        assert!(err.contains("model `a:2`: cannot size the model"), "{err}");
    }
}
