//! The inner loops of the resampler: a portable version, and an AVX2 version picked at run
//! time. All compute the same integer sums (only the order of exact integer additions
//! differs), so their results are identical to each other and to Pillow's.
//!
//! The AVX2 horizontal pass works on the interleaved RGB bytes directly, two pixels at a time:
//! 8 bytes loaded from a group's first pixel widen to one 8-lane vector `[r0 g0 b0 r1 g1 b1 x
//! x]`, multiplied by its group's expanded weights `[k0 k0 k0 k1 k1 k1 0 0]` and added into one
//! accumulator. Every group puts channel `c` in lanes `c` and `c + 3`, so the accumulator needs
//! only three additions at the end (the 24-byte chunks this replaced mixed the channels across
//! lanes and took a 24-lane scalar sum per output pixel, which was most of the work on small
//! downscales: 512 x 600 -> 224 x 224 resized about twice as fast). Reading a whole group goes
//! past a window's end, where the weights are 0: rows too close to the end of the image are
//! copied into a padded buffer first. The compiler does not vectorise this loop by itself (it judges
//! 32-bit multiplies too dear), hence the intrinsics; the vertical pass it does vectorise.
//! For sources tens of millions of pixels wide, where expanded weights would take gigabytes,
//! the weights stay compact (one per tap) and the portable loop runs.

#![allow(unsafe_code)]

use std::ops::Range;

use crate::resize::PRECISION_BITS;

/// Expanded weights per group of two pixels: `[k0 k0 k0 k1 k1 k1 0 0]`, one AVX2 vector.
pub(crate) const GROUP: usize = 8;

/// Where tap `t`'s three weights start in an expanded window.
pub(crate) fn expanded_index(t: usize) -> usize {
    (t / 2) * GROUP + (t % 2) * 3
}

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
    /// Three copies of each tap's weight (one per byte), two taps per group of `GROUP` (see
    /// [`expanded_index`]), padded with zeros to `stride`, for the AVX2 kernel.
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
    let expanded = matches!(plan.layout, Layout::Expanded { .. });
    let out_stride = plan.windows.len() * 3;
    for (y, out_row) in rows.zip(out.chunks_exact_mut(out_stride)) {
        let row = &src[y * stride..(y + 1) * stride];
        for ((px, &(start, taps)), weights) in out_row
            .chunks_exact_mut(3)
            .zip(&plan.windows)
            .zip(plan.weights.chunks_exact(plan.stride))
        {
            let (mut r, mut g, mut b) = (half, half, half);
            let tap = |t: usize| {
                if expanded {
                    weights[expanded_index(t)]
                } else {
                    weights[t]
                }
            };
            for (t, p) in row[start..start + 3 * taps].chunks_exact(3).enumerate() {
                let k = tap(t);
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
        _mm_loadl_epi64, _mm256_add_epi32, _mm256_cvtepu8_epi32, _mm256_loadu_si256,
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
        for ((px, &(start, taps)), weights) in out_row
            .chunks_exact_mut(3)
            .zip(&plan.windows)
            .zip(plan.weights.chunks_exact(span))
        {
            let groups = taps.div_ceil(2);
            // Bounds the unchecked loads below: the plan's row_span covers every window's reach.
            let reach = row[start..start + 6 * groups.saturating_sub(1) + 8].as_ptr();
            let (weights, _) = weights[..groups * GROUP].as_chunks::<GROUP>();
            let mut acc = _mm256_setzero_si256();
            for (g, k) in weights.iter().enumerate() {
                // SAFETY: byte 6g + 8 <= 6 (groups - 1) + 8, inside `reach`'s slice; k is 8
                // i32s. Both loads are unaligned.
                let (p, w) = unsafe {
                    (
                        _mm_loadl_epi64(reach.add(6 * g).cast()),
                        _mm256_loadu_si256(k.as_ptr().cast()),
                    )
                };
                acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(p), w));
            }
            let mut lanes = [0i32; GROUP];
            // SAFETY: lanes is 32 writable bytes; the store is unaligned.
            unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), acc) };
            px[0] = clip8(half + lanes[0] + lanes[3]);
            px[1] = clip8(half + lanes[1] + lanes[4]);
            px[2] = clip8(half + lanes[2] + lanes[5]);
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
            (4000, 3, 224),
            (512, 2, 224),
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
                let mut portable_too = vec![0u8; h * out_w * 3];
                horizontal_portable(&src, w * 3, 0..h, plan, 1 << 21, &mut portable_too);
                assert_eq!(portable, portable_too, "portable, {:?}", plan.layout);
            }
        }
    }
}
