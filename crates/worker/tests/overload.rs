//! Overload and hostile clients (issue 26), one mechanism per test, none timed: a request
//! refused for a full queue is answered from its headers (its body never read) and closes its
//! connection, unless a request whose body is still arriving past the grace gives it its place;
//! headers trickled below the minimum rate are cut; at `max_connections` the connection longest
//! in its headers makes room for a new one.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::Duration;

use arbiter_testkit::http::{connect, get, read_response};
use arbiter_worker::{Limits, Peer};
use bytes::Bytes;
use common::*;
use hyper::Request;

#[tokio::test]
async fn a_request_refused_for_a_full_queue_is_answered_without_reading_its_body() {
    // A queue of one beside the two preprocessing places: three uploads take every place.
    let mut batching = options("").models.remove(0).batching;
    batching.queue_capacity = 1;
    let limits = Limits {
        // The held uploads send nothing: no rate or timeout may end them during the test.
        min_data_rate: 0,
        body_read_timeout: Duration::from_secs(600),
        request_deadline: Duration::from_secs(600),
        ..options("").limits
    };
    let (service, _board, _slot, _thread) = service(Fake::new(Duration::ZERO), batching, limits);
    // Three clients whose bodies never come hold every place (taken before their bodies).
    let holders: Vec<_> = (0..3).map(|_| upload(&service, 0)).collect();
    for (_, read, _) in &holders {
        assert!(became_true(read, Duration::from_secs(10)).await);
    }

    let (_tx, read, refused) = upload(&service, 0);
    let response = tokio::time::timeout(Duration::from_secs(10), refused)
        .await
        .expect("refused at once")
        .unwrap();
    assert_eq!(response.status(), 503);
    let headers = response.headers();
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(headers["connection"], "close");
    assert!(!read.load(SeqCst), "the refused request's body was read");
    for (_, _, answer) in holders {
        answer.abort();
    }
}

#[tokio::test]
async fn a_body_still_arriving_after_the_grace_gives_its_place_to_a_new_request() {
    // A queue of one beside the two preprocessing places: three uploads take every place.
    let mut batching = options("").models.remove(0).batching;
    batching.queue_capacity = 1;
    let grace = Duration::from_secs(2);
    let limits = Limits {
        // 1 byte a second: the 100 bytes each upload sends first keep it above the minimum rate
        // for the whole test, as a client sending just above the rate would be.
        min_data_rate: 1,
        min_data_rate_grace: grace,
        body_read_timeout: Duration::from_secs(600),
        request_deadline: Duration::from_secs(600),
        ..options("").limits
    };
    let (service, _board, _slot, _thread) = service(Fake::new(Duration::ZERO), batching, limits);
    let started = tokio::time::Instant::now();
    let mut holders: Vec<_> = (0..3).map(|_| upload(&service, 100)).collect();
    for (_, read, _) in &holders {
        assert!(became_true(read, Duration::from_secs(10)).await);
    }

    // Within the grace, a new request is refused from its headers as when nothing is slow.
    let (_tx, read, early) = upload(&service, 100);
    let response = tokio::time::timeout(Duration::from_secs(10), early)
        .await
        .expect("refused at once")
        .unwrap();
    assert!(
        started.elapsed() < grace,
        "the machine took the whole grace to start three uploads"
    );
    assert_eq!(response.status(), 503);
    assert!(!read.load(SeqCst), "the refused request's body was read");

    // Past it, the next request takes the place of one still sending its body, which is
    // answered 503 and its connection closed; the other two keep theirs.
    tokio::time::sleep_until(started + grace + Duration::from_millis(200)).await;
    let (_tx, read, _late) = upload(&service, 100);
    assert!(
        became_true(&read, Duration::from_secs(10)).await,
        "the new request was not admitted"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let overtaken = loop {
        if let Some(i) = holders
            .iter()
            .position(|(_, _, answer)| answer.is_finished())
        {
            break holders.remove(i);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no upload was overtaken"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let response = overtaken.2.await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["connection"], "close");
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("overloaded"), "{text}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        holders.iter().all(|(_, _, answer)| !answer.is_finished()),
        "only one upload gives its place"
    );
    for (_, _, answer) in holders {
        answer.abort();
    }
}

/// An upload of a declared 100,000 bytes to `service` of which `sent` arrive at once and the rest
/// when the test sends them: the sender, whether the body was polled, and the answer to come.
type Upload = (
    tokio::sync::mpsc::Sender<Bytes>,
    Arc<AtomicBool>,
    tokio::task::JoinHandle<hyper::Response<http_body_util::Full<Bytes>>>,
);

fn upload(service: &arbiter_worker::Service, sent: usize) -> Upload {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    if sent > 0 {
        tx.try_send(Bytes::from(vec![b'x'; sent])).unwrap();
    }
    let read = Arc::new(AtomicBool::new(false));
    let request = Request::post("/model_predict")
        .header("content-type", "image/png")
        .header("content-length", "100000")
        .body(Watched {
            rx,
            read: Arc::clone(&read),
        })
        .unwrap();
    let service = service.clone();
    let answer = tokio::spawn(async move { service.handle(request, Peer::Unix).await });
    (tx, read, answer)
}

fn server_with(limits: Limits) -> TestServer {
    let (service, board, _slot, _thread) = service(
        Fake::new(Duration::ZERO),
        options("").models.remove(0).batching,
        limits.clone(),
    );
    // The inference thread lives as long as its queue, held by the service.
    TestServer::start(service, board, limits)
}

/// Reads until the server closes (or `within` passes): what it sent.
fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let until = std::time::Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while std::time::Instant::now() < until {
        match stream.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (got, true),
        }
    }
    (got, false)
}

