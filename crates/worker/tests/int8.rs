//! Serving an INT8 model is serving a model: the seed's config with its `path` on the set-up's
//! static INT8 ResNet50 (`var/models/resnet50-voc20-int8.onnx`, `scripts/quantize.py` with its
//! defaults), loaded with shared weights from a prepared cache entry of its own, answers every
//! photo through `/model_predict` and KServe v2 infer, and its outputs are ONNX Runtime's Python
//! binding's own on the INT8 file, fed the worker's own input tensor for each photo.
//!
//! The tolerance: the same ONNX Runtime library, the same model and the same tensor; the integer
//! kernels sum exactly, so what may differ is the order the float parts (dequantization, bias,
//! the last layer's output) are summed in on another thread count, and the prepared file's
//! layout (optimized once at level ALL and reloaded). `TOLERANCE` is far below the INT8 model's
//! own difference from the FP32 model (mean 0.03, scripts/quantize.py's report).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use arbiter_infer::{Engine, Labels, classify};
use arbiter_worker::Elements;
use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::Request;
use serde_json::Value;

const TOLERANCE: f32 = 1e-4;
const SIDE: usize = 224;

fn int8_model() -> PathBuf {
    let path = var("models/resnet50-voc20-int8.onnx");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/setup (it quantizes the seed's model)",
        path.display()
    );
    path
}

/// The seed's config with every path absolute and the model's on the INT8 file, in `dir`.
fn int8_config(dir: &Path) -> PathBuf {
    let root = repo_root();
    let text = std::fs::read_to_string(root.join("etc/arbiter.toml")).unwrap();
    let seed = "path = \"../var/models/resnet50-voc20.onnx\"";
    assert!(
        text.contains(seed),
        "etc/arbiter.toml names the seed's model"
    );
    let text = text
        .replace(
            seed,
            &format!("path = {:?}", int8_model().to_str().unwrap()),
        )
        .replace("\"../", &format!("\"{}/", root.display()))
        .replace(
            "labels = \"class_name.json\"",
            &format!("labels = {:?}", root.join("etc/class_name.json")),
        );
    let path = dir.join("int8.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// ONNX Runtime's Python binding on `model`, each of `n` float32 NCHW images of `tensors` run
/// alone (batch 1): its outputs, one row per image.
fn python_outputs(model: &Path, tensors: &[f32], n: usize, dir: &Path) -> Vec<Vec<f32>> {
    let raw = dir.join("tensors.f32");
    let bytes: Vec<u8> = tensors.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&raw, bytes).unwrap();
    let script = "import sys, json, numpy as np, onnxruntime as ort\n\
        x = np.fromfile(sys.argv[2], dtype='<f4').reshape(int(sys.argv[3]), 3, 224, 224)\n\
        s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n\
        name = s.get_inputs()[0].name\n\
        print(json.dumps([s.run(None, {name: x[i:i+1]})[0][0].tolist() for i in range(len(x))]))\n";
    let out = Command::new(var("venv/bin/python"))
        .args(["-c", script])
        .arg(model)
        .arg(&raw)
        .arg(n.to_string())
        .output()
        .expect("the set-up's venv python runs");
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Vec<f64>> = serde_json::from_slice(&out.stdout).unwrap();
    rows.into_iter()
        .map(|r| r.into_iter().map(|v| v as f32).collect())
        .collect()
}

/// Every photo of `var/photos` that decodes: its name and bytes.
fn photos() -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(var("photos"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_none_or(|e| e != "rgb"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

async fn send_json(service: &arbiter_worker::Service, req: Request<Full<Bytes>>) -> (u16, Value) {
    let (status, body) = handle(service, req).await;
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)));
    (status, json)
}

/// Both routes on every photo against ONNX Runtime Python's INT8 outputs on the worker's tensor;
/// the model loaded from its own prepared cache entry, apart from the FP32 model's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn int8_model_answers_as_onnx_runtime_python() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("prepared");
    let config = int8_config(dir.path());
    let load_cache = cache.clone();
    let (service, labels, opts, _board) = serve_config(config.to_str().unwrap(), move |model| {
        let engine = Engine::load_shared(&model, Some(&load_cache), false)?;
        assert!(
            engine.prepared_key().is_some(),
            "the INT8 model loads with shared weights"
        );
        Ok(engine)
    });
    let entry = &opts.models[0];
    assert_eq!(entry.model.path, int8_model());
    let name = entry.name.clone();

    // The worker's own tensor for each photo that decodes.
    let mut kept = Vec::new();
    let mut tensors = Vec::new();
    for (file, bytes) in photos() {
        match entry
            .recipe
            .input(&bytes, opts.limits.max_pixels, (SIDE as u32, SIDE as u32))
        {
            Ok(Elements::F32(t)) => {
                assert_eq!(t.len(), 3 * SIDE * SIDE);
                tensors.extend_from_slice(&t);
                kept.push((file, bytes, t));
            }
            Ok(_) => panic!("{file}: the seed's recipe feeds float32"),
            Err(_) => {} // a photo the recipe refuses is the FP32 tests' business
        }
    }
    assert!(kept.len() >= 20, "the set-up's photos: {}", kept.len());
    let expected = python_outputs(&int8_model(), &tensors, kept.len(), dir.path());

    let mut worst = 0f32;
    for ((file, bytes, tensor), python) in kept.iter().zip(&expected) {
        // KServe v2 infer on the tensor: the raw outputs.
        let data: Vec<u8> = tensor.iter().flat_map(|v| v.to_le_bytes()).collect();
        let req = kserve_binary_infer(&name, "input", &[1, 3, SIDE, SIDE], "FP32", &data);
        let (status, answer) = send_json(&service, req).await;
        assert_eq!(status, 200, "{file}: {answer}");
        let ours = kserve_output(&answer);
        let diff = max_difference(&ours, python);
        assert!(
            diff <= TOLERANCE,
            "{file}: KServe outputs differ from Python's INT8 by {diff:e}"
        );
        worst = worst.max(diff);

        // /model_predict on the photo: the seed's answer from Python's outputs, unless an output
        // lies within the tolerance of the threshold (where either side is right).
        let req = Request::post("/model_predict")
            .header("content-type", "application/octet-stream")
            .body(Full::new(Bytes::from(bytes.clone())))
            .unwrap();
        let (status, answer) = send_json(&service, req).await;
        assert_eq!(status, 200, "{file}: {answer}");
        let on_edge = python
            .iter()
            .any(|v| (v - entry.threshold).abs() <= TOLERANCE);
        if !on_edge {
            let want = serde_json::to_value(classify(python, &labels, entry.threshold)).unwrap();
            assert_eq!(answer, want, "{file}");
        }
    }
    eprintln!(
        "INT8: {} photos through KServe v2 and /model_predict; largest output difference from \
         ONNX Runtime Python {worst:e}",
        kept.len()
    );

    // The FP32 model prepared in the same cache gets an entry of its own, both held at once.
    let mut fp32 = entry.model.clone();
    fp32.path = resnet50();
    fp32.runtime_library = Some(onnxruntime());
    let a = Engine::load_shared(&fp32, Some(&cache), false).unwrap();
    let mut int8 = entry.model.clone();
    int8.runtime_library = Some(onnxruntime());
    let b = Engine::load_shared(&int8, Some(&cache), false).unwrap();
    let (ka, kb) = (a.prepared_key().unwrap(), b.prepared_key().unwrap());
    assert_ne!(ka, kb, "FP32 and INT8 must not share a prepared entry");
    assert!(cache.join(ka).is_dir() && cache.join(kb).is_dir());
    let _ = Labels::load(&entry.labels).unwrap();
}
