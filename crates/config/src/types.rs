//! The validated configuration: what the rest of the arbiter reads, every value checked and every
//! relative path already resolved.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::IpCidr;

/// A listening address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    /// `"127.0.0.1:10086"`, `"[::1]:10086"`, `"localhost:10086"`.
    Tcp(SocketAddr),
    /// `"unix:/run/arbiter.sock"`.
    Unix(PathBuf),
    /// `"fd://3"`: a socket already open in this process (systemd, a parent supervisor).
    Fd(i32),
}

impl fmt::Display for Bind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bind::Tcp(addr) => write!(f, "{addr}"),
            Bind::Unix(path) => write!(f, "unix:{}", path.display()),
            Bind::Fd(fd) => write!(f, "fd://{fd}"),
        }
    }
}

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Device {
    /// The CPU: ONNX Runtime's CPU execution provider.
    Cpu,
    /// The CUDA device with this ordinal: ONNX Runtime's CUDA execution provider, never a silent
    /// CPU fallback.
    Cuda(u32),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// The arithmetic a model is served in (`precision`). An INT8 model is a file of its own
/// (`scripts/quantize.py`), served at `fp32` like any other: its integer kernels are in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// ONNX Runtime, the model's own arithmetic.
    #[default]
    Fp32,
    /// OpenVINO's CPU plugin with BF16 inference precision: on a CPU with AVX512-BF16 or AMX
    /// only, refused at load elsewhere.
    Bf16,
}

impl Precision {
    /// The name in the config.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A memory amount that may be measured instead of declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amount {
    /// Measure it (device memory, available host memory, or the model's footprint).
    Auto,
    /// This many bytes.
    Bytes(u64),
}

/// A source of client addresses that is trusted to set `X-Forwarded-For`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustedProxy {
    /// Any peer on a unix socket (a reverse proxy on the same machine).
    Unix,
    /// A peer inside this network.
    Net(IpCidr),
}

/// `[server]`: listeners, workers and the process lifecycle.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    /// Every address to listen on; bound once by the arbiter, inherited by workers.
    pub bind: Vec<Bind>,
    /// How many workers to run.
    pub workers: usize,
    /// Listen backlog.
    pub backlog: i32,
    /// The user workers run as (the arbiter must start as root to switch).
    pub user: Option<String>,
    /// The group workers run as.
    pub group: Option<String>,
    /// Allow workers to run as root.
    pub allow_root: bool,
    /// The pidfile.
    pub pidfile: PathBuf,
    /// The control socket `arbiter status|reload|stop` talk to.
    pub control_socket: PathBuf,
    /// How long a draining worker may take to finish in-flight requests before it is killed.
    pub graceful_timeout: Duration,
    /// How long a worker may take to load and warm up its model.
    pub boot_timeout: Duration,
    /// How long a serving worker may go without a heartbeat before it is killed.
    pub heartbeat_timeout: Duration,
    /// Recycle a worker after this many requests.
    pub max_requests: Option<u64>,
    /// Add up to this many requests at random per worker, so workers never recycle together.
    pub max_requests_jitter: u64,
    /// Who may set `X-Forwarded-For`.
    pub trusted_proxies: Vec<TrustedProxy>,
    /// Serve the page for people (`GET /`) and the API's documentation (`GET /docs`); off, both
    /// answer 404 like any unknown path.
    pub ui: bool,
    /// Read baseline JPEGs' Huffman-coded data with Arbiter's own decoder (the same coefficients
    /// as libjpeg's, sooner); false leaves the whole decode to libjpeg-turbo.
    pub own_huffman_decoder: bool,
    /// Bytes per second a client must keep sending a request's headers and body at, once
    /// `min_data_rate_grace` has passed (0: no minimum rate, only the timeouts).
    pub min_data_rate: u64,
    /// How long a request's headers, and then its body, may take before `min_data_rate` counts.
    pub min_data_rate_grace: Duration,
    /// Close the connection after refusing a request because its model's queue is full, so a
    /// client that sends again at once pays a new connection.
    pub close_on_overload: bool,
    /// Most connections one worker accepts before it lets its other tasks (requests, answers)
    /// run; the rest wait in the listen backlog.
    pub accept_batch: usize,
    /// The nice value of each worker's HTTP thread, and of the decode threads it starts: above
    /// the model's threads (0), so that under overload the model keeps the cores and the HTTP
    /// side gets what is left.
    pub http_nice: i32,
}

