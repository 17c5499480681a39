//! ONNX Runtime alone, called from Rust as the worker calls it, by session setting (intra-op
//! threads, batch size, spinning, the max-batch warm-up at load), and the cost of preprocessing
//! per photo: what the settings of `[model]` trade. The report's ceiling (ONNX Runtime alone in
//! the shapes of the server under test) is another program, `bench/ceiling.py`.
//!
//! `cargo run --release -p arbiter-bench --bin inference` (or `scripts/bench --rust inference`)
//! after scripts/setup: it needs var/onnxruntime, var/models/resnet50-voc20.onnx and var/photos.
//! `INFERENCE_SECONDS` sets the time per point (default 3).
//!
//! 1. Inference on grace_hopper.jpg's input: batch 1 and 8, at 1 intra-op thread and at all
//!    cores, each point measured over a bounded time after a warm-up; at more than one thread,
//!    with ONNX Runtime's spinning on and off.
//! 2. The first batch-8 run after a load, with and without the max-batch warm-up at load.
//! 3. Preprocessing per photo: decode to RGB, Pillow-exact bilinear resize to the model's input,
//!    normalize to CHW float32.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arbiter_infer::{Device, Model, ModelOptions, SessionTuning, init_runtime};
use arbiter_vision::{Limits, decode_rgb, normalize_chw, preprocess, resize_bilinear};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

