//! Reliability and security under fire (issue 7): chaos, reload storms, the bad-input corpus,
//! fuzzing, slow clients and floods, least privilege.
//!
//! Every test is bounded in time, talks to the real binary over loopback, and prints its figures
//! (`cargo test --test integration reliability -- --nocapture --test-threads 1`);
//! `docs/reliability.md` collects them. The default run is short; `ARBITER_SLOW=1`
//! (`scripts/test --slow`) runs the long versions: a 60 s chaos run, ten times the fuzz cases,
//! and the corpus cases that take long on a debug build. `ARBITER_CHAOS_SECS` and
//! `ARBITER_FUZZ_CASES` override the two sizes directly.
//!
//! This file holds what the tests share: a load loop that timestamps every request (to tell
//! which failures a kill caused), the corpus's and the fuzzer's requests (built with
//! `arbiter-testkit`), and readers of `/proc` (process tree, uid, RSS, CPU time, the TCP
//! connections a process holds).

mod chaos;
mod corpus;
mod floods;
mod fuzz;
mod privilege;
mod reload;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arbiter_testkit::http;
use serde_json::Value;

use crate::util::*;

/// Whether the long versions run (`ARBITER_SLOW=1`, set by `scripts/test --slow`).
pub(crate) fn slow_mode() -> bool {
    std::env::var("ARBITER_SLOW").is_ok_and(|v| v == "1")
}

/// A size from the environment variable `name`, else `fast` (or `slow` in slow mode).
pub(crate) fn sized(name: &str, fast: u64, slow: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if slow_mode() { slow } else { fast })
}

/// One request of a [`TimedLoad`].
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub start: Instant,
    pub end: Instant,
    /// The answer's JSON on a 200; otherwise what went wrong.
    pub result: Result<Value, Failure>,
}

/// A failed request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Failure {
    /// An HTTP answer other than 200.
    Status(u16, String),
    /// No answer: the connection failed (reset, closed early, refused).
    Transport(String),
}

/// Clients posting an image in a loop, each request timestamped.
pub(crate) struct TimedLoad {
    stop: Arc<AtomicBool>,
    handles: Vec<std::thread::JoinHandle<Vec<Outcome>>>,
}

impl TimedLoad {
    /// Starts `clients` threads; each runs until [`TimedLoad::finish`] or `limit`.
    pub(crate) fn start(
        addr: SocketAddr,
        image: &Path,
        clients: usize,
        limit: Duration,
    ) -> TimedLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..clients)
            .map(|_| {
                let stop = Arc::clone(&stop);
                let image = image.to_path_buf();
                std::thread::spawn(move || {
                    let deadline = Instant::now() + limit;
                    let mut outcomes = Vec::new();
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let start = Instant::now();
                        let result =
                            match try_post_multipart(addr, "/model_predict", "image", &image) {
                                Ok(r) if r.status == 200 => serde_json::from_slice(&r.body)
                                    .map_err(|e| Failure::Transport(format!("bad JSON: {e}"))),
                                Ok(r) => Err(Failure::Status(r.status, r.text())),
                                Err(e) => Err(Failure::Transport(e.to_string())),
                            };
                        outcomes.push(Outcome {
                            start,
                            end: Instant::now(),
                            result,
                        });
                    }
                    outcomes
                })
            })
            .collect();
        TimedLoad { stop, handles }
    }

    /// Stops the clients; every outcome, in order of start.
    pub(crate) fn finish(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all: Vec<Outcome> = self
            .handles
            .into_iter()
            .flat_map(|h| h.join().expect("a load client panicked"))
            .collect();
        all.sort_by_key(|o| o.start);
        all
    }
}

/// Percentile `p` (0..=100) of `values`, nearest rank.
pub(crate) fn percentile(values: &[Duration], p: f64) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One multipart part: field name, filename (if a file), data.
pub(crate) type Part<'a> = (&'a [u8], Option<&'a [u8]>, &'a [u8]);

