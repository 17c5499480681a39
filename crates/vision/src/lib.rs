//! Image decoding and preprocessing that reproduce, bit for bit, what the seed service computes
//! in Python: `Image.open(p).convert("RGB")`, torchvision's `Resize([224, 224])` (Pillow's
//! `resize((224, 224), BILINEAR)`), `ToTensor` and `Normalize(ImageNet mean, std)`; and the
//! other resize recipes of image classifiers' Python pipelines ([`Resize`]): Pillow's NEAREST,
//! BILINEAR, BICUBIC and LANCZOS filters, squashed to the model's size or resized by the shorter
//! side then center-cropped as torchvision and timm do.
//!
//! # Theory of operation
//!
//! 1. [`sniff`] picks the format from the magic bytes only (never a file name or a content type).
//! 2. [`decode_rgb`] reads the header, refuses images over [`Limits::max_pixels`] before any
//!    pixel is decoded (a decompression bomb costs a header parse), then decodes with the decoder
//!    that agrees with Pillow's: libjpeg-turbo for JPEG (the library inside Pillow, with the same
//!    defaults: accurate integer IDCT, fancy upsampling, no DCT scaling; for a baseline JPEG
//!    resized as it decodes, our own faster Huffman decoding under libjpeg's: the same
//!    coefficients, see `jpeg` and `jpeg_rows.c`), the `png`, `gif` and `tiff` crates read raw
//!    so that we apply Pillow's own mode rules, and the `image` crate for BMP and WebP. Every
//!    mode becomes 8-bit RGB exactly as Pillow's `convert("RGB")` does it (see `convert`): alpha
//!    is dropped, not composited; 16-bit gray is clipped; CMYK goes through Pillow's integer
//!    `cmyk2rgb`. Truncated or corrupt input is a typed error, not a panic and not a half-gray
//!    picture (Pillow without `LOAD_TRUNCATED_IMAGES` refuses too).
//! 3. [`resize`] is Pillow's two-pass fixed-point convolution (see `resize`), which makes the
//!    pixels identical to Pillow's, not merely close, for every filter; the crop of a recipe's
//!    geometry (see `recipe`) is computed alone, not cut from a whole resize.
//!    [`resize_bilinear`] is the seed's recipe.
//! 4. [`normalize_into`] divides and normalizes in `f32`, the operations torchvision does,
//!    through a 256-entry table per channel, in the model's channel order and layout (see
//!    `normalize`); [`pixels_into`] writes the raw pixels for a `uint8` input. [`normalize_chw`]
//!    is the seed's: `/ 255`, ImageNet's mean and std, RGB, planar CHW.
//!
//! [`preprocess`] is all of it ([`preprocess_with`] for any recipe). Errors carry an
//! [`ErrorKind`] that maps to an HTTP status.
//!
//! # Parity, and where it stops
//!
//! Checked against Pillow 13.0 (`tests/parity.rs`, `tests/modes.rs`, `tests/resize.rs`): the 24
//! reference photos of `scripts/setup` (JPEG 4:2:0, 4:4:4, progressive, CMYK, gray; PNG RGB,
//! RGBA, LA, P, 16-bit gray; GIF, BMP, TIFF, lossy and lossless WebP; a 12 MP photo, a 2000 x 60
//! strip, a 1 x 1 pixel) decode and resize with 0 values off, as do the mode and resize fixtures
//! of `tests/fixtures` (bar the palette TIFF). So do six other recipes on those photos and eight
//! on the odd images of `tests/fixtures/recipes` (`tests/recipes.rs`, against `scripts/recipes.py`:
//! every filter, the shorter side with crops inside and larger than the image, timm's `crop_pct`; 1
//! x 1, strips one pixel thick, upscaling). EXIF orientation is not applied, as Pillow's
//! `Image.open` does not apply it. Known differences, all on rare files:
//!
//! - palette TIFFs are refused as unsupported (the `tiff` crate does not read them);
//! - 16-bit (5-5-5, 5-6-5) BMPs: the `image` crate rounds channel scaling where Pillow
//!   truncates, at most 1 level off;
//! - a PNG whose `IDAT` checksum is wrong is refused (Pillow does not check `IDAT` checksums);
//! - a GIF with no color table at all is refused (Pillow reads it as grayscale);
//! - an alpha-premultiplied TIFF keeps its premultiplied colors (Pillow divides them back);
//! - a JPEG whose libjpeg error follows a libjpeg warning is accepted with what was decoded
//!   (TurboJPEG 2.1 reports only the warning); Pillow raises.

