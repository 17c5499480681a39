//! Row-by-row decoding through libjpeg's scanline API (`jpeg_rows.c`, built by `build.rs`), for
//! [`super::banded`].
//!
//! Every C entry point catches libjpeg's fatal errors itself (a `setjmp` in that function, which
//! libjpeg's `error_exit` `longjmp`s back to), so no `longjmp` ever crosses a Rust frame.

#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_uint, c_ulong};

use crate::error::VisionError;
use crate::format::Format;

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
        components: c_int,
        width: *mut c_uint,
        height: *mut c_uint,
    ) -> c_int;
    fn arbiter_jpeg_read(h: *mut Handle, out: *mut u8, stride: c_ulong, max_rows: c_int) -> c_int;
    fn arbiter_jpeg_finish(h: *mut Handle) -> c_int;
    fn arbiter_jpeg_own_huffman_built() -> c_int;
    fn arbiter_jpeg_fast_huffman(h: *const Handle) -> c_int;
}

/// Whether `jpeg_rows.c` was built with its own Huffman decoder: only against the libjpeg-turbo
/// version its use of libjpeg's private structures matches (2.1).
pub(crate) fn own_huffman_built() -> bool {
    // SAFETY: the function only returns a constant.
    unsafe { arbiter_jpeg_own_huffman_built() != 0 }
}

/// What the decoder hands out for each pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Output {
    /// 1 byte: a 1-component JPEG's gray.
    Gray,
    /// 3 bytes: R, G, B.
    Rgb,
    /// 4 bytes: C, M, Y, K as libjpeg hands them out (Adobe-inverted, Pillow's `CMYK;I`).
    Cmyk,
}

impl Output {
    /// Bytes per pixel.
    pub(super) fn bytes(self) -> usize {
        match self {
            Output::Gray => 1,
            Output::Rgb => 3,
            Output::Cmyk => 4,
        }
    }
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
    /// Bytes per pixel of the output.
    pixel: usize,
    /// A call failed (or Arbiter's Huffman decoder gave up): libjpeg's state is then undefined,
    /// and the handle may only be freed.
    failed: bool,
    _bytes: std::marker::PhantomData<&'a [u8]>,
}

