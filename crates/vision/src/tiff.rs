//! TIFF through the `tiff` crate (first image of the file), with Pillow's modes.
//!
//! Read raw rather than through the `image` crate, whose CMYK conversion truncates where Pillow
//! rounds. Bilevel is `1` (0/255), 8-bit gray `L`, 16-bit gray `I;16` (clipped), 16-bit color by
//! its high byte, CMYK through `cmyk2rgb`; alpha is dropped. Palette images (which the `tiff`
//! crate does not read), planar layouts, floating point and YCbCr are refused as unsupported.

use std::io::Cursor;

use tiff::ColorType;
use tiff::decoder::{Decoder, DecodingResult};
use tiff::tags::Tag;

use crate::convert;
use crate::error::VisionError;
use crate::format::Format;
use crate::limits::Limits;
use crate::rgb_image::RgbImage;

const F: Format = Format::Tiff;

fn error(e: tiff::TiffError) -> VisionError {
    match e {
        tiff::TiffError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            VisionError::Truncated { format: F }
        }
        tiff::TiffError::LimitsExceeded => VisionError::MemoryLimit { format: F },
        tiff::TiffError::UnsupportedError(e) => VisionError::unsupported(F, e.to_string()),
        e => VisionError::corrupt(F, e),
    }
}

fn open<'a>(bytes: &'a [u8], limits: &Limits) -> Result<Decoder<Cursor<&'a [u8]>>, VisionError> {
    let mut tiff_limits = tiff::decoder::Limits::default();
    tiff_limits.decoding_buffer_size =
        usize::try_from(limits.max_decode_bytes()).unwrap_or(usize::MAX);
    Ok(Decoder::new(Cursor::new(bytes))
        .map_err(error)?
        .with_limits(tiff_limits))
}

/// Width and height of the first image, from its directory.
pub(crate) fn dimensions(bytes: &[u8]) -> Result<(u32, u32), VisionError> {
    open(bytes, &Limits::default())?.dimensions().map_err(error)
}

/// Decodes the first image to RGB, refusing it before decoding if it has too many pixels.
pub(crate) fn decode(bytes: &[u8], limits: &Limits) -> Result<RgbImage, VisionError> {
    let mut decoder = open(bytes, limits)?;
    let (width, height) = decoder.dimensions().map_err(error)?;
    limits.check(width, height)?;
    let color = decoder.colortype().map_err(error)?;
    let planar = decoder
        .find_tag_unsigned::<u16>(Tag::PlanarConfiguration)
        .map_err(error)?;
    if planar == Some(2) {
        return Err(VisionError::unsupported(
            F,
            "planar (separated) TIFF is not supported",
        ));
    }
    let (w, h) = (width as usize, height as usize);
    let pixels = decoder.read_image().map_err(error)?;
    let rgb = match (color, pixels) {
        (ColorType::Gray(1), DecodingResult::U8(packed)) => {
            let bits = convert::unpack_bits(&packed, 1, w, h);
            convert::gray_to_rgb(&bits.iter().map(|&b| b * 255).collect::<Vec<_>>())
        }
        (ColorType::Gray(8), DecodingResult::U8(v)) => convert::gray_to_rgb(&v),
        (ColorType::GrayA(8), DecodingResult::U8(v)) => convert::interleaved_to_rgb(&v, 2),
        (ColorType::RGB(8), DecodingResult::U8(v)) => v,
        (ColorType::RGBA(8), DecodingResult::U8(v)) => convert::interleaved_to_rgb(&v, 4),
        (ColorType::CMYK(8), DecodingResult::U8(v)) => convert::cmyk_to_rgb(&v),
        (ColorType::Gray(16), DecodingResult::U16(v)) => {
            convert::gray_to_rgb(&v.iter().map(|&s| s.min(255) as u8).collect::<Vec<_>>())
        }
        (
            ColorType::GrayA(16) | ColorType::RGB(16) | ColorType::RGBA(16),
            DecodingResult::U16(v),
        ) => {
            let samples = match color {
                ColorType::GrayA(_) => 2,
                ColorType::RGB(_) => 3,
                _ => 4,
            };
            let high: Vec<u8> = v.iter().map(|&s| (s >> 8) as u8).collect();
            convert::interleaved_to_rgb(&high, samples)
        }
        (color, _) => {
            return Err(VisionError::unsupported(
                F,
                format!("TIFF with {color:?} samples is not supported"),
            ));
        }
    };
    if rgb.len() != w * h * 3 {
        return Err(VisionError::corrupt(
            F,
            "its pixel data does not match its size",
        ));
    }
    Ok(RgbImage {
        width,
        height,
        data: rgb,
    })
}
