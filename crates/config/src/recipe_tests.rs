//! `[model.preprocess]` and `[model.postprocess]`: every form read, every mistake named with its
//! key and line.

use std::path::Path;

use crate::defaults::{IMAGENET_MEAN, IMAGENET_STD};
use crate::*;

fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
    Config::parse(text, Path::new("/etc/arbiter/arbiter.toml")).map_err(|e| match e {
        LoadError::Invalid { errors, .. } => errors,
        other => panic!("unexpected {other}"),
    })
}

/// The (key, line) of each error.
fn keys(errors: &[ConfigError]) -> Vec<(&str, Option<usize>)> {
    errors.iter().map(|e| (e.key.as_str(), e.line)).collect()
}

/// The one error of `text`, checked to name `key` at `line`; its message.
fn one_error(text: &str, key: &str, line: usize) -> String {
    let errors = parse(text).unwrap_err();
    assert_eq!(keys(&errors), [(key, Some(line))], "{errors:?}");
    errors[0].message.clone()
}

/// A parsed config written back by `to_toml` reads as the same config.
fn round_trips(c: &Config) {
    let again = Config::parse(&c.to_toml(), &c.file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&again, c);
}

#[test]
fn the_defaults_are_the_seeds_recipe() {
    let c = parse("").unwrap();
    let p = &c.model().preprocess;
    assert_eq!(p.resize, Geometry::Squash);
    assert_eq!(p.interpolation, Filter::Bilinear);
    assert_eq!(p.divide_by, 255.0);
    assert_eq!((p.mean, p.std), (IMAGENET_MEAN, IMAGENET_STD));
    assert_eq!(p.channels, ChannelOrder::Rgb);
    assert_eq!(p.layout, TensorLayout::Nchw);
    assert_eq!(p.input_type, ElementType::Float32);
    assert_eq!(p.input_size, None);
    assert_eq!(
        c.model().postprocess,
        Postprocess {
            output: Output::Threshold,
            scores: false
        }
    );
    // Empty tables are the defaults too.
    assert_eq!(
        parse("[model.preprocess]\n[model.postprocess]\n").unwrap(),
        c
    );
    round_trips(&c);
}

#[test]
fn a_torchvision_recipe_is_read() {
    let c = parse(
        "[model.preprocess]\nresize = \"shorter_side\"\nshorter_side = 256\ninput_size = 224\n\
         [model.postprocess]\noutput = \"softmax\"\ntop_k = 5\nscores = true\n",
    )
    .unwrap();
    let p = &c.model().preprocess;
    assert_eq!(p.resize, Geometry::ShorterSide(256));
    assert_eq!(
        p.input_size,
        Some(InputSize {
            height: 224,
            width: 224
        })
    );
    assert_eq!(c.model().postprocess.output, Output::Softmax { top_k: 5 });
    assert!(c.model().postprocess.scores);
    round_trips(&c);
}

#[test]
fn a_timm_recipe_is_read() {
    let c = parse(
        "[model.preprocess]\nresize = \"crop_pct\"\ncrop_pct = 0.875\ninterpolation = \"bicubic\"\n\
         mean = [0.5, 0.5, 0.5]\nstd = [0.5, 0.5, 0.5]\ninput_size = [240, 320]\n\
         [model.postprocess]\noutput = \"softmax\"\n",
    )
    .unwrap();
    let p = &c.model().preprocess;
    assert_eq!(p.resize, Geometry::CropPct(0.875));
    assert_eq!(p.interpolation, Filter::Bicubic);
    assert_eq!((p.mean, p.std), ([0.5; 3], [0.5; 3]));
    assert_eq!(
        p.input_size,
        Some(InputSize {
            height: 240,
            width: 320
        })
    );
    // A softmax without top_k keeps the one most likely class.
    assert_eq!(c.model().postprocess.output, Output::Softmax { top_k: 1 });
    round_trips(&c);
}

