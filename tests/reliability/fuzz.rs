//! Fuzzing with proptest: random and mutated bytes through the image path
//! (`arbiter_vision::decode_rgb`, resize, normalize), random and mutated TOML through
//! `arbiter_config::Config::parse`, and mutated multipart bodies against a running worker.
//!
//! The seeds are the bad-input corpus (tests/corpus) and etc/arbiter.toml. The number of cases is
//! bounded (`ARBITER_FUZZ_CASES`, default 1000, 10000 in slow mode; the network target runs a
//! quarter of that), so CI runs every target for a bounded time. A failing case is shrunk by
//! proptest and printed; each one found becomes a named regression test below.

use std::path::Path;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};

use super::*;
use crate::util::*;

fn cases() -> u32 {
    sized("ARBITER_FUZZ_CASES", 1000, 10000) as u32
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(RunnerConfig {
        cases,
        failure_persistence: None,
        ..RunnerConfig::default()
    })
}

/// The corpus files, as seeds.
fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_name()?.to_str()?.to_owned();
            (!name.ends_with(".py") && !name.ends_with(".txt"))
                .then(|| (name, std::fs::read(&path).unwrap()))
        })
        .collect();
    seeds.sort();
    seeds
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    /// Copies a range over another place (duplicates structure, like chunks or parts).
    Splice(usize, usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(p, b)| Mutation::Flip(p, b)),
        (
            any::<usize>(),
            prop_oneof![Just(0u8), Just(0xff), Just(0x7f), any::<u8>()]
        )
            .prop_map(|(p, b)| Mutation::Set(p, b)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(p, v)| Mutation::Insert(p, v)),
        (any::<usize>(), 1usize..64).prop_map(|(p, n)| Mutation::Delete(p, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<usize>(), 1usize..128)
            .prop_map(|(a, b, n)| Mutation::Splice(a, b, n)),
    ]
}

fn apply(data: &mut Vec<u8>, mutations: &[Mutation]) {
    for m in mutations {
        let len = data.len();
        let at = |p: usize| if len == 0 { 0 } else { p % (len + 1) };
        match m {
            Mutation::Flip(p, b) if len > 0 => data[p % len] ^= b,
            Mutation::Set(p, b) if len > 0 => data[p % len] = *b,
            Mutation::Insert(p, v) => {
                let i = at(*p);
                data.splice(i..i, v.iter().copied());
            }
            Mutation::Delete(p, n) if len > 0 => {
                let i = p % len;
                data.drain(i..(i + n).min(len));
            }
            Mutation::Truncate(p) => data.truncate(at(*p)),
            Mutation::Splice(a, b, n) if len > 0 => {
                let (from, to) = (a % len, b % len);
                let piece: Vec<u8> = data[from..(from + n).min(len)].to_vec();
                let end = (to + piece.len()).min(len);
                data.splice(to..end, piece);
            }
            _ => {}
        }
    }
}

/// CRC-32 (IEEE), as PNG chunks use it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Recomputes the CRC of every chunk of a (mutated) PNG, so the mutation reaches the decoder
/// instead of stopping at the checksum.
fn fix_png_crcs(data: &mut [u8]) {
    if !data.starts_with(b"\x89PNG\r\n\x1a\n") {
        return;
    }
    let mut pos = 8;
    while pos + 12 <= data.len() {
        let len = u32::from_be_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        let Some(end) = (pos + 8).checked_add(len).filter(|e| e + 4 <= data.len()) else {
            return;
        };
        let crc = crc32(&data[pos + 4..end]);
        data[end..end + 4].copy_from_slice(&crc.to_be_bytes());
        pos = end + 4;
    }
}

/// How far the cases of one target got: how many decoded (and went on through resize and
/// normalize, whose values were checked), and how many decoded on both paths (whose pixels were
/// compared). A target whose cases are all refused checks only that refusals do not panic, so
/// each target asserts a floor on these counts.
#[derive(Debug, Default)]
struct Reached {
    decoded: std::cell::Cell<u32>,
    compared: std::cell::Cell<u32>,
}