#[test]
fn headers_trickled_below_the_minimum_rate_are_cut() {
    let limits = Limits {
        // Far beyond the test's patience: only the rate can end the trickle.
        header_read_timeout: Duration::from_secs(600),
        keepalive_timeout: Duration::from_secs(600),
        min_data_rate: 100,
        min_data_rate_grace: Duration::from_millis(500),
        ..options("").limits
    };
    let server = server_with(limits);
    let mut stream = connect(server.addr).unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    // A byte every 100 ms (10 B/s) of a header that never ends, for at most 60 s.
    let mut writer = stream.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for _ in 0..600 {
            if writer.write_all(b"x").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let (got, closed) = read_until_closed(&mut stream, Duration::from_secs(60));
    assert!(closed, "the trickling connection was not cut");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("slower than 100 bytes a second"), "{text}");
    drop(stream);
    trickle.join().unwrap();
    // The server still answers a client that sends at once.
    assert_eq!(get(server.addr, "/healthz").status, 200);
}

#[test]
fn at_the_limit_the_connection_longest_in_its_headers_makes_room() {
    let limits = Limits {
        max_connections: 3,
        header_read_timeout: Duration::from_secs(600),
        keepalive_timeout: Duration::from_secs(600),
        // No minimum rate: only the connection limit closes the slow ones here.
        min_data_rate: 0,
        ..options("").limits
    };
    let server = server_with(limits);
    // Three slow clients, each begun its headers and stalled, oldest first.
    let mut slow: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = connect(server.addr).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ").unwrap();
            std::thread::sleep(Duration::from_millis(100));
            s
        })
        .collect();
    // A fourth client sends its request at once: it is served.
    let mut prompt = connect(server.addr).unwrap();
    prompt
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let answer = read_response(&mut prompt).unwrap();
    assert_eq!(answer.status, 200);
    // The oldest slow one was closed for it, with a 503, and the newest is still open.
    let (got, closed) = read_until_closed(&mut slow[0], Duration::from_secs(30));
    assert!(closed, "the oldest header-phase connection is still open");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    let (got, closed) = read_until_closed(&mut slow[2], Duration::from_millis(300));
    assert!(
        !closed && got.is_empty(),
        "the newest slow connection was closed"
    );
    // It can still finish its request and be answered.
    slow[2].write_all(b"1\r\nHost: t\r\n\r\n").unwrap();
    slow[2]
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    assert_eq!(read_response(&mut slow[2]).unwrap().status, 200);
}
