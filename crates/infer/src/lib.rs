//! Model inference through ONNX Runtime, and the postprocessing into labels.
//!
//! # Theory of operation
//!
//! ONNX Runtime is a shared library loaded at run time (`ort` with `load-dynamic`):
//! [`init_runtime`] finds it (the config's path, else `ORT_DYLIB_PATH`, else
//! `var/onnxruntime/`), loads it and creates the process's one ONNX Runtime environment. It must
//! run in the worker process, after the fork: a process that forks after ONNX Runtime has started
//! threads leaves children that hang at exit.
//!
//! [`Model::load`] builds one session (graph optimization level ALL, `intra_threads` intra-op
//! threads, one inter-op thread, sequential execution; on `cuda:N` the CUDA execution provider is
//! required, never silently replaced by the CPU), checks from the session's metadata that the model
//! takes one image input the recipe fits and gives one `[N, C]` output ([`signature`]: float32 or
//! uint8, `[N, 3, H, W]` or `[N, H, W, 3]`, the size from the model when static and from the
//! config when symbolic; a refusal names the model's actual input), and warms it up with a batch
//! of zeros so the first request does not pay for kernel selection and buffer allocation. A
//! [`Model`] is owned by one inference thread; [`Model::run`] takes a contiguous batch of images
//! (`f32` or `u8`, as the input's type, handed to ONNX Runtime in place) and returns the raw
//! outputs, `C` per image. [`Model::load_mapped`] builds a session on weights mapped once per
//! process ([`weights::MappedWeights`]), so that several sessions of one prepared model cost one
//! copy of the weights. [`signature::read`] reads a model's inputs and outputs without loading it
//! to run (for `arbiter inspect` and `arbiter check`).
//!
//! [`Engine`] is how a worker loads its model: shared weights where it can (a model prepared in
//! a cache folder, [`prepare`]), the original model where that fails, and on request one
//! single-thread session per thread beside the first ([`engine::Lanes`]).
//!
//! [`classify`] turns one image's raw outputs into the seed's answer: the classes whose output is
//! strictly above the threshold, ordered by ascending output, named through [`Labels`] (the seed's
//! JSON object, a JSON list, or a text file of one name a line), or "No Categories".
//! [`Prediction`] serializes exactly as the seed's JSON. [`postprocess`] does the same by
//! `[model.postprocess]` (the seed's threshold, a sigmoid and threshold, or a softmax and top k)
//! into an [`Answer`], which renders as the seed's JSON or with each kept class's index and score.
//!
//! [`Engine::load_precision`] serves a model at `precision = "bf16"` through OpenVINO's C library
//! instead (`openvino`: the same `.onnx` file compiled by OpenVINO's CPU plugin with BF16
//! inference precision), refused at load on a CPU without AVX512-BF16 or AMX.
//!
//! [`CpuOffers`] says what the CPU offers below FP32 (VNNI for INT8 models, AVX512-BF16 and AMX),
//! for `arbiter check`. An INT8 model (`scripts/quantize.py`) is served like any other: its
//! prepared cache entry is named by its own sha256, apart from the FP32 model's.

mod classify;
mod cpu;
pub mod engine;
mod error;
mod labels;
mod model;
mod openvino;
pub mod prepare;
mod runtime;
pub mod signature;
pub mod weights;

pub use arbiter_config::{Device, Precision};
pub use classify::{Answer, Class, Prediction, Scored, classify, postprocess};
pub use cpu::CpuOffers;
pub use engine::{Engine, check_precision};
pub use error::{InferError, error_chain};
pub use labels::Labels;
pub use model::{InputElement, Model, ModelOptions, SessionTuning};
pub use openvino::{
    DEFAULT_OPENVINO_LIBRARY, OPENVINO_ENV_VAR, init_openvino, library_path as openvino_library,
};
pub use runtime::{DEFAULT_RUNTIME_LIBRARY, RUNTIME_ENV_VAR, init_runtime};
pub use signature::{InputRecipe, ResolvedInput};