#[test]
fn keras_recipes_are_read() {
    // A caffe-mode float model: BGR, NHWC, the mean in pixel levels, in BGR order as Keras
    // writes it.
    let c = parse(
        "[model.preprocess]\ninterpolation = \"nearest\"\ndivide_by = 1\n\
         mean = [103.939, 116.779, 123.68]\nstd = [1, 1, 1]\nchannels = \"bgr\"\nlayout = \"nhwc\"\n",
    )
    .unwrap();
    let p = &c.model().preprocess;
    assert_eq!(p.divide_by, 1.0);
    assert_eq!(p.mean, [103.939, 116.779, 123.68]);
    assert_eq!(p.std, [1.0; 3]);
    assert_eq!(p.channels, ChannelOrder::Bgr);
    assert_eq!(p.layout, TensorLayout::Nhwc);
    round_trips(&c);
    // Raw uint8 pixels, the normalization inside the graph.
    let c = parse(
        "[model.preprocess]\nchannels = \"bgr\"\nlayout = \"nhwc\"\ninput_type = \"uint8\"\n\
         [model.postprocess]\noutput = \"sigmoid\"\n",
    )
    .unwrap();
    assert_eq!(c.model().preprocess.input_type, ElementType::Uint8);
    assert_eq!(c.model().postprocess.output, Output::Sigmoid);
    round_trips(&c);
}

#[test]
fn mean_and_std_round_to_f32_as_torchvision_does() {
    // torchvision's Normalize holds a Python float list as a float32 tensor: each value is the
    // f64 rounded to f32 once.
    let c = parse("[model.preprocess]\nmean = [0.1, 0.2, 0.3]\nstd = [0.7, 0.8, 0.9]\n").unwrap();
    let p = &c.model().preprocess;
    assert_eq!(p.mean, [0.1f64 as f32, 0.2f64 as f32, 0.3f64 as f32]);
    assert_eq!(p.std, [0.7f64 as f32, 0.8f64 as f32, 0.9f64 as f32]);
    assert_eq!(
        IMAGENET_MEAN,
        [0.485f64 as f32, 0.456f64 as f32, 0.406f64 as f32]
    );
    assert_eq!(
        IMAGENET_STD,
        [0.229f64 as f32, 0.224f64 as f32, 0.225f64 as f32]
    );
}

#[test]
fn an_unknown_interpolation_is_named() {
    let message = one_error(
        "[model]\n[model.preprocess]\ninterpolation = \"antialias\"\n",
        "model.preprocess.interpolation",
        3,
    );
    assert!(message.contains("\"bicubic\""), "{message}");
    for (key, value) in [
        ("resize", "crop"),
        ("channels", "rbg"),
        ("layout", "chw"),
        ("input_type", "float16"),
    ] {
        let message = one_error(
            &format!("[model.preprocess]\n{key} = \"{value}\"\n"),
            &format!("model.preprocess.{key}"),
            2,
        );
        assert!(message.contains(&format!("`{value}`")), "{message}");
    }
    one_error(
        "[model.postprocess]\noutput = \"argmax\"\n",
        "model.postprocess.output",
        2,
    );
}

#[test]
fn mean_and_std_need_three_good_values() {
    let message = one_error(
        "[model.preprocess]\nmean = [0.5, 0.5]\n",
        "model.preprocess.mean",
        2,
    );
    assert!(message.contains("3 numbers"), "{message}");
    one_error("[model.preprocess]\nstd = 0.5\n", "model.preprocess.std", 2);
    let message = one_error(
        "[model.preprocess]\nstd = [0.229, 0, 0.225]\n",
        "model.preprocess.std[1]",
        2,
    );
    assert!(message.contains("above 0"), "{message}");
    one_error(
        "[model.preprocess]\nmean = [0.5, \"half\", 0.5]\n",
        "model.preprocess.mean[1]",
        2,
    );
    one_error(
        "[model.preprocess]\nmean = [0.5, nan, 0.5]\n",
        "model.preprocess.mean[1]",
        2,
    );
    one_error(
        "[model.preprocess]\ndivide_by = 0\n",
        "model.preprocess.divide_by",
        2,
    );
}

