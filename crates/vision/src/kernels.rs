//! The inner loops of the resampler: a portable version, and an AVX2 version picked at run
//! time. All compute the same integer sums (only the order of exact integer additions
//! differs), so their results are identical to each other and to Pillow's.
//!
//! The AVX2 horizontal pass works on the interleaved RGB bytes directly: each output pixel's
//! taps are expanded to one weight per byte (`[k0, k0, k0, k1, k1, k1, ...]`) and zero-padded
//! to whole chunks of 24 bytes (8 pixels x 3 channels); a chunk is three 8-lane 32-bit
//! multiply-adds whose lane `j` belongs to channel `j % 3`. Reading whole chunks goes past a
//! window's end, where the weights are 0: rows too close to the end of the image are copied
//! into a padded buffer first. The compiler does not vectorise this loop by itself (it judges
//! 32-bit multiplies too dear), hence the intrinsics; the vertical pass it does vectorise.
//! For sources tens of millions of pixels wide, where expanded weights would take gigabytes,
//! the weights stay compact (one per tap) and the portable loop runs.

#![allow(unsafe_code)]

use std::ops::Range;

use crate::resize::PRECISION_BITS;

/// Bytes per chunk: 8 pixels of 3 channels, three AVX2 vectors of 32-bit lanes.
pub(crate) const LANES: usize = 24;

/// The horizontal pass's windows and weights.
#[derive(Debug)]
pub(crate) struct Horizontal {
    /// Per output pixel: the byte offset of its first tap in a row, and its number of taps.
    pub windows: Vec<(usize, usize)>,
    /// `stride` weights per output pixel, laid out as `layout` says.
    pub weights: Vec<i32>,
    /// Weights stored per output pixel.
    pub stride: usize,
    /// How the weights are laid out.
    pub layout: Layout,
}

/// The layout of [`Horizontal::weights`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// One weight per tap.
    Compact,
    /// Three copies of each tap's weight (one per byte), padded with zeros to `stride`, a
    /// multiple of `LANES`, for the AVX2 kernel.
    Expanded {
        /// Bytes from a row's start that the kernel may read: at least the row.
        row_span: usize,
    },
}

/// Pillow's `clip8`: the accumulator back to a byte.
#[inline(always)]
pub(crate) fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Horizontal pass over `rows` of `src` (`stride` bytes per row) into `out`, whose rows are
/// `3 * plan.windows.len()` bytes.
pub(crate) fn horizontal(
    src: &[u8],
    stride: usize,
    rows: Range<usize>,
    plan: &Horizontal,
    half: i32,
    out: &mut [u8],
) {
    #[cfg(target_arch = "x86_64")]
    if let Layout::Expanded { row_span } = plan.layout
        && std::arch::is_x86_feature_detected!("avx2")
    {
        // SAFETY: horizontal_avx2 only requires the CPU to support AVX2, checked just above.
        unsafe { horizontal_avx2(src, stride, rows, plan, row_span, half, out) };
        return;
    }
    horizontal_portable(src, stride, rows, plan, half, out);
}

/// Vertical pass for one output row: `out_row[i] = clip8(half + sum_t rows[t][i] * w[t])`,
/// `acc` being scratch space of the row's length.
pub(crate) fn vertical_row(
    rows: &[&[u8]],
    weights: &[i32],
    half: i32,
    acc: &mut [i32],
    out_row: &mut [u8],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: vertical_row_avx2 only requires the CPU to support AVX2, checked just above.
        unsafe { vertical_row_avx2(rows, weights, half, acc, out_row) };
        return;
    }
    vertical_row_portable(rows, weights, half, acc, out_row);
}

