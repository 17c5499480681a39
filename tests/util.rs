//! The integration tests' harness: a fresh directory per test, a config written into it, the
//! real `arbiter` binary started on it, and a small HTTP/1.1 client over real sockets.
//!
//! Tests that start an arbiter take a process-wide lock: each loads real models, and running
//! several at once on a 2-core machine would turn timing margins into flakes.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

static SERIAL: Mutex<()> = Mutex::new(());

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file made by `scripts/setup`; a missing one fails the test with what to run.
pub fn setup_file(relative: &str) -> PathBuf {
    let path = root().join(relative);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup first (the README's test command does)",
        path.display()
    );
    path
}

/// A photo from `var/photos`.
pub fn photo(name: &str) -> PathBuf {
    setup_file(&format!("var/photos/{name}"))
}

/// The `arbiter` binary under test.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_arbiter"))
}

/// A free loopback port (bound and released; the kernel does not hand it out again at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One test's world: a directory with a config, and maybe a running arbiter.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub config: PathBuf,
    pub arbiter: Option<Child>,
    _serial: MutexGuard<'static, ()>,
}

/// The `[server]`, `[model]`... sections every test config starts from; `extra` is appended
/// inside `[server]` (so it can override keys there) and `sections` after everything.
pub fn config_text(
    dir: &Path,
    port: u16,
    workers: usize,
    server_extra: &str,
    sections: &str,
) -> String {
    let root = root();
    format!(
        r#"[server]
bind = ["127.0.0.1:{port}"]
workers = {workers}
pidfile = "{dir}/arbiter.pid"
control_socket = "{dir}/arbiter.sock"
allow_root = true
graceful_timeout = "10s"
boot_timeout = "60s"
heartbeat_timeout = "3s"
{server_extra}

[model]
path = "{root}/var/models/resnet50-voc20.onnx"
labels = "{root}/etc/class_name.json"
runtime_library = "{root}/var/onnxruntime/libonnxruntime.so.1.32.0"
threads = 1

{sections}
"#,
        dir = dir.display(),
        root = root.display(),
    )
}

impl Env {
    /// A fresh directory with a config for `workers` workers.
    pub fn new(workers: usize) -> Env {
        Env::with(workers, "", "")
    }

    /// A fresh directory with a config for `workers` workers and extra keys.
    pub fn with(workers: usize, server_extra: &str, sections: &str) -> Env {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        setup_file("var/models/resnet50-voc20.onnx");
        setup_file("var/onnxruntime/libonnxruntime.so.1.32.0");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("arbiter.toml");
        std::fs::write(
            &config,
            config_text(dir.path(), port, workers, server_extra, sections),
        )
        .unwrap();
        Env {
            dir,
            port,
            config,
            arbiter: None,
            _serial: serial,
        }
    }

    /// Rewrites the config (for reload tests).
    pub fn write_config(&self, workers: usize, server_extra: &str, sections: &str) {
        std::fs::write(
            &self.config,
            config_text(self.dir.path(), self.port, workers, server_extra, sections),
        )
        .unwrap();
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("arbiter.log")
    }

    /// Starts `arbiter start -c CONFIG` in the foreground, its output going to a log file.
    pub fn start(&mut self) -> &mut Self {
        let log = std::fs::File::create(self.log_path()).unwrap();
        let child = bin()
            .args(["start", "-c"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.arbiter = Some(child);
        self
    }

    /// Starts, and waits until `n` workers are ready.
    pub fn start_ready(&mut self, n: usize) -> &mut Self {
        self.start();
        self.wait_ready(n, Duration::from_secs(60));
        self
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.arbiter.as_ref().expect("arbiter started").id() as i32)
    }

    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).unwrap();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Runs an `arbiter` subcommand against this config.
    pub fn cli(&self, args: &[&str]) -> Output {
        bin()
            .args(args)
            .arg("-c")
            .arg(&self.config)
            .output()
            .unwrap()
    }