impl Reached {
    /// Asserts that at least `decoded` cases decoded and `compared` were compared.
    fn assert_at_least(&self, target: &str, decoded: u32, compared: u32) {
        assert!(
            self.decoded.get() >= decoded && self.compared.get() >= compared,
            "{target}: {} cases decoded (at least {decoded} expected), {} compared on both paths \
             (at least {compared} expected): the generators no longer reach the decoders",
            self.decoded.get(),
            self.compared.get(),
        );
    }
}

/// Decode, and on success resize and normalize: must return, never panic, and give finite
/// values of the right size. Counts in `reached` how far the case got.
fn image_path(bytes: &[u8], reached: &Reached) -> Result<(), TestCaseError> {
    let limits = arbiter_vision::Limits {
        max_pixels: 4_000_000,
    };
    let whole = arbiter_vision::decode_rgb(bytes, &limits).map(|rgb| {
        let small = arbiter_vision::resize_bilinear(&rgb, 224, 224);
        let mut tensor = vec![0f32; 3 * 224 * 224];
        arbiter_vision::normalize_chw(&small, &mut tensor);
        (small, tensor)
    });
    if let Ok((_, tensor)) = &whole {
        reached.decoded.set(reached.decoded.get() + 1);
        prop_assert!(tensor.iter().all(|v| v.is_finite()));
    }
    // The worker's path (a JPEG resized as it decodes, with Arbiter's Huffman decoder): when
    // both decode, the same pixels.
    let resized = arbiter_vision::decode_resized(bytes, &limits, 224, 224, false);
    if let (Ok((small, _)), Ok((banded, _))) = (&whole, &resized) {
        reached.compared.set(reached.compared.get() + 1);
        prop_assert_eq!(small, banded);
    }
    Ok(())
}

/// The headers of an 8 x 8, 24-bit, uncompressed BMP (14 bytes of file header, 40 of
/// BITMAPINFOHEADER): the random bytes behind them are its pixels, so that some random cases
/// decode and go on through resize and normalize.
fn bmp_8x8_header() -> Vec<u8> {
    let pixels: u32 = 8 * 8 * 3;
    let mut header = b"BM".to_vec();
    for field in [54 + pixels, 0, 54] {
        header.extend_from_slice(&field.to_le_bytes());
    }
    for field in [40u32, 8, 8] {
        header.extend_from_slice(&field.to_le_bytes());
    }
    header.extend_from_slice(&1u16.to_le_bytes()); // planes
    header.extend_from_slice(&24u16.to_le_bytes()); // bits per pixel
    for field in [0u32, pixels, 2835, 2835, 0, 0] {
        header.extend_from_slice(&field.to_le_bytes());
    }
    header
}

/// Holds the harness's lock so that CPU-heavy fuzzing never overlaps a timing test.
fn exclusive() -> Env {
    Env::new(1)
}

#[test]
fn fuzz_image_path_with_random_bytes() {
    let _lock = exclusive();
    let magic: Vec<Vec<u8>> = [
        &b""[..],
        b"\x89PNG\r\n\x1a\n",
        b"\xff\xd8\xff",
        b"GIF89a",
        b"BM",
        b"RIFF\x00\x00\x00\x00WEBPVP8 ",
        b"II*\x00",
        b"MM\x00*",
        &bmp_8x8_header(),
    ]
    .iter()
    .map(|m| m.to_vec())
    .collect();
    let strategy = (
        prop::sample::select(magic),
        prop::collection::vec(any::<u8>(), 0..1024),
    );
    let started = Instant::now();
    let n = cases();
    let reached = Reached::default();
    runner(n)
        .run(&strategy, |(magic, tail)| {
            let mut bytes = magic;
            bytes.extend_from_slice(&tail);
            image_path(&bytes, &reached)
        })
        .unwrap();
    println!(
        "fuzz image path, random bytes behind each format's magic: {n} cases in {:.1} s, no panic, \
         {} decoded, {} compared",
        started.elapsed().as_secs_f64(),
        reached.decoded.get(),
        reached.compared.get(),
    );
    // One case in nine has the BMP's headers, and 832 tails in 1024 carry its 192 bytes of
    // pixels: by design about one case in eleven decodes. The floor is a quarter of that.
    reached.assert_at_least("random bytes", n / 40, n / 40);
}

