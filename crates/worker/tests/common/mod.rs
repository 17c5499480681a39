//! Shared helpers: a fake backend and an in-process server on a real socket. The HTTP client,
//! the multipart bodies and the files `scripts/setup` makes come from `arbiter-testkit`,
//! re-exported here for every test file.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arbiter_config::Config;
use arbiter_infer::{InferError, Labels, ModelOptions};
use arbiter_scoreboard::{Scoreboard, SlotRef, SlotState};
use arbiter_worker::{
    Backend, Batch, Batching, InferenceQueue, InferenceThread, LaneLoader, Limits, Listener,
    ModelInfo, Models, Recipe, ServedModel, Service, ServiceConfig, WorkerOptions,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use tokio::sync::watch;

// Each test file uses some of these.
#[allow(unused_imports)]
pub(crate) use arbiter_testkit::http::{Response, encode, get, read_response, request, send};
#[allow(unused_imports)]
pub(crate) use arbiter_testkit::max_difference;
pub(crate) use arbiter_testkit::multipart;
#[allow(unused_imports)]
pub(crate) use arbiter_testkit::setup::{onnxruntime, repo_root, resnet50, var};

/// The seed's class names.
pub(crate) const LABELS: &str = r#"{"0": "Aeroplane", "1": "Bicycle", "2": "Bird", "3": "Boat", "4": "Bottle", "5": "Bus", "6": "Car", "7": "Cat", "8": "Chair", "9": "Cow", "10": "Dining Table", "11": "Dog", "12": "Horse", "13": "Motorbike", "14": "Person", "15": "Potted Plant", "16": "Sheep", "17": "Sofa", "18": "Train", "19": "TV Monitor"}"#;

/// A worker's options from a config file holding `toml`: the built-in defaults for every key it
/// leaves out, relative paths against `etc/`, one ONNX Runtime thread.
pub(crate) fn options(toml: &str) -> WorkerOptions {
    let config =
        Config::parse(toml, &repo_root().join("etc/test.toml")).unwrap_or_else(|e| panic!("{e}"));
    WorkerOptions::from_config(&config, |_| 1, None)
}

/// One run of a fake engine: its name and the engines already running when it started.
pub(crate) type Run = (&'static str, Vec<&'static str>);

/// A fake model: 20 outputs per image, output `c` = the image's value at index `c` (so the
/// answer depends on the pixels), after `delay`; counts the images it ran. With `lanes > 0` it
/// offers that many lanes, and records which engine ran each batch and what ran beside it.
#[derive(Debug, Clone)]
pub(crate) struct Fake {
    pub delay: Duration,
    pub ran: Arc<AtomicUsize>,
    pub batches: Arc<std::sync::Mutex<Vec<usize>>>,
    pub side: u32,
    pub lanes: usize,
    /// "whole" for the backend itself, "lane" for its lanes.
    pub engine: &'static str,
    /// Per run: the engine and the engines already running when it started.
    pub runs: Arc<std::sync::Mutex<Vec<Run>>>,
    running: Arc<std::sync::Mutex<Vec<&'static str>>>,
    /// The lanes' loader waits for this lock: a test holding it keeps the lanes loading.
    pub lanes_gate: Arc<std::sync::Mutex<()>>,
}

impl Fake {
    pub(crate) fn new(delay: Duration) -> Fake {
        Fake {
            delay,
            ran: Arc::default(),
            batches: Arc::default(),
            side: 8,
            lanes: 0,
            engine: "whole",
            runs: Arc::default(),
            running: Arc::default(),
            lanes_gate: Arc::default(),
        }
    }
}

impl Backend for Fake {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            input_name: "input".into(),
            output_name: "output".into(),
            width: self.side,
            height: self.side,
            element: arbiter_config::ElementType::Float32,
            layout: arbiter_config::TensorLayout::Nchw,
            num_classes: 20,
            max_batch: 8,
            load_time: Duration::from_millis(5),
        }
    }

    fn run(&mut self, batch: Batch<'_>, n: usize) -> Result<Vec<f32>, InferError> {
        let Batch::F32(batch) = batch else {
            panic!("the fake takes floats")
        };
        // Counted before the work, so a test sees a run as soon as it starts.
        self.ran.fetch_add(n, Ordering::SeqCst);
        self.batches.lock().unwrap().push(n);
        {
            let mut running = self.running.lock().unwrap();
            self.runs
                .lock()
                .unwrap()
                .push((self.engine, running.clone()));
            running.push(self.engine);
        }
        std::thread::sleep(self.delay);
        {
            let mut running = self.running.lock().unwrap();
            let at = running.iter().position(|&e| e == self.engine).unwrap();
            running.remove(at);
        }
        let per = batch.len() / n;
        Ok((0..n)
            .flat_map(|i| batch[i * per..i * per + 20].to_vec())
            .collect())
    }

    fn lanes(&mut self) -> Option<LaneLoader<Fake>> {
        let fake = self.clone();
        (self.lanes > 0).then(|| -> LaneLoader<Fake> {
            Box::new(move || {
                drop(fake.lanes_gate.lock().unwrap());
                Ok((0..fake.lanes)
                    .map(|_| Fake {
                        lanes: 0,
                        engine: "lane",
                        ..fake.clone()
                    })
                    .collect())
            })
        })
    }
}

