//! What the inference thread runs: a [`Backend`] (the real model, or a fake in tests) and what
//! the HTTP layer needs to know of it.

use std::time::Duration;

use arbiter_config::{ElementType, TensorLayout};
use arbiter_infer::InferError;

use crate::tensor::Batch;

/// What the model can do, as the HTTP layer needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// Name of the input tensor (KServe metadata).
    pub input_name: String,
    /// Name of the output tensor.
    pub output_name: String,
    /// Input width.
    pub width: u32,
    /// Input height.
    pub height: u32,
    /// The input's element type.
    pub element: ElementType,
    /// The input's axes.
    pub layout: TensorLayout,
    /// Outputs per image.
    pub num_classes: usize,
    /// Largest batch one [`Backend::run`] call accepts.
    pub max_batch: usize,
    /// Time the model took to load and warm up.
    pub load_time: Duration,
}

impl ModelInfo {
    /// Values per image: `3 * height * width`.
    pub fn image_len(&self) -> usize {
        3 * self.width as usize * self.height as usize
    }
}

/// An inference engine owned by the inference thread: the real model, or a fake in tests.
pub trait Backend: Send + 'static {
    /// The model's shapes and names.
    fn info(&self) -> ModelInfo;
    /// Runs `n` images laid end to end, in the input's layout and element type
    /// (`n <= info().max_batch`); returns `n * num_classes` raw outputs.
    fn run(&mut self, batch: Batch<'_>, n: usize) -> Result<Vec<f32>, InferError>;

    /// How to load engines that each run a batch on one thread, to run batches side by side
    /// under load (see the batcher's "Lanes"). Called once, on the inference thread, after
    /// loading; the loader then runs on a thread of its own while the backend already serves
    /// (alone, on all its threads), so that a worker is ready as soon as its first session is.
    /// `None`, the default, when this backend runs one batch at a time.
    fn lanes(&mut self) -> Option<LaneLoader<Self>>
    where
        Self: Sized,
    {
        None
    }
}

/// Loads a backend's lanes (see [`Backend::lanes`]).
pub type LaneLoader<B> = Box<dyn FnOnce() -> Result<Vec<B>, InferError> + Send>;