#[test]
fn fuzz_image_path_with_mutated_corpus() {
    let _lock = exclusive();
    let seeds: Vec<(String, Vec<u8>)> = seeds()
        .into_iter()
        // Seeds that decode slowly in a debug build are still fuzzed through their headers.
        .map(|(name, data)| {
            if data.len() > 20_000 {
                (name, data[..4096].to_vec())
            } else {
                (name, data)
            }
        })
        .collect();
    let strategy = (
        prop::sample::select(seeds),
        prop::collection::vec(mutation(), 1..6),
        any::<bool>(),
    );
    let started = Instant::now();
    let n = cases();
    let reached = Reached::default();
    runner(n)
        .run(&strategy, |((_, seed), mutations, fix_crc)| {
            let mut bytes = seed.clone();
            apply(&mut bytes, &mutations);
            if fix_crc {
                fix_png_crcs(&mut bytes);
            }
            image_path(&bytes, &reached)
        })
        .unwrap();
    println!(
        "fuzz image path, mutated corpus files: {n} cases in {:.1} s, no panic, {} decoded, \
         {} compared",
        started.elapsed().as_secs_f64(),
        reached.decoded.get(),
        reached.compared.get(),
    );
    // A third of the seeds are valid images (the rest are the corpus's bad inputs), and one to
    // five edits break most of them; the floor, one case in 200, sits far below the count a run
    // prints, so that chance alone never trips it.
    reached.assert_at_least("mutated corpus", n / 200, n / 200);
}

/// A real photo's scan mutated (the worker's JPEG path: Arbiter's Huffman decoder, libjpeg's
/// after it gives up): no panic, and when both decode, the pixels of libjpeg's whole decode.
#[test]
fn fuzz_jpeg_scans_of_a_photo() {
    let _lock = exclusive();
    let photo = std::fs::read(photo("grace_hopper.jpg")).unwrap();
    // Each case decodes a 512 x 600 photo twice: fewer cases than the other targets.
    let n = sized("ARBITER_FUZZ_JPEG_CASES", 60, 600) as u32;
    let started = Instant::now();
    let reached = Reached::default();
    runner(n)
        .run(&prop::collection::vec(mutation(), 1..4), |mutations| {
            let mut bytes = photo.clone();
            apply(&mut bytes, &mutations);
            image_path(&bytes, &reached)
        })
        .unwrap();
    println!(
        "fuzz JPEG scans of a photo: {n} cases in {:.1} s, no panic, {} decoded, {} with the \
         same pixels on both paths",
        started.elapsed().as_secs_f64(),
        reached.decoded.get(),
        reached.compared.get(),
    );
    // One to three edits of a photo seldom stop the decoders (libjpeg fills in what is
    // missing); the floor is a quarter of the cases.
    reached.assert_at_least("JPEG scans", n / 4, n / 4);
}

