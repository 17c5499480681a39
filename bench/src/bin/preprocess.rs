//! Times what a worker does to an image before the model sees it: decode, resize (and crop) and
//! normalize, through the vision crate's public API. Three modes:
//!
//! - `preprocess FILE... [-n RUNS] [--resized-only]`: the seed's recipe, stage by stage, best of
//!   N runs, and the worker's `decode_resized` (`--resized-only`: that alone, for a profiler).
//! - `preprocess --recipes FILE... [-n RUNS] [--json]`: one row per recipe family (the seed's
//!   first, so that the ratios are within one run), decode + resize and normalize per image, best
//!   and median of N runs taken in turn (run i of every family, then run i + 1), so that a drift
//!   of the shared cores' speed falls on every family alike.
//! - `preprocess --throughput SECONDS --config FILE FILE... [--threads N] [--json]`: preprocessing
//!   alone at full speed, the recipe of `[model.preprocess]` in FILE (the input size from the
//!   model where it is static), on N threads (default: every core), each preprocessing the photo
//!   over and over: images per second, the yardstick beside a server's req/s.
//!
//! Run with `cargo run --release -p arbiter-bench --bin preprocess -- ARGS` from the repository
//! root, or `scripts/bench --rust preprocess ARGS`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arbiter_config::Config;
use arbiter_vision::{ChannelOrder, Filter, Geometry, Limits, Resize, RgbImage, TensorLayout};
use arbiter_worker::ToTensor;

type Error = Box<dyn std::error::Error>;