/// Builds a service around `backend` in slot 0 of a fresh scoreboard.
pub(crate) fn service<B: Backend>(
    backend: B,
    batching: Batching,
    limits: Limits,
) -> (Service, Scoreboard, SlotRef, InferenceThread) {
    service_with(move || Ok(backend), batching, limits)
}

/// Builds a service whose inference thread loads its backend with `load`.
pub(crate) fn service_with<B: Backend>(
    load: impl FnOnce() -> Result<B, InferError> + Send + 'static,
    batching: Batching,
    limits: Limits,
) -> (Service, Scoreboard, SlotRef, InferenceThread) {
    service_configured(load, batching, config(limits))
}

/// The test services' settings.
pub(crate) fn config(limits: Limits) -> ServiceConfig {
    ServiceConfig {
        limits,
        preprocess_threads: 2,
        trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
        trust_unix_peers: true,
        max_requests: None,
        ui: true,
    }
}

/// The one model of a test service: `queue`'s, named `name` version 1, with these labels,
/// threshold and recipe, counted in model block 0 of `slot`.
pub(crate) fn one_model(
    name: &str,
    queue: InferenceQueue,
    batching: Batching,
    labels: Labels,
    recipe: Recipe,
    threshold: f32,
    slot: &SlotRef,
) -> Models {
    slot.set_models(&[(name, "1")]);
    let model = ServedModel {
        name: name.into(),
        version: "1".into(),
        labels,
        threshold,
        recipe,
        queue,
        batching,
        on_gpu: false,
        nice: 0,
        stats: slot.model(0),
    };
    Models::new(vec![model], 0)
}

/// Builds a service with these settings.
pub(crate) fn service_configured<B: Backend>(
    load: impl FnOnce() -> Result<B, InferError> + Send + 'static,
    batching: Batching,
    config: ServiceConfig,
) -> (Service, Scoreboard, SlotRef, InferenceThread) {
    let board = Scoreboard::create(4).unwrap();
    let slot = board.slot(0);
    slot.reset(std::process::id(), 1);
    let (queue, thread) = InferenceQueue::start(
        load,
        &batching,
        config.preprocess_threads,
        slot.model(0),
        || {},
    )
    .unwrap();
    slot.set_state(SlotState::Ready);
    let labels = Labels::parse(LABELS).unwrap();
    let models = one_model(
        "resnet50",
        queue,
        batching,
        labels,
        Recipe::SEED,
        0.5,
        &slot,
    );
    let service = Service::new(config, models, board.clone(), slot.clone());
    (service, board, slot, thread)
}

