//! Values derived from the config and the machine, computed in one place for the arbiter (its
//! memory budget) and the workers (what they run) alike.

use crate::Config;

impl Config {
    /// Preprocessing threads per worker once `0` (auto) is resolved against `cores`.
    pub fn preprocess_threads_per_worker(&self, cores: usize) -> usize {
        if self.batching.preprocess_threads > 0 {
            self.batching.preprocess_threads
        } else {
            (cores / self.server.workers.max(1)).max(1)
        }
    }

    /// ONNX Runtime intra-op threads per worker once `0` (auto) is resolved against `cores`:
    /// the cores shared evenly between the workers, at least one each.
    pub fn threads_per_worker(&self, cores: usize) -> usize {
        if self.model.threads > 0 {
            self.model.threads
        } else {
            (cores / self.server.workers.max(1)).max(1)
        }
    }
}

/// Whether a worker runs lanes: one single-thread session per intra-op thread, so that under
/// load batches run side by side, one thread each. Only a CPU worker (`on_cpu`) with
/// `model.parallel_batches` and more than one intra-op thread does; with one thread there is
/// nothing to split, and a GPU runs one batch at a time.
pub fn runs_lanes(parallel_batches: bool, on_cpu: bool, threads: usize) -> bool {
    parallel_batches && on_cpu && threads > 1
}
