//! Pillow's `Image.resize(size, filter)` for 8-bit RGB, reproduced bit for bit, and the crop
//! that torchvision or timm then cut from it (see `recipe`).
//!
//! This follows `ImagingResampleInner` in Pillow's `src/libImaging/Resample.c`:
//!
//! - Per axis, each output index gets a window of input indices and fixed-point weights (see
//!   `coefficients`), the same integers as Pillow's, for BILINEAR, BICUBIC and LANCZOS alike;
//!   NEAREST is one tap of weight 1.0 at the pixel Pillow's affine transform picks.
//! - Two passes, each rounding to an 8-bit image. Usually the horizontal pass runs first, over
//!   only the rows that the vertical pass reads. Pillow 13 runs the vertical pass first when the
//!   height shrinks by more than twice as many pixels as the width (a rule found by probing
//!   Pillow 13.0, whose source is not at hand; it holds for every filter, and `tests/fixtures`
//!   holds sizes on both sides of its boundary). A pass whose axis keeps its size is skipped.
//!   NEAREST's passes copy pixels, so their order does not show: it always goes horizontally
//!   first.
//! - Each output sample is `clip8((2^21 + sum(pixel * weight)) >> 22)` in 32-bit integers.
//!
//! Integer sums are exact, so the loops (in `kernels`) are free to add in any order. Each output
//! index is computed on its own, so a crop computes only the rows and columns it keeps (and the
//! source rows and columns those read), and pads the rest with zeros as torchvision does.

use std::borrow::Cow;
use std::ops::Range;

use crate::coefficients::{Coefficients, PRECISION_BITS, coefficients};
use crate::kernels;
use crate::recipe::{Filter, Layout, Resize, Span};
use crate::rgb_image::RgbImage;

/// Rounding term every accumulator starts from.
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Resizes an RGB image with Pillow's BILINEAR filter (a triangle filter whose support grows
/// with the downscale factor), bit-exact with Pillow's `resize((width, height), BILINEAR)`: the
/// seed's [`Resize`] recipe.
///
/// Asking for the image's own size returns a copy, as Pillow does. A zero-sized input gives a
/// black image; a zero-sized output gives an empty one.
///
/// # Panics
///
/// If `img.data.len()` is not `3 * width * height` (an `RgbImage` built by hand wrongly).
pub fn resize_bilinear(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    resize(img, &Resize::SEED, width, height)
}

/// Makes the `width x height` input of `recipe` from an RGB image: Pillow's `resize` with the
/// recipe's filter to the size its geometry gives, then torchvision's center crop, bit for bit
/// (see [`Resize::layout`]).
///
/// A zero-sized input gives a black image; a zero-sized output gives an empty one.
///
/// # Panics
///
/// If `img.data.len()` is not `3 * width * height` (an `RgbImage` built by hand wrongly).
pub fn resize(img: &RgbImage, recipe: &Resize, width: u32, height: u32) -> RgbImage {
    assert_eq!(
        img.data.len(),
        img.width as usize * img.height as usize * 3,
        "RgbImage data length does not match its dimensions"
    );
    let layout = recipe.layout(img.width, img.height, width, height);
    resample(img, recipe.filter, &layout)
}

/// One axis of a resize: the windows of the output indices inside the crop, or none when Pillow
/// leaves the axis's size alone and skips its pass.
#[derive(Debug)]
struct Axis {
    /// `None` when the axis keeps its size: the covered indices are copied.
    coeffs: Option<Coefficients>,
    /// The resized indices inside the crop.
    covered: Range<usize>,
    /// The crop's zeros before the first covered index.
    pad_before: usize,
    /// The crop's length.
    len: usize,
}

impl Axis {
    fn new(in_size: usize, span: &Span, filter: Filter) -> Axis {
        let covered = span.covered();
        let resized = span.resized as usize;
        Axis {
            coeffs: (resized != in_size)
                .then(|| coefficients(in_size, resized, filter, covered.clone())),
            pad_before: span.pad_before(),
            len: span.len as usize,
            covered,
        }
    }

    /// The source indices the axis reads.
    fn reach(&self) -> Range<usize> {
        match &self.coeffs {
            Some(coeffs) => coeffs.reach(),
            None => self.covered.clone(),
        }
    }
}

