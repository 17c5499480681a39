//! Decoding through the public API: formats, limits, broken input, normalization.
//!
//! Valid images are encoded here with the `image` crate's encoders; broken ones are cut or
//! corrupted from those.

use std::io::Cursor;
use std::time::{Duration, Instant};

use arbiter_vision::{
    ErrorKind, Format, Limits, MEAN, RgbImage, STD, VisionError, decode_rgb, dimensions,
    normalize_chw, preprocess, resize_bilinear, sniff,
};
use image::{DynamicImage, ImageBuffer, ImageFormat};

/// A 40 x 30 RGB test card: gradients plus a little texture.
fn card() -> image::RgbImage {
    ImageBuffer::from_fn(40, 30, |x, y| {
        image::Rgb([(x * 6) as u8, (y * 8) as u8, ((x * y) % 251) as u8])
    })
}

fn encode(image: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).expect("encodes");
    out.into_inner()
}

fn jpeg() -> Vec<u8> {
    encode(DynamicImage::ImageRgb8(card()), ImageFormat::Jpeg)
}

fn png() -> Vec<u8> {
    encode(DynamicImage::ImageRgb8(card()), ImageFormat::Png)
}

fn decode(bytes: &[u8]) -> Result<RgbImage, VisionError> {
    decode_rgb(bytes, &Limits::default())
}

#[test]
fn sniffs_every_format_from_magic_bytes() {
    let card = DynamicImage::ImageRgb8(card());
    for (format, expected) in [
        (ImageFormat::Jpeg, Format::Jpeg),
        (ImageFormat::Png, Format::Png),
        (ImageFormat::Gif, Format::Gif),
        (ImageFormat::Bmp, Format::Bmp),
        (ImageFormat::WebP, Format::WebP),
        (ImageFormat::Tiff, Format::Tiff),
    ] {
        let bytes = encode(card.clone(), format);
        assert_eq!(sniff(&bytes).unwrap(), expected);
        assert_eq!(dimensions(&bytes).unwrap(), (expected, 40, 30));
        let rgb = decode(&bytes).unwrap_or_else(|e| panic!("{expected}: {e}"));
        assert_eq!((rgb.width, rgb.height, rgb.data.len()), (40, 30, 3600));
    }
}

#[test]
fn lossless_formats_round_trip_exactly() {
    let card = card();
    for format in [
        ImageFormat::Png,
        ImageFormat::Bmp,
        ImageFormat::Tiff,
        ImageFormat::WebP,
    ] {
        let bytes = encode(DynamicImage::ImageRgb8(card.clone()), format);
        assert_eq!(
            decode(&bytes).unwrap().data,
            card.as_raw().as_slice(),
            "{format:?}"
        );
    }
}

#[test]
fn gray_is_replicated_and_alpha_dropped_without_compositing() {
    let gray: image::GrayImage = ImageBuffer::from_fn(3, 1, |x, _| image::Luma([x as u8 * 100]));
    let rgb = decode(&encode(DynamicImage::ImageLuma8(gray), ImageFormat::Png)).unwrap();
    assert_eq!(rgb.data, vec![0, 0, 0, 100, 100, 100, 200, 200, 200]);

    // Fully transparent pixels keep their color: Pillow drops alpha, it does not composite.
    let rgba: image::RgbaImage = ImageBuffer::from_pixel(2, 1, image::Rgba([77, 88, 99, 0]));
    let rgb = decode(&encode(DynamicImage::ImageRgba8(rgba), ImageFormat::Png)).unwrap();
    assert_eq!(rgb.data, vec![77, 88, 99, 77, 88, 99]);

    let la: image::GrayAlphaImage = ImageBuffer::from_pixel(1, 1, image::LumaA([42, 7]));
    let rgb = decode(&encode(DynamicImage::ImageLumaA8(la), ImageFormat::Png)).unwrap();
    assert_eq!(rgb.data, vec![42, 42, 42]);
}

#[test]
fn sixteen_bit_png_follows_pillow() {
    // Gray 16-bit opens as Pillow's I;16, which convert("RGB") clips at 255.
    let values = [0u16, 100, 255, 256, 1000, 65535];
    let gray: ImageBuffer<image::Luma<u16>, Vec<u16>> =
        ImageBuffer::from_fn(6, 1, |x, _| image::Luma([values[x as usize]]));
    let rgb = decode(&encode(DynamicImage::ImageLuma16(gray), ImageFormat::Png)).unwrap();
    let firsts: Vec<u8> = rgb.data.chunks_exact(3).map(|p| p[0]).collect();
    assert_eq!(firsts, vec![0, 100, 255, 255, 255, 255]);

    // 16-bit RGB keeps the high byte of each sample.
    let rgb16: ImageBuffer<image::Rgb<u16>, Vec<u16>> =
        ImageBuffer::from_pixel(1, 1, image::Rgb([0x12ff, 0xab00, 0xffff]));
    let rgb = decode(&encode(DynamicImage::ImageRgb16(rgb16), ImageFormat::Png)).unwrap();
    assert_eq!(rgb.data, vec![0x12, 0xab, 0xff]);
}

