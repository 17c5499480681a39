//! The whole image through libjpeg's API (`jpeg_rows.c`, the same binding as the banded decoder),
//! as Pillow's JPEG plugin decodes it.
//!
//! Pillow opens a JPEG with libjpeg's defaults (accurate integer IDCT, fancy upsampling, no DCT
//! scaling) into mode `L`, `RGB` or `CMYK` by the number of components, and asks libjpeg for
//! CMYK data read as Adobe-inverted (`CMYK;I`), then `convert("RGB")` applies `cmyk2rgb`. The
//! decoder here makes libjpeg's calls for the same output (`jpeg_rows.c` lists them), with
//! libjpeg's own Huffman decoder, and reads every row into one buffer.

use super::markers::Header;
use super::rows::{Decoder, Huffman, Output};
use crate::convert;
use crate::error::VisionError;
use crate::format::Format;
use crate::rgb_image::RgbImage;

/// Decodes a whole JPEG to RGB, scaled down by `divisor` (1, 2, 4 or 8) with libjpeg's DCT
/// scaling: `ceil(width / divisor) x ceil(height / divisor)` pixels. The caller has checked the
/// pixel limit on [`super::markers::scan`]'s header. libjpeg's warnings (corrupt data it decodes
/// anyway) are accepted, as Pillow accepts them.
pub(crate) fn decode(bytes: &[u8], header: &Header, divisor: u32) -> Result<RgbImage, VisionError> {
    header.require_complete()?;
    let divisor = divisor.clamp(1, 8);
    let size = header.scaled_size(divisor);
    let (w, h) = (size.0 as usize, size.1 as usize);
    // Pillow picks the mode from the component count alone (L, RGB, CMYK) and lets libjpeg
    // pick the color transform (YCbCr or not, YCCK or not).
    let rgb = match header.components {
        1 => convert::gray_to_rgb(&read(bytes, divisor, size, Output::Gray, vec![0; w * h])?),
        3 => read(
            bytes,
            divisor,
            size,
            Output::Rgb,
            crate::spare::take(w * h * 3),
        )?,
        _ => convert::inverted_cmyk_to_rgb(&read(
            bytes,
            divisor,
            size,
            Output::Cmyk,
            vec![0; w * h * 4],
        )?),
    };
    Ok(RgbImage {
        width: size.0,
        height: size.1,
        data: rgb,
    })
}

/// Every row of `bytes` decoded to `output` at 1/`divisor` scale into `out`, which holds
/// `size`'s pixels.
fn read(
    bytes: &[u8],
    divisor: u32,
    size: (u32, u32),
    output: Output,
    mut out: Vec<u8>,
) -> Result<Vec<u8>, VisionError> {
    let mut decoder = Decoder::start_as(bytes, divisor, Huffman::Libjpeg, output)?;
    if decoder.size() != size {
        return Err(VisionError::corrupt(
            Format::Jpeg,
            format!(
                "it decodes to {:?} pixels, not the {} x {} its header implies",
                decoder.size(),
                size.0,
                size.1
            ),
        ));
    }
    let stride = size.0 as usize * output.bytes();
    let mut done = 0;
    while done < size.1 as usize {
        match decoder.read(&mut out[done * stride..], size.1 as usize - done)? {
            Some(n) if n > 0 => done += n,
            // libjpeg's own Huffman decoder never gives up; no rows is libjpeg stopping short.
            _ => {
                return Err(VisionError::corrupt(
                    Format::Jpeg,
                    "libjpeg stopped before the last row",
                ));
            }
        }
    }
    decoder.finish()?;
    Ok(out)
}
