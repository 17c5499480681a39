//! The resized RGB image into the model's input tensor, as the model's own Python pipeline
//! writes it: in the model's channel order (RGB or BGR) and layout (NCHW or NHWC), either as
//! normalized `f32` values or as the raw 0..=255 pixels for a model that normalizes inside its
//! graph.
//!
//! A normalized value is `(pixel / divide_by - mean[c]) / std[c]`, each operation rounded to
//! `f32` in that order: torchvision's `ToTensor` (a division) then `Normalize` (a subtraction,
//! then a division), and numpy's `(x.astype(np.float32) / d - mean) / std` on `float32` arrays.
//! `mean[c]` and `std[c]` are the input's channel `c`'s: with BGR, index 0 is blue's. A pixel
//! has 256 values, so each channel's 256 results are computed once into a table, and the
//! per-pixel work is a lookup.

use crate::RgbImage;

/// The order of the color channels in the model's input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChannelOrder {
    /// Red, green, blue: PIL's and torchvision's. The seed's.
    #[default]
    Rgb,
    /// Blue, green, red: OpenCV's, and Keras's `caffe` models.
    Bgr,
}

/// Where the channel axis sits in the model's input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TensorLayout {
    /// `[C, H, W]` per image: planar, PyTorch's. The seed's.
    #[default]
    Nchw,
    /// `[H, W, C]` per image: interleaved, TensorFlow's and Keras's.
    Nhwc,
}

/// The numbers of a normalization: `(pixel / divide_by - mean[c]) / std[c]`, `mean` and `std` in
/// the input's channel order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalize {
    /// Each 0..=255 value is divided by this first (`ToTensor`: 255).
    pub divide_by: f32,
    /// Subtracted per channel of the input, after the division.
    pub mean: [f32; 3],
    /// Divided by per channel of the input, after the mean.
    pub std: [f32; 3],
}

impl Normalize {
    /// The value of each 0..=255 pixel value, per channel of the input.
    fn table(&self) -> [[f32; 256]; 3] {
        std::array::from_fn(|c| {
            std::array::from_fn(|v| (v as f32 / self.divide_by - self.mean[c]) / self.std[c])
        })
    }
}

/// What the input holds at each of its indices, per pixel: the index of the source (RGB)
/// channel at input channel `c` is `source[c]`.
fn sources(channels: ChannelOrder) -> [usize; 3] {
    match channels {
        ChannelOrder::Rgb => [0, 1, 2],
        ChannelOrder::Bgr => [2, 1, 0],
    }
}

/// Writes `img` normalized by `norm` into `out`, one image of the input in `channels` order and
/// `layout`.
///
/// # Panics
///
/// If `out.len()` is not `3 * width * height`, or `img.data` does not match its size.
pub fn normalize_into(
    img: &RgbImage,
    norm: &Normalize,
    channels: ChannelOrder,
    layout: TensorLayout,
    out: &mut [f32],
) {
    check_sizes(img, out.len());
    let by_input = norm.table();
    let source = sources(channels);
    match layout {
        TensorLayout::Nchw => {
            let plane = img.width as usize * img.height as usize;
            let (first, rest) = out.split_at_mut(plane);
            let (second, third) = rest.split_at_mut(plane);
            // The loop reads source channels in RGB order: each with its plane and its table.
            let [t0, t1, t2] = &by_input;
            let ((red, tr), green, (blue, tb)) = match channels {
                ChannelOrder::Rgb => ((first, t0), second, (third, t2)),
                ChannelOrder::Bgr => ((third, t2), second, (first, t0)),
            };
            for (((px, r), g), b) in img.data.chunks_exact(3).zip(red).zip(green).zip(blue) {
                *r = tr[usize::from(px[0])];
                *g = t1[usize::from(px[1])];
                *b = tb[usize::from(px[2])];
            }
        }
        TensorLayout::Nhwc => {
            for (px, o) in img.data.chunks_exact(3).zip(out.chunks_exact_mut(3)) {
                for (c, &s) in source.iter().enumerate() {
                    o[c] = by_input[c][usize::from(px[s])];
                }
            }
        }
    }
}

