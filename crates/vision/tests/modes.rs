//! Every mode and format variant against what Pillow makes of it.
//!
//! `tests/fixtures/` holds small images written by `make_fixtures.py` (Pillow 13 and a
//! hand-written PNG encoder for what Pillow cannot save), each with `NAME.rgb`, the raw bytes of
//! Pillow's `Image.open(NAME).convert("RGB")`. Decoding must give exactly those bytes.

use std::path::Path;

use arbiter_vision::{ErrorKind, Limits, decode_rgb, dimensions};

/// Files Pillow reads that we refuse on purpose, with a clear "unsupported" error.
const UNSUPPORTED: &[&str] = &[
    // The `tiff` crate does not read palette TIFFs; Pillow does.
    "tiff_p.tif",
];

fn fixtures() -> (&'static Path, Vec<serde_json::Value>) {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"));
    let text = std::fs::read_to_string(dir.join("manifest.json")).expect("fixture manifest");
    let manifest: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let images = manifest["images"].as_array().expect("images").clone();
    (dir, images)
}

#[test]
fn every_fixture_decodes_exactly_like_pillow() {
    let (dir, images) = fixtures();
    assert!(images.len() >= 40, "the fixture set is incomplete");
    for entry in &images {
        let file = entry["file"].as_str().expect("file");
        let mode = entry["mode"].as_str().expect("mode");
        let bytes = std::fs::read(dir.join(file)).expect("fixture file");
        let expected = std::fs::read(dir.join(entry["pixels"].as_str().expect("pixels")))
            .expect("fixture pixels");
        match decode_rgb(&bytes, &Limits::default()) {
            Ok(rgb) => {
                assert!(
                    !UNSUPPORTED.contains(&file),
                    "{file} now decodes: update the list"
                );
                assert_eq!(
                    (u64::from(rgb.width), u64::from(rgb.height)),
                    (
                        entry["width"].as_u64().expect("width"),
                        entry["height"].as_u64().expect("height")
                    ),
                    "{file} ({mode}): size"
                );
                let off = rgb
                    .data
                    .iter()
                    .zip(&expected)
                    .filter(|(a, b)| a != b)
                    .count();
                assert!(
                    rgb.data == expected,
                    "{file} (Pillow mode {mode}): {off} of {} values differ from Pillow",
                    expected.len()
                );
            }
            Err(e) => {
                assert!(UNSUPPORTED.contains(&file), "{file} ({mode}): {e}");
                assert_eq!(e.kind(), ErrorKind::Unsupported, "{file}: {e}");
            }
        }
    }
}

#[test]
fn header_dimensions_agree_with_the_decoded_size() {
    let (dir, images) = fixtures();
    for entry in &images {
        let file = entry["file"].as_str().expect("file");
        let bytes = std::fs::read(dir.join(file)).expect("fixture file");
        let (_, w, h) = dimensions(&bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(
            (u64::from(w), u64::from(h)),
            (
                entry["width"].as_u64().unwrap(),
                entry["height"].as_u64().unwrap()
            ),
            "{file}"
        );
    }
}
