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
//!    decode, resize (by the model's [`Recipe`], from `[model.preprocess]`) and tensor JSON parsing
//!    go to `preprocess_threads` decode threads at the model's nice value, and the model runs on the inference
//!    thread, which writes each image into its batch by the recipe, fed by a bounded queue with
//!    dynamic batching (see [`batcher`]); on a CPU with several ONNX Runtime threads, under load,
//!    on one inference thread per ONNX Runtime thread, each with its own single-thread session (the
//!    batcher's lanes, loaded in the background once the worker is ready). A full pipeline answers
//!    503 at once.
//! 3. **Stop.** TERM, or reaching `max_requests`, drains: the slot goes Draining, readiness
//!    answers 503, the accept loops stop, every accepted request is answered (queued ones
//!    included), heart-beating goes on, and `run` returns [`EXIT_OK`] (after `graceful_timeout`
//!    at the latest). INT and QUIT return at once.
//!
//! Every request ends in [`Service::handle`], which maps every error to a status through
//! [`ApiError`] (one place), counts the request in the scoreboard, and writes one access-log event.
//! `/metrics` renders the whole scoreboard, so any worker describes the whole service.

mod access;
pub mod batcher;
mod body;
mod client;
mod decode;
mod engine;
mod error;
pub mod kserve;
mod models;
mod options;
pub mod page;
mod pipeline;
pub mod request_id;
pub mod routes;
pub mod server;
mod service;
mod tensor;
mod upload;

use std::sync::Arc;
use std::time::Duration;

use arbiter_infer::{Labels, error_chain};
use arbiter_scoreboard::{EXIT_BOOT_FAILURE, ModelRef, Scoreboard, SlotRef, SlotState};
use engine::load_engine;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

pub use batcher::{
    Backend, InferenceError, InferenceQueue, InferenceThread, JobOutput, LaneLoader, ModelInfo,
    StartError,
};
pub use client::Peer;
pub use error::ApiError;
pub use models::{Models, ServedModel};
pub use options::{
    Batching, CidrError, IpCidr, Limits, ModelEntry, ReopenLogs, WorkerOptions, model_options,
};
pub use pipeline::Recipe;
pub use server::{Listener, serve};
pub use service::{MODEL_NAME, MODEL_VERSION, OPENAPI_YAML, Service, ServiceConfig};
pub use tensor::{Batch, Elements, ToTensor};

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

    let names: Vec<(&str, &str)> = opts
        .models
        .iter()
        .map(|m| (m.name.as_str(), m.version.as_str()))
        .collect();
    slot.set_models(&names);
    let mut served = Vec::with_capacity(opts.models.len());
    let mut threads = Vec::with_capacity(opts.models.len());
    for (index, entry) in opts.models.iter().enumerate() {
        let stats = slot.model(index);
        match load_model(entry, opts.preprocess_threads, &slot, stats) {
            Ok((model, thread)) => {
                served.push(model);
                threads.push(thread);
            }
            Err(why) => {
                let message = format!("model `{}` version {}: {why}", entry.name, entry.version);
                return boot_failure(&slot, &message);
            }
        }
    }
    let models = Models::new(served, opts.default_model);

    let own_huffman = arbiter_vision::use_own_huffman_decoder(opts.own_huffman_decoder);
    if opts.own_huffman_decoder && !own_huffman {
        tracing::warn!(
            "server.own_huffman_decoder is on, but this build has no own Huffman decoder \
             (not libjpeg-turbo 2.1): libjpeg decodes every JPEG"
        );
    }
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
        models,
        ctx.scoreboard.clone(),
        slot.clone(),
    );
    let threads = Arc::new(threads);
    let (code, drained) = runtime.block_on(serve_until_stopped(
        service,
        listeners,
        &opts,
        slot.clone(),
        Arc::clone(&threads),
    ));
    // Queued work is answered by now; anything still running on the blocking pool is abandoned.
    runtime.shutdown_timeout(Duration::from_millis(500));
    // After a drain the queues are empty and the threads end at once; a fast exit does not wait.
    if drained {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        for thread in threads.iter() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if !thread.join(left) {
                tracing::warn!("an inference thread did not stop in time");
            }
        }
    }
    code
}

/// Loads one model: its labels, then its inference thread (ONNX Runtime, the model, warm-up),
/// heart-beating while it loads; checks its recipe fits the model's input.
fn load_model(
    entry: &ModelEntry,
    preprocess_threads: usize,
    slot: &SlotRef,
    stats: ModelRef,
) -> Result<(ServedModel, InferenceThread), String> {
    let labels = Labels::load(&entry.labels).map_err(|e| error_chain(&e))?;
    let mut model_options = entry.model.clone();
    model_options.expected_classes = model_options.expected_classes.or(Some(labels.len()));
    let beat = slot.clone();
    let shared_cache = entry.shared_weights_cache.clone();
    let spinning = entry.intra_op_spinning;
    let parallel = entry.parallel_batches;
    let precision = entry.precision;
    let openvino = entry.openvino_library.clone();
    let nice = entry.nice;
    let (queue, thread) = InferenceQueue::start(
        move || {
            // On the model's inference thread: its lanes and ONNX Runtime's (or OpenVINO's)
            // threads, all started from here, inherit it.
            decode::set_thread_nice(nice, "the model's inference thread");
            if precision == arbiter_config::Precision::Bf16 {
                arbiter_infer::init_openvino(openvino.as_deref())?;
            }
            load_engine(
                &model_options,
                shared_cache.as_deref(),
                spinning,
                parallel,
                precision,
            )
        },
        &entry.batching,
        preprocess_threads,
        stats.clone(),
        move || beat.heartbeat(),
    )
    .map_err(|e| error_chain(&e))?;
    stats.set_model_load(queue.info().load_time);
    let input = (queue.info().width, queue.info().height);
    entry
        .recipe
        .resize
        .check(input.0, input.1)
        .map_err(|e| format!("model.preprocess: {e}"))?;
    entry.recipe.log(input);
    let model = ServedModel {
        name: entry.name.clone(),
        version: entry.version.clone(),
        labels,
        threshold: entry.threshold,
        recipe: entry.recipe,
        queue,
        batching: entry.batching.clone(),
        on_gpu: entry.model.device != arbiter_infer::Device::Cpu,
        nice: entry.nice,
        stats,
    };
    Ok((model, thread))
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
    threads: Arc<Vec<InferenceThread>>,
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
        Arc::clone(&threads),
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
            () = inference_ended(&threads) => break Stop::Failed("an inference thread stopped".to_owned()),
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

/// Writes the heartbeat every `every`, unless a model has been stuck in one run too long.
async fn heartbeat_loop(slot: SlotRef, every: Duration, threads: Arc<Vec<InferenceThread>>) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut warned = false;
    loop {
        tick.tick().await;
        match threads.iter().filter_map(InferenceThread::busy_for).max() {
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

/// Resolves when an inference thread has ended.
async fn inference_ended(threads: &[InferenceThread]) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        if threads.iter().any(InferenceThread::is_finished) {
            return;
        }
    }
}