/// Writes `img`'s 0..=255 pixels as they are into `out`, one image of the input in `channels`
/// order and `layout`: the input of a model that normalizes inside its graph.
///
/// # Panics
///
/// If `out.len()` is not `3 * width * height`, or `img.data` does not match its size.
pub fn pixels_into(img: &RgbImage, channels: ChannelOrder, layout: TensorLayout, out: &mut [u8]) {
    check_sizes(img, out.len());
    match (layout, channels) {
        (TensorLayout::Nhwc, ChannelOrder::Rgb) => out.copy_from_slice(&img.data),
        (TensorLayout::Nhwc, ChannelOrder::Bgr) => {
            for (px, o) in img.data.chunks_exact(3).zip(out.chunks_exact_mut(3)) {
                o.copy_from_slice(&[px[2], px[1], px[0]]);
            }
        }
        (TensorLayout::Nchw, _) => {
            let plane = img.width as usize * img.height as usize;
            for (c, &s) in sources(channels).iter().enumerate() {
                let dest = &mut out[c * plane..(c + 1) * plane];
                for (px, o) in img.data.chunks_exact(3).zip(dest) {
                    *o = px[s];
                }
            }
        }
    }
}

fn check_sizes(img: &RgbImage, out_len: usize) {
    let plane = img.width as usize * img.height as usize;
    assert_eq!(
        out_len,
        3 * plane,
        "output length must be 3 * width * height"
    );
    assert_eq!(
        img.data.len(),
        3 * plane,
        "RgbImage data does not match its size"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2 x 1 image: (10, 20, 30), (200, 150, 100).
    fn image() -> RgbImage {
        RgbImage {
            width: 2,
            height: 1,
            data: vec![10, 20, 30, 200, 150, 100],
        }
    }

    const NORM: Normalize = Normalize {
        divide_by: 127.5,
        mean: [1.0, 0.5, 0.25],
        std: [0.5, 0.25, 2.0],
    };

    fn value(v: u8, c: usize) -> f32 {
        (f32::from(v) / NORM.divide_by - NORM.mean[c]) / NORM.std[c]
    }

    #[test]
    fn every_layout_and_channel_order() {
        let img = image();
        let mut out = [0f32; 6];
        normalize_into(&img, &NORM, ChannelOrder::Rgb, TensorLayout::Nchw, &mut out);
        let rgb_nchw = [
            value(10, 0),
            value(200, 0),
            value(20, 1),
            value(150, 1),
            value(30, 2),
            value(100, 2),
        ];
        assert_eq!(out, rgb_nchw);
        // BGR: input channel 0 is blue, normalized with mean[0] and std[0].
        normalize_into(&img, &NORM, ChannelOrder::Bgr, TensorLayout::Nchw, &mut out);
        let bgr_nchw = [
            value(30, 0),
            value(100, 0),
            value(20, 1),
            value(150, 1),
            value(10, 2),
            value(200, 2),
        ];
        assert_eq!(out, bgr_nchw);
        normalize_into(&img, &NORM, ChannelOrder::Rgb, TensorLayout::Nhwc, &mut out);
        let rgb_nhwc = [
            value(10, 0),
            value(20, 1),
            value(30, 2),
            value(200, 0),
            value(150, 1),
            value(100, 2),
        ];
        assert_eq!(out, rgb_nhwc);
        normalize_into(&img, &NORM, ChannelOrder::Bgr, TensorLayout::Nhwc, &mut out);
        let bgr_nhwc = [
            value(30, 0),
            value(20, 1),
            value(10, 2),
            value(100, 0),
            value(150, 1),
            value(200, 2),
        ];
        assert_eq!(out, bgr_nhwc);
    }

    #[test]
    fn raw_pixels_in_every_layout_and_channel_order() {
        let img = image();
        let mut out = [0u8; 6];
        let cases = [
            (
                ChannelOrder::Rgb,
                TensorLayout::Nhwc,
                [10, 20, 30, 200, 150, 100],
            ),
            (
                ChannelOrder::Bgr,
                TensorLayout::Nhwc,
                [30, 20, 10, 100, 150, 200],
            ),
            (
                ChannelOrder::Rgb,
                TensorLayout::Nchw,
                [10, 200, 20, 150, 30, 100],
            ),
            (
                ChannelOrder::Bgr,
                TensorLayout::Nchw,
                [30, 100, 20, 150, 10, 200],
            ),
        ];
        for (channels, layout, expected) in cases {
            pixels_into(&img, channels, layout, &mut out);
            assert_eq!(out, expected, "{channels:?} {layout:?}");
        }
    }
}
