//! The model's input as a preprocessing recipe sees it: layouts, element types and sizes on the
//! tiny committed models in tests/data/ and the set-up's test classifiers in var/models/.

use std::path::{Path, PathBuf};

use arbiter_config::{ElementType, InputSize, TensorLayout};
use arbiter_infer::{Device, InferError, InputRecipe, Labels, Model, ModelOptions, init_runtime};
use arbiter_testkit::setup;

fn data(model: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(model)
}

fn load(path: PathBuf, input: InputRecipe) -> Result<Model, InferError> {
    init_runtime(Some(&setup::onnxruntime())).expect("ONNX Runtime loads");
    let opts = ModelOptions {
        path,
        runtime_library: None,
        device: Device::Cpu,
        intra_threads: 1,
        max_batch: 2,
        expected_classes: None,
        input,
    };
    Model::load(&opts, false)
}

fn recipe(layout: TensorLayout, element: ElementType, size: Option<u32>) -> InputRecipe {
    InputRecipe {
        layout,
        element,
        size: size.map(|s| InputSize {
            height: s,
            width: s,
        }),
    }
}

#[test]
fn a_channels_last_model_runs_with_layout_nhwc() {
    let nhwc = recipe(TensorLayout::Nhwc, ElementType::Float32, None);
    let mut model = load(data("nhwc.onnx"), nhwc).unwrap();
    assert_eq!(model.input_size(), (224, 224));
    assert_eq!(model.input().layout, TensorLayout::Nhwc);
    // y = the mean of each channel over H and W: pixels laid out H, W, C.
    let image: Vec<f32> = (0..224 * 224 * 3).map(|i| (i % 3) as f32).collect();
    let out = model.run(&image, 1).unwrap();
    assert_eq!(out, [0.0, 1.0, 2.0]);
}

#[test]
fn a_symbolic_size_comes_from_the_config() {
    let sized = recipe(TensorLayout::Nchw, ElementType::Float32, Some(6));
    let mut model = load(data("dynamic_hw.onnx"), sized).unwrap();
    assert_eq!(model.input_size(), (6, 6));
    assert_eq!(model.image_len(), 108);
    let image: Vec<f32> = (0..108).map(|i| (i / 36) as f32).collect();
    assert_eq!(model.run(&image, 1).unwrap(), [0.0, 1.0, 2.0]);
}

#[test]
fn a_config_size_that_disagrees_with_a_static_model_is_refused() {
    let other = recipe(TensorLayout::Nchw, ElementType::Float32, Some(224));
    let err = load(data("tiny_ok.onnx"), other).unwrap_err();
    assert_eq!(
        err.to_string(),
        "model input `input` is float32 [N, 3, 4, 4] (NCHW) but model.preprocess.input_size = 224"
    );
}

#[test]
fn an_input_type_the_model_does_not_take_is_refused() {
    let uint8 = recipe(TensorLayout::Nchw, ElementType::Uint8, None);
    let err = load(data("tiny_ok.onnx"), uint8).unwrap_err();
    assert_eq!(
        err.to_string(),
        "model input `input` is float32 [N, 3, 4, 4] (NCHW) but model.preprocess.input_type = \"uint8\""
    );
}

#[test]
fn the_set_up_classifiers_load_with_their_recipes() {
    let labels = 1000;
    let mut nchw = load(
        setup::var("models/classifier-nchw256.onnx"),
        InputRecipe::SEED,
    )
    .unwrap();
    assert_eq!(
        (nchw.input_size(), nchw.num_classes()),
        ((256, 256), labels)
    );
    let out = nchw.run(&vec![0.5f32; nchw.image_len()], 1).unwrap();
    assert_eq!(out.len(), labels);

    let keras = recipe(TensorLayout::Nhwc, ElementType::Uint8, None);
    let mut uint8 = load(setup::var("models/classifier-nhwc-uint8.onnx"), keras).unwrap();
    assert_eq!(uint8.input_size(), (224, 224));
    assert_eq!(uint8.input().element, ElementType::Uint8);
    let pixels = vec![128u8; uint8.image_len() * 2];
    let out = uint8.run(&pixels, 2).unwrap();
    assert_eq!(out.len(), 2 * labels);
    assert_eq!(
        out[..labels],
        out[labels..],
        "the same image, the same answer"
    );
    // A float batch for a uint8 input is a bad batch, not a crash.
    let err = uint8.run(&vec![0.0f32; uint8.image_len()], 1).unwrap_err();
    assert!(matches!(err, InferError::Batch(_)), "{err}");
    assert!(
        err.to_string()
            .contains("float32 values for a model input of uint8"),
        "{err}"
    );
    // The seed's recipe names the model's actual input.
    let err = load(
        setup::var("models/classifier-nhwc-uint8.onnx"),
        InputRecipe::SEED,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("model input `input` is uint8 [N, 224, 224, 3] (NHWC) but"),
        "{err}"
    );

    let any = recipe(TensorLayout::Nchw, ElementType::Float32, Some(240));
    let model = load(setup::var("models/classifier-any-size.onnx"), any).unwrap();
    assert_eq!(model.input_size(), (240, 240));
    let err = load(
        setup::var("models/classifier-any-size.onnx"),
        InputRecipe::SEED,
    )
    .unwrap_err();
    assert!(err.to_string().contains("input_size is not set"), "{err}");
}

/// The set-up's labels, as text and as a JSON list, are the same 1000 names, and a count that
/// is not the model's is refused at load with both numbers.
#[test]
fn the_set_up_labels_load_in_both_forms_and_must_match_the_model() {
    let text = Labels::load(&setup::var("models/classifier-labels.txt")).unwrap();
    let json = Labels::load(&setup::var("models/classifier-labels.json")).unwrap();
    assert_eq!(text, json);
    assert_eq!(text.len(), 1000);
    init_runtime(Some(&setup::onnxruntime())).expect("ONNX Runtime loads");
    let mut opts = ModelOptions {
        path: setup::var("models/classifier-nchw256.onnx"),
        runtime_library: None,
        device: Device::Cpu,
        intra_threads: 1,
        max_batch: 1,
        expected_classes: Some(text.len()),
        input: InputRecipe::SEED,
    };
    Model::load(&opts, false).unwrap();
    opts.expected_classes = Some(20);
    let err = Model::load(&opts, false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the model has 1000 classes but the label file has 20 names"
    );
}

/// A model's inputs and outputs read without running it, symbolic axes by their names.
#[test]
fn read_gives_the_inputs_and_outputs() {
    let sig = arbiter_infer::signature::read(&data("dynamic_hw.onnx"), Some(&setup::onnxruntime()))
        .unwrap();
    let shown: Vec<String> = sig
        .inputs
        .iter()
        .chain(&sig.outputs)
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        shown,
        ["`input` float32 [N, 3, H, W]", "`output` float32 [N, 3]"]
    );
    let sig = arbiter_infer::signature::read(&data("int_input.onnx"), None).unwrap();
    assert_eq!(sig.inputs[0].element, "int64");
    assert!(sig.image_input().is_err());
    let err = arbiter_infer::signature::read(&data("missing.onnx"), None).unwrap_err();
    assert!(matches!(err, InferError::ModelMissing { .. }), "{err}");
}
