//! Slow clients and floods: 500 connections trickling their headers while normal clients are
//! served; 2000 idle keep-alive connections; running out of file descriptors, in a worker (accept
//! backs off) and in the arbiter (the control socket backs off instead of spinning).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arbiter_testkit::http::read_response;

use super::*;
use crate::util::*;

/// `n` sequential predictions on each of `clients` threads; every latency.
fn latencies(env: &Env, clients: usize, n: usize) -> Vec<Duration> {
    let image = photo("grace_hopper.jpg");
    let addr = env.addr();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let image = image.clone();
            std::thread::spawn(move || {
                (0..n)
                    .map(|_| {
                        let started = Instant::now();
                        let r = post_multipart(addr, "/model_predict", "image", &image);
                        assert_eq!(r.status, 200, "{}", r.text());
                        started.elapsed()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Raises this process's open-file limit to its hard limit (for thousands of connections).
fn raise_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    hard
}

/// The open-file limits (soft, hard) of a process, from `/proc/PID/limits`.
fn nofile(pid: i32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    (words[3].to_owned(), words[4].to_owned())
}

fn set_nofile(pid: i32, soft: &str, hard: &str) {
    let out = std::process::Command::new("prlimit")
        .arg("--pid")
        .arg(pid.to_string())
        .arg(format!("--nofile={soft}:{hard}"))
        .output()
        .expect("prlimit (util-linux) runs");
    assert!(
        out.status.success(),
        "prlimit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The lowest descriptor number a process does not use: the next one it would get.
/// The lowest descriptor number `pid` leaves free in its steady state: the least of several
/// looks, since a descriptor opened for a moment (the arbiter reads /proc files as it goes) would
/// otherwise set the limit one too high, leaving the process a free descriptor below it.
fn lowest_free_fd(pid: i32) -> u64 {
    (0..20)
        .map(|_| {
            let used: BTreeSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect();
            std::thread::sleep(Duration::from_millis(10));
            (0..).find(|n| !used.contains(n)).unwrap()
        })
        .min()
        .unwrap()
}

fn count_in_log(env: &Env, needle: &str) -> usize {
    env.log().matches(needle).count()
}

#[test]
fn slow_clients_trickling_headers_do_not_slow_the_others() {
    raise_nofile();
    // The default header_timeout.
    let header_timeout = Duration::from_secs(10);
    let mut env = Env::new(2);
    env.start_ready(2);
    latencies(&env, 1, 3);
    let idle = latencies(&env, 1, 25);

    let opened = Instant::now();
    let mut slow: Vec<TcpStream> = (0..500)
        .map(|_| {
            let mut s = TcpStream::connect(env.addr()).unwrap();
            s.write_all(b"POST /model_predict HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
                .unwrap();
            s
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let trickle = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut bytes = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for s in &mut slow {
                    if s.write_all(b"a").is_ok() {
                        bytes += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (slow, bytes)
        })
    };
    let loaded = latencies(&env, 1, 25);
    let measured_within = opened.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (slow, bytes) = trickle.join().unwrap();

    // Each slow client is answered 408 (or closed) once its headers are overdue.
    let mut timed_out = 0;
    let mut closed = 0;
    for mut s in slow {
        let left = (opened + header_timeout + Duration::from_secs(5))
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(10));
        s.set_read_timeout(Some(left)).unwrap();
        let mut answer = Vec::new();
        match s.read_to_end(&mut answer) {
            Ok(_) if answer.starts_with(b"HTTP/1.1 408") => timed_out += 1,
            Ok(_) => closed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed += 1,
            Err(_) => {}
        }
    }
    let (idle_p50, idle_p99) = (percentile(&idle, 50.0), percentile(&idle, 99.0));
    let (p50, p99) = (percentile(&loaded, 50.0), percentile(&loaded, 99.0));
    println!(
        "slow clients: 500 connections trickling header bytes (1 byte per 100 ms each, {bytes} bytes), \
         1 normal client x 25 requests, 2 workers"
    );
    println!(
        "  idle:      p50 {:.0} ms, p99 {:.0} ms\n  trickling: p50 {:.0} ms, p99 {:.0} ms ({:.2}x the idle p99), measured within {:.1} s",
        ms(idle_p50),
        ms(idle_p99),
        ms(p50),
        ms(p99),
        p99.as_secs_f64() / idle_p99.as_secs_f64(),
        measured_within.as_secs_f64()
    );
    println!(
        "  after header_timeout ({} s): {timed_out} slow clients answered 408, {closed} closed, of 500",
        header_timeout.as_secs()
    );
    assert!(
        measured_within < header_timeout,
        "the normal clients were measured while all 500 slow ones were still trickling"
    );
    assert!(
        p99 < idle_p99 * 3,
        "p99 {p99:?} under trickling is not under 3x the idle p99 {idle_p99:?}"
    );
    assert_eq!(timed_out + closed, 500, "every slow client was timed out");
    assert_eq!(env.status()["worker_restarts"], 0);
}

#[test]
fn two_thousand_idle_keepalive_connections() {
    let hard = raise_nofile();
    assert!(
        hard >= 4096,
        "the hard open-file limit ({hard}) allows 2000 connections"
    );
    let mut env = Env::new(2);
    env.start_ready(2);
    let workers = pids_in(&env, "ready");
    let rss_before: u64 = workers.iter().filter_map(|p| rss_kib(*p)).sum();
    let started = Instant::now();
    let mut conns: Vec<TcpStream> = (0..2000)
        .map(|_| {
            let mut s = TcpStream::connect(env.addr()).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            s
        })
        .collect();
    // Read each whole answer; the connections stay open (keep-alive).
    let answered = conns
        .iter_mut()
        .map(|s| read_response(s).is_ok_and(|r| r.status == 200))
        .filter(|&ok| ok)
        .count();
    let all_open = started.elapsed();
    let rss_held: u64 = workers.iter().filter_map(|p| rss_kib(*p)).sum();
    // A new client meanwhile: the workers are at their connection limit, so they close idle
    // connections to make room.
    let asked = Instant::now();
    let r = env.predict(&photo("grace_hopper.jpg"));
    let waited = asked.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    // The idle connections are closed by the server after keepalive (5 s).
    let mut closed = 0;
    for stream in &mut conns {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut rest = Vec::new();
        if matches!(stream.read_to_end(&mut rest), Ok(0)) {
            closed += 1;
        }
    }
    let all_closed = started.elapsed();
    let status = env.status();
    let rss_after: u64 = workers.iter().filter_map(|p| rss_kib(*p)).sum();
    println!(
        "2000 keep-alive connections (2 workers, max_connections 1000 each, keepalive 5 s): \
         {answered} answered and left idle in {:.1} s; a new request meanwhile took {:.0} ms; \
         {closed} closed by the server within {:.1} s of the first opening",
        all_open.as_secs_f64(),
        ms(waited),
        all_closed.as_secs_f64()
    );
    println!(
        "  workers' RSS: {} MiB before, {} MiB holding 2000, {} MiB after; worker_restarts {}",
        rss_before / 1024,
        rss_held / 1024,
        rss_after / 1024,
        status["worker_restarts"]
    );
    assert_eq!(answered, 2000);
    assert!(
        waited < Duration::from_secs(3),
        "a new client waited {waited:?}"
    );
    assert_eq!(closed, 2000, "idle connections are closed");
    assert_eq!(status["worker_restarts"], 0);
    assert_eq!(pids_in(&env, "ready"), workers, "no worker crashed");
}

/// Regression: with every connection slot held by idle keep-alive connections, a new client
/// waited for one of them to time out (5 s by default; forever if they send a request now and
/// then). Now a worker at its connection limit closes its idle keep-alive connections, as nginx
/// reuses its own.
#[test]
fn idle_keepalive_connections_do_not_lock_new_clients_out() {
    let mut env = Env::with(
        1,
        "",
        "[limits]\nmax_connections = 50\nkeepalive = \"60s\"\n",
    );
    env.start_ready(1);
    let mut idle: Vec<BufReader<TcpStream>> = (0..50)
        .map(|_| {
            let mut s = TcpStream::connect(env.addr()).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            BufReader::new(s)
        })
        .collect();
    for reader in &mut idle {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    }
    let asked = Instant::now();
    let r = env.predict(&photo("chelsea.png"));
    let waited = asked.elapsed();
    // The slots were reclaimed from idle connections only.
    let mut closed = 0;
    for reader in &mut idle {
        reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut rest = Vec::new();
        // The rest of the answer, then the end: the server closed it.
        if reader.read_to_end(&mut rest).is_ok() {
            closed += 1;
        }
    }
    println!(
        "50 idle keep-alive connections holding all 50 slots (keepalive 60 s): a new client answered {} after {:.0} ms; {closed} idle connections closed to make room",
        r.status,
        ms(waited)
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        waited < Duration::from_secs(3),
        "the new client waited {waited:?} for a slot"
    );
    assert!(closed >= 1);
}

/// Out of descriptors, a worker closes the connections that wait longest with no request
/// running (idle keep-alive ones here) to make room, rather than failing accepts until a client
/// leaves (issue 26); it does not spin meanwhile.
#[test]
fn worker_out_of_descriptors_sheds_idle_connections() {
    let mut env = Env::new(1);
    env.start_ready(1);
    let worker = pids_in(&env, "ready")[0];
    let (soft, hard) = nofile(worker);
    let limit = lowest_free_fd(worker) + 3;
    set_nofile(worker, &limit.to_string(), &hard);
    let warnings_before = count_in_log(&env, "accept failed");
    // 40 clients, each asking once and then holding its connection; the worker can hold 3.
    let mut holders: Vec<BufReader<TcpStream>> = (0..40)
        .map(|_| {
            let mut s = TcpStream::connect(env.addr()).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            BufReader::new(s)
        })
        .collect();
    let mut answered = 0;
    for reader in &mut holders {
        let mut line = String::new();
        if reader.read_line(&mut line).is_ok() && line.starts_with("HTTP/1.1 200") {
            answered += 1;
        }
    }
    // A real request, the holders still connected: it gets the place of an idle one.
    let started = Instant::now();
    let answer = post_multipart(
        env.addr(),
        "/model_predict",
        "image",
        &photo("grace_hopper.jpg"),
    );
    let waited = started.elapsed();
    let ticks_before = cpu_ticks(worker).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let ticks = cpu_ticks(worker).unwrap() - ticks_before;
    let warnings = count_in_log(&env, "accept failed") - warnings_before;
    set_nofile(worker, &soft, &hard);
    drop(holders);
    println!(
        "worker out of descriptors (RLIMIT_NOFILE {limit}, 40 clients holding their connections): \
         {answered} of 40 answered, {warnings} accept warnings; a request meanwhile answered {} \
         after {:.0} ms; {ticks} CPU ticks (1/100 s) in the 2 s after",
        answer.status,
        ms(waited)
    );
    assert!(warnings >= 1, "the worker did run out of descriptors");
    assert_eq!(
        answered, 40,
        "every client was answered, idle ones closed to make room"
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(
        ticks < 40,
        "the worker does not spin ({ticks} ticks in 2 s)"
    );
    assert_eq!(env.status()["worker_restarts"], 0);
    assert_eq!(pids_in(&env, "ready"), vec![worker]);
}

/// Regression: out of descriptors, the arbiter's control socket stayed readable and the event
/// loop spun on a failing accept, logging each failure (here: 72% of a core and 330 000 log
/// lines in 3 s). Now it backs off.
#[test]
fn arbiter_out_of_descriptors_backs_off() {
    let mut env = Env::new(1);
    env.start_ready(1);
    let arbiter = env.pid().as_raw();
    let (soft, hard) = nofile(arbiter);
    let limit = lowest_free_fd(arbiter);
    set_nofile(arbiter, &limit.to_string(), &hard);
    let mut waiting = UnixStream::connect(env.dir.path().join("arbiter.sock")).unwrap();
    waiting.write_all(b"{\"command\":\"status\"}\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let warnings_before = count_in_log(&env, "control socket accept failed");
    let ticks_before = cpu_ticks(arbiter).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let ticks = cpu_ticks(arbiter).unwrap() - ticks_before;
    let warnings = count_in_log(&env, "control socket accept failed") - warnings_before;
    set_nofile(arbiter, &soft, &hard);
    // With descriptors back, the waiting command is answered.
    waiting
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = String::new();
    BufReader::new(&waiting).read_line(&mut answer).unwrap();
    println!(
        "arbiter out of descriptors (RLIMIT_NOFILE {limit}): {ticks} CPU ticks (1/100 s) and \
         {warnings} accept warnings in 2 s; the waiting status request answered once they were back"
    );
    assert!(
        ticks < 20,
        "the arbiter does not spin ({ticks} ticks in 2 s)"
    );
    assert!(warnings >= 1, "the arbiter did run out of descriptors");
    assert!(warnings <= 5, "{warnings} warnings in 2 s");
    assert!(answer.contains("\"ok\":true"), "{answer}");
    assert_eq!(env.status()["workers"].as_array().unwrap().len(), 1);
}
