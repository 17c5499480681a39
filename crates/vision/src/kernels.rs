//! The inner loops of the resampler: a portable version, and an AVX2 version picked at run
//! time. All compute the same integer sums (only the order of exact integer additions
//! differs), so their results are identical to each other and to Pillow's.
//!
//! The AVX2 horizontal pass multiplies 16-bit numbers (`vpmaddwd`: 16 products a
//! instruction, summed in pairs into 32 bits). A weight has up to 23 bits and a sign, so each is
//! split into `hi * 2^SPLIT + lo`, two 16-bit numbers, and the pass keeps two sums, recombined once
//! per output pixel: the same integers as `pixel * weight`, with no rounding. Taps go four at a
//! time: 16 bytes loaded from the group's first pixel are copied to both halves of a vector and
//! shuffled into 16-bit lanes `[r0 r1 g0 g1 b0 b1 0 0 | r2 r3 g2 g3 b2 b3 0 0]`, so each channel
//! keeps its own lanes and an output pixel ends with two additions per channel. Several rows go
//! through each window together, so that a window's weights (which outgrow the L1 cache on a
//! 4000-pixel-wide photo) are loaded once for all of them. Reading a whole group goes
//! past a window's end, where the weights are 0: rows too close to the end of the image are
//! copied into a padded buffer first. The compiler does not vectorise this loop by itself,
//! hence the intrinsics; the vertical pass it does vectorise. For sources tens of millions of
//! pixels wide, where split weights would take gigabytes, the weights stay compact (one per
//! tap) and the portable loop runs.

#![allow(unsafe_code)]

use std::ops::Range;

use crate::coefficients::{Coefficients, PRECISION_BITS};

/// A split weight is `hi * 2^SPLIT + lo`, `lo` in `0..2^SPLIT` and `hi` carrying the sign
/// (an arithmetic shift): both fit 16 bits for any weight of magnitude below `2^26`, sixteen
/// times Pillow's 1.0. Bicubic and lanczos weights go negative, and near an edge above 1.0.
const SPLIT: i32 = 11;
/// Taps per group of the split layout.
const TAPS: usize = 4;
/// 16-bit numbers per group of the split layout: 16 for `hi`, then 16 for `lo`.
const GROUP: usize = 32;
/// Rows resampled together by the AVX2 kernel.
const ROWS: usize = 4;

/// Where tap `t`'s `hi` (the first of two copies per channel) sits in a split window; its `lo`
/// is 16 further. Within a group of four taps, taps 0 and 1 fill the first half of the vector
/// and taps 2 and 3 the second, alternating: `[k0 k1 k0 k1 k0 k1 0 0 | k2 k3 k2 k3 k2 k3 0 0]`.
fn split_index(t: usize) -> usize {
    let j = t % TAPS;
    (t / TAPS) * GROUP + (j / 2) * 8 + j % 2
}

/// 16-bit numbers per output pixel of a split layout for windows of up to `ksize` taps.
fn split_per_pixel(ksize: usize) -> usize {
    ksize.div_ceil(TAPS) * GROUP
}

/// The horizontal pass's windows and weights.
#[derive(Debug)]
pub(crate) struct Horizontal {
    /// Per output pixel: the byte offset of its first tap in a row, and its number of taps.
    pub windows: Vec<(usize, usize)>,
    /// The weights, in one of two layouts.
    pub weights: Weights,
}

/// The weights of [`Horizontal`], per output pixel.
#[derive(Debug)]
pub(crate) enum Weights {
    /// One 32-bit weight per tap, `per_pixel` per output pixel.
    Compact { per_pixel: usize, weights: Vec<i32> },
    /// Split into two 16-bit halves laid out for the AVX2 kernel (see [`split_index`]), padded
    /// with zeros to `per_pixel` per output pixel.
    Split {
        per_pixel: usize,
        weights: Vec<i16>,
        /// Bytes from a row's start that the kernel may read: at least the row.
        row_span: usize,
    },
}

impl Weights {
    /// The weight of tap `t` of output pixel `x`.
    fn tap(&self, x: usize, t: usize) -> i32 {
        match self {
            Weights::Compact { per_pixel, weights } => weights[x * per_pixel + t],
            Weights::Split {
                per_pixel, weights, ..
            } => {
                let at = x * per_pixel + split_index(t);
                (i32::from(weights[at]) << SPLIT) + i32::from(weights[at + 16])
            }
        }
    }
}