/// A `[model]` (or one `[[model]]` entry): what to serve and how to run it.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// The model's name: in `/model_predict?model=`, the KServe v2 routes, metrics and logs.
    pub name: String,
    /// The model's version in the KServe v2 routes: a positive whole number, as Triton's. Several
    /// entries may share a name with different versions; a route without a version takes the
    /// highest.
    pub version: String,
    /// The ONNX file.
    pub path: PathBuf,
    /// The class names: the seed's JSON object (`{"0": "Aeroplane", ...}`), a JSON list, or a
    /// text file with one name a line.
    pub labels: PathBuf,
    /// Outputs above this are labels.
    pub threshold: f32,
    /// CPU or a CUDA device.
    pub device: Device,
    /// ONNX Runtime intra-op threads per worker; 0 means cores / workers.
    pub threads: usize,
    /// The arithmetic it is served in: `fp32` (ONNX Runtime) or `bf16` (OpenVINO, on a CPU
    /// with AVX512-BF16 or AMX).
    pub precision: Precision,
    /// ONNX Runtime's shared library; when absent, `ORT_DYLIB_PATH`.
    pub runtime_library: Option<PathBuf>,
    /// OpenVINO's C library, for `precision = "bf16"`; when absent, `ARBITER_OPENVINO_LIBRARY`.
    pub openvino_library: Option<PathBuf>,
    /// On a CPU, share one copy of the weights between workers through a prepared model.
    pub share_weights: bool,
    /// Where prepared models are kept.
    pub cache_dir: PathBuf,
    /// Let ONNX Runtime's intra-op threads spin while waiting for work.
    pub spinning: bool,
    /// On a CPU with several threads per worker, run batches side by side under load, one
    /// thread each; a lone request still runs on every thread.
    pub parallel_batches: bool,
    /// Decode big JPEGs at a reduced scale (libjpeg's DCT scaling, as Pillow's `draft`) when
    /// they stay at least twice the model's input: faster, but not the seed's exact pixels.
    pub fast_jpeg: bool,
    /// The nice value (0 to 19) of the threads that run this model (its requests are decoded at
    /// this or `server.http_nice`, whichever is higher): a higher value gives the cores to the
    /// other models first, so a flood of this one takes only what they leave.
    pub nice: i32,
    /// `[model.preprocess]`: how an image becomes the model's input.
    pub preprocess: Preprocess,
    /// `[model.postprocess]`: how the model's outputs become the answer.
    pub postprocess: Postprocess,
    /// `[batching]` with this model's own `[model.batching]` keys over it: each model has its
    /// own queue and batches.
    pub batching: Batching,
}

/// One of Pillow's resampling filters (`Image.resize(size, filter)`); the names of
/// `arbiter_vision::Filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// `Image.NEAREST`.
    Nearest,
    /// `Image.BILINEAR`: the seed's.
    Bilinear,
    /// `Image.BICUBIC`.
    Bicubic,
    /// `Image.LANCZOS`.
    Lanczos,
}

/// The geometry from the decoded image to the model's input; the names of
/// `arbiter_vision::Geometry`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Geometry {
    /// Resized to exactly the input's size, the aspect ratio lost: torchvision's
    /// `Resize([h, w])`. The seed's.
    Squash,
    /// The shorter side resized to this many pixels, then the center cut out: torchvision's
    /// `Resize(s)` then `CenterCrop((h, w))`.
    ShorterSide(u32),
    /// timm's `crop_pct`, in (0, 1]: resized to `floor(side / crop_pct)`, then `CenterCrop`.
    CropPct(f64),
}

/// The order of the color channels in the model's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelOrder {
    /// Red, green, blue: PIL's and torchvision's.
    Rgb,
    /// Blue, green, red: OpenCV's, and Keras's `caffe` models.
    Bgr,
}

/// Where the channel axis sits in the model's 4-dimensional input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorLayout {
    /// `[N, C, H, W]`: PyTorch's.
    Nchw,
    /// `[N, H, W, C]`: TensorFlow's and Keras's.
    Nhwc,
}

/// The element type of the model's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementType {
    /// Normalized floats: `(pixel / divide_by - mean) / std`.
    Float32,
    /// The 0..=255 pixels as they are, for a model that normalizes inside its graph.
    Uint8,
}

/// The model's input size in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputSize {
    /// Rows.
    pub height: u32,
    /// Columns.
    pub width: u32,
}

