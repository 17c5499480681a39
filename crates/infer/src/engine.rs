//! The engine a worker serves from: the model loaded the best way the machine allows, with the
//! fallbacks that keep a worker serving when a better way fails.
//!
//! On a CPU with a cache folder, [`Engine::load_shared`] first prepares the model in the cache
//! (or finds it prepared, see [`crate::prepare`]) so that every worker maps one copy of the
//! weights, then builds the session on this process's one mapping of them
//! ([`MappedWeights`]). Each step that fails falls back to the one before it, and the log says
//! why: weights that do not map are left to ONNX Runtime to map, a prepared model that does not
//! load gives way to the original, a model that cannot be prepared is loaded unshared. Only the
//! original model failing to load is an error.
//!
//! An engine may also give [`Lanes`]: one single-thread session per intra-op thread, loaded like
//! the first (on the same mapping of the weights), for a caller that runs batches side by side.
//! At BF16 the lanes are the infer requests of one compilation by OpenVINO in throughput mode,
//! one single-thread stream per lane, of the model as read for the first (its FP32 weights held
//! once; each compilation adds its own BF16 copy).

use std::path::Path;
use std::sync::Arc;

use crate::prepare::Prepared;
use crate::weights::MappedWeights;
use crate::{
    Device, InferError, InputElement, Model, ModelOptions, Precision, SessionTuning, error_chain,
    openvino,
};

/// A loaded model and the prepared cache entry it was loaded from, held for as long as the
/// engine lives, with what its lanes are to be loaded from.
#[derive(Debug)]
pub struct Engine {
    model: Model,
    /// Keeps the prepared model's cache entry held (a shared lock) while the engine runs.
    prepared: Option<Prepared>,
    /// What the model was loaded from and with, when [`Engine::take_lanes`] is to load one
    /// single-thread session per thread from it.
    lanes: Option<Lanes>,
}

/// How to load an engine's lanes: one single-thread session per intra-op thread of the first,
/// from the same (prepared) model file and, where the first used it, the same mapping of the
/// weights, so each lane costs only its working memory. At BF16, one infer request per lane of one
/// more compilation of the engine's model ([`Model::load_bf16_lanes`]).
#[derive(Debug)]
pub struct Lanes {
    /// Set by [`Engine::with_lanes`]; off, [`Engine::take_lanes`] gives none.
    on: bool,
    /// At BF16, the model as OpenVINO read it for the engine, for the lanes to compile.
    bf16: Option<openvino::Source>,
    opts: ModelOptions,
    tuning: SessionTuning,
    weights: Option<Arc<MappedWeights>>,
}

impl Engine {
    /// Loads ONNX Runtime (once per process) and the model, warm-up included.
    pub fn load(opts: &ModelOptions) -> Result<Engine, InferError> {
        Engine::load_shared(opts, None, false)
    }

    /// [`Engine::load_shared`] at `precision`: `Fp32` is exactly that; `Bf16` compiles the model
    /// with OpenVINO's CPU plugin at BF16 inference precision ([`Model::load_bf16`]: refused,
    /// with the reason, on a CPU without AVX512-BF16 or AMX, off the CPU, or without the
    /// OpenVINO library), in latency mode, with no prepared entry (OpenVINO keeps its own copy
    /// of the compiled weights). Its lanes, when on, share a second compilation in throughput
    /// mode, which shares the first's FP32 weights and holds a BF16 copy of its own.
    pub fn load_precision(
        opts: &ModelOptions,
        cache: Option<&Path>,
        spinning: bool,
        precision: Precision,
    ) -> Result<Engine, InferError> {
        match precision {
            Precision::Fp32 => Engine::load_shared(opts, cache, spinning),
            Precision::Bf16 => {
                let tuning = SessionTuning::for_device(opts.device, spinning);
                Model::load_bf16_source(opts, &tuning).map(|(model, source)| {
                    let mut engine = Engine::loaded(model, None, opts, tuning);
                    if let Some(lanes) = engine.lanes.as_mut() {
                        lanes.bf16 = Some(source);
                    }
                    engine
                })
            }
        }
    }

