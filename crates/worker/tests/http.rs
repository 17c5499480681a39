//! The HTTP service on a real socket, with a fake model: the seed's request as clients send it,
//! every refusal with its status and message, limits, overload, cancellation, metrics, drain.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arbiter_worker::{Batching, Limits};
use common::*;

/// `n` clients posting a white image at once; join them for their statuses.
fn crowd(addr: std::net::SocketAddr, n: usize) -> Vec<std::thread::JoinHandle<u16>> {
    (0..n)
        .map(|_| {
            let image = white();
            std::thread::spawn(move || predict(addr, &image).status)
        })
        .collect()
}

fn white() -> Vec<u8> {
    png(16, 12, [255, 255, 255])
}

const ALL_LABELS: &str = r#"{"result":["Aeroplane","Bicycle","Bird","Boat","Bottle","Bus","Car","Cat","Chair","Cow","Dining Table","Dog","Horse","Motorbike","Person","Potted Plant","Sheep","Sofa","Train","TV Monitor"],"status":1}"#;

fn start(fake: Fake, batching: Batching, limits: Limits) -> TestServer {
    let (service, board, _slot, _thread) = service(fake, batching, limits.clone());
    TestServer::start(service, board, limits)
}

#[test]
fn the_seed_request_as_clients_send_it() {
    let server = start(
        Fake::new(Duration::ZERO),
        options("").models.remove(0).batching,
        options("").limits,
    );
    // curl -F image=@photo.png
    let r = predict(server.addr, &white());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.text(), ALL_LABELS);
    // Python requests: a hex boundary, no part Content-Type, another field first.
    let (ct, body) = multipart::requests("black.png", &png(5, 5, [0, 0, 0]));
    let r = request(
        server.addr,
        "POST",
        "/model_predict",
        &[("Content-Type", &ct)],
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), r#"{"result":"No Categories","status":0}"#);
    // A raw image body.
    let r = request(
        server.addr,
        "POST",
        "/model_predict",
        &[("Content-Type", "image/png")],
        &white(),
    );
    assert_eq!((r.status, r.text()), (200, ALL_LABELS.to_owned()));
    // Chunked transfer, as streaming clients send it.
    let (ct, body) = multipart::curl("image", "w.png", "image/png", &white());
    let mut req = format!(
        "POST /model_predict HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: {ct}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for part in body.chunks(100) {
        req.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        req.extend_from_slice(part);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let r = send(server.addr, &req).unwrap();
    assert_eq!((r.status, r.text()), (200, ALL_LABELS.to_owned()));
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let server = start(
        Fake::new(Duration::ZERO),
        options("").models.remove(0).batching,
        options("").limits,
    );
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (ct, body) = multipart::curl("image", "w.png", "image/png", &white());
    for _ in 0..3 {
        let mut req = format!("POST /model_predict HTTP/1.1\r\nHost: t\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n", body.len())
            .into_bytes();
        req.extend_from_slice(&body);
        stream.write_all(&req).unwrap();
        let r = read_response(&mut stream).unwrap();
        assert_eq!(r.status, 200);
    }
}

