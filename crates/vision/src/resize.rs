//! Pillow's `Image.resize(size, Image.BILINEAR)` for 8-bit RGB, reproduced bit for bit.
//!
//! This follows `ImagingResampleInner` in Pillow's `src/libImaging/Resample.c`:
//!
//! - Per axis, each output index gets a window of input indices and fixed-point weights (see
//!   `coefficients`), the same integers as Pillow's.
//! - Two passes, each rounding to an 8-bit image. Usually the horizontal pass runs first, over
//!   only the rows that the vertical pass reads. Pillow 13 runs the vertical pass first when the
//!   height shrinks by more than twice as many pixels as the width (a rule found by probing
//!   Pillow 13.0, whose source is not at hand; `tests/fixtures` holds sizes on both sides of its
//!   boundary). A pass whose axis keeps its size is skipped.
//! - Each output sample is `clip8((2^21 + sum(pixel * weight)) >> 22)` in 32-bit integers.
//!
//! Integer sums are exact, so the loops (in `kernels`) are free to add in any order.

use crate::coefficients::{Coefficients, PRECISION_BITS, coefficient_count, coefficients};
use crate::kernels;
use crate::rgb_image::RgbImage;

/// Rounding term every accumulator starts from.
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Resizes an RGB image with Pillow's BILINEAR filter (a triangle filter whose support grows
/// with the downscale factor), bit-exact with Pillow's `resize((width, height), BILINEAR)`.
///
/// Asking for the image's own size returns a copy, as Pillow does. A zero-sized input gives a
/// black image; a zero-sized output gives an empty one.
///
/// # Panics
///
/// If `img.data.len()` is not `3 * width * height` (an `RgbImage` built by hand wrongly).
pub fn resize_bilinear(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (in_w, in_h) = (img.width as usize, img.height as usize);
    assert_eq!(
        img.data.len(),
        in_w * in_h * 3,
        "RgbImage data length does not match its dimensions"
    );
    let (out_w, out_h) = (width as usize, height as usize);
    if out_w == 0 || out_h == 0 {
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
            data: vec![0; out_w * out_h * 3],
        };
    }
    let need_horizontal = out_w != in_w;
    let need_vertical = out_h != in_h;
    let vert = coefficients(in_h, out_h);

    let data = if need_horizontal && need_vertical && vertical_first(in_w, in_h, out_w, out_h) {
        let tmp = vertical_pass(&img.data, in_w, 0, &vert, out_h);
        horizontal_pass(&tmp, in_w, 0..out_h, out_w)
    } else {
        // The rows of the source that the vertical pass reads.
        let first_row = vert.bounds[0].0;
        let last_row = {
            let (start, len) = vert.bounds[out_h - 1];
            start + len
        };
        let (src, src_w, row_offset) = if need_horizontal {
            let tmp = horizontal_pass(&img.data, in_w, first_row..last_row, out_w);
            (std::borrow::Cow::Owned(tmp), out_w, first_row)
        } else {
            (std::borrow::Cow::Borrowed(&img.data[..]), in_w, 0)
        };
        if need_vertical {
            vertical_pass(&src, src_w, row_offset, &vert, out_h)
        } else {
            src.into_owned()
        }
    };
    RgbImage {
        width,
        height,
        data,
    }
}

/// Whether Pillow 13 runs the vertical pass first: when the height shrinks by more
/// than twice as many pixels as the width does. The 8-bit rounding between the passes makes
/// the order visible in the result.
fn vertical_first(in_w: usize, in_h: usize, out_w: usize, out_h: usize) -> bool {
    let (in_w, in_h, out_w, out_h) = (in_w as i64, in_h as i64, out_w as i64, out_h as i64);
    out_h < in_h && in_h - out_h > 2 * (in_w - out_w)
}

/// Above this many bytes of split weights (a source tens of millions of pixels wide), the
/// horizontal pass keeps one weight per tap and the portable kernel, so that the weights stay
/// within about 8 bytes per source column.
const MAX_SPLIT_BYTES: usize = 64 << 20;

/// The horizontal plan for `src_w -> out_w`, split for the AVX2 kernel unless that would take
/// too much memory.
fn plan_for(src_w: usize, out_w: usize) -> kernels::Horizontal {
    let ksize = coefficient_count(src_w, out_w);
    let split_bytes = kernels::Horizontal::split_bytes(out_w, ksize);
    kernels::Horizontal::new(
        coefficients(src_w, out_w),
        src_w,
        split_bytes <= MAX_SPLIT_BYTES,
    )
}

/// Resamples each row in `rows` of `src` (`src_w` pixels wide) to `out_w` pixels.
fn horizontal_pass(
    src: &[u8],
    src_w: usize,
    rows: std::ops::Range<usize>,
    out_w: usize,
) -> Vec<u8> {
    let plan = plan_for(src_w, out_w);
    let mut out = vec![0u8; rows.len() * out_w * 3];
    kernels::horizontal(src, src_w * 3, rows, &plan, HALF, &mut out);
    out
}

