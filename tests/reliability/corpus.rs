//! The bad-input corpus (`tests/corpus/manifest.txt`): every case gets its status, the worker
//! never restarts, and its memory comes back to where it was.
//!
//! The corpus runs six times against one worker, every round checking the statuses; the
//! worker's RSS is read before, and after each round, so a leak shows as growth from round to
//! round and a lasting bloat as a gap to the level before.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use arbiter_testkit::http;

use super::*;
use crate::util::*;

/// One line of the manifest.
#[derive(Debug, Clone)]
struct Case {
    name: String,
    status: u16,
    slow: bool,
    what: String,
}

fn manifest() -> Vec<Case> {
    let text = std::fs::read_to_string(corpus_dir().join("manifest.txt")).unwrap();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let mut words = line.split_whitespace();
            let mut next = || words.next().unwrap_or_else(|| panic!("short line: {line}"));
            let (name, status, when) = (next().to_owned(), next(), next());
            assert!(when == "always" || when == "slow", "{line}: when is {when}");
            Case {
                name,
                status: status.parse().unwrap(),
                slow: when == "slow",
                what: words.collect::<Vec<_>>().join(" "),
            }
        })
        .collect()
}

const BOUNDARY: &[u8] = b"----arbitercorpus0b7f";
const MIB: usize = 1024 * 1024;
/// Rounds of the whole corpus.
const ROUNDS: usize = 6;

fn mp_type() -> String {
    format!(
        "multipart/form-data; boundary={}",
        String::from_utf8_lossy(BOUNDARY)
    )
}

fn tiny_png() -> Vec<u8> {
    std::fs::read(corpus_dir().join("tiny_1x1.png")).unwrap()
}

fn simple(addr: SocketAddr, head: Vec<u8>, body: Vec<u8>) -> std::io::Result<(u16, Vec<u8>)> {
    exchange(addr, &head, [body])
}

/// A 100 MB image part, sent in 1 MiB pieces: with its Content-Length, or chunked.
fn huge_part(addr: SocketAddr, chunked: bool) -> std::io::Result<(u16, Vec<u8>)> {
    let size = 100 * 1000 * 1000;
    let mut prefix = Vec::new();
    prefix.extend_from_slice(b"--");
    prefix.extend_from_slice(BOUNDARY);
    prefix.extend_from_slice(
        b"\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.png\"\r\n\r\n",
    );
    let mut suffix = b"\r\n--".to_vec();
    suffix.extend_from_slice(BOUNDARY);
    suffix.extend_from_slice(b"--\r\n");
    let total = prefix.len() + size + suffix.len();
    let pieces = std::iter::once(prefix)
        .chain((0..size / MIB).map(|_| vec![0u8; MIB]))
        .chain(std::iter::once(vec![0u8; size % MIB]))
        .chain(std::iter::once(suffix));
    if chunked {
        let head = format!(
            "POST /model_predict HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
            mp_type()
        );
        let framed = pieces
            .filter(|p| !p.is_empty())
            .map(|p| {
                let mut c = format!("{:x}\r\n", p.len()).into_bytes();
                c.extend_from_slice(&p);
                c.extend_from_slice(b"\r\n");
                c
            })
            .chain(std::iter::once(b"0\r\n\r\n".to_vec()));
        exchange(addr, head.as_bytes(), framed)
    } else {
        let head = post_head(Some(&mp_type()), total);
        exchange(addr, &head, pieces)
    }
}

fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> std::io::Result<(u16, Vec<u8>)> {
    simple(addr, http::head("GET", path, headers, 0), Vec::new())
}

/// Sends one case and returns the status and body.
fn send(addr: SocketAddr, case: &Case) -> std::io::Result<(u16, Vec<u8>)> {
    let mp = |parts: &[Part<'_>]| {
        let body = multipart_body(BOUNDARY, parts);
        (post_head(Some(&mp_type()), body.len()), body)
    };
    let image = tiny_png();
    let (head, body) = match case.name.as_str() {
        "@empty-body" => (post_head(Some(&mp_type()), 0), Vec::new()),
        "@no-body-no-type" => (post_head(None, 0), Vec::new()),
        "@not-multipart" => {
            let body = b"image=please".to_vec();
            (post_head(Some("text/plain"), body.len()), body)
        }
        "@missing-boundary" => {
            let body = multipart_body(BOUNDARY, &[(b"image", Some(b"a.png"), &image)]);
            (post_head(Some("multipart/form-data"), body.len()), body)
        }
        "@wrong-boundary" => {
            let body = multipart_body(b"someotherboundary", &[(b"image", Some(b"a.png"), &image)]);
            (post_head(Some(&mp_type()), body.len()), body)
        }
        "@unterminated" => {
            let mut body = multipart_body(BOUNDARY, &[(b"image", Some(b"a.png"), &image)]);
            body.truncate(body.len() - BOUNDARY.len() - 6);
            (post_head(Some(&mp_type()), body.len()), body)
        }
        "@thousand-parts" | "@thousand-parts-image" => {
            let names: Vec<Vec<u8>> = (0..1000)
                .map(|i| format!("field{i}").into_bytes())
                .collect();
            let mut parts: Vec<Part<'_>> = names
                .iter()
                .map(|n| (n.as_slice(), None, &b"x"[..]))
                .collect();
            if case.name == "@thousand-parts-image" {
                parts.push((b"image", Some(b"a.png"), &image));
            }
            mp(&parts)
        }
        "@no-image-field" => mp(&[(b"file", Some(b"a.png"), &image)]),
        "@huge-part" => return huge_part(addr, false),
        "@huge-part-chunked" => return huge_part(addr, true),
        "@bad-utf8-filename" => mp(&[(b"image", Some(b"\xff\xfe\xc3(.png"), &image)]),
        "@bad-utf8-field-name" => mp(&[(b"im\xffage", Some(b"a.png"), &image)]),
        "@huge-header" => {
            return get(addr, "/healthz", &[("X-Big", &"a".repeat(MIB))]);
        }
        "@ten-thousand-headers" => {
            let names: Vec<String> = (0..10_000).map(|i| format!("X-Header-{i}")).collect();
            let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
            return get(addr, "/healthz", &headers);
        }
        "@garbage-request-line" => (
            b"\x00\x01\x02\xff garbage \xfe\r\n\r\n".to_vec(),
            Vec::new(),
        ),
        "@bad-content-length" => (
            b"POST /model_predict HTTP/1.1\r\nHost: localhost\r\nContent-Length: abc\r\n\r\n"
                .to_vec(),
            Vec::new(),
        ),
        "@get-predict" => return get(addr, "/model_predict", &[]),
        "@path-traversal" => return get(addr, "/../../etc/passwd", &[]),
        name if name.starts_with('@') => panic!("no request is built for {name}"),
        name => {
            let data = std::fs::read(corpus_dir().join(name)).unwrap();
            mp(&[(b"image", Some(name.as_bytes()), &data)])
        }
    };
    simple(addr, head, body)
}