/// A multipart body with the given parts and boundary, every part declared
/// `application/octet-stream`.
pub(crate) fn multipart_body(boundary: &[u8], parts: &[Part<'_>]) -> Vec<u8> {
    parts
        .iter()
        .fold(
            multipart::Form::new(boundary),
            |form, (name, filename, data)| {
                form.part(name, *filename, Some(b"application/octet-stream"), data)
            },
        )
        .finish()
}

/// The head of a `POST /model_predict` with this Content-Type and Content-Length.
pub(crate) fn post_head(content_type: Option<&str>, length: usize) -> Vec<u8> {
    let headers: Vec<(&str, &str)> = content_type
        .map(|t| ("Content-Type", t))
        .into_iter()
        .collect();
    http::head("POST", "/model_predict", &headers, length)
}

/// Writes `head` then the pieces of `body` on a fresh connection and reads the answer's status
/// and body; a server that answers before the end still has its answer read
/// ([`http::send_streamed`]).
pub(crate) fn exchange(
    addr: SocketAddr,
    head: &[u8],
    body: impl IntoIterator<Item = Vec<u8>>,
) -> std::io::Result<(u16, Vec<u8>)> {
    http::send_streamed(addr, head, body).map(|r| (r.status, r.body))
}

/// The worker pids `arbiter status` lists in `state`.
pub(crate) fn pids_in(env: &Env, state: &str) -> Vec<i32> {
    env.workers(state)
        .iter()
        .map(|w| w["pid"].as_i64().unwrap() as i32)
        .collect()
}

/// A field of `/proc/PID/stat` after the command name (0 is the state).
fn stat_field(pid: i32, index: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(index)
        .map(str::to_owned)
}

/// The process state letter (R, S, T, Z...), `None` if there is no such process.
pub(crate) fn proc_state(pid: i32) -> Option<char> {
    stat_field(pid, 0)?.chars().next()
}

/// User plus system CPU time, in clock ticks (1/100 s here).
pub(crate) fn cpu_ticks(pid: i32) -> Option<u64> {
    let user: u64 = stat_field(pid, 11)?.parse().ok()?;
    let system: u64 = stat_field(pid, 12)?.parse().ok()?;
    Some(user + system)
}

/// The children of `pid`.
pub(crate) fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// A `Key:` line of `/proc/PID/status`, split in words.
pub(crate) fn proc_status(pid: i32, key: &str) -> Option<Vec<String>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.split_whitespace().map(str::to_owned).collect())
}

/// Resident memory in KiB.
pub(crate) fn rss_kib(pid: i32) -> Option<u64> {
    proc_status(pid, "VmRSS")?.first()?.parse().ok()
}

/// Every process whose command line mentions `needle` (a test's config path): the arbiter and
/// its workers, or orphans left behind.
pub(crate) fn processes_mentioning(needle: &Path) -> Vec<i32> {
    let needle = needle.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .filter(|pid| {
                    std::fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The TCP connections (not listeners) on local `port` that `pid` holds open.
pub(crate) fn held_connections(pid: i32, port: u16) -> usize {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| {
                let target = std::fs::read_link(e.ok()?.path()).ok()?;
                let target = target.to_string_lossy();
                Some(
                    target
                        .strip_prefix("socket:[")?
                        .strip_suffix(']')?
                        .to_owned(),
                )
            })
            .collect()
        })
        .unwrap_or_default();
    let mut count = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (cols.get(1), cols.get(3), cols.get(9))
            else {
                continue;
            };
            let local_port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            // 0A is LISTEN.
            if local_port == Some(port) && *state != "0A" && inodes.iter().any(|i| i == inode) {
                count += 1;
            }
        }
    }
    count
}

/// A small deterministic generator (xorshift64*), seeded and printed so a run can be replayed.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// From `ARBITER_SEED`, else from the clock; prints the seed.
    pub(crate) fn from_env(what: &str) -> Rng {
        let seed = std::env::var("ARBITER_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        println!("{what}: seed {seed} (replay with ARBITER_SEED={seed})");
        Rng(seed.max(1))
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The corpus directory.
pub(crate) fn corpus_dir() -> PathBuf {
    root().join("tests/corpus")
}

/// Runs `arbiter` as another user (`setpriv`), returning its output.
pub(crate) fn as_user(uid: u32, gid: u32, args: &[&str]) -> std::process::Output {
    std::process::Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_arbiter"))
        .args(args)
        .output()
        .expect("setpriv runs")
}