/// [`resize_bilinear`] fed the source a few rows at a time, as a decoder produces them: each row
/// the vertical pass will read is narrowed by the horizontal pass as it arrives, so the whole
/// source never needs to be in memory (for a 4000 x 3000 photo resized to 224 x 224: 2 MB kept
/// instead of 36). The result is `resize_bilinear`'s, bit for bit. Only for the sizes where
/// Pillow runs the horizontal pass first (see [`RowResizer::new`]).
#[derive(Debug)]
pub(crate) struct RowResizer {
    in_w: usize,
    in_h: usize,
    out_w: usize,
    out_h: usize,
    /// `None` when the width stays: rows are kept as they come.
    plan: Option<kernels::Horizontal>,
    vert: Coefficients,
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
    /// A resizer from `in_w x in_h` to `out_w x out_h`, or `None` when the source must be
    /// resized whole: an empty size, or a height shrinking so much more than the width that
    /// Pillow runs the vertical pass first.
    pub(crate) fn new(in_w: u32, in_h: u32, out_w: u32, out_h: u32) -> Option<RowResizer> {
        let (in_w, in_h, out_w, out_h) =
            (in_w as usize, in_h as usize, out_w as usize, out_h as usize);
        if in_w == 0 || in_h == 0 || out_w == 0 || out_h == 0 {
            return None;
        }
        let need_horizontal = out_w != in_w;
        if need_horizontal && out_h != in_h && vertical_first(in_w, in_h, out_w, out_h) {
            return None;
        }
        let started = std::time::Instant::now();
        let vert = coefficients(in_h, out_h);
        let first_row = vert.bounds[0].0;
        let last_row = {
            let (start, len) = vert.bounds[out_h - 1];
            start + len
        };
        let kept_w = if need_horizontal { out_w } else { in_w };
        Some(RowResizer {
            in_w,
            in_h,
            out_w,
            out_h,
            plan: need_horizontal.then(|| plan_for(in_w, out_w)),
            vert,
            first_row,
            last_row,
            received: 0,
            kept: crate::spare::scratch((last_row - first_row) * kept_w * 3),
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
            let kept_w = self.kept.len() / (self.last_row - self.first_row);
            let out = &mut self.kept[(a - self.first_row) * kept_w..(b - self.first_row) * kept_w];
            match &self.plan {
                Some(plan) => kernels::horizontal(rows, stride, local, plan, HALF, out),
                None => out.copy_from_slice(&rows[local.start * stride..local.end * stride]),
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
        let kept_w = if self.plan.is_some() {
            self.out_w
        } else {
            self.in_w
        };
        let data = if self.out_h != self.in_h {
            let data = vertical_pass(&self.kept, kept_w, self.first_row, &self.vert, self.out_h);
            crate::spare::give_back(self.kept);
            data
        } else {
            self.kept
        };
        let image = RgbImage {
            width: self.out_w as u32,
            height: self.out_h as u32,
            data,
        };
        (image, self.spent + started.elapsed())
    }
}

/// Resamples the columns of `src` (`src_w` pixels wide, its first row being source row
/// `row_offset`) to `out_h` rows.
fn vertical_pass(
    src: &[u8],
    src_w: usize,
    row_offset: usize,
    coeffs: &Coefficients,
    out_h: usize,
) -> Vec<u8> {
    let stride = src_w * 3;
    let mut out = vec![0u8; out_h * stride];
    let mut acc = vec![0i32; stride];
    let mut rows: Vec<&[u8]> = Vec::with_capacity(coeffs.ksize);
    for (yy, out_row) in out.chunks_exact_mut(stride).enumerate() {
        let (start, k) = coeffs.window(yy);
        rows.clear();
        rows.extend((0..k.len()).map(|t| {
            let y = start + t - row_offset;
            &src[y * stride..(y + 1) * stride]
        }));
        kernels::vertical_row(&rows, k, HALF, &mut acc, out_row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn rows_fed_a_few_at_a_time_give_the_whole_resize() {
        for (in_w, in_h, out_w, out_h) in [
            (600, 512, 224, 224),
            (97, 31, 224, 224),
            (224, 300, 224, 224),
            (300, 224, 224, 224),
            (224, 224, 224, 224),
            (2000, 60, 224, 224),
        ] {
            let img = image(in_w, in_h, |x, y, c| {
                (x * 7 + y * 13 + c * 50) as u8 ^ (y as u8)
            });
            let whole = resize_bilinear(&img, out_w, out_h);
            let mut rows = RowResizer::new(in_w, in_h, out_w, out_h).unwrap();
            let stride = in_w as usize * 3;
            for chunk in img.data.chunks(stride * 5) {
                rows.push(chunk);
            }
            assert_eq!(rows.finish().0, whole, "{in_w}x{in_h} -> {out_w}x{out_h}");
        }
        // A tall strip shrinks its height first in Pillow: resized whole.
        assert!(RowResizer::new(60, 2000, 224, 224).is_none());
    }

    #[test]
    fn zero_sizes_do_not_panic() {
        let img = image(0, 5, |_, _, _| 0);
        assert_eq!(resize_bilinear(&img, 3, 3).data, vec![0; 27]);
        let img = image(4, 4, |_, _, _| 9);
        assert!(resize_bilinear(&img, 0, 3).data.is_empty());
    }
}
