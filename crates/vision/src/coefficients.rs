//! The resampling windows and fixed-point weights of one axis, as Pillow computes them for
//! `Image.resize`.
//!
//! For the convolution filters (bilinear, bicubic, lanczos) this is Pillow's `precompute_coeffs`
//! and `normalize_coeffs_8bpc` (`src/libImaging/Resample.c`). Each output index `i` gets a
//! window of input indices and weights: `scale = in / out`, `filterscale = max(scale, 1)`,
//! `support = filter_support * filterscale`, `center = (i + 0.5) * scale`, window
//! `[trunc(center - support + 0.5) max 0, trunc(center + support + 0.5) min in)`, weights
//! `filter((x - center + 0.5) / filterscale)` divided by their sum, then fixed point:
//! `trunc(w * 2^PRECISION_BITS + 0.5)`, or `- 0.5` for a negative weight. All of it in `f64`,
//! in Pillow's order of operations, so that the integer weights are the same.
//!
//! Pillow's NEAREST is not a convolution but an affine transform (`ImagingScaleAffine` in
//! `Geometry.c`): the source index of output `i` is `trunc(x)` where `x` starts at `scale / 2`
//! and grows by `scale` at each step, a running `f64` sum whose rounding decides some picks. It
//! is written here as a window of one tap of weight 1.0, which the same passes turn into an
//! exact copy of the picked pixel; an index outside the source (which the running sum never
//! reaches in practice) gets no tap, a black pixel, as Pillow leaves it.
//!
//! Only the output indices inside a crop are computed: each index's window depends on the index
//! alone (and, for NEAREST, on the running sum before it).

use std::ops::Range;

use crate::recipe::Filter;

/// Fixed-point precision of the weights, Pillow's `PRECISION_BITS`.
pub(crate) const PRECISION_BITS: u32 = 32 - 8 - 2;

/// The resampling windows and fixed-point weights of one axis.
#[derive(Debug)]
pub(crate) struct Coefficients {
    /// Weights stored per output index (Pillow's `ksize`).
    pub ksize: usize,
    /// Per output index: first input index and number of inputs.
    pub bounds: Vec<(usize, usize)>,
    /// `ksize` weights per output index, the unused tail zero.
    pub weights: Vec<i32>,
}

impl Coefficients {
    /// The window and weights of output index `i`.
    pub(crate) fn window(&self, i: usize) -> (usize, &[i32]) {
        let (start, len) = self.bounds[i];
        (start, &self.weights[i * self.ksize..i * self.ksize + len])
    }

    /// The input indices the windows read, `first..last` (empty when there is no window).
    pub(crate) fn reach(&self) -> Range<usize> {
        let taps = || self.bounds.iter().filter(|&&(_, n)| n > 0);
        let first = taps().map(|&(s, _)| s).min().unwrap_or(0);
        let last = taps().map(|&(s, n)| s + n).max().unwrap_or(0);
        first..last.max(first)
    }

    /// The same windows over an input that starts at input index `by`.
    pub(crate) fn shift(&mut self, by: usize) {
        for (start, n) in &mut self.bounds {
            if *n > 0 {
                *start -= by;
            } else {
                *start = 0;
            }
        }
    }
}

/// Pillow's `bilinear_filter`.
fn triangle(x: f64) -> f64 {
    let x = if x < 0.0 { -x } else { x };
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

/// Pillow's `bicubic_filter`: the cubic convolution kernel with `a = -0.5`.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = if x < 0.0 { -x } else { x };
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Pillow's `sinc_filter`.
fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        return 1.0;
    }
    let x = x * std::f64::consts::PI;
    x.sin() / x
}