/// TOML-ish text: lines of known sections and keys with values of every kind, and noise.
fn toml_line() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "bind",
        "workers",
        "graceful_timeout",
        "boot_timeout",
        "heartbeat_timeout",
        "max_requests",
        "max_requests_jitter",
        "user",
        "group",
        "allow_root",
        "pidfile",
        "control_socket",
        "trusted_proxies",
        "backlog",
        "name",
        "path",
        "labels",
        "threshold",
        "device",
        "threads",
        "runtime_library",
        "max_batch_size",
        "max_delay",
        "queue_size",
        "preprocess_threads",
        "max_body",
        "max_pixels",
        "header_timeout",
        "body_timeout",
        "request_deadline",
        "keepalive",
        "max_connections",
        "limit",
        "per_worker",
        "file",
        "format",
        "level",
        "command",
        "autorestart",
        "startsecs",
        "startretries",
        "stopsignal",
        "nonsense",
    ]);
    let value = prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| format!("{v:?}")),
        Just("true".to_owned()),
        Just("\"\"".to_owned()),
        Just("\"auto\"".to_owned()),
        Just("\"unix:/tmp/x.sock\"".to_owned()),
        Just("[\"127.0.0.1:0\", \"fd://3\"]".to_owned()),
        Just("[\"unix\", \"10.0.0.0/8\", \"::1/200\"]".to_owned()),
        Just("[]".to_owned()),
        Just("{ a = 1 }".to_owned()),
        (
            any::<u32>(),
            prop::sample::select(vec!["ms", "s", "m", "h", "d", "", "µs", "ns", "x"])
        )
            .prop_map(|(n, u)| format!("\"{n}{u}\"")),
        (
            any::<u64>(),
            prop::sample::select(vec!["B", "KiB", "MiB", "GiB", "TiB", "kB", "MB", "", "iB"])
        )
            .prop_map(|(n, u)| format!("\"{n}{u}\"")),
        "[ -~]{0,12}".prop_map(|s| format!("\"{}\"", s.replace(['"', '\\'], ""))),
        ".{0,8}",
    ];
    prop_oneof![
        4 => (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => prop::sample::select(vec![
            "[server]", "[model]", "[batching]", "[limits]", "[memory]", "[log]", "[[program]]",
            "[server.extra]", "[[server]]", "", "#", "=", "[",
        ])
        .prop_map(str::to_owned),
        1 => ".{0,20}",
    ]
}