fn horizontal_portable(
    src: &[u8],
    stride: usize,
    rows: Range<usize>,
    plan: &Horizontal,
    half: i32,
    out: &mut [u8],
) {
    let step = match plan.layout {
        Layout::Compact => 1,
        Layout::Expanded { .. } => 3,
    };
    let out_stride = plan.windows.len() * 3;
    for (y, out_row) in rows.zip(out.chunks_exact_mut(out_stride)) {
        let row = &src[y * stride..(y + 1) * stride];
        for ((px, &(start, taps)), weights) in out_row
            .chunks_exact_mut(3)
            .zip(&plan.windows)
            .zip(plan.weights.chunks_exact(plan.stride))
        {
            let (mut r, mut g, mut b) = (half, half, half);
            for (p, &k) in row[start..start + 3 * taps]
                .chunks_exact(3)
                .zip(weights.iter().step_by(step))
            {
                r += i32::from(p[0]) * k;
                g += i32::from(p[1]) * k;
                b += i32::from(p[2]) * k;
            }
            px[0] = clip8(r);
            px[1] = clip8(g);
            px[2] = clip8(b);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn horizontal_avx2(
    src: &[u8],
    stride: usize,
    rows: Range<usize>,
    plan: &Horizontal,
    row_span: usize,
    half: i32,
    out: &mut [u8],
) {
    use std::arch::x86_64::{
        __m256i, _mm_loadl_epi64, _mm256_add_epi32, _mm256_cvtepu8_epi32, _mm256_loadu_si256,
        _mm256_mullo_epi32, _mm256_setzero_si256, _mm256_storeu_si256,
    };

    let span = plan.stride;
    let out_stride = plan.windows.len() * 3;
    let mut padded = Vec::new();
    for (y, out_row) in rows.zip(out.chunks_exact_mut(out_stride)) {
        let begin = y * stride;
        let row: &[u8] = if begin + row_span <= src.len() {
            &src[begin..begin + row_span]
        } else {
            padded.clear();
            padded.extend_from_slice(&src[begin..begin + stride]);
            padded.resize(row_span, 0);
            &padded
        };
        for ((px, &(start, _)), weights) in out_row
            .chunks_exact_mut(3)
            .zip(&plan.windows)
            .zip(plan.weights.chunks_exact(span))
        {
            let (bytes, _) = row[start..start + span].as_chunks::<LANES>();
            let (weights, _) = weights.as_chunks::<LANES>();
            let mut acc: [__m256i; 3] = [_mm256_setzero_si256(); 3];
            for (b, k) in bytes.iter().zip(weights) {
                for (i, a) in acc.iter_mut().enumerate() {
                    // SAFETY: b is 24 bytes and k 24 i32s; these unaligned loads read
                    // b[8i..8i + 8] and k[8i..8i + 8] (i < 3), inside both arrays.
                    let (p, w) = unsafe {
                        (
                            _mm_loadl_epi64(b.as_ptr().add(8 * i).cast()),
                            _mm256_loadu_si256(k.as_ptr().add(8 * i).cast()),
                        )
                    };
                    *a = _mm256_add_epi32(*a, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(p), w));
                }
            }
            let mut lanes = [0i32; LANES];
            for (i, a) in acc.iter().enumerate() {
                // SAFETY: lanes[8i..8i + 8] (i < 3) is 32 writable bytes; the store is
                // unaligned.
                unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().add(8 * i).cast(), *a) };
            }
            let mut sums = [half; 3];
            for (j, v) in lanes.iter().enumerate() {
                sums[j % 3] += v;
            }
            px[0] = clip8(sums[0]);
            px[1] = clip8(sums[1]);
            px[2] = clip8(sums[2]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn vertical_row_avx2(
    rows: &[&[u8]],
    weights: &[i32],
    half: i32,
    acc: &mut [i32],
    out_row: &mut [u8],
) {
    vertical_row_portable(rows, weights, half, acc, out_row);
}

/// Whole rows at a time, which the compiler vectorises (with AVX2 when inlined there).
#[inline(always)]
fn vertical_row_portable(
    rows: &[&[u8]],
    weights: &[i32],
    half: i32,
    acc: &mut [i32],
    out_row: &mut [u8],
) {
    acc.fill(half);
    for (row, &w) in rows.iter().zip(weights) {
        for (a, &p) in acc.iter_mut().zip(row.iter()) {
            *a += i32::from(p) * w;
        }
    }
    for (o, &a) in out_row.iter_mut().zip(acc.iter()) {
        *o = clip8(a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The portable kernel (either layout) and the AVX2 kernel agree, downscaling and
    /// upscaling, including on the last rows, which the AVX2 kernel reads through a padded
    /// copy.
    #[test]
    fn kernels_agree() {
        let mut state = 7u32;
        for (w, h, out_w) in [
            (203usize, 5usize, 37usize),
            (13, 4, 50),
            (9, 3, 2),
            (1, 2, 7),
        ] {
            let src: Vec<u8> = (0..w * h * 3)
                .map(|_| {
                    state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    (state >> 16) as u8
                })
                .collect();
            let compact = crate::resize::horizontal_plan(w, out_w, false);
            let mut portable = vec![0u8; h * out_w * 3];
            horizontal_portable(&src, w * 3, 0..h, &compact, 1 << 21, &mut portable);
            let expanded = crate::resize::horizontal_plan(w, out_w, true);
            assert!(matches!(expanded.layout, Layout::Expanded { .. }));
            for plan in [&compact, &expanded] {
                let mut dispatched = vec![0u8; h * out_w * 3];
                horizontal(&src, w * 3, 0..h, plan, 1 << 21, &mut dispatched);
                assert_eq!(portable, dispatched, "{w} -> {out_w}, {:?}", plan.layout);
            }
        }
    }
}
