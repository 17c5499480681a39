//! What the binary hands a worker: model and labels, limits, batching, proxies, timings, all
//! taken from the validated config by [`WorkerOptions::from_config`]. These structs have no
//! defaults of their own: the config's are the only ones.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use arbiter_config::{Config, Model, TrustedProxy};

use crate::pipeline::Recipe;

pub use arbiter_config::{CidrError, IpCidr};

/// One model a worker serves, from its `[[model]]` entry ([`ModelEntry::from_config`]).
#[derive(Debug, Clone)]
pub struct ModelEntry {
    /// The model's name: `?model=`, the KServe v2 routes, metrics and logs.
    pub name: String,
    /// The model's version in the KServe v2 routes.
    pub version: String,
    /// How to load the model (path, runtime library, device, threads, max batch).
    pub model: arbiter_infer::ModelOptions,
    /// The class-name file (`{"0": "Aeroplane", ...}`).
    pub labels: PathBuf,
    /// Outputs strictly above this are kept (the seed uses 0.5).
    pub threshold: f32,
    /// The model's own dynamic batching and queue.
    pub batching: Batching,
    /// On a CPU, prepare the model in this cache folder so all workers share one copy of the
    /// weights (see `arbiter_infer::prepare`); `None` loads the model as it is.
    pub shared_weights_cache: Option<PathBuf>,
    /// Let ONNX Runtime's intra-op threads spin between parallel sections.
    pub intra_op_spinning: bool,
    /// On a CPU with several intra-op threads, run batches side by side under load, one thread
    /// each (see `batcher`'s "Lanes"); a lone request still runs on every thread.
    pub parallel_batches: bool,
    /// The model's recipe (`[model.preprocess]`, `[model.postprocess]`, `fast_jpeg`).
    pub recipe: Recipe,
    /// The arithmetic it runs in (`precision`): FP32 through ONNX Runtime, or BF16 through
    /// OpenVINO.
    pub precision: arbiter_config::Precision,
    /// OpenVINO's C library for a BF16 model (`openvino_library`).
    pub openvino_library: Option<PathBuf>,
    /// The nice value of its inference threads (`nice`).
    pub nice: i32,
}

impl ModelEntry {
    /// The entry of `model`, with `threads` ONNX Runtime intra-op threads.
    pub fn from_config(model: &Model, threads: usize) -> ModelEntry {
        let batching = &model.batching;
        ModelEntry {
            name: model.name.clone(),
            version: model.version.clone(),
            model: model_options(model, threads),
            labels: model.labels.clone(),
            threshold: model.threshold,
            batching: Batching {
                max_batch_size: batching.max_batch_size,
                max_delay: batching.max_delay,
                queue_capacity: batching.queue_size,
            },
            shared_weights_cache: model.share_weights.then(|| model.cache_dir.clone()),
            intra_op_spinning: model.spinning,
            parallel_batches: model.parallel_batches,
            recipe: Recipe::from_config(model),
            precision: model.precision,
            openvino_library: model.openvino_library.clone(),
            nice: model.nice,
        }
    }
}

/// Everything one worker needs, from the validated config ([`WorkerOptions::from_config`]).
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Every model the worker serves, in the config's order; never empty.
    pub models: Vec<ModelEntry>,
    /// The index in `models` of the model a request that names none gets.
    pub default_model: usize,
    /// Request limits.
    pub limits: Limits,
    /// Threads decoding and preprocessing images (and parsing tensor JSON) at once, shared by
    /// every model.
    pub preprocess_threads: usize,
    /// Peers whose `X-Forwarded-For` / `X-Real-IP` headers are believed.
    pub trusted_proxies: Vec<IpCidr>,
    /// Whether a peer on a unix socket counts as a trusted proxy.
    pub trust_unix_peers: bool,
    /// How often the worker writes its heartbeat into the scoreboard.
    pub heartbeat_interval: Duration,
    /// How long a drain may take before the worker gives up on the remaining requests.
    pub graceful_timeout: Duration,
    /// Drain and exit (code 0) after answering this many requests.
    pub max_requests: Option<u64>,
    /// Read baseline JPEGs with Arbiter's own Huffman decoder (`server.own_huffman_decoder`).
    pub own_huffman_decoder: bool,
    /// Called on USR1: reopen the log file the worker writes to.
    pub reopen_logs: Option<ReopenLogs>,
    /// Serve the page (`/`) and the documentation (`/docs`): `server.ui`.
    pub ui: bool,
}