fn main() -> Result<()> {
    // This crate lives in bench/ of the repository, whose var/ holds what scripts/setup made.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("bench/ has no parent folder")?;
    let var = root.join("var");
    let library = needed(var.join("onnxruntime/libonnxruntime.so.1.32.0"))?;
    let model_path = needed(var.join("models/resnet50-voc20.onnx"))?;
    let photos = needed(var.join("photos"))?;
    let seconds: f64 = std::env::var("INFERENCE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let point = Duration::from_secs_f64(seconds);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    init_runtime(Some(&library))?;
    // A real photo's input (inference time hardly depends on the values, but no need to guess).
    let photo = std::fs::read(needed(photos.join("grace_hopper.jpg"))?)?;
    let image = preprocess(&photo, &Limits::default(), 224, 224)?;
    let batch_of = |n: usize| image.repeat(n);

    println!(
        "inference: ResNet50 (var/models/resnet50-voc20.onnx), ONNX Runtime 1.32 CPU, {cores} cores, ~{seconds} s per point"
    );
    println!();
    println!(
        "img/s: mean over the point; best: from the fastest single run (the machine's other load shows"
    );
    println!("as a gap between the two)");
    println!(
        "{:>7} {:>5} {:>8} {:>8} {:>8} {:>9} {:>9} {:>8}",
        "threads", "batch", "spinning", "img/s", "best", "ms mean", "ms min", "load ms"
    );
    let mut thread_counts = vec![1];
    if cores > 1 {
        thread_counts.push(cores);
    }
    for &threads in &thread_counts {
        let spins: &[bool] = if threads > 1 { &[true, false] } else { &[true] };
        for &spinning in spins {
            for batch in [1, 8] {
                let tuning = SessionTuning {
                    intra_op_spinning: spinning,
                    warm_up_max_batch: true,
                };
                let mut model = Model::load_tuned(&options(&model_path, threads, batch), &tuning)?;
                let input = batch_of(batch);
                let p = measure(&mut model, &input, batch, point)?;
                println!(
                    "{threads:>7} {batch:>5} {:>8} {:>8.1} {:>8.1} {:>9.1} {:>9.1} {:>8.0}",
                    if threads > 1 {
                        if spinning { "on" } else { "off" }
                    } else {
                        "-"
                    },
                    p.per_sec,
                    batch as f64 / p.fastest.as_secs_f64(),
                    ms(p.mean),
                    ms(p.fastest),
                    ms(model.load_time())
                );
            }
        }
    }

    println!();
    println!("first batch-8 run after a load, 1 thread: does a max-batch warm-up at load pay off?");
    println!("  (three loads each, alternating; first run vs the mean of runs 2 and 3, ms)");
    for round in 1..=3 {
        for warm_up_max_batch in [false, true] {
            let tuning = SessionTuning {
                intra_op_spinning: false,
                warm_up_max_batch,
            };
            let mut model = Model::load_tuned(&options(&model_path, 1, 8), &tuning)?;
            let input = batch_of(8);
            let mut runs = [0.0; 3];
            for run in &mut runs {
                let t = Instant::now();
                model.run(&input, 8)?;
                *run = ms(t.elapsed());
            }
            println!(
                "  round {round}, max-batch warm-up {:>3}: load {:>5.0}, first run {:>6.1}, then {:>6.1}",
                if warm_up_max_batch { "on" } else { "off" },
                ms(model.load_time()),
                runs[0],
                (runs[1] + runs[2]) / 2.0
            );
        }
    }

    println!();
    preprocessing(&photos, point)?;
    Ok(())
}

/// One measured point.
struct Point {
    /// Images per second over the whole point.
    per_sec: f64,
    /// Mean time per run.
    mean: Duration,
    /// The fastest run.
    fastest: Duration,
}

/// Runs `model` on `input` again and again for about `point` after a short warm-up.
fn measure(model: &mut Model, input: &[f32], batch: usize, point: Duration) -> Result<Point> {
    let warm_up = Instant::now();
    while warm_up.elapsed() < point / 6 {
        model.run(input, batch)?;
    }
    let started = Instant::now();
    let mut runs = 0u32;
    let mut fastest = Duration::MAX;
    while started.elapsed() < point {
        let t = Instant::now();
        model.run(input, batch)?;
        fastest = fastest.min(t.elapsed());
        runs += 1;
    }
    let elapsed = started.elapsed();
    Ok(Point {
        per_sec: f64::from(runs) * batch as f64 / elapsed.as_secs_f64(),
        mean: elapsed / runs,
        fastest,
    })
}

/// Preprocessing time per image for every photo in `photos` (big_12mp.jpg included): decode,
/// resize to 224 x 224, normalize, each the mean over repeated runs.
fn preprocessing(photos: &Path, point: Duration) -> Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(photos)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let limits = Limits::default();
    let budget = point / 10;
    println!(
        "preprocessing per image, mean ms (decode_rgb + resize_bilinear to 224x224 + normalize_chw):"
    );
    println!(
        "{:<30} {:>11} {:>8} {:>8} {:>9} {:>9}",
        "photo", "size", "decode", "resize", "normalize", "total"
    );
    let mut out = vec![0.0_f32; 3 * 224 * 224];
    for file in &files {
        let name = file
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let bytes = std::fs::read(file)?;
        let first = match decode_rgb(&bytes, &limits) {
            Ok(img) => img,
            Err(e) => {
                println!("{name:<30} not decoded: {e}");
                continue;
            }
        };
        let (mut decode, mut resize, mut normalize) =
            (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        let mut runs = 0u32;
        let started = Instant::now();
        while runs < 3 || started.elapsed() < budget {
            let t0 = Instant::now();
            let img = decode_rgb(&bytes, &limits)?;
            let t1 = Instant::now();
            let small = resize_bilinear(&img, 224, 224);
            let t2 = Instant::now();
            normalize_chw(&small, &mut out);
            let t3 = Instant::now();
            decode += t1 - t0;
            resize += t2 - t1;
            normalize += t3 - t2;
            runs += 1;
        }
        let size = format!("{}x{}", first.width, first.height);
        println!(
            "{name:<30} {size:>11} {:>8.2} {:>8.2} {:>9.3} {:>9.2}",
            ms(decode / runs),
            ms(resize / runs),
            ms(normalize / runs),
            ms((decode + resize + normalize) / runs)
        );
    }
    Ok(())
}

fn options(path: &Path, threads: usize, max_batch: usize) -> ModelOptions {
    ModelOptions {
        path: path.to_path_buf(),
        runtime_library: None,
        device: Device::Cpu,
        intra_threads: threads,
        max_batch,
        expected_classes: Some(20),
        input: arbiter_infer::InputRecipe::SEED,
    }
}

fn needed(path: PathBuf) -> Result<PathBuf> {
    if path.exists() {
        Ok(path)
    } else {
        Err(format!("{} is missing: run scripts/setup", path.display()).into())
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
