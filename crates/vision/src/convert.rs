//! Pixel conversions to 8-bit RGB, each the one Pillow's `convert("RGB")` applies to the mode
//! Pillow opens the file in (`src/libImaging/Convert.c` and `Unpack.c`):
//!
//! - `L` (and `1`, already 0/255): replicate. `LA`, `RGBA`: drop alpha, no compositing.
//! - `P`: palette lookup; entries past the end of a short palette are black.
//! - `I;16` (16-bit grayscale PNG or TIFF): clip to 0..=255 (not a shift: values above 255 are
//!   white, which is Pillow's behaviour). 16-bit RGB, RGBA and gray+alpha are opened with their
//!   high byte.
//! - `CMYK`: `cmyk2rgb`, `nk - c * nk / 255` with `nk = 255 - k`, in Pillow's integer rounding.

/// Maps each `N`-byte input pixel to an RGB pixel, into a buffer allocated once.
#[inline(always)]
fn map_pixels<const N: usize>(input: &[u8], f: impl Fn(&[u8; N]) -> [u8; 3]) -> Vec<u8> {
    let (pixels, _) = input.as_chunks::<N>();
    let mut out = vec![0u8; pixels.len() * 3];
    let (rgb, _) = out.as_chunks_mut::<3>();
    for (o, p) in rgb.iter_mut().zip(pixels) {
        *o = f(p);
    }
    out
}

/// `L` -> `RGB`: each gray value replicated.
pub(crate) fn gray_to_rgb(gray: &[u8]) -> Vec<u8> {
    map_pixels::<1>(gray, |&[v]| [v, v, v])
}

/// Interleaved 8-bit samples, `channels` (1 to 4) per pixel -> RGB: gray (+alpha) is
/// replicated, RGB (+alpha) copied, alpha dropped.
pub(crate) fn interleaved_to_rgb(samples: &[u8], channels: usize) -> Vec<u8> {
    match channels {
        1 => gray_to_rgb(samples),
        2 => map_pixels::<2>(samples, |&[v, _]| [v, v, v]),
        3 => samples.to_vec(),
        _ => map_pixels::<4>(samples, |&[r, g, b, _]| [r, g, b]),
    }
}

/// Pillow's `MULDIV255`: `a * b / 255` rounded, in its integer form.
fn muldiv255(a: u32, b: u32) -> u32 {
    let tmp = a * b + 128;
    ((tmp >> 8) + tmp) >> 8
}

/// `CMYK` as libjpeg returns it for an Adobe JPEG (inverted; Pillow's `CMYK;I` raw mode) ->
/// `RGB` through Pillow's `cmyk2rgb`.
pub(crate) fn inverted_cmyk_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    map_pixels::<4>(cmyk, |&[c, m, y, k]| cmyk_pixel_to_rgb([!c, !m, !y, !k]))
}

/// Plain `CMYK` -> `RGB` through Pillow's `cmyk2rgb`.
pub(crate) fn cmyk_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    map_pixels::<4>(cmyk, |&p| cmyk_pixel_to_rgb(p))
}

/// Pillow's `cmyk2rgb` for one pixel.
fn cmyk_pixel_to_rgb([c, m, y, k]: [u8; 4]) -> [u8; 3] {
    let nk = 255 - u32::from(k);
    // nk - muldiv255(x, nk) is never negative (muldiv255(x, nk) <= nk), so no clipping needed.
    let f = |x: u8| (nk - muldiv255(u32::from(x), nk)) as u8;
    [f(c), f(m), f(y)]
}

/// Big-endian 16-bit samples -> their high bytes (Pillow's `;16B` raw modes).
pub(crate) fn high_bytes_be(samples: &[u8]) -> Vec<u8> {
    samples.chunks_exact(2).map(|s| s[0]).collect()
}

