//! The arbiter with real workers: supervision, signals, reload, scaling, budget, recycling, PID 1.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::util::*;

fn pids(env: &Env) -> Vec<i32> {
    env.workers("ready")
        .iter()
        .map(|w| w["pid"].as_i64().unwrap() as i32)
        .collect()
}

/// 1. Two workers start; status lists them; a request is answered.
#[test]
fn starts_workers_lists_them_and_answers() {
    let started = Instant::now();
    let mut env = Env::new(2);
    env.start_ready(2);
    let first = env.predict(&photo("grace_hopper.jpg"));
    println!("time from start to first 200: {:?}", started.elapsed());
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.json()["status"], 1);

    let status = env.status();
    assert_eq!(status["target_workers"], 2);
    assert_eq!(status["listeners"][0], format!("127.0.0.1:{}", env.port));
    let table = String::from_utf8(env.cli(&["status"]).stdout).unwrap();
    assert!(table.contains("SLOT") && table.contains("ready"), "{table}");
    // Workers are children of the arbiter, not of anything else.
    for pid in pids(&env) {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let ppid: i32 = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(ppid, env.pid().as_raw());
    }
}

/// 2. A SIGKILLed worker is replaced; the other keeps serving; restarts are counted.
#[test]
fn killed_worker_is_replaced() {
    let mut env = Env::tiny(2);
    env.start_ready(2);
    let before = pids(&env);
    let killed_at = Instant::now();
    kill(Pid::from_raw(before[0]), Signal::SIGKILL).unwrap();
    // The survivor answers while the replacement boots.
    assert_eq!(env.predict(&photo("chelsea.png")).status, 200);
    env.wait_ready(2, Duration::from_secs(30));
    println!(
        "time from SIGKILL to the replacement ready: {:?}",
        killed_at.elapsed()
    );
    let after = pids(&env);
    assert!(
        !after.contains(&before[0]) && after.contains(&before[1]),
        "{before:?} -> {after:?}"
    );
    let status = env.status();
    assert_eq!(status["worker_restarts"], 1);
    let restarts: u64 = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["restarts"].as_u64().unwrap())
        .sum();
    assert_eq!(restarts, 1);
    assert_eq!(env.predict(&photo("chelsea.png")).status, 200);
}

/// 3. A stopped (hung) worker misses its heartbeats and is killed and replaced.
#[test]
fn hung_worker_is_killed_by_the_heartbeat_timeout() {
    let mut env = Env::tiny(1);
    env.start_ready(1);
    let hung = pids(&env)[0];
    let stopped_at = Instant::now();
    kill(Pid::from_raw(hung), Signal::SIGSTOP).unwrap();
    wait_until(
        Duration::from_secs(30),
        "the hung worker to be replaced",
        || {
            let ready = pids(&env);
            ready.len() == 1 && ready[0] != hung
        },
    );
    println!(
        "hung worker replaced after {:?} (heartbeat_timeout 3s)",
        stopped_at.elapsed()
    );
    assert!(
        std::fs::metadata(format!("/proc/{hung}")).is_err(),
        "the hung worker is gone"
    );
    assert!(env.log().contains("no heartbeat"), "{}", env.log());
    assert_eq!(env.predict(&photo("chelsea.png")).status, 200);
}

/// 4. A missing model file stops the arbiter with a non-zero code and the path (no restart loop).
#[test]
fn missing_model_exits_non_zero_naming_the_path() {
    let mut env = Env::tiny(2);
    let text = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace("tiny_ok.onnx", "missing-model.onnx");
    // The budget reads the model's size too: declare it so the workers get to try.
    std::fs::write(
        &env.config,
        format!("{text}\n[memory]\nper_worker = \"300MiB\"\n"),
    )
    .unwrap();
    let started = Instant::now();
    env.start();
    let code = env.wait_exit(Duration::from_secs(60));
    println!("arbiter gave up after {:?}", started.elapsed());
    assert_eq!(code, Some(3), "{}", env.log());
    assert!(env.log().contains("missing-model.onnx"), "{}", env.log());
}

/// 5. TERM while a request is in flight: the request completes with 200, then exit 0.
#[test]
fn term_lets_the_in_flight_request_finish() {
    // A long batching delay holds the request in the worker for a second.
    let mut env = Env::with_model(
        Model::Tiny,
        1,
        "",
        "[batching]\nmax_delay = \"1500ms\"\nmax_batch_size = 8\n",
    );
    env.start_ready(1);
    let addr = env.addr();
    let image = photo("grace_hopper.jpg");
    let request =
        std::thread::spawn(move || post_multipart(addr, "/model_predict", "image", &image));
    std::thread::sleep(Duration::from_millis(400));
    env.signal(Signal::SIGTERM);
    let response = request.join().unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        env.wait_exit(Duration::from_secs(20)),
        Some(0),
        "{}",
        env.log()
    );
    assert!(
        !env.dir.path().join("arbiter.pid").exists(),
        "pidfile removed"
    );
    assert!(
        !env.dir.path().join("arbiter.sock").exists(),
        "control socket removed"
    );
}