#[test]
fn fuzz_config_parse_with_random_toml() {
    let _lock = exclusive();
    let file = Path::new("/etc/arbiter/arbiter.toml");
    let strategy = prop::collection::vec(toml_line(), 0..24);
    let started = Instant::now();
    let n = cases() * 4;
    let valid = std::cell::Cell::new(0u32);
    runner(n)
        .run(&strategy, |lines| {
            let text = lines.join("\n");
            match arbiter_config::Config::parse(&text, file) {
                Ok(config) => {
                    valid.set(valid.get() + 1);
                    round_trips(&config)?;
                }
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
            Ok(())
        })
        .unwrap();
    println!(
        "fuzz config parse, random TOML-ish lines: {n} cases ({} valid configs) in {:.1} s, no panic",
        valid.get(),
        started.elapsed().as_secs_f64()
    );
}

/// A valid config written back as TOML (`to_toml`) parses to the same config.
fn round_trips(config: &arbiter_config::Config) -> Result<(), TestCaseError> {
    let text = config.to_toml();
    match arbiter_config::Config::parse(&text, &config.file) {
        Ok(again) => prop_assert_eq!(&again, config, "to_toml gave:\n{}", text),
        Err(e) => prop_assert!(false, "to_toml gave an invalid config ({e}):\n{text}"),
    }
    Ok(())
}

/// Found by `fuzz_config_parse_with_mutated_files`: a path with a character that Rust's `{:?}`
/// escapes as `\u{590}` made `arbiter check` print TOML that did not parse (fixed: TOML quoting).
#[test]
fn to_toml_writes_strings_that_toml_reads_back() {
    let file = Path::new("/etc/arbiter/arbiter.toml");
    for odd in [
        "a\u{590}b",
        "nul\0here",
        "tab\there",
        "quote\"here",
        "back\\slash",
    ] {
        let text = format!("[server]\npidfile = {}\n", toml_quote(odd));
        let config = arbiter_config::Config::parse(&text, file).unwrap();
        let again = arbiter_config::Config::parse(&config.to_toml(), file);
        assert_eq!(
            again.ok().as_ref(),
            Some(&config),
            "{odd:?}: {}",
            config.to_toml()
        );
    }
}

/// A TOML basic string.
fn toml_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || ('\u{80}'..='\u{9f}').contains(&c) => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[test]
fn fuzz_config_parse_with_mutated_files() {
    let _lock = exclusive();
    let mut seeds = Vec::new();
    for entry in std::fs::read_dir(root().join("etc")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            seeds.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    assert!(!seeds.is_empty());
    let strategy = (
        prop::sample::select(seeds),
        prop::collection::vec(mutation(), 1..5),
    );
    let started = Instant::now();
    let n = cases() * 4;
    let valid = std::cell::Cell::new(0u32);
    runner(n)
        .run(&strategy, |((path, seed), mutations)| {
            let mut bytes = seed.clone();
            apply(&mut bytes, &mutations);
            let text = String::from_utf8_lossy(&bytes);
            match arbiter_config::Config::parse(&text, &path) {
                Ok(config) => {
                    valid.set(valid.get() + 1);
                    round_trips(&config)?;
                }
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
            Ok(())
        })
        .unwrap();
    println!(
        "fuzz config parse, mutated etc/*.toml: {n} cases ({} still valid) in {:.1} s, no panic",
        valid.get(),
        started.elapsed().as_secs_f64()
    );
}

/// Mutated multipart bodies (and boundaries) against a running worker: every answer is an HTTP
/// answer below 500, and the worker never restarts.
#[test]
fn fuzz_multipart_against_a_worker() {
    let mut env = Env::new(1);
    env.start_ready(1);
    let worker = pids_in(&env, "ready")[0];
    let addr = env.addr();
    let boundary = b"XfuzzBoundary42".to_vec();
    let images: Vec<Vec<u8>> = ["tiny_1x1.png", "gray.jpg", "palette.gif", "truncated.png"]
        .iter()
        .map(|n| std::fs::read(corpus_dir().join(n)).unwrap())
        .collect();
    let strategy = (
        prop::sample::select(images),
        0usize..4,
        prop::collection::vec(mutation(), 0..6),
        prop::sample::select(vec![
            "multipart/form-data; boundary=XfuzzBoundary42",
            "multipart/form-data; boundary=\"XfuzzBoundary42\"",
            "multipart/form-data; boundary=XfuzzBoundary42; charset=utf-8",
            "multipart/form-data; boundary=",
            "multipart/form-data; boundary=XfuzzBoundary4",
            "multipart/mixed; boundary=XfuzzBoundary42",
            "MULTIPART/FORM-DATA; BOUNDARY=XfuzzBoundary42",
        ]),
    );
    let started = Instant::now();
    let n = (cases() / 4).max(16);
    let statuses = std::cell::RefCell::new(std::collections::BTreeMap::new());
    runner(n)
        .run(
            &strategy,
            |(image, extra_parts, mutations, content_type)| {
                let filler: Vec<Part<'_>> = (0..extra_parts)
                    .map(|_| (&b"note"[..], None, &b"hello"[..]))
                    .collect();
                let mut parts = filler;
                parts.push((b"image", Some(b"photo.png"), &image));
                let mut body = multipart_body(&boundary, &parts);
                apply(&mut body, &mutations);
                let head = post_head(Some(content_type), body.len());
                let answer = exchange(addr, &head, [body]);
                let (status, text) =
                    answer.map_err(|e| TestCaseError::fail(format!("no answer: {e}")))?;
                *statuses.borrow_mut().entry(status).or_insert(0u32) += 1;
                prop_assert!(
                    status < 500,
                    "{} {}",
                    status,
                    String::from_utf8_lossy(&text)
                );
                Ok(())
            },
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let status = env.status();
    println!(
        "fuzz multipart against a worker: {n} cases in {:.1} s, statuses {:?}, worker_restarts {}",
        started.elapsed().as_secs_f64(),
        statuses.borrow(),
        status["worker_restarts"]
    );
    assert_eq!(status["worker_restarts"], 0);
    assert_eq!(
        pids_in(&env, "ready"),
        vec![worker],
        "the same worker serves"
    );
}
