//! The marker walk: what a JPEG stream declares, read before any pixel is decoded.
//!
//! [`scan`] walks the marker segments (not the pixel data): it finds the frame header (size,
//! precision, component count) for the pixel limit, and checks that the stream reaches its EOI
//! marker. Pillow raises "image file is truncated" whenever the data ends before EOI, and
//! tolerates libjpeg's corrupt-data warnings when it does not; the decoders do the same: a
//! libjpeg warning is accepted, a fatal error is not.

use crate::error::VisionError;
use crate::format::Format;

/// What the marker walk learned about a JPEG stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// Width from the first frame header.
    pub width: u32,
    /// Height from the first frame header.
    pub height: u32,
    /// Bits per sample.
    precision: u8,
    /// Number of components.
    pub components: u8,
    /// The frame marker (0xC0..=0xCF).
    marker: u8,
    /// Whether the walk reached an EOI marker (always false in header-only mode).
    complete: bool,
}

impl Header {
    /// The size libjpeg's DCT scaling by `1 / divisor` decodes to: `ceil(width / divisor) x
    /// ceil(height / divisor)`.
    pub(crate) fn scaled_size(&self, divisor: u32) -> (u32, u32) {
        (self.width.div_ceil(divisor), self.height.div_ceil(divisor))
    }

    /// Refuses a stream that ends before its EOI marker, as Pillow does ("image file is
    /// truncated").
    pub(crate) fn require_complete(&self) -> Result<(), VisionError> {
        if self.complete {
            Ok(())
        } else {
            Err(VisionError::Truncated {
                format: Format::Jpeg,
            })
        }
    }
}

/// Walks the JPEG marker structure. With `to_end` false, stops at the first frame header.
pub(crate) fn scan(bytes: &[u8], to_end: bool) -> Result<Header, VisionError> {
    const F: Format = Format::Jpeg;
    let truncated = || VisionError::Truncated { format: F };
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return Err(VisionError::corrupt(
            F,
            "it does not start with an SOI marker",
        ));
    }
    let mut frame: Option<Header> = None;
    let mut pos = 2;
    loop {
        // Like libjpeg's next_marker: skip stray bytes, then 0xFF fill bytes.
        pos = memchr::memchr(0xFF, &bytes[pos..]).map_or(bytes.len(), |ff| pos + ff);
        while pos < bytes.len() && bytes[pos] == 0xFF {
            pos += 1;
        }
        let Some(&marker) = bytes.get(pos) else {
            return Err(truncated());
        };
        pos += 1;
        match marker {
            0xD9 => {
                let mut header = frame.ok_or_else(|| {
                    VisionError::corrupt(F, "it ends before any frame header (SOF)")
                })?;
                header.complete = true;
                return Ok(header);
            }
            // Standalone markers: no length field.
            0x00 | 0x01 | 0xD0..=0xD8 => continue,
            _ => {}
        }
        let len_bytes = bytes.get(pos..pos + 2).ok_or_else(truncated)?;
        let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
        if len < 2 {
            return Err(VisionError::corrupt(
                F,
                format!("marker 0x{marker:02X} has a bad length"),
            ));
        }
        let segment = bytes.get(pos + 2..pos + len).ok_or_else(truncated)?;
        pos += len;
        let is_frame = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_frame && frame.is_none() {
            if segment.len() < 6 {
                return Err(VisionError::corrupt(F, "its frame header is too short"));
            }
            let header = Header {
                precision: segment[0],
                height: u32::from(u16::from_be_bytes([segment[1], segment[2]])),
                width: u32::from(u16::from_be_bytes([segment[3], segment[4]])),
                components: segment[5],
                marker,
                complete: false,
            };
            check_supported(&header)?;
            if !to_end {
                return Ok(header);
            }
            frame = Some(header);
        }
        if marker == 0xDA {
            // Entropy-coded data: runs until a 0xFF that is not stuffing (0xFF00) or a restart.
            loop {
                let ff = memchr::memchr(0xFF, &bytes[pos..]).ok_or_else(truncated)?;
                pos += ff;
                match bytes.get(pos + 1) {
                    None => return Err(truncated()),
                    Some(0x00 | 0xD0..=0xD7) => pos += 2,
                    Some(0xFF) => pos += 1,
                    Some(_) => break,
                }
            }
        }
    }
}

/// Refuses what Pillow's JPEG plugin or libjpeg-turbo 2.1 cannot open.
fn check_supported(h: &Header) -> Result<(), VisionError> {
    let unsupported = |detail: String| Err(VisionError::unsupported(Format::Jpeg, detail));
    if matches!(h.marker, 0xC3 | 0xC5..=0xC7 | 0xCB | 0xCD..=0xCF) {
        return unsupported(format!(
            "lossless or hierarchical JPEG (marker 0x{:02X}) is not supported",
            h.marker
        ));
    }
    if h.precision != 8 {
        return unsupported(format!("{}-bit JPEG is not supported", h.precision));
    }
    if !matches!(h.components, 1 | 3 | 4) {
        return unsupported(format!(
            "JPEG with {} components is not supported",
            h.components
        ));
    }
    if h.width == 0 || h.height == 0 {
        return Err(VisionError::corrupt(
            Format::Jpeg,
            format!(
                "its frame header declares {} x {} pixels",
                h.width, h.height
            ),
        ));
    }
    Ok(())
}