fn best<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut out = None;
    for _ in 0..runs {
        let start = Instant::now();
        let value = f();
        best = best.min(start.elapsed());
        out = Some(value);
    }
    (best, out.expect("at least one run"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Takes `--name VALUE` out of `args`.
fn take_value(args: &mut Vec<String>, name: &str) -> Result<Option<String>, Error> {
    let Some(i) = args.iter().position(|a| a == name) else {
        return Ok(None);
    };
    let value = args
        .get(i + 1)
        .ok_or(format!("{name} needs a value"))?
        .clone();
    args.drain(i..i + 2);
    Ok(Some(value))
}

/// Takes the flag `name` out of `args`; whether it was there.
fn take_flag(args: &mut Vec<String>, name: &str) -> bool {
    let found = args.iter().any(|a| a == name);
    args.retain(|a| a != name);
    found
}

fn main() -> Result<(), Error> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let runs: Option<usize> = take_value(&mut args, "-n")?
        .map(|n| n.parse())
        .transpose()?;
    let json = take_flag(&mut args, "--json");
    if take_flag(&mut args, "--recipes") {
        return recipes(&args, runs.unwrap_or(20), json);
    }
    if let Some(seconds) = take_value(&mut args, "--throughput")? {
        let config = take_value(&mut args, "--config")?.ok_or("--throughput needs --config")?;
        let threads = match take_value(&mut args, "--threads")? {
            Some(n) => n.parse()?,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        return throughput(&args, seconds.parse()?, Path::new(&config), threads, json);
    }
    let resized_only = take_flag(&mut args, "--resized-only");
    stages(&args, runs.unwrap_or(10), resized_only)
}

/// The seed's recipe stage by stage, and the worker's `decode_resized`.
fn stages(files: &[String], runs: usize, resized_only: bool) -> Result<(), Error> {
    let limits = Limits::default();
    for path in files {
        let bytes = std::fs::read(path)?;
        if resized_only {
            let (both, resized) = best(runs, || {
                arbiter_vision::decode_resized(&bytes, &limits, 224, 224, false)
            });
            resized?;
            println!("{path}: decode_resized {:.2} ms (best)", ms(both));
            continue;
        }
        let (decode, rgb) = best(runs, || arbiter_vision::decode_rgb(&bytes, &limits));
        let rgb = rgb?;
        let (resize, small) = best(runs, || arbiter_vision::resize_bilinear(&rgb, 224, 224));
        let mut out = vec![0f32; 3 * 224 * 224];
        let (normalize, ()) = best(runs, || arbiter_vision::normalize_chw(&small, &mut out));
        println!(
            "{path}: {}x{} decode {:.2} ms, resize {:.2} ms, normalize {:.3} ms, total {:.2} ms",
            rgb.width,
            rgb.height,
            ms(decode),
            ms(resize),
            ms(normalize),
            ms(decode + resize + normalize)
        );
        // What the worker runs: a JPEG resized while it decodes (others decoded whole first).
        for fast in [false, true] {
            let mut resizing = Duration::MAX;
            let (both, resized) = best(runs, || {
                let done = arbiter_vision::decode_resized(&bytes, &limits, 224, 224, fast);
                if let Ok((_, spent)) = &done {
                    resizing = resizing.min(*spent);
                }
                done
            });
            let (resized, _) = resized?;
            assert!(fast || resized == small, "decode_resized differs");
            println!(
                "{path}: decode_resized (fast_jpeg {fast}) {:.2} ms, resizing {:.2} ms (best of each)",
                ms(both),
                ms(resizing)
            );
        }
    }
    Ok(())
}

/// A family's input: the worker's `ToTensor` (normalized `f32` by the vision crate's
/// `normalize_into`, or the raw bytes of a `uint8` input by `pixels_into`).
fn tensor(normalize: Option<arbiter_vision::Normalize>) -> ToTensor {
    ToTensor {
        normalize,
        channels: ChannelOrder::Rgb,
        layout: TensorLayout::Nchw,
    }
}

/// Writes `img` as the model's input into `floats` or `bytes` (whichever the element type
/// takes; both are `3 * width * height` long).
fn write(to: &ToTensor, img: &RgbImage, floats: &mut [f32], bytes: &mut [u8]) {
    match &to.normalize {
        Some(n) => arbiter_vision::normalize_into(img, n, to.channels, to.layout, floats),
        None => arbiter_vision::pixels_into(img, to.channels, to.layout, bytes),
    }
}

/// One recipe family: its name, its resize, its input size and its normalization.
struct Family {
    name: &'static str,
    resize: Resize,
    size: u32,
    normalize: ToTensor,
}

/// One recipe per family, the seed's first: torchvision's usual, timm's, Keras's, the trained
/// EfficientNet-Lite0's (etc/efficientnet-lite0.toml) and the last filter, lanczos.
fn families() -> Vec<Family> {
    let family = |name, filter, geometry, size, normalize| Family {
        name,
        resize: Resize { filter, geometry },
        size,
        normalize,
    };
    vec![
        family(
            "seed: bilinear squash 224, ImageNet mean/std",
            Filter::Bilinear,
            Geometry::Squash,
            224,
            tensor(Some(arbiter_vision::Normalize::SEED)),
        ),
        family(
            "torchvision: bilinear shorter side 256, crop 224",
            Filter::Bilinear,
            Geometry::ShorterSide(256),
            224,
            tensor(Some(arbiter_vision::Normalize::SEED)),
        ),
        family(
            "timm: bicubic crop_pct 0.875 at 240",
            Filter::Bicubic,
            Geometry::CropPct(0.875),
            240,
            tensor(Some(arbiter_vision::Normalize {
                divide_by: 255.0,
                mean: [0.5; 3],
                std: [0.5; 3],
            })),
        ),
        family(
            "Keras: nearest squash 224, uint8 BGR NHWC",
            Filter::Nearest,
            Geometry::Squash,
            224,
            ToTensor {
                normalize: None,
                channels: ChannelOrder::Bgr,
                layout: TensorLayout::Nhwc,
            },
        ),
        family(
            "EfficientNet-Lite0: bicubic shorter side 256, crop 224, (x-127)/128",
            Filter::Bicubic,
            Geometry::ShorterSide(256),
            224,
            tensor(Some(arbiter_vision::Normalize {
                divide_by: 1.0,
                mean: [127.0; 3],
                std: [128.0; 3],
            })),
        ),
        family(
            "lanczos squash 224, ImageNet mean/std",
            Filter::Lanczos,
            Geometry::Squash,
            224,
            tensor(Some(arbiter_vision::Normalize::SEED)),
        ),
    ]
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// One row per recipe family and file: decode + resize, normalize, best and median of `runs`
/// taken in turn across the families.
fn recipes(files: &[String], runs: usize, json: bool) -> Result<(), Error> {
    let limits = Limits::default();
    let families = families();
    for path in files {
        let bytes = std::fs::read(path)?;
        let mut decode_resize = vec![Vec::with_capacity(runs); families.len()];
        let mut normalize = vec![Vec::with_capacity(runs); families.len()];
        let mut banded = vec![false; families.len()];
        // The input buffers are reused from run to run, as a worker's are.
        let mut buffers: Vec<_> = families
            .iter()
            .map(|f| {
                let n = 3 * f.size as usize * f.size as usize;
                (vec![0f32; n], vec![0u8; n])
            })
            .collect();
        for _ in 0..runs {
            for (i, f) in families.iter().enumerate() {
                let (floats, raw) = &mut buffers[i];
                let start = Instant::now();
                let done = arbiter_vision::decode_resized_with(
                    &bytes, &limits, f.size, f.size, &f.resize, false,
                )?;
                let resized = start.elapsed();
                write(&f.normalize, &done.image, floats, raw);
                let total = start.elapsed();
                decode_resize[i].push(resized);
                normalize[i].push(total - resized);
                banded[i] = done.banded;
            }
        }
        let seed_best = *decode_resize[0].iter().min().expect("runs >= 1");
        let seed_median = median(&mut decode_resize[0].clone());
        if !json {
            println!("{path}: best / median of {runs} runs taken in turn, in ms");
            println!("| recipe | decode + resize | normalize | to the seed's (best / median) |");
            println!("| --- | --- | --- | --- |");
        }
        for (i, f) in families.iter().enumerate() {
            let best_dr = *decode_resize[i].iter().min().expect("runs >= 1");
            let median_dr = median(&mut decode_resize[i]);
            let best_n = *normalize[i].iter().min().expect("runs >= 1");
            let median_n = median(&mut normalize[i]);
            let ratio_best = best_dr.as_secs_f64() / seed_best.as_secs_f64();
            let ratio_median = median_dr.as_secs_f64() / seed_median.as_secs_f64();
            if json {
                println!(
                    "{{\"photo\": {:?}, \"recipe\": {:?}, \"size\": {}, \"runs\": {runs}, \
                     \"banded\": {}, \"decode_resize_ms_best\": {:.4}, \
                     \"decode_resize_ms_median\": {:.4}, \"normalize_ms_best\": {:.4}, \
                     \"normalize_ms_median\": {:.4}}}",
                    file_name(path),
                    f.name,
                    f.size,
                    banded[i],
                    ms(best_dr),
                    ms(median_dr),
                    ms(best_n),
                    ms(median_n)
                );
            } else {
                println!(
                    "| {} | {:.3} / {:.3} | {:.3} / {:.3} | {ratio_best:.2} / {ratio_median:.2} |",
                    f.name,
                    ms(best_dr),
                    ms(median_dr),
                    ms(best_n),
                    ms(median_n)
                );
            }
        }
    }
    Ok(())
}

fn file_name(path: &str) -> &str {
    Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(path)
}

/// Preprocessing alone, on `threads` threads for `seconds`, per file: images per second.
fn throughput(
    files: &[String],
    seconds: f64,
    config: &Path,
    threads: usize,
    json: bool,
) -> Result<(), Error> {
    let config = Config::load(config)?;
    let model = config.model();
    let p = &model.preprocess;
    let signature = arbiter_infer::signature::read(&model.path, model.runtime_library.as_deref())?;
    let input = arbiter_infer::signature::resolve(
        &signature.image_input()?,
        &arbiter_infer::InputRecipe::from(p),
    )?;
    let (width, height) = (input.width, input.height);
    // The worker's own reading of the config.
    let recipe = arbiter_worker::Recipe::from_config(model);
    let (resize, to) = (recipe.resize, recipe.tensor);
    let fast_jpeg = model.fast_jpeg;
    let limits = Limits::default();
    for path in files {
        let bytes = std::fs::read(path)?;
        let n = 3 * width as usize * height as usize;
        let one = |floats: &mut [f32], raw: &mut [u8]| -> Result<(), String> {
            let done = arbiter_vision::decode_resized_with(
                &bytes, &limits, width, height, &resize, fast_jpeg,
            )
            .map_err(|e| e.to_string())?;
            write(&to, &done.image, floats, raw);
            arbiter_vision::recycle(done.image);
            Ok(())
        };
        // A warm-up image on this thread, which also checks that the photo preprocesses.
        one(&mut vec![0f32; n], &mut vec![0u8; n])?;
        let images = AtomicU64::new(0);
        let stop = AtomicBool::new(false);
        let start = Instant::now();
        std::thread::scope(|s| -> Result<(), String> {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| -> Result<(), String> {
                        let (mut floats, mut raw) = (vec![0f32; n], vec![0u8; n]);
                        while !stop.load(Ordering::Relaxed) {
                            one(&mut floats, &mut raw)?;
                            images.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(())
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_secs_f64(seconds));
            stop.store(true, Ordering::Relaxed);
            for w in workers {
                w.join().map_err(|_| "a thread panicked".to_owned())??;
            }
            Ok(())
        })?;
        let elapsed = start.elapsed().as_secs_f64();
        let images = images.load(Ordering::Relaxed);
        let per_s = images as f64 / elapsed;
        if json {
            println!(
                "{{\"photo\": {:?}, \"threads\": {threads}, \"seconds\": {elapsed:.3}, \
                 \"images\": {images}, \"images_per_s\": {per_s:.3}, \"width\": {width}, \
                 \"height\": {height}, \"fast_jpeg\": {fast_jpeg}}}",
                file_name(path)
            );
        } else {
            println!(
                "{path}: {per_s:.1} images/s on {threads} threads ({images} in {elapsed:.1} s, \
                 {width} x {height})"
            );
        }
    }
    Ok(())
}