    /// Like [`Engine::load`], but on a CPU first prepares the model in `cache` (or finds it
    /// prepared) so every worker maps one copy of the weights; `spinning` is `model.spinning`
    /// (see [`SessionTuning`]). If preparing fails, the original model is loaded and the log says
    /// why.
    pub fn load_shared(
        opts: &ModelOptions,
        cache: Option<&Path>,
        spinning: bool,
    ) -> Result<Engine, InferError> {
        let tuning = SessionTuning::for_device(opts.device, spinning);
        let library = crate::init_runtime(opts.runtime_library.as_deref())?;
        let mut prepared = None;
        if let (Some(cache), Device::Cpu) = (cache, opts.device) {
            if !opts.path.is_file() {
                return Err(InferError::ModelMissing {
                    path: opts.path.clone(),
                });
            }
            match crate::prepare::prepare(&opts.path, cache, &library) {
                Ok(p) => prepared = Some(p),
                Err(e) => tracing::warn!(
                    model = %opts.path.display(),
                    "cannot prepare the model for shared weights, loading it unshared: {}",
                    error_chain(&e)
                ),
            }
        }
        let Some(p) = prepared else {
            return Model::load_tuned(opts, &tuning)
                .map(|model| Engine::loaded(model, None, opts, tuning));
        };
        let shared = ModelOptions {
            path: p.model.clone(),
            ..opts.clone()
        };
        // One mapping of the weights for all of this process's sessions; without it, ONNX
        // Runtime maps the file itself, once per session.
        let weights = match MappedWeights::open(&p.model, &p.data) {
            Ok(w) => Some(Arc::new(w)),
            Err(e) => {
                tracing::warn!(entry = %p.key, "each session will map the weights: {e}");
                None
            }
        };
        let mapped = weights.and_then(|w| match Model::load_mapped(&shared, &tuning, Some(&w)) {
            Ok(model) => Some((model, w)),
            Err(e) => {
                tracing::warn!(entry = %p.key, "the mapped weights do not load, letting ONNX Runtime map them: {}", error_chain(&e));
                None
            }
        });
        let loaded = match mapped {
            Some((model, w)) => Ok((model, Some(w))),
            None => Model::load_tuned(&shared, &tuning).map(|model| (model, None)),
        };
        match loaded {
            Ok((model, weights)) => {
                tracing::info!(entry = %p.key, built = p.built, "model loaded with shared weights");
                let mut engine = Engine::loaded(model, Some(p), &shared, tuning);
                // The lanes use the mapping only if the first session could.
                if let Some(lanes) = engine.lanes.as_mut() {
                    lanes.weights = weights;
                }
                Ok(engine)
            }
            Err(e) => {
                tracing::warn!(entry = %p.key, "the prepared model does not load, loading the original: {}", error_chain(&e));
                Model::load_tuned(opts, &tuning)
                    .map(|model| Engine::loaded(model, None, opts, tuning))
            }
        }
    }

    fn loaded(
        model: Model,
        prepared: Option<Prepared>,
        opts: &ModelOptions,
        tuning: SessionTuning,
    ) -> Engine {
        Engine {
            model,
            prepared,
            lanes: Some(Lanes {
                on: false,
                bf16: None,
                opts: opts.clone(),
                tuning,
                weights: None,
            }),
        }
    }

    /// Whether [`Engine::take_lanes`] gives the lanes. The caller decides by its lane rule
    /// (the worker's is `arbiter_config::runs_lanes`: only on a CPU, with more than one thread).
    #[must_use]
    pub fn with_lanes(mut self, on: bool) -> Engine {
        if let Some(lanes) = self.lanes.as_mut() {
            lanes.on = on;
        }
        self
    }

    /// The name of the prepared-model cache entry the engine was loaded from (see
    /// [`crate::prepare`]: the model file's sha256, the runtime and the CPU level), or `None` when
    /// it was loaded from the original file.
    pub fn prepared_key(&self) -> Option<&str> {
        self.prepared.as_ref().map(|p| p.key.as_str())
    }

    /// The loaded model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Runs `n` images laid end to end (see [`Model::run`]).
    pub fn run<T: InputElement>(&mut self, batch: &[T], n: usize) -> Result<Vec<f32>, InferError> {
        self.model.run(batch, n)
    }

    /// How to load this engine's lanes, once, if [`Engine::with_lanes`] turned them on.
    pub fn take_lanes(&mut self) -> Option<Lanes> {
        self.lanes.take().filter(|l| l.on)
    }
}

/// Whether a model at `precision` can be served on `device` here, without loading it (for
/// `arbiter check`): `Fp32` always; `Bf16` on a CPU with AVX512-BF16 or AMX whose OpenVINO library
/// loads ([`crate::init_openvino`]). The error says why not, as a load would.
pub fn check_precision(device: crate::Device, precision: Precision) -> Result<(), InferError> {
    match precision {
        Precision::Fp32 => Ok(()),
        Precision::Bf16 => {
            if let Some(refusal) = crate::model::bf16_refusal(device, crate::CpuOffers::detect()) {
                return Err(refusal);
            }
            crate::init_openvino(None)
        }
    }
}

impl From<Model> for Engine {
    /// An engine of a model loaded by the caller: no cache entry held, no lanes.
    fn from(model: Model) -> Engine {
        Engine {
            model,
            prepared: None,
            lanes: None,
        }
    }
}

impl Lanes {
    /// Loads the lanes: one single-thread engine per intra-op thread of the first.
    pub fn load(self) -> Result<Vec<Engine>, InferError> {
        if let Some(source) = &self.bf16 {
            let lanes = self.opts.intra_threads;
            let models = Model::load_bf16_lanes(source, &self.opts, &self.tuning, lanes)?;
            return Ok(models.into_iter().map(Engine::from).collect());
        }
        let single = ModelOptions {
            intra_threads: 1,
            ..self.opts.clone()
        };
        (0..self.opts.intra_threads)
            .map(|_| {
                Model::load_mapped(&single, &self.tuning, self.weights.as_ref()).map(Engine::from)
            })
            .collect()
    }
}
