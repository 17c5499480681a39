//! The service with the real model (made by `scripts/setup`): the seed's answers for every test
//! photo, and KServe outputs equal to the model's own.

mod common;

use std::path::PathBuf;

use arbiter_infer::Engine;
use arbiter_infer::{Device, ModelOptions};
use arbiter_worker::Backend;
use common::*;
use serde_json::Value;

fn model_options() -> ModelOptions {
    ModelOptions {
        path: resnet50(),
        runtime_library: Some(onnxruntime()),
        device: Device::Cpu,
        intra_threads: 2,
        max_batch: 8,
        expected_classes: Some(20),
        input: arbiter_infer::InputRecipe::SEED,
    }
}

fn manifest() -> Value {
    let text = std::fs::read_to_string(var("reference/manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn real_server() -> TestServer {
    let opts = model_options();
    let (service, board, _slot, _thread) = service_with(
        move || Engine::load(&opts),
        options("").models.remove(0).batching,
        options("").limits,
    );
    TestServer::start(service, board, options("").limits)
}

/// The reference's 224x224 RGB pixels as the model's normalised CHW input.
fn reference_tensor(pixels: &str) -> Vec<f32> {
    let rgb = std::fs::read(var(&format!("reference/{pixels}"))).unwrap();
    let plane = 224 * 224;
    assert_eq!(rgb.len(), 3 * plane);
    let (mean, std) = ([0.485f32, 0.456, 0.406], [0.229f32, 0.224, 0.225]);
    let mut out = vec![0f32; 3 * plane];
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (f32::from(px[c]) / 255.0 - mean[c]) / std[c];
        }
    }
    out
}

/// The lanes (one single-thread session each) answer exactly as the two-thread session, all of
/// them on the one mapping of the prepared weights.
#[test]
fn lanes_answer_like_the_whole_model() {
    let cache = tempfile::tempdir().unwrap();
    let mut whole = Engine::load_shared(&model_options(), Some(cache.path()), false)
        .unwrap()
        .with_lanes(true);
    let manifest = manifest();
    let image = &manifest["images"][0];
    let input = reference_tensor(image["pixels"].as_str().unwrap());
    let expected = whole.run(&input, 1).unwrap();
    let mut lanes = whole.lanes().expect("lanes are on")().unwrap();
    assert_eq!(lanes.len(), 2, "one lane per intra-op thread");
    for lane in &mut lanes {
        let got = lane.run(&input, 1).unwrap();
        for (g, e) in got.iter().zip(&expected) {
            assert!((g - e).abs() <= 1e-5, "{got:?} vs {expected:?}");
        }
    }
    // The three sessions use one mapping of the weights file (ONNX Runtime alone maps each
    // initializer of each session).
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let cache_path = cache.path().to_str().unwrap();
    let mapped: Vec<&str> = maps
        .lines()
        .filter(|l| l.contains(cache_path) && l.ends_with("model.onnx.data"))
        .collect();
    assert_eq!(mapped.len(), 1, "{mapped:#?}");
    // Without `with_lanes(true)`, no lanes.
    let mut plain = Engine::load(&model_options()).unwrap();
    assert!(plain.lanes().is_none());
}

#[test]
fn every_photo_gets_the_seeds_answer() {
    let server = real_server();
    let manifest = manifest();
    let labels_file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../etc/class_name.json");
    assert_eq!(std::fs::read_to_string(labels_file).unwrap().trim(), LABELS);
    for image in manifest["images"].as_array().unwrap() {
        let file = image["file"].as_str().unwrap();
        let data = std::fs::read(var(&format!("photos/{file}"))).unwrap();
        let (ct, body) = multipart::curl("image", file, "application/octet-stream", &data);
        let r = request(
            server.addr,
            "POST",
            "/model_predict",
            &[("Content-Type", &ct)],
            &body,
        );
        assert_eq!(r.status, 200, "{file}: {}", r.text());
        assert_eq!(r.json(), image["prediction"], "{file}");
    }
}

#[test]
fn kserve_outputs_equal_the_models() {
    let server = real_server();
    let mut direct = Engine::load(&model_options()).unwrap();
    let manifest = manifest();
    let images: Vec<&Value> = manifest["images"]
        .as_array()
        .unwrap()
        .iter()
        .take(3)
        .collect();
    let mut batch = Vec::new();
    for image in &images {
        batch.extend(reference_tensor(image["pixels"].as_str().unwrap()));
    }
    let n = images.len();
    let expected = direct.run(&batch, n).unwrap();

    // JSON tensors, nested one level per image.
    let nested: Vec<&[f32]> = batch.chunks(3 * 224 * 224).collect();
    let body = serde_json::json!({
        "id": "photos",
        "inputs": [{"name": "input", "shape": [n, 3, 224, 224], "datatype": "FP32", "data": nested}],
    });
    let r = request(
        server.addr,
        "POST",
        "/v2/models/resnet50/infer",
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["outputs"][0]["name"], "output");
    assert_eq!(v["outputs"][0]["shape"], serde_json::json!([n, 20]));
    let got: Vec<f32> = serde_json::from_value(v["outputs"][0]["data"].clone()).unwrap();
    assert_eq!(got, expected);
    for (i, image) in images.iter().enumerate() {
        let reference: Vec<f32> = serde_json::from_value(image["output"].clone()).unwrap();
        for (a, b) in got[i * 20..(i + 1) * 20].iter().zip(&reference) {
            assert!(
                (a - b).abs() < 1e-4,
                "{}: {a} vs python's {b}",
                image["file"]
            );
        }
    }

    // The binary tensor extension, as Triton's client sends it.
    let header = serde_json::json!({
        "inputs": [{"name": "input", "shape": [n, 3, 224, 224], "datatype": "FP32", "parameters": {"binary_data_size": batch.len() * 4}}],
        "outputs": [{"name": "output", "parameters": {"binary_data": true}}],
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    for v in &batch {
        body.extend_from_slice(&v.to_le_bytes());
    }
    let len = header.len().to_string();
    let r = request(
        server.addr,
        "POST",
        "/v2/models/resnet50/infer",
        &[
            ("Content-Type", "application/octet-stream"),
            ("Inference-Header-Content-Length", &len),
        ],
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let json_len: usize = r
        .header("inference-header-content-length")
        .unwrap()
        .parse()
        .unwrap();
    let head: Value = serde_json::from_slice(&r.body[..json_len]).unwrap();
    assert_eq!(
        head["outputs"][0]["parameters"]["binary_data_size"],
        n * 20 * 4
    );
    let got: Vec<f32> = r.body[json_len..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn a_missing_model_fails_to_load_with_its_path() {
    let mut opts = model_options();
    opts.path = PathBuf::from("/nonexistent/model.onnx");
    let err = Engine::load(&opts).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/model.onnx"), "{err}");
}