/// `[model.preprocess]`: the recipe of the model's own Python pipeline, from the decoded RGB image
/// to the input tensor. The defaults are the seed's: squashed with Pillow's bilinear filter, then
/// torchvision's `ToTensor` and `Normalize` with ImageNet's mean and std, RGB, NCHW, `float32`.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    /// The geometry around the resize.
    pub resize: Geometry,
    /// The resampling filter.
    pub interpolation: Filter,
    /// Each 0..=255 value is divided by this first, in `f32` (`ToTensor`: 255).
    pub divide_by: f32,
    /// Subtracted per channel after the division, in the input's channel order (`channels`):
    /// `mean[0]` is blue's in a BGR input, as Keras and OpenCV write it.
    pub mean: [f32; 3],
    /// Divided by per channel after the mean, in the input's channel order.
    pub std: [f32; 3],
    /// The input's channel order.
    pub channels: ChannelOrder,
    /// The input's axes.
    pub layout: TensorLayout,
    /// The input's element type.
    pub input_type: ElementType,
    /// The input's size; `None` takes it from the model, which must then have a static one.
    pub input_size: Option<InputSize>,
}

/// How the model's outputs become an answer's labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The seed's: every class whose raw output is above `model.threshold`.
    Threshold,
    /// Multi-label: every class whose sigmoid is above `model.threshold`.
    Sigmoid,
    /// Single-label: the `top_k` classes of highest softmax, most likely first.
    Softmax {
        /// How many classes an answer keeps, at least 1.
        top_k: usize,
    },
}

/// `[model.postprocess]`: what the answer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Postprocess {
    /// How outputs become labels.
    pub output: Output,
    /// Answers also give each kept class's index and score (an opt-in: the seed's answer is
    /// the labels alone).
    pub scores: bool,
}

/// `[batching]`: how a worker groups requests for the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Batching {
    /// The largest batch.
    pub max_batch_size: usize,
    /// How long the first request of a batch waits for others; 0 takes what is queued.
    pub max_delay: Duration,
    /// Requests waiting for the model, per worker; a full queue answers 503 at once.
    pub queue_size: usize,
    /// Threads per worker that decode and preprocess images; 0 means cores / workers.
    pub preprocess_threads: usize,
}

/// `[limits]`: what a request may cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// The largest request body.
    pub max_body: u64,
    /// The most pixels an image may declare; refused before decoding.
    pub max_pixels: u64,
    /// Time allowed to send the request headers.
    pub header_timeout: Duration,
    /// Time allowed to send the body.
    pub body_timeout: Duration,
    /// Time allowed for the whole request.
    pub request_deadline: Duration,
    /// How long an idle keep-alive connection stays open.
    pub keepalive: Duration,
    /// Open connections per worker.
    pub max_connections: usize,
}

/// `[memory]`: the budget checked before any worker starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// The capacity: `Auto` reads the GPU (NVML) or available host memory.
    pub limit: Amount,
    /// One worker's footprint: `Auto` estimates it from the model file.
    pub per_worker: Amount,
}

/// `[log]`: where logs go and how they look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// A file to append to (reopened on USR1); stderr when absent.
    pub file: Option<PathBuf>,
    /// `"text"` or `"json"`.
    pub json: bool,
    /// A tracing filter, like `"info"` or `"arbiter=debug"`.
    pub level: String,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from.
    pub file: PathBuf,
    /// `[server]`.
    pub server: Server,
    /// `[model]`, or every `[[model]]` entry in the file's order; never empty.
    pub models: Vec<Model>,
    /// The index in `models` of the model `/model_predict` answers with when the request names
    /// none: the one with `default = true`, else the first.
    pub default_model: usize,
    /// `[batching]`: what every model's batching starts from (see [`Model::batching`]), and the
    /// worker-wide `preprocess_threads`.
    pub batching: Batching,
    /// `[limits]`.
    pub limits: Limits,
    /// `[memory]`.
    pub memory: Memory,
    /// `[log]`.
    pub log: Log,
    /// `[[program]]`: other processes the arbiter keeps running, like supervisord.
    pub programs: Vec<Program>,
}

/// When a supervised program is restarted after it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Autorestart {
    /// Whatever the exit code.
    Always,
    /// Only when the exit code is not in `exitcodes` (or it died from a signal).
    Unexpected,
    /// Never.
    Never,
}

/// A `[[program]]`: a process supervised like supervisord's programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// Its name in logs and `arbiter status`.
    pub name: String,
    /// The argv, `command[0]` looked up in `PATH`.
    pub command: Vec<String>,
    /// The working directory.
    pub directory: Option<PathBuf>,
    /// Extra environment variables.
    pub environment: Vec<(String, String)>,
    /// When to restart it.
    pub autorestart: Autorestart,
    /// Exit codes that count as expected.
    pub exitcodes: Vec<i32>,
    /// How long it must stay up to count as started.
    pub startsecs: Duration,
    /// Failed starts in a row before it is FATAL.
    pub startretries: u32,
    /// The signal that stops it (a name like "TERM" or "QUIT").
    pub stopsignal: String,
    /// How long to wait after `stopsignal` before KILL.
    pub stopwaitsecs: Duration,
}
