//! The built-in defaults: what a key the file leaves out is worth. They live here and nowhere
//! else; `etc/arbiter.toml` spells them out, and a test holds the two equal.
//!
//! Paths are relative to `base`, the config file's folder, like the paths the file writes.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{
    Amount, Autorestart, Batching, Bind, ChannelOrder, Device, ElementType, Filter, Geometry,
    IpCidr, Limits, Log, Memory, Model, Output, Postprocess, Precision, Preprocess, Program,
    Server, TensorLayout, TrustedProxy,
};

/// The most pixels an image may declare by default: Pillow's `Image.MAX_IMAGE_PIXELS`, its
/// decompression-bomb limit, so whatever the seed's service decoded is decoded here too.
pub const MAX_PIXELS: u64 = 89_478_485;

/// How often a worker writes its heartbeat; `server.heartbeat_timeout` must allow a missed one.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// ImageNet's per-channel mean (RGB), torchvision's `Normalize` of the seed and of most
/// classifiers trained on ImageNet. As `f32`, the values torchvision's `float32` tensor holds.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet's per-channel standard deviation (RGB), with [`IMAGENET_MEAN`].
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// How many classes a softmax answer keeps when `model.postprocess.top_k` is left out: the
/// one class of a single-label classifier.
pub const SOFTMAX_TOP_K: usize = 1;

/// The default control socket, relative to the config file's folder.
const CONTROL_SOCKET: &str = "../var/run/arbiter.sock";
/// The default pidfile, relative to the config file's folder.
const PIDFILE: &str = "../var/run/arbiter.pid";

/// The default control socket and pidfile of a config file in `base`.
pub(crate) fn control_socket_and_pidfile(base: &Path) -> (PathBuf, PathBuf) {
    (base.join(CONTROL_SOCKET), base.join(PIDFILE))
}

impl Server {
    /// `[server]` with every key left out.
    pub(crate) fn defaults(base: &Path) -> Server {
        let (control_socket, pidfile) = control_socket_and_pidfile(base);
        Server {
            // 10086 is the port of the service this project replaces.
            bind: vec![Bind::Tcp(SocketAddr::from(([127, 0, 0, 1], 10086)))],
            // One worker runs every core: a lone request on all of its threads, and under load
            // one request per thread side by side (`model.parallel_batches`). It is the shape
            // the benchmark measures, and on a GPU it is the one copy of the model.
            workers: 1,
            backlog: 2048,
            user: None,
            group: None,
            allow_root: false,
            pidfile,
            control_socket,
            graceful_timeout: Duration::from_secs(30),
            boot_timeout: Duration::from_secs(60),
            heartbeat_timeout: Duration::from_secs(10),
            max_requests: None,
            max_requests_jitter: 0,
            trusted_proxies: vec![
                TrustedProxy::Unix,
                TrustedProxy::Net(IpCidr::host(IpAddr::from([127, 0, 0, 1]))),
            ],
            ui: true,
            // Fuzzed against libjpeg's own decoder (docs/reliability.md); off is for whoever
            // wants no C of this project between a stranger's bytes and libjpeg.
            own_huffman_decoder: true,
            // Apache mod_reqtimeout's MinRate: a connection that sends slower than this after
            // its grace is cut, so slow clients cannot hold the connection slots.
            min_data_rate: 500,
            min_data_rate_grace: Duration::from_secs(2),
            close_on_overload: true,
            accept_batch: 32,
            // Measured in docs/overload.md: at 12x and 60x overload on 2 cores, 0 let the HTTP
            // side and the clients take half the model's cores; 10 kept 0.88 to 0.96 of the
            // goodput, 19 0.98 to 0.99 (the same runs, taken in turn).
            http_nice: 19,
        }
    }
}

/// Whether a model lets ONNX Runtime's threads spin when its entry leaves `spinning` out, for a
/// file with `models` models. With one model it is ONNX Runtime's own default (spinning trades
/// idle CPU for latency); with several, each model's threads would spin on the cores the others
/// are computing on, so it is off.
pub fn spinning(models: usize) -> bool {
    models <= 1
}

/// The most `[[model]]` tables a config may have: each worker's scoreboard slot has a block of
/// metrics per model (the worker checks at compile time that the scoreboard has room for them).
pub const MAX_MODELS: usize = 16;

