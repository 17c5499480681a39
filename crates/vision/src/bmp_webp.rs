//! BMP and WebP through the `image` crate.
//!
//! Both decode to 8-bit gray or RGB with or without alpha; alpha is dropped as Pillow's
//! `convert("RGB")` does. Known differences from Pillow: 16-bit (5-6-5 / 5-5-5) BMPs scale their
//! channels with rounding where Pillow truncates (at most 1 level off), and lossy WebP is decoded
//! by `image-webp` rather than libwebp.

use std::io::Cursor;

use image::{DynamicImage, ImageError, ImageFormat, ImageReader};

use crate::convert;
use crate::error::VisionError;
use crate::format::Format;
use crate::limits::Limits;
use crate::rgb_image::RgbImage;

fn image_format(format: Format) -> ImageFormat {
    match format {
        Format::Bmp => ImageFormat::Bmp,
        _ => ImageFormat::WebP,
    }
}

fn error(format: Format, e: ImageError) -> VisionError {
    match e {
        ImageError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            VisionError::Truncated { format }
        }
        ImageError::Limits(_) => VisionError::MemoryLimit { format },
        ImageError::Unsupported(e) => VisionError::unsupported(format, e.to_string()),
        e => VisionError::corrupt(format, e),
    }
}

fn reader<'a>(bytes: &'a [u8], format: Format, limits: &Limits) -> ImageReader<Cursor<&'a [u8]>> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), image_format(format));
    let mut image_limits = image::Limits::default();
    image_limits.max_alloc = Some(limits.max_decode_bytes());
    reader.limits(image_limits);
    reader
}

/// Width and height from the header.
pub(crate) fn dimensions(bytes: &[u8], format: Format) -> Result<(u32, u32), VisionError> {
    reader(bytes, format, &Limits::default())
        .into_dimensions()
        .map_err(|e| error(format, e))
}

/// Decodes to RGB, refusing the image before decoding if it has too many pixels.
pub(crate) fn decode(
    bytes: &[u8],
    format: Format,
    limits: &Limits,
) -> Result<RgbImage, VisionError> {
    let (width, height) = dimensions(bytes, format)?;
    limits.check(width, height)?;
    let decoder = reader(bytes, format, limits)
        .into_decoder()
        .map_err(|e| error(format, e))?;
    let image = DynamicImage::from_decoder(decoder).map_err(|e| error(format, e))?;
    let data = match image {
        DynamicImage::ImageLuma8(b) => convert::interleaved_to_rgb(b.as_raw(), 1),
        DynamicImage::ImageLumaA8(b) => convert::interleaved_to_rgb(b.as_raw(), 2),
        DynamicImage::ImageRgb8(b) => b.into_raw(),
        DynamicImage::ImageRgba8(b) => convert::interleaved_to_rgb(b.as_raw(), 4),
        other => {
            return Err(VisionError::unsupported(
                format,
                format!("{format} with {:?} samples is not supported", other.color()),
            ));
        }
    };
    Ok(RgbImage {
        width,
        height,
        data,
    })
}