/// Runs every case once; returns (case, status, time) and the mismatches.
fn round(addr: SocketAddr, cases: &[Case]) -> (Vec<(String, u16, Duration)>, Vec<String>) {
    let mut results = Vec::new();
    let mut wrong = Vec::new();
    for case in cases {
        let started = Instant::now();
        let (status, body) = match send(addr, case) {
            Ok(answer) => answer,
            Err(e) => {
                wrong.push(format!("{}: no answer ({e})", case.name));
                results.push((case.name.clone(), 0, started.elapsed()));
                continue;
            }
        };
        results.push((case.name.clone(), status, started.elapsed()));
        if status != case.status {
            wrong.push(format!(
                "{}: expected {}, got {status} {}",
                case.name,
                case.status,
                String::from_utf8_lossy(&body)
            ));
            continue;
        }
        // The service's own answers are JSON: an error message, or the labels.
        if !body.is_empty() {
            let json: serde_json::Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(_) => {
                    wrong.push(format!(
                        "{}: not JSON: {}",
                        case.name,
                        String::from_utf8_lossy(&body)
                    ));
                    continue;
                }
            };
            let key = if status == 200 { "result" } else { "error" };
            if json.get(key).is_none() {
                wrong.push(format!("{}: no {key:?} in {json}", case.name));
            }
        } else if status != 431 && status != 400 {
            wrong.push(format!("{}: empty {status} answer", case.name));
        }
    }
    (results, wrong)
}

#[test]
fn bad_input_corpus_gets_its_statuses_and_leaves_no_trace() {
    let cases: Vec<Case> = manifest()
        .into_iter()
        .filter(|c| slow_mode() || !c.slow)
        .collect();
    for c in &cases {
        if !c.name.starts_with('@') {
            assert!(corpus_dir().join(&c.name).exists(), "{} is missing", c.name);
        }
    }
    let mut env = Env::new(1);
    env.start_ready(1);
    let addr = env.addr();
    let worker = pids_in(&env, "ready")[0];
    for _ in 0..5 {
        assert_eq!(env.predict(&photo("grace_hopper.jpg")).status, 200);
    }
    let before = rss_kib(worker).unwrap();
    let mut after = Vec::new();
    let (results, wrong) = round(addr, &cases);
    after.push(rss_kib(worker).unwrap());
    println!("bad-input corpus: {} cases, 1 worker", cases.len());
    println!(
        "  {:<24} {:>8} {:>4} {:>9}  what",
        "case", "expected", "got", "time"
    );
    for ((name, status, time), case) in results.iter().zip(&cases) {
        println!(
            "  {:<24} {:>8} {:>4} {:>7.0}ms  {}",
            name,
            case.status,
            status,
            time.as_secs_f64() * 1e3,
            case.what
        );
    }
    assert!(
        wrong.is_empty(),
        "cases answered wrongly:\n{}",
        wrong.join("\n")
    );
    // The slow cases (slow mode only) run in the first round only.
    let quick: Vec<Case> = cases.iter().filter(|c| !c.slow).cloned().collect();
    for _ in 1..ROUNDS {
        let (_, wrong) = round(addr, &quick);
        assert!(
            wrong.is_empty(),
            "a later round differs:\n{}",
            wrong.join("\n")
        );
        after.push(rss_kib(worker).unwrap());
    }
    // The service still answers, from the same worker, never restarted.
    assert_eq!(env.predict(&photo("grace_hopper.jpg")).status, 200);
    let status = env.status();
    let last = *after.last().unwrap();
    println!(
        "  worker {worker} RSS: before {} MiB; after each of {ROUNDS} rounds: {} MiB; worker_restarts {}",
        before / 1024,
        after
            .iter()
            .map(|k| (k / 1024).to_string())
            .collect::<Vec<_>>()
            .join(", "),
        status["worker_restarts"]
    );
    assert_eq!(status["worker_restarts"], 0);
    assert_eq!(pids_in(&env, "ready"), vec![worker], "the same worker");
    // The allocator keeps some of what the first rounds freed (measured: RSS plateaus about
    // 25 MiB above the level before, and stays there over 25 rounds); a leak keeps growing.
    let half = after[ROUNDS / 2 - 1];
    assert!(
        last <= half + 8 * 1024,
        "RSS grows round after round: {after:?} KiB"
    );
    assert!(
        last <= before + 48 * 1024,
        "RSS did not come back near its level: {before} -> {last} KiB"
    );
}
