//! The integration tests' harness: a fresh directory per test, a config written into it, the
//! real `arbiter` binary started on it; the HTTP client, the multipart bodies and the files
//! `scripts/setup` makes come from `arbiter-testkit`, re-exported here.
//!
//! Tests that start an arbiter take a process-wide lock: each loads real models, and running
//! several at once on a 2-core machine would turn timing margins into flakes.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

pub(crate) use arbiter_testkit::http::{Response, request, try_request};
pub(crate) use arbiter_testkit::multipart;
pub(crate) use arbiter_testkit::setup::{
    ONNXRUNTIME, RESNET50, onnxruntime, photo, resnet50, var, var_dir,
};

static SERIAL: Mutex<()> = Mutex::new(());

/// The repository root.
pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `arbiter` binary under test.
pub(crate) fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_arbiter"))
}

/// A free loopback port (bound and released; the kernel does not hand it out again at once).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One test's world: a directory with a config, and maybe a running arbiter.
pub(crate) struct Env {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub config: PathBuf,
    pub model: Model,
    pub arbiter: Option<Child>,
    _serial: MutexGuard<'static, ()>,
}

/// The model a test's workers load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Model {
    /// The ResNet50 that `scripts/setup` makes, with the seed's labels: for the tests that
    /// check its answers, its memory or its load time.
    ResNet50,
    /// `crates/infer/tests/data/tiny_ok.onnx` (a 4 x 4 input, 5 classes), with 5 labels written
    /// next to the config: it loads and answers at once, for the tests of supervision alone
    /// (signals, replacement, reloads, programs), which only need a worker that serves.
    Tiny,
}

impl Model {
    /// The model file.
    pub(crate) fn path(self) -> PathBuf {
        match self {
            Model::ResNet50 => var_dir().join(RESNET50),
            Model::Tiny => root().join("crates/infer/tests/data/tiny_ok.onnx"),
        }
    }

    /// Its label file, written into `dir` when it is not a repository file.
    fn labels(self, dir: &Path) -> PathBuf {
        match self {
            Model::ResNet50 => root().join("etc/class_name.json"),
            Model::Tiny => {
                let path = dir.join("tiny_labels.json");
                std::fs::write(
                    &path,
                    r#"{"0": "Zero", "1": "One", "2": "Two", "3": "Three", "4": "Four"}"#,
                )
                .unwrap();
                path
            }
        }
    }

    /// Fails, naming what to run, when the files this model's workers need are missing.
    fn require(self) {
        onnxruntime();
        match self {
            Model::ResNet50 => {
                resnet50();
            }
            Model::Tiny => assert!(
                self.path().is_file(),
                "{} is missing",
                self.path().display()
            ),
        }
    }
}

/// The `[server]` and `[model]` sections every test config starts from, for `model`;
/// `server_extra` is appended inside `[server]` (so it can override keys there) and `sections`
/// after everything.
pub(crate) fn config_text(
    model: Model,
    dir: &Path,
    port: u16,
    workers: usize,
    server_extra: &str,
    sections: &str,
) -> String {
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
path = "{model}"
labels = "{labels}"
runtime_library = "{runtime}"
threads = 1

{sections}
"#,
        dir = dir.display(),
        model = model.path().display(),
        labels = model.labels(dir).display(),
        runtime = var_dir().join(ONNXRUNTIME).display(),
    )
}

impl Env {
    /// A fresh directory with a config for `workers` workers of the ResNet50.
    pub(crate) fn new(workers: usize) -> Env {
        Env::with(workers, "", "")
    }

    /// A fresh directory with a config for `workers` workers of the ResNet50 and extra keys.
    pub(crate) fn with(workers: usize, server_extra: &str, sections: &str) -> Env {
        Env::with_model(Model::ResNet50, workers, server_extra, sections)
    }

    /// A fresh directory with a config for `workers` workers of the tiny model.
    pub(crate) fn tiny(workers: usize) -> Env {
        Env::with_model(Model::Tiny, workers, "", "")
    }