/// Big-endian 16-bit grayscale (`I;16B`) -> 8-bit, clipped at 255 as Pillow's `I;16` -> `RGB`.
pub(crate) fn clip16_be(samples: &[u8]) -> Vec<u8> {
    samples
        .chunks_exact(2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]).min(255) as u8)
        .collect()
}

/// Indices -> RGB through a palette of RGB triples; indices past its end give black.
pub(crate) fn palette_to_rgb(indices: &[u8], palette: &[u8]) -> Vec<u8> {
    let mut table = [[0u8; 3]; 256];
    for (entry, rgb) in table.iter_mut().zip(palette.chunks_exact(3)) {
        entry.copy_from_slice(rgb);
    }
    map_pixels::<1>(indices, |&[i]| table[usize::from(i)])
}

/// Unpacks rows of `bits`-per-sample samples (1, 2 or 4, MSB first, each row starting on a
/// byte) into one byte per sample, without scaling.
pub(crate) fn unpack_bits(packed: &[u8], bits: u8, width: usize, height: usize) -> Vec<u8> {
    let bits = usize::from(bits);
    let row_bytes = (width * bits).div_ceil(8);
    let per_byte = 8 / bits;
    let mask = (1u16 << bits) as u8 - 1;
    if row_bytes == 0 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(width * height);
    for row in packed.chunks_exact(row_bytes).take(height) {
        out.extend(
            row.iter()
                .flat_map(|&b| (0..per_byte).map(move |i| (b >> (8 - bits * (i + 1))) & mask))
                .take(width),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmyk_matches_pillow() {
        // Pillow 13: Image.new("CMYK", ...).putdata(...).convert("RGB").
        let cmyk = [
            0, 0, 0, 0, 255, 0, 0, 0, 100, 50, 25, 10, 255, 255, 255, 255,
        ];
        assert_eq!(
            cmyk_to_rgb(&cmyk),
            vec![255, 255, 255, 0, 255, 255, 149, 197, 221, 0, 0, 0]
        );
        let inverted: Vec<u8> = cmyk.iter().map(|v| !v).collect();
        assert_eq!(inverted_cmyk_to_rgb(&inverted), cmyk_to_rgb(&cmyk));
    }

    #[test]
    fn sixteen_bit_gray_clips_like_pillow() {
        // Pillow 13: a 16-bit gray PNG of [0, 100, 255, 256, 1000, 65535] converts to RGB as
        // [0, 100, 255, 255, 255, 255].
        let be: Vec<u8> = [0u16, 100, 255, 256, 1000, 65535]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        assert_eq!(clip16_be(&be), vec![0, 100, 255, 255, 255, 255]);
        assert_eq!(high_bytes_be(&be), vec![0, 0, 0, 1, 3, 255]);
    }

    #[test]
    fn short_palette_is_padded_with_black() {
        let rgb = palette_to_rgb(&[0, 1, 3, 200], &[10, 20, 30, 40, 50, 60]);
        assert_eq!(rgb, vec![10, 20, 30, 40, 50, 60, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn alpha_is_dropped_not_composited() {
        assert_eq!(interleaved_to_rgb(&[77, 0], 2), vec![77, 77, 77]);
        assert_eq!(interleaved_to_rgb(&[77, 88, 99, 0], 4), vec![77, 88, 99]);
    }

    #[test]
    fn unpacks_low_bit_rows() {
        // 3 pixels of 2 bits per row, two rows: each row is one byte.
        assert_eq!(
            unpack_bits(&[0b00_01_10_00, 0b11_10_01_00], 2, 3, 2),
            vec![0, 1, 2, 3, 2, 1]
        );
        assert_eq!(unpack_bits(&[0b1010_0000], 1, 3, 1), vec![1, 0, 1]);
        assert_eq!(unpack_bits(&[0xAB, 0xC0], 4, 3, 1), vec![0xA, 0xB, 0xC]);
        assert!(unpack_bits(&[0xFF], 1, 0, 3).is_empty());
    }
}