impl Horizontal {
    /// The plan for one axis's `coeffs` over rows of `in_w` pixels: split for the AVX2 kernel
    /// when `split` is true.
    pub(crate) fn new(coeffs: Coefficients, in_w: usize, split: bool) -> Horizontal {
        let Coefficients {
            ksize,
            bounds: windows,
            weights: compact,
        } = coeffs;
        let byte_windows = windows.iter().map(|&(x, n)| (3 * x, n)).collect();
        if !split {
            return Horizontal {
                windows: byte_windows,
                weights: Weights::Compact {
                    per_pixel: ksize,
                    weights: compact,
                },
            };
        }
        let per_pixel = split_per_pixel(ksize);
        let mut weights = vec![0i16; windows.len() * per_pixel];
        for ((out, k), &(_, n)) in weights
            .chunks_exact_mut(per_pixel)
            .zip(compact.chunks_exact(ksize))
            .zip(&windows)
        {
            for (t, &w) in k[..n].iter().enumerate() {
                debug_assert!(w.abs() < 1 << (SPLIT + 15), "weight {w} does not split");
                let (hi, lo) = ((w >> SPLIT) as i16, (w & ((1 << SPLIT) - 1)) as i16);
                let at = split_index(t);
                for c in 0..3 {
                    out[at + 2 * c] = hi;
                    out[at + 2 * c + 16] = lo;
                }
            }
        }
        // The kernel reads 16 bytes from each group's first pixel.
        let row_span = split_reach(&windows).max(in_w * 3);
        Horizontal {
            windows: byte_windows,
            weights: Weights::Split {
                per_pixel,
                weights,
                row_span,
            },
        }
    }

    /// Bytes the split weights of `out_w` windows of up to `ksize` taps would take.
    pub(crate) fn split_bytes(out_w: usize, ksize: usize) -> usize {
        out_w
            .saturating_mul(split_per_pixel(ksize))
            .saturating_mul(2)
    }
}