mod bmp_webp;
mod coefficients;
mod convert;
mod error;
mod format;
mod gif;
mod jpeg;
mod kernels;
mod limits;
mod normalize;
mod png;
mod recipe;
mod resize;
mod rgb_image;
mod spare;
mod tiff;

pub use error::{ErrorKind, VisionError};
pub use format::Format;
pub use jpeg::{own_huffman_scans, use_own_huffman_decoder};
pub use limits::Limits;
pub use normalize::{ChannelOrder, Normalize, TensorLayout, normalize_into, pixels_into};
pub use recipe::{Filter, Geometry, Layout, MAX_SHORTER_SIDE, RecipeError, Resize, Span};
pub use resize::{resize, resize_bilinear};
pub use rgb_image::RgbImage;
pub use spare::{keep_spare_buffers, recycle};

/// ImageNet channel means that torchvision's `Normalize` subtracts (RGB order): the seed's, as
/// `arbiter_config::defaults::IMAGENET_MEAN` gives them to a config.
pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations that torchvision's `Normalize` divides by (RGB order),
/// as `arbiter_config::defaults::IMAGENET_STD`.
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];

impl Normalize {
    /// The seed's: torchvision's `ToTensor` (`/ 255`) then `Normalize(MEAN, STD)`.
    pub const SEED: Normalize = Normalize {
        divide_by: 255.0,
        mean: MEAN,
        std: STD,
    };
}

/// Detects the format from the magic bytes at the start of the data.
pub fn sniff(bytes: &[u8]) -> Result<Format, VisionError> {
    if bytes.is_empty() {
        return Err(VisionError::Empty);
    }
    let format = if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Format::Jpeg
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Format::Png
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Format::Gif
    } else if bytes.starts_with(b"BM") {
        Format::Bmp
    } else if bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP" {
        Format::WebP
    } else if [b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"]
        .iter()
        .any(|magic| bytes.starts_with(*magic))
    {
        Format::Tiff
    } else {
        return Err(VisionError::Unsupported {
            format: None,
            detail: "the data is not a JPEG, PNG, GIF, BMP, WebP or TIFF image".into(),
        });
    };
    Ok(format)
}

/// The format and the size the header declares, without decoding any pixel.
pub fn dimensions(bytes: &[u8]) -> Result<(Format, u32, u32), VisionError> {
    let format = sniff(bytes)?;
    let (width, height) = match format {
        Format::Jpeg => {
            let header = jpeg::scan(bytes, false)?;
            (header.width, header.height)
        }
        Format::Png => png::dimensions(bytes)?,
        Format::Gif => gif::dimensions(bytes)?,
        Format::Tiff => tiff::dimensions(bytes)?,
        Format::Bmp | Format::WebP => bmp_webp::dimensions(bytes, format)?,
    };
    Ok((format, width, height))
}

/// Decodes an image to 8-bit RGB as Pillow's `Image.open(...).convert("RGB")` does, checking
/// the header's pixel count against `limits` before decoding.
pub fn decode_rgb(bytes: &[u8], limits: &Limits) -> Result<RgbImage, VisionError> {
    decode(bytes, limits, None)
}

/// [`decode_rgb`], except that a JPEG much larger than `min_width x min_height` is decoded at a
/// reduced scale with libjpeg's DCT scaling, as Pillow decodes it after
/// `Image.draft("RGB", (min_width, min_height))`: divided by the largest `m` of 8, 4, 2, 1 with
/// `m <= min(width / min_width, height / min_height)` (integer division), which gives
/// `ceil(width / m) x ceil(height / m)` pixels, never fewer than asked for. Several times faster
/// on big photos; the pixels are then Pillow's draft pixels, not its full decode's. Other
/// formats, and JPEGs too small to reduce, decode in full.
pub fn decode_rgb_draft(
    bytes: &[u8],
    limits: &Limits,
    min_width: u32,
    min_height: u32,
) -> Result<RgbImage, VisionError> {
    decode(bytes, limits, Some(Draft::AtLeast(min_width, min_height)))
}

