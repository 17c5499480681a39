//! The real model (var/models/resnet50-voc20.onnx) against the Python reference outputs
//! (var/reference/manifest.json), both made by scripts/setup.
//!
//! The input is computed here from the reference's resized pixels (NAME.rgb), so this test does not
//! depend on the vision crate: x = (p / 255 - mean) / std, HWC to CHW.

use arbiter_infer::{Device, Labels, Model, ModelOptions, classify, init_runtime};
use arbiter_testkit::setup;
use serde_json::Value;

const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];
const SIDE: usize = 224;

fn load_model(max_batch: usize) -> Model {
    init_runtime(Some(&setup::onnxruntime())).expect("ONNX Runtime loads");
    Model::load(
        &ModelOptions {
            path: setup::resnet50(),
            runtime_library: None,
            device: Device::Cpu,
            intra_threads: 1,
            max_batch,
            expected_classes: Some(20),
            input: arbiter_infer::InputRecipe::SEED,
        },
        false,
    )
    .expect("the model loads")
}

/// One reference image: its normalized CHW input, raw outputs and the seed's JSON answer.
struct Reference {
    file: String,
    input: Vec<f32>,
    output: Vec<f32>,
    prediction: Value,
}

fn references() -> Vec<Reference> {
    let manifest_path = setup::var("reference/manifest.json");
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    let images = manifest["images"].as_array().expect("manifest has images");
    assert!(!images.is_empty(), "no reference images: run scripts/setup");
    images
        .iter()
        .map(|img| {
            let file = img["file"].as_str().unwrap().to_owned();
            let pixels_path = manifest_path.with_file_name(img["pixels"].as_str().unwrap());
            let pixels = std::fs::read(&pixels_path).unwrap();
            assert_eq!(pixels.len(), SIDE * SIDE * 3, "{}", pixels_path.display());
            let output = img["output"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            Reference {
                file,
                input: normalize_chw(&pixels),
                output,
                prediction: img["prediction"].clone(),
            }
        })
        .collect()
}

/// torchvision's ToTensor + Normalize, computed as the reference does (float32 throughout).
fn normalize_chw(hwc: &[u8]) -> Vec<f32> {
    let mut chw = vec![0.0; hwc.len()];
    for (i, px) in hwc.chunks_exact(3).enumerate() {
        for c in 0..3 {
            chw[c * SIDE * SIDE + i] = (f32::from(px[c]) / 255.0 - MEAN[c]) / STD[c];
        }
    }
    chw
}

#[test]
fn outputs_and_predictions_match_the_python_reference() {
    let mut model = load_model(1);
    assert_eq!(model.input_size(), (224, 224));
    assert_eq!(model.num_classes(), 20);
    assert_eq!(
        (model.input_name(), model.output_name()),
        ("input", "output")
    );
    let labels = Labels::load(&setup::repo_root().join("etc/class_name.json")).unwrap();
    for r in references() {
        let out = model.run(&r.input, 1).unwrap();
        let diff = arbiter_testkit::max_difference(&out, &r.output);
        assert!(diff <= 1e-3, "{}: outputs differ by {diff}", r.file);
        let prediction = serde_json::to_value(classify(&out, &labels, 0.5)).unwrap();
        assert_eq!(prediction, r.prediction, "{}", r.file);
    }
}

#[test]
fn batch_of_eight_equals_eight_singles() {
    let mut model = load_model(8);
    let refs = references();
    let eight: Vec<&Reference> = refs.iter().cycle().take(8).collect();
    let batch: Vec<f32> = eight.iter().flat_map(|r| r.input.iter().copied()).collect();
    let batched = model.run(&batch, 8).unwrap();
    assert_eq!(batched.len(), 8 * 20);
    for (i, r) in eight.iter().enumerate() {
        let single = model.run(&r.input, 1).unwrap();
        let diff = arbiter_testkit::max_difference(&batched[i * 20..(i + 1) * 20], &single);
        assert!(
            diff <= 1e-4,
            "{} (position {i}): batch and single differ by {diff}",
            r.file
        );
    }
}