    /// `arbiter status --json`, parsed.
    pub fn status(&self) -> Value {
        let out = self.cli(&["status", "--json"]);
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The workers in `state` (ready, booting, draining), from `arbiter status`.
    pub fn workers(&self, state: &str) -> Vec<Value> {
        self.status()["workers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["state"] == state)
            .cloned()
            .collect()
    }

    /// Waits until exactly `n` workers are ready and none is booting or draining.
    pub fn wait_ready(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = &self.arbiter
                && let Ok(Some(status)) = nix::sys::wait::waitpid(
                    Pid::from_raw(child.id() as i32),
                    Some(nix::sys::wait::WaitPidFlag::WNOHANG),
                )
                .map(Some)
                && status != nix::sys::wait::WaitStatus::StillAlive
            {
                panic!(
                    "the arbiter exited ({status:?}) before {n} workers were ready; log:\n{}",
                    self.log()
                );
            }
            let out = self.cli(&["status", "--json"]);
            if out.status.success() {
                let status: Value = serde_json::from_slice(&out.stdout).unwrap();
                let workers = status["workers"].as_array().unwrap();
                if workers.len() == n && workers.iter().all(|w| w["state"] == "ready") {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{n} workers not ready in {timeout:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the arbiter to exit and returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.arbiter.as_mut().expect("arbiter started");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "arbiter still running after {timeout:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Posts an image the way curl -F image=@photo does.
    pub fn predict(&self, image: &Path) -> Response {
        post_multipart(self.addr(), "/model_predict", "image", image)
    }

    pub fn get(&self, path: &str) -> Response {
        request(self.addr(), "GET", path, &[], &[])
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(child) = self.arbiter.as_mut()
            && child.try_wait().ok().flatten().is_none()
        {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGQUIT);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && child.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request on a fresh connection (`Connection: close`) and reads the whole answer.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_request(addr, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Like [`request`], but an I/O failure is returned, for load loops that count failures.
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    read_response(stream)
}

fn read_response(stream: TcpStream) -> std::io::Result<Response> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad status line {line:?}"),
            )
        })?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if let Some((k, v)) = trimmed.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut body = Vec::new();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
            if size == 0 {
                break;
            }
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        reader.read_to_end(&mut body)?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// The multipart body curl sends for `-F field=@file`.
pub fn multipart(
    field: &str,
    filename: &str,
    content_type: &str,
    data: &[u8],
) -> (String, Vec<u8>) {
    let boundary = "------------------------arbitertestboundary7d3f";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

pub fn post_multipart(addr: SocketAddr, path: &str, field: &str, file: &Path) -> Response {
    try_post_multipart(addr, path, field, file).unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

pub fn try_post_multipart(
    addr: SocketAddr,
    path: &str,
    field: &str,
    file: &Path,
) -> std::io::Result<Response> {
    let data = std::fs::read(file)?;
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let (content_type, body) = multipart(field, &name, "application/octet-stream", &data);
    try_request(
        addr,
        "POST",
        path,
        &[("Content-Type", &content_type)],
        &body,
    )
}

/// `arbiter predict` on images, one JSON value per image.
pub fn predict_cli(config: &Path, images: &[PathBuf]) -> Vec<Value> {
    let out = bin()
        .arg("predict")
        .arg("-c")
        .arg(config)
        .args(images)
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A bounded load loop on its own thread: `clients` connections posting `image` until `stop`
/// is set or `limit` passes. Returns (ok, failures as descriptions).
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handles: Vec<std::thread::JoinHandle<Tally>>,
}

/// One client's (successes, failures, answers).
type Tally = (u64, Vec<String>, Vec<Value>);

impl Load {
    pub fn start(addr: SocketAddr, image: PathBuf, clients: usize, limit: Duration) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handles = (0..clients)
            .map(|_| {
                let stop = stop.clone();
                let image = image.clone();
                std::thread::spawn(move || {
                    let deadline = Instant::now() + limit;
                    let (mut ok, mut failures, mut answers) = (0, Vec::new(), Vec::new());
                    while !stop.load(std::sync::atomic::Ordering::Relaxed)
                        && Instant::now() < deadline
                    {
                        match try_post_multipart(addr, "/model_predict", "image", &image) {
                            Ok(r) if r.status == 200 => {
                                ok += 1;
                                answers.push(r.json());
                            }
                            Ok(r) => failures.push(format!("{} {}", r.status, r.text())),
                            Err(e) => failures.push(e.to_string()),
                        }
                    }
                    (ok, failures, answers)
                })
            })
            .collect();
        Load { stop, handles }
    }

    /// Stops the load and returns (successes, failures, answers in order of completion per client).
    pub fn finish(self) -> (u64, Vec<String>, Vec<Value>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (mut ok, mut failures, mut answers) = (0, Vec::new(), Vec::new());
        for h in self.handles {
            let (o, f, a) = h.join().unwrap();
            ok += o;
            failures.extend(f);
            answers.extend(a);
        }
        (ok, failures, answers)
    }
}

/// Polls `check` every 50 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
