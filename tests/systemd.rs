//! Under systemd's own tools: `systemd-socket-activate` passes real `LISTEN_FDS` (and execs the
//! arbiter in its place, so `LISTEN_PID` is the arbiter's), and the test binds the
//! `NOTIFY_SOCKET` the arbiter reports to, receiving the real datagrams. Also what a killed
//! arbiter leaves behind, the pidfile's lock, and `systemd-analyze verify` on the units.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::util::*;

/// The test's end of `NOTIFY_SOCKET`: every datagram the arbiter sends, with when it came.
struct Notify {
    socket: UnixDatagram,
    path: PathBuf,
    seen: Vec<(Instant, String)>,
}

impl Notify {
    fn bind(dir: &Path) -> Notify {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Notify {
            socket,
            path,
            seen: Vec::new(),
        }
    }

    /// Receives until a datagram satisfies `done` (returned, and kept in `seen`); panics after
    /// `timeout` with everything seen and the log.
    fn until(&mut self, env: &Env, timeout: Duration, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push((Instant::now(), message.clone()));
                if done(&message) {
                    return message;
                }
            }
        }
        panic!(
            "no such notification in {timeout:?}; seen {:?}; log:\n{}",
            self.seen,
            env.log()
        );
    }

    /// The datagrams seen so far that contain `line`.
    fn with_line(&self, line: &str) -> Vec<(Instant, String)> {
        self.seen
            .iter()
            .filter(|(_, m)| m.lines().any(|l| l == line))
            .cloned()
            .collect()
    }
}

fn has_line(message: &str, line: &str) -> bool {
    message.lines().any(|l| l == line)
}

fn require_systemd_tools() {
    for tool in ["systemd-socket-activate", "systemd-analyze"] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "{tool} is missing: run scripts/setup (it installs Debian's systemd package)"
        );
    }
}

/// The env's config with `bind = ["fd://3"]`: the socket unit's descriptor, as documented.
fn bind_fd3(env: &Env) {
    let text = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        text.replace(
            &format!("bind = [\"127.0.0.1:{}\"]", env.port),
            "bind = [\"fd://3\"]",
        ),
    )
    .unwrap();
}

