//! End-to-end parity of the model recipes beyond the seed's: each config of
//! `scripts/reference.py`'s `MODEL_CASES` (the examples of `etc/` on the set-up's test models, and
//! the two of `crates/worker/tests/recipes/`) served in-process on the real model, every photo of
//! `var/photos`, its bad ones and the vision crate's odd images posted to `/model_predict`. The
//! worker's own path (the recipe's decode, resize and crop, the batch written by the recipe's
//! normalization, channel order, layout and element type, ONNX Runtime, the answer) must give the
//! same input tensor, bit for bit (its sha256), the same raw outputs and the same classes as the
//! team's Python pipeline built on Pillow, numpy and onnxruntime (`var/reference/models.json`,
//! written by `scripts/setup`); and refuse what Pillow refuses.

mod common;

use std::sync::{Arc, Mutex};

use arbiter_infer::{Engine, InferError, Labels};
use arbiter_scoreboard::Scoreboard;
use arbiter_worker::{Backend, Batch, ModelInfo, Service, WorkerOptions};
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// What one model run saw and gave: the sha256 of its input's bytes, and its outputs.
type Seen = Arc<Mutex<Vec<(String, Vec<f32>)>>>;

/// The real engine, recording each run's input and outputs.
struct Recording {
    engine: Engine,
    seen: Seen,
}

impl Backend for Recording {
    fn info(&self) -> ModelInfo {
        self.engine.info()
    }

    fn run(&mut self, batch: Batch<'_>, n: usize) -> Result<Vec<f32>, InferError> {
        let outputs = Backend::run(&mut self.engine, batch, n)?;
        let bytes: Vec<u8> = match batch {
            Batch::F32(values) => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Batch::U8(values) => values.to_vec(),
        };
        let sha = format!("{:x}", Sha256::digest(&bytes));
        self.seen.lock().unwrap().push((sha, outputs.clone()));
        Ok(outputs)
    }
}

/// A service for the config at `config` (relative to the repository) on the real model,
/// recording each run.
fn serve(config: &str) -> (Service, Labels, WorkerOptions, Seen, Scoreboard) {
    let seen = Seen::default();
    let recorded = Arc::clone(&seen);
    let (service, labels, opts, board) = serve_config(config, move |model| {
        Ok(Recording {
            engine: Engine::load(&model)?,
            seen: recorded,
        })
    });
    (service, labels, opts, seen, board)
}

async fn predict(service: &Service, image: Vec<u8>) -> (u16, String) {
    let req = Request::post("/model_predict")
        .header("content-type", "application/octet-stream")
        .body(Full::new(Bytes::from(image)))
        .unwrap();
    let (status, body) = handle(service, req).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_recipe_answers_as_its_python_pipeline() {
    let path = var("reference/models.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}. Run scripts/setup first: it writes the Python reference.",
            path.display()
        )
    });
    let reference: Value = serde_json::from_str(&text).unwrap();
    let cases = reference["cases"].as_array().unwrap();
    assert!(cases.len() >= 4, "at least four recipes beyond the seed's");
    for case in cases {
        let config = case["config"].as_str().unwrap();
        let (service, labels, opts, seen, _board) = serve(config);
        let (mut exact, mut compared, mut refused, mut skipped) = (0, 0, 0, 0);
        let mut worst = 0f32;
        for image in case["images"].as_array().unwrap() {
            let file = image["file"].as_str().unwrap();
            if image.get("skipped").is_some() {
                skipped += 1;
                continue;
            }
            let bytes = std::fs::read(repo_root().join(file)).unwrap();
            let (status, body) = predict(&service, bytes).await;
            let label = format!("{config}: {file}");
            if let Some(error) = image.get("error") {
                assert!(
                    (400..500).contains(&status),
                    "{label}: Pillow refused it ({error}), we answered {status} {body}"
                );
                refused += 1;
                continue;
            }
            assert_eq!(status, 200, "{label}: {body}");
            let (sha, outputs) = seen.lock().unwrap().pop().expect("a model run");
            assert_eq!(
                sha,
                image["input_sha256"].as_str().unwrap(),
                "{label}: the input tensor differs from Python's"
            );
            let expected: Vec<f32> = image["output"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            let diff = max_difference(&outputs, &expected);
            assert!(diff <= 1e-5, "{label}: outputs differ by {diff}");
            worst = worst.max(diff);
            exact += usize::from(diff == 0.0);
            compared += 1;
            // The answer is the recipe's on Python's outputs, and keeps Python's classes.
            let answer = opts.models[0]
                .recipe
                .answer(&expected, &labels, opts.models[0].threshold);
            assert_eq!(body.as_bytes(), answer, "{label}");
            let classes: Vec<String> = image["classes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| labels.name(i.as_u64().unwrap() as usize).to_owned())
                .collect();
            let ours: Value = serde_json::from_str(&body).unwrap();
            let result = if classes.is_empty() {
                Value::from("No Categories")
            } else {
                Value::from(classes)
            };
            assert_eq!(ours["result"], result, "{label}");
        }
        eprintln!(
            "{config}: {compared} images with the same input tensor, {exact} of them with \
             outputs bit-identical (largest difference {worst:e}); {refused} refused as Pillow \
             refuses them; {skipped} skipped (too large for Pillow's whole resize)"
        );
        assert!(compared >= 30, "{config}: only {compared} images compared");
    }
}

/// KServe v2 on the Keras example's NHWC `uint8` model: the metadata gives the model's real
/// input, and infer takes the recipe's raw pixels as UINT8 binary data, giving Python's outputs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_takes_a_uint8_nhwc_input() {
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(var("reference/models.json")).unwrap())
            .unwrap();
    let case = reference["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["config"] == "etc/keras.toml")
        .expect("the Keras example in the reference");
    let image = case["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["file"].as_str().unwrap().ends_with("/chelsea.png"))
        .unwrap();
    let (service, _labels, opts, _seen, _board) = serve("etc/keras.toml");
    let name = &opts.models[0].name;
    let get = Request::get(format!("/v2/models/{name}"))
        .body(Full::default())
        .unwrap();
    let response = service.handle(get, arbiter_worker::Peer::Unix).await;
    let meta: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(meta["inputs"][0]["datatype"], "UINT8");
    assert_eq!(
        meta["inputs"][0]["shape"],
        serde_json::json!([-1, 224, 224, 3])
    );

    let bytes = std::fs::read(repo_root().join(image["file"].as_str().unwrap())).unwrap();
    let arbiter_worker::Elements::U8(pixels) = opts.models[0]
        .recipe
        .input(&bytes, opts.limits.max_pixels, (224, 224))
        .unwrap()
    else {
        panic!("a uint8 input")
    };
    let input = meta["inputs"][0]["name"].as_str().unwrap();
    let req = kserve_binary_infer(name, input, &[1, 224, 224, 3], "UINT8", &pixels);
    let (status, body) = handle(&service, req).await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    let outputs = kserve_output(&answer);
    let expected: Vec<f32> = image["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert!(max_difference(&outputs, &expected) <= 1e-5);
}