/// Decodes an image for `recipe`'s `width x height` input: [`decode_rgb`], or with `fast_jpeg`
/// [`decode_rgb_draft`] keeping at least twice the size the recipe resizes the image to (Pillow's
/// `reducing_gap` of 2), computed from the header's size. The recipe then applies to the reduced
/// image: Pillow's `img.draft("RGB", 2 x resized)` followed by the recipe.
pub fn decode_for_input_with(
    bytes: &[u8],
    limits: &Limits,
    width: u32,
    height: u32,
    recipe: &Resize,
    fast_jpeg: bool,
) -> Result<RgbImage, VisionError> {
    let draft = fast_jpeg.then_some(Draft::For {
        recipe,
        width,
        height,
    });
    decode(bytes, limits, draft)
}

/// The least size a reduced JPEG decode keeps.
#[derive(Clone, Copy, Debug)]
enum Draft<'a> {
    /// At least this `(width, height)`.
    AtLeast(u32, u32),
    /// Twice what `recipe` resizes the image to for a `width x height` input (Pillow's
    /// `reducing_gap` of 2).
    For {
        recipe: &'a Resize,
        width: u32,
        height: u32,
    },
}

impl Draft<'_> {
    /// The least size kept from an `in_w x in_h` image.
    fn size(self, in_w: u32, in_h: u32) -> (u32, u32) {
        let (w, h) = match self {
            Draft::AtLeast(w, h) => (w, h),
            Draft::For {
                recipe,
                width,
                height,
            } => {
                let (w, h) = recipe.layout(in_w, in_h, width, height).resized();
                (w.saturating_mul(2), h.saturating_mul(2))
            }
        };
        (w.max(1), h.max(1))
    }
}

/// A JPEG's header, walked to its end, after checking its size against `limits`.
fn jpeg_header(bytes: &[u8], limits: &Limits) -> Result<jpeg::Header, VisionError> {
    let header = jpeg::scan(bytes, false)?;
    limits.check(header.width, header.height)?;
    jpeg::scan(bytes, true)
}

/// The DCT scaling divisor for a draft decode keeping at least `draft` pixels (1: none).
fn draft_divisor(header: &jpeg::Header, draft: Option<Draft<'_>>) -> u32 {
    draft.map_or(1, |draft| {
        let (w, h) = draft.size(header.width, header.height);
        let scale = (header.width / w).min(header.height / h);
        // Below 16 pixels a side, TurboJPEG could pick one of its other factors (5/8...) for
        // the same output size: no reduction there.
        [8, 4, 2, 1]
            .into_iter()
            .find(|&m| m <= scale && header.width.min(header.height) / m >= 16)
            .unwrap_or(1)
    })
}

fn decode(
    bytes: &[u8],
    limits: &Limits,
    draft: Option<Draft<'_>>,
) -> Result<RgbImage, VisionError> {
    let format = sniff(bytes)?;
    let image = match format {
        Format::Jpeg => {
            let header = jpeg_header(bytes, limits)?;
            jpeg::decode(bytes, &header, draft_divisor(&header, draft))?
        }
        Format::Png => png::decode(bytes, limits)?,
        Format::Gif => gif::decode(bytes, limits)?,
        Format::Tiff => tiff::decode(bytes, limits)?,
        Format::Bmp | Format::WebP => bmp_webp::decode(bytes, format, limits)?,
    };
    if image.width == 0 || image.height == 0 {
        return Err(VisionError::corrupt(
            format,
            format!("it has no pixels ({} x {})", image.width, image.height),
        ));
    }
    Ok(image)
}

