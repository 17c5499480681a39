//! How an image becomes the model's `width x height` pixels: which of Pillow's filters resamples
//! it ([`Filter`]), and the geometry around the resize ([`Geometry`]), with the rounding rules of
//! the Python libraries that define them, written from their sources:
//!
//! - torchvision's `Resize(s)` on a PIL image (`transforms/functional.py`,
//!   `_compute_resized_output_size`): the shorter side becomes `s`, the longer
//!   `int(s * long / short)` (a float division, truncated), then Pillow's `resize`.
//! - torchvision's `CenterCrop((h, w))` (`center_crop`): an axis longer than the crop is cut at
//!   `int(round((size - crop) / 2.0))` (Python's `round`, half to even); an axis shorter than the
//!   crop is first padded with zeros, `(crop - size) // 2` before and the rest after.
//! - timm's evaluation transform (`timm/data/transforms_factory.py`,
//!   `transforms_imagenet_eval`, the default `center` crop mode): `scale = floor(size / crop_pct)`
//!   per axis; when both axes get the same scale, torchvision's `Resize(scale)`, then
//!   `CenterCrop`. For a non-square input, timm versions differ (older ones squash to both
//!   scales; timm 1.x calls its `ResizeKeepRatio`, `ratio = min(h / scale_h, w / scale_w)` and
//!   each side `round(side / ratio)`, with the bilinear filter whatever the recipe's): there
//!   [`Resize::check`] refuses `crop_pct`, and [`Resize::layout`] gives timm 1.x's sizes.
//!
//! [`Resize::layout`] turns these rules into a [`Layout`]: the size Pillow resizes to, and where
//! the model's input lies in it. The resampler computes only the rows and columns inside the crop
//! (each output index of Pillow's convolution is computed on its own, so that is exact).

use std::ops::Range;

/// One of Pillow's resampling filters, as `Image.resize(size, filter)` applies it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Filter {
    /// `Image.NEAREST`: each output pixel copies one source pixel (Pillow's affine transform).
    Nearest,
    /// `Image.BILINEAR`: a triangle filter of support 1, widened by the downscale factor; the seed's.
    #[default]
    Bilinear,
    /// `Image.BICUBIC`: the cubic convolution kernel with `a = -0.5`, support 2.
    Bicubic,
    /// `Image.LANCZOS`: a windowed sinc of support 3.
    Lanczos,
}

/// The geometry from the decoded image to the model's `width x height` input.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Geometry {
    /// Resized to exactly `width x height`, the aspect ratio lost: torchvision's
    /// `Resize([height, width])`, Pillow's `resize((width, height))`. The seed's.
    #[default]
    Squash,
    /// The shorter side resized to this many pixels, the aspect ratio kept, then the center
    /// `width x height` cut out: torchvision's `Resize(s)` then `CenterCrop((height, width))`.
    ShorterSide(u32),
    /// timm's `crop_pct` (the input's share of the resized image, ImageNet's usual 0.875): the
    /// image resized to `floor(side / crop_pct)`, the aspect ratio kept, then `CenterCrop`.
    CropPct(f64),
}

/// The whole resize recipe: a filter and a geometry. The default is the seed's: Pillow's
/// bilinear filter, squashed to the model's size.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Resize {
    /// The resampling filter.
    pub filter: Filter,
    /// The geometry around the resize.
    pub geometry: Geometry,
}

/// The longest shorter side a recipe may resize to: far beyond any model's input, and short of
/// the sizes whose resampling windows would take seconds to compute.
pub const MAX_SHORTER_SIDE: u32 = 1 << 16;

/// A recipe that cannot produce a `width x height` input.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RecipeError {
    /// A shorter side of 0 pixels.
    #[error("the shorter side must be at least 1 pixel, not 0")]
    ZeroShorterSide,
    /// A shorter side over [`MAX_SHORTER_SIDE`] (given, or from `crop_pct`).
    #[error("the shorter side of {0} pixels is over the limit of {MAX_SHORTER_SIDE}")]
    TooLarge(u64),
    /// A `crop_pct` that is not a positive number.
    #[error("crop_pct must be a number above 0, not {0}")]
    CropPct(f64),
    /// A `crop_pct` so large that the resized size rounds down to 0.
    #[error(
        "crop_pct {crop_pct} resizes the {width} x {height} input to nothing \
         (floor(side / crop_pct) is 0)"
    )]
    NothingLeft {
        /// The `crop_pct` asked for.
        crop_pct: f64,
        /// The input's width.
        width: u32,
        /// The input's height.
        height: u32,
    },
    /// A `crop_pct` for a non-square input, which timm versions resize differently.
    #[error(
        "crop_pct needs a square input, not {width} x {height} (timm versions resize a \
         non-square one differently); use the shorter side and a center crop instead"
    )]
    NonSquareCropPct {
        /// The input's width.
        width: u32,
        /// The input's height.
        height: u32,
    },
    /// An input size of 0 pixels.
    #[error("the input size {width} x {height} has no pixel")]
    EmptyInput {
        /// The input's width.
        width: u32,
        /// The input's height.
        height: u32,
    },
}