/// Whether Pillow 13 runs the vertical pass first: when the height shrinks by more than twice
/// as many pixels as the width does. The 8-bit rounding between the passes makes the order
/// visible in the result (except for NEAREST, whose passes copy).
fn vertical_first(filter: Filter, in_w: usize, in_h: usize, out_w: usize, out_h: usize) -> bool {
    let (in_w, in_h, out_w, out_h) = (in_w as i64, in_h as i64, out_w as i64, out_h as i64);
    filter != Filter::Nearest && in_w != out_w && out_h < in_h && in_h - out_h > 2 * (in_w - out_w)
}

/// The whole image resampled by `filter` to `layout`.
pub(crate) fn resample(img: &RgbImage, filter: Filter, layout: &Layout) -> RgbImage {
    let (in_w, in_h) = (img.width as usize, img.height as usize);
    let (width, height) = (layout.x.len, layout.y.len);
    if width == 0 || height == 0 {
        return RgbImage {
            width,
            height,
            data: Vec::new(),
        };
    }
    if in_w == 0 || in_h == 0 {
        return RgbImage {
            width,
            height,
            data: vec![0; width as usize * height as usize * 3],
        };
    }
    let mut x = Axis::new(in_w, &layout.x, filter);
    let y = Axis::new(in_h, &layout.y, filter);
    let (kept_w, kept_h) = (x.covered.len(), y.covered.len());
    let (rw, rh) = (layout.x.resized as usize, layout.y.resized as usize);
    let stride = in_w * 3;

    let data = if kept_w == 0 || kept_h == 0 {
        Vec::new()
    } else if let Some(vertical) = &y.coeffs
        && let Some(mut horizontal) = x
            .coeffs
            .take_if(|_| vertical_first(filter, in_w, in_h, rw, rh))
    {
        // Only the source columns the horizontal pass reads.
        let cols = horizontal.reach();
        let tmp = vertical_pass(&img.data, stride, 3 * cols.start..3 * cols.end, 0, vertical);
        horizontal.shift(cols.start);
        horizontal_pass(&tmp, cols.len(), 0..kept_h, horizontal)
    } else {
        // The rows of the source that the vertical pass reads.
        let rows = y.reach();
        let src = match x.coeffs.take() {
            Some(horizontal) => {
                Cow::Owned(horizontal_pass(&img.data, in_w, rows.clone(), horizontal))
            }
            None if x.covered == (0..in_w) => {
                Cow::Borrowed(&img.data[rows.start * stride..rows.end * stride])
            }
            None => Cow::Owned(copy_columns(&img.data, stride, rows.clone(), &x.covered)),
        };
        match &y.coeffs {
            Some(vertical) => vertical_pass(&src, kept_w * 3, 0..kept_w * 3, rows.start, vertical),
            None => src.into_owned(),
        }
    };
    RgbImage {
        width,
        height,
        data: place(data, &x, &y),
    }
}

/// The crop's pixels `kept` (`x.covered` by `y.covered`) within the crop's zeros.
fn place(kept: Vec<u8>, x: &Axis, y: &Axis) -> Vec<u8> {
    let (kept_w, kept_h) = (x.covered.len(), y.covered.len());
    if kept_w == x.len && kept_h == y.len {
        return kept;
    }
    let stride = x.len * 3;
    let mut out = vec![0u8; y.len * stride];
    if kept_w > 0 {
        for (row, src) in out[y.pad_before * stride..]
            .chunks_exact_mut(stride)
            .zip(kept.chunks_exact(kept_w * 3))
        {
            row[x.pad_before * 3..(x.pad_before + kept_w) * 3].copy_from_slice(src);
        }
    }
    out
}

/// The `cols` of each row in `rows` of `src` (`stride` bytes per row).
fn copy_columns(src: &[u8], stride: usize, rows: Range<usize>, cols: &Range<usize>) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows.len() * cols.len() * 3);
    for y in rows {
        out.extend_from_slice(&src[y * stride + cols.start * 3..y * stride + cols.end * 3]);
    }
    out
}

/// Above this many bytes of split weights (a source tens of millions of pixels wide), the
/// horizontal pass keeps one weight per tap and the portable kernel, so that the weights stay
/// within about 8 bytes per source column.
const MAX_SPLIT_BYTES: usize = 64 << 20;

/// The horizontal plan of `coeffs` over rows `src_w` pixels wide, split for the AVX2 kernel
/// unless that would take too much memory.
fn plan_for(coeffs: Coefficients, src_w: usize) -> kernels::Horizontal {
    let split_bytes = kernels::Horizontal::split_bytes(coeffs.bounds.len(), coeffs.ksize);
    kernels::Horizontal::new(coeffs, src_w, split_bytes <= MAX_SPLIT_BYTES)
}

