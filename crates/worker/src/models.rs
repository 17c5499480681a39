//! The models one worker serves, found by name and version.
//!
//! Each model has its own inference queue (its queue, its batches, its ONNX Runtime threads and
//! lanes), labels, recipe and block of the scoreboard, so a flood of requests to one model fills
//! that model's queue and gets that model's 503s while the others keep their places. What the
//! models share is the worker: its listeners, its connections, its body memory and its decoding
//! threads.

use arbiter_infer::Labels;
use arbiter_scoreboard::ModelRef;

use crate::batcher::InferenceQueue;
use crate::error::ApiError;
use crate::options::Batching;
use crate::pipeline::Recipe;

// Every model the config allows has its block in the worker's scoreboard slot.
const _: () = assert!(arbiter_config::defaults::MAX_MODELS <= arbiter_scoreboard::MAX_MODELS);

/// One model, loaded and serving.
#[derive(Debug)]
pub struct ServedModel {
    /// Its name in `?model=`, the KServe v2 routes, metrics and logs.
    pub name: String,
    /// Its version in the KServe v2 routes.
    pub version: String,
    /// Its class names.
    pub labels: Labels,
    /// Outputs above this are labels (the threshold and sigmoid outputs).
    pub threshold: f32,
    /// How an image becomes its input, and its outputs the answer.
    pub recipe: Recipe,
    /// Its inference queue.
    pub queue: InferenceQueue,
    /// Its batching (Triton's model configuration shows it).
    pub batching: Batching,
    /// Whether it runs on a GPU.
    pub on_gpu: bool,
    /// Its nice value (`model.nice`): its inference threads took it when they started; its
    /// requests are prepared at it or the HTTP thread's, whichever is higher.
    pub nice: i32,
    /// Its block of the worker's scoreboard slot.
    pub stats: ModelRef,
}

/// Every model of the worker, and which one a request that names none gets.
#[derive(Debug)]
pub struct Models {
    list: Vec<ServedModel>,
    default: usize,
}

impl Models {
    /// The models in the config's order; `default` indexes the default one.
    ///
    /// # Panics
    ///
    /// If `list` is empty or `default` is out of range (the config never allows either).
    pub fn new(list: Vec<ServedModel>, default: usize) -> Models {
        assert!(
            default < list.len(),
            "no default model among {}",
            list.len()
        );
        Models { list, default }
    }

    /// The model a request that names none gets.
    pub fn default_model(&self) -> &ServedModel {
        &self.list[self.default]
    }

    /// Every model, in the config's order.
    pub fn iter(&self) -> impl Iterator<Item = &ServedModel> {
        self.list.iter()
    }

    /// The versions served under `name`, in the config's order.
    pub(crate) fn versions(&self, name: &str) -> Vec<&str> {
        self.list
            .iter()
            .filter(|m| m.name == name)
            .map(|m| m.version.as_str())
            .collect()
    }

    /// The model `name` at `version`, or at its highest version (the config's rule); a 404 that
    /// lists what is served otherwise.
    pub(crate) fn find(&self, name: &str, version: Option<&str>) -> Result<&ServedModel, ApiError> {
        fn key(m: &ServedModel) -> (&str, &str) {
            (&m.name, &m.version)
        }
        if let Some(model) = arbiter_config::find_model(&self.list, name, version, key) {
            return Ok(model);
        }
        let versions = self.versions(name);
        Err(ApiError::ModelNotFound(
            match (versions.is_empty(), version) {
                (false, Some(v)) => format!(
                    "model `{name}` has no version `{v}`; it has {}",
                    versions.join(", ")
                ),
                _ => {
                    let names: Vec<&str> = self.list.iter().map(|m| m.name.as_str()).collect();
                    let mut names = names;
                    names.dedup();
                    format!(
                        "unknown model `{name}`; this server serves {}",
                        names
                            .iter()
                            .map(|n| format!("`{n}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            },
        ))
    }
}