#[test]
fn every_bad_request_gets_its_status_and_a_json_error() {
    let limits = Limits {
        max_body_bytes: 64 * 1024,
        max_pixels: 10_000,
        ..options("").limits
    };
    let server = start(
        Fake::new(Duration::ZERO),
        options("").models.remove(0).batching,
        limits,
    );
    let a = server.addr;
    let post =
        |headers: &[(&str, &str)], body: &[u8]| request(a, "POST", "/model_predict", headers, body);
    let multipart = |field: &str, data: &[u8]| {
        let (ct, body) = multipart::curl(field, "x.jpg", "image/jpeg", data);
        post(&[("Content-Type", &ct)], &body)
    };

    let r = get(a, "/model_predict");
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
    assert!(r.error().contains("GET"), "{}", r.error());
    let r = request(a, "PUT", "/v2/health/live", &[], b"");
    assert_eq!((r.status, r.header("allow")), (405, Some("GET")));
    let r = get(a, "/nope");
    assert_eq!(r.status, 404);
    assert!(r.error().contains("/nope"));

    let r = post(&[("Content-Type", "application/json")], b"{}");
    assert_eq!(r.status, 400);
    assert!(r.error().contains("multipart/form-data"), "{}", r.error());
    let r = post(&[], b"abc");
    assert_eq!(r.status, 400);
    assert!(r.error().contains("no Content-Type"), "{}", r.error());
    let r = multipart("picture", &white());
    assert_eq!(r.status, 400);
    assert!(r.error().contains("no `image` field"), "{}", r.error());
    let r = post(&[("Content-Type", "multipart/form-data")], b"--x\r\n");
    assert_eq!(r.status, 400);
    assert!(r.error().contains("boundary"), "{}", r.error());
    let r = post(
        &[("Content-Type", "multipart/form-data; boundary=abc")],
        b"garbage without boundary",
    );
    assert_eq!(r.status, 400);
    assert!(r.error().contains("multipart"), "{}", r.error());

    // Images: empty, not an image, truncated, too many pixels, a decompression bomb.
    let r = multipart("image", b"");
    assert_eq!(r.status, 400);
    assert!(r.error().contains("empty"), "{}", r.error());
    let r = multipart("image", b"this is not an image at all");
    assert_eq!(r.status, 415, "{}", r.text());
    let jpeg = {
        let mut out = std::io::Cursor::new(Vec::new());
        image::RgbImage::from_pixel(64, 64, image::Rgb([10, 200, 30]))
            .write_to(&mut out, image::ImageFormat::Jpeg)
            .unwrap();
        out.into_inner()
    };
    let r = multipart("image", &jpeg[..jpeg.len() / 2]);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.error().contains("truncated"), "{}", r.error());
    let r = multipart("image", &png(200, 100, [1, 2, 3]));
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.error().contains("pixels"), "{}", r.error());

    // Body over the limit: declared, and streamed without a length.
    let big = vec![b'x'; 100 * 1024];
    let (ct, body) = multipart::curl("image", "big.png", "image/png", &big);
    let r = post(&[("Content-Type", &ct)], &body);
    assert_eq!(r.status, 413);
    assert!(r.error().contains("limit"), "{}", r.error());
    let r = post(&[("Content-Type", "image/png")], &big);
    assert_eq!(r.status, 413);
    let mut req = format!(
        "POST /model_predict HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: {ct}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for part in body.chunks(8192) {
        req.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        req.extend_from_slice(part);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let r = send(a, &req).unwrap();
    assert_eq!(r.status, 413, "{}", r.text());

    // KServe: unknown model or version, bad JSON.
    let r = get(a, "/v2/models/other");
    assert_eq!(r.status, 404);
    assert!(r.error().contains("resnet50"));
    let r = get(a, "/v2/models/resnet50/versions/7/ready");
    assert_eq!(r.status, 404);
    let r = request(
        a,
        "POST",
        "/v2/models/resnet50/infer",
        &[("Content-Type", "application/json")],
        b"{",
    );
    assert_eq!(r.status, 400);
    assert!(r.error().contains("JSON"), "{}", r.error());
    let r = request(a, "POST", "/v2/models/resnet50/infer", &[("Content-Type", "application/json")], br#"{"inputs":[{"name":"input","shape":[1,3,2,2],"datatype":"FP32","data":[1,2,3,4,5,6,7,8,9,10,11,12]}]}"#);
    assert_eq!(r.status, 422);
    assert!(r.error().contains("[N, 3, 8, 8]"), "{}", r.error());
}

#[test]
fn the_photos_from_setup_that_must_be_refused() {
    let server = start(
        Fake::new(Duration::ZERO),
        options("").models.remove(0).batching,
        options("").limits,
    );
    for (file, status, words) in [
        ("bad/bomb.png", 413, "pixels"),
        ("bad/truncated.jpg", 400, "truncated"),
        ("bad/truncated.png", 400, "truncated"),
        ("bad/empty.jpg", 400, "empty"),
        ("bad/text.jpg", 415, "unsupported"),
    ] {
        let data = std::fs::read(var(&format!("photos/{file}"))).unwrap();
        let r = predict(server.addr, &data);
        assert_eq!(r.status, status, "{file}: {}", r.text());
        assert!(r.error().contains(words), "{file}: {}", r.error());
    }
}

#[test]
fn kserve_routes_describe_and_run_the_model() {
    let server = start(
        Fake::new(Duration::ZERO),
        options("").models.remove(0).batching,
        options("").limits,
    );
    let a = server.addr;
    let v = get(a, "/v2").json();
    assert_eq!(v["name"], "arbiter");
    assert_eq!(get(a, "/v2/health/live").status, 200);
    assert_eq!(get(a, "/v2/health/ready").status, 200);
    assert_eq!(get(a, "/healthz").status, 200);
    assert_eq!(get(a, "/readyz").status, 200);
    let meta = get(a, "/v2/models/resnet50").json();
    assert_eq!(meta["inputs"][0]["shape"], serde_json::json!([-1, 3, 8, 8]));
    assert_eq!(meta["outputs"][0]["shape"], serde_json::json!([-1, 20]));
    assert_eq!(get(a, "/v2/models/resnet50/versions/1").json(), meta);
    assert_eq!(get(a, "/v2/models/resnet50/ready").json()["ready"], true);

    // Two images; the fake echoes each image's first 20 values.
    let data: Vec<f32> = (0..2 * 3 * 64).map(|i| i as f32 * 0.5).collect();
    let body = serde_json::json!({
        "id": "req-1",
        "inputs": [{"name": "input", "shape": [2, 3, 8, 8], "datatype": "FP32", "data": data}],
        "outputs": [{"name": "output"}],
    });
    let r = request(
        a,
        "POST",
        "/v2/models/resnet50/versions/1/infer",
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["id"], "req-1");
    assert_eq!(v["outputs"][0]["shape"], serde_json::json!([2, 20]));
    let out: Vec<f32> = serde_json::from_value(v["outputs"][0]["data"].clone()).unwrap();
    let expected: Vec<f32> = data[..20].iter().chain(&data[192..212]).copied().collect();
    assert_eq!(out, expected);
    let page = get(a, "/openapi.yaml");
    assert_eq!(page.status, 200);
    assert!(page.text().starts_with("openapi: 3"));
}

#[test]
fn metrics_move_with_known_traffic() {
    let server = start(
        Fake::new(Duration::ZERO),
        options("").models.remove(0).batching,
        options("").limits,
    );
    for _ in 0..3 {
        assert_eq!(predict(server.addr, &white()).status, 200);
    }
    assert_eq!(get(server.addr, "/nope").status, 404);
    assert_eq!(get(server.addr, "/model_predict").status, 405);
    let page = get(server.addr, "/metrics");
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let page = page.text();
    let l = "worker=\"0\",generation=\"1\"";
    // The series of a model's requests carry its name and version.
    let m = "worker=\"0\",generation=\"1\",model=\"resnet50\",version=\"1\"";
    assert_eq!(
        metric(
            &page,
            &format!("arbiter_requests_total{{{m},route=\"model_predict\",status=\"200\"}}")
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &page,
            &format!("arbiter_requests_total{{{l},route=\"other\",status=\"404\"}}")
        ),
        Some(1.0)
    );
    let route405 = format!("arbiter_requests_total{{{l},route=\"model_predict\",status=\"405\"}}");
    assert_eq!(metric(&page, &route405), Some(1.0));
    for stage in ["decode", "preprocess", "queue_wait", "inference"] {
        let v = metric(
            &page,
            &format!("arbiter_stage_duration_seconds_count{{{m},stage=\"{stage}\"}}"),
        );
        assert_eq!(v, Some(3.0), "{stage}");
    }
    assert_eq!(
        metric(&page, &format!("arbiter_batch_size_count{{{m}}}")),
        Some(3.0)
    );
    // The /metrics request itself is in flight while the page renders.
    assert_eq!(
        metric(&page, &format!("arbiter_in_flight_requests{{{l}}}")),
        Some(1.0)
    );
    assert_eq!(
        metric(&page, &format!("arbiter_model_load_seconds{{{m}}}")),
        Some(0.0)
    );
}

#[test]
fn a_full_queue_answers_503_with_retry_after_and_never_500() {
    let batching = Batching {
        max_batch_size: 1,
        max_delay: Duration::ZERO,
        queue_capacity: 1,
    };
    let fake = Fake::new(Duration::from_millis(500));
    let server = start(fake.clone(), batching, options("").limits);
    let addr = server.addr;
    let image = white();
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let image = image.clone();
            std::thread::spawn(move || predict(addr, &image))
        })
        .collect();
    let replies: Vec<Response> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let busy: Vec<&Response> = replies.iter().filter(|r| r.status == 503).collect();
    assert_eq!(
        ok + busy.len(),
        replies.len(),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(ok >= 1 && !busy.is_empty(), "ok {ok}, busy {}", busy.len());
    for r in busy {
        assert_eq!(r.header("retry-after"), Some("1"));
        assert!(r.error().contains("overloaded"));
    }
    assert_eq!(fake.ran.load(Ordering::SeqCst), ok);
}

