//! The trained model out of the box: `etc/efficientnet-lite0.toml` served in-process on the
//! set-up's EfficientNet-Lite0 (ImageNet), every photo of `var/photos` and the decode corpus's odd
//! ones, against the Python reference (Pillow, numpy and onnxruntime on the model's recipe:
//! `var/reference/efficientnet-lite0.json`, written by `scripts/setup`) and, for the six original
//! photos, against the goldens committed in `tests/data/efficientnet-lite0-goldens.json`, so a
//! set-up that drifted (another model, another recipe, another ONNX Runtime) fails here.
//!
//! Two doors: `/model_predict` (the scored answer: the same five classes in the same order, the
//! same scores) and KServe v2 infer (the raw logits, from the worker's own input tensor for the
//! photo). `tests/trained.rs` at the repository root holds the third, `arbiter predict`.
//!
//! The tolerances: the worker's input tensor is meant to be the reference's bit for bit (the
//! recipe's resize is Pillow's arithmetic; `recipes.rs` checks the tensors' sha256 on five
//! recipes), and ONNX Runtime on the same tensor and model gives the same logits, so what is left
//! is the files' rounding: logits written with 6 decimals and scores with 7, read back into
//! `f32`. The worker's softmax is computed in `f64` and rounded once to `f32`, as numpy's
//! `float64` softmax is before the reference rounds it. `LOGIT_TOLERANCE` and `SCORE_TOLERANCE`
//! are ten times those roundings or more, room for ONNX Runtime summing in another order on
//! another thread count (the reference ran on 2 threads), and still far below what a different
//! resize, crop or normalization changes. docs/trained-model.md has the differences measured.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use arbiter_infer::Engine;
use arbiter_scoreboard::Scoreboard;
use arbiter_worker::{Elements, Service, WorkerOptions};
use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::Request;
use serde_json::Value;
use sha2::{Digest, Sha256};

const CONFIG: &str = "etc/efficientnet-lite0.toml";
const LOGIT_TOLERANCE: f32 = 1e-5;
const SCORE_TOLERANCE: f32 = 1e-6;

/// One photo's answer in the reference or the goldens.
struct Expected {
    sha256: String,
    /// `(index, name, score)`, most likely first.
    top5: Vec<(usize, String, f32)>,
    logits: Vec<f32>,
}

/// A reference file: the model's sha256 and each photo's answer, by its label (`NAME` in
/// `var/photos`, `corpus/NAME` in `tests/corpus`).
struct Reference {
    model_sha256: String,
    photos: BTreeMap<String, Expected>,
}

fn read_reference(path: PathBuf, remedy: &str) -> Reference {
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}. {remedy}", path.display()));
    let json: Value = serde_json::from_str(&text).unwrap();
    let floats = |v: &Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    let photos = json["photos"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(label, p)| {
            let top5 = p["top5"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    (
                        c[0].as_u64().unwrap() as usize,
                        c[1].as_str().unwrap().to_owned(),
                        c[2].as_f64().unwrap() as f32,
                    )
                })
                .collect();
            let expected = Expected {
                sha256: p["sha256"].as_str().unwrap().to_owned(),
                top5,
                logits: floats(&p["logits"]),
            };
            (label.clone(), expected)
        })
        .collect();
    Reference {
        model_sha256: json["model_sha256"].as_str().unwrap().to_owned(),
        photos,
    }
}

/// The set-up's reference: every photo of `var/photos` and the corpus's odd ones.
fn reference() -> Reference {
    read_reference(
        var("reference/efficientnet-lite0.json"),
        "Run scripts/setup first: it writes the Python reference.",
    )
}

/// The committed goldens (six photos), after checking that the set-up's model and photos are
/// the ones they were made from.
fn goldens() -> Reference {
    let goldens = read_reference(
        repo_root().join("tests/data/efficientnet-lite0-goldens.json"),
        "It is in git.",
    );
    let model = var("models/efficientnet-lite0.onnx");
    let bytes = std::fs::read(&model).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}. Run scripts/setup first.",
            model.display()
        )
    });
    assert_eq!(
        format!("{:x}", Sha256::digest(&bytes)),
        goldens.model_sha256,
        "{} is not the model the goldens were made from: the set-up drifted",
        model.display()
    );
    for (label, golden) in &goldens.photos {
        let bytes = std::fs::read(photo_path(label)).unwrap();
        assert_eq!(
            format!("{:x}", Sha256::digest(&bytes)),
            golden.sha256,
            "{label} is not the photo the goldens were made from"
        );
    }
    goldens
}

/// A photo's file from its label in the reference.
fn photo_path(label: &str) -> PathBuf {
    match label.strip_prefix("corpus/") {
        Some(name) => repo_root().join("tests/corpus").join(name),
        None => var("photos").join(label),
    }
}

/// The trained config's service in-process, on the real model, and its options.
fn serve() -> (Service, WorkerOptions, Scoreboard) {
    let (service, labels, opts, board) = serve_config(CONFIG, |model| Engine::load(&model));
    assert_eq!(labels.len(), 1000, "ImageNet's 1000 class names");
    (service, opts, board)
}

