//! Times the seed's resize (Pillow's bilinear squash to 224 x 224) on image files, best of N
//! runs: `resize_bilinear` of the decoded image, and `decode_resized` (what the worker runs)
//! with and without `fast_jpeg`. A tool to compare two builds, run alternately. With
//! `--recipes`, also one line per resize recipe family: `decode_resized_with` (decode and
//! resize, the cost per image) and the resizing part of it.
//!
//! `cargo run --release -p arbiter-vision --example resize_bench -- FILE... [-n RUNS] [--recipes]`

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
    let recipes = args.iter().any(|a| a == "--recipes");
    args.retain(|a| a != "--recipes");
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
        if recipes {
            for (name, recipe, size) in families() {
                let mut resizing = Duration::MAX;
                let (both, done) = best(runs, || {
                    let done = arbiter_vision::decode_resized_with(
                        &bytes, &limits, size, size, &recipe, false,
                    );
                    if let Ok(done) = &done {
                        resizing = resizing.min(done.resizing);
                    }
                    done
                });
                let banded = if done?.banded { "banded" } else { "whole" };
                println!(
                    "{path}: {name:34} decode_resized_with {:.3} ms, resizing {:.3} ms ({banded})",
                    ms(both),
                    ms(resizing)
                );
            }
        }
    }
    Ok(())
}

/// One recipe per family: the seed's, torchvision's usual, timm's, and each other filter.
fn families() -> Vec<(&'static str, arbiter_vision::Resize, u32)> {
    use arbiter_vision::{Filter, Geometry, Resize};
    let recipe = |filter, geometry| Resize { filter, geometry };
    vec![
        ("seed (bilinear squash 224)", Resize::SEED, 224),
        (
            "bilinear shorter 256 crop 224",
            recipe(Filter::Bilinear, Geometry::ShorterSide(256)),
            224,
        ),
        (
            "bicubic shorter 256 crop 224",
            recipe(Filter::Bicubic, Geometry::ShorterSide(256)),
            224,
        ),
        (
            "bicubic crop_pct 0.875 at 240",
            recipe(Filter::Bicubic, Geometry::CropPct(0.875)),
            240,
        ),
        (
            "lanczos squash 224",
            recipe(Filter::Lanczos, Geometry::Squash),
            224,
        ),
        (
            "nearest squash 224",
            recipe(Filter::Nearest, Geometry::Squash),
            224,
        ),
    ]
}
