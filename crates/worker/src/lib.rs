//! One worker process: the model, the HTTP service on the inherited listeners, and the worker's
//! side of the scoreboard.
//!
//! # Theory of operation
//!
//! The binary forks a worker and calls [`run`] in the child. `run` boots, serves, and returns the
//! exit code:
//!
//! 1. **Boot.** The label file is read, then the inference thread starts: it loads ONNX Runtime
//!    and the model (warm-up included) and keeps the model for the life of the process. Any
//!    failure is written into the worker's scoreboard slot ([`SlotRef::set_boot_error`]) and `run`
//!    returns [`EXIT_BOOT_FAILURE`], which tells the arbiter not to retry blindly.
//! 2. **Serve.** A single-threaded tokio runtime runs hyper (HTTP/1) on every listener, a heartbeat
//!    task, and the signal handlers; the slot goes Ready. Nothing heavy runs on that thread: image
//!    decode, preprocessing and tensor JSON parsing go to a blocking pool bounded by
//!    `preprocess_threads`, and the model runs on the inference thread, fed by a bounded queue
//!    with dynamic batching (see [`batcher`]); on a CPU with several ONNX Runtime threads, under
//!    load, on one inference thread per ONNX Runtime thread, each with its own single-thread
//!    session (the batcher's lanes, loaded in the background once the worker is ready). A full
//!    pipeline answers 503 at once.
//! 3. **Stop.** TERM, or reaching `max_requests`, drains: the slot goes Draining, readiness
//!    answers 503, the accept loops stop, every accepted request is answered (queued ones
//!    included), heart-beating goes on, and `run` returns [`EXIT_OK`] (after `graceful_timeout`
//!    at the latest). INT and QUIT return at once.
//!
//! Every request ends in [`Service::handle`], which maps every error to a status through
//! [`ApiError`] (one place), counts the request in the scoreboard, and writes one access-log event.
//! `/metrics` renders the whole scoreboard, so any worker describes the whole service.

pub mod batcher;
mod body;
mod error;
pub mod kserve;
mod options;
mod pipeline;
pub mod routes;
pub mod server;
mod service;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arbiter_infer::prepare::Prepared;
use arbiter_infer::weights::MappedWeights;
use arbiter_infer::{Labels, Model, ModelOptions, SessionTuning};
use arbiter_scoreboard::{EXIT_BOOT_FAILURE, Scoreboard, SlotRef, SlotState};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

pub use batcher::{Backend, InferenceQueue, InferenceThread, JobOutput, LaneLoader, ModelInfo};
pub use error::ApiError;
pub use options::{Batching, CidrError, IpCidr, Limits, ReopenLogs, WorkerOptions, model_options};
pub use server::{Listener, serve};
pub use service::{OPENAPI_YAML, Peer, Service, ServiceConfig};

/// Exit code after a clean stop (drain finished, or INT/QUIT).
pub const EXIT_OK: i32 = 0;
/// Exit code of a worker that failed at run time (inference thread died, runtime setup failed).
pub const EXIT_FAILURE: i32 = 1;

/// A model run that lasts longer than this stops the heartbeat, so the arbiter replaces the hung
/// worker.
const INFERENCE_STALL: Duration = Duration::from_secs(60);

/// Who this worker is: its scoreboard slot and generation.
#[derive(Debug, Clone)]
pub struct WorkerContext {
    /// Slot index in the scoreboard, also the metrics' `worker` label.
    pub index: usize,
    /// The generation this worker belongs to.
    pub generation: u64,
    /// The scoreboard the arbiter mapped before forking.
    pub scoreboard: Scoreboard,
}

/// The real backend: an ONNX Runtime model owned by the inference thread, and the prepared
/// model it was loaded from, held for as long as the worker runs.
#[derive(Debug)]
pub struct OrtBackend {
    model: Model,
    /// Keeps the prepared model's cache entry held (a shared lock) while the worker runs.
    _prepared: Option<Prepared>,
    /// What the model was loaded from and with, when [`Backend::lanes`] is to load one
    /// single-thread session per thread from it.
    lanes: Option<Lanes>,
}

