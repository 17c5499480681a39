//! The CPU-heavy steps before the model, run on the blocking pool: image decode and
//! preprocessing (arbiter-vision), timed separately.

use std::time::{Duration, Instant};

use arbiter_vision::{ErrorKind, RgbImage, VisionError};

use crate::error::ApiError;

/// One image resized to the model's input (normalised when its batch runs).
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The resized RGB pixels.
    pub image: RgbImage,
    /// Time spent decoding.
    pub decode: Duration,
    /// Time spent resizing.
    pub preprocess: Duration,
}

/// Decodes `bytes` (refusing more than `max_pixels` before decoding) and resizes it to
/// `width x height`, as the seed does.
pub(crate) fn prepare_image(
    bytes: &[u8],
    max_pixels: u64,
    width: u32,
    height: u32,
) -> Result<Prepared, ApiError> {
    let limits = arbiter_vision::Limits { max_pixels };
    let started = Instant::now();
    let rgb = arbiter_vision::decode_rgb(bytes, &limits)?;
    let decoded = Instant::now();
    let image = arbiter_vision::resize_bilinear(&rgb, width, height);
    Ok(Prepared {
        image,
        decode: decoded - started,
        preprocess: decoded.elapsed(),
    })
}

/// The status a vision error deserves: 400 invalid, 413 too large, 415 unsupported.
pub(crate) fn vision_error(e: VisionError) -> ApiError {
    let message = e.to_string();
    match e.kind() {
        ErrorKind::Invalid => ApiError::BadRequest(message),
        ErrorKind::Unsupported => ApiError::Unsupported(message),
        ErrorKind::TooLarge => ApiError::TooLarge(message),
    }
}
