//! Model loading, checking and running on the tiny committed models in tests/data/.
//!
//! They need the ONNX Runtime library that scripts/setup fetches into var/onnxruntime/.

use std::path::Path;

use arbiter_infer::{Device, Engine, InferError, Model, ModelOptions, init_runtime};
use arbiter_testkit::setup;

/// Loads ONNX Runtime from var/, or fails telling how to get it.
fn runtime() {
    init_runtime(Some(&setup::onnxruntime())).expect("ONNX Runtime loads");
}

fn opts(model: &str) -> ModelOptions {
    ModelOptions {
        path: Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(model),
        runtime_library: None,
        device: Device::Cpu,
        intra_threads: 1,
        max_batch: 4,
        expected_classes: None,
        input: arbiter_infer::InputRecipe::SEED,
    }
}

fn load(model: &str) -> Result<Model, InferError> {
    runtime();
    Model::load(&opts(model), false)
}

/// What tiny_ok.onnx computes (see make_models.py): channel means times W plus B.
fn tiny_expected(image: &[f32]) -> Vec<f32> {
    let means: Vec<f32> = image
        .chunks(16)
        .map(|c| c.iter().sum::<f32>() / 16.0)
        .collect();
    (0..5)
        .map(|c| {
            let dot: f32 = (0..3)
                .map(|k| means[k] * (k as f32 + 1.0) * (c as f32 - 2.0) / 4.0)
                .sum();
            dot + c as f32 / 10.0
        })
        .collect()
}

/// `n` distinct 3x4x4 images.
fn images(n: usize) -> Vec<f32> {
    (0..n * 48)
        .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
        .collect()
}

fn assert_close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol, "index {i}: {x} vs {y}");
    }
}

#[test]
fn model_is_send() {
    fn send<T: Send>() {}
    send::<Model>();
}

#[test]
fn tiny_model_loads_and_runs() {
    let mut model = load("tiny_ok.onnx").unwrap();
    assert_eq!(model.input_size(), (4, 4));
    assert_eq!(model.num_classes(), 5);
    assert_eq!(model.input_name(), "input");
    assert_eq!(model.output_name(), "output");
    assert_eq!(model.image_len(), 48);
    assert!(model.load_time() > std::time::Duration::ZERO);

    let batch = images(3);
    let out = model.run(&batch, 3).unwrap();
    let expected: Vec<f32> = batch.chunks(48).flat_map(tiny_expected).collect();
    assert_close(&out, &expected, 1e-5);

    // Each image alone gives the same as in the batch.
    for (i, image) in batch.chunks(48).enumerate() {
        assert_close(
            &model.run(image, 1).unwrap(),
            &out[i * 5..(i + 1) * 5],
            1e-6,
        );
    }
    assert!(model.run::<f32>(&[], 0).unwrap().is_empty());
}

#[test]
fn bad_batches_are_refused() {
    let mut model = load("tiny_ok.onnx").unwrap();
    let err = model.run(&images(5), 5).unwrap_err();
    assert!(matches!(err, InferError::Batch(_)), "{err}");
    assert!(err.to_string().contains("maximum batch of 4"), "{err}");
    let err = model.run(&images(2), 3).unwrap_err();
    assert!(err.to_string().contains("96 floats for 3 images"), "{err}");
    // The model still works after refusing.
    assert_eq!(model.run(&images(1), 1).unwrap().len(), 5);
}

#[test]
fn fixed_batch_model_runs_any_batch() {
    let mut model = load("tiny_fixed1.onnx").unwrap();
    let batch = images(3);
    let out = model.run(&batch, 3).unwrap();
    let expected: Vec<f32> = batch.chunks(48).flat_map(tiny_expected).collect();
    assert_close(&out, &expected, 1e-5);
}

fn load_err(model: &str) -> String {
    let err = load(model).expect_err(model);
    assert!(matches!(err, InferError::Shape { .. }), "{model}: {err}");
    err.to_string()
}

