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

use crate::resize::RowResizer;
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
        pos = memchr::memchr(0xFF, &bytes[pos..]).map_or(bytes.len(), |ff| pos + ff);
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
                let ff = memchr::memchr(0xFF, &bytes[pos..]).ok_or_else(truncated)?;
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

/// Decodes an RGB JPEG (3 components) scaled down by `divisor` and resizes it to `out_w x
/// out_h` as it is decoded, a few rows at a time, without holding the whole decoded image: the
/// result of [`decode`] then [`crate::resize_bilinear`], bit for bit, and the time spent
/// resizing. `None` when the image must be decoded whole: not 3 components, or a size Pillow
/// resizes vertically first.
pub(crate) fn decode_resized(
    bytes: &[u8],
    header: &Header,
    divisor: u32,
    out_w: u32,
    out_h: u32,
) -> Result<Option<(RgbImage, std::time::Duration)>, VisionError> {
    if !header.complete {
        return Err(VisionError::Truncated {
            format: Format::Jpeg,
        });
    }
    let divisor = divisor.clamp(1, 8);
    let (width, height) = (
        header.width.div_ceil(divisor),
        header.height.div_ceil(divisor),
    );
    if header.components != 3 {
        return Ok(None);
    }
    // Arbiter's Huffman decoder (the same coefficients, sooner); when it gives up on corrupt or
    // cut data, libjpeg's own decodes the image again from the start, with its own rules for it.
    let (size, out) = ((width, height), (out_w, out_h));
    let mut banded = resize_while_decoding(bytes, divisor, size, out, rows::Huffman::Arbiter)?;
    if let Banded::GaveUp = banded {
        banded = resize_while_decoding(bytes, divisor, size, out, rows::Huffman::Libjpeg)?;
    }
    match banded {
        Banded::Done(image, resizing) => Ok(Some((image, resizing))),
        // (libjpeg's own decoder does not give up.)
        Banded::Whole | Banded::GaveUp => Ok(None),
    }
}

/// How [`resize_while_decoding`] ended, short of an error.
enum Banded {
    /// The resized image and the time spent resizing.
    Done(RgbImage, std::time::Duration),
    /// A size Pillow resizes vertically first: the image must be decoded whole.
    Whole,
    /// Arbiter's Huffman decoder met data it leaves to libjpeg's.
    GaveUp,
}

/// [`decode_resized`]'s work with the given Huffman decoder, for a `width x height` decoding.
fn resize_while_decoding(
    bytes: &[u8],
    divisor: u32,
    (width, height): (u32, u32),
    (out_w, out_h): (u32, u32),
    huffman: rows::Huffman,
) -> Result<Banded, VisionError> {
    let Some(mut resizer) = RowResizer::new(width, height, out_w, out_h) else {
        return Ok(Banded::Whole);
    };
    let mut rows = rows::Decoder::start(bytes, divisor, huffman)?;
    if rows.size() != (width, height) {
        return Err(VisionError::corrupt(
            Format::Jpeg,
            format!(
                "it decodes to {:?} pixels, not the {width} x {height} its header implies",
                rows.size()
            ),
        ));
    }
    // A band of rows at a time: small enough to stay in the CPU's cache.
    const BAND: usize = 16;
    let stride = width as usize * 3;
    let mut band = crate::spare::scratch(BAND * stride);
    let mut done = 0;
    while done < height as usize {
        let n = match rows.read(&mut band, BAND)? {
            Some(n) => n,
            None => return Ok(Banded::GaveUp),
        };
        if n == 0 {
            return Err(VisionError::corrupt(
                Format::Jpeg,
                "libjpeg stopped before the last row",
            ));
        }
        resizer.push(&band[..n * stride]);
        done += n;
    }
    rows.finish()?;
    crate::spare::give_back(band);
    let (image, resizing) = resizer.finish();
    Ok(Banded::Done(image, resizing))
}

/// Row-by-row decoding through libjpeg's scanline API (`jpeg_rows.c`, built by `build.rs`), for
/// [`decode_resized`].
mod rows {
    #![allow(unsafe_code)]

    use std::ffi::{CStr, c_char, c_int, c_uint, c_ulong};

    use crate::{Format, VisionError};

    #[repr(C)]
    struct Handle {
        _opaque: [u8; 0],
    }

