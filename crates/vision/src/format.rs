//! The image formats the crate reads.

/// The image formats we decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// JPEG (JFIF, Exif, Adobe).
    Jpeg,
    /// PNG (the first image of an APNG).
    Png,
    /// GIF (the first frame).
    Gif,
    /// Windows bitmap.
    Bmp,
    /// WebP, lossy or lossless.
    WebP,
    /// TIFF (the first image).
    Tiff,
}

impl Format {
    /// The format's usual name.
    pub fn name(self) -> &'static str {
        match self {
            Format::Jpeg => "JPEG",
            Format::Png => "PNG",
            Format::Gif => "GIF",
            Format::Bmp => "BMP",
            Format::WebP => "WebP",
            Format::Tiff => "TIFF",
        }
    }

    /// The format's media type.
    pub fn mime_type(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::Gif => "image/gif",
            Format::Bmp => "image/bmp",
            Format::WebP => "image/webp",
            Format::Tiff => "image/tiff",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