/// How [`Backend::lanes`] loads the lanes' sessions: like the first.
#[derive(Debug)]
struct Lanes {
    /// Set by [`OrtBackend::with_lanes`]; off, no lanes are loaded.
    on: bool,
    opts: ModelOptions,
    tuning: SessionTuning,
    weights: Option<Arc<MappedWeights>>,
}

impl OrtBackend {
    /// Loads ONNX Runtime (once per process) and the model, warm-up included.
    pub fn load(opts: &ModelOptions) -> Result<OrtBackend, String> {
        OrtBackend::load_shared(opts, None, false)
    }

    /// Like [`OrtBackend::load`], but on a CPU first prepares the model in `cache` (or finds it
    /// prepared) so every worker maps one copy of the weights. If preparing fails, the original
    /// model is loaded and the log says why.
    pub fn load_shared(
        opts: &ModelOptions,
        cache: Option<&Path>,
        spinning: bool,
    ) -> Result<OrtBackend, String> {
        let tuning = SessionTuning::for_device(opts.device, spinning);
        let library = arbiter_infer::init_runtime(opts.runtime_library.as_deref())
            .map_err(|e| error_chain(&e))?;
        let mut prepared = None;
        if let (Some(cache), arbiter_infer::Device::Cpu) = (cache, opts.device) {
            if !opts.path.is_file() {
                return Err(error_chain(&arbiter_infer::InferError::ModelMissing {
                    path: opts.path.clone(),
                }));
            }
            match arbiter_infer::prepare::prepare(&opts.path, cache, &library) {
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
                .map(|model| OrtBackend::loaded(model, None, opts, tuning))
                .map_err(|e| error_chain(&e));
        };
        let shared = ModelOptions {
            path: p.model.clone(),
            ..opts.clone()
        };
        // One mapping of the weights for all of this worker's sessions; without it, ONNX Runtime
        // maps the file itself, once per session.
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
                let mut backend = OrtBackend::loaded(model, Some(p), &shared, tuning);
                // The lanes use the mapping only if the first session could.
                if let Some(lanes) = backend.lanes.as_mut() {
                    lanes.weights = weights;
                }
                Ok(backend)
            }
            Err(e) => {
                tracing::warn!(entry = %p.key, "the prepared model does not load, loading the original: {}", error_chain(&e));
                Model::load_tuned(opts, &tuning)
                    .map(|model| OrtBackend::loaded(model, None, opts, tuning))
                    .map_err(|e| error_chain(&e))
            }
        }
    }

    fn loaded(
        model: Model,
        prepared: Option<Prepared>,
        opts: &ModelOptions,
        tuning: SessionTuning,
    ) -> OrtBackend {
        OrtBackend {
            model,
            _prepared: prepared,
            lanes: Some(Lanes {
                on: false,
                opts: opts.clone(),
                tuning,
                weights: None,
            }),
        }
    }

    /// Whether [`Backend::lanes`] gives one single-thread session per intra-op thread, to run
    /// batches side by side under load (only on a CPU, with more than one thread).
    #[must_use]
    pub fn with_lanes(mut self, on: bool) -> OrtBackend {
        if let Some(lanes) = self.lanes.as_mut() {
            let on_cpu = lanes.opts.device == arbiter_infer::Device::Cpu;
            lanes.on = arbiter_config::runs_lanes(on, on_cpu, lanes.opts.intra_threads);
        }
        self
    }
}

impl From<Model> for OrtBackend {
    fn from(model: Model) -> OrtBackend {
        OrtBackend {
            model,
            _prepared: None,
            lanes: None,
        }
    }
}

impl Backend for OrtBackend {
    fn info(&self) -> ModelInfo {
        let (width, height) = self.model.input_size();
        ModelInfo {
            input_name: self.model.input_name().to_owned(),
            output_name: self.model.output_name().to_owned(),
            width,
            height,
            num_classes: self.model.num_classes(),
            max_batch: self.model.max_batch(),
            load_time: self.model.load_time(),
        }
    }