#[test]
fn empty_and_unknown_data_are_refused() {
    let err = decode(b"").unwrap_err();
    assert!(matches!(err, VisionError::Empty));
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert_eq!(err.kind().http_status(), 400);

    let err = decode(b"this is a text file, not a photo\n").unwrap_err();
    assert!(
        matches!(err, VisionError::Unsupported { format: None, .. }),
        "{err:?}"
    );
    assert_eq!(err.kind().http_status(), 415);
    assert_eq!(
        err.to_string(),
        "unsupported image: the data is not a JPEG, PNG, GIF, BMP, WebP or TIFF image"
    );
}

#[test]
fn garbage_after_a_valid_magic_is_an_error_not_a_panic() {
    let garbage: Vec<u8> = (0..400u32).map(|i| (i * 7919 % 251) as u8).collect();
    for magic in [
        &b"\xff\xd8\xff"[..],
        b"\x89PNG\r\n\x1a\n",
        b"GIF89a",
        b"BM",
        b"RIFF\x00\x10\x00\x00WEBP",
        b"II*\0",
        b"MM\0*",
    ] {
        let bytes = [magic, &garbage].concat();
        let err = decode(&bytes).unwrap_err();
        if magic == b"BM" {
            // The `image` crate reads the garbage as a header type it does not know.
            assert!(
                matches!(err.kind(), ErrorKind::Invalid | ErrorKind::Unsupported),
                "{err}"
            );
        } else {
            assert_eq!(err.kind(), ErrorKind::Invalid, "{magic:?}: {err}");
        }
        // A header-only read fails cleanly too.
        assert!(dimensions(&bytes).is_err(), "{magic:?}");
    }
}

#[test]
fn truncated_files_are_refused_at_every_cut() {
    let card = DynamicImage::ImageRgb8(card());
    for format in [
        ImageFormat::Jpeg,
        ImageFormat::Png,
        ImageFormat::Gif,
        ImageFormat::Bmp,
        ImageFormat::WebP,
        ImageFormat::Tiff,
    ] {
        let bytes = encode(card.clone(), format);
        for cut in (1..20).map(|i| bytes.len() * i / 20) {
            let err = decode(&bytes[..cut]).expect_err("a cut file is refused");
            assert_eq!(
                err.kind(),
                ErrorKind::Invalid,
                "{format:?} cut at {cut}: {err}"
            );
        }
    }
    let bytes = jpeg();
    assert!(matches!(
        decode(&bytes[..bytes.len() / 2]),
        Err(VisionError::Truncated {
            format: Format::Jpeg
        })
    ));
    let bytes = png();
    assert!(matches!(
        decode(&bytes[..bytes.len() - 30]),
        Err(VisionError::Truncated {
            format: Format::Png
        })
    ));
}

#[test]
fn jpeg_follows_pillows_tolerance() {
    let bytes = jpeg();
    let clean = decode(&bytes).unwrap();

    // Pillow raises "image file is truncated" even when only the EOI marker is missing.
    assert!(matches!(
        decode(&bytes[..bytes.len() - 2]),
        Err(VisionError::Truncated { .. })
    ));

    // Bytes after EOI are ignored.
    let trailing = [&bytes[..], b"trailing junk"].concat();
    assert_eq!(decode(&trailing).unwrap(), clean);

    // Corrupt entropy-coded data with the structure intact: libjpeg warns and Pillow accepts.
    let mut corrupt = bytes.clone();
    let sos = corrupt
        .windows(2)
        .position(|w| w == [0xFF, 0xDA])
        .expect("has a scan");
    let middle = (sos + corrupt.len()) / 2;
    for b in &mut corrupt[middle..middle + 20] {
        *b = 0x13;
    }
    let decoded = decode(&corrupt).expect("corrupt scan data is tolerated");
    assert_eq!((decoded.width, decoded.height), (40, 30));
    assert_ne!(decoded, clean);

    // The size is readable from a cut file's header.
    assert_eq!(
        dimensions(&bytes[..bytes.len() / 2]).unwrap(),
        (Format::Jpeg, 40, 30)
    );
}

/// A PNG whose header declares `w x h` pixels, with no image data at all.
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(&ihdr);
    out.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A JPEG with only a frame header declaring `w x h`, then EOI.
fn jpeg_header(w: u16, h: u16) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xC0, 0, 17, 8];
    out.extend_from_slice(&h.to_be_bytes());
    out.extend_from_slice(&w.to_be_bytes());
    out.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1, 0xFF, 0xD9]);
    out
}

