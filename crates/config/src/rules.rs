//! Values derived from the config and the machine, computed in one place for the arbiter (its
//! memory budget) and the workers (what they run) alike.

use crate::{Config, Model};

impl Config {
    /// The model `/model_predict` answers with when a request names none.
    pub fn model(&self) -> &Model {
        &self.models[self.default_model]
    }

    /// The model a request names: `name`, at `version` or, without one, at its highest version.
    pub fn find_model(&self, name: &str, version: Option<&str>) -> Option<&Model> {
        find_model(&self.models, name, version, |m| {
            (m.name.as_str(), m.version.as_str())
        })
    }

    /// Preprocessing threads per worker once `0` (auto) is resolved against `cores`.
    pub fn preprocess_threads_per_worker(&self, cores: usize) -> usize {
        if self.batching.preprocess_threads > 0 {
            self.batching.preprocess_threads
        } else {
            (cores / self.server.workers.max(1)).max(1)
        }
    }

    /// `model`'s ONNX Runtime intra-op threads per worker once `0` (auto) is resolved against
    /// `cores`: the cores shared evenly between the workers, at least one each. Each model of a
    /// worker has its own threads.
    pub fn threads_per_worker(&self, model: &Model, cores: usize) -> usize {
        if model.threads > 0 {
            model.threads
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

/// The rule that picks a model by name and optional version among `models` (`key` gives each
/// one's name and version): the exact version, or the highest version of that name. Versions are
/// whole numbers (the config checks it), compared as numbers.
pub fn find_model<'m, M>(
    models: &'m [M],
    name: &str,
    version: Option<&str>,
    key: impl Fn(&M) -> (&str, &str),
) -> Option<&'m M> {
    let named = models.iter().filter(|m| key(m).0 == name);
    match version {
        Some(v) => named.into_iter().find(|m| key(m).1 == v),
        None => named.max_by_key(|m| key(m).1.parse::<u64>().unwrap_or(0)),
    }
}
