//! Pillow's `resize(size, BILINEAR)` against what Pillow 13 computed.
//!
//! `tests/fixtures/manifest.json` lists, under `resize`, source images and the raw RGB output of
//! Pillow for several target sizes (`make_fixtures.py`): downscales and upscales, one-axis
//! resizes, and both pass orders with the boundary of Pillow's rule between them.

use std::path::Path;

use arbiter_vision::{Limits, decode_rgb, resize_bilinear};

#[test]
fn resize_matches_pillow_bit_for_bit() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"));
    let text = std::fs::read_to_string(dir.join("manifest.json")).expect("fixture manifest");
    let manifest: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let sources = manifest["resize"].as_array().expect("resize cases");
    let mut checked = 0;
    for source in sources {
        let file = source["file"].as_str().expect("file");
        let bytes = std::fs::read(dir.join(file)).expect("source image");
        let rgb = decode_rgb(&bytes, &Limits::default()).expect("source decodes");
        for size in source["sizes"].as_array().expect("sizes") {
            let (w, h) = (
                size["width"].as_u64().unwrap(),
                size["height"].as_u64().unwrap(),
            );
            let expected = std::fs::read(dir.join(size["pixels"].as_str().expect("pixels")))
                .expect("expected pixels");
            let out = resize_bilinear(&rgb, w as u32, h as u32);
            let off = out
                .data
                .iter()
                .zip(&expected)
                .filter(|(a, b)| a != b)
                .count();
            assert!(
                out.data == expected,
                "{file} -> {w}x{h}: {off} of {} values differ from Pillow",
                expected.len()
            );
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} resize cases");
}
