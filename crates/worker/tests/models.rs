//! Several models in one service, on fake backends: each route finds its model by name and
//! version, the Triton repository routes answer or refuse, metrics name the model, and a flood on
//! one model fills that model's queue only.

mod common;

use std::time::Duration;

use arbiter_infer::Labels;
use arbiter_scoreboard::{Route, Scoreboard, SlotState};
use arbiter_worker::{
    Batching, InferenceQueue, InferenceThread, Models, Peer, Recipe, ServedModel, Service,
};
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use serde_json::Value;

/// One fake model, its labels each class's index with `prefix` before it.
struct Spec {
    name: &'static str,
    version: &'static str,
    prefix: &'static str,
    delay: Duration,
    queue: usize,
}

/// A service with these models (the first the default), its scoreboard and inference threads.
fn service_of(specs: &[Spec]) -> (Service, Scoreboard, Vec<InferenceThread>) {
    let board = Scoreboard::create(1).unwrap();
    let slot = board.slot(0);
    slot.reset(std::process::id(), 1);
    let names: Vec<(&str, &str)> = specs.iter().map(|s| (s.name, s.version)).collect();
    slot.set_models(&names);
    let mut served = Vec::new();
    let mut threads = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let batching = Batching {
            max_batch_size: 1,
            max_delay: Duration::ZERO,
            queue_capacity: spec.queue,
        };
        let fake = Fake::new(spec.delay);
        let (queue, thread) =
            InferenceQueue::start(move || Ok(fake), &batching, 1, slot.model(i), || {}).unwrap();
        let labels: Vec<String> = (0..20).map(|c| format!("{}{c}", spec.prefix)).collect();
        served.push(ServedModel {
            name: spec.name.into(),
            version: spec.version.into(),
            labels: Labels::parse(&serde_json::to_string(&labels).unwrap()).unwrap(),
            threshold: 0.5,
            recipe: Recipe::SEED,
            queue,
            batching,
            on_gpu: false,
            nice: 0,
            stats: slot.model(i),
        });
        threads.push(thread);
    }
    slot.set_state(SlotState::Ready);
    let mut settings = config(options("").limits);
    settings.preprocess_threads = 1;
    let service = Service::new(settings, Models::new(served, 0), board.clone(), slot);
    (service, board, threads)
}

fn spec(name: &'static str, version: &'static str, prefix: &'static str) -> Spec {
    Spec {
        name,
        version,
        prefix,
        delay: Duration::ZERO,
        queue: 8,
    }
}

