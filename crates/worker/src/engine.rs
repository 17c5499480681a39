//! The real backend: `arbiter_infer`'s [`Engine`] (an ONNX Runtime session, loaded with shared
//! weights where it can, or OpenVINO at BF16) run by the inference thread, its lanes on where the
//! lane rule says.

use std::path::Path;

use arbiter_infer::{Device, Engine, InferError, ModelOptions, Precision};

use crate::batcher::{Backend, LaneLoader, ModelInfo};
use crate::tensor::Batch;

/// Loads the worker's engine at its `precision` (see [`Engine::load_precision`]: FP32 through
/// ONNX Runtime with shared weights, BF16 through OpenVINO), with one single-thread lane per
/// thread when `parallel_batches` is on and the rule of `arbiter_config::runs_lanes` allows it (a
/// CPU, more than one thread).
pub(crate) fn load_engine(
    opts: &ModelOptions,
    cache: Option<&Path>,
    spinning: bool,
    parallel_batches: bool,
    precision: Precision,
) -> Result<Engine, InferError> {
    let on_cpu = opts.device == Device::Cpu;
    let lanes = arbiter_config::runs_lanes(parallel_batches, on_cpu, opts.intra_threads);
    Engine::load_precision(opts, cache, spinning, precision).map(|engine| engine.with_lanes(lanes))
}

impl Backend for Engine {
    fn info(&self) -> ModelInfo {
        let model = self.model();
        let (width, height) = model.input_size();
        ModelInfo {
            input_name: model.input_name().to_owned(),
            output_name: model.output_name().to_owned(),
            width,
            height,
            element: model.input().element,
            layout: model.input().layout,
            num_classes: model.num_classes(),
            max_batch: model.max_batch(),
            load_time: model.load_time(),
        }
    }

    fn run(&mut self, batch: Batch<'_>, n: usize) -> Result<Vec<f32>, InferError> {
        match batch {
            Batch::F32(values) => Engine::run(self, values, n),
            Batch::U8(values) => Engine::run(self, values, n),
        }
    }

    /// One single-thread session per intra-op thread, from the same (prepared) model file: on a
    /// CPU with shared weights they use the same mapping of the weights, so each costs only its
    /// working memory; at BF16, the infer requests of one OpenVINO compilation.
    fn lanes(&mut self) -> Option<LaneLoader<Engine>> {
        let lanes = self.take_lanes()?;
        Some(Box::new(move || lanes.load()))
    }
}