/// 6. HUP under continuous load with a changed worker count and threshold.
///
/// No request fails, and the answers switch to the new threshold.
#[test]
fn reload_under_load_loses_nothing() {
    let mut env = Env::new(1);
    env.start_ready(1);
    let image = photo("grace_hopper.jpg");
    let before = env.predict(&image).json();
    assert_eq!(before["status"], 1);
    let load = Load::start(env.addr(), image.clone(), 4, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    // A threshold no output reaches: every answer becomes "No Categories".
    env.write_config(2, "", "");
    let text = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace("threads = 1", "threads = 1\nthreshold = 1000.0");
    std::fs::write(&env.config, text).unwrap();
    let out = env.cli(&["reload"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // `arbiter reload` returns once the new generation serves and the old one has been told to
    // stop accepting: every request sent once the old workers have taken that in (a moment; 200
    // ms here) is answered with the new threshold. One sent before may still finish on a
    // draining old worker.
    let reloaded = Instant::now() + Duration::from_millis(200);
    std::thread::sleep(Duration::from_millis(1000));
    let (ok, failures, answers) = load.finish();
    let after: Vec<&Value> = answers
        .iter()
        .filter(|(sent, _)| *sent >= reloaded)
        .map(|(_, answer)| answer)
        .collect();
    println!(
        "reload under load: {ok} requests answered ({} sent after the reload), {} failed",
        after.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(ok > 5, "the load ran ({ok} requests)");
    for answer in after {
        assert_eq!(
            answer,
            &serde_json::json!({"result": "No Categories", "status": 0})
        );
    }
    env.wait_ready(2, Duration::from_secs(10));
    assert_eq!(env.status()["generation"], 2);
    assert_eq!(env.predict(&image).json()["status"], 0);
}

/// 7. HUP with a broken config.
///
/// The old workers keep serving; `arbiter reload` prints the error with its line, exits non-zero.
#[test]
fn broken_config_reload_changes_nothing() {
    let mut env = Env::tiny(1);
    env.start_ready(1);
    let before = pids(&env);
    let good = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        good.replace("workers = 1", "workers = \"many\""),
    )
    .unwrap();
    let out = env.cli(&["reload"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains(":3: server.workers: expected an integer"),
        "{stderr}"
    );
    // A HUP straight to the arbiter is refused too, and logged.
    env.signal(Signal::SIGHUP);
    wait_until(Duration::from_secs(5), "the refusal in the log", || {
        env.log().contains("reload refused")
    });
    assert_eq!(pids(&env), before);
    assert_eq!(env.status()["generation"], 1);
    assert_eq!(env.predict(&photo("chelsea.png")).status, 200);
}

/// A reload onto a recipe the model cannot take (the tiny model is NCHW, the config says NHWC)
/// passes the config's own checks, but the new generation's workers fail to boot, naming the
/// model's input: the reload is aborted and the old workers keep serving.
#[test]
fn reload_onto_a_recipe_the_model_cannot_take_changes_nothing() {
    let mut env = Env::tiny(1);
    env.start_ready(1);
    let before = pids(&env);
    let good = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        good + "\n[model.preprocess]\nlayout = \"nhwc\"\n",
    )
    .unwrap();
    let out = env.cli(&["reload"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("reload aborted"), "{stderr}");
    assert!(
        env.log().contains(
            "model input `input` is float32 [N, 3, 4, 4] (NCHW) but model.preprocess.layout = \"nhwc\""
        ),
        "{}",
        env.log()
    );
    assert_eq!(pids(&env), before);
    assert_eq!(env.predict(&photo("chelsea.png")).status, 200);
}

/// 8. TTIN adds a worker, TTOU removes one.
#[test]
fn ttin_and_ttou_scale() {
    let mut env = Env::tiny(1);
    env.start_ready(1);
    env.signal(Signal::SIGTTIN);
    env.wait_ready(2, Duration::from_secs(30));
    assert_eq!(env.status()["target_workers"], 2);
    let out = env.cli(&["ttin"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.wait_ready(3, Duration::from_secs(30));
    env.signal(Signal::SIGTTOU);
    env.wait_ready(2, Duration::from_secs(30));
    let out = env.cli(&["ttou"]);
    assert!(out.status.success());
    env.wait_ready(1, Duration::from_secs(30));
    let out = env.cli(&["ttou"]);
    assert!(!out.status.success(), "cannot go below one worker");
    assert_eq!(env.predict(&photo("chelsea.png")).status, 200);
}

/// 9. The budget: 4 x 3 GiB workers do not fit in a declared 12 GiB; 3 do.
#[test]
fn budget_refuses_four_and_accepts_three() {
    let memory = "[memory]\nlimit = \"12GiB\"\nper_worker = \"3GiB\"\n";
    let mut env = Env::with(4, "", memory);
    env.start();
    assert_eq!(env.wait_exit(Duration::from_secs(10)), Some(1));
    assert!(
        env.log().contains(
            "4 workers need 15.0 GiB ((4+1) x 3.0 GiB) but the host has 12.0 GiB: at most 3 fit"
        ),
        "{}",
        env.log()
    );
    env.write_config(3, "", memory);
    env.start_ready(3);
    assert!(
        env.status()["budget"]
            .as_str()
            .unwrap()
            .contains("3 workers need 12.0 GiB"),
        "{}",
        env.status()
    );
    // TTIN past the budget is refused and changes nothing.
    let out = env.cli(&["ttin"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at most 3 fit"));
}

/// 10. max_requests recycles a worker gracefully; no request fails.
#[test]
fn max_requests_recycles_workers() {
    let mut env = Env::with_model(
        Model::Tiny,
        1,
        "max_requests = 3\nmax_requests_jitter = 0",
        "",
    );
    env.start_ready(1);
    let first = pids(&env)[0];
    for i in 0..8 {
        let r = env.predict(&photo("chelsea.png"));
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    wait_until(Duration::from_secs(30), "a recycled worker", || {
        let ready = pids(&env);
        ready.len() == 1 && ready[0] != first
    });
    assert_eq!(
        env.status()["worker_restarts"],
        0,
        "recycling is not a crash"
    );
    assert!(env.log().contains("recycl"), "{}", env.log());
}

/// 11. As PID 1 of a PID namespace the arbiter reaps an orphaned grandchild and exits 0 on TERM.
#[test]
fn pid1_reaps_orphans_and_stops_on_term() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root for unshare --pid (CI runs as root)");
        return;
    }
    // The orphan's maker: a supervised program whose shell starts `sleep` in a session of its
    // own (so the program's process-group kill spares it) and exits. The sleep is orphaned
    // inside the namespace, so the kernel hands it to PID 1, the arbiter, which must reap it.
    // (An orphan made from outside with nsenter would go to any child subreaper above the test
    // instead, which depends on what runs the tests.)
    let program = "[[program]]\nname = \"orphaner\"\ncommand = [\"sh\", \"-c\", \"setsid sleep 2 & sleep 0.3\"]\nautorestart = \"never\"\nstartsecs = \"0s\"\n";
    let mut env = Env::with_model(Model::Tiny, 1, "", program);
    let log = std::fs::File::create(env.log_path()).unwrap();
    let child = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(env!("CARGO_BIN_EXE_arbiter"))
        .args(["start", "-c"])
        .arg(&env.config)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    env.arbiter = Some(child);
    // The arbiter is the child of unshare: find it.
    let unshare = env.pid().as_raw();
    let mut arbiter = 0;
    wait_until(
        Duration::from_secs(10),
        "the arbiter inside the namespace",
        || {
            arbiter = children(unshare).into_iter().next().unwrap_or(0);
            arbiter != 0
        },
    );
    env.wait_ready(1, Duration::from_secs(60));
    assert_eq!(
        ns_pid(arbiter),
        Some(1),
        "the arbiter is PID 1 in its namespace"
    );
    let mut orphan = 0;
    wait_until(
        Duration::from_secs(10),
        "the orphaned sleep to become the arbiter's child",
        || {
            orphan = children(arbiter)
                .into_iter()
                .find(|p| comm(*p).as_deref() == Some("sleep"))
                .unwrap_or(0);
            orphan != 0
        },
    );
    wait_until(
        Duration::from_secs(10),
        "the orphan to be reaped, not left a zombie",
        || std::fs::metadata(format!("/proc/{orphan}")).is_err(),
    );
    kill(Pid::from_raw(arbiter), Signal::SIGTERM).unwrap();
    assert_eq!(
        env.wait_exit(Duration::from_secs(20)),
        Some(0),
        "{}",
        env.log()
    );
}

fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

fn ns_pid(pid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|v| v.split_whitespace().last()?.parse().ok())
}

/// 12. The arbiter core depends on neither tokio, hyper nor ONNX Runtime.
#[test]
fn core_is_free_of_tokio_hyper_and_ort() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "-p",
            "arbiter-core",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8(out.stdout).unwrap();
    for banned in ["tokio ", "hyper ", "ort ", "ort-sys "] {
        assert!(
            !tree.lines().any(|l| l.starts_with(banned)),
            "arbiter-core depends on {banned}:\n{tree}"
        );
    }
    assert!(tree.contains("nix "), "the tree was read: {tree}");
}

/// `arbiter stop` drains and returns once the arbiter is gone; nothing is left behind.
#[test]
fn stop_leaves_nothing_behind() {
    let mut env = Env::tiny(2);
    env.start_ready(2);
    let workers = pids(&env);
    let out = env.cli(&["stop"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.wait_exit(Duration::from_secs(5)), Some(0));
    for pid in workers {
        assert!(
            std::fs::metadata(format!("/proc/{pid}")).is_err(),
            "worker {pid} is gone"
        );
    }
    assert!(!env.dir.path().join("arbiter.pid").exists());
    assert!(!env.dir.path().join("arbiter.sock").exists());
    let status: Value =
        serde_json::from_slice(&env.cli(&["status", "--json"]).stdout).unwrap_or(Value::Null);
    assert_eq!(status, Value::Null, "status has nothing to talk to");
}

/// `--daemon` returns once the arbiter listens; USR1 reopens the log file (for logrotate).
#[test]
fn daemon_and_log_reopen() {
    let env = Env::tiny(1);
    let log = env.dir.path().join("daemon.log");
    let text = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        format!("{text}\n[log]\nfile = \"{}\"\n", log.display()),
    )
    .unwrap();
    let out = env.cli(&["start", "--daemon"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8(out.stdout).unwrap();
    let pid: i32 = said.trim().rsplit(' ').next().unwrap().parse().unwrap();
    env.wait_ready(1, Duration::from_secs(60));
    assert_eq!(env.status()["pid"], pid);
    assert_eq!(env.predict(&photo("chelsea.png")).status, 200);
    // logrotate moves the file away, then signals.
    let rotated = env.dir.path().join("daemon.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    kill(Pid::from_raw(pid), Signal::SIGUSR1).unwrap();
    wait_until(Duration::from_secs(5), "a new log file", || log.exists());
    // The workers reopen theirs too: their access lines land in the new file.
    wait_until(
        Duration::from_secs(10),
        "a worker's access line in the new log",
        || {
            assert_eq!(env.predict(&photo("chelsea.png")).status, 200);
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("route=\"model_predict\"")
        },
    );
    assert!(
        std::fs::read_to_string(&rotated)
            .unwrap()
            .contains("arbiter started")
    );
    let out = env.cli(&["stop"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(Duration::from_secs(10), "the daemon to exit", || {
        !arbiter_alive(pid)
    });
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("arbiter stopped")
    );
}

fn arbiter_alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z")
}

/// A unix socket listener (nginx's upstream), and a socket handed over by a parent the way
/// systemd's socket activation does (`LISTEN_FDS`).
#[test]
fn unix_socket_and_socket_activation() {
    let mut env = Env::tiny(1);
    let sock = env.dir.path().join("http.sock");
    let text = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        text.replace(
            &format!("bind = [\"127.0.0.1:{}\"]", env.port),
            &format!("bind = [\"unix:{}\"]", sock.display()),
        ),
    )
    .unwrap();
    // The parent binds the TCP port, then execs the arbiter with it as fd 3.
    let script = format!(
        "import os, socket, sys\n\
         s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('127.0.0.1', {port})); s.listen(64)\n\
         os.dup2(s.fileno(), 3); os.set_inheritable(3, True)\n\
         os.environ['LISTEN_FDS'] = '1'; os.environ['LISTEN_PID'] = str(os.getpid())\n\
         os.execv(sys.argv[1], sys.argv[1:])\n",
        port = env.port
    );
    let log = std::fs::File::create(env.log_path()).unwrap();
    let child = std::process::Command::new("python3")
        .args(["-c", &script, env!("CARGO_BIN_EXE_arbiter"), "start", "-c"])
        .arg(&env.config)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    env.arbiter = Some(child);
    env.wait_ready(1, Duration::from_secs(60));
    let listeners = env.status()["listeners"].clone();
    assert_eq!(listeners.as_array().unwrap().len(), 2, "{listeners}");
    assert_eq!(
        env.predict(&photo("chelsea.png")).status,
        200,
        "through the inherited TCP socket"
    );
    let mut stream = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    use std::io::Write;
    stream
        .write_all(&arbiter_testkit::http::encode("GET", "/readyz", &[], b""))
        .unwrap();
    let answer = arbiter_testkit::http::read_response(&mut stream).unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    env.signal(Signal::SIGTERM);
    assert_eq!(env.wait_exit(Duration::from_secs(20)), Some(0));
    assert!(!sock.exists(), "the socket file is removed at exit");
}