/// Images are decoded at most two batches ahead of the model: with a slow model and many
/// clients, the queue never holds more than two batches' worth.
#[test]
fn decoding_stays_two_batches_ahead_of_the_model() {
    let batching = Batching {
        max_batch_size: 1,
        max_delay: Duration::ZERO,
        queue_capacity: 32,
    };
    let limits = options("").limits;
    let (service, board, slot, _thread) = service(
        Fake::new(Duration::from_millis(150)),
        batching,
        limits.clone(),
    );
    let server = TestServer::start(service, board, limits);
    let addr = server.addr;
    let clients = crowd(addr, 10);
    let mut deepest = 0;
    while clients.iter().any(|c| !c.is_finished()) {
        deepest = deepest.max(slot.model(0).queue_depth());
        std::thread::sleep(Duration::from_millis(5));
    }
    for c in clients {
        assert_eq!(c.join().unwrap(), 200);
    }
    assert!(deepest >= 1, "the queue was never seen holding a job");
    assert!(
        deepest <= 2,
        "{deepest} decoded images waited for a model that takes one at a time"
    );
}

/// With lanes, a request alone runs on the whole backend (every thread); a crowd runs on the
/// lanes side by side; and nothing ever runs beside a whole-backend run. The worker serves
/// before its lanes are loaded.
#[test]
fn a_lone_request_runs_on_every_thread_and_a_crowd_side_by_side() {
    let batching = Batching {
        max_batch_size: 1,
        max_delay: Duration::ZERO,
        queue_capacity: 32,
    };
    let mut fake = Fake::new(Duration::from_millis(100));
    fake.lanes = 2;
    let loading = fake.lanes_gate.lock().unwrap();
    let server = start(fake.clone(), batching, options("").limits);
    let addr = server.addr;
    // Answered while the lanes are still loading (the gate is held).
    assert_eq!(predict(addr, &white()).status, 200);
    drop(loading);
    assert_eq!(predict(addr, &white()).status, 200);
    let lone: Vec<_> = fake.runs.lock().unwrap().clone();
    assert_eq!(
        lone,
        vec![("whole", vec![]), ("whole", vec![])],
        "requests one after another run on every thread"
    );
    // A request arriving during a run on every thread waits for it, then runs alone too.
    let first = std::thread::spawn(move || predict(addr, &white()).status);
    while fake.runs.lock().unwrap().len() < 3 {
        std::thread::sleep(Duration::from_millis(2));
    }
    let second = std::thread::spawn(move || predict(addr, &white()).status);
    assert_eq!((first.join().unwrap(), second.join().unwrap()), (200, 200));
    assert_eq!(fake.runs.lock().unwrap()[3], ("whole", vec![]));
    let clients = crowd(addr, 8);
    for c in clients {
        assert_eq!(c.join().unwrap(), 200);
    }
    let runs = fake.runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 12, "{runs:?}");
    for (engine, beside) in &runs {
        assert!(
            !beside.contains(&"whole") && (*engine != "whole" || beside.is_empty()),
            "a run on every thread shared the cores: {runs:?}"
        );
        assert!(beside.len() <= 1, "more runs at once than lanes: {runs:?}");
    }
    assert!(
        runs.iter()
            .any(|(e, beside)| *e == "lane" && beside == &vec!["lane"]),
        "the crowd never ran on two lanes at once: {runs:?}"
    );
}

