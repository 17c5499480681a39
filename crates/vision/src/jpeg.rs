//! JPEG through libjpeg-turbo's TurboJPEG API, as Pillow's JPEG plugin decodes it.
//!
//! Pillow opens a JPEG with libjpeg's defaults (accurate integer IDCT, fancy upsampling, no DCT
//! scaling) into mode `L`, `RGB` or `CMYK` by the number of components, and asks libjpeg for
//! CMYK data read as Adobe-inverted (`CMYK;I`), then `convert("RGB")` applies `cmyk2rgb`.
//! TurboJPEG's `tjDecompress2` with flags 0 is that same libjpeg path.
//!
//! Before decoding, [`scan`] walks the marker segments (not the pixel data): it finds the frame
//! header (size, precision, component count) for the pixel limit, and checks that the stream
//! reaches its EOI marker. Pillow raises "image file is truncated" whenever the data ends before
//! EOI, and tolerates libjpeg's corrupt-data warnings when it does not; we do the same: a
//! TurboJPEG warning is accepted, a fatal error is not.

use crate::{Format, RgbImage, VisionError, convert};

/// What the marker walk learned about a JPEG stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// Width from the first frame header.
    pub width: u32,
    /// Height from the first frame header.
    pub height: u32,
    /// Bits per sample.
    precision: u8,
    /// Number of components.
    components: u8,
    /// The frame marker (0xC0..=0xCF).
    marker: u8,
    /// Whether the walk reached an EOI marker (always false in header-only mode).
    complete: bool,
}

/// Walks the JPEG marker structure. With `to_end` false, stops at the first frame header.
pub(crate) fn scan(bytes: &[u8], to_end: bool) -> Result<Header, VisionError> {
    const F: Format = Format::Jpeg;
    let truncated = || VisionError::Truncated { format: F };
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return Err(VisionError::corrupt(
            F,
            "it does not start with an SOI marker",
        ));
    }
    let mut frame: Option<Header> = None;
    let mut pos = 2;
    loop {
        // Like libjpeg's next_marker: skip stray bytes, then 0xFF fill bytes.
        while pos < bytes.len() && bytes[pos] != 0xFF {
            pos += 1;
        }
        while pos < bytes.len() && bytes[pos] == 0xFF {
            pos += 1;
        }
        let Some(&marker) = bytes.get(pos) else {
            return Err(truncated());
        };
        pos += 1;
        match marker {
            0xD9 => {
                let mut header = frame.ok_or_else(|| {
                    VisionError::corrupt(F, "it ends before any frame header (SOF)")
                })?;
                header.complete = true;
                return Ok(header);
            }
            // Standalone markers: no length field.
            0x00 | 0x01 | 0xD0..=0xD8 => continue,
            _ => {}
        }
        let len_bytes = bytes.get(pos..pos + 2).ok_or_else(truncated)?;
        let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
        if len < 2 {
            return Err(VisionError::corrupt(
                F,
                format!("marker 0x{marker:02X} has a bad length"),
            ));
        }
        let segment = bytes.get(pos + 2..pos + len).ok_or_else(truncated)?;
        pos += len;
        let is_frame = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_frame && frame.is_none() {
            if segment.len() < 6 {
                return Err(VisionError::corrupt(F, "its frame header is too short"));
            }
            let header = Header {
                precision: segment[0],
                height: u32::from(u16::from_be_bytes([segment[1], segment[2]])),
                width: u32::from(u16::from_be_bytes([segment[3], segment[4]])),
                components: segment[5],
                marker,
                complete: false,
            };
            check_supported(&header)?;
            if !to_end {
                return Ok(header);
            }
            frame = Some(header);
        }
        if marker == 0xDA {
            // Entropy-coded data: runs until a 0xFF that is not stuffing (0xFF00) or a restart.
            loop {
                let ff = bytes[pos..]
                    .iter()
                    .position(|&b| b == 0xFF)
                    .ok_or_else(truncated)?;
                pos += ff;
                match bytes.get(pos + 1) {
                    None => return Err(truncated()),
                    Some(0x00 | 0xD0..=0xD7) => pos += 2,
                    Some(0xFF) => pos += 1,
                    Some(_) => break,
                }
            }
        }
    }
}

