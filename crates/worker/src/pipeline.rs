//! The CPU-heavy steps before the model, run on the blocking pool: image decode and resize
//! (arbiter-vision), timed separately, by the model's recipe ([`Recipe`], from
//! `[model.preprocess]` and `[model.postprocess]`).

use std::time::{Duration, Instant};

use arbiter_config::{Geometry, Model, Output, Postprocess};
use arbiter_infer::{Labels, postprocess};
use arbiter_vision::{Filter, Resize, Resized, RgbImage, VisionError};

use crate::error::ApiError;
use crate::tensor::{Elements, ToTensor};

/// One image resized to the model's input (written into the batch when its batch runs).
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The resized RGB pixels.
    pub image: RgbImage,
    /// Time spent decoding.
    pub decode: Duration,
    /// Time spent resizing.
    pub preprocess: Duration,
}

/// The model's own Python pipeline, as the worker runs it: how an image is decoded and resized
/// ([`Resize`], `fast_jpeg`), how it becomes the input ([`ToTensor`]), and how the outputs become
/// the answer. `/model_predict`, KServe's metadata and `arbiter predict` all take it from here.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recipe {
    /// The filter and geometry of the resize.
    pub resize: Resize,
    /// Decode big JPEGs at a reduced scale (Pillow's `draft`).
    pub fast_jpeg: bool,
    /// The resized image into the input's values.
    pub tensor: ToTensor,
    /// The outputs into the answer.
    pub postprocess: Postprocess,
}

impl Recipe {
    /// The seed's: bilinear squash, `/ 255` and ImageNet's mean and std
    /// (`arbiter_config::defaults`), RGB, NCHW `float32`, the raw threshold, the labels alone.
    pub const SEED: Recipe = Recipe {
        resize: Resize::SEED,
        fast_jpeg: false,
        tensor: ToTensor {
            normalize: Some(arbiter_vision::Normalize {
                divide_by: 255.0,
                mean: arbiter_config::defaults::IMAGENET_MEAN,
                std: arbiter_config::defaults::IMAGENET_STD,
            }),
            channels: arbiter_vision::ChannelOrder::Rgb,
            layout: arbiter_vision::TensorLayout::Nchw,
        },
        postprocess: Postprocess {
            output: Output::Threshold,
            scores: false,
        },
    };

    /// The recipe `[model]` gives.
    pub fn from_config(model: &Model) -> Recipe {
        let p = &model.preprocess;
        Recipe {
            resize: Resize {
                filter: match p.interpolation {
                    arbiter_config::Filter::Nearest => Filter::Nearest,
                    arbiter_config::Filter::Bilinear => Filter::Bilinear,
                    arbiter_config::Filter::Bicubic => Filter::Bicubic,
                    arbiter_config::Filter::Lanczos => Filter::Lanczos,
                },
                geometry: match p.resize {
                    Geometry::Squash => arbiter_vision::Geometry::Squash,
                    Geometry::ShorterSide(s) => arbiter_vision::Geometry::ShorterSide(s),
                    Geometry::CropPct(c) => arbiter_vision::Geometry::CropPct(c),
                },
            },
            fast_jpeg: model.fast_jpeg,
            tensor: ToTensor::from_config(p),
            postprocess: model.postprocess,
        }
    }

    /// Decodes `bytes` (refusing more than `max_pixels` before decoding; big JPEGs at a reduced
    /// scale with `fast_jpeg`) and resizes it by the recipe to `width x height`.
    pub fn resized(
        &self,
        bytes: &[u8],
        max_pixels: u64,
        (width, height): (u32, u32),
    ) -> Result<Resized, VisionError> {
        let limits = arbiter_vision::Limits { max_pixels };
        arbiter_vision::decode_resized_with(
            bytes,
            &limits,
            width,
            height,
            &self.resize,
            self.fast_jpeg,
        )
    }

    /// One image's input values for a `width x height` model: [`Recipe::resized`], then
    /// [`ToTensor`].
    pub fn input(
        &self,
        bytes: &[u8],
        max_pixels: u64,
        size: (u32, u32),
    ) -> Result<Elements, VisionError> {
        let done = self.resized(bytes, max_pixels, size)?;
        Ok(self.tensor.tensor(&done.image))
    }

    /// One image's answer to its raw outputs, as JSON: the seed's (`{"result": [...], "status":
    /// 1}`), or with each kept class's index, label and score when `scores` is on.
    pub fn answer(&self, outputs: &[f32], labels: &Labels, threshold: f32) -> Vec<u8> {
        let answer = postprocess(outputs, labels, threshold, self.postprocess.output);
        let json = if self.postprocess.scores {
            serde_json::to_vec(&answer.scored())
        } else {
            serde_json::to_vec(&answer.prediction())
        };
        json.unwrap_or_default()
    }

    /// [`Recipe::resized`], timed for the service's stages.
    pub(crate) fn prepare(
        &self,
        bytes: &[u8],
        max_pixels: u64,
        size: (u32, u32),
    ) -> Result<Prepared, ApiError> {
        let started = Instant::now();
        let done = self.resized(bytes, max_pixels, size)?;
        // A JPEG is resized while it decodes: the decode stage is the rest of the time.
        Ok(Prepared {
            image: done.image,
            decode: started.elapsed().saturating_sub(done.resizing),
            preprocess: done.resizing,
        })
    }

    /// Logs the recipe once, at start. Every recipe takes the fast paths (the JPEG decode
    /// resized by bands, `fast_jpeg`'s DCT scaling when on); only some images do not (a gray or
    /// CMYK JPEG, another format, a size Pillow resamples vertically first), decoded whole with
    /// the same pixels.
    pub(crate) fn log(&self, (width, height): (u32, u32)) {
        let geometry = match self.resize.geometry {
            arbiter_vision::Geometry::Squash => "squash".to_owned(),
            arbiter_vision::Geometry::ShorterSide(s) => format!("shorter_side {s}"),
            arbiter_vision::Geometry::CropPct(c) => format!("crop_pct {c}"),
        };
        tracing::info!(
            resize = %geometry,
            filter = ?self.resize.filter,
            width,
            height,
            normalize = ?self.tensor.normalize,
            channels = ?self.tensor.channels,
            layout = ?self.tensor.layout,
            fast_jpeg = self.fast_jpeg,
            output = ?self.postprocess.output,
            scores = self.postprocess.scores,
            "preprocessing recipe"
        );
    }
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
            let recipe = Recipe {
                fast_jpeg: fast,
                ..Recipe::SEED
            };
            let prepared = recipe
                .prepare(&photo, arbiter_config::defaults::MAX_PIXELS, (224, 224))
                .unwrap();
            assert!(prepared.image.data == expected, "fast_jpeg {fast}");
        }
    }

    /// The seed's recipe is the config's defaults: one source for ImageNet's mean and std, the
    /// division by 255 and the rest.
    #[test]
    fn the_seed_is_the_configs_defaults() {
        let config =
            arbiter_config::Config::parse("", std::path::Path::new("/etc/arbiter.toml")).unwrap();
        assert_eq!(Recipe::from_config(config.model()), Recipe::SEED);
        assert_eq!(
            Recipe::SEED.tensor.normalize,
            Some(arbiter_vision::Normalize::SEED)
        );
    }
}