/// What a worker calls on USR1 to reopen its log file (the binary owns the logger).
#[derive(Clone)]
pub struct ReopenLogs(pub std::sync::Arc<dyn Fn() + Send + Sync>);

impl fmt::Debug for ReopenLogs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReopenLogs")
    }
}

impl WorkerOptions {
    /// The options of a worker running `config`, each model with the ONNX Runtime intra-op
    /// threads `threads` gives it, and `max_requests` (its jitter drawn) as the arbiter resolved
    /// them for it. The log reopening hook is the binary's to set.
    pub fn from_config(
        config: &Config,
        threads: impl Fn(&Model) -> usize,
        max_requests: Option<u64>,
    ) -> WorkerOptions {
        let limits = &config.limits;
        let proxies = &config.server.trusted_proxies;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        WorkerOptions {
            models: config
                .models
                .iter()
                .map(|m| ModelEntry::from_config(m, threads(m)))
                .collect(),
            default_model: config.default_model,
            limits: Limits {
                max_body_bytes: limits.max_body,
                max_pixels: limits.max_pixels,
                header_read_timeout: limits.header_timeout,
                body_read_timeout: limits.body_timeout,
                request_deadline: limits.request_deadline,
                keepalive_timeout: limits.keepalive,
                max_connections: limits.max_connections,
                min_data_rate: config.server.min_data_rate,
                min_data_rate_grace: config.server.min_data_rate_grace,
                close_on_overload: config.server.close_on_overload,
                accept_batch: config.server.accept_batch,
                http_nice: config.server.http_nice,
            },
            preprocess_threads: config.preprocess_threads_per_worker(cores),
            trusted_proxies: proxies
                .iter()
                .filter_map(|p| match p {
                    TrustedProxy::Unix => None,
                    TrustedProxy::Net(net) => Some(*net),
                })
                .collect(),
            trust_unix_peers: proxies.contains(&TrustedProxy::Unix),
            heartbeat_interval: arbiter_config::defaults::HEARTBEAT_INTERVAL,
            graceful_timeout: config.server.graceful_timeout,
            max_requests,
            own_huffman_decoder: config.server.own_huffman_decoder,
            reopen_logs: None,
            ui: config.server.ui,
        }
    }
}

/// How to load `model` with `threads` intra-op threads, batches up to its
/// `batching.max_batch_size`.
pub fn model_options(model: &Model, threads: usize) -> arbiter_infer::ModelOptions {
    arbiter_infer::ModelOptions {
        path: model.path.clone(),
        runtime_library: model.runtime_library.clone(),
        device: model.device,
        intra_threads: threads,
        max_batch: model.batching.max_batch_size,
        expected_classes: None,
        input: arbiter_infer::InputRecipe::from(&model.preprocess),
    }
}

/// Request limits (`[limits]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body (the whole multipart body, a raw image or a tensor request).
    pub max_body_bytes: u64,
    /// Largest image, in pixels, decoded.
    pub max_pixels: u64,
    /// Time a client has to send a request's headers.
    pub header_read_timeout: Duration,
    /// Time a client has to send a request's body.
    pub body_read_timeout: Duration,
    /// Time from request head to response, body included; past it the request is abandoned.
    pub request_deadline: Duration,
    /// How long an idle keep-alive connection stays open.
    pub keepalive_timeout: Duration,
    /// Open connections per worker; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Bytes per second a request's headers and body must keep arriving at after the grace
    /// (`server.min_data_rate`); 0: no minimum.
    pub min_data_rate: u64,
    /// How long headers, then the body, may take before the minimum rate counts.
    pub min_data_rate_grace: Duration,
    /// Close the connection after a 503 for a full queue (`server.close_on_overload`).
    pub close_on_overload: bool,
    /// Connections accepted in a row before the worker's other tasks run (`server.accept_batch`).
    pub accept_batch: usize,
    /// The nice value of the HTTP thread (`server.http_nice`).
    pub http_nice: i32,
}

/// Dynamic batching: how the inference thread groups queued requests (`[batching]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batching {
    /// Most images in one model run.
    pub max_batch_size: usize,
    /// How long the inference thread waits for more requests once it has one, while more are on
    /// their way (being preprocessed); 0 = take only what is already queued.
    pub max_delay: Duration,
    /// Requests admitted past body reading and not yet answered by the model, beyond the
    /// preprocessing threads; more get an immediate 503.
    pub queue_capacity: usize,
}