#[test]
fn batches_gather_concurrent_requests() {
    let batching = Batching {
        max_batch_size: 4,
        max_delay: Duration::from_millis(50),
        queue_capacity: 16,
    };
    let fake = Fake::new(Duration::from_millis(100));
    let server = start(fake.clone(), batching, options("").limits);
    let addr = server.addr;
    let clients = crowd(addr, 9);
    for c in clients {
        assert_eq!(c.join().unwrap(), 200);
    }
    let batches = fake.batches.lock().unwrap().clone();
    assert_eq!(batches.iter().sum::<usize>(), 9);
    assert!(batches.iter().all(|&n| n <= 4), "{batches:?}");
    assert!(batches.len() < 9, "some requests were batched: {batches:?}");
}

#[test]
fn a_client_that_leaves_is_not_computed() {
    let batching = Batching {
        max_batch_size: 1,
        max_delay: Duration::ZERO,
        queue_capacity: 8,
    };
    let fake = Fake::new(Duration::from_millis(800));
    let server = start(fake.clone(), batching, options("").limits);
    let addr = server.addr;
    let image = white();
    let first = {
        let image = image.clone();
        std::thread::spawn(move || predict(addr, &image).status)
    };
    std::thread::sleep(Duration::from_millis(100));
    // The second request queues behind the first, then its client hangs up.
    let (ct, body) = multipart::curl("image", "w.png", "image/png", &image);
    let mut gone = TcpStream::connect(addr).unwrap();
    gone.write_all(&encode(
        "POST",
        "/model_predict",
        &[("Content-Type", &ct)],
        &body,
    ))
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    drop(gone);
    assert_eq!(first.join().unwrap(), 200);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        fake.ran.load(Ordering::SeqCst),
        1,
        "the abandoned request was computed"
    );
    let page = get(addr, "/metrics").text();
    let series = "arbiter_requests_total{worker=\"0\",generation=\"1\",model=\"resnet50\",version=\"1\",route=\"model_predict\",status=\"499\"}";
    assert_eq!(metric(&page, series), Some(1.0), "{page}");
}