/// Resamples each row in `rows` of `src` (`src_w` pixels wide) with `coeffs`.
fn horizontal_pass(src: &[u8], src_w: usize, rows: Range<usize>, coeffs: Coefficients) -> Vec<u8> {
    let out_w = coeffs.bounds.len();
    let plan = plan_for(coeffs, src_w);
    let mut out = vec![0u8; rows.len() * out_w * 3];
    kernels::horizontal(src, src_w * 3, rows, &plan, HALF, &mut out);
    out
}

/// [`resample`] fed the source a few rows at a time, as a decoder produces them: each row the
/// vertical pass will read is narrowed by the horizontal pass as it arrives, so the whole source
/// never needs to be in memory (for a 4000 x 3000 photo resized to 224 x 224: 2 MB kept instead
/// of 36). The result is `resample`'s, bit for bit. Only for the sizes where Pillow runs the
/// horizontal pass first (see [`RowResizer::new`]).
#[derive(Debug)]
pub(crate) struct RowResizer {
    in_w: usize,
    in_h: usize,
    /// `None` when the width stays: the covered columns are kept as they come.
    plan: Option<kernels::Horizontal>,
    x: Axis,
    y: Axis,
    /// The source rows the vertical pass reads: `first_row..last_row`.
    first_row: usize,
    last_row: usize,
    /// Source rows received so far.
    received: usize,
    /// The kept rows, narrowed.
    kept: Vec<u8>,
    /// Time spent resampling.
    spent: std::time::Duration,
}

impl RowResizer {
    /// A resizer of an `in_w x in_h` source by `filter` to `layout`, or `None` when the source
    /// must be resized whole: an empty size or crop, or a height shrinking so much more than
    /// the width that Pillow runs the vertical pass first.
    pub(crate) fn new(in_w: u32, in_h: u32, filter: Filter, layout: &Layout) -> Option<RowResizer> {
        let (in_w, in_h) = (in_w as usize, in_h as usize);
        let (rw, rh) = (layout.x.resized as usize, layout.y.resized as usize);
        if in_w == 0 || in_h == 0 || layout.x.covered().is_empty() || layout.y.covered().is_empty()
        {
            return None;
        }
        if rh != in_h && vertical_first(filter, in_w, in_h, rw, rh) {
            return None;
        }
        let started = std::time::Instant::now();
        let mut x = Axis::new(in_w, &layout.x, filter);
        let y = Axis::new(in_h, &layout.y, filter);
        let rows = y.reach();
        let plan = x.coeffs.take().map(|coeffs| plan_for(coeffs, in_w));
        let kept = crate::spare::scratch(rows.len() * x.covered.len() * 3);
        Some(RowResizer {
            in_w,
            in_h,
            plan,
            x,
            y,
            first_row: rows.start,
            last_row: rows.end,
            received: 0,
            kept,
            spent: started.elapsed(),
        })
    }

    /// Takes the next `rows.len() / (3 * in_w)` source rows (RGB, `3 * in_w` bytes each).
    pub(crate) fn push(&mut self, rows: &[u8]) {
        let started = std::time::Instant::now();
        let stride = self.in_w * 3;
        let n = rows.len() / stride;
        let (from, to) = (self.received, (self.received + n).min(self.in_h));
        self.received = to;
        // The part of these rows the vertical pass reads.
        let (a, b) = (from.max(self.first_row), to.min(self.last_row));
        if a < b {
            let local = a - from..b - from;
            let kept_w = self.x.covered.len() * 3;
            let out = &mut self.kept[(a - self.first_row) * kept_w..(b - self.first_row) * kept_w];
            match &self.plan {
                Some(plan) => kernels::horizontal(rows, stride, local, plan, HALF, out),
                None if kept_w == stride => {
                    out.copy_from_slice(&rows[local.start * stride..local.end * stride]);
                }
                None => {
                    let cols = 3 * self.x.covered.start..3 * self.x.covered.end;
                    for (y, row) in local.zip(out.chunks_exact_mut(kept_w)) {
                        row.copy_from_slice(&rows[y * stride + cols.start..y * stride + cols.end]);
                    }
                }
            }
        }
        self.spent += started.elapsed();
    }

