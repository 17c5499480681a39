//! Model inference through ONNX Runtime, and the seed's postprocessing into labels.
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
//! takes one `[N, 3, H, W]` float32 input and gives one `[N, C]` output, and warms it up with a
//! batch of zeros so the first request does not pay for kernel selection and buffer allocation.
//! A [`Model`] is owned by one inference thread; [`Model::run`] takes a contiguous batch of CHW
//! images and returns the raw outputs, `C` per image. [`Model::load_mapped`] builds a session on
//! weights mapped once per process ([`weights::MappedWeights`]), so that several sessions of one
//! prepared model cost one copy of the weights.
//!
//! [`Engine`] is how a worker loads its model: shared weights where it can (a model prepared in
//! a cache folder, [`prepare`]), the original model where that fails, and on request one
//! single-thread session per thread beside the first ([`engine::Lanes`]).
//!
//! [`classify`] turns one image's raw outputs into the seed's answer: the classes whose output is
//! strictly above the threshold, ordered by ascending output, named through [`Labels`] (the seed's
//! `class_name.json`), or "No Categories". [`Prediction`] serializes exactly as the seed's JSON.

mod classify;
pub mod engine;
mod error;
mod labels;
mod model;
pub mod prepare;
mod runtime;
pub mod signature;
pub mod weights;

pub use classify::{Prediction, classify};
pub use engine::Engine;
pub use error::{InferError, error_chain};
pub use labels::Labels;
pub use model::{Device, InputElement, Model, ModelOptions, SessionTuning};
pub use runtime::{DEFAULT_RUNTIME_LIBRARY, RUNTIME_ENV_VAR, init_runtime};
pub use signature::{InputRecipe, ResolvedInput};
