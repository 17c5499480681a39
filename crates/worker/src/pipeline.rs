//! The CPU-heavy steps before the model, run on the blocking pool: image decode and
//! preprocessing (arbiter-vision), timed separately.

use std::time::{Duration, Instant};

use arbiter_vision::RgbImage;

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

/// Decodes `bytes` (refusing more than `max_pixels` before decoding; big JPEGs at a reduced
/// scale with `fast_jpeg`) and resizes it to `width x height`, as the seed does.
pub(crate) fn prepare_image(
    bytes: &[u8],
    max_pixels: u64,
    (width, height): (u32, u32),
    fast_jpeg: bool,
) -> Result<Prepared, ApiError> {
    let limits = arbiter_vision::Limits { max_pixels };
    let started = Instant::now();
    let (image, resizing) =
        arbiter_vision::decode_resized(bytes, &limits, width, height, fast_jpeg)?;
    // A JPEG is resized while it decodes: the decode stage is the rest of the time.
    Ok(Prepared {
        image,
        decode: started.elapsed().saturating_sub(resizing),
        preprocess: resizing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With `fast_jpeg`, the pixels queued for the model are Pillow's after `draft` (the
    /// reference `scripts/setup` writes); without it, Pillow's full decode.
    #[test]
    fn fast_jpeg_queues_pillows_draft_pixels() {
        use arbiter_testkit::setup;
        let photo = std::fs::read(setup::photo("big_12mp.jpg")).unwrap();
        for (fast, reference) in [
            (true, "big_12mp.jpg.draft.rgb"),
            (false, "big_12mp.jpg.rgb"),
        ] {
            let expected = std::fs::read(setup::var(&format!("reference/{reference}"))).unwrap();
            let prepared = prepare_image(
                &photo,
                arbiter_config::defaults::MAX_PIXELS,
                (224, 224),
                fast,
            )
            .unwrap();
            assert!(prepared.image.data == expected, "fast_jpeg {fast}");
        }
    }
}
