//! Measures one worker's service in-process (no arbiter): requests/s and p50/p99 latency of
//! `POST /model_predict` at several concurrencies, beside ONNX Runtime alone on the same model.
//! Used to pick the tokio runtime flavour and the batching defaults.
//!
//! ```text
//! cargo run --release -p arbiter-bench --bin service -- \
//!     [--photo var/photos/grace_hopper.jpg] [--clients 1,8] [--seconds 5] [--threads 2] \
//!     [--flavour current|multi] [--batch 1] [--delay-ms 0] [--preprocess 1] [--spin 0|1]
//!     [--healthz 1]   (GET /healthz instead: the HTTP layer's own cost)
//! ```
//!
//! or `scripts/bench --rust service [ARGS]`; from the repository root (it reads var/ and etc/).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use arbiter_config::Config;
use arbiter_infer::{Device, Engine, InferError, Labels, ModelOptions};
use arbiter_scoreboard::Scoreboard;
use arbiter_worker::{
    Batching, InferenceQueue, Listener, Models, ServedModel, Service, ServiceConfig, WorkerOptions,
};

struct Args {
    photo: PathBuf,
    clients: Vec<usize>,
    seconds: f64,
    threads: usize,
    flavour: String,
    batch: usize,
    delay_ms: u64,
    preprocess: usize,
    spin: bool,
    healthz: bool,
}

fn args() -> Args {
    let mut a = Args {
        photo: "var/photos/grace_hopper.jpg".into(),
        clients: vec![1, 8],
        seconds: 5.0,
        threads: 2,
        flavour: "current".into(),
        batch: 1,
        delay_ms: 0,
        preprocess: 1,
        spin: false,
        healthz: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let (k, v) = (
            pair[0].as_str(),
            pair.get(1).map(String::as_str).unwrap_or(""),
        );
        match k {
            "--photo" => a.photo = v.into(),
            "--clients" => a.clients = v.split(',').map(|c| c.parse().unwrap()).collect(),
            "--seconds" => a.seconds = v.parse().unwrap(),
            "--threads" => a.threads = v.parse().unwrap(),
            "--flavour" => a.flavour = v.into(),
            "--batch" => a.batch = v.parse().unwrap(),
            "--delay-ms" => a.delay_ms = v.parse().unwrap(),
            "--preprocess" => a.preprocess = v.parse().unwrap(),
            "--spin" => a.spin = v == "1",
            "--healthz" => a.healthz = v == "1",
            other => panic!("unknown option {other}"),
        }
    }
    a
}

fn model_options(threads: usize, batch: usize) -> ModelOptions {
    ModelOptions {
        path: "var/models/resnet50-voc20.onnx".into(),
        runtime_library: Some("var/onnxruntime/libonnxruntime.so.1.32.0".into()),
        device: Device::Cpu,
        intra_threads: threads,
        max_batch: batch.max(1),
        expected_classes: Some(20),
        input: arbiter_infer::InputRecipe::SEED,
    }
}

fn load(opts: &ModelOptions, spin: bool) -> Result<Engine, InferError> {
    arbiter_infer::init_runtime(opts.runtime_library.as_deref())?;
    let tuning = arbiter_infer::SessionTuning::for_device(Device::Cpu, spin);
    arbiter_infer::Model::load_tuned(opts, &tuning).map(Engine::from)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// One keep-alive client sending the same request until `until`; returns its latencies.
fn client(addr: SocketAddr, request: &[u8], until: Instant) -> Vec<Duration> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut latencies = Vec::new();
    let mut buf = vec![0u8; 65536];
    while Instant::now() < until {
        let started = Instant::now();
        stream.write_all(request).unwrap();
        let mut got = Vec::new();
        loop {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "connection closed");
            got.extend_from_slice(&buf[..n]);
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                assert!(head.starts_with("http/1.1 200"), "{head}");
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap();
                if got.len() >= end + 4 + len {
                    break;
                }
            }
        }
        latencies.push(started.elapsed());
    }
    latencies
}