/// Pillow's `lanczos_filter`: a sinc windowed by a sinc three times wider.
fn lanczos(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// A convolution filter: Pillow's `struct filter`.
struct Kernel {
    /// The filter's function.
    f: fn(f64) -> f64,
    /// Where the function ends: it is 0 beyond `-support..support`.
    support: f64,
}

/// A convolution filter's function and support; `None` for NEAREST.
fn kernel(filter: Filter) -> Option<Kernel> {
    let (f, support): (fn(f64) -> f64, f64) = match filter {
        Filter::Nearest => return None,
        Filter::Bilinear => (triangle, 1.0),
        Filter::Bicubic => (bicubic, 2.0),
        Filter::Lanczos => (lanczos, 3.0),
    };
    Some(Kernel { f, support })
}

/// Pillow's scale of an axis: the box edges arrive as C floats, so huge sizes round as there.
fn scale(in_size: usize, out_size: usize) -> f64 {
    f64::from(in_size as f32 - 0.0f32) / out_size as f64
}

/// The windows and weights that resample `in_size` to `out_size` with `filter`, for the output
/// indices in `covered` only (window 0 being `covered.start`'s).
pub(crate) fn coefficients(
    in_size: usize,
    out_size: usize,
    filter: Filter,
    covered: Range<usize>,
) -> Coefficients {
    match kernel(filter) {
        Some(kernel) => convolution(in_size, out_size, &kernel, covered),
        None => nearest(in_size, out_size, covered),
    }
}

/// Pillow's `precompute_coeffs` followed by `normalize_coeffs_8bpc`, for the box `[0, in_size]`.
fn convolution(
    in_size: usize,
    out_size: usize,
    kernel: &Kernel,
    covered: Range<usize>,
) -> Coefficients {
    let scale = scale(in_size, out_size);
    let filterscale = if scale < 1.0 { 1.0 } else { scale };
    let support = kernel.support * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let ss = 1.0 / filterscale;

    let mut bounds = Vec::with_capacity(covered.len());
    let mut weights = vec![0i32; covered.len() * ksize];
    let mut k = vec![0f64; ksize];
    for (xx, out) in covered.zip(weights.chunks_exact_mut(ksize)) {
        let center = (xx as f64 + 0.5) * scale;
        // `as i64` truncates toward zero like C's `(int)` cast.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
        let n = ((xmax - xmin).max(0) as usize).min(ksize);
        let xmin = xmin as usize;

        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().take(n).enumerate() {
            let w = (kernel.f)(((x + xmin) as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for (kx, o) in k.iter_mut().zip(out.iter_mut()).take(n) {
            if ww != 0.0 {
                *kx /= ww;
            }
            let fixed = *kx * f64::from(1u32 << PRECISION_BITS);
            *o = if *kx < 0.0 {
                (-0.5 + fixed) as i32
            } else {
                (0.5 + fixed) as i32
            };
        }
        bounds.push((xmin, n));
    }
    Coefficients {
        ksize,
        bounds,
        weights,
    }
}

/// Pillow's NEAREST picks (`ImagingScaleAffine`), as one-tap windows of weight 1.0.
fn nearest(in_size: usize, out_size: usize, covered: Range<usize>) -> Coefficients {
    let step = scale(in_size, out_size);
    let mut bounds = Vec::with_capacity(covered.len());
    // The running sum, as Pillow adds it from output index 0.
    let mut x = step * 0.5;
    for xx in 0..covered.end {
        if xx >= covered.start {
            // Pillow's COORD: -1 below zero, else truncated; outside the source, no tap.
            let picked = if x < 0.0 { None } else { Some(x as usize) };
            bounds.push(match picked {
                Some(i) if i < in_size => (i, 1),
                _ => (0, 0),
            });
        }
        x += step;
    }
    let weights = bounds
        .iter()
        .map(|&(_, n)| if n == 1 { 1 << PRECISION_BITS } else { 0 })
        .collect();
    Coefficients {
        ksize: 1,
        bounds,
        weights,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for filter in [Filter::Bilinear, Filter::Bicubic, Filter::Lanczos] {
            for (i, o) in [
                (600, 224),
                (224, 600),
                (2000, 224),
                (60, 224),
                (3, 2),
                (7, 7),
            ] {
                let c = coefficients(i, o, filter, 0..o);
                for xx in 0..o {
                    let (_, k) = c.window(xx);
                    let sum: i32 = k.iter().sum();
                    // Each weight is rounded on its own: the sum is 2^22 within half a unit per
                    // tap.
                    assert!(
                        (sum - (1 << 22)).abs() <= k.len() as i32,
                        "{filter:?} {i}->{o} at {xx}: {sum}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_covered_range_is_a_slice_of_the_whole() {
        for filter in [
            Filter::Nearest,
            Filter::Bilinear,
            Filter::Bicubic,
            Filter::Lanczos,
        ] {
            let whole = coefficients(4000, 341, filter, 0..341);
            let part = coefficients(4000, 341, filter, 58..282);
            assert_eq!(part.bounds[..], whole.bounds[58..282], "{filter:?}");
            for i in 0..224 {
                assert_eq!(part.window(i), whole.window(58 + i), "{filter:?} {i}");
            }
        }
    }

    #[test]
    fn bicubic_and_lanczos_weights_go_negative_and_above_one() {
        // Upscaling near an edge: the window loses a negative tap, and the others, divided by a
        // sum under 1, exceed 1.0.
        for filter in [Filter::Bicubic, Filter::Lanczos] {
            let c = coefficients(5, 40, filter, 0..40);
            let all: Vec<i32> = (0..40).flat_map(|i| c.window(i).1.to_vec()).collect();
            assert!(all.iter().any(|&w| w < 0), "{filter:?}");
            assert!(all.iter().any(|&w| w > 1 << 22), "{filter:?}");
        }
    }

    #[test]
    fn nearest_picks_by_a_running_sum() {
        // 3 -> 7: step 3/7, picks trunc(3/14 + i * 3/7).
        let c = coefficients(3, 7, Filter::Nearest, 0..7);
        let picks: Vec<usize> = c.bounds.iter().map(|&(s, _)| s).collect();
        assert_eq!(picks, [0, 0, 1, 1, 1, 2, 2]);
        assert!(c.bounds.iter().all(|&(_, n)| n == 1));
        assert!(c.weights.iter().all(|&w| w == 1 << 22));
        // Downscaling 10 -> 4: 1.25, 3.75, 6.25, 8.75.
        let c = coefficients(10, 4, Filter::Nearest, 1..3);
        assert_eq!(c.bounds, [(3, 1), (6, 1)]);
    }
}