/// The service of the config file `config` (relative to the repository) in-process, on the
/// backend `load` makes from its model options (ONNX Runtime from `var/`, the class count its
/// labels give): the service, its labels, its options and its scoreboard.
pub(crate) fn serve_config<B: Backend>(
    config: &str,
    load: impl FnOnce(ModelOptions) -> Result<B, InferError> + Send + 'static,
) -> (Service, Labels, WorkerOptions, Scoreboard) {
    let config = Config::load(&repo_root().join(config)).unwrap_or_else(|e| panic!("{e}"));
    let opts = WorkerOptions::from_config(&config, |_| 1, None);
    let mut entry = opts.models[opts.default_model].clone();
    let labels = Labels::load(&entry.labels).unwrap();
    entry.model.expected_classes = Some(labels.len());
    entry.model.runtime_library = Some(onnxruntime());
    let model = entry.model.clone();
    let board = Scoreboard::create(1).unwrap();
    let slot = board.slot(0);
    slot.reset(std::process::id(), 1);
    let (queue, _thread) = InferenceQueue::start(
        move || load(model),
        &entry.batching,
        opts.preprocess_threads,
        slot.model(0),
        || {},
    )
    .unwrap();
    slot.set_state(SlotState::Ready);
    let models = one_model(
        &entry.name,
        queue,
        entry.batching.clone(),
        labels.clone(),
        entry.recipe,
        entry.threshold,
        &slot,
    );
    let service = Service::new(
        ServiceConfig::from_options(&opts),
        models,
        board.clone(),
        slot,
    );
    (service, labels, opts, board)
}

/// Sends `req` to `service` in-process; the status and the body.
pub(crate) async fn handle(service: &Service, req: Request<Full<Bytes>>) -> (u16, Bytes) {
    let response = service.handle(req, arbiter_worker::Peer::Unix).await;
    let status = response.status().as_u16();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

/// A KServe v2 infer request for model `name` with one input tensor sent as binary data.
pub(crate) fn kserve_binary_infer(
    name: &str,
    input: &str,
    shape: &[usize],
    datatype: &str,
    data: &[u8],
) -> Request<Full<Bytes>> {
    let json = serde_json::json!({"inputs": [{
        "name": input,
        "shape": shape,
        "datatype": datatype,
        "parameters": {"binary_data_size": data.len()},
    }]})
    .to_string();
    let mut body = json.as_bytes().to_vec();
    body.extend_from_slice(data);
    Request::post(format!("/v2/models/{name}/infer"))
        .header("inference-header-content-length", json.len())
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// A KServe v2 answer's first output as `f32`s.
pub(crate) fn kserve_output(answer: &serde_json::Value) -> Vec<f32> {
    answer["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

/// A server on 127.0.0.1 running in its own thread and tokio runtime.
pub(crate) struct TestServer {
    pub addr: SocketAddr,
    pub service: Service,
    pub board: Scoreboard,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    pub(crate) fn start(service: Service, board: Scoreboard, limits: Limits) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = watch::channel(false);
        let svc = service.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(arbiter_worker::serve(
                svc,
                vec![Listener::Tcp(listener)],
                limits,
                rx,
            ))
            .unwrap();
        });
        TestServer {
            addr,
            service,
            board,
            stop,
            thread: Some(thread),
        }
    }

    /// Starts draining; returns a handle that ends when the server has.
    pub(crate) fn drain(&mut self) -> std::thread::JoinHandle<()> {
        self.service.start_drain();
        self.stop.send(true).unwrap();
        self.thread.take().unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A solid-colour PNG.
pub(crate) fn png(width: u32, height: u32, rgb: [u8; 3]) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(width, height, image::Rgb(rgb));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// POSTs an image as curl's multipart on a new connection.
pub(crate) fn predict(addr: SocketAddr, image: &[u8]) -> Response {
    let (ct, body) = multipart::curl("image", "photo.png", "image/png", image);
    request(
        addr,
        "POST",
        "/model_predict",
        &[("Content-Type", &ct)],
        &body,
    )
}

/// Reads a sample's value from a Prometheus page.
pub(crate) fn metric(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A request body fed through a channel that records whether the service ever polled it.
pub(crate) struct Watched {
    pub rx: tokio::sync::mpsc::Receiver<Bytes>,
    pub read: Arc<std::sync::atomic::AtomicBool>,
}

impl hyper::body::Body for Watched {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.read.store(true, Ordering::SeqCst);
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// Whether `flag` becomes true within `within`.
pub(crate) async fn became_true(flag: &std::sync::atomic::AtomicBool, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while !flag.load(Ordering::SeqCst) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}
