//! The memory budget, checked before any worker starts (at start, reload and TTIN).
//!
//! needed = (N + 1) x per-worker footprint. The +1 is the replacement a rolling reload or a
//! restart loads while the worker it replaces still holds its memory. The capacity is, in
//! order: a declared `memory.limit` (a GPU or host shared with others), the GPU's memory read
//! through NVML for a CUDA model, or the host memory available to this arbiter for a CPU model
//! (the smaller of `MemAvailable` and the cgroup's headroom, plus what its own workers hold).
//!
//! On a CPU with `model.share_weights` (the default), every worker maps one prepared copy of the
//! weights: needed = weights + (N + 1) x private, the private part estimated at 64 MiB.
//! Otherwise the per-worker footprint, when not declared, is estimated from the model file: on CPU,
//! twice the file (ONNX Runtime keeps the weights once as loaded and once re-laid-out for the
//! CPU's kernels) plus 64 MiB of runtime, threads and buffers, which matches the ~250 MB
//! measured per worker for the 94 MB ResNet50; on CUDA, three times the file plus 512 MiB for
//! the CUDA context and cuDNN workspaces.

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
    let (per_worker, per_worker_source, shared) = match config.memory.per_worker {
        Amount::Bytes(b) => (b, "memory.per_worker".to_string(), 0),
        Amount::Auto if shares => {
            let weights = model_size(&config.model.path)?;
            (
                SHARED_PRIVATE,
                "estimated: the weights once, shared, + 64 MiB private per worker".to_string(),
                weights,
            )
        }
        Amount::Auto => {
            let (bytes, source) = estimate_footprint(&config.model.path, config.model.device)?;
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

/// A worker's private memory when the weights are shared: its runtime, buffers and activations
/// (measured 18-35 MiB for ResNet50 at batch 8; rounded up).
const SHARED_PRIVATE: u64 = 64 << 20;

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

fn estimate_footprint(model: &Path, device: Device) -> Result<(u64, String), Error> {
    let size = model_size(model)?;
    Ok(match device {
        Device::Cpu => (
            2 * size + (64 << 20),
            "estimated: 2 x model file + 64 MiB".into(),
        ),
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
        let config =
            Config::parse("[model]\npath = \"m.onnx\"\nshare_weights = false\n", &file).unwrap();
        let b = compute(&config, 2, 0).unwrap();
        assert_eq!(b.per_worker, (2 << 20) + (64 << 20));
        assert!(b.capacity > 0);
        assert_eq!(b.capacity_source, "available host memory");
        // Shared weights count once.
        let text = "[model]\npath = \"m.onnx\"\n[memory]\nlimit = \"1GiB\"\n";
        let b = compute(&Config::parse(text, &file).unwrap(), 4, 0).unwrap();
        assert_eq!((b.shared, b.per_worker), (1 << 20, 64 << 20));
        assert_eq!(b.needed(), (1 << 20) + 5 * (64 << 20));
        assert_eq!(b.max_workers(), 14);
        assert!(
            b.to_string().contains("1.0 MiB shared + (4+1) x 64.0 MiB"),
            "{b}"
        );
    }
}