/// `systemd-socket-activate -l 127.0.0.1:PORT` running `command` (the arbiter, or a shell
/// that runs it) once a connection arrives, with only the variables passed by `-E` (the tool
/// passes no other environment).
fn socket_activate(env: &Env, notify: &Notify, extra: &[&str], command: &[&str]) -> Child {
    require_systemd_tools();
    let log = std::fs::File::create(env.log_path()).unwrap();
    let mut args = vec![
        format!("--listen=127.0.0.1:{}", env.port),
        "-E".into(),
        "PATH".into(),
        "-E".into(),
        "RUST_LOG=info".into(),
        "-E".into(),
        format!("NOTIFY_SOCKET={}", notify.path.display()),
    ];
    for e in extra {
        args.push("-E".into());
        args.push((*e).into());
    }
    args.extend(command.iter().map(|s| (*s).to_owned()));
    Command::new("systemd-socket-activate")
        .args(&args)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits until systemd-socket-activate listens (it starts in the background), by connecting:
/// that connection is also the one that makes it start the service.
fn wait_listening(env: &Env) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(env.addr()).is_err() {
        assert!(Instant::now() < deadline, "nothing listens:\n{}", env.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn arbiter_command(env: &Env) -> Vec<String> {
    vec![
        env!("CARGO_BIN_EXE_arbiter").to_owned(),
        "start".into(),
        "-c".into(),
        env.config.display().to_string(),
    ]
}

/// Whether a process is gone: no such pid, or a zombie nobody reaped yet.
fn gone(pid: u32) -> bool {
    !arbiter_core::pidfile::alive(pid)
}

/// The pid in the pidfile, if it names a live process.
fn pidfile_pid(env: &Env) -> Option<u32> {
    arbiter_core::pidfile::read_live(&env.dir.path().join("arbiter.pid"))
}

/// Stops (QUIT, then KILL) whatever arbiter the pidfile names when the test ends, passed or
/// not: under a shell, the arbiter is not the test's child.
struct StopByPidfile(PathBuf);

impl Drop for StopByPidfile {
    fn drop(&mut self) {
        let Some(pid) = arbiter_core::pidfile::read_live(&self.0) else {
            return;
        };
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGQUIT);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !gone(pid) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}

/// `bind = ["fd://3"]` under socket activation: fd 3 is adopted once (it used to be twice, and
/// every worker failed with EEXIST), READY=1 comes only once a request gets its 200, the
/// connection that started the service is answered, and a program does not inherit the socket.
#[test]
fn ready_after_a_200_is_possible_and_the_activated_socket_adopted_once() {
    let sections = r#"
[[program]]
name = "fds"
command = ["sh", "-c", "ls -l /proc/$$/fd > fds.txt; exec sleep 60"]
startsecs = "0s"
"#;
    let mut env = Env::with_model(Model::Tiny, 2, "", sections);
    let sections = sections.replace(
        "fds.txt",
        &env.dir.path().join("fds.txt").display().to_string(),
    );
    env.write_config(2, "", &sections);
    bind_fd3(&env);
    let mut notify = Notify::bind(env.dir.path());
    let command = arbiter_command(&env);
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    env.arbiter = Some(socket_activate(&env, &notify, &[], &command));
    wait_listening(&env);
    // systemd-socket-activate execs the arbiter on the first connection: this request starts
    // the service, waits in the socket's queue, and is answered once a worker accepts.
    let addr = env.addr();
    let first = std::thread::spawn(move || {
        post_multipart(addr, "/model_predict", "image", &photo("chelsea.png")).status
    });
    let ready = notify.until(&env, Duration::from_secs(60), |m| has_line(m, "READY=1"));
    // At once: READY=1 means a request is answered now.
    assert_eq!(env.get("/readyz").status, 200, "{}", env.log());
    assert_eq!(env.predict(&photo("chelsea.png")).status, 200);
    assert_eq!(first.join().unwrap(), 200);
    assert!(
        ready.contains("STATUS=serving: 2 workers of generation 1"),
        "{ready}"
    );
    assert!(
        notify.seen[0].1.starts_with("STATUS=starting"),
        "a status line before READY: {:?}",
        notify.seen
    );
    assert_eq!(notify.with_line("READY=1").len(), 1);
    let log = env.log();
    assert_eq!(
        log.matches("listening").count(),
        1,
        "fd 3 adopted once:\n{log}"
    );
    assert!(log.contains("listening (socket activation)"), "{log}");
    // The program started after READY listed its descriptors: no socket among them.
    let fds = env.dir.path().join("fds.txt");
    wait_until(
        Duration::from_secs(10),
        "the program to list its fds",
        || std::fs::read_to_string(&fds).is_ok_and(|s| s.contains("->")),
    );
    let listing = std::fs::read_to_string(&fds).unwrap();
    assert!(
        !listing.contains("socket:"),
        "a [[program]] inherited a socket:\n{listing}"
    );
    env.signal(Signal::SIGTERM);
    notify.until(&env, Duration::from_secs(20), |m| has_line(m, "STOPPING=1"));
    assert_eq!(env.wait_exit(Duration::from_secs(20)), Some(0));
}

/// A HUP reload says RELOADING=1 with MONOTONIC_USEC first, a status line, then READY=1 once
/// the new generation serves; a stop says STOPPING=1.
#[test]
fn a_reload_says_reloading_then_ready_in_order() {
    let mut env = Env::tiny(1);
    bind_fd3(&env);
    let mut notify = Notify::bind(env.dir.path());
    let command = arbiter_command(&env);
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    env.arbiter = Some(socket_activate(&env, &notify, &[], &command));
    wait_listening(&env);
    let addr = env.addr();
    let first = std::thread::spawn(move || {
        try_request(addr, "GET", "/readyz", &[], &[])
            .map(|r| r.status)
            .ok()
    });
    notify.until(&env, Duration::from_secs(60), |m| has_line(m, "READY=1"));
    assert_eq!(first.join().unwrap(), Some(200));
    let before = notify.seen.len();
    env.signal(Signal::SIGHUP);
    notify.until(&env, Duration::from_secs(60), |m| has_line(m, "READY=1"));
    let reload: Vec<&str> = notify.seen[before..]
        .iter()
        .map(|(_, m)| m.as_str())
        .collect();
    let first_lines: Vec<&str> = reload[0].lines().collect();
    assert_eq!(first_lines[0], "RELOADING=1", "{reload:?}");
    let usec: u64 = first_lines[1]
        .strip_prefix("MONOTONIC_USEC=")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC: {reload:?}"));
    assert!(usec > 0);
    assert!(
        reload[1..reload.len() - 1]
            .iter()
            .all(|m| m.starts_with("STATUS=") && !has_line(m, "READY=1")),
        "{reload:?}"
    );
    assert!(
        reload
            .iter()
            .any(|m| m.contains("rolling 1 workers onto generation 2")),
        "{reload:?}"
    );
    let done = reload.last().unwrap();
    assert!(
        done.starts_with("READY=1\nSTATUS=serving: 1 workers of generation 2"),
        "{reload:?}"
    );
    // READY=1 came when generation 2 serves.
    assert!(
        env.workers("ready").iter().all(|w| w["generation"] == 2),
        "{}",
        env.status()
    );
    assert_eq!(env.predict(&photo("chelsea.png")).status, 200);
    env.signal(Signal::SIGTERM);
    let stopping = notify.until(&env, Duration::from_secs(20), |m| has_line(m, "STOPPING=1"));
    assert!(stopping.contains("STATUS=stopping"), "{stopping}");
    assert_eq!(env.wait_exit(Duration::from_secs(20)), Some(0));
}

/// With WATCHDOG_USEC set (WatchdogSec=1s), WATCHDOG=1 comes every half period.
#[test]
fn the_watchdog_is_pinged_at_half_its_period() {
    let mut env = Env::tiny(1);
    bind_fd3(&env);
    let mut notify = Notify::bind(env.dir.path());
    let command = arbiter_command(&env);
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    env.arbiter = Some(socket_activate(
        &env,
        &notify,
        &["WATCHDOG_USEC=1000000"],
        &command,
    ));
    wait_listening(&env);
    let addr = env.addr();
    let _ = std::thread::spawn(move || try_request(addr, "GET", "/readyz", &[], &[]));
    notify.until(&env, Duration::from_secs(60), |m| has_line(m, "READY=1"));
    let start = Instant::now();
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        notify.until(&env, Duration::from_secs(3), |_| false)
    }));
    let pings: Vec<Instant> = notify
        .with_line("WATCHDOG=1")
        .into_iter()
        .map(|(t, _)| t)
        .filter(|t| *t >= start)
        .collect();
    assert!(
        pings.len() >= 4,
        "{} pings in 3 s: {:?}",
        pings.len(),
        notify.seen
    );
    for pair in pings.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(400) && gap < Duration::from_millis(900),
            "a ping {gap:?} after the last, for a 500 ms period"
        );
    }
}

