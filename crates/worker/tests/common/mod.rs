//! Shared helpers: a fake backend, an in-process server on a real socket, a tiny HTTP client,
//! and request bodies as curl and Python `requests` build them.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arbiter_config::Config;
use arbiter_infer::Labels;
use arbiter_scoreboard::{Scoreboard, SlotRef, SlotState};
use arbiter_worker::{
    Backend, Batching, InferenceQueue, InferenceThread, LaneLoader, Limits, Listener, ModelInfo,
    Service, ServiceConfig, WorkerOptions,
};
use tokio::sync::watch;

/// The seed's class names.
pub const LABELS: &str = r#"{"0": "Aeroplane", "1": "Bicycle", "2": "Bird", "3": "Boat", "4": "Bottle", "5": "Bus", "6": "Car", "7": "Cat", "8": "Chair", "9": "Cow", "10": "Dining Table", "11": "Dog", "12": "Horse", "13": "Motorbike", "14": "Person", "15": "Potted Plant", "16": "Sheep", "17": "Sofa", "18": "Train", "19": "TV Monitor"}"#;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A worker's options from a config file holding `toml`: the built-in defaults for every key it
/// leaves out, relative paths against `etc/`, one ONNX Runtime thread.
pub fn options(toml: &str) -> WorkerOptions {
    let config =
        Config::parse(toml, &repo().join("etc/test.toml")).unwrap_or_else(|e| panic!("{e}"));
    WorkerOptions::from_config(&config, 1, None)
}

/// A file made by `scripts/setup`, or a clear failure.
pub fn var(path: &str) -> PathBuf {
    let p = repo().join("var").join(path);
    assert!(p.exists(), "{} is missing: run scripts/setup", p.display());
    p
}

/// One run of a fake engine: its name and the engines already running when it started.
pub type Run = (&'static str, Vec<&'static str>);

/// A fake model: 20 outputs per image, output `c` = the image's value at index `c` (so the
/// answer depends on the pixels), after `delay`; counts the images it ran. With `lanes > 0` it
/// offers that many lanes, and records which engine ran each batch and what ran beside it.
#[derive(Debug, Clone)]
pub struct Fake {
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
    pub fn new(delay: Duration) -> Fake {
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
            num_classes: 20,
            max_batch: 8,
            load_time: Duration::from_millis(5),
        }
    }

    fn run(&mut self, batch: &[f32], n: usize) -> Result<Vec<f32>, String> {
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
pub fn service<B: Backend>(
    backend: B,
    batching: Batching,
    limits: Limits,
) -> (Service, Scoreboard, SlotRef, InferenceThread) {
    service_with(move || Ok(backend), batching, limits)
}

/// Builds a service whose inference thread loads its backend with `load`.
pub fn service_with<B: Backend>(
    load: impl FnOnce() -> Result<B, String> + Send + 'static,
    batching: Batching,
    limits: Limits,
) -> (Service, Scoreboard, SlotRef, InferenceThread) {
    service_configured(load, batching, config(limits))
}

/// The test services' settings.
pub fn config(limits: Limits) -> ServiceConfig {
    ServiceConfig {
        model_name: "resnet50".into(),
        threshold: 0.5,
        limits,
        preprocess_threads: 2,
        trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
        trust_unix_peers: true,
        max_requests: None,
        fast_jpeg: false,
    }
}

/// Builds a service with these settings.
pub fn service_configured<B: Backend>(
    load: impl FnOnce() -> Result<B, String> + Send + 'static,
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
        slot.clone(),
        || {},
    )
    .unwrap();
    slot.set_state(SlotState::Ready);
    let service = Service::new(
        config,
        Labels::parse(LABELS).unwrap(),
        queue,
        board.clone(),
        slot.clone(),
    );
    (service, board, slot, thread)
}

/// A server on 127.0.0.1 running in its own thread and tokio runtime.
pub struct TestServer {
    pub addr: SocketAddr,
    pub service: Service,
    pub board: Scoreboard,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    pub fn start(service: Service, board: Scoreboard, limits: Limits) -> TestServer {
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
    pub fn drain(&mut self) -> std::thread::JoinHandle<()> {
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

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `error` field of a JSON error body.
    pub fn error(&self) -> String {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error field: {}", self.text()))
            .to_owned()
    }
}

/// Reads one response from `stream` (Content-Length framed).
pub fn read_reply(stream: &mut TcpStream) -> std::io::Result<Reply> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before a response",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// Sends raw bytes on a new connection and reads one response.
pub fn raw(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(request).unwrap();
    read_reply(&mut stream).unwrap()
}

/// Builds a request with `Connection: close`.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

pub fn get(addr: SocketAddr, path: &str) -> Reply {
    raw(addr, &request("GET", path, &[], b""))
}

/// A multipart body the way curl's `-F image=@photo.png` builds it: returns (content type, body).
pub fn multipart_curl(
    field: &str,
    filename: &str,
    part_type: &str,
    data: &[u8],
) -> (String, Vec<u8>) {
    let boundary = "------------------------d74496d66958873e";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\nContent-Type: {part_type}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// A multipart body the way Python `requests.post(url, files={"image": f})` builds it (no part
/// Content-Type, a hex boundary), with an extra text field before it, as forms often have.
pub fn multipart_requests(filename: &str, data: &[u8]) -> (String, Vec<u8>) {
    let boundary = "3b2b8c6e3b0c4f5e9a6d1f7c2e4a8b90";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{filename}\"\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// A solid-colour PNG.
pub fn png(width: u32, height: u32, rgb: [u8; 3]) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(width, height, image::Rgb(rgb));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// POSTs an image as curl's multipart on a new connection.
pub fn predict(addr: SocketAddr, image: &[u8]) -> Reply {
    let (ct, body) = multipart_curl("image", "photo.png", "image/png", image);
    raw(
        addr,
        &request("POST", "/model_predict", &[("Content-Type", &ct)], &body),
    )
}

/// Reads a sample's value from a Prometheus page.
pub fn metric(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}