/// The seed's recipe (NCHW) refuses a channels-last model, naming its input; `layout = "nhwc"`
/// takes it (tests/recipe.rs).
#[test]
fn channels_last_input_is_refused_by_the_seed_recipe() {
    let err = load("nhwc.onnx").expect_err("nhwc.onnx");
    assert!(matches!(err, InferError::Recipe { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "model input `x` is float32 [1, 224, 224, 3] (NHWC) but model.preprocess.layout = \"nchw\""
    );
}

#[test]
fn other_signatures_are_refused() {
    let msg = load_err("two_outputs.onnx");
    assert!(
        msg.contains("model has 2 outputs (`output`, `extra`)"),
        "{msg}"
    );
    assert!(msg.contains("expected exactly one output [N, C]"), "{msg}");

    let msg = load_err("output_rank3.onnx");
    assert!(
        msg.contains("model output `output` has shape [N, 3, 4]; expected [N, C]"),
        "{msg}"
    );

    // A symbolic height and width need the config's input_size (tests/recipe.rs).
    let err = load("dynamic_hw.onnx").expect_err("dynamic_hw.onnx");
    assert!(matches!(err, InferError::Recipe { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(
            "model input `input` is float32 [N, 3, H, W] (NCHW) but model.preprocess.input_size \
             is not set"
        ),
        "{msg}"
    );

    let msg = load_err("int_input.onnx");
    assert!(
        msg.contains("model input `input` has element type"),
        "{msg}"
    );
    assert!(msg.contains("float32"), "{msg}");
}

#[test]
fn class_count_must_match_labels() {
    runtime();
    let mut o = opts("tiny_ok.onnx");
    o.expected_classes = Some(20);
    let err = Model::load(&o, false).unwrap_err();
    assert!(
        matches!(
            err,
            InferError::LabelCount {
                model: 5,
                labels: 20
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "the model has 5 classes but the label file has 20 names"
    );
    o.expected_classes = Some(5);
    Model::load(&o, false).unwrap();
}

#[test]
fn missing_model_is_named() {
    let err = load("no_such_model.onnx").unwrap_err();
    assert!(matches!(err, InferError::ModelMissing { .. }), "{err}");
    assert!(err.to_string().contains("no_such_model.onnx"), "{err}");
}

#[test]
fn not_a_model_is_refused() {
    let err = load("make_models.py").unwrap_err();
    assert!(matches!(err, InferError::ModelLoad { .. }), "{err}");
    assert!(err.to_string().contains("make_models.py"), "{err}");
    let source = std::error::Error::source(&err)
        .expect("the cause is kept")
        .to_string();
    assert!(!source.is_empty());
}

#[test]
fn cuda_fails_clearly_without_fallback() {
    runtime();
    let mut o = opts("tiny_ok.onnx");
    o.device = Device::Cuda(0);
    let err = Model::load(&o, false).unwrap_err();
    assert!(
        matches!(err, InferError::CudaUnavailable { device: 0, .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("could not be registered for cuda:0"), "{msg}");
    assert!(
        msg.contains("no CUDA support") && msg.contains("onnxruntime-gpu"),
        "{msg}"
    );
}

#[test]
fn runtime_init_is_idempotent_and_checks_the_file() {
    runtime();
    let lib = setup::onnxruntime();
    let first = init_runtime(Some(&lib)).unwrap();
    assert_eq!(init_runtime(Some(&lib)).unwrap(), first);
    assert_eq!(init_runtime(None).unwrap(), first);
    let err = init_runtime(Some(Path::new("/nonexistent/libonnxruntime.so"))).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/libonnxruntime.so"),
        "{err}"
    );
    assert!(err.to_string().contains("run scripts/setup"), "{err}");
}

/// An engine's lanes are off unless asked for; asked for, they are one single-thread session
/// per intra-op thread that answers like the engine, handed out once.
#[test]
fn engine_lanes_answer_like_the_engine() {
    runtime();
    let three = ModelOptions {
        intra_threads: 3,
        ..opts("tiny_ok.onnx")
    };
    let mut plain = Engine::load(&three).unwrap();
    assert!(plain.take_lanes().is_none(), "no lanes unless asked for");
    let mut engine = Engine::load(&three).unwrap().with_lanes(true);
    let lanes = engine.take_lanes().expect("lanes on").load().unwrap();
    assert!(engine.take_lanes().is_none(), "handed out once");
    assert_eq!(lanes.len(), 3);
    let batch = images(2);
    let expected = engine.run(&batch, 2).unwrap();
    for mut lane in lanes {
        assert_close(&lane.run(&batch, 2).unwrap(), &expected, 1e-6);
    }
}

/// A cache folder that cannot be made only costs the shared weights: the original model loads.
#[test]
fn engine_falls_back_to_the_original_model_when_it_cannot_prepare() {
    runtime();
    let dir = tempfile::tempdir().unwrap();
    let not_a_folder = dir.path().join("file");
    std::fs::write(&not_a_folder, b"").unwrap();
    let cache = not_a_folder.join("cache");
    let mut engine = Engine::load_shared(&opts("tiny_ok.onnx"), Some(&cache), false).unwrap();
    let batch = images(1);
    assert_close(
        &engine.run(&batch, 1).unwrap(),
        &tiny_expected(&batch),
        1e-5,
    );
    let err = Engine::load_shared(&opts("missing.onnx"), Some(&cache), false).unwrap_err();
    assert!(matches!(err, InferError::ModelMissing { .. }), "{err}");
    assert!(err.to_string().contains("missing.onnx"), "{err}");
}