/// [`decode_for_input_with`] the seed's recipe, then [`resize_bilinear`] to `width x height`, with
/// the time the resizing took: [`decode_resized_with`] the seed's recipe.
pub fn decode_resized(
    bytes: &[u8],
    limits: &Limits,
    width: u32,
    height: u32,
    fast_jpeg: bool,
) -> Result<(RgbImage, std::time::Duration), VisionError> {
    let done = decode_resized_with(bytes, limits, width, height, &Resize::SEED, fast_jpeg)?;
    Ok((done.image, done.resizing))
}

/// What [`decode_resized_with`] made, and how.
#[derive(Debug)]
pub struct Resized {
    /// The model's `width x height` input.
    pub image: RgbImage,
    /// The time spent resizing.
    pub resizing: std::time::Duration,
    /// Whether the image was resized as it was decoded, a band of rows at a time. `false` for
    /// formats other than JPEG, and for the JPEGs that path does not take: those not RGB (gray,
    /// CMYK) and those whose height Pillow shrinks so much more than their width that it
    /// resamples vertically first; they are decoded whole, then resized, with the same pixels.
    pub banded: bool,
}

/// [`decode_for_input_with`] then [`resize`] by `recipe` to `width x height`, with the time the
/// resizing took. The same pixels, bit for bit; but an RGB JPEG is resized as it is decoded, a
/// band of rows at a time, so the whole decoded image is never held (a 12-megapixel photo's 36
/// MB), which is also faster (the rows are resized while still in the CPU's cache). Other images
/// are decoded whole, then resized ([`Resized::banded`] says which way was taken).
pub fn decode_resized_with(
    bytes: &[u8],
    limits: &Limits,
    width: u32,
    height: u32,
    recipe: &Resize,
    fast_jpeg: bool,
) -> Result<Resized, VisionError> {
    let rgb = if sniff(bytes)? == Format::Jpeg {
        let header = jpeg_header(bytes, limits)?;
        let draft = fast_jpeg.then_some(Draft::For {
            recipe,
            width,
            height,
        });
        let divisor = draft_divisor(&header, draft);
        if let Some((image, resizing)) =
            jpeg::decode_resized(bytes, &header, divisor, recipe, (width, height))?
        {
            return Ok(Resized {
                image,
                resizing,
                banded: true,
            });
        }
        // Decoded whole, with the header already walked.
        jpeg::decode(bytes, &header, divisor)?
    } else {
        decode_for_input_with(bytes, limits, width, height, recipe, fast_jpeg)?
    };
    let started = std::time::Instant::now();
    let image = resize(&rgb, recipe, width, height);
    recycle(rgb);
    Ok(Resized {
        image,
        resizing: started.elapsed(),
        banded: false,
    })
}

/// Writes `img` as a normalized CHW float tensor: `(v / 255 - MEAN[c]) / STD[c]` in `f32`, as
/// torchvision's `ToTensor` then `Normalize` compute it. The seed's [`normalize_into`].
///
/// # Panics
///
/// If `out.len()` is not `3 * width * height`, or `img.data` does not match its size.
pub fn normalize_chw(img: &RgbImage, out: &mut [f32]) {
    normalize_into(
        img,
        &Normalize::SEED,
        ChannelOrder::Rgb,
        TensorLayout::Nchw,
        out,
    );
}

/// Decodes, resizes to `width x height` and normalizes: the seed's whole preprocessing, as a
/// CHW `f32` vector of `3 * width * height` values.
pub fn preprocess(
    bytes: &[u8],
    limits: &Limits,
    width: u32,
    height: u32,
) -> Result<Vec<f32>, VisionError> {
    preprocess_with(bytes, limits, width, height, &Resize::SEED, false)
}

/// [`preprocess`] with `recipe`'s resize (and `fast_jpeg`): decoded, resized and cropped by
/// [`decode_resized_with`], then normalized with ImageNet's mean and std.
pub fn preprocess_with(
    bytes: &[u8],
    limits: &Limits,
    width: u32,
    height: u32,
    recipe: &Resize,
    fast_jpeg: bool,
) -> Result<Vec<f32>, VisionError> {
    let done = decode_resized_with(bytes, limits, width, height, recipe, fast_jpeg)?;
    let mut out = vec![0f32; 3 * width as usize * height as usize];
    normalize_chw(&done.image, &mut out);
    Ok(out)
}
