//! The resampling windows and fixed-point weights of one axis, as Pillow's `precompute_coeffs`
//! and `normalize_coeffs_8bpc` (`src/libImaging/Resample.c`) compute them for its BILINEAR filter.
//!
//! Each output index `i` gets a window of input indices and weights: `scale = in / out`,
//! `filterscale = max(scale, 1)`, `support = filterscale` (the triangle's support is 1), `center =
//! (i + 0.5) * scale`, window `[trunc(center - support + 0.5) max 0, trunc(center + support + 0.5)
//! min in)`, weights `triangle((x - center + 0.5) / filterscale)` divided by their sum, then fixed
//! point: `trunc(w * 2^PRECISION_BITS + 0.5)`. All of it in `f64`, in Pillow's order of
//! operations, so that the integer weights are the same.

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
}

/// Pillow's `bilinear_filter`.
fn triangle(x: f64) -> f64 {
    let x = if x < 0.0 { -x } else { x };
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

/// Weights stored per output index (Pillow's `ksize`): `2 * ceil(support) + 1`.
pub(crate) fn coefficient_count(in_size: usize, out_size: usize) -> usize {
    let scale = f64::from(in_size as f32) / out_size as f64;
    scale.max(1.0).ceil() as usize * 2 + 1
}

/// Pillow's `precompute_coeffs` followed by `normalize_coeffs_8bpc`, for the box `[0, in_size]`.
pub(crate) fn coefficients(in_size: usize, out_size: usize) -> Coefficients {
    // Pillow receives the box edges as C floats; replicate the rounding of huge sizes too.
    let in0 = 0.0f32;
    let in1 = in_size as f32;
    let scale = f64::from(in1 - in0) / out_size as f64;
    let filterscale = if scale < 1.0 { 1.0 } else { scale };
    let support = filterscale; // the triangle filter's support is 1.0
    let ksize = coefficient_count(in_size, out_size);
    let ss = 1.0 / filterscale;

    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for (xx, out) in weights.chunks_exact_mut(ksize).enumerate() {
        let center = f64::from(in0) + (xx as f64 + 0.5) * scale;
        // `as i64` truncates toward zero like C's `(int)` cast.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
        let n = ((xmax - xmin).max(0) as usize).min(ksize);
        let xmin = xmin as usize;

        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().take(n).enumerate() {
            let w = triangle(((x + xmin) as f64 - center + 0.5) * ss);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [
            (600, 224),
            (224, 600),
            (2000, 224),
            (60, 224),
            (3, 2),
            (7, 7),
        ] {
            let c = coefficients(i, o);
            for xx in 0..o {
                let (_, k) = c.window(xx);
                let sum: i32 = k.iter().sum();
                // Each weight is rounded on its own: the sum is 2^22 within half a unit per tap.
                assert!(
                    (sum - (1 << 22)).abs() <= k.len() as i32,
                    "{i}->{o} at {xx}: {sum}"
                );
            }
        }
    }
}