/// Where the model's input lies along one axis of the resized image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// The axis's length after Pillow's resize.
    pub resized: u32,
    /// The resized index of the input's first index: the crop's offset, negative where the crop
    /// is longer than the image and pads it.
    pub offset: i64,
    /// The input's length along the axis.
    pub len: u32,
}

impl Span {
    /// The whole resized axis, uncropped.
    fn whole(len: u32) -> Span {
        Span {
            resized: len,
            offset: 0,
            len,
        }
    }

    /// torchvision's `CenterCrop` of `len` out of `resized`.
    fn centered(resized: u32, len: u32) -> Span {
        let offset = if len > resized {
            // Padded with (len - resized) // 2 zeros first; the padded axis is then cut at 0.
            -i64::from((len - resized) / 2)
        } else {
            // int(round((resized - len) / 2.0)): an exact half rounds to even.
            (f64::from(resized - len) / 2.0).round_ties_even() as i64
        };
        Span {
            resized,
            offset,
            len,
        }
    }

    /// The resized indices inside the input.
    pub(crate) fn covered(&self) -> Range<usize> {
        let resized = i64::from(self.resized);
        let start = self.offset.clamp(0, resized);
        let end = (self.offset + i64::from(self.len)).clamp(start, resized);
        start as usize..end as usize
    }

    /// The input's indices before the first covered one: zeros of the padding.
    pub(crate) fn pad_before(&self) -> usize {
        (self.covered().start as i64 - self.offset).min(i64::from(self.len)) as usize
    }
}

/// The resize and the crop of one image: Pillow resizes it to `x.resized x y.resized`, and the
/// model's input is cut from that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Along the width.
    pub x: Span,
    /// Along the height.
    pub y: Span,
}

impl Layout {
    /// The size Pillow resizes the image to, `(width, height)`.
    pub fn resized(&self) -> (u32, u32) {
        (self.x.resized, self.y.resized)
    }

    /// Whether the input is the whole resized image, with nothing cut or padded.
    pub fn is_squash(&self) -> bool {
        self.x == Span::whole(self.x.len) && self.y == Span::whole(self.y.len)
    }
}

impl Resize {
    /// The seed's recipe: Pillow's bilinear filter, squashed to the model's size.
    pub const SEED: Resize = Resize {
        filter: Filter::Bilinear,
        geometry: Geometry::Squash,
    };

    /// Checks that the recipe gives a `width x height` input from any image.
    pub fn check(&self, width: u32, height: u32) -> Result<(), RecipeError> {
        if width == 0 || height == 0 {
            return Err(RecipeError::EmptyInput { width, height });
        }
        match self.geometry {
            Geometry::Squash => Ok(()),
            Geometry::ShorterSide(0) => Err(RecipeError::ZeroShorterSide),
            Geometry::ShorterSide(s) if s > MAX_SHORTER_SIDE => {
                Err(RecipeError::TooLarge(u64::from(s)))
            }
            Geometry::ShorterSide(_) => Ok(()),
            Geometry::CropPct(p) if !(p.is_finite() && p > 0.0) => Err(RecipeError::CropPct(p)),
            Geometry::CropPct(crop_pct) => {
                let (w, h) = timm_scale(width, height, crop_pct);
                if w != h {
                    return Err(RecipeError::NonSquareCropPct { width, height });
                }
                let scale = (f64::from(width) / crop_pct).floor();
                if scale > f64::from(MAX_SHORTER_SIDE) {
                    return Err(RecipeError::TooLarge(scale.min(u64::MAX as f64) as u64));
                }
                if w == 0 || h == 0 {
                    return Err(RecipeError::NothingLeft {
                        crop_pct,
                        width,
                        height,
                    });
                }
                Ok(())
            }
        }
    }

    /// Where a `width x height` input lies in an `in_w x in_h` image resized by this recipe.
    /// A recipe that [`check`](Resize::check) refuses gives a layout with nothing covered (a
    /// black input), never a panic.
    pub fn layout(&self, in_w: u32, in_h: u32, width: u32, height: u32) -> Layout {
        let (rw, rh) = match self.geometry {
            Geometry::Squash => {
                return Layout {
                    x: Span::whole(width),
                    y: Span::whole(height),
                };
            }
            Geometry::ShorterSide(s) => shorter_side(in_w, in_h, s),
            Geometry::CropPct(crop_pct) => {
                let (sw, sh) = timm_scale(width, height, crop_pct);
                if sw == sh {
                    shorter_side(in_w, in_h, sw)
                } else {
                    keep_ratio(in_w, in_h, sw, sh)
                }
            }
        };
        Layout {
            x: Span::centered(rw, width),
            y: Span::centered(rh, height),
        }
    }
}

