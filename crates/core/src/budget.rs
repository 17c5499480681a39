//! The memory budget, checked before any worker starts (at start, reload and TTIN).
//!
//! needed = (N + 1) x per-worker footprint. The +1 is the replacement a rolling reload or a
//! restart loads while the worker it replaces still holds its memory. The capacity is, in
//! order: a declared `memory.limit` (a GPU or host shared with others), the GPU's memory read
//! through NVML for a CUDA model, or the host memory available to this arbiter for a CPU model
//! (the smaller of `MemAvailable` and the cgroup's headroom, plus what its own workers hold).
//!
//! On a CPU with `model.share_weights` (the default), every worker maps one prepared copy of the
//! weights: needed = weights + (N + 1) x private. A worker's private memory on a CPU is estimated
//! as 64 MiB (ONNX Runtime's runtime, the worker's own buffers) plus, per intra-op thread, 40 MiB
//! and 10 MiB per image of `max_batch_size` beyond the first: under load each thread runs a
//! session of its own (a lane) holding the activations of its largest batch, beside a decoding
//! thread. The estimate errs high, so a worker that fits it fits the machine; how it compares
//! with measured peaks is in docs/shared-weights.md.
//!
//! Otherwise the per-worker footprint, when not declared, is estimated from the model file: on CPU,
//! one copy of the file per session (each loads its own weights: the lanes with
//! `model.parallel_batches` are one session per thread beside the all-thread one) and one more
//! for what ONNX Runtime re-lays out for the CPU's kernels, plus the private part above; on
//! CUDA, three times the file plus 512 MiB for the CUDA context and cuDNN workspaces.

use std::fmt;
use std::path::Path;

use arbiter_config::units::format_size;
use arbiter_config::{Amount, Config, Device};

use crate::Error;

/// A checked (or checkable) memory budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// Workers asked for.
    pub workers: usize,
    /// One worker's footprint in bytes.
    pub per_worker: u64,
    /// Where `per_worker` came from.
    pub per_worker_source: String,
    /// The capacity in bytes.
    pub capacity: u64,
    /// Where `capacity` came from.
    pub capacity_source: String,
    /// What the capacity is called in messages: "the GPU", "the host", "memory.limit".
    pub device: String,
    /// Memory every worker shares, counted once: the weights of a prepared model on a CPU.
    pub shared: u64,
}

impl Budget {
    /// Bytes needed: shared + (N + 1) x per worker.
    pub fn needed(&self) -> u64 {
        self.shared + (self.workers as u64 + 1) * self.per_worker
    }

    /// The most workers that fit.
    pub fn max_workers(&self) -> usize {
        (self.capacity.saturating_sub(self.shared) / self.per_worker.max(1)).saturating_sub(1)
            as usize
    }

