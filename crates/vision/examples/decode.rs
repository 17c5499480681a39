//! Decodes an image file (and optionally resizes it) and writes raw HWC RGB bytes, with timings:
//! a tool to compare against Pillow and to measure speed.
//!
//! `cargo run --release -p arbiter-vision --example decode -- IN OUT.rgb [WIDTH HEIGHT]`

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output, size @ ..] = args.as_slice() else {
        return Err("usage: decode IN OUT.rgb [WIDTH HEIGHT]".into());
    };
    let bytes = std::fs::read(input)?;
    let limits = arbiter_vision::Limits::default();
    let start = Instant::now();
    let rgb = arbiter_vision::decode_rgb(&bytes, &limits)?;
    let decoded = start.elapsed();
    let out = match size {
        [w, h] => {
            let start = Instant::now();
            let resized = arbiter_vision::resize_bilinear(&rgb, w.parse()?, h.parse()?);
            eprintln!(
                "{input}: {}x{} decode {:.2} ms, resize to {w}x{h} {:.2} ms",
                rgb.width,
                rgb.height,
                decoded.as_secs_f64() * 1e3,
                start.elapsed().as_secs_f64() * 1e3
            );
            resized
        }
        _ => {
            eprintln!(
                "{input}: {}x{} decode {:.2} ms",
                rgb.width,
                rgb.height,
                decoded.as_secs_f64() * 1e3
            );
            rgb
        }
    };
    std::fs::write(output, &out.data)?;
    Ok(())
}