#[test]
fn slow_clients_time_out_without_blocking_others() {
    let limits = Limits {
        header_read_timeout: Duration::from_millis(1500),
        body_read_timeout: Duration::from_millis(1500),
        ..options("").limits
    };
    let server = start(
        Fake::new(Duration::ZERO),
        options("").models.remove(0).batching,
        limits,
    );
    let addr = server.addr;
    // Trickles its headers.
    let mut slow_head = TcpStream::connect(addr).unwrap();
    slow_head
        .write_all(b"POST /model_predict HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    // Sends its headers, then trickles its body.
    let (ct, body) = multipart::curl("image", "w.png", "image/png", &white());
    let mut slow_body = TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /model_predict HTTP/1.1\r\nHost: t\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    slow_body.write_all(head.as_bytes()).unwrap();
    slow_body.write_all(&body[..10]).unwrap();

    // Meanwhile, others are served at once.
    let started = Instant::now();
    for _ in 0..3 {
        assert_eq!(predict(addr, &white()).status, 200);
    }
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "{:?}",
        started.elapsed()
    );

    for stream in [&mut slow_head, &mut slow_body] {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let r = read_response(stream).unwrap();
        assert_eq!(r.status, 408, "{}", r.text());
        assert!(r.error().contains("within"), "{}", r.error());
        // And the connection is closed.
        let mut rest = Vec::new();
        assert_eq!(stream.read_to_end(&mut rest).unwrap_or(0), 0);
    }
    let page = get(addr, "/metrics").text();
    let l = "worker=\"0\",generation=\"1\"";
    assert_eq!(
        metric(
            &page,
            &format!("arbiter_requests_total{{{l},route=\"other\",status=\"408\"}}")
        ),
        Some(1.0)
    );
    let m = "worker=\"0\",generation=\"1\",model=\"resnet50\",version=\"1\"";
    assert_eq!(
        metric(
            &page,
            &format!("arbiter_requests_total{{{m},route=\"model_predict\",status=\"408\"}}")
        ),
        Some(1.0)
    );
}

