//! The resource limits a decode is held to.

use crate::error::VisionError;

/// Resource limits applied while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most pixels (width x height) an image may declare; Pillow's `MAX_IMAGE_PIXELS` by
    /// default.
    pub max_pixels: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pixels: 89_478_485,
        }
    }
}

impl Limits {
    /// Refuses `width x height` if it is over `max_pixels`.
    pub fn check(&self, width: u32, height: u32) -> Result<(), VisionError> {
        if u64::from(width) * u64::from(height) > self.max_pixels {
            return Err(VisionError::TooManyPixels {
                width,
                height,
                limit: self.max_pixels,
            });
        }
        Ok(())
    }

    /// The most bytes a decoder may allocate: 16-bit RGBA at the pixel limit, plus slack.
    pub(crate) fn max_decode_bytes(&self) -> u64 {
        self.max_pixels.saturating_mul(8).saturating_add(64 << 20)
    }
}
