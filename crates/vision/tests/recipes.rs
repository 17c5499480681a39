//! Pixel parity of the resize recipes beyond the seed's (Pillow's filters, torchvision's shorter
//! side and center crop, timm's `crop_pct`) with a Python reference on Pillow.
//!
//! `scripts/reference.py` (run by `scripts/setup`) writes `var/reference/recipes/`: every
//! recipe's input pixels for every photo of `var/photos`, and for JPEGs the same after Pillow's
//! `draft` (what `fast_jpeg` reproduces). `tests/fixtures/make_recipes.py` writes
//! `tests/fixtures/recipes/`: the same for small and odd images (1 x 1, strips one pixel thick,
//! upscaling, crops padded with zeros), committed. Both take the geometry rules from
//! `scripts/recipes.py`.

use std::path::{Path, PathBuf};

use arbiter_vision::{Filter, Geometry, Limits, Resize, decode_resized_with, decode_rgb, resize};

/// A recipe of a reference manifest: its name, the recipe, and the input's width and height.
fn recipe(entry: &serde_json::Value) -> (String, Resize, u32, u32) {
    let name = entry["name"].as_str().expect("a recipe `name`").to_owned();
    let filter = match entry["filter"].as_str().expect("a `filter`") {
        "nearest" => Filter::Nearest,
        "bilinear" => Filter::Bilinear,
        "bicubic" => Filter::Bicubic,
        "lanczos" => Filter::Lanczos,
        other => panic!("{name}: unknown filter {other}"),
    };
    let geometry = if let Some(s) = entry["shorter_side"].as_u64() {
        Geometry::ShorterSide(s as u32)
    } else if let Some(p) = entry["crop_pct"].as_f64() {
        Geometry::CropPct(p)
    } else {
        Geometry::Squash
    };
    let size = |key: &str| entry[key].as_u64().expect("the input's size") as u32;
    let resize = Resize { filter, geometry };
    let (width, height) = (size("width"), size("height"));
    resize
        .check(width, height)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    (name, resize, width, height)
}

fn manifest(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}. Run scripts/setup first: it writes the Python reference.",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("the reference manifest is valid JSON")
}

/// How many of `ours` differ from `expected` (a size mismatch counts every value).
fn values_off(ours: &[u8], expected: &[u8]) -> usize {
    if ours.len() != expected.len() {
        return ours.len().max(expected.len());
    }
    ours.iter().zip(expected).filter(|(a, b)| a != b).count()
}

/// Every recipe on every image of the manifest in `dir`, whose file names are relative to
/// `sources`: [`decode_resized_with`] (banded for RGB JPEGs, else the whole decode then
/// [`resize`]) gives the reference's pixels, and so does `resize` where the decode was banded;
/// with `fast_jpeg`, so do JPEGs' draft pixels where the manifest has them. Returns the number
/// of comparisons and of banded decodes.
fn check_all(dir: &Path, sources: &Path) -> (usize, usize) {
    let manifest = manifest(&dir.join("manifest.json"));
    let recipes: Vec<_> = manifest["recipes"]
        .as_array()
        .expect("a `recipes` array")
        .iter()
        .map(recipe)
        .collect();
    let limits = Limits::default();
    let mut failures = Vec::new();
    let (mut compared, mut banded) = (0, 0);
    for image in manifest["images"].as_array().expect("an `images` array") {
        let file = image["file"].as_str().expect("a `file`");
        let bytes = std::fs::read(sources.join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}; run scripts/setup"));
        let mut rgb = None;
        for (name, recipe, width, height) in &recipes {
            let read = |key: &str| {
                let pixels = image[key][name.as_str()].as_str()?;
                Some(std::fs::read(dir.join(pixels)).expect("the reference's pixels"))
            };
            let expected = read("pixels").unwrap_or_else(|| panic!("{file}: no {name}"));
            let done = decode_resized_with(&bytes, &limits, *width, *height, recipe, false)
                .unwrap_or_else(|e| panic!("{file} {name}: {e}"));
            banded += usize::from(done.banded);
            let mut cases = Vec::new();
            // A JPEG resized while decoding, resized whole too (but the 12 MP photo, slow in a
            // debug build: the unit tests of `jpeg::banded` compare both ways on it). Decoded
            // whole, `decode_resized_with` is `resize` already.
            let (w, h) = arbiter_vision::dimensions(&bytes).map_or((0, 0), |(_, w, h)| (w, h));
            if done.banded && u64::from(w) * u64::from(h) <= 4 << 20 {
                let rgb = rgb.get_or_insert_with(|| {
                    decode_rgb(&bytes, &limits).unwrap_or_else(|e| panic!("{file}: {e}"))
                });
                let whole = resize(rgb, recipe, *width, *height);
                cases.push(("whole", whole.data, expected.clone()));
            }
            cases.push(("decode_resized", done.image.data, expected));
            if let Some(draft) = read("draft_pixels") {
                let fast = decode_resized_with(&bytes, &limits, *width, *height, recipe, true)
                    .unwrap_or_else(|e| panic!("{file} {name}: {e}"));
                cases.push(("fast_jpeg", fast.image.data, draft));
            }
            for (way, ours, expected) in cases {
                let off = values_off(&ours, &expected);
                compared += 1;
                if off != 0 {
                    failures.push(format!("{file} {name} ({way}): {off} values off"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "not Pillow's pixels:\n{}",
        failures.join("\n")
    );
    (compared, banded)
}

fn root() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).to_path_buf()
}

#[test]
fn recipes_match_pillow_on_every_photo() {
    let (compared, banded) = check_all(
        &root().join("var/reference/recipes"),
        &root().join("var/photos"),
    );
    // 24 photos and 6 recipes, besides the whole resizes and the JPEGs' drafts.
    assert!(compared >= 24 * 6 + 7 * 6, "only {compared} comparisons");
    assert!(banded >= 5 * 6, "only {banded} banded decodes");
}

#[test]
fn recipes_match_pillow_on_odd_images() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"));
    let (compared, banded) = check_all(&dir.join("recipes"), dir);
    assert!(compared >= 13 * 8, "only {compared} comparisons");
    assert!(banded > 0, "no banded decode");
}
