//! Times the seed's resize (Pillow's bilinear squash to 224 x 224) on image files, best of N
//! runs: `resize_bilinear` of the decoded image, and `decode_resized` (what the worker runs)
//! with and without `fast_jpeg`. A tool to compare two builds, run alternately.
//!
//! `cargo run --release -p arbiter-vision --example resize_bench -- FILE... [-n RUNS]`

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
    let mut runs = 20;
    if let Some(i) = args.iter().position(|a| a == "-n") {
        runs = args.get(i + 1).ok_or("-n needs a number")?.parse()?;
        args.drain(i..i + 2);
    }
    let limits = arbiter_vision::Limits::default();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for path in &args {
        let bytes = std::fs::read(path)?;
        let rgb = arbiter_vision::decode_rgb(&bytes, &limits)?;
        let (resize, _) = best(runs, || arbiter_vision::resize_bilinear(&rgb, 224, 224));
        let mut line = format!(
            "{path}: {}x{} resize_bilinear {:.3} ms",
            rgb.width,
            rgb.height,
            ms(resize)
        );
        for fast in [false, true] {
            let (both, done) = best(runs, || {
                arbiter_vision::decode_resized(&bytes, &limits, 224, 224, fast)
            });
            done?;
            line += &format!(", decode_resized (fast_jpeg {fast}) {:.3} ms", ms(both));
        }
        println!("{line}");
    }
    Ok(())
}
