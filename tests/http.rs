//! The worker's HTTP service through the real binary: the original service's request as
//! clients send it, answers equal to `arbiter predict`, errors, metrics across workers.

use std::time::Duration;

use crate::util::*;

/// Every test photo: the service's JSON equals `arbiter predict`'s, and the reference's.
#[test]
fn answers_equal_predict_for_every_photo() {
    let mut env = Env::new(2);
    env.start_ready(2);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(var("reference/manifest.json")).unwrap())
            .unwrap();
    let files: Vec<String> = manifest["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["file"].as_str().unwrap().to_string())
        .collect();
    let paths: Vec<_> = files.iter().map(|f| photo(f)).collect();
    let predicted = predict_cli(&env.config, &paths);
    for ((file, path), expected) in files.iter().zip(&paths).zip(&predicted) {
        let response = env.predict(path);
        assert_eq!(response.status, 200, "{file}: {}", response.text());
        assert_eq!(
            response.header("content-type"),
            Some("application/json"),
            "{file}"
        );
        assert_eq!(&response.json(), expected, "{file}");
    }
}

/// With `fast_jpeg`, the 12-megapixel JPEG is answered from its quarter-scale decode: the
/// answer is the Python pipeline's after Pillow's `draft`, and `arbiter predict` agrees.
#[test]
fn fast_jpeg_answers_like_pillows_draft() {
    // Keys at the start of `sections` land in the [model] table written just before them.
    let mut env = Env::with(1, "", "fast_jpeg = true\n");
    env.start_ready(1);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(var("reference/manifest.json")).unwrap())
            .unwrap();
    let big = manifest["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["file"] == "big_12mp.jpg")
        .expect("the reference lists big_12mp.jpg");
    let checked = env.cli(&["check"]);
    assert!(
        String::from_utf8_lossy(&checked.stdout).contains("fast_jpeg = true"),
        "{checked:?}"
    );
    let response = env.predict(&photo("big_12mp.jpg"));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json(), big["draft_prediction"]);
    let predicted = predict_cli(&env.config, &[photo("big_12mp.jpg")]);
    assert_eq!(predicted[0], big["draft_prediction"]);
}

/// The request as Python `requests` sends it (a filename, the file's guessed type) and as
/// Postman does (`image/jpeg`), plus a raw image body.
#[test]
fn clients_send_it_their_own_way() {
    let mut env = Env::new(1);
    env.start_ready(1);
    let data = std::fs::read(photo("grace_hopper.jpg")).unwrap();
    let expected = env.predict(&photo("grace_hopper.jpg")).json();
    for content_type in ["image/jpeg", "application/octet-stream"] {
        let (header, body) = multipart::curl("image", "grace_hopper.jpg", content_type, &data);
        let r = request(
            env.addr(),
            "POST",
            "/model_predict",
            &[("Content-Type", &header)],
            &body,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json(), expected);
    }
    let r = request(
        env.addr(),
        "POST",
        "/model_predict",
        &[("Content-Type", "image/jpeg")],
        &data,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), expected);
}

#[test]
fn bad_requests_get_clear_json_errors() {
    let mut env = Env::new(1);
    env.start_ready(1);
    let addr = env.addr();
    let r = request(addr, "GET", "/model_predict", &[], &[]);
    assert_eq!(r.status, 405);
    assert!(r.header("allow").unwrap().contains("POST"));
    assert!(r.json()["error"].is_string());
    let r = request(
        addr,
        "POST",
        "/model_predict",
        &[("Content-Type", "text/plain")],
        b"hello",
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let (header, body) = multipart::curl(
        "picture",
        "a.jpg",
        "image/jpeg",
        &std::fs::read(photo("grace_hopper.jpg")).unwrap(),
    );
    let r = request(
        addr,
        "POST",
        "/model_predict",
        &[("Content-Type", &header)],
        &body,
    );
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"].as_str().unwrap().contains("image"),
        "{}",
        r.text()
    );
    for (file, statuses) in [
        ("bad/empty.jpg", &[400][..]),
        ("bad/text.jpg", &[400, 415][..]),
        ("bad/truncated.jpg", &[400][..]),
        ("bad/truncated.png", &[400][..]),
        ("bad/bomb.png", &[413, 422][..]),
    ] {
        let r = env.predict(&photo(file));
        assert!(
            statuses.contains(&r.status),
            "{file}: {} {}",
            r.status,
            r.text()
        );
        assert!(r.json()["error"].is_string(), "{file}");
    }
    let r = request(addr, "GET", "/nowhere", &[], &[]);
    assert_eq!(r.status, 404);
    // Nothing of that cost a worker.
    assert_eq!(env.status()["worker_restarts"], 0);
    assert_eq!(env.predict(&photo("chelsea.png")).status, 200);
}

/// /metrics describes every worker, whichever answers.
#[test]
fn metrics_cover_all_workers() {
    let mut env = Env::new(2);
    env.start_ready(2);
    for _ in 0..6 {
        assert_eq!(env.predict(&photo("chelsea.png")).status, 200);
    }
    let _ = request(env.addr(), "GET", "/model_predict", &[], &[]);
    let count = |text: &str, status: &str| -> f64 {
        text.lines()
            .filter(|l| {
                l.starts_with("arbiter_requests_total{")
                    && l.contains("model_predict")
                    && l.contains(&format!("status=\"{status}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    // Ask several times: different workers answer, each must show the same totals.
    for _ in 0..4 {
        let text = env.get("/metrics").text();
        assert_eq!(count(&text, "200"), 6.0, "{text}");
        assert_eq!(count(&text, "405"), 1.0, "{text}");
        assert!(
            text.contains("worker=\"0\"") && text.contains("worker=\"1\""),
            "{text}"
        );
        for family in [
            "arbiter_stage_duration_seconds",
            "arbiter_batch_size",
            "arbiter_queue_depth",
            "arbiter_in_flight_requests",
            "arbiter_worker_restarts_total",
        ] {
            assert!(text.contains(family), "{family} missing:\n{text}");
        }
    }
}

#[test]
fn health_and_kserve_metadata() {
    let mut env = Env::new(1);
    env.start_ready(1);
    assert_eq!(env.get("/healthz").status, 200);
    assert_eq!(env.get("/readyz").status, 200);
    assert_eq!(env.get("/v2/health/ready").status, 200);
    let meta = env.get("/v2/models/resnet50").json();
    assert_eq!(meta["inputs"][0]["name"], "input");
    assert_eq!(meta["outputs"][0]["shape"], serde_json::json!([-1, 20]));
    std::thread::sleep(Duration::from_millis(10));
}