    fn run(&mut self, batch: &[f32], n: usize) -> Result<Vec<f32>, String> {
        self.model.run(batch, n).map_err(|e| error_chain(&e))
    }

    /// One single-thread session per intra-op thread, from the same (prepared) model file: on a
    /// CPU with shared weights they use the same mapping of the weights, so each costs only its
    /// working memory.
    fn lanes(&mut self) -> Option<LaneLoader<OrtBackend>> {
        let lanes = self.lanes.take().filter(|l| l.on)?;
        Some(Box::new(move || {
            let single = ModelOptions {
                intra_threads: 1,
                ..lanes.opts.clone()
            };
            (0..lanes.opts.intra_threads)
                .map(|_| {
                    Model::load_mapped(&single, &lanes.tuning, lanes.weights.as_ref())
                        .map(OrtBackend::from)
                        .map_err(|e| error_chain(&e))
                })
                .collect()
        }))
    }
}

/// An error and its sources, joined with ": ".
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

/// Runs one worker until it is told to stop; returns the process exit code.
///
/// The arbiter has reset `ctx.index`'s slot before forking. `listeners` are already bound and
/// listening. Call it in the forked child, with no tokio runtime or ONNX Runtime started yet.
pub fn run(opts: WorkerOptions, listeners: Vec<Listener>, ctx: WorkerContext) -> i32 {
    let Some(slot) = ctx.scoreboard.get(ctx.index) else {
        tracing::error!(
            worker = ctx.index,
            capacity = ctx.scoreboard.capacity(),
            "worker slot out of range"
        );
        return EXIT_FAILURE;
    };
    slot.set_pid(std::process::id());
    slot.heartbeat();
    let span = tracing::info_span!(
        "worker",
        worker = ctx.index,
        generation = ctx.generation,
        pid = std::process::id()
    );
    let _entered = span.enter();

    let labels = match Labels::load(&opts.labels) {
        Ok(labels) => labels,
        Err(e) => return boot_failure(&slot, &error_chain(&e)),
    };
    let mut model_options = opts.model.clone();
    model_options.expected_classes = model_options.expected_classes.or(Some(labels.len()));
    let beat = slot.clone();
    let shared_cache = opts.shared_weights_cache.clone();
    let spinning = opts.intra_op_spinning;
    let parallel = opts.parallel_batches;
    let started = InferenceQueue::start(
        move || {
            OrtBackend::load_shared(&model_options, shared_cache.as_deref(), spinning)
                .map(|backend| backend.with_lanes(parallel))
        },
        &opts.batching,
        opts.preprocess_threads,
        slot.clone(),
        move || beat.heartbeat(),
    );
    let (queue, thread) = match started {
        Ok(started) => started,
        Err(message) => return boot_failure(&slot, &message),
    };
    slot.set_model_load(queue.info().load_time);

    // Each decoding thread reuses one image buffer instead of faulting in a new one per image.
    arbiter_vision::keep_spare_buffers(opts.preprocess_threads.max(1));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(opts.preprocess_threads.max(1) + 1)
        .thread_name("worker-blocking")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the tokio runtime");
            return EXIT_FAILURE;
        }
    };
    let service = Service::new(
        ServiceConfig::from_options(&opts),
        labels,
        queue,
        ctx.scoreboard.clone(),
        slot.clone(),
    );
    let thread = Arc::new(thread);
    let (code, drained) = runtime.block_on(serve_until_stopped(
        service,
        listeners,
        &opts,
        slot.clone(),
        Arc::clone(&thread),
    ));
    // Queued work is answered by now; anything still running on the blocking pool is abandoned.
    runtime.shutdown_timeout(Duration::from_millis(500));
    // After a drain the queue is empty and the thread ends at once; a fast exit does not wait.
    if drained && !thread.join(Duration::from_secs(5)) {
        tracing::warn!("the inference thread did not stop in time");
    }
    code
}

fn boot_failure(slot: &SlotRef, message: &str) -> i32 {
    tracing::error!(error = message, "worker failed to boot");
    slot.set_boot_error(message);
    EXIT_BOOT_FAILURE
}