/// Refuses what Pillow's JPEG plugin or libjpeg-turbo 2.1 cannot open.
fn check_supported(h: &Header) -> Result<(), VisionError> {
    let unsupported = |detail: String| Err(VisionError::unsupported(Format::Jpeg, detail));
    if matches!(h.marker, 0xC3 | 0xC5..=0xC7 | 0xCB | 0xCD..=0xCF) {
        return unsupported(format!(
            "lossless or hierarchical JPEG (marker 0x{:02X}) is not supported",
            h.marker
        ));
    }
    if h.precision != 8 {
        return unsupported(format!("{}-bit JPEG is not supported", h.precision));
    }
    if !matches!(h.components, 1 | 3 | 4) {
        return unsupported(format!(
            "JPEG with {} components is not supported",
            h.components
        ));
    }
    if h.width == 0 || h.height == 0 {
        return Err(VisionError::corrupt(
            Format::Jpeg,
            format!(
                "its frame header declares {} x {} pixels",
                h.width, h.height
            ),
        ));
    }
    Ok(())
}

/// Decodes a whole JPEG to RGB, scaled down by `divisor` (1, 2, 4 or 8) with libjpeg's DCT
/// scaling: `ceil(width / divisor) x ceil(height / divisor)` pixels. The caller has checked the
/// pixel limit on [`scan`]'s header.
pub(crate) fn decode(bytes: &[u8], header: &Header, divisor: u32) -> Result<RgbImage, VisionError> {
    if !header.complete {
        return Err(VisionError::Truncated {
            format: Format::Jpeg,
        });
    }
    let mut tj = ffi::Decompressor::new()?;
    let divisor = divisor.clamp(1, 8);
    let (width, height) = (
        header.width.div_ceil(divisor),
        header.height.div_ceil(divisor),
    );
    let header = &Header {
        width,
        height,
        ..*header
    };
    let (w, h) = (width as usize, height as usize);
    // Pillow picks the mode from the component count alone (L, RGB, CMYK) and lets libjpeg
    // pick the color transform (YCbCr or not, YCCK or not). TurboJPEG 2.1's header call is not
    // used: it refuses sampling factors it has no name for, which libjpeg and Pillow decode.
    let rgb = match header.components {
        1 => {
            let mut gray = vec![0u8; w * h];
            tj.decompress(bytes, &mut gray, header, ffi::PixelFormat::Gray)?;
            convert::gray_to_rgb(&gray)
        }
        3 => {
            let mut rgb = crate::spare::take(w * h * 3);
            tj.decompress(bytes, &mut rgb, header, ffi::PixelFormat::Rgb)?;
            rgb
        }
        _ => {
            let mut cmyk = vec![0u8; w * h * 4];
            tj.decompress(bytes, &mut cmyk, header, ffi::PixelFormat::Cmyk)?;
            convert::inverted_cmyk_to_rgb(&cmyk)
        }
    };
    Ok(RgbImage {
        width: header.width,
        height: header.height,
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

    use crate::{Format, VisionError};

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

        /// Decodes the whole image into `out`, which must hold `width * height` pixels of
        /// `header` (smaller than the JPEG's own size for a scaled decode: TurboJPEG then picks
        /// the scaling factor that gives that size). libjpeg warnings (corrupt but decodable
        /// data) are accepted, as Pillow does.
        pub(super) fn decompress(
            &mut self,
            jpeg: &[u8],
            out: &mut [u8],
            header: &super::Header,
            format: PixelFormat,
        ) -> Result<(), VisionError> {
            let (pixel_format, bytes_per_pixel) = format.raw();
            let bad = |what| VisionError::corrupt(Format::Jpeg, what);
            let len =
                turbojpeg::libc::c_ulong::try_from(jpeg.len()).map_err(|_| bad("too long"))?;
            let width = CInt::try_from(header.width).map_err(|_| bad("too wide"))?;
            let height = CInt::try_from(header.height).map_err(|_| bad("too tall"))?;
            let pitch = usize::try_from(width)
                .ok()
                .and_then(|w| w.checked_mul(bytes_per_pixel))
                .ok_or_else(|| bad("too wide"))?;
            let needed = pitch
                .checked_mul(header.height as usize)
                .ok_or_else(|| bad("too large"))?;
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