fn main() {
    let a = args();
    // The request limits are the config's defaults.
    let config = Config::parse("", std::path::Path::new("etc/arbiter.toml")).unwrap();
    let limits = WorkerOptions::from_config(&config, |_| a.threads, None).limits;
    let photo = std::fs::read(&a.photo).expect("the photo (run scripts/setup)");

    // ONNX Runtime alone: batch-1 runs of a preprocessed image on the same threads.
    let mut alone = load(&model_options(a.threads, a.batch), a.spin).unwrap();
    let tensor =
        arbiter_vision::preprocess(&photo, &arbiter_vision::Limits::default(), 224, 224).unwrap();
    let started = Instant::now();
    let mut runs = 0;
    while started.elapsed().as_secs_f64() < a.seconds.min(3.0) {
        alone.run(&tensor, 1).unwrap();
        runs += 1;
    }
    let ort_per_s = runs as f64 / started.elapsed().as_secs_f64();
    println!(
        "ORT alone, batch 1, {} threads: {ort_per_s:.1} img/s ({:.1} ms each)",
        a.threads,
        1e3 / ort_per_s
    );
    drop(alone);

    let board = Scoreboard::create(1).unwrap();
    let slot = board.slot(0);
    slot.reset(std::process::id(), 1);
    slot.set_models(&[("resnet50", "1")]);
    let batching = Batching {
        max_batch_size: a.batch,
        max_delay: Duration::from_millis(a.delay_ms),
        queue_capacity: 256,
    };
    let opts = model_options(a.threads, a.batch);
    let spin = a.spin;
    let (queue, _thread) = InferenceQueue::start(
        move || load(&opts, spin),
        &batching,
        a.preprocess,
        slot.model(0),
        || {},
    )
    .unwrap();
    let config = ServiceConfig {
        limits: limits.clone(),
        preprocess_threads: a.preprocess,
        trusted_proxies: Vec::new(),
        trust_unix_peers: false,
        max_requests: None,
        ui: true,
    };
    let labels = Labels::load(std::path::Path::new("etc/class_name.json")).unwrap();
    let model = ServedModel {
        name: "resnet50".into(),
        version: "1".into(),
        labels,
        threshold: 0.5,
        recipe: arbiter_worker::Recipe::SEED,
        queue,
        batching,
        on_gpu: false,
        nice: 0,
        stats: slot.model(0),
    };
    let service = Service::new(config, Models::new(vec![model], 0), board.clone(), slot);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, rx) = tokio::sync::watch::channel(false);
    let flavour = a.flavour.clone();
    let preprocess = a.preprocess;
    std::thread::spawn(move || {
        let rt = match flavour.as_str() {
            "multi" => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build(),
            _ => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
        }
        .unwrap();
        let _ = preprocess;
        rt.block_on(arbiter_worker::serve(
            service,
            vec![Listener::Tcp(listener)],
            limits,
            rx,
        ))
        .unwrap();
    });

    let (content_type, body) =
        arbiter_testkit::multipart::curl("image", "p.jpg", "image/jpeg", &photo);
    // Keep-alive: the clients send this request again and again on one connection.
    let mut request = format!(
        "POST /model_predict HTTP/1.1\r\nHost: b\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    if a.healthz {
        request = b"GET /healthz HTTP/1.1\r\nHost: b\r\n\r\n".to_vec();
    }

    // Warm-up.
    client(addr, &request, Instant::now() + Duration::from_millis(500));
    for &clients in &a.clients {
        let until = Instant::now() + Duration::from_secs_f64(a.seconds);
        let started = Instant::now();
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let request = request.clone();
                std::thread::spawn(move || client(addr, &request, until))
            })
            .collect();
        let mut all: Vec<Duration> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let elapsed = started.elapsed().as_secs_f64();
        all.sort();
        let rps = all.len() as f64 / elapsed;
        println!(
            "{} flavour={} batch={} delay={}ms preprocess={} clients={clients}: {rps:.1} req/s ({:.2} x ORT alone), p50 {:.1} ms, p99 {:.1} ms",
            if a.healthz {
                "/healthz".into()
            } else {
                a.photo.file_name().unwrap().to_string_lossy()
            },
            a.flavour,
            a.batch,
            a.delay_ms,
            a.preprocess,
            rps / ort_per_s,
            percentile(&all, 0.5),
            percentile(&all, 0.99),
        );
    }
    // Mean time per stage over the whole run, from the scoreboard.
    let page = arbiter_scoreboard::render_prometheus(&board);
    let value = |series: &str| -> f64 {
        page.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let stages: Vec<String> = ["decode", "preprocess", "queue_wait", "inference"]
        .iter()
        .map(|stage| {
            let l = format!("{{worker=\"0\",generation=\"1\",stage=\"{stage}\"}}");
            let sum = value(&format!("arbiter_stage_duration_seconds_sum{l}"));
            let count = value(&format!("arbiter_stage_duration_seconds_count{l}"));
            format!("{stage} {:.1} ms", sum / count * 1e3)
        })
        .collect();
    println!("mean per request: {}", stages.join(", "));
}