async fn call(service: &Service, req: Request<Full<Bytes>>) -> (u16, Value) {
    let response = service.handle(req, Peer::Unix).await;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn image_post(path: &str) -> Request<Full<Bytes>> {
    // White: every one of the fake's outputs is above the threshold, so every label is kept.
    let (ct, body) = multipart::curl("image", "w.png", "image/png", &png(8, 8, [255, 255, 255]));
    Request::post(path)
        .header("content-type", ct)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn get_req(path: &str) -> Request<Full<Bytes>> {
    Request::get(path).body(Full::default()).unwrap()
}

fn post_req(path: &str) -> Request<Full<Bytes>> {
    Request::post(path).body(Full::default()).unwrap()
}

/// The label prefix of the model that answered a `/model_predict`.
fn answered_by(body: &Value) -> String {
    let first = body["result"][0].as_str().unwrap_or_default();
    first
        .trim_end_matches(|c: char| c.is_ascii_digit())
        .to_owned()
}

#[tokio::test]
async fn each_route_finds_its_model_by_name_and_version() {
    let (service, _board, _threads) = service_of(&[
        spec("voc", "1", "voc-"),
        spec("effnet", "1", "eff1-"),
        spec("effnet", "12", "eff12-"),
    ]);
    let cases = [
        ("/model_predict", "voc-"),
        ("/model_predict?model=voc", "voc-"),
        // Without a version, the highest: 12 > 1 as numbers.
        ("/model_predict?model=effnet", "eff12-"),
        ("/model_predict?model=effnet&version=1", "eff1-"),
        (
            "/model_predict?version=1&model=effnet&other=ignored",
            "eff1-",
        ),
        ("/model_predict/effnet", "eff12-"),
        ("/model_predict/effnet/versions/1", "eff1-"),
    ];
    for (path, prefix) in cases {
        let (status, body) = call(&service, image_post(path)).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(answered_by(&body), prefix, "{path}: {body}");
    }
    for (path, status, words) in [
        ("/model_predict?model=nope", 404, "unknown model `nope`"),
        (
            "/model_predict/effnet/versions/3",
            404,
            "has no version `3`; it has 1, 12",
        ),
        ("/model_predict?model=", 400, "once, with a value"),
        ("/model_predict?model=voc&model=effnet", 400, "once"),
        ("/model_predict?version=1", 400, "needs `model`"),
    ] {
        let (got, body) = call(&service, image_post(path)).await;
        assert_eq!(got, status, "{path}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(words), "{path}: {error}");
    }
}

#[tokio::test]
async fn kserve_and_triton_routes_for_every_model() {
    let (service, _board, _threads) = service_of(&[
        spec("voc", "1", "voc-"),
        spec("effnet", "1", "eff1-"),
        spec("effnet", "12", "eff12-"),
    ]);
    let (status, meta) = call(&service, get_req("/v2/models/effnet")).await;
    assert_eq!(status, 200);
    assert_eq!(meta["name"], "effnet");
    assert_eq!(meta["versions"], serde_json::json!(["1", "12"]));
    let (status, ready) = call(&service, get_req("/v2/models/effnet/versions/1/ready")).await;
    assert_eq!((status, &ready["version"]), (200, &Value::from("1")));
    let (status, _) = call(&service, get_req("/v2/models/nope/ready")).await;
    assert_eq!(status, 404);

    let (status, config) = call(&service, get_req("/v2/models/voc/config")).await;
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["name"], "voc");
    assert_eq!(config["platform"], "onnxruntime_onnx");
    assert_eq!(config["max_batch_size"], 8);
    assert_eq!(config["input"][0]["data_type"], "TYPE_FP32");
    assert_eq!(config["input"][0]["dims"], serde_json::json!([3, 8, 8]));
    assert_eq!(config["output"][0]["dims"], serde_json::json!([20]));

    let (status, index) = call(&service, post_req("/v2/repository/index")).await;
    assert_eq!(status, 200);
    // Triton's request body, and what is not one.
    for (body, want) in [
        (r#"{"ready": true}"#, 200),
        (r#"{"ready": {}}"#, 400),
        ("[]", 400),
    ] {
        let req = Request::post("/v2/repository/index")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        assert_eq!(call(&service, req).await.0, want, "{body}");
    }
    assert_eq!(
        index,
        serde_json::json!([
            {"name": "voc", "version": "1", "state": "READY"},
            {"name": "effnet", "version": "1", "state": "READY"},
            {"name": "effnet", "version": "12", "state": "READY"},
        ])
    );
    let (status, _) = call(&service, post_req("/v2/repository/models/voc/load")).await;
    assert_eq!(status, 200);
    let (status, body) = call(&service, post_req("/v2/repository/models/nope/load")).await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("arbiter reload"));
    let (status, _) = call(&service, post_req("/v2/repository/models/nope/unload")).await;
    assert_eq!(status, 404);
    let (status, body) = call(&service, post_req("/v2/repository/models/voc/unload")).await;
    assert_eq!(status, 403);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("remove model `voc`")
    );

    // The infer answer names the model and version that ran.
    let input: Vec<f32> = vec![1.0; 3 * 8 * 8];
    let req = kserve_binary_infer_f32("effnet/versions/1", &input);
    let (status, answer) = call(&service, req).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model_name"], "effnet");
    assert_eq!(answer["model_version"], "1");
}

fn kserve_binary_infer_f32(model: &str, input: &[f32]) -> Request<Full<Bytes>> {
    let body = serde_json::json!({
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 8, 8], "data": input}],
    });
    Request::post(format!("/v2/models/{model}/infer"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

#[tokio::test]
async fn requests_are_counted_under_their_model() {
    let (service, board, _threads) =
        service_of(&[spec("voc", "1", "voc-"), spec("effnet", "1", "eff-")]);
    for path in [
        "/model_predict",
        "/model_predict?model=effnet",
        "/model_predict/effnet",
    ] {
        assert_eq!(call(&service, image_post(path)).await.0, 200);
    }
    assert_eq!(call(&service, get_req("/healthz")).await.0, 200);
    let slot = board.slot(0);
    assert_eq!(slot.model(0).requests(Route::ModelPredict, 200), 1);
    assert_eq!(slot.model(1).requests(Route::ModelPredict, 200), 2);
    assert_eq!(slot.requests(Route::Health, 200), 1);
    let page = arbiter_scoreboard::render_prometheus(&board);
    let series = "arbiter_requests_total{worker=\"0\",generation=\"1\",model=\"effnet\",version=\"1\",route=\"model_predict\",status=\"200\"}";
    assert_eq!(metric(&page, series), Some(2.0), "{page}");
}

#[tokio::test]
async fn a_flood_on_one_model_fills_its_queue_only() {
    let (service, board, _threads) = service_of(&[
        Spec {
            delay: Duration::from_millis(100),
            queue: 1,
            ..spec("slow", "1", "slow-")
        },
        spec("quick", "1", "quick-"),
    ]);
    let flood = (0..12).map(|_| call(&service, image_post("/model_predict/slow")));
    let quick = async {
        // While the slow model's queue is full, the quick one answers every request.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut statuses = Vec::new();
        for _ in 0..5 {
            statuses.push(call(&service, image_post("/model_predict/quick")).await.0);
        }
        statuses
    };
    let (flooded, quick) = tokio::join!(futures_util::future::join_all(flood), quick);
    assert_eq!(quick, vec![200; 5]);
    let refused = flooded.iter().filter(|(s, _)| *s == 503).count();
    let answered = flooded.iter().filter(|(s, _)| *s == 200).count();
    assert!(refused > 0, "the slow model never refused: {flooded:?}");
    assert_eq!(refused + answered, 12, "{flooded:?}");
    let slot = board.slot(0);
    assert_eq!(
        slot.model(0).requests(Route::ModelPredict, 503),
        refused as u64
    );
    assert_eq!(slot.model(1).requests(Route::ModelPredict, 503), 0);
}