/// The socket outlives the arbiter: a parent holds it (as systemd's socket unit does) and runs
/// one arbiter after the other on it, each with real LISTEN_FDS. systemd-socket-activate
/// execs its command on the first connection and can start only one, so it starts a shell
/// that keeps fd 3 open and runs two arbiters in turn, each execed by a shell that sets
/// LISTEN_PID to its own pid. Under load through the restart, no connection is refused: they
/// queue on the socket until the second arbiter's workers accept them.
#[test]
fn the_socket_outlives_an_arbiter_restart_and_no_connection_is_refused() {
    let env = Env::tiny(1);
    bind_fd3(&env);
    let _stop = StopByPidfile(env.dir.path().join("arbiter.pid"));
    let mut notify = Notify::bind(env.dir.path());
    let script = format!(
        "for run in 1 2; do sh -c 'export LISTEN_PID=$$; exec {bin} start -c {config}'; done",
        bin = env!("CARGO_BIN_EXE_arbiter"),
        config = env.config.display()
    );
    let mut keeper = socket_activate(&env, &notify, &[], &["sh", "-c", &script]);
    wait_listening(&env);
    let load = Load::start(env.addr(), photo("chelsea.png"), 2, Duration::from_secs(90));
    notify.until(&env, Duration::from_secs(60), |m| has_line(m, "READY=1"));
    std::thread::sleep(Duration::from_millis(500));
    let first = pidfile_pid(&env).expect("the first arbiter's pid");
    kill(Pid::from_raw(first as i32), Signal::SIGTERM).unwrap();
    notify.until(&env, Duration::from_secs(30), |m| has_line(m, "STOPPING=1"));
    notify.until(&env, Duration::from_secs(60), |m| has_line(m, "READY=1"));
    let second = pidfile_pid(&env).expect("the second arbiter's pid");
    assert_ne!(first, second);
    assert!(gone(first));
    std::thread::sleep(Duration::from_millis(500));
    let (ok, failures, _) = load.finish();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed across the restart: {:?}\nlog:\n{}",
        failures.len(),
        ok as usize + failures.len(),
        &failures[..failures.len().min(5)],
        env.log()
    );
    assert!(ok > 0);
    let log = env.log();
    assert_eq!(
        log.matches("listening (socket activation)").count(),
        2,
        "{log}"
    );
    kill(Pid::from_raw(second as i32), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while keeper.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the shell did not end:\n{}",
            env.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGKILL of the arbiter leaves no worker and no program running a second later.
#[test]
fn a_killed_arbiter_leaves_no_worker_or_program() {
    let sections = r#"
[[program]]
name = "sleeper"
command = ["sleep", "60"]
startsecs = "0s"
"#;
    let mut env = Env::with_model(Model::Tiny, 2, "", sections);
    env.start_ready(2);
    wait_until(Duration::from_secs(10), "the program to run", || {
        env.status()["programs"][0]["pid"].as_u64().is_some()
    });
    let status = env.status();
    let mut pids: Vec<u32> = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["pid"].as_u64().unwrap() as u32)
        .collect();
    pids.push(status["programs"][0]["pid"].as_u64().unwrap() as u32);
    assert_eq!(pids.len(), 3);
    env.signal(Signal::SIGKILL);
    env.arbiter.as_mut().unwrap().wait().unwrap();
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(1);
    while Instant::now() < deadline && !pids.iter().all(|&p| gone(p)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left: Vec<u32> = pids.iter().copied().filter(|&p| !gone(p)).collect();
    for &pid in &left {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    assert!(
        left.is_empty(),
        "still running a second after the arbiter was killed: {left:?} (of workers and program {pids:?})"
    );
}

/// A second `arbiter start` on the same pidfile is refused while the first runs (even on
/// another port and control socket, so only the pidfile stands in its way), and the first's
/// pidfile stays; of three started at once on a fresh pidfile, one runs.
#[test]
fn a_second_start_is_refused_and_the_first_pidfile_kept() {
    let mut env = Env::tiny(1);
    env.start_ready(1);
    let pidfile = env.dir.path().join("arbiter.pid");
    let first = env.pid().as_raw() as u32;
    assert_eq!(pidfile_pid(&env), Some(first));
    let other = |name: &str, pidfile: &Path| {
        let text = std::fs::read_to_string(&env.config).unwrap();
        let port = free_port();
        let text = text
            .replace(
                &format!("127.0.0.1:{}", env.port),
                &format!("127.0.0.1:{port}"),
            )
            .replace("arbiter.sock", &format!("{name}.sock"))
            .replace(
                &format!(
                    "pidfile = \"{}\"",
                    env.dir.path().join("arbiter.pid").display()
                ),
                &format!("pidfile = \"{}\"", pidfile.display()),
            );
        let path = env.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    };
    let second = other("second", &pidfile);
    let out = bin().args(["start", "-c"]).arg(&second).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("already running with pid {first}")),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&pidfile).unwrap().trim(),
        first.to_string()
    );
    assert_eq!(env.predict(&photo("chelsea.png")).status, 200);

    // Three at once on a fresh pidfile: one takes it, two are refused.
    let race = env.dir.path().join("race.pid");
    let configs: Vec<PathBuf> = (0..3).map(|i| other(&format!("race{i}"), &race)).collect();
    let mut children: Vec<Child> = configs
        .iter()
        .map(|c| {
            bin()
                .args(["start", "-c"])
                .arg(c)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let running = loop {
        let running: Vec<usize> = (0..3)
            .filter(|&i| children[i].try_wait().unwrap().is_none())
            .collect();
        if running.len() <= 1 || Instant::now() > deadline {
            break running;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let pids: Vec<u32> = running.iter().map(|&i| children[i].id()).collect();
    let named = arbiter_core::pidfile::read_live(&race);
    for child in &mut children {
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGQUIT);
    }
    for child in &mut children {
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    assert_eq!(pids.len(), 1, "arbiters running on one pidfile: {pids:?}");
    assert_eq!(named, Some(pids[0]));
}

/// `systemd-analyze verify` accepts deploy/systemd's units (with ExecStart pointed at the
/// binary under test: it checks that the command exists).
#[test]
fn systemd_analyze_verifies_the_units() {
    require_systemd_tools();
    let dir = tempfile::tempdir().unwrap();
    for unit in ["arbiter.service", "arbiter.socket"] {
        let text = std::fs::read_to_string(root().join("deploy/systemd").join(unit)).unwrap();
        std::fs::write(
            dir.path().join(unit),
            text.replace("/usr/local/bin/arbiter", env!("CARGO_BIN_EXE_arbiter")),
        )
        .unwrap();
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("arbiter.service"))
        .arg(dir.path().join("arbiter.socket"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.trim().is_empty(), "{text}");
}
