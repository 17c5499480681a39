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

pub(crate) use banded::decode_resized;
pub(crate) use markers::{Header, scan};
pub(crate) use whole::decode;
