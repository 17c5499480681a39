//! GIF through the `gif` crate, first frame only, laid out as Pillow's GIF plugin does it.
//!
//! Pillow opens the first frame on a canvas the size of the logical screen, grown to hold the
//! frame if the frame sticks out; the canvas starts as the frame's transparent index if it has
//! one, else index 0, and the frame's indices are pasted at its offset (transparent ones
//! included). The palette is the frame's own, else the global one; a palette that is the
//! identity gray ramp (or none at all) makes the image mode `L`, where a pixel is its index.
//! `convert("RGB")` then looks the indices up, entries past a short palette being black.

use std::io::Cursor;

use crate::convert;
use crate::error::VisionError;
use crate::format::Format;
use crate::limits::Limits;
use crate::rgb_image::RgbImage;

const F: Format = Format::Gif;

fn error(e: gif::DecodingError) -> VisionError {
    match e {
        gif::DecodingError::UnexpectedEof => VisionError::Truncated { format: F },
        gif::DecodingError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            VisionError::Truncated { format: F }
        }
        gif::DecodingError::MemoryLimit | gif::DecodingError::OutOfMemory => {
            VisionError::MemoryLimit { format: F }
        }
        e => VisionError::corrupt(F, e),
    }
}

/// The decoder, advanced to the first frame's descriptor, and the canvas size.
type Opened<'a> = (gif::Decoder<Cursor<&'a [u8]>>, u32, u32);

fn open<'a>(bytes: &'a [u8], limits: &Limits) -> Result<Opened<'a>, VisionError> {
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::Indexed);
    let memory = std::num::NonZeroU64::new(limits.max_decode_bytes())
        .map_or(gif::MemoryLimit::Unlimited, gif::MemoryLimit::Bytes);
    options.set_memory_limit(memory);
    let mut decoder = options.read_info(Cursor::new(bytes)).map_err(error)?;
    let (screen_w, screen_h) = (u32::from(decoder.width()), u32::from(decoder.height()));
    let frame = decoder
        .next_frame_info()
        .map_err(error)?
        .ok_or_else(|| VisionError::corrupt(F, "it contains no image"))?;
    let width = screen_w.max(u32::from(frame.left) + u32::from(frame.width));
    let height = screen_h.max(u32::from(frame.top) + u32::from(frame.height));
    Ok((decoder, width, height))
}

/// The canvas size Pillow reports for the first frame.
pub(crate) fn dimensions(bytes: &[u8]) -> Result<(u32, u32), VisionError> {
    let (_, width, height) = open(bytes, &Limits::default())?;
    Ok((width, height))
}

/// Whether Pillow's `_is_palette_needed` would say no: entry `i` is `(i, i, i)` throughout.
fn is_gray_ramp(palette: &[u8]) -> bool {
    palette
        .chunks_exact(3)
        .enumerate()
        .all(|(i, rgb)| rgb.iter().all(|&v| usize::from(v) == i))
}

/// Decodes the first frame to RGB, refusing it before decoding if it has too many pixels.
pub(crate) fn decode(bytes: &[u8], limits: &Limits) -> Result<RgbImage, VisionError> {
    let (mut decoder, width, height) = open(bytes, limits)?;
    limits.check(width, height)?;
    if width == 0 || height == 0 {
        return Err(VisionError::corrupt(
            F,
            format!("it declares {width} x {height} pixels"),
        ));
    }
    let frame = decoder
        .current_frame_info()
        .ok_or_else(|| VisionError::corrupt(F, "it contains no image"))?;
    let (left, top) = (usize::from(frame.left), usize::from(frame.top));
    let (fw, fh) = (usize::from(frame.width), usize::from(frame.height));
    let fill = frame.transparent.unwrap_or(0);
    let palette: Option<Vec<u8>> = frame
        .palette
        .clone()
        .or_else(|| decoder.global_palette().map(<[u8]>::to_vec))
        .filter(|p| !is_gray_ramp(p));

    let mut indices = vec![0u8; fw * fh];
    decoder.read_into_buffer(&mut indices).map_err(error)?;

    let (w, h) = (width as usize, height as usize);
    let mut canvas = vec![fill; w * h];
    if fw > 0 {
        for (y, row) in indices.chunks_exact(fw).enumerate().take(fh) {
            let start = (top + y) * w + left;
            canvas[start..start + fw].copy_from_slice(row);
        }
    }
    let data = match palette {
        Some(palette) => convert::palette_to_rgb(&canvas, &palette),
        None => convert::gray_to_rgb(&canvas),
    };
    Ok(RgbImage {
        width,
        height,
        data,
    })
}
