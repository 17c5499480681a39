//! The model's input values, in its element type: a batch the inference thread fills
//! ([`Elements`]) and hands to the model ([`Batch`]), and how a resized image is written into it
//! ([`ToTensor`], `[model.preprocess]`'s normalization, channel order and layout).

use std::ops::Range;

use arbiter_config::{ChannelOrder, ElementType, Preprocess, TensorLayout};
use arbiter_vision::{Normalize, RgbImage};

/// Model input values, owned: `f32` for a `float32` input, `u8` for a `uint8` one.
#[derive(Debug, Clone, PartialEq)]
pub enum Elements {
    /// Normalized floats.
    F32(Vec<f32>),
    /// Raw pixels.
    U8(Vec<u8>),
}

/// Model input values, borrowed: what [`crate::Backend::run`] takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Batch<'a> {
    /// For a `float32` input.
    F32(&'a [f32]),
    /// For a `uint8` input.
    U8(&'a [u8]),
}

impl Default for Elements {
    /// No `f32` values.
    fn default() -> Elements {
        Elements::F32(Vec::new())
    }
}

impl Elements {
    /// No values, of `element`'s type.
    pub fn empty(element: ElementType) -> Elements {
        match element {
            ElementType::Float32 => Elements::F32(Vec::new()),
            ElementType::Uint8 => Elements::U8(Vec::new()),
        }
    }

    /// The values' type.
    pub fn element(&self) -> ElementType {
        match self {
            Elements::F32(_) => ElementType::Float32,
            Elements::U8(_) => ElementType::Uint8,
        }
    }

    /// How many values.
    pub fn len(&self) -> usize {
        match self {
            Elements::F32(v) => v.len(),
            Elements::U8(v) => v.len(),
        }
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values at `range`, borrowed (empty when out of range).
    pub fn slice(&self, range: Range<usize>) -> Batch<'_> {
        match self {
            Elements::F32(v) => Batch::F32(v.get(range).unwrap_or(&[])),
            Elements::U8(v) => Batch::U8(v.get(range).unwrap_or(&[])),
        }
    }

    /// Empties it for a batch of `element`'s type, keeping its memory when the type is the same.
    pub(crate) fn reset(&mut self, element: ElementType) {
        match self {
            Elements::F32(v) if element == ElementType::Float32 => v.clear(),
            Elements::U8(v) if element == ElementType::Uint8 => v.clear(),
            _ => *self = Elements::empty(element),
        }
    }

    /// Bytes of memory held.
    pub(crate) fn capacity_bytes(&self) -> usize {
        match self {
            Elements::F32(v) => v.capacity() * size_of::<f32>(),
            Elements::U8(v) => v.capacity(),
        }
    }

    /// Appends `other`'s values; `false` (nothing appended) when their types differ.
    pub(crate) fn append(&mut self, other: &mut Elements) -> bool {
        match (self, other) {
            (Elements::F32(a), Elements::F32(b)) => a.append(b),
            (Elements::U8(a), Elements::U8(b)) => a.append(b),
            _ => return false,
        }
        true
    }
}

/// How a resized image becomes one image of the model's input: normalized `f32` values
/// (`(pixel / divide_by - mean) / std`) or the raw pixels, in the input's channel order and
/// layout. Written by the inference thread into its batch, so that a queued image holds its RGB
/// bytes, a quarter of its floats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ToTensor {
    /// `Some` for a `float32` input, `None` for a `uint8` one.
    pub normalize: Option<Normalize>,
    /// The input's channel order.
    pub channels: arbiter_vision::ChannelOrder,
    /// The input's layout.
    pub layout: arbiter_vision::TensorLayout,
}

impl ToTensor {
    /// `[model.preprocess]`'s normalization, channel order, layout and element type.
    pub fn from_config(p: &Preprocess) -> ToTensor {
        ToTensor {
            normalize: match p.input_type {
                ElementType::Float32 => Some(Normalize {
                    divide_by: p.divide_by,
                    mean: p.mean,
                    std: p.std,
                }),
                ElementType::Uint8 => None,
            },
            channels: match p.channels {
                ChannelOrder::Rgb => arbiter_vision::ChannelOrder::Rgb,
                ChannelOrder::Bgr => arbiter_vision::ChannelOrder::Bgr,
            },
            layout: match p.layout {
                TensorLayout::Nchw => arbiter_vision::TensorLayout::Nchw,
                TensorLayout::Nhwc => arbiter_vision::TensorLayout::Nhwc,
            },
        }
    }

    /// The element type it writes.
    pub fn element(&self) -> ElementType {
        match self.normalize {
            Some(_) => ElementType::Float32,
            None => ElementType::Uint8,
        }
    }

    /// Appends `img` as one image of the input to `out`; `false` (nothing appended) when `out`
    /// holds another element type.
    pub fn append(&self, img: &RgbImage, out: &mut Elements) -> bool {
        let len = 3 * img.width as usize * img.height as usize;
        match (out, &self.normalize) {
            (Elements::F32(v), Some(norm)) => {
                let at = v.len();
                v.resize(at + len, 0.0);
                arbiter_vision::normalize_into(img, norm, self.channels, self.layout, &mut v[at..]);
            }
            (Elements::U8(v), None) => {
                let at = v.len();
                v.resize(at + len, 0);
                arbiter_vision::pixels_into(img, self.channels, self.layout, &mut v[at..]);
            }
            _ => return false,
        }
        true
    }

    /// `img` as one image of the input.
    pub fn tensor(&self, img: &RgbImage) -> Elements {
        let mut out = Elements::empty(self.element());
        self.append(img, &mut out);
        out
    }
}
