//! The one error type of the crate, and the coarse [`ErrorKind`] callers branch on.

use crate::format::Format;

/// Why an image could not be decoded or preprocessed.
///
/// Every message is meant for the person who sent the image, not for an ML engineer: it says what
/// is wrong with the file, and for limits it names the numbers.
#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    /// The request carried zero bytes.
    #[error("the image is empty (0 bytes)")]
    Empty,

    /// Not one of the formats we read, or a variant of one that we do not support.
    #[error("unsupported image: {detail}")]
    Unsupported {
        /// The format, when the magic bytes were recognised.
        format: Option<Format>,
        /// What is not supported, in words.
        detail: String,
    },

    /// The header declares more pixels than [`crate::Limits::max_pixels`] allows.
    #[error(
        "the image declares {width} x {height} = {pixels} pixels, over the limit of {limit}",
        pixels = u64::from(*width) * u64::from(*height)
    )]
    TooManyPixels {
        /// Width declared by the header.
        width: u32,
        /// Height declared by the header.
        height: u32,
        /// The limit in force.
        limit: u64,
    },

    /// Decoding needs more memory than the limits allow, although the pixel count passed.
    #[error("decoding this {format} image would need more memory than allowed")]
    MemoryLimit {
        /// The image's format.
        format: Format,
    },

    /// The data stops before the image is complete (a partial upload, a cut file).
    #[error("the {format} image is truncated: the data ends before the image is complete")]
    Truncated {
        /// The image's format.
        format: Format,
    },

    /// The data is not a valid image of the format its magic bytes announce.
    #[error("the {format} image is corrupt: {reason}")]
    Corrupt {
        /// The image's format.
        format: Format,
        /// What the decoder found wrong.
        reason: String,
    },
}

/// The class of a [`VisionError`], so that callers pick a response without matching on text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The bytes are not a valid image (empty, truncated, corrupt): HTTP 400.
    Invalid,
    /// A format or format variant we do not read: HTTP 415.
    Unsupported,
    /// Too many pixels or too much memory to decode: HTTP 413.
    TooLarge,
}

impl ErrorKind {
    /// The HTTP status code that fits this kind of error.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::Invalid => 400,
            ErrorKind::Unsupported => 415,
            ErrorKind::TooLarge => 413,
        }
    }
}

impl VisionError {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            VisionError::Empty | VisionError::Truncated { .. } | VisionError::Corrupt { .. } => {
                ErrorKind::Invalid
            }
            VisionError::Unsupported { .. } => ErrorKind::Unsupported,
            VisionError::TooManyPixels { .. } | VisionError::MemoryLimit { .. } => {
                ErrorKind::TooLarge
            }
        }
    }

    pub(crate) fn corrupt(format: Format, reason: impl std::fmt::Display) -> Self {
        VisionError::Corrupt {
            format,
            reason: reason.to_string(),
        }
    }

    pub(crate) fn unsupported(format: Format, detail: impl Into<String>) -> Self {
        VisionError::Unsupported {
            format: Some(format),
            detail: detail.into(),
        }
    }
}
