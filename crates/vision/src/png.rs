//! PNG through the `png` crate, with Pillow's modes.
//!
//! The samples are read raw (no transformations) and converted the way Pillow's PNG plugin
//! opens them and `convert("RGB")` then treats them: 1/2/4-bit gray scaled to 0..=255 (`1`,
//! `L;2`, `L;4`), 16-bit gray clipped (`I;16`), other 16-bit samples by their high byte, palette
//! looked up, alpha and `tRNS` ignored. The first image (the `IDAT` one) of an APNG is used.

use std::io::Cursor;

use crate::convert;
use crate::error::VisionError;
use crate::format::Format;
use crate::limits::Limits;
use crate::rgb_image::RgbImage;

const F: Format = Format::Png;

/// Maps a `png` crate error to ours: running out of data is truncation, the rest corruption.
fn error(e: png::DecodingError) -> VisionError {
    match e {
        png::DecodingError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            VisionError::Truncated { format: F }
        }
        png::DecodingError::LimitsExceeded => VisionError::MemoryLimit { format: F },
        e => VisionError::corrupt(F, e),
    }
}

fn decoder<'a>(bytes: &'a [u8], limits: &Limits) -> png::Decoder<Cursor<&'a [u8]>> {
    let mut decoder = png::Decoder::new_with_limits(
        Cursor::new(bytes),
        png::Limits {
            bytes: usize::try_from(limits.max_decode_bytes()).unwrap_or(usize::MAX),
        },
    );
    decoder.set_transformations(png::Transformations::IDENTITY);
    decoder
}

/// Width and height from the `IHDR` chunk.
pub(crate) fn dimensions(bytes: &[u8]) -> Result<(u32, u32), VisionError> {
    let mut decoder = decoder(bytes, &Limits::default());
    let info = decoder.read_header_info().map_err(error)?;
    Ok((info.width, info.height))
}

/// Decodes the first image to RGB, refusing it before decoding if it has too many pixels.
pub(crate) fn decode(bytes: &[u8], limits: &Limits) -> Result<RgbImage, VisionError> {
    let mut decoder = decoder(bytes, limits);
    let info = decoder.read_header_info().map_err(error)?;
    limits.check(info.width, info.height)?;
    let mut reader = decoder.read_info().map_err(error)?;
    let size = reader
        .output_buffer_size()
        .ok_or(VisionError::MemoryLimit { format: F })?;
    let mut buf = vec![0u8; size];
    let frame = reader.next_frame(&mut buf).map_err(error)?;
    let (width, height) = (frame.width, frame.height);
    let (w, h) = (width as usize, height as usize);
    let bits = frame.bit_depth as u8;
    let samples = frame.color_type.samples();
    let data = frame
        .line_size
        .checked_mul(h)
        .and_then(|len| buf.get(..len))
        .ok_or_else(|| VisionError::corrupt(F, "its rows do not fit its size"))?;
    // 8 and 16-bit rows have no padding, so the buffer is the sample sequence.
    let rgb = match (frame.color_type, bits) {
        (png::ColorType::Grayscale, 1 | 2 | 4) => {
            let scale = 255 / ((1u8 << bits) - 1);
            let gray: Vec<u8> = convert::unpack_bits(data, bits, w, h)
                .into_iter()
                .map(|v| v * scale)
                .collect();
            convert::gray_to_rgb(&gray)
        }
        (png::ColorType::Indexed, _) => {
            let palette = reader
                .info()
                .palette
                .as_deref()
                .ok_or_else(|| VisionError::corrupt(F, "a palette image has no PLTE chunk"))?;
            let indices = if bits == 8 {
                data.to_vec()
            } else {
                convert::unpack_bits(data, bits, w, h)
            };
            convert::palette_to_rgb(&indices, palette)
        }
        (png::ColorType::Grayscale, 16) => convert::gray_to_rgb(&convert::clip16_be(data)),
        (_, 16) => convert::interleaved_to_rgb(&convert::high_bytes_be(data), samples),
        (_, 8) => convert::interleaved_to_rgb(data, samples),
        (color, bits) => {
            return Err(VisionError::corrupt(
                F,
                format!("invalid bit depth {bits} for {color:?}"),
            ));
        }
    };
    Ok(RgbImage {
        width,
        height,
        data: rgb,
    })
}