async fn send_request(service: &Service, req: Request<Full<Bytes>>) -> (u16, Value) {
    let (status, body) = handle(service, req).await;
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)));
    (status, json)
}

/// Checks a scored `/model_predict` answer against the expected top 5: the same classes in the
/// same order, the same names, each score within `SCORE_TOLERANCE`. Returns the largest score
/// difference.
fn check_scored(label: &str, answer: &Value, expected: &Expected) -> f32 {
    assert_eq!(answer["status"], 1, "{label}: {answer}");
    let names: Vec<&str> = expected.top5.iter().map(|c| c.1.as_str()).collect();
    assert_eq!(answer["result"], serde_json::json!(names), "{label}");
    let classes = answer["classes"].as_array().expect("a scored answer");
    assert_eq!(classes.len(), 5, "{label}: {answer}");
    let mut worst = 0f32;
    for (ours, (index, name, score)) in classes.iter().zip(&expected.top5) {
        assert_eq!(ours["index"], *index, "{label}: {answer}");
        assert_eq!(ours["label"], name.as_str(), "{label}: {answer}");
        let diff = (ours["score"].as_f64().unwrap() as f32 - score).abs();
        assert!(
            diff <= SCORE_TOLERANCE,
            "{label}: {name}'s score differs by {diff:e}: {answer}"
        );
        worst = worst.max(diff);
    }
    worst
}

/// `/model_predict` with the image's bytes: the same top 5 and scores as the reference on every
/// photo, and as the goldens on theirs; the cat photo is a tiger cat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_predict_answers_as_the_python_reference() {
    let (reference, goldens) = (reference(), goldens());
    assert!(reference.photos.len() >= 30, "every photo and odd file");
    assert_eq!(reference.model_sha256, goldens.model_sha256);
    let (service, _opts, _board) = serve();
    let mut worst = 0f32;
    for (label, expected) in &reference.photos {
        let bytes = std::fs::read(photo_path(label)).unwrap();
        let req = Request::post("/model_predict")
            .header("content-type", "application/octet-stream")
            .body(Full::new(Bytes::from(bytes)))
            .unwrap();
        let (status, answer) = send_request(&service, req).await;
        assert_eq!(status, 200, "{label}: {answer}");
        worst = worst.max(check_scored(label, &answer, expected));
        if let Some(golden) = goldens.photos.get(label) {
            worst = worst.max(check_scored(&format!("{label} (golden)"), &answer, golden));
        }
        if label == "chelsea.png" {
            assert_eq!(answer["result"][0], "tiger cat", "the cat photo: {answer}");
        }
    }
    assert!(
        goldens
            .photos
            .keys()
            .all(|l| reference.photos.contains_key(l))
    );
    eprintln!(
        "/model_predict: {} photos with the reference's top 5; largest score difference {worst:e}",
        reference.photos.len()
    );
}

/// KServe v2 infer on the worker's own input tensor for each photo (FP32 binary data): the
/// model's raw logits, as the reference's and the goldens'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_infer_gives_the_python_references_logits() {
    let (reference, goldens) = (reference(), goldens());
    let (service, opts, _board) = serve();
    let name = &opts.models[0].name;
    assert_eq!(name, "efficientnet-lite0");
    let req = Request::get(format!("/v2/models/{name}"))
        .body(Full::default())
        .unwrap();
    let (status, meta) = send_request(&service, req).await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["inputs"][0]["datatype"], "FP32", "{meta}");
    assert_eq!(
        meta["inputs"][0]["shape"],
        serde_json::json!([-1, 3, 224, 224])
    );
    let input = meta["inputs"][0]["name"].as_str().unwrap().to_owned();
    let mut worst = 0f32;
    for (label, expected) in &reference.photos {
        let bytes = std::fs::read(photo_path(label)).unwrap();
        let Elements::F32(tensor) = opts.models[0]
            .recipe
            .input(&bytes, opts.limits.max_pixels, (224, 224))
            .unwrap_or_else(|e| panic!("{label}: {e}"))
        else {
            panic!("{label}: a float32 input")
        };
        let data: Vec<u8> = tensor.iter().flat_map(|v| v.to_le_bytes()).collect();
        let req = kserve_binary_infer(name, &input, &[1, 3, 224, 224], "FP32", &data);
        let (status, answer) = send_request(&service, req).await;
        assert_eq!(status, 200, "{label}: {answer}");
        let output = &answer["outputs"][0];
        assert_eq!(output["shape"], serde_json::json!([1, 1000]), "{label}");
        let logits = kserve_output(&answer);
        let mut against = vec![("reference", expected)];
        against.extend(goldens.photos.get(label).map(|g| ("goldens", g)));
        for (whose, expected) in against {
            let diff = max_difference(&logits, &expected.logits);
            assert!(
                diff <= LOGIT_TOLERANCE,
                "{label}: logits differ from the {whose}' by {diff:e}"
            );
            worst = worst.max(diff);
        }
    }
    eprintln!(
        "KServe v2 infer: {} photos with the reference's logits; largest difference {worst:e}",
        reference.photos.len()
    );
}