impl Drop for Decoder<'_> {
    fn drop(&mut self) {
        // SAFETY: the handle came from arbiter_jpeg_new and is freed once, here; destroying is
        // what libjpeg allows after an error too.
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
        Decoder::start_as(bytes, denom, huffman, Output::Rgb)
    }

    /// Reads the header and starts decoding `bytes` to `output` at 1/`denom` scale.
    pub(super) fn start_as(
        bytes: &'a [u8],
        denom: u32,
        huffman: Huffman,
        output: Output,
    ) -> Result<Decoder<'a>, VisionError> {
        // SAFETY: arbiter_jpeg_new has no preconditions; it returns NULL when out of memory.
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
            pixel: output.bytes(),
            failed: false,
            _bytes: std::marker::PhantomData,
        };
        let len = c_ulong::try_from(bytes.len())
            .map_err(|_| VisionError::corrupt(Format::Jpeg, "too long"))?;
        let (mut w, mut h) = (0, 0);
        let fast = c_int::from(huffman == Huffman::Arbiter);
        let components = output.bytes() as c_int;
        // SAFETY: the handle is live and not started; `bytes` (len of them) stays valid until the
        // handle is freed, since the decoder that frees it borrows them for 'a, and libjpeg only
        // reads them; w and h are valid for writes. A libjpeg error returns -1 from the C call
        // (module doc).
        let rc = unsafe {
            arbiter_jpeg_start(
                handle,
                bytes.as_ptr(),
                len,
                denom,
                fast,
                components,
                &mut w,
                &mut h,
            )
        };
        d.check(rc)?;
        (d.width, d.height) = (w, h);
        Ok(d)
    }

    /// Whose Huffman decoder reads the scan.
    pub(super) fn huffman(&self) -> Huffman {
        // SAFETY: the handle is live; the call only reads one of its fields.
        match unsafe { arbiter_jpeg_fast_huffman(self.handle) } {
            0 => Huffman::Libjpeg,
            _ => Huffman::Arbiter,
        }
    }

    /// The decoded size.
    pub(super) fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Decodes up to `max_rows` rows into `out` (rows of `width` pixels); returns how many,
    /// or `None` if Arbiter's Huffman decoder gave up (this decoder is then done with).
    pub(super) fn read(
        &mut self,
        out: &mut [u8],
        max_rows: usize,
    ) -> Result<Option<usize>, VisionError> {
        if self.failed {
            return Err(self.error());
        }
        let stride = self.width as usize * self.pixel;
        let max_rows = max_rows.min(out.len() / stride.max(1));
        let rows = c_int::try_from(max_rows).unwrap_or(c_int::MAX);
        // SAFETY: the handle is live, started (a failed start returns no decoder) and has not
        // failed (checked above); `out` holds at least `rows` rows of `stride` bytes (checked
        // above), and libjpeg writes `stride` bytes per row, `width` pixels of the output's
        // components (the C call refused a start whose components differ).
        let rc =
            unsafe { arbiter_jpeg_read(self.handle, out.as_mut_ptr(), stride as c_ulong, rows) };
        if rc == -2 {
            self.failed = true;
            return Ok(None);
        }
        self.check(rc)?;
        Ok(Some(usize::try_from(rc).unwrap_or(0)))
    }

    /// Finishes the decoding (libjpeg reads to the end of the image).
    pub(super) fn finish(mut self) -> Result<(), VisionError> {
        if self.failed {
            return Err(self.error());
        }
        // SAFETY: the handle is live, started and has not failed (checked above).
        let rc = unsafe { arbiter_jpeg_finish(self.handle) };
        self.check(rc)
    }

    /// `Ok` for a C call's non-negative result; otherwise the decoder has failed, with the
    /// message libjpeg left in the handle.
    fn check(&mut self, rc: c_int) -> Result<(), VisionError> {
        if rc >= 0 {
            return Ok(());
        }
        self.failed = true;
        Err(self.error())
    }

    /// The last error the handle holds.
    fn error(&self) -> VisionError {
        // SAFETY: the handle is live; the call returns its message buffer, always
        // NUL-terminated (zeroed at creation, then written by libjpeg's format_message or
        // snprintf), which lives as long as the handle and is copied out here.
        let message = unsafe { CStr::from_ptr(arbiter_jpeg_message(self.handle)) };
        VisionError::corrupt(Format::Jpeg, message.to_string_lossy().into_owned())
    }
}

#[cfg(test)]
unsafe extern "C" {
    fn arbiter_jpeg_write(
        rgb: *const u8,
        width: c_uint,
        height: c_uint,
        quality: c_int,
        h_samp: c_int,
        v_samp: c_int,
        out: *mut *mut u8,
        out_len: *mut c_ulong,
    ) -> c_int;
    fn arbiter_jpeg_write_free(buffer: *mut u8);
}

/// The tests' JPEG encoder (`jpeg_write.c`): `width x height` RGB pixels at `quality`, the luma
/// component sampled `(h, v)` times the chroma ones.
#[cfg(test)]
pub(super) fn encode(
    rgb: &[u8],
    width: u32,
    height: u32,
    quality: i32,
    (h_samp, v_samp): (i32, i32),
) -> Vec<u8> {
    assert_eq!(rgb.len(), width as usize * height as usize * 3);
    let mut out = std::ptr::null_mut();
    let mut len: c_ulong = 0;
    // SAFETY: rgb holds width x height RGB pixels (asserted); out and len are valid for writes;
    // on success the C call leaves a malloc'ed buffer of len bytes in out, copied and freed below.
    let rc = unsafe {
        arbiter_jpeg_write(
            rgb.as_ptr(),
            width,
            height,
            quality,
            h_samp,
            v_samp,
            &mut out,
            &mut len,
        )
    };
    assert_eq!(rc, 0, "libjpeg could not encode");
    // SAFETY: out points to len bytes libjpeg wrote (rc 0), freed once right after the copy.
    let jpeg = unsafe { std::slice::from_raw_parts(out, len as usize) }.to_vec();
    // SAFETY: out came from the C call's malloc and is freed once.
    unsafe { arbiter_jpeg_write_free(out) };
    jpeg
}