/// The furthest byte the AVX2 kernel reads from a row's start, over `windows` (start pixel,
/// taps).
fn split_reach(windows: &[(usize, usize)]) -> usize {
    windows
        .iter()
        .map(|&(x, n)| 3 * x + 3 * TAPS * n.div_ceil(TAPS).saturating_sub(1) + 16)
        .max()
        .unwrap_or(0)
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
    if let Weights::Split {
        per_pixel,
        weights,
        row_span,
    } = &plan.weights
        && std::arch::is_x86_feature_detected!("avx2")
    {
        let split = SplitPlan {
            windows: &plan.windows,
            weights,
            per_pixel: *per_pixel,
            half,
        };
        // SAFETY: horizontal_avx2 only requires the CPU to support AVX2, checked just above.
        unsafe { horizontal_avx2(src, stride, rows, &split, *row_span, out) };
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
    let out_stride = plan.windows.len() * 3;
    for (y, out_row) in rows.zip(out.chunks_exact_mut(out_stride)) {
        let row = &src[y * stride..(y + 1) * stride];
        for (x, (px, &(start, taps))) in out_row.chunks_exact_mut(3).zip(&plan.windows).enumerate()
        {
            let (mut r, mut g, mut b) = (half, half, half);
            for (t, p) in row[start..start + 3 * taps].chunks_exact(3).enumerate() {
                let k = plan.weights.tap(x, t);
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

/// What the AVX2 kernel needs of a split plan.
#[cfg(target_arch = "x86_64")]
struct SplitPlan<'a> {
    windows: &'a [(usize, usize)],
    weights: &'a [i16],
    per_pixel: usize,
    half: i32,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn horizontal_avx2(
    src: &[u8],
    stride: usize,
    rows: Range<usize>,
    plan: &SplitPlan<'_>,
    row_span: usize,
    out: &mut [u8],
) {
    let out_stride = plan.windows.len() * 3;
    let mut padded = Vec::new();
    let mut y = rows.start;
    let mut out = out;
    while y < rows.end {
        // A block of ROWS rows whose reach lies within `src`, else one row, padded if need be.
        if y + ROWS <= rows.end && (y + ROWS - 1) * stride + row_span <= src.len() {
            let block: [&[u8]; ROWS] =
                std::array::from_fn(|i| &src[(y + i) * stride..(y + i) * stride + row_span]);
            let (done, rest) = out.split_at_mut(ROWS * out_stride);
            split_rows(block, plan, done);
            out = rest;
            y += ROWS;
            continue;
        }
        let begin = y * stride;
        let row: &[u8] = if begin + row_span <= src.len() {
            &src[begin..begin + row_span]
        } else {
            padded.clear();
            padded.extend_from_slice(&src[begin..begin + stride]);
            padded.resize(row_span, 0);
            &padded
        };
        let (done, rest) = out.split_at_mut(out_stride);
        split_rows([row], plan, done);
        out = rest;
        y += 1;
    }
}

/// The horizontal pass of `R` rows, each at least the plan's `row_span` long, into `out` (`R`
/// output rows).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn split_rows<const R: usize>(rows: [&[u8]; R], plan: &SplitPlan<'_>, out: &mut [u8]) {
    use std::arch::x86_64::{
        _mm_add_epi32, _mm_cvtsi128_si32, _mm_loadu_si128, _mm_packs_epi32, _mm_packus_epi16,
        _mm_set1_epi32, _mm_setzero_si128, _mm_srai_epi32, _mm256_add_epi32,
        _mm256_broadcastsi128_si256, _mm256_castsi256_si128, _mm256_extracti128_si256,
        _mm256_loadu_si256, _mm256_madd_epi16, _mm256_setr_epi8, _mm256_setzero_si256,
        _mm256_shuffle_epi8, _mm256_slli_epi32,
    };
    const PRECISION: i32 = PRECISION_BITS as i32;

    const Z: i8 = -128; // a shuffle index that writes a zero byte
    // Bytes 0..12 of the group (taps 0-3, RGB each), as 16-bit lanes pairing two taps per
    // channel: first half taps 0 and 1, second half taps 2 and 3.
    let spread = _mm256_setr_epi8(
        0, Z, 3, Z, 1, Z, 4, Z, 2, Z, 5, Z, Z, Z, Z, Z, //
        6, Z, 9, Z, 7, Z, 10, Z, 8, Z, 11, Z, Z, Z, Z, Z,
    );
    let half = _mm_set1_epi32(plan.half);
    let zero = _mm_setzero_si128();
    let out_stride = plan.windows.len() * 3;
    for (x, (&(start, taps), weights)) in plan
        .windows
        .iter()
        .zip(plan.weights.chunks_exact(plan.per_pixel))
        .enumerate()
    {
        let groups = taps.div_ceil(TAPS);
        let reach = 3 * TAPS * groups.saturating_sub(1) + 16;
        // Bounds the unchecked loads below: each row is at least row_span long, which covers
        // every window's reach.
        let pixels: [*const u8; R] =
            std::array::from_fn(|i| rows[i][start..start + reach].as_ptr());
        let (weights, _) = weights[..groups * GROUP].as_chunks::<GROUP>();
        let mut hi = [_mm256_setzero_si256(); R];
        let mut lo = [_mm256_setzero_si256(); R];
        for (g, k) in weights.iter().enumerate() {
            // SAFETY: k is 32 i16s, read as two unaligned 32-byte vectors.
            let (k_hi, k_lo) = unsafe {
                (
                    _mm256_loadu_si256(k.as_ptr().cast()),
                    _mm256_loadu_si256(k[16..].as_ptr().cast()),
                )
            };
            for i in 0..R {
                // SAFETY: bytes 12g .. 12g + 16 lie within `reach` of this row's window start
                // (12g + 16 <= 12 (groups - 1) + 16); the load is unaligned.
                let p = unsafe { _mm_loadu_si128(pixels[i].add(3 * TAPS * g).cast()) };
                let p = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(p), spread);
                hi[i] = _mm256_add_epi32(hi[i], _mm256_madd_epi16(p, k_hi));
                lo[i] = _mm256_add_epi32(lo[i], _mm256_madd_epi16(p, k_lo));
            }
        }
        for i in 0..R {
            // [r g b 0] = half + both halves of hi * 2^SPLIT + lo, shifted back and clamped
            // to bytes by the saturating packs (Pillow's clip8).
            let sum = _mm256_add_epi32(_mm256_slli_epi32::<SPLIT>(hi[i]), lo[i]);
            let sum = _mm_add_epi32(
                _mm_add_epi32(
                    _mm256_castsi256_si128(sum),
                    _mm256_extracti128_si256::<1>(sum),
                ),
                half,
            );
            let words = _mm_packs_epi32(_mm_srai_epi32::<PRECISION>(sum), zero);
            let bytes = _mm_cvtsi128_si32(_mm_packus_epi16(words, zero)).to_le_bytes();
            out[i * out_stride + 3 * x..i * out_stride + 3 * x + 3].copy_from_slice(&bytes[..3]);
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
    use crate::coefficients::coefficients;
    use crate::recipe::Filter;

    /// The portable kernel (either layout) and the AVX2 kernel agree, downscaling and
    /// upscaling with every filter (negative weights and weights above 1.0 included), on
    /// random, saturated and striped pixels (whose overshoot the clipping must cut as Pillow's
    /// `clip8` does), over blocks of rows and single rows, including the last rows, which the
    /// AVX2 kernel reads through a padded copy.
    #[test]
    fn kernels_agree() {
        let mut state = 7u32;
        for filter in [
            Filter::Nearest,
            Filter::Bilinear,
            Filter::Bicubic,
            Filter::Lanczos,
        ] {
            for (w, h, out_w) in [
                (203usize, 5usize, 37usize),
                (13, 4, 50),
                (9, 3, 2),
                (1, 2, 7),
                (4000, 9, 224),
                (512, 7, 224),
                (600, 11, 600),
            ] {
                for pattern in 0..3 {
                    let src: Vec<u8> = (0..w * h * 3)
                        .map(|i| {
                            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                            match pattern {
                                0 => (state >> 16) as u8,
                                1 => 255,
                                _ => [0, 255][i / 3 % 2],
                            }
                        })
                        .collect();
                    let coeffs = || coefficients(w, out_w, filter, 0..out_w);
                    let expected = reference(&src, w, h, &coeffs());
                    let compact = Horizontal::new(coeffs(), w, false);
                    let mut portable = vec![0u8; h * out_w * 3];
                    horizontal_portable(&src, w * 3, 0..h, &compact, 1 << 21, &mut portable);
                    assert_eq!(portable, expected, "{filter:?} {w} -> {out_w}");
                    let split = Horizontal::new(coeffs(), w, true);
                    assert!(matches!(split.weights, Weights::Split { .. }));
                    for plan in [&compact, &split] {
                        let mut dispatched = vec![0u8; h * out_w * 3];
                        horizontal(&src, w * 3, 0..h, plan, 1 << 21, &mut dispatched);
                        assert_eq!(portable, dispatched, "{filter:?} {w} -> {out_w}, {plan:?}");
                        let mut portable_too = vec![0u8; h * out_w * 3];
                        horizontal_portable(&src, w * 3, 0..h, plan, 1 << 21, &mut portable_too);
                        assert_eq!(portable, portable_too, "portable, {w} -> {out_w}");
                    }
                    // Rows 1.. only: blocks that start elsewhere than the first row.
                    let mut tail = vec![0u8; (h - 1) * out_w * 3];
                    horizontal(&src, w * 3, 1..h, &split, 1 << 21, &mut tail);
                    assert_eq!(&portable[out_w * 3..], &tail[..]);
                }
            }
        }
    }

    /// Pillow's horizontal pass written plainly, in 64-bit sums: `clip8` of each.
    fn reference(src: &[u8], w: usize, h: usize, coeffs: &Coefficients) -> Vec<u8> {
        let mut out = Vec::new();
        for y in 0..h {
            for x in 0..coeffs.bounds.len() {
                let (start, k) = coeffs.window(x);
                for c in 0..3 {
                    let sum: i64 = k
                        .iter()
                        .enumerate()
                        .map(|(t, &k)| i64::from(src[(y * w + start + t) * 3 + c]) * i64::from(k))
                        .sum();
                    out.push(((sum + (1 << 21)) >> 22).clamp(0, 255) as u8);
                }
            }
        }
        out
    }

    /// Bicubic and lanczos overshoot on stripes: both ends of the clipping are reached.
    #[test]
    fn stripes_overshoot_and_clip() {
        let src: Vec<u8> = (0..64 * 3).map(|i| [0, 0, 255, 255][i / 3 % 4]).collect();
        let c = coefficients(64, 150, Filter::Lanczos, 0..150);
        let sums: Vec<i64> = (0..150)
            .map(|x| {
                let (start, k) = c.window(x);
                k.iter()
                    .enumerate()
                    .map(|(t, &k)| i64::from(src[(start + t) * 3]) * i64::from(k))
                    .sum::<i64>()
            })
            .collect();
        assert!(sums.iter().any(|&s| s < 0) && sums.iter().any(|&s| s > 255 << 22));
    }
}
