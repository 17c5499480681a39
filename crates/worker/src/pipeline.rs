//! The CPU-heavy steps before the model, run on the blocking pool: image decode and
//! preprocessing (arbiter-vision), timed separately.

use std::time::{Duration, Instant};

use arbiter_vision::{ErrorKind, VisionError};

use crate::error::ApiError;

/// One image turned into the model's input.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// `3 * height * width` floats, CHW, normalised.
    pub tensor: Vec<f32>,
    /// Time spent decoding.
    pub decode: Duration,
    /// Time spent resizing and normalising.
    pub preprocess: Duration,
}

/// Decodes `bytes` (refusing more than `max_pixels` before decoding) and preprocesses it to
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
    let resized = arbiter_vision::resize_bilinear(&rgb, width, height);
    drop(rgb);
    let mut tensor = vec![0.0f32; 3 * width as usize * height as usize];
    arbiter_vision::normalize_chw(&resized, &mut tensor);
    Ok(Prepared {
        tensor,
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