    fn formula(&self) -> String {
        let per = format!("({}+1) x {}", self.workers, format_size(self.per_worker));
        if self.shared == 0 {
            per
        } else {
            format!("{} shared + {per}", format_size(self.shared))
        }
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

/// Computes the budget for `workers` workers of `config`; `held` is what this arbiter's running
/// workers hold now (they are replaced, not added to, by a reload), counted back into the host's
/// available memory.
pub fn compute(config: &Config, workers: usize, held: u64) -> Result<Budget, Error> {
    let shares = config.model.share_weights && config.model.device == Device::Cpu;
    let private = cpu_private(config);
    let (per_worker, per_worker_source, shared) = match config.memory.per_worker {
        Amount::Bytes(b) => (b, "memory.per_worker".to_string(), 0),
        Amount::Auto if shares => {
            let weights = model_size(&config.model.path)?;
            (
                private,
                format!(
                    "estimated: the weights once, shared, + {} private per worker",
                    format_size(private)
                ),
                weights,
            )
        }
        Amount::Auto => {
            let (bytes, source) = estimate_footprint(config, private)?;
            (bytes, source, 0)
        }
    };
    let (capacity, capacity_source, device) = match (config.memory.limit, config.model.device) {
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
        device,
        shared,
    })
}

/// A worker's private memory on a CPU, besides the weights (see the module's documentation; the
/// measurements behind it are in docs/shared-weights.md): 64 MiB, plus per intra-op thread 40 MiB
/// and 10 MiB per image of the largest batch beyond the first.
fn cpu_private(config: &Config) -> u64 {
    let threads = threads_per_worker(config) as u64;
    let extra_images = config.batching.max_batch_size.max(1) as u64 - 1;
    (64 << 20) + threads * ((40 << 20) + extra_images * (10 << 20))
}

fn threads_per_worker(config: &Config) -> usize {
    config.threads_per_worker(std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// ONNX Runtime sessions per worker: the all-thread one, and on a CPU with `parallel_batches`
/// and several threads, one single-thread lane per thread.
fn sessions_per_worker(config: &Config) -> u64 {
    let threads = threads_per_worker(config);
    let on_cpu = config.model.device == Device::Cpu;
    if arbiter_config::runs_lanes(config.model.parallel_batches, on_cpu, threads) {
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

fn estimate_footprint(config: &Config, cpu_private: u64) -> Result<(u64, String), Error> {
    let size = model_size(&config.model.path)?;
    Ok(match config.model.device {
        Device::Cpu => {
            let copies = sessions_per_worker(config) + 1;
            (
                copies * size + cpu_private,
                format!(
                    "estimated: {copies} x model file + {} private",
                    format_size(cpu_private)
                ),
            )
        }
        Device::Cuda(_) => (
            3 * size + (512 << 20),
            "estimated: 3 x model file + 512 MiB".into(),
        ),
    })
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
        let b = compute(&config, 4, 0).unwrap();
        assert_eq!((b.per_worker, b.capacity), (3 << 30, 12 << 30));
        assert!(b.check().is_err());
    }

    #[test]
    fn cuda_without_nvml_is_a_clear_error() {
        let text = "[model]\ndevice = \"cuda:0\"\n[memory]\nper_worker = \"1GiB\"\n";
        let config = Config::parse(text, Path::new("/x/arbiter.toml")).unwrap();
        match compute(&config, 1, 0) {
            // A machine with an NVIDIA driver reads the real size.
            Ok(b) => assert_eq!(b.capacity_source, "NVML"),
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
        let b = compute(&config, 2, 0).unwrap();
        assert_eq!(b.per_worker, (2 << 20) + (104 << 20));
        assert_eq!(
            b.per_worker_source,
            "estimated: 2 x model file + 104.0 MiB private"
        );
        // Unshared lanes load the weights once each.
        let text = "[model]\npath = \"m.onnx\"\nthreads = 2\nshare_weights = false\n";
        let b = compute(&Config::parse(text, &file).unwrap(), 1, 0).unwrap();
        assert_eq!(b.per_worker, (4 << 20) + (144 << 20));
        let text = format!("{text}parallel_batches = false\n");
        let b = compute(&Config::parse(&text, &file).unwrap(), 1, 0).unwrap();
        assert_eq!(b.per_worker, (2 << 20) + (144 << 20));
        assert!(b.capacity > 0);
        assert_eq!(b.capacity_source, "available host memory");
        // Shared weights count once.
        let text = "[model]\npath = \"m.onnx\"\nthreads = 1\n[memory]\nlimit = \"1GiB\"\n";
        let b = compute(&Config::parse(text, &file).unwrap(), 4, 0).unwrap();
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
        assert_eq!(cpu_private(&config("threads = 1")), 104 << 20);
        assert_eq!(cpu_private(&config("threads = 2")), 144 << 20);
        let batch4 = config("threads = 2\n[batching]\nmax_batch_size = 4");
        assert_eq!(cpu_private(&batch4), (144 + 2 * 30) << 20);
        // threads = 0: the cores shared between the workers, at least one each.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let auto = (cores / 2).max(1);
        assert_eq!(cpu_private(&config("")), (64 + 40 * auto) << 20);
    }
}