#[test]
fn an_oversized_upload_still_reads_its_413() {
    // The client sends its whole body before reading, as Python requests does; the server must
    // not reset the connection under it.
    let server = start(
        Fake::new(Duration::ZERO),
        options("").models.remove(0).batching,
        options("").limits,
    );
    let big = vec![7u8; 24 * 1024 * 1024];
    for content_type in ["image/jpeg", "multipart/form-data; boundary=xyz"] {
        let r = request(
            server.addr,
            "POST",
            "/model_predict",
            &[("Content-Type", content_type)],
            &big,
        );
        assert_eq!(r.status, 413, "{}", r.text());
        assert!(r.error().contains("20971520"), "{}", r.error());
    }
    // With Expect: 100-continue (curl, for large bodies) the answer comes before any body.
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let head = "POST /model_predict HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\nContent-Length: 25165824\r\nExpect: 100-continue\r\n\r\n";
    stream.write_all(head.as_bytes()).unwrap();
    assert_eq!(read_response(&mut stream).unwrap().status, 413);
}

#[test]
fn idle_keep_alive_connections_close() {
    let limits = Limits {
        keepalive_timeout: Duration::from_millis(300),
        ..options("").limits
    };
    let server = start(
        Fake::new(Duration::ZERO),
        options("").models.remove(0).batching,
        limits,
    );
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut stream).unwrap().status, 200);
    let started = Instant::now();
    let mut rest = Vec::new();
    let n = stream.read_to_end(&mut rest).unwrap();
    assert_eq!(n, 0, "closed without a word");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
}

#[test]
fn drain_answers_what_was_accepted_then_stops() {
    let batching = Batching {
        max_batch_size: 1,
        max_delay: Duration::ZERO,
        queue_capacity: 8,
    };
    let fake = Fake::new(Duration::from_millis(300));
    let mut server = start(fake, batching, options("").limits);
    let addr = server.addr;
    let in_flight: Vec<_> = (0..3)
        .map(|_| {
            let image = white();
            std::thread::spawn(move || predict(addr, &image))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(150));
    // An idle keep-alive connection, which the drain closes.
    let mut idle = TcpStream::connect(addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut idle).unwrap().status, 200);

    let started = Instant::now();
    let done = server.drain();
    assert!(server.service.is_draining());
    for c in in_flight {
        let r = c.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    done.join().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    let mut rest = Vec::new();
    assert_eq!(idle.read_to_end(&mut rest).unwrap_or(0), 0);
    assert!(
        TcpStream::connect(addr).is_err(),
        "the listener is closed after the drain"
    );
}

/// A connection accepted before the drain whose request arrives just after it starts is
/// answered, not closed empty (its client had connected, and may already have sent it).
#[test]
fn drain_answers_a_request_sent_on_a_connection_accepted_before_it() {
    let mut server = start(
        Fake::new(Duration::ZERO),
        options("").models.remove(0).batching,
        options("").limits,
    );
    let addr = server.addr;
    let mut early = TcpStream::connect(addr).unwrap();
    early
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // Accepted (a request on another connection shows the accept loop is running), nothing sent.
    assert_eq!(get(addr, "/healthz").status, 200);
    std::thread::sleep(Duration::from_millis(50));
    let done = server.drain();
    std::thread::sleep(Duration::from_millis(100));
    let (ct, body) = multipart::curl("image", "w.png", "image/png", &white());
    early
        .write_all(&encode(
            "POST",
            "/model_predict",
            &[("Content-Type", &ct)],
            &body,
        ))
        .unwrap();
    let reply = read_response(&mut early).expect("an answer, not a closed connection");
    assert_eq!(reply.status, 200, "{}", reply.text());
    done.join().unwrap();
}
