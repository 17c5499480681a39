//! JPEG, decoded as Pillow's JPEG plugin decodes it: libjpeg-turbo with libjpeg's defaults.
//!
//! - `markers` walks the marker segments before any pixel is decoded: the frame header, for the
//!   pixel limit, and whether the stream reaches its EOI marker (Pillow's truncation rule).
//! - `whole` decodes the whole image through TurboJPEG: any JPEG that Pillow opens.
//! - `banded` decodes an RGB JPEG a band of rows at a time through libjpeg's scanline API (`rows`,
//!   over `jpeg_rows.c`) and resizes the rows as they come, with Arbiter's own Huffman decoder for
//!   baseline scans (the same coefficients as libjpeg's).

mod banded;
mod markers;
mod rows;
mod whole;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

pub(crate) use banded::decode_resized;
pub(crate) use markers::{Header, scan};
pub(crate) use whole::decode;

/// Whether baseline scans go to Arbiter's own Huffman decoder; see [`use_own_huffman_decoder`].
static OWN_HUFFMAN: AtomicBool = AtomicBool::new(true);

/// Turns Arbiter's own Huffman decoder (`jpeg_rows.c`) on or off for this process: off, libjpeg
/// decodes every JPEG whole, its own decoder reading every scan. On by default; the worker sets it
/// from `server.own_huffman_decoder` before it serves. Returns whether it is on now, which it
/// never is when the file was built without it (another libjpeg-turbo than 2.1).
pub fn use_own_huffman_decoder(on: bool) -> bool {
    let on = on && rows::own_huffman_built();
    OWN_HUFFMAN.store(on, Relaxed);
    on
}

/// Whether Arbiter's own Huffman decoder is used ([`use_own_huffman_decoder`]).
pub(crate) fn own_huffman() -> bool {
    OWN_HUFFMAN.load(Relaxed) && rows::own_huffman_built()
}

/// Images whose scan Arbiter's own Huffman decoder read to the end, in this process.
pub(crate) static OWN_HUFFMAN_SCANS: AtomicU64 = AtomicU64::new(0);

/// How many images Arbiter's own Huffman decoder has decoded in this process (it reads baseline
/// scans only, and hands corrupt ones back to libjpeg's).
pub fn own_huffman_scans() -> u64 {
    OWN_HUFFMAN_SCANS.load(Relaxed)
}
