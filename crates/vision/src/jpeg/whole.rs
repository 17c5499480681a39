//! The whole image through libjpeg-turbo's TurboJPEG API, as Pillow's JPEG plugin decodes it.
//!
//! Pillow opens a JPEG with libjpeg's defaults (accurate integer IDCT, fancy upsampling, no DCT
//! scaling) into mode `L`, `RGB` or `CMYK` by the number of components, and asks libjpeg for
//! CMYK data read as Adobe-inverted (`CMYK;I`), then `convert("RGB")` applies `cmyk2rgb`.
//! TurboJPEG's `tjDecompress2` with flags 0 is that same libjpeg path.

use super::markers::Header;
use crate::convert;
use crate::error::VisionError;
use crate::rgb_image::RgbImage;

/// Decodes a whole JPEG to RGB, scaled down by `divisor` (1, 2, 4 or 8) with libjpeg's DCT
/// scaling: `ceil(width / divisor) x ceil(height / divisor)` pixels. The caller has checked the
/// pixel limit on [`super::markers::scan`]'s header.
pub(crate) fn decode(bytes: &[u8], header: &Header, divisor: u32) -> Result<RgbImage, VisionError> {
    header.require_complete()?;
    let mut tj = ffi::Decompressor::new()?;
    let size = header.scaled_size(divisor.clamp(1, 8));
    let (w, h) = (size.0 as usize, size.1 as usize);
    // Pillow picks the mode from the component count alone (L, RGB, CMYK) and lets libjpeg
    // pick the color transform (YCbCr or not, YCCK or not). TurboJPEG 2.1's header call is not
    // used: it refuses sampling factors it has no name for, which libjpeg and Pillow decode.
    let rgb = match header.components {
        1 => {
            let mut gray = vec![0u8; w * h];
            tj.decompress(bytes, &mut gray, size, ffi::PixelFormat::Gray)?;
            convert::gray_to_rgb(&gray)
        }
        3 => {
            let mut rgb = crate::spare::take(w * h * 3);
            tj.decompress(bytes, &mut rgb, size, ffi::PixelFormat::Rgb)?;
            rgb
        }
        _ => {
            let mut cmyk = vec![0u8; w * h * 4];
            tj.decompress(bytes, &mut cmyk, size, ffi::PixelFormat::Cmyk)?;
            convert::inverted_cmyk_to_rgb(&cmyk)
        }
    };
    Ok(RgbImage {
        width: size.0,
        height: size.1,
        data: rgb,
    })
}

/// The few TurboJPEG calls we need, behind a safe interface.
///
/// The `turbojpeg` crate's safe `Decompressor` cannot tell a libjpeg warning (corrupt data that
/// Pillow tolerates) from a fatal error, so we call its raw bindings (`turbojpeg::raw`) for
/// `tjGetErrorCode`.
mod ffi {
    #![allow(unsafe_code)]

    use std::ffi::CStr;

    use turbojpeg::raw;

    use crate::error::VisionError;
    use crate::format::Format;

    /// The output pixel layouts we ask for.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum PixelFormat {
        /// 1 byte per pixel.
        Gray,
        /// 3 bytes per pixel.
        Rgb,
        /// 4 bytes per pixel.
        Cmyk,
    }

    impl PixelFormat {
        fn raw(self) -> (CInt, usize) {
            match self {
                PixelFormat::Gray => (raw::TJPF_TJPF_GRAY as CInt, 1),
                PixelFormat::Rgb => (raw::TJPF_TJPF_RGB as CInt, 3),
                PixelFormat::Cmyk => (raw::TJPF_TJPF_CMYK as CInt, 4),
            }
        }
    }

    type CInt = turbojpeg::libc::c_int;

    /// An owned TurboJPEG decompressor handle.
    #[derive(Debug)]
    pub(super) struct Decompressor(raw::tjhandle);

    impl Drop for Decompressor {
        fn drop(&mut self) {
            // SAFETY: self.0 came non-null from tjInitDecompress and is destroyed only here.
            unsafe {
                raw::tjDestroy(self.0);
            }
        }
    }

    impl Decompressor {
        pub(super) fn new() -> Result<Self, VisionError> {
            // SAFETY: tjInitDecompress has no preconditions; it returns NULL on failure.
            let handle = unsafe { raw::tjInitDecompress() };
            if handle.is_null() {
                return Err(VisionError::MemoryLimit {
                    format: Format::Jpeg,
                });
            }
            Ok(Decompressor(handle))
        }

        /// The message and whether it was only a warning, for the last failed call.
        fn last_error(&self) -> (String, bool) {
            // SAFETY: self.0 is a live handle; tjGetErrorStr2 returns a NUL-terminated string
            // owned by the handle or by the library, valid until the next call on the handle.
            let message = unsafe { CStr::from_ptr(raw::tjGetErrorStr2(self.0)) }
                .to_string_lossy()
                .into_owned();
            // SAFETY: self.0 is a live handle.
            let code = unsafe { raw::tjGetErrorCode(self.0) };
            (message, code == raw::TJERR_TJERR_WARNING as CInt)
        }

        /// Decodes the whole image into `out`, which must hold `width * height` pixels
        /// (smaller than the JPEG's own size for a scaled decode: TurboJPEG then picks the
        /// scaling factor that gives that size). libjpeg warnings (corrupt but decodable data)
        /// are accepted, as Pillow does.
        pub(super) fn decompress(
            &mut self,
            jpeg: &[u8],
            out: &mut [u8],
            (width, height): (u32, u32),
            format: PixelFormat,
        ) -> Result<(), VisionError> {
            let (pixel_format, bytes_per_pixel) = format.raw();
            let bad = |what| VisionError::corrupt(Format::Jpeg, what);
            let len =
                turbojpeg::libc::c_ulong::try_from(jpeg.len()).map_err(|_| bad("too long"))?;
            let rows = height as usize;
            let width = CInt::try_from(width).map_err(|_| bad("too wide"))?;
            let height = CInt::try_from(height).map_err(|_| bad("too tall"))?;
            let pitch = usize::try_from(width)
                .ok()
                .and_then(|w| w.checked_mul(bytes_per_pixel))
                .ok_or_else(|| bad("too wide"))?;
            let needed = pitch.checked_mul(rows).ok_or_else(|| bad("too large"))?;
            if out.len() < needed {
                return Err(bad("output buffer too small"));
            }
            let pitch = CInt::try_from(pitch).map_err(|_| bad("too wide"))?;
            // SAFETY: jpeg points to len readable bytes. out holds at least pitch * height
            // writable bytes (checked above); tjDecompress2 writes at most `height` rows of
            // `pitch` bytes, since it only ever scales an image down to fit width x height.
            let res = unsafe {
                raw::tjDecompress2(
                    self.0,
                    jpeg.as_ptr(),
                    len,
                    out.as_mut_ptr(),
                    width,
                    pitch,
                    height,
                    pixel_format,
                    0,
                )
            };
            if res != 0 {
                let (message, warning) = self.last_error();
                if !warning {
                    return Err(VisionError::corrupt(Format::Jpeg, message));
                }
            }
            Ok(())
        }
    }
}