    /// The resized image, once every source row was pushed, and the time spent resampling.
    ///
    /// # Panics
    ///
    /// If fewer rows than the source's height were pushed.
    pub(crate) fn finish(self) -> (RgbImage, std::time::Duration) {
        assert_eq!(self.received, self.in_h, "rows missing");
        let started = std::time::Instant::now();
        let kept_w = self.x.covered.len() * 3;
        let data = match &self.y.coeffs {
            Some(vertical) => {
                let data = vertical_pass(&self.kept, kept_w, 0..kept_w, self.first_row, vertical);
                crate::spare::give_back(self.kept);
                data
            }
            None => self.kept,
        };
        let image = RgbImage {
            width: self.x.len as u32,
            height: self.y.len as u32,
            data: place(data, &self.x, &self.y),
        };
        (image, self.spent + started.elapsed())
    }
}

/// Resamples the byte columns `cols` of `src` (`stride` bytes per row, its first row being
/// source row `row_offset`) with `coeffs`, one output row per window.
fn vertical_pass(
    src: &[u8],
    stride: usize,
    cols: Range<usize>,
    row_offset: usize,
    coeffs: &Coefficients,
) -> Vec<u8> {
    let width = cols.len();
    let mut out = vec![0u8; coeffs.bounds.len() * width];
    let mut acc = vec![0i32; width];
    let mut rows: Vec<&[u8]> = Vec::with_capacity(coeffs.ksize);
    for (yy, out_row) in out.chunks_exact_mut(width).enumerate() {
        let (start, k) = coeffs.window(yy);
        rows.clear();
        rows.extend((0..k.len()).map(|t| {
            let at = (start + t - row_offset) * stride;
            &src[at + cols.start..at + cols.end]
        }));
        kernels::vertical_row(&rows, k, HALF, &mut acc, out_row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::Geometry;

    fn image(width: u32, height: u32, f: impl Fn(u32, u32, u32) -> u8) -> RgbImage {
        let mut data = Vec::with_capacity((width * height * 3) as usize);
        for y in 0..height {
            for x in 0..width {
                for c in 0..3 {
                    data.push(f(x, y, c));
                }
            }
        }
        RgbImage {
            width,
            height,
            data,
        }
    }

    #[test]
    fn same_size_is_a_copy() {
        let img = image(17, 9, |x, y, c| (x * 13 + y * 7 + c * 101) as u8);
        let out = resize_bilinear(&img, 17, 9);
        assert_eq!(out, img);
    }

    #[test]
    fn one_pixel_upscales_to_a_flat_image() {
        let img = image(1, 1, |_, _, c| [200, 10, 99][c as usize]);
        let out = resize_bilinear(&img, 224, 224);
        assert_eq!((out.width, out.height), (224, 224));
        assert!(out.data.chunks_exact(3).all(|p| p == [200, 10, 99]));
    }

    #[test]
    fn downscale_by_two_averages_pairs() {
        // 4 -> 2: scale 2, support 2, output 0 has center 1: taps x = 0..3 with weights
        // 1 - |x - 0.5| / 2 = 0.75, 0.75, 0.25 (0..3 minus clipping) -> normalized 3/7, 3/7, 1/7.
        let img = image(4, 1, |x, _, _| [0, 70, 140, 210][x as usize]);
        let out = resize_bilinear(&img, 2, 1);
        // (0 * 3 + 70 * 3 + 140 * 1) / 7 = 50; second: taps 1..4 weights 1/7, 3/7, 3/7 -> 160.
        assert_eq!(out.data, vec![50, 50, 50, 160, 160, 160]);
    }

    #[test]
    fn long_strip_keeps_a_vertical_gradient() {
        // 2000 x 60 -> 224 x 224: a horizontal downscale by 8.9 and a vertical upscale.
        let img = image(2000, 60, |_, y, _| (y * 4) as u8);
        let out = resize_bilinear(&img, 224, 224);
        assert_eq!(out.data.len(), 224 * 224 * 3);
        // Constant along x, so every output row is constant, and the column is non-decreasing.
        for row in out.data.chunks_exact(224 * 3) {
            assert!(row.iter().all(|&v| v == row[0]));
        }
        let column: Vec<u8> = out.data.chunks_exact(224 * 3).map(|r| r[0]).collect();
        assert!(column.windows(2).all(|w| w[0] <= w[1]), "{column:?}");
        assert_eq!((column[0], column[223]), (0, 236));
    }

    /// Every filter and geometry, as a grid of recipes, with shorter sides of `sides` pixels.
    fn recipes(sides: [u32; 2]) -> Vec<Resize> {
        let filters = [
            Filter::Nearest,
            Filter::Bilinear,
            Filter::Bicubic,
            Filter::Lanczos,
        ];
        let geometries = [
            Geometry::Squash,
            Geometry::ShorterSide(sides[0]),
            Geometry::ShorterSide(sides[1]),
            Geometry::CropPct(0.875),
        ];
        filters
            .iter()
            .flat_map(|&filter| {
                geometries
                    .iter()
                    .map(move |&geometry| Resize { filter, geometry })
            })
            .collect()
    }

    #[test]
    fn rows_fed_a_few_at_a_time_give_the_whole_resize() {
        for (in_w, in_h, out_w, out_h) in [
            (600, 512, 224, 224),
            (97, 31, 224, 224),
            (224, 300, 224, 224),
            (300, 224, 224, 224),
            (224, 224, 224, 224),
            (2000, 60, 224, 224),
            (256, 300, 224, 224),
            (341, 256, 224, 224),
        ] {
            let img = image(in_w, in_h, |x, y, c| {
                (x * 7 + y * 13 + c * 50) as u8 ^ (y as u8)
            });
            for recipe in recipes([256, 100]) {
                let whole = resize(&img, &recipe, out_w, out_h);
                let layout = recipe.layout(in_w, in_h, out_w, out_h);
                let Some(mut rows) = RowResizer::new(in_w, in_h, recipe.filter, &layout) else {
                    // Only where Pillow resamples vertically first.
                    let (rw, rh) = layout.resized();
                    let (in_w, in_h, rw, rh) =
                        (in_w as usize, in_h as usize, rw as usize, rh as usize);
                    assert!(
                        vertical_first(recipe.filter, in_w, in_h, rw, rh),
                        "{recipe:?} {in_w}x{in_h}"
                    );
                    continue;
                };
                let stride = in_w as usize * 3;
                for chunk in img.data.chunks(stride * 5) {
                    rows.push(chunk);
                }
                assert_eq!(
                    rows.finish().0,
                    whole,
                    "{recipe:?} {in_w}x{in_h} -> {out_w}x{out_h}"
                );
            }
        }
        // A tall strip shrinks its height first in Pillow: resized whole.
        let layout = Resize::SEED.layout(60, 2000, 224, 224);
        assert!(RowResizer::new(60, 2000, Filter::Bilinear, &layout).is_none());
        // NEAREST copies pixels, in either order: row by row.
        assert!(RowResizer::new(60, 2000, Filter::Nearest, &layout).is_some());
    }

    /// A crop computed on its own is the same as the whole resize cut afterwards, with
    /// torchvision's zeros where the crop is larger than the resized image.
    #[test]
    fn crops_are_the_whole_resize_cut() {
        for (in_w, in_h) in [(150, 128), (97, 31), (15, 500), (500, 15), (1, 1), (5, 3)] {
            let img = image(in_w, in_h, |x, y, c| {
                (x * 11 + y * 5 + c * 70) as u8 ^ ((x + y) as u8)
            });
            for recipe in recipes([64, 30]) {
                for (out_w, out_h) in [(56, 56), (30, 50), (75, 22)] {
                    let layout = recipe.layout(in_w, in_h, out_w, out_h);
                    let (rw, rh) = layout.resized();
                    let whole = resize(
                        &img,
                        &Resize {
                            filter: recipe.filter,
                            geometry: Geometry::Squash,
                        },
                        rw,
                        rh,
                    );
                    let crop = resize(&img, &recipe, out_w, out_h);
                    let mut expected = Vec::new();
                    for oy in 0..i64::from(out_h) {
                        for ox in 0..i64::from(out_w) {
                            let (sx, sy) = (ox + layout.x.offset, oy + layout.y.offset);
                            let inside = (0..i64::from(rw)).contains(&sx)
                                && (0..i64::from(rh)).contains(&sy);
                            let at = ((sy * i64::from(rw) + sx) * 3) as usize;
                            for c in 0..3 {
                                expected.push(if inside { whole.data[at + c] } else { 0 });
                            }
                        }
                    }
                    assert!(
                        crop.data == expected,
                        "{recipe:?} {in_w}x{in_h} -> {out_w}x{out_h} via {rw}x{rh}"
                    );
                }
            }
        }
    }

    #[test]
    fn zero_sizes_do_not_panic() {
        let img = image(0, 5, |_, _, _| 0);
        assert_eq!(resize_bilinear(&img, 3, 3).data, vec![0; 27]);
        let img = image(4, 4, |_, _, _| 9);
        assert!(resize_bilinear(&img, 0, 3).data.is_empty());
    }
}