    unsafe extern "C" {
        fn arbiter_jpeg_new() -> *mut Handle;
        fn arbiter_jpeg_free(h: *mut Handle);
        fn arbiter_jpeg_message(h: *const Handle) -> *const c_char;
        fn arbiter_jpeg_start(
            h: *mut Handle,
            data: *const u8,
            len: c_ulong,
            denom: c_uint,
            fast: c_int,
            width: *mut c_uint,
            height: *mut c_uint,
        ) -> c_int;
        fn arbiter_jpeg_read(
            h: *mut Handle,
            out: *mut u8,
            stride: c_ulong,
            max_rows: c_int,
        ) -> c_int;
        fn arbiter_jpeg_finish(h: *mut Handle) -> c_int;
        #[cfg(test)]
        fn arbiter_jpeg_fast_huffman(h: *const Handle) -> c_int;
    }

    /// Whose Huffman decoder reads the coefficients.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Huffman {
        /// `jpeg_rows.c`'s, for a baseline scan (libjpeg's for any other).
        Arbiter,
        /// libjpeg's own.
        Libjpeg,
    }

    /// A decoding in progress; it borrows the JPEG bytes, which libjpeg reads as it goes.
    pub(super) struct Decoder<'a> {
        handle: *mut Handle,
        width: u32,
        height: u32,
        _bytes: std::marker::PhantomData<&'a [u8]>,
    }

    impl Drop for Decoder<'_> {
        fn drop(&mut self) {
            // SAFETY: the handle came from arbiter_jpeg_new and is freed once, here.
            unsafe { arbiter_jpeg_free(self.handle) }
        }
    }

    impl<'a> Decoder<'a> {
        /// Reads the header and starts decoding `bytes` to RGB at 1/`denom` scale.
        pub(super) fn start(
            bytes: &'a [u8],
            denom: u32,
            huffman: Huffman,
        ) -> Result<Decoder<'a>, VisionError> {
            // SAFETY: no preconditions; NULL when out of memory.
            let handle = unsafe { arbiter_jpeg_new() };
            if handle.is_null() {
                return Err(VisionError::MemoryLimit {
                    format: Format::Jpeg,
                });
            }
            let mut d = Decoder {
                handle,
                width: 0,
                height: 0,
                _bytes: std::marker::PhantomData,
            };
            let len = c_ulong::try_from(bytes.len())
                .map_err(|_| VisionError::corrupt(Format::Jpeg, "too long"))?;
            let (mut w, mut h) = (0, 0);
            let fast = c_int::from(huffman == Huffman::Arbiter);
            // SAFETY: the handle is live; `bytes` outlives the decoder (its lifetime 'a), and
            // libjpeg only reads them; w and h are valid for writes.
            let rc = unsafe {
                arbiter_jpeg_start(handle, bytes.as_ptr(), len, denom, fast, &mut w, &mut h)
            };
            d.check(rc)?;
            (d.width, d.height) = (w, h);
            Ok(d)
        }

        /// Whose Huffman decoder reads the scan.
        #[cfg(test)]
        pub(super) fn huffman(&self) -> Huffman {
            // SAFETY: the handle is live.
            match unsafe { arbiter_jpeg_fast_huffman(self.handle) } {
                0 => Huffman::Libjpeg,
                _ => Huffman::Arbiter,
            }
        }

        /// The decoded size.
        pub(super) fn size(&self) -> (u32, u32) {
            (self.width, self.height)
        }

        /// Decodes up to `max_rows` rows into `out` (rows of `3 * width` bytes); returns how many,
        /// or `None` if Arbiter's Huffman decoder gave up (this decoder is then done with).
        pub(super) fn read(
            &mut self,
            out: &mut [u8],
            max_rows: usize,
        ) -> Result<Option<usize>, VisionError> {
            let stride = self.width as usize * 3;
            let max_rows = max_rows.min(out.len() / stride.max(1));
            let rows = c_int::try_from(max_rows).unwrap_or(c_int::MAX);
            // SAFETY: the handle is live and started; `out` holds at least `rows` rows of
            // `stride` bytes (checked above), and libjpeg writes `stride` bytes per row.
            let rc = unsafe {
                arbiter_jpeg_read(self.handle, out.as_mut_ptr(), stride as c_ulong, rows)
            };
            if rc == -2 {
                return Ok(None);
            }
            self.check(rc)?;
            Ok(Some(usize::try_from(rc).unwrap_or(0)))
        }

        /// Finishes the decoding (libjpeg reads to the end of the image).
        pub(super) fn finish(self) -> Result<(), VisionError> {
            // SAFETY: the handle is live.
            let rc = unsafe { arbiter_jpeg_finish(self.handle) };
            self.check(rc)
        }

        fn check(&self, rc: c_int) -> Result<(), VisionError> {
            if rc >= 0 {
                return Ok(());
            }
            // SAFETY: the handle is live; the message is a NUL-terminated buffer inside it.
            let message = unsafe { CStr::from_ptr(arbiter_jpeg_message(self.handle)) };
            Err(VisionError::corrupt(
                Format::Jpeg,
                message.to_string_lossy().into_owned(),
            ))
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// RGB photos take the row-by-row path (not the whole decode), with the whole path's pixels,
    /// at full and reduced scale.
    #[test]
    fn rgb_photos_are_resized_while_decoding() {
        let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../var/photos"));
        // (grace_hopper.jpg at 1/2, 256 x 300, shrinks its height first in Pillow: decoded whole.)
        for (name, divisors) in [("big_12mp.jpg", &[1, 2, 4][..]), ("grace_hopper.jpg", &[1])] {
            let bytes = std::fs::read(root.join(name)).expect("run scripts/setup");
            let header = scan(&bytes, true).unwrap();
            for &divisor in divisors {
                let (rows, _) = decode_resized(&bytes, &header, divisor, 224, 224)
                    .unwrap()
                    .unwrap_or_else(|| panic!("{name} / {divisor} {header:?}: not row by row"));
                let whole = decode(&bytes, &header, divisor).unwrap();
                assert_eq!(
                    rows,
                    crate::resize_bilinear(&whole, 224, 224),
                    "{name} / {divisor}"
                );
            }
        }
    }

    /// What decoding `bytes` at 1/`divisor` and resizing it to `size` gives with one Huffman
    /// decoder: the image, an error's kind, or that Arbiter's gave up.
    fn banded(
        bytes: &[u8],
        divisor: u32,
        out: (u32, u32),
        huffman: rows::Huffman,
    ) -> Result<Option<RgbImage>, String> {
        let header = scan(bytes, true).map_err(|e| format!("{:?}", e.kind()))?;
        let size = (
            header.width.div_ceil(divisor),
            header.height.div_ceil(divisor),
        );
        match resize_while_decoding(bytes, divisor, size, out, huffman) {
            Ok(Banded::Done(image, _)) => Ok(Some(image)),
            Ok(Banded::Whole) => Err("decoded whole".into()),
            Ok(Banded::GaveUp) => Ok(None),
            Err(e) => Err(format!("{:?}", e.kind())),
        }
    }

    /// A reproducible stream of pseudo-random numbers (xorshift64) from a non-zero seed.
    fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }

    /// JPEGs written by libjpeg-turbo: every chroma subsampling with three components, qualities
    /// from coarse to lossless-looking (long codes, big values), sizes with partial MCUs, noise
    /// and smooth areas (long zero runs, ZRL), and a file where 0xFF bytes are stuffed often.
    fn encoded_corpus() -> Vec<(String, Vec<u8>)> {
        use turbojpeg::{Compressor, Image, PixelFormat, Subsamp};
        let mut noise = xorshift(0x2545_f491_4f6c_dd1d);
        let mut out = Vec::new();
        for (w, h) in [(1, 1), (7, 5), (17, 33), (250, 130), (301, 227)] {
            let mut pixels = vec![0u8; w * h * 3];
            for (i, p) in pixels.iter_mut().enumerate() {
                let (x, y) = ((i / 3) % w, i / 3 / w);
                // Left half noise, right half a smooth gradient.
                *p = if x < w / 2 {
                    noise() as u8
                } else {
                    ((x * 3 + y * 5 + i % 3 * 40) % 256) as u8
                };
            }
            for subsamp in [
                Subsamp::None,
                Subsamp::Sub2x1,
                Subsamp::Sub2x2,
                Subsamp::Sub1x2,
                Subsamp::Sub4x1,
            ] {
                for quality in [20, 75, 95, 100] {
                    let mut c = Compressor::new().unwrap();
                    c.set_quality(quality);
                    c.set_subsamp(subsamp);
                    let image = Image {
                        pixels: &pixels[..],
                        width: w,
                        pitch: w * 3,
                        height: h,
                        format: PixelFormat::RGB,
                    };
                    let jpeg = c.compress_to_vec(image).unwrap();
                    out.push((format!("{w}x{h} {subsamp:?} q{quality}"), jpeg));
                }
            }
        }
        out
    }

    /// Arbiter's Huffman decoder reads every baseline JPEG (and only those), and the pixels are
    /// libjpeg's own decoder's, bit for bit, at every scale.
    #[test]
    fn huffman_decoders_agree() {
        let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../var/photos"));
        let mut corpus = encoded_corpus();
        // (big_12mp.jpg: rgb_photos_are_resized_while_decoding, against TurboJPEG's whole decode,
        // which is libjpeg's own Huffman decoder too.)
        for name in [
            "grace_hopper.jpg",
            "grace_hopper_exif6.jpg",
            "rocket.jpg",
            "chelsea_444.jpg",
            "grace_hopper_progressive.jpg",
        ] {
            corpus.push((
                name.into(),
                std::fs::read(root.join(name)).expect("run scripts/setup"),
            ));
        }
        let mut compared = 0;
        for (name, bytes) in &corpus {
            let progressive = name.contains("progressive");
            let d = rows::Decoder::start(bytes, 1, rows::Huffman::Arbiter).unwrap();
            let expected = if progressive {
                rows::Huffman::Libjpeg
            } else {
                rows::Huffman::Arbiter
            };
            assert_eq!(d.huffman(), expected, "{name}");
            drop(d);
            for divisor in [1, 2, 4, 8] {
                let ours = banded(bytes, divisor, (224, 224), rows::Huffman::Arbiter);
                let theirs = banded(bytes, divisor, (224, 224), rows::Huffman::Libjpeg);
                if theirs == Err("decoded whole".into()) {
                    continue;
                }
                assert!(matches!(ours, Ok(Some(_))), "{name} / {divisor}: {ours:?}");
                assert_eq!(ours, theirs, "{name} / {divisor}");
                compared += 1;
            }
        }
        assert!(compared > 300, "only {compared} comparisons");
    }

    /// Corrupt or cut scans: whenever Arbiter's Huffman decoder does not give up, its pixels are
    /// libjpeg's; when it does, `decode_resized` has libjpeg's outcome (pixels or error) anyway.
    #[test]
    fn corrupt_scans_end_as_libjpeg_ends_them() {
        let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../var/photos"));
        let mut random = xorshift(0x9e37_79b9_7f4a_7c15);
        let mut next = move |n: usize| (random() % n as u64) as usize;
        let (mut gave_up, mut kept) = (0, 0);
        let photo = std::fs::read(root.join("grace_hopper.jpg")).expect("run scripts/setup");
        let mut corpus = vec![("grace_hopper.jpg".to_string(), photo, 24)];
        for (name, jpeg) in encoded_corpus() {
            if name.starts_with("301x227") && name.ends_with("q95") {
                corpus.push((name, jpeg, 40));
            }
        }
        for (name, photo, cases) in corpus {
            let sos = photo.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
            let data = sos + 2 + usize::from(photo[sos + 2]) * 256 + usize::from(photo[sos + 3]);
            let eoi = photo.len() - 2;
            for case in 0..cases {
                let mut bytes = photo.clone();
                match case % 4 {
                    // A few bytes of the scan changed.
                    0 | 1 => {
                        for _ in 0..1 + case % 3 {
                            let at = data + next(eoi - data);
                            bytes[at] = next(256) as u8;
                        }
                    }
                    // The scan cut short, then EOI.
                    2 => {
                        bytes.truncate(data + next(eoi - data));
                        bytes.extend_from_slice(&[0xFF, 0xD9]);
                    }
                    // A restart marker where there are none.
                    _ => {
                        let at = data + next(eoi - data);
                        bytes.splice(at..at, [0xFF, 0xD0 + next(8) as u8]);
                    }
                }
                let label = format!("{name} case {case}");
                let theirs = banded(&bytes, 1, (32, 32), rows::Huffman::Libjpeg);
                match banded(&bytes, 1, (32, 32), rows::Huffman::Arbiter) {
                    Ok(None) => gave_up += 1,
                    ours => {
                        assert_eq!(ours, theirs, "{label}");
                        kept += 1;
                    }
                }
                // The public path, with its fallback, ends as libjpeg alone does.
                if let Ok(header) = scan(&bytes, true) {
                    let public = decode_resized(&bytes, &header, 1, 32, 32)
                        .map(|done| done.map(|(image, _)| image))
                        .map_err(|e| format!("{:?}", e.kind()));
                    assert_eq!(public, theirs, "{label}");
                }
            }
        }
        // Both ways are exercised.
        assert!(gave_up > 20 && kept > 20, "gave up {gave_up}, kept {kept}");
    }

    /// A corrupt JPEG fails with libjpeg's message, not a panic.
    #[test]
    fn corrupt_data_is_an_error() {
        let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../var/photos"));
        let mut bytes = std::fs::read(root.join("grace_hopper.jpg")).expect("run scripts/setup");
        // The scan header names Huffman tables 7 for its first component: libjpeg stops with
        // "Huffman table 0x07 was not defined" (the marker walk does not look inside segments).
        let sos = bytes.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
        bytes[sos + 6] = 0x77;
        let header = scan(&bytes, true).unwrap();
        let err = decode_resized(&bytes, &header, 1, 224, 224).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Invalid, "{err}");
        assert!(err.to_string().contains("Huffman table"), "{err}");
    }
}
