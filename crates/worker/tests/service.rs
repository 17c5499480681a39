//! `Service::handle` without a socket: readiness, drain after `max_requests`, the request
//! deadline, a multipart body in memory, and the bound on bodies held in memory.

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use arbiter_worker::{Limits, Peer, Service, ServiceConfig};
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::Request;

const PEER: Peer = Peer::Unix;

async fn call(service: &Service, req: Request<Full<Bytes>>) -> (u16, Option<String>, String) {
    let response = service.handle(req, PEER).await;
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, retry, String::from_utf8_lossy(&body).into_owned())
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path).body(Full::default()).unwrap()
}

#[tokio::test]
async fn readiness_fails_while_draining() {
    let (service, _board, _slot, _thread) = service(
        Fake::new(Duration::ZERO),
        options("").models.remove(0).batching,
        options("").limits,
    );
    assert_eq!(call(&service, get("/readyz")).await.0, 200);
    assert_eq!(
        call(&service, get("/v2/models/resnet50/ready")).await.0,
        200
    );
    service.start_drain();
    for path in ["/readyz", "/v2/health/ready", "/v2/models/resnet50/ready"] {
        let (status, retry, body) = call(&service, get(path)).await;
        assert_eq!((status, retry.as_deref()), (503, Some("1")), "{path}");
        assert!(body.contains("shutting down"), "{body}");
    }
    assert_eq!(call(&service, get("/healthz")).await.0, 200, "still alive");
}

#[tokio::test]
async fn max_requests_asks_for_a_drain() {
    let config = ServiceConfig {
        max_requests: Some(3),
        ..common::config(options("").limits)
    };
    let (limited, _board, _slot, _thread) = service_configured(
        || Ok(Fake::new(Duration::ZERO)),
        options("").models.remove(0).batching,
        config,
    );
    for _ in 0..2 {
        call(&limited, get("/healthz")).await;
    }
    let wanted = tokio::time::timeout(Duration::from_millis(50), limited.drain_wanted()).await;
    assert!(wanted.is_err(), "not yet after 2 requests");
    call(&limited, get("/healthz")).await;
    tokio::time::timeout(Duration::from_secs(1), limited.drain_wanted())
        .await
        .expect("a drain after 3 requests");
    assert_eq!(limited.answered(), 3);
}

#[tokio::test]
async fn past_the_deadline_the_answer_is_503() {
    let limits = Limits {
        request_deadline: Duration::from_millis(100),
        ..options("").limits
    };
    let (service, _board, slot, _thread) = service(
        Fake::new(Duration::from_millis(400)),
        options("").models.remove(0).batching,
        limits,
    );
    let (ct, body) = multipart::curl("image", "w.png", "image/png", &png(4, 4, [9, 9, 9]));
    let req = Request::post("/model_predict")
        .header("content-type", ct)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let (status, retry, body) = call(&service, req).await;
    assert_eq!((status, retry.as_deref()), (503, Some("1")), "{body}");
    assert!(body.contains("deadline"), "{body}");
    // Counted as the model's request, not as one that names no model.
    assert_eq!(
        slot.model(0)
            .requests(arbiter_scoreboard::Route::ModelPredict, 503),
        1
    );
    assert_eq!(
        slot.requests(arbiter_scoreboard::Route::ModelPredict, 503),
        0
    );
}

#[tokio::test]
async fn an_in_memory_multipart_request() {
    let (service, _board, _slot, _thread) = service(
        Fake::new(Duration::ZERO),
        options("").models.remove(0).batching,
        options("").limits,
    );
    let (ct, body) = multipart::requests("b.png", &png(3, 3, [0, 0, 0]));
    let req = Request::post("/model_predict")
        .header("content-type", ct)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let (status, _, body) = call(&service, req).await;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"result":"No Categories","status":0}"#)
    );
}

/// RFC 7578 allows field names in UTF-8: parts named so beside the image are skipped like any
/// other. A control character in a part's header is outside HTTP's header grammar (RFC 9110's
/// field-value, which RFC 7578 keeps): a clear 400.
#[tokio::test]
async fn utf8_field_names_are_read_and_control_characters_refused() {
    let (service, _board, _slot, _thread) = service(
        Fake::new(Duration::ZERO),
        options("").models.remove(0).batching,
        options("").limits,
    );
    let image = png(3, 3, [0, 0, 0]);
    let body = |name: &[u8]| {
        let mut b = Vec::new();
        b.extend_from_slice(b"--xyz\r\nContent-Disposition: form-data; name=\"");
        b.extend_from_slice(name);
        b.extend_from_slice(b"\"\r\n\r\n[]\r\n--xyz\r\n");
        b.extend_from_slice(b"Content-Disposition: form-data; name=\"image\"; filename=\"\xc3\xa9t\xc3\xa9.png\"\r\n\r\n");
        b.extend_from_slice(&image);
        b.extend_from_slice(b"\r\n--xyz--\r\n");
        Request::post("/model_predict")
            .header("content-type", "multipart/form-data; boundary=xyz")
            .body(Full::new(Bytes::from(b)))
            .unwrap()
    };
    for name in ["image-légende".as_bytes(), "画像".as_bytes(), b"\xc2\x97"] {
        let (status, _, answer) = call(&service, body(name)).await;
        assert_eq!(status, 200, "{}: {answer}", String::from_utf8_lossy(name));
    }
    let (status, _, answer) = call(&service, body(b"a\x05b")).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("malformed multipart body"), "{answer}");
}

#[tokio::test]
async fn uploads_past_the_body_memory_wait_unread_until_the_first_stalls_or_ends() {
    let (service, _board, _slot, _thread) = service(
        Fake::new(Duration::ZERO),
        options("").models.remove(0).batching,
        options("").limits,
    );
    // Two bodies of this declared size do not fit in the worker's body memory (20 MiB with the
    // default 20 MiB body limit) at once.
    let declared = 12 * 1024 * 1024;
    let upload = |service: &Service| {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let read = Arc::new(AtomicBool::new(false));
        let request = Request::post("/model_predict")
            .header("content-type", "image/png")
            .header("content-length", declared)
            .body(Watched {
                rx,
                read: Arc::clone(&read),
            })
            .unwrap();
        let service = service.clone();
        let answer =
            tokio::spawn(async move { service.handle(request, PEER).await.status().as_u16() });
        (tx, read, answer)
    };
    let first_image = png(8, 8, [255, 255, 255]);
    let (first_tx, first_read, first) = upload(&service);
    assert!(became_true(&first_read, Duration::from_secs(5)).await);
    // The first client keeps sending, a byte every 20 ms: the second body is not read meanwhile.
    let dribbled = 15;
    let dribbler = {
        let tx = first_tx.clone();
        let bytes = first_image[..dribbled].to_vec();
        tokio::spawn(async move {
            for b in bytes {
                tx.send(Bytes::from(vec![b])).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let (second_tx, second_read, second) = upload(&service);
    assert!(
        !became_true(&second_read, Duration::from_millis(250)).await,
        "the second body was read while the first, still sending, held the memory"
    );
    dribbler.await.unwrap();
    // Then the first client stalls: it gives its room back, and the second body is read.
    assert!(
        became_true(&second_read, Duration::from_secs(3)).await,
        "a stalled body kept the memory"
    );
    first_tx
        .send(Bytes::copy_from_slice(&first_image[dribbled..]))
        .await
        .unwrap();
    drop(first_tx);
    second_tx
        .send(Bytes::from(png(8, 8, [0, 0, 0])))
        .await
        .unwrap();
    drop(second_tx);
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(second.await.unwrap(), 200);
}