/// torchvision's `_compute_resized_output_size` for `Resize(s)`: `(width, height)`.
fn shorter_side(in_w: u32, in_h: u32, s: u32) -> (u32, u32) {
    let (short, long) = if in_w <= in_h {
        (in_w, in_h)
    } else {
        (in_h, in_w)
    };
    // Python's int(s * long / short): an exact product, a correctly rounded division, truncated
    // (the `as` cast truncates, and saturates where Python would go on).
    let new_long = if short == 0 {
        0
    } else {
        (f64::from(s) * f64::from(long) / f64::from(short)) as u32
    };
    if in_w <= in_h {
        (s, new_long)
    } else {
        (new_long, s)
    }
}

/// timm's `scale_size`: `math.floor(side / crop_pct)` for each side, `(width, height)`.
fn timm_scale(width: u32, height: u32, crop_pct: f64) -> (u32, u32) {
    let scale = |side: u32| (f64::from(side) / crop_pct).floor() as u32;
    (scale(width), scale(height))
}

/// timm's `ResizeKeepRatio(scale)` (`longest = 0`, no random factors): `(width, height)`.
fn keep_ratio(in_w: u32, in_h: u32, scale_w: u32, scale_h: u32) -> (u32, u32) {
    let ratio = (f64::from(in_h) / f64::from(scale_h)).min(f64::from(in_w) / f64::from(scale_w));
    // Python's round(side / ratio): half to even.
    let side = |v: u32| (f64::from(v) / ratio).round_ties_even() as u32;
    (side(in_w), side(in_h))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shorter(s: u32) -> Resize {
        Resize {
            filter: Filter::Bilinear,
            geometry: Geometry::ShorterSide(s),
        }
    }

    fn crop_pct(p: f64) -> Resize {
        Resize {
            filter: Filter::Bicubic,
            geometry: Geometry::CropPct(p),
        }
    }

    /// (resized width, height, left, top) of a layout.
    fn placed(l: Layout) -> (u32, u32, i64, i64) {
        (l.x.resized, l.y.resized, l.x.offset, l.y.offset)
    }

    /// Expected values computed with torchvision's rules in Python:
    /// `_compute_resized_output_size((h, w), [s])` and `int(round((H - h) / 2.0))`.
    #[test]
    fn shorter_side_then_center_crop_rounds_as_torchvision() {
        for ((in_w, in_h), s, (w, h), expected) in [
            // 4000 x 3000 -> int(256 * 4000 / 3000) = 341; (341 - 224) / 2 = 58.5 -> 58 (even).
            ((4000, 3000), 256, (224, 224), (341, 256, 58, 16)),
            // 512 x 600 (portrait): int(256 * 600 / 512) = 300; (300 - 224) / 2 = 38.
            ((512, 600), 256, (224, 224), (256, 300, 16, 38)),
            // 451 x 300: int(256 * 451 / 300) = 384 (384.85); 80 from 384 - 224 = 160.
            ((451, 300), 256, (224, 224), (384, 256, 80, 16)),
            // Exact halves round to even: 257 - 224 = 33 -> 16.5 -> 16; 259 - 224 = 35 -> 17.5 -> 18.
            ((257, 1000), 257, (224, 222), (257, 1000, 16, 389)),
            ((259, 259), 259, (224, 224), (259, 259, 18, 18)),
            // 2000 x 60 strip: int(256 * 2000 / 60) = 8533 (8533.33).
            ((2000, 60), 256, (224, 224), (8533, 256, 4154, 16)),
            // 1 x 1: both sides become s.
            ((1, 1), 256, (224, 224), (256, 256, 16, 16)),
            // Square: w <= h picks width as the shorter side.
            ((300, 300), 232, (224, 224), (232, 232, 4, 4)),
            // A crop larger than the image pads: (224 - 100) // 2 = 62 zeros before.
            ((300, 200), 100, (224, 224), (150, 100, -37, -62)),
            // Non-square crop (h, w) = (200, 120) out of 256 x 341.
            ((3000, 4000), 256, (120, 200), (256, 341, 68, 70)),
            // int() truncates: 3 * 7 / 2 = 10.5 -> 10.
            ((2, 7), 3, (1, 1), (3, 10, 1, 4)),
        ] {
            let got = placed(shorter(s).layout(in_w, in_h, w, h));
            assert_eq!(
                got, expected,
                "{in_w}x{in_h} Resize({s}) CenterCrop({h}, {w})"
            );
        }
    }

    /// Expected values computed with timm's rules in Python: `math.floor(size / crop_pct)`, then
    /// `Resize(scale)` or `ResizeKeepRatio`, then `CenterCrop`.
    #[test]
    fn crop_pct_rounds_as_timm() {
        for ((in_w, in_h), p, (w, h), expected) in [
            // floor(240 / 0.875) = 274 (274.29); int(274 * 4000 / 3000) = 365 (365.33).
            ((4000, 3000), 0.875, (240, 240), (365, 274, 62, 17)),
            // floor(224 / 0.875) = 256 exactly.
            ((512, 600), 0.875, (224, 224), (256, 300, 16, 38)),
            // floor(224 / 0.9) = 248 (248.89); int(248 * 451 / 300) = 372 (372.83).
            ((451, 300), 0.9, (224, 224), (372, 248, 74, 12)),
            // floor(224 / 0.95) = 235 (235.79): (235 - 224) / 2 = 5.5 -> 6.
            ((1000, 1000), 0.95, (224, 224), (235, 235, 6, 6)),
            // crop_pct 1.0: no margin.
            ((640, 480), 1.0, (224, 224), (298, 224, 37, 0)),
            // crop_pct above 1: the resized height is shorter than the crop and padded.
            ((640, 480), 1.25, (224, 224), (238, 179, 7, -22)),
            // Non-square: scale (w, h) = floor(320 / .875), floor(256 / .875) = (365, 292);
            // ratio = min(480 / 292, 640 / 365) = 1.6438..; round(640 / r) = 389 (389.33),
            // round(480 / r) = 292.
            ((640, 480), 0.875, (320, 256), (389, 292, 34, 18)),
        ] {
            let got = placed(crop_pct(p).layout(in_w, in_h, w, h));
            assert_eq!(got, expected, "{in_w}x{in_h} crop_pct {p} to {w}x{h}");
        }
    }

    #[test]
    fn squash_covers_the_input() {
        let layout = Resize::SEED.layout(4000, 3000, 224, 200);
        assert!(layout.is_squash());
        assert_eq!(layout.resized(), (224, 200));
        assert_eq!(layout.x.covered(), 0..224);
        assert_eq!(layout.y.pad_before(), 0);
        assert_eq!(Resize::default(), Resize::SEED);
    }

    #[test]
    fn spans_clip_the_crop_to_the_image() {
        // 150 resized into 224: 37 zeros, 150 pixels, 37 zeros.
        let span = Span::centered(150, 224);
        assert_eq!((span.covered(), span.pad_before()), (0..150, 37));
        // 101 into 224: (224 - 101) // 2 = 61 before, 62 after.
        let span = Span::centered(101, 224);
        assert_eq!((span.covered(), span.pad_before()), (0..101, 61));
        // Nothing resized: all padding.
        let span = Span::centered(0, 5);
        assert_eq!((span.covered(), span.pad_before()), (0..0, 2));
        let span = Span::centered(300, 224);
        assert_eq!((span.covered(), span.pad_before()), (38..262, 0));
    }

    #[test]
    fn bad_recipes_are_refused() {
        assert_eq!(
            shorter(0).check(224, 224),
            Err(RecipeError::ZeroShorterSide)
        );
        assert!(shorter(1).check(224, 224).is_ok());
        assert!(shorter(MAX_SHORTER_SIDE).check(224, 224).is_ok());
        assert_eq!(
            shorter(MAX_SHORTER_SIDE + 1).check(224, 224),
            Err(RecipeError::TooLarge(65_537))
        );
        assert!(matches!(
            crop_pct(1e-9).check(224, 224),
            Err(RecipeError::TooLarge(_))
        ));
        for p in [0.0, -0.5, f64::NAN, f64::INFINITY] {
            assert!(
                matches!(crop_pct(p).check(224, 224), Err(RecipeError::CropPct(_))),
                "{p}"
            );
        }
        assert!(matches!(
            crop_pct(300.0).check(224, 224),
            Err(RecipeError::NothingLeft { .. })
        ));
        assert!(matches!(
            Resize::SEED.check(0, 224),
            Err(RecipeError::EmptyInput { .. })
        ));
        assert!(crop_pct(0.875).check(240, 240).is_ok());
        assert!(matches!(
            crop_pct(0.875).check(320, 256),
            Err(RecipeError::NonSquareCropPct { .. })
        ));
        // Refused recipes still lay out without panicking.
        let layout = shorter(0).layout(100, 50, 224, 224);
        assert!(layout.x.covered().is_empty() || layout.y.covered().is_empty());
        let layout = crop_pct(300.0).layout(100, 50, 224, 224);
        assert!(layout.x.covered().is_empty() && layout.y.covered().is_empty());
    }
}
