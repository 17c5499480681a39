//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong loading the runtime, the model or the labels, or running the model.
///
/// Each `Display` says what failed at its own level; the underlying cause, where there is one, is
/// left to [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InferError {
    /// The ONNX Runtime shared library is not at any of the places looked at.
    #[error(
        "ONNX Runtime library not found (looked at: {}); run scripts/setup to fetch it",
        display_paths(.looked)
    )]
    RuntimeMissing {
        /// Every path that was tried, in order.
        looked: Vec<PathBuf>,
    },
    /// The ONNX Runtime shared library exists but could not be loaded or initialised.
    #[error("could not load the ONNX Runtime library {}", .path.display())]
    RuntimeLoad {
        /// The library file.
        path: PathBuf,
        /// What ONNX Runtime or the loader said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A model was loaded before [`crate::init_runtime`] succeeded.
    #[error("ONNX Runtime is not initialised: call init_runtime first")]
    RuntimeNotInitialised,
    /// The model file does not exist.
    #[error("model file {} not found", .path.display())]
    ModelMissing {
        /// The path given.
        path: PathBuf,
    },
    /// ONNX Runtime refused the model file (not ONNX, unsupported operator, bad options...).
    #[error("could not load the model {}", .path.display())]
    ModelLoad {
        /// The model file.
        path: PathBuf,
        /// What ONNX Runtime said.
        #[source]
        source: ort::Error,
    },
    /// The model's inputs or outputs are not one image input (`[N, 3, H, W]` or `[N, H, W, 3]`,
    /// float32 or uint8) and one `[N, C]` float32 output.
    #[error("{found}; expected {expected}")]
    Shape {
        /// What the model should have, e.g. "[N, 3, H, W]".
        expected: String,
        /// What it has, e.g. "model input `x` has shape [1, 224, 224, 3]".
        found: String,
    },
    /// The preprocessing recipe asks for an input the model does not take.
    #[error("model input {input} but {conflict}")]
    Recipe {
        /// The model's input, e.g. "`input` is uint8 [N, 224, 224, 3] (NHWC)".
        input: String,
        /// The recipe's key that disagrees, e.g. `model.preprocess.layout = "nchw"`.
        conflict: String,
    },
    /// The model's class count differs from the label file's.
    #[error("the model has {model} classes but the label file has {labels} names")]
    LabelCount {
        /// Classes the model outputs.
        model: usize,
        /// Names in the label file.
        labels: usize,
    },
    /// The label file is missing or malformed.
    #[error("label file {}: {reason}", .path.display())]
    Labels {
        /// The label file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The CUDA execution provider could not be registered; there is no silent CPU fallback.
    #[error(
        "the CUDA execution provider could not be registered for cuda:{device}: {reason}; {hint}"
    )]
    CudaUnavailable {
        /// The CUDA device index asked for.
        device: u32,
        /// What ONNX Runtime said.
        reason: String,
        /// What to do about it, depending on whether this ONNX Runtime build has CUDA at all.
        hint: String,
    },
    /// The model's `precision` cannot be served here: the CPU lacks the instructions, or the
    /// backend that computes it (OpenVINO for `bf16`) is missing or refused the model.
    #[error("precision {precision} cannot be served: {reason}")]
    Precision {
        /// The precision asked for, e.g. "bf16".
        precision: &'static str,
        /// Why, and what to do.
        reason: String,
    },
    /// A batch handed to [`crate::Model::run`] does not fit the model or the configured maximum.
    #[error("bad batch: {0}")]
    Batch(String),
    /// ONNX Runtime failed while running the model.
    #[error("model run failed")]
    Run {
        /// What ONNX Runtime said.
        #[source]
        source: ort::Error,
    },
}

fn display_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "nowhere".to_owned();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// An error and its sources, joined with ": ", as the log and a worker's boot error show it.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
