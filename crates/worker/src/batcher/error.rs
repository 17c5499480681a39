//! Why the inference queue gave no answer, or did not start.

use std::sync::Arc;

use arbiter_infer::InferError;

/// Why a request got no outputs from the inference queue: refused at admission, or its model
/// run failed. The HTTP status of each is chosen in one place, the worker's `ApiError`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InferenceError {
    /// Every place in the pipeline is taken: the request is refused at once.
    #[error("every place in the inference pipeline is taken")]
    Overloaded,
    /// Its body was still arriving, past the grace, when every place was taken and a new request
    /// came: its place went to that request (see `Permit::admit`).
    #[error(
        "every place in the inference pipeline is taken and this request's body was still arriving: \
         its place went to a newer request"
    )]
    Overtaken,
    /// The queue takes no more work: the worker is stopping.
    #[error("the worker is shutting down")]
    ShuttingDown,
    /// The inference thread has ended, or dropped the job unanswered.
    #[error("the inference thread has stopped")]
    Stopped,
    /// A job whose input does not match the model's: the caller's mistake, not the client's.
    #[error("a job of {n} image(s) does not fit the model's {width}x{height} input")]
    Misfit {
        /// Images in the job.
        n: usize,
        /// The model's input width.
        width: u32,
        /// The model's input height.
        height: u32,
    },
    /// The model's run failed; shared by every job of the batch.
    #[error("inference failed")]
    Run(#[source] Arc<InferError>),
    /// The model panicked while running the batch.
    #[error("inference failed: the model panicked")]
    Panicked,
    /// The model returned another number of outputs than its images call for.
    #[error("inference failed: the model returned {got} outputs for {images} images")]
    Outputs {
        /// Outputs returned.
        got: usize,
        /// Images in the run.
        images: usize,
    },
}

/// Why the inference thread did not start serving (the worker's boot error).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The backend did not load.
    #[error(transparent)]
    Load(InferError),
    /// The backend's loader panicked.
    #[error("the model loader panicked")]
    LoaderPanicked,
    /// The inference thread could not be started.
    #[error("cannot start the inference thread")]
    Spawn(#[source] std::io::Error),
    /// The inference thread ended before it said whether the model loaded.
    #[error("the inference thread ended while loading the model")]
    Ended,
}