#[test]
fn each_resize_takes_its_own_size() {
    let message = one_error(
        "[model.preprocess]\nresize = \"shorter_side\"\n",
        "model.preprocess.resize",
        2,
    );
    assert!(message.contains("shorter_side = N"), "{message}");
    let message = one_error(
        "[model.preprocess]\nresize = \"crop_pct\"\n",
        "model.preprocess.resize",
        2,
    );
    assert!(message.contains("crop_pct"), "{message}");
    // A size for another form is refused, not ignored.
    let message = one_error(
        "[model.preprocess]\nshorter_side = 256\n",
        "model.preprocess.shorter_side",
        2,
    );
    assert!(message.contains("resize = \"shorter_side\""), "{message}");
    one_error(
        "[model.preprocess]\nresize = \"shorter_side\"\nshorter_side = 256\ncrop_pct = 0.9\n",
        "model.preprocess.crop_pct",
        4,
    );
    one_error(
        "[model.preprocess]\nresize = \"shorter_side\"\nshorter_side = 0\n",
        "model.preprocess.shorter_side",
        3,
    );
}

#[test]
fn crop_pct_lies_in_zero_to_one() {
    for bad in ["0", "-0.5", "1.01", "inf", "nan"] {
        let message = one_error(
            &format!("[model.preprocess]\nresize = \"crop_pct\"\ncrop_pct = {bad}\n"),
            "model.preprocess.crop_pct",
            3,
        );
        assert!(message.contains("at most 1"), "{message}");
    }
    let c = parse("[model.preprocess]\nresize = \"crop_pct\"\ncrop_pct = 1\n").unwrap();
    assert_eq!(c.model().preprocess.resize, Geometry::CropPct(1.0));
}

#[test]
fn input_size_is_a_side_or_height_and_width() {
    for bad in ["0", "[224]", "[224, 0]", "[224, 224, 3]", "\"224x224\""] {
        one_error(
            &format!("[model.preprocess]\ninput_size = {bad}\n"),
            "model.preprocess.input_size",
            2,
        );
    }
}

#[test]
fn a_uint8_input_refuses_normalization() {
    let errors = parse(
        "[model.preprocess]\ninput_type = \"uint8\"\ndivide_by = 255\nmean = [0.5, 0.5, 0.5]\nstd = [0.5, 0.5, 0.5]\n",
    )
    .unwrap_err();
    assert_eq!(
        keys(&errors),
        [
            ("model.preprocess.divide_by", Some(3)),
            ("model.preprocess.mean", Some(4)),
            ("model.preprocess.std", Some(5)),
        ]
    );
    assert!(errors[0].message.contains("uint8"), "{}", errors[0].message);
}

#[test]
fn top_k_is_at_least_one_and_only_for_softmax() {
    let message = one_error(
        "[model.postprocess]\noutput = \"softmax\"\ntop_k = 0\n",
        "model.postprocess.top_k",
        3,
    );
    assert!(message.contains("at least 1"), "{message}");
    let message = one_error(
        "[model.postprocess]\ntop_k = 5\n",
        "model.postprocess.top_k",
        2,
    );
    assert!(message.contains("softmax"), "{message}");
}

#[test]
fn a_sigmoid_threshold_lies_between_zero_and_one() {
    let message = one_error(
        "[model]\nthreshold = 1.5\n[model.postprocess]\noutput = \"sigmoid\"\n",
        "model.threshold",
        2,
    );
    assert!(message.contains("between 0 and 1"), "{message}");
    // The seed's raw threshold may be anything finite.
    assert_eq!(
        parse("[model]\nthreshold = 1.5\n")
            .unwrap()
            .model()
            .threshold,
        1.5
    );
}

#[test]
fn every_recipe_mistake_is_reported_at_once() {
    let errors = parse(
        "[model.preprocess]\nresize = \"shorter_side\"\ninterpolation = \"cubic\"\nmean = [1, 2]\n\
         std = [1, 0, 1]\nlayuot = \"nhwc\"\n[model.postprocess]\noutput = \"softmax\"\ntop_k = 0\n",
    )
    .unwrap_err();
    assert_eq!(
        keys(&errors),
        [
            ("model.preprocess.resize", Some(2)),
            ("model.preprocess.interpolation", Some(3)),
            ("model.preprocess.mean", Some(4)),
            ("model.preprocess.std[1]", Some(5)),
            ("model.preprocess.layuot", Some(6)),
            ("model.postprocess.top_k", Some(9)),
        ]
    );
    assert!(
        errors[4].message.contains("did you mean `layout`"),
        "{}",
        errors[4].message
    );
}