/// Why the worker stops.
enum Stop {
    Drain(&'static str),
    Fast(&'static str),
    Failed(String),
}

async fn serve_until_stopped(
    service: Service,
    listeners: Vec<Listener>,
    opts: &WorkerOptions,
    slot: SlotRef,
    thread: Arc<InferenceThread>,
) -> (i32, bool) {
    let signals = (|| {
        Ok::<_, std::io::Error>((
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
            signal(SignalKind::quit())?,
            signal(SignalKind::hangup())?,
            signal(SignalKind::user_defined1())?,
        ))
    })();
    let (mut term, mut int, mut quit, mut hup, mut usr1) = match signals {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return (EXIT_FAILURE, false);
        }
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut server = tokio::spawn(server::serve(
        service.clone(),
        listeners,
        opts.limits.clone(),
        stop_rx,
    ));
    let heartbeat = tokio::spawn(heartbeat_loop(
        slot.clone(),
        opts.heartbeat_interval,
        Arc::clone(&thread),
    ));
    slot.set_state(SlotState::Ready);
    tracing::info!(state = "ready", "worker ready");

    let stop = loop {
        tokio::select! {
            _ = term.recv() => break Stop::Drain("TERM"),
            _ = int.recv() => break Stop::Fast("INT"),
            _ = quit.recv() => break Stop::Fast("QUIT"),
            _ = hup.recv() => tracing::debug!("HUP ignored: the arbiter reloads"),
            _ = usr1.recv() => {
                // The arbiter reopened its log file (logrotate) and tells its workers to follow.
                if let Some(reopen) = &opts.reopen_logs {
                    (reopen.0)();
                }
            }
            () = service.drain_wanted() => break Stop::Drain("max_requests reached"),
            result = &mut server => break Stop::Failed(match result {
                Ok(Ok(())) => "the server stopped".to_owned(),
                Ok(Err(e)) => format!("cannot serve on the listeners: {e}"),
                Err(e) => format!("the server task failed: {e}"),
            }),
            () = inference_ended(&thread) => break Stop::Failed("the inference thread stopped".to_owned()),
        }
    };
    let result = match stop {
        Stop::Fast(why) => {
            tracing::info!(signal = why, "fast exit");
            (EXIT_OK, false)
        }
        Stop::Failed(why) => {
            tracing::error!(error = %why, "worker failed");
            (EXIT_FAILURE, false)
        }
        Stop::Drain(why) => {
            tracing::info!(reason = why, state = "draining", "draining");
            slot.set_state(SlotState::Draining);
            service.start_drain();
            let _ = stop_tx.send(true);
            let drained = tokio::select! {
                result = tokio::time::timeout(opts.graceful_timeout, &mut server) => match result {
                    Ok(_) => {
                        tracing::info!(answered = service.answered(), "drained");
                        true
                    }
                    Err(_) => {
                        let timeout_s = opts.graceful_timeout.as_secs_f64();
                        tracing::warn!(timeout_s, "drain timed out; exiting anyway");
                        false
                    }
                },
                _ = int.recv() => {
                    tracing::info!(signal = "INT", "fast exit while draining");
                    false
                }
                _ = quit.recv() => {
                    tracing::info!(signal = "QUIT", "fast exit while draining");
                    false
                }
            };
            (EXIT_OK, drained)
        }
    };
    heartbeat.abort();
    server.abort();
    result
}

/// Writes the heartbeat every `every`, unless the model has been stuck in one run too long.
async fn heartbeat_loop(slot: SlotRef, every: Duration, thread: Arc<InferenceThread>) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut warned = false;
    loop {
        tick.tick().await;
        match thread.busy_for() {
            Some(busy) if busy > INFERENCE_STALL => {
                if !warned {
                    tracing::error!(
                        busy_s = busy.as_secs(),
                        "a model run is stuck; no more heartbeats"
                    );
                    warned = true;
                }
            }
            _ => slot.heartbeat(),
        }
    }
}

/// Resolves when the inference thread has ended.
async fn inference_ended(thread: &InferenceThread) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        if thread.is_finished() {
            return;
        }
    }
}
