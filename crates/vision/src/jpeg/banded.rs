//! An RGB JPEG resized as it is decoded, a band of rows at a time, so that the whole decoded
//! image is never held; the pixels are those of the whole decode then the resize, bit for bit.

use super::markers::Header;
use super::rows;
use crate::error::VisionError;
use crate::format::Format;
use crate::recipe::{Filter, Layout, Resize};
use crate::resize::RowResizer;
use crate::rgb_image::RgbImage;

/// Decodes an RGB JPEG (3 components) scaled down by `divisor` and makes `recipe`'s `out_w x
/// out_h` input of it as it is decoded, a few rows at a time, without holding the whole decoded
/// image: the result of [`super::whole::decode`] then [`crate::resize::resize`], bit for bit,
/// and the time spent resizing. `None` when the image must be decoded whole: not 3 components,
/// or a size Pillow resizes vertically first.
pub(crate) fn decode_resized(
    bytes: &[u8],
    header: &Header,
    divisor: u32,
    recipe: &Resize,
    (out_w, out_h): (u32, u32),
) -> Result<Option<(RgbImage, std::time::Duration)>, VisionError> {
    header.require_complete()?;
    let divisor = divisor.clamp(1, 8);
    let size = header.scaled_size(divisor);
    if header.components != 3 {
        return Ok(None);
    }
    // Arbiter's Huffman decoder (the same coefficients, sooner) unless it is turned off; when it
    // gives up on corrupt or cut data, libjpeg's own decodes the image again from the start, with
    // its own rules for it.
    let layout = recipe.layout(size.0, size.1, out_w, out_h);
    let resize = (recipe.filter, &layout);
    let huffman = if super::own_huffman() {
        rows::Huffman::Arbiter
    } else {
        rows::Huffman::Libjpeg
    };
    let mut banded = resize_while_decoding(bytes, divisor, size, resize, huffman)?;
    if let Banded::GaveUp = banded {
        banded = resize_while_decoding(bytes, divisor, size, resize, rows::Huffman::Libjpeg)?;
    }
    match banded {
        Banded::Done(image, resizing) => Ok(Some((image, resizing))),
        // (libjpeg's own decoder does not give up.)
        Banded::Whole | Banded::GaveUp => Ok(None),
    }
}

/// How [`resize_while_decoding`] ended, short of an error.
enum Banded {
    /// The resized image and the time spent resizing.
    Done(RgbImage, std::time::Duration),
    /// A size Pillow resizes vertically first: the image must be decoded whole.
    Whole,
    /// Arbiter's Huffman decoder met data it leaves to libjpeg's.
    GaveUp,
}

