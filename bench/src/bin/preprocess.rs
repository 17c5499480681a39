//! Times decode, resize and normalize of image files (best of N runs).
//!
//! `cargo run --release -p arbiter-bench --bin preprocess -- FILE... [-n RUNS] [--resized-only]`
//! (or `scripts/bench --rust preprocess FILE...`)
//!
//! `--resized-only` times only what the worker runs (`decode_resized`), for a profiler.

use std::time::{Duration, Instant};

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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut runs = 10;
    if let Some(i) = args.iter().position(|a| a == "-n") {
        runs = args.get(i + 1).ok_or("-n needs a number")?.parse()?;
        args.drain(i..i + 2);
    }
    let resized_only = args.iter().any(|a| a == "--resized-only");
    args.retain(|a| a != "--resized-only");
    let limits = arbiter_vision::Limits::default();
    for path in &args {
        let bytes = std::fs::read(path)?;
        if resized_only {
            let (both, resized) = best(runs, || {
                arbiter_vision::decode_resized(&bytes, &limits, 224, 224, false)
            });
            resized?;
            println!(
                "{path}: decode_resized {:.2} ms (best)",
                both.as_secs_f64() * 1e3
            );
            continue;
        }
        let (decode, rgb) = best(runs, || arbiter_vision::decode_rgb(&bytes, &limits));
        let rgb = rgb?;
        let (resize, small) = best(runs, || arbiter_vision::resize_bilinear(&rgb, 224, 224));
        let mut out = vec![0f32; 3 * 224 * 224];
        let (normalize, ()) = best(runs, || arbiter_vision::normalize_chw(&small, &mut out));
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
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