    /// A fresh directory with a config for `workers` workers of `model` and extra keys.
    pub(crate) fn with_model(
        model: Model,
        workers: usize,
        server_extra: &str,
        sections: &str,
    ) -> Env {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        model.require();
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("arbiter.toml");
        let env = Env {
            dir,
            port,
            config,
            model,
            arbiter: None,
            _serial: serial,
        };
        env.write_config(workers, server_extra, sections);
        env
    }

    /// Rewrites the config (for reload tests).
    pub(crate) fn write_config(&self, workers: usize, server_extra: &str, sections: &str) {
        std::fs::write(
            &self.config,
            config_text(
                self.model,
                self.dir.path(),
                self.port,
                workers,
                server_extra,
                sections,
            ),
        )
        .unwrap();
    }

    pub(crate) fn log_path(&self) -> PathBuf {
        self.dir.path().join("arbiter.log")
    }

    /// Starts `arbiter start -c CONFIG` in the foreground, its output going to a log file.
    pub(crate) fn start(&mut self) -> &mut Self {
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
    pub(crate) fn start_ready(&mut self, n: usize) -> &mut Self {
        self.start();
        self.wait_ready(n, Duration::from_secs(60));
        self
    }

    pub(crate) fn pid(&self) -> Pid {
        Pid::from_raw(self.arbiter.as_ref().expect("arbiter started").id() as i32)
    }

    pub(crate) fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).unwrap();
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Runs an `arbiter` subcommand against this config.
    pub(crate) fn cli(&self, args: &[&str]) -> Output {
        bin()
            .args(args)
            .arg("-c")
            .arg(&self.config)
            .output()
            .unwrap()
    }

    /// `arbiter status --json`, parsed.
    pub(crate) fn status(&self) -> Value {
        let out = self.cli(&["status", "--json"]);
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The workers in `state` (ready, booting, draining), from `arbiter status`.
    pub(crate) fn workers(&self, state: &str) -> Vec<Value> {
        self.status()["workers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["state"] == state)
            .cloned()
            .collect()
    }

    /// Waits until exactly `n` workers are ready and none is booting or draining.
    pub(crate) fn wait_ready(&self, n: usize, timeout: Duration) {
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
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
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

    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Posts an image the way curl -F image=@photo does.
    pub(crate) fn predict(&self, image: &Path) -> Response {
        post_multipart(self.addr(), "/model_predict", "image", image)
    }

    pub(crate) fn get(&self, path: &str) -> Response {
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

/// Posts `file` the way `curl -F field=@file` does; panics on an I/O failure.
pub(crate) fn post_multipart(addr: SocketAddr, path: &str, field: &str, file: &Path) -> Response {
    try_post_multipart(addr, path, field, file).unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

/// Like [`post_multipart`], but an I/O failure is returned, for load loops that count failures.
pub(crate) fn try_post_multipart(
    addr: SocketAddr,
    path: &str,
    field: &str,
    file: &Path,
) -> std::io::Result<Response> {
    let data = std::fs::read(file)?;
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let (content_type, body) = multipart::curl(field, &name, "application/octet-stream", &data);
    try_request(
        addr,
        "POST",
        path,
        &[("Content-Type", &content_type)],
        &body,
    )
}

/// `arbiter predict` on images, one JSON value per image.
pub(crate) fn predict_cli(config: &Path, images: &[PathBuf]) -> Vec<Value> {
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
pub(crate) struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handles: Vec<std::thread::JoinHandle<Tally>>,
}

/// One client's (successes, failures, answers with the time each request was sent).
type Tally = (u64, Vec<String>, Vec<(Instant, Value)>);

impl Load {
    pub(crate) fn start(addr: SocketAddr, image: PathBuf, clients: usize, limit: Duration) -> Load {
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
                        let sent = Instant::now();
                        match try_post_multipart(addr, "/model_predict", "image", &image) {
                            Ok(r) if r.status == 200 => {
                                ok += 1;
                                answers.push((sent, r.json()));
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

    /// Stops the load and returns (successes, failures, answers with the time each request was
    /// sent).
    pub(crate) fn finish(self) -> (u64, Vec<String>, Vec<(Instant, Value)>) {
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
pub(crate) fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