/// [`decode_resized`]'s work with the given Huffman decoder, for a `width x height` decoding
/// resampled by a filter to a layout.
fn resize_while_decoding(
    bytes: &[u8],
    divisor: u32,
    (width, height): (u32, u32),
    (filter, layout): (Filter, &Layout),
    huffman: rows::Huffman,
) -> Result<Banded, VisionError> {
    let Some(mut resizer) = RowResizer::new(width, height, filter, layout) else {
        return Ok(Banded::Whole);
    };
    let mut rows = rows::Decoder::start(bytes, divisor, huffman)?;
    if rows.size() != (width, height) {
        return Err(VisionError::corrupt(
            Format::Jpeg,
            format!(
                "it decodes to {:?} pixels, not the {width} x {height} its header implies",
                rows.size()
            ),
        ));
    }
    // A band of rows at a time: small enough to stay in the CPU's cache.
    const BAND: usize = 16;
    let stride = width as usize * 3;
    let mut band = crate::spare::scratch(BAND * stride);
    let mut done = 0;
    while done < height as usize {
        let n = match rows.read(&mut band, BAND)? {
            Some(n) => n,
            None => return Ok(Banded::GaveUp),
        };
        if n == 0 {
            return Err(VisionError::corrupt(
                Format::Jpeg,
                "libjpeg stopped before the last row",
            ));
        }
        resizer.push(&band[..n * stride]);
        done += n;
    }
    if rows.huffman() == rows::Huffman::Arbiter {
        super::OWN_HUFFMAN_SCANS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    rows.finish()?;
    crate::spare::give_back(band);
    let (image, resizing) = resizer.finish();
    Ok(Banded::Done(image, resizing))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jpeg::markers::scan;
    use crate::jpeg::whole::decode;

    /// RGB photos take the row-by-row path (not the whole decode), with the whole path's pixels,
    /// at full and reduced scale, with every filter and geometry.
    #[test]
    fn rgb_photos_are_resized_while_decoding() {
        use crate::recipe::Geometry;
        let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../var/photos"));
        let filters = [
            Filter::Nearest,
            Filter::Bilinear,
            Filter::Bicubic,
            Filter::Lanczos,
        ];
        let geometries = [
            Geometry::Squash,
            Geometry::ShorterSide(256),
            Geometry::CropPct(0.875),
        ];
        let all: Vec<Resize> = filters
            .iter()
            .flat_map(|&filter| geometries.map(|geometry| Resize { filter, geometry }))
            .collect();
        // (grace_hopper.jpg at 1/2, 256 x 300, shrinks its height first in Pillow: decoded whole.)
        for (name, divisor, recipes) in [
            ("big_12mp.jpg", 1, &[Resize::SEED][..]),
            ("big_12mp.jpg", 2, &[Resize::SEED]),
            ("big_12mp.jpg", 4, &all),
            ("grace_hopper.jpg", 1, &all),
        ] {
            let bytes = std::fs::read(root.join(name)).expect("run scripts/setup");
            let header = scan(&bytes, true).unwrap();
            let whole = decode(&bytes, &header, divisor).unwrap();
            for recipe in recipes {
                let (rows, _) = decode_resized(&bytes, &header, divisor, recipe, (224, 224))
                    .unwrap()
                    .unwrap_or_else(|| panic!("{name} / {divisor} {recipe:?}: not row by row"));
                assert_eq!(
                    rows,
                    crate::resize::resize(&whole, recipe, 224, 224),
                    "{name} / {divisor} {recipe:?}"
                );
            }
        }
    }

    /// What decoding `bytes` at 1/`divisor` and resizing it to `size` gives with one Huffman
    /// decoder: the image, an error's kind, or that Arbiter's gave up.
    fn banded(
        bytes: &[u8],
        divisor: u32,
        out: (u32, u32),
        huffman: rows::Huffman,
    ) -> Result<Option<RgbImage>, String> {
        let header = scan(bytes, true).map_err(|e| format!("{:?}", e.kind()))?;
        let size = header.scaled_size(divisor);
        let layout = Resize::SEED.layout(size.0, size.1, out.0, out.1);
        match resize_while_decoding(bytes, divisor, size, (Filter::Bilinear, &layout), huffman) {
            Ok(Banded::Done(image, _)) => Ok(Some(image)),
            Ok(Banded::Whole) => Err("decoded whole".into()),
            Ok(Banded::GaveUp) => Ok(None),
            Err(e) => Err(format!("{:?}", e.kind())),
        }
    }

    /// A reproducible stream of pseudo-random numbers (xorshift64) from a non-zero seed.
    fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }

    /// JPEGs written by libjpeg-turbo: every chroma subsampling with three components, qualities
    /// from coarse to lossless-looking (long codes, big values), sizes with partial MCUs, noise
    /// and smooth areas (long zero runs, ZRL), and a file where 0xFF bytes are stuffed often.
    fn encoded_corpus() -> Vec<(String, Vec<u8>)> {
        let mut noise = xorshift(0x2545_f491_4f6c_dd1d);
        let mut out = Vec::new();
        for (w, h) in [(1, 1), (7, 5), (17, 33), (250, 130), (301, 227)] {
            let mut pixels = vec![0u8; w * h * 3];
            for (i, p) in pixels.iter_mut().enumerate() {
                let (x, y) = ((i / 3) % w, i / 3 / w);
                // Left half noise, right half a smooth gradient.
                *p = if x < w / 2 {
                    noise() as u8
                } else {
                    ((x * 3 + y * 5 + i % 3 * 40) % 256) as u8
                };
            }
            // Luma sampling factors: 4:4:4, 4:2:2, 4:2:0, 4:4:0, 4:1:1.
            for (h_samp, v_samp) in [(1, 1), (2, 1), (2, 2), (1, 2), (4, 1)] {
                for quality in [20, 75, 95, 100] {
                    let jpeg = rows::encode(&pixels, w as u32, h as u32, quality, (h_samp, v_samp));
                    out.push((format!("{w}x{h} {h_samp}x{v_samp} q{quality}"), jpeg));
                }
            }
        }
        out
    }

    /// Arbiter's Huffman decoder reads every baseline JPEG (and only those), and the pixels are
    /// libjpeg's own decoder's, bit for bit, at every scale.
    #[test]
    fn huffman_decoders_agree() {
        let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../var/photos"));
        let mut corpus = encoded_corpus();
        // (big_12mp.jpg: rgb_photos_are_resized_while_decoding, against TurboJPEG's whole decode,
        // which is libjpeg's own Huffman decoder too.)
        for name in [
            "grace_hopper.jpg",
            "grace_hopper_exif6.jpg",
            "rocket.jpg",
            "chelsea_444.jpg",
            "grace_hopper_progressive.jpg",
        ] {
            corpus.push((
                name.into(),
                std::fs::read(root.join(name)).expect("run scripts/setup"),
            ));
        }
        let mut compared = 0;
        for (name, bytes) in &corpus {
            let progressive = name.contains("progressive");
            let d = rows::Decoder::start(bytes, 1, rows::Huffman::Arbiter).unwrap();
            let expected = if progressive {
                rows::Huffman::Libjpeg
            } else {
                rows::Huffman::Arbiter
            };
            assert_eq!(d.huffman(), expected, "{name}");
            drop(d);
            for divisor in [1, 2, 4, 8] {
                let ours = banded(bytes, divisor, (224, 224), rows::Huffman::Arbiter);
                let theirs = banded(bytes, divisor, (224, 224), rows::Huffman::Libjpeg);
                if theirs == Err("decoded whole".into()) {
                    continue;
                }
                assert!(matches!(ours, Ok(Some(_))), "{name} / {divisor}: {ours:?}");
                assert_eq!(ours, theirs, "{name} / {divisor}");
                compared += 1;
            }
        }
        assert!(compared > 300, "only {compared} comparisons");
    }

    /// Corrupt or cut scans: whenever Arbiter's Huffman decoder does not give up, its pixels are
    /// libjpeg's; when it does, `decode_resized` has libjpeg's outcome (pixels or error) anyway.
    #[test]
    fn corrupt_scans_end_as_libjpeg_ends_them() {
        let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../var/photos"));
        let mut random = xorshift(0x9e37_79b9_7f4a_7c15);
        let mut next = move |n: usize| (random() % n as u64) as usize;
        let (mut gave_up, mut kept) = (0, 0);
        let photo = std::fs::read(root.join("grace_hopper.jpg")).expect("run scripts/setup");
        let mut corpus = vec![("grace_hopper.jpg".to_string(), photo, 24)];
        for (name, jpeg) in encoded_corpus() {
            if name.starts_with("301x227") && name.ends_with("q95") {
                corpus.push((name, jpeg, 40));
            }
        }
        for (name, photo, cases) in corpus {
            let sos = photo.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
            let data = sos + 2 + usize::from(photo[sos + 2]) * 256 + usize::from(photo[sos + 3]);
            let eoi = photo.len() - 2;
            for case in 0..cases {
                let mut bytes = photo.clone();
                match case % 4 {
                    // A few bytes of the scan changed.
                    0 | 1 => {
                        for _ in 0..1 + case % 3 {
                            let at = data + next(eoi - data);
                            bytes[at] = next(256) as u8;
                        }
                    }
                    // The scan cut short, then EOI.
                    2 => {
                        bytes.truncate(data + next(eoi - data));
                        bytes.extend_from_slice(&[0xFF, 0xD9]);
                    }
                    // A restart marker where there are none.
                    _ => {
                        let at = data + next(eoi - data);
                        bytes.splice(at..at, [0xFF, 0xD0 + next(8) as u8]);
                    }
                }
                let label = format!("{name} case {case}");
                let theirs = banded(&bytes, 1, (32, 32), rows::Huffman::Libjpeg);
                match banded(&bytes, 1, (32, 32), rows::Huffman::Arbiter) {
                    Ok(None) => gave_up += 1,
                    ours => {
                        assert_eq!(ours, theirs, "{label}");
                        kept += 1;
                    }
                }
                // The public path, with its fallback, ends as libjpeg alone does.
                if let Ok(header) = scan(&bytes, true) {
                    let public = decode_resized(&bytes, &header, 1, &Resize::SEED, (32, 32))
                        .map(|done| done.map(|(image, _)| image))
                        .map_err(|e| format!("{:?}", e.kind()));
                    assert_eq!(public, theirs, "{label}");
                }
            }
        }
        // Both ways are exercised.
        assert!(gave_up > 20 && kept > 20, "gave up {gave_up}, kept {kept}");
    }

    /// A corrupt JPEG fails with libjpeg's message, not a panic.
    #[test]
    fn corrupt_data_is_an_error() {
        let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../var/photos"));
        let mut bytes = std::fs::read(root.join("grace_hopper.jpg")).expect("run scripts/setup");
        // The scan header names Huffman tables 7 for its first component: libjpeg stops with
        // "Huffman table 0x07 was not defined" (the marker walk does not look inside segments).
        let sos = bytes.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
        bytes[sos + 6] = 0x77;
        let header = scan(&bytes, true).unwrap();
        let err = decode_resized(&bytes, &header, 1, &Resize::SEED, (224, 224)).unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::Invalid, "{err}");
        assert!(err.to_string().contains("Huffman table"), "{err}");
    }
}
