//! Pixel parity with the seed's Python pipeline on real photos.
//!
//! `scripts/setup` writes `var/photos/NAME` and `var/reference/NAME.rgb`: the raw 224 x 224 x 3
//! bytes of Pillow's `Image.open(p).convert("RGB").resize((224, 224), Image.BILINEAR)`, listed
//! in `var/reference/manifest.json`. Each photo is decoded and resized here and compared.

use std::path::{Path, PathBuf};

use arbiter_vision::{ErrorKind, Limits, decode_rgb, decode_rgb_draft, resize_bilinear};

fn root() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).to_path_buf()
}

fn manifest() -> serde_json::Value {
    let path = root().join("var/reference/manifest.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}. Run scripts/setup first: it fetches the photos and writes \
             the Python reference outputs.",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("var/reference/manifest.json is not valid JSON")
}

#[test]
fn resized_pixels_match_pillow() {
    let manifest = manifest();
    let images = manifest["images"]
        .as_array()
        .expect("manifest has an `images` array");
    assert!(!images.is_empty(), "the reference manifest lists no image");
    let limits = Limits::default();
    let mut worst = Vec::new();
    for entry in images {
        let file = entry["file"].as_str().expect("entry has a `file`");
        let pixels = entry["pixels"].as_str().expect("entry has `pixels`");
        let bytes = std::fs::read(root().join("var/photos").join(file))
            .unwrap_or_else(|e| panic!("var/photos/{file}: {e}; run scripts/setup"));
        let expected = std::fs::read(root().join("var/reference").join(pixels))
            .unwrap_or_else(|e| panic!("var/reference/{pixels}: {e}; run scripts/setup"));
        let rgb = decode_rgb(&bytes, &limits).unwrap_or_else(|e| panic!("{file}: {e}"));
        if let (Some(w), Some(h)) = (entry["width"].as_u64(), entry["height"].as_u64()) {
            assert_eq!(
                (u64::from(rgb.width), u64::from(rgb.height)),
                (w, h),
                "{file}: size differs from Pillow's"
            );
        }
        let resized = resize_bilinear(&rgb, 224, 224);
        assert_eq!(resized.data.len(), expected.len(), "{file}: reference size");
        let diffs: Vec<u8> = resized
            .data
            .iter()
            .zip(&expected)
            .map(|(a, b)| a.abs_diff(*b))
            .collect();
        let max = diffs.iter().copied().max().unwrap_or(0);
        let mean = diffs.iter().map(|&d| f64::from(d)).sum::<f64>() / diffs.len() as f64;
        let off = diffs.iter().filter(|&&d| d != 0).count();
        println!("{file:32} max abs diff {max}, mean abs diff {mean:.5}, values off {off}");
        worst.push((file.to_owned(), max, mean));
    }
    for (file, max, mean) in &worst {
        assert!(*max <= 1 && *mean < 0.1, "{file}: max {max}, mean {mean}");
    }
    // Exactness is what we have reached; say so loudly if it regresses.
    let inexact: Vec<_> = worst.iter().filter(|(_, max, _)| *max != 0).collect();
    assert!(inexact.is_empty(), "not bit-exact with Pillow: {inexact:?}");
}

#[test]
fn draft_decoding_matches_pillows_draft() {
    let manifest = manifest();
    let images = manifest["images"].as_array().expect("an `images` array");
    let mut checked = 0;
    let mut reduced = 0;
    for entry in images {
        let Some(pixels) = entry["draft_pixels"].as_str() else {
            continue;
        };
        let file = entry["file"].as_str().expect("entry has a `file`");
        let bytes = std::fs::read(root().join("var/photos").join(file))
            .unwrap_or_else(|e| panic!("var/photos/{file}: {e}; run scripts/setup"));
        let expected = std::fs::read(root().join("var/reference").join(pixels))
            .unwrap_or_else(|e| panic!("var/reference/{pixels}: {e}; run scripts/setup"));
        let rgb = decode_rgb_draft(&bytes, &Limits::default(), 448, 448)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let size = &entry["draft_size"];
        assert_eq!(
            (u64::from(rgb.width), u64::from(rgb.height)),
            (size[0].as_u64().unwrap(), size[1].as_u64().unwrap()),
            "{file}: draft size differs from Pillow's"
        );
        if Some(u64::from(rgb.width)) != entry["width"].as_u64() {
            reduced += 1;
        }
        let resized = resize_bilinear(&rgb, 224, 224);
        let off = resized
            .data
            .iter()
            .zip(&expected)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(off, 0, "{file}: {off} values differ from Pillow's draft");
        checked += 1;
    }
    assert!(checked > 0, "the reference lists no draft JPEG");
    assert!(
        reduced > 0,
        "no reference JPEG was big enough to be reduced"
    );
}

#[test]
fn bad_photos_are_refused_with_a_typed_error() {
    let dir = root().join("var/photos/bad");
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/setup", dir.display()));
    let mut seen = 0;
    for entry in entries {
        let path = entry.expect("readable directory entry").path();
        let bytes = std::fs::read(&path).expect("readable file");
        let err = decode_rgb(&bytes, &Limits::default())
            .err()
            .unwrap_or_else(|| panic!("{} was accepted", path.display()));
        println!("{}: {:?}: {err}", path.display(), err.kind());
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let expected = if name.starts_with("bomb") {
            Some(ErrorKind::TooLarge)
        } else if name.starts_with("empty") || name.starts_with("truncated") {
            Some(ErrorKind::Invalid)
        } else if name.starts_with("text") {
            Some(ErrorKind::Unsupported)
        } else {
            None
        };
        if let Some(kind) = expected {
            assert_eq!(err.kind(), kind, "{name}: {err}");
        }
        seen += 1;
    }
    assert!(seen > 0, "{} is empty", dir.display());
}

/// `decode_resized` (a JPEG resized while it decodes, a band of rows at a time; other formats
/// decoded whole) gives Pillow's pixels for every photo, with and without `fast_jpeg`.
#[test]
fn resizing_while_decoding_matches_pillow() {
    let manifest = manifest();
    let images = manifest["images"].as_array().expect("an `images` array");
    let limits = Limits::default();
    let mut jpegs = 0;
    for entry in images {
        let file = entry["file"].as_str().expect("entry has a `file`");
        let bytes = std::fs::read(root().join("var/photos").join(file)).unwrap();
        let mut cases = vec![(false, entry["pixels"].as_str().expect("`pixels`"))];
        if let Some(draft) = entry["draft_pixels"].as_str() {
            cases.push((true, draft));
        }
        for (fast, pixels) in cases {
            let expected = std::fs::read(root().join("var/reference").join(pixels)).unwrap();
            let (resized, _) = arbiter_vision::decode_resized(&bytes, &limits, 224, 224, fast)
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            assert!(resized.data == expected, "{file} (fast_jpeg {fast})");
        }
        jpegs += usize::from(bytes.starts_with(&[0xFF, 0xD8]));
    }
    assert!(jpegs >= 5, "only {jpegs} JPEGs among the reference photos");
}