/// A model's version when its entry leaves `version` out.
pub const MODEL_VERSION: &str = "1";

impl Model {
    /// `[model]` with every key left out: the model and labels `scripts/setup` makes, batched as
    /// the file's `[batching]` says.
    pub(crate) fn defaults(base: &Path, batching: &Batching) -> Model {
        Model {
            name: "resnet50".into(),
            version: MODEL_VERSION.into(),
            path: base.join("../var/models/resnet50-voc20.onnx"),
            labels: base.join("class_name.json"),
            // The seed's threshold.
            threshold: 0.5,
            device: Device::Cpu,
            // Cores / workers (see `threads_per_worker`).
            threads: 0,
            // ONNX Runtime, the model's own arithmetic.
            precision: Precision::Fp32,
            runtime_library: None,
            openvino_library: None,
            share_weights: true,
            cache_dir: base.join("../var/cache/prepared"),
            // ONNX Runtime's own default for one model (see `spinning`); a machine shared with
            // other programs wants it off.
            spinning: spinning(1),
            parallel_batches: true,
            // Off keeps the seed's pixels exactly.
            fast_jpeg: false,
            // Every model at the priority of the worker: the kernel shares the cores evenly.
            nice: 0,
            preprocess: Preprocess::defaults(),
            postprocess: Postprocess::defaults(),
            batching: batching.clone(),
        }
    }
}

impl Preprocess {
    /// `[model.preprocess]` with every key left out: the seed's recipe, torchvision's
    /// `Resize([h, w])`, `ToTensor()` and `Normalize(IMAGENET_MEAN, IMAGENET_STD)`, at the
    /// model's own input size.
    pub(crate) fn defaults() -> Preprocess {
        Preprocess {
            resize: Geometry::Squash,
            interpolation: Filter::Bilinear,
            divide_by: 255.0,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            channels: ChannelOrder::Rgb,
            layout: TensorLayout::Nchw,
            input_type: ElementType::Float32,
            input_size: None,
        }
    }
}

impl Postprocess {
    /// `[model.postprocess]` with every key left out: the seed's answer, the labels whose raw
    /// output is above `model.threshold`, and nothing else.
    pub(crate) fn defaults() -> Postprocess {
        Postprocess {
            output: Output::Threshold,
            scores: false,
        }
    }
}

impl Batching {
    /// `[batching]` with every key left out. On a CPU a batch brings no more images per second
    /// (ONNX Runtime is near the compute limit at batch 1) and costs the working memory of the
    /// largest batch each session ran, so batches are of one image and nothing waits for a
    /// batch to fill; on a GPU, raise both.
    pub(crate) fn defaults() -> Batching {
        Batching {
            max_batch_size: 1,
            max_delay: Duration::ZERO,
            queue_size: 64,
            // Cores / workers (see `preprocess_threads_per_worker`).
            preprocess_threads: 0,
        }
    }
}

impl Limits {
    /// `[limits]` with every key left out: what nginx and gunicorn users expect.
    pub(crate) fn defaults() -> Limits {
        Limits {
            max_body: 20 << 20,
            max_pixels: MAX_PIXELS,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            request_deadline: Duration::from_secs(60),
            keepalive: Duration::from_secs(5),
            max_connections: 1000,
        }
    }
}

impl Memory {
    /// `[memory]` with every key left out: both measured.
    pub(crate) fn defaults() -> Memory {
        Memory {
            limit: Amount::Auto,
            per_worker: Amount::Auto,
        }
    }
}

impl Log {
    /// `[log]` with every key left out: text on stderr.
    pub(crate) fn defaults() -> Log {
        Log {
            file: None,
            json: false,
            level: "info".into(),
        }
    }
}

impl Program {
    /// A `[[program]]` with only `name` and `command`, which have no default, left to fill.
    pub(crate) fn defaults() -> Program {
        Program {
            name: String::new(),
            command: Vec::new(),
            directory: None,
            environment: Vec::new(),
            autorestart: Autorestart::Unexpected,
            exitcodes: vec![0],
            startsecs: Duration::from_secs(1),
            startretries: 3,
            stopsignal: "TERM".into(),
            stopwaitsecs: Duration::from_secs(10),
        }
    }
}