/// A GIF whose screen and first frame are `w x h`, with a 2-color palette and no pixel data.
fn gif_header(w: u16, h: u16) -> Vec<u8> {
    let mut out = b"GIF89a".to_vec();
    out.extend_from_slice(&w.to_le_bytes());
    out.extend_from_slice(&h.to_le_bytes());
    out.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 255, 255, 255, b',', 0, 0, 0, 0]);
    out.extend_from_slice(&w.to_le_bytes());
    out.extend_from_slice(&h.to_le_bytes());
    out.extend_from_slice(&[0, 2, 0, b';']);
    out
}

/// A 24-bit BMP whose header declares `w x h`, with no pixel data.
fn bmp_header(w: i32, h: i32) -> Vec<u8> {
    let mut out = b"BM".to_vec();
    out.extend_from_slice(&54u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&54u32.to_le_bytes());
    out.extend_from_slice(&40u32.to_le_bytes());
    out.extend_from_slice(&w.to_le_bytes());
    out.extend_from_slice(&h.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&24u16.to_le_bytes());
    out.extend_from_slice(&[0; 24]);
    out
}

#[test]
fn decompression_bombs_are_refused_from_the_header_quickly() {
    let bombs = [
        (png_header(30_000, 30_000), 30_000, 30_000),
        (jpeg_header(65_000, 65_000), 65_000, 65_000),
        (gif_header(65_000, 65_000), 65_000, 65_000),
        (bmp_header(30_000, 30_000), 30_000, 30_000),
    ];
    for (bytes, w, h) in bombs {
        let start = Instant::now();
        let err = decode(&bytes).unwrap_err();
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "took {:?}",
            start.elapsed()
        );
        assert!(
            matches!(err, VisionError::TooManyPixels { width, height, limit: 89_478_485 }
                if (width, height) == (w, h)),
            "{err:?}"
        );
        assert_eq!(err.kind().http_status(), 413);
    }
    assert_eq!(
        decode(&png_header(30_000, 30_000)).unwrap_err().to_string(),
        "the image declares 30000 x 30000 = 900000000 pixels, over the limit of 89478485"
    );
}

#[test]
fn the_pixel_limit_applies_to_every_format() {
    let card = DynamicImage::ImageRgb8(card());
    for format in [
        ImageFormat::Jpeg,
        ImageFormat::Png,
        ImageFormat::Gif,
        ImageFormat::Bmp,
        ImageFormat::WebP,
        ImageFormat::Tiff,
    ] {
        let bytes = encode(card.clone(), format);
        let exact = Limits { max_pixels: 1200 };
        assert!(
            decode_rgb(&bytes, &exact).is_ok(),
            "{format:?} at the limit"
        );
        let under = Limits { max_pixels: 1199 };
        let err = decode_rgb(&bytes, &under).unwrap_err();
        assert!(
            matches!(
                err,
                VisionError::TooManyPixels {
                    width: 40,
                    height: 30,
                    limit: 1199
                }
            ),
            "{format:?}: {err:?}"
        );
    }
}

#[test]
fn normalize_matches_hand_computed_values() {
    // Two pixels: black, then (255, 128, 64).
    let img = RgbImage {
        width: 2,
        height: 1,
        data: vec![0, 0, 0, 255, 128, 64],
    };
    let mut out = [0f32; 6];
    normalize_chw(&img, &mut out);
    // CHW: [R0, R1, G0, G1, B0, B1]; (v / 255 - mean) / std.
    let expected = [
        -0.485 / 0.229,
        (1.0 - 0.485) / 0.229,
        -0.456 / 0.224,
        (128.0 / 255.0 - 0.456) / 0.224,
        -0.406 / 0.225,
        (64.0 / 255.0 - 0.406) / 0.225,
    ];
    for (got, want) in out.iter().zip(expected) {
        assert!((f64::from(*got) - want).abs() < 1e-6, "{got} vs {want}");
    }
    // And bit for bit the f32 operations torchvision performs.
    assert_eq!(out[1], (255f32 / 255.0 - MEAN[0]) / STD[0]);
    assert_eq!(out[3], (128f32 / 255.0 - MEAN[1]) / STD[1]);
}

#[test]
fn preprocess_is_decode_resize_normalize() {
    let bytes = jpeg();
    let tensor = preprocess(&bytes, &Limits::default(), 224, 224).unwrap();
    assert_eq!(tensor.len(), 3 * 224 * 224);
    let resized = resize_bilinear(&decode(&bytes).unwrap(), 224, 224);
    let mut expected = vec![0f32; 3 * 224 * 224];
    normalize_chw(&resized, &mut expected);
    assert_eq!(tensor, expected);
    assert!(preprocess(b"nope", &Limits::default(), 224, 224).is_err());
}
