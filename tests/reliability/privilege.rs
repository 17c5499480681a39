//! Least privilege: started as root with `user`/`group`, workers run unprivileged; the control
//! socket is 0600 and refuses other users; workers as root need `allow_root = true`, which is
//! warned about; no debug or introspection route exists.
//!
//! The first three need root (CI runs as root); elsewhere they say so and pass.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use super::*;
use crate::util::*;

const NOBODY: u32 = 65534;

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// Rewrites the `allow_root = true` line of the test config.
fn set_privileges(env: &Env, lines: &str) {
    let text = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace("allow_root = true\n", &format!("{lines}\n"));
    std::fs::write(&env.config, text).unwrap();
}

#[test]
fn workers_run_unprivileged_and_the_control_socket_refuses_others() {
    if !is_root() {
        eprintln!("skipped: needs root to start the arbiter as root (CI runs as root)");
        return;
    }
    let mut env = Env::new(2);
    set_privileges(
        &env,
        "allow_root = false\nuser = \"nobody\"\ngroup = \"nogroup\"",
    );
    env.start_ready(2);
    let arbiter = env.pid().as_raw();
    assert_eq!(
        proc_status(arbiter, "Uid").unwrap()[0],
        "0",
        "the arbiter stays root"
    );
    for pid in pids_in(&env, "ready") {
        let uid = proc_status(pid, "Uid").unwrap();
        let gid = proc_status(pid, "Gid").unwrap();
        let groups = proc_status(pid, "Groups").unwrap_or_default();
        let caps = proc_status(pid, "CapEff").unwrap();
        println!(
            "worker {pid}: Uid {} Gid {} Groups [{}] CapEff {}",
            uid.join(" "),
            gid.join(" "),
            groups.join(" "),
            caps[0]
        );
        assert!(
            uid.iter().all(|u| u == "65534"),
            "real, effective, saved and fs uid are nobody: {uid:?}"
        );
        assert!(gid.iter().all(|g| g == "65534"), "{gid:?}");
        assert!(
            groups.iter().all(|g| g == "65534"),
            "no supplementary groups: {groups:?}"
        );
        assert_eq!(caps[0], "0000000000000000", "no capabilities left");
    }
    assert_eq!(env.predict(&photo("chelsea.png")).status, 200);

    // The control socket: owned by root, 0600.
    let socket = env.dir.path().join("arbiter.sock");
    let meta = std::fs::metadata(&socket).unwrap();
    println!(
        "control socket {}: mode {:o}, uid {}",
        socket.display(),
        meta.mode() & 0o777,
        meta.uid()
    );
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), 0);
    // Let nobody reach it (and read the config), so that only the socket's own mode stands in
    // the way.
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&env.config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = env.config.display().to_string();
    for command in ["status", "reload", "stop", "ttin"] {
        let out = as_user(NOBODY, NOBODY, &[command, "-c", &config]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!(
            "  `arbiter {command}` as nobody: exit {:?}: {}",
            out.status.code(),
            stderr.trim()
        );
        assert!(!out.status.success(), "{command} as nobody must fail");
        assert!(
            stderr.contains("ermission denied") || stderr.contains("EPERM"),
            "{command}: {stderr}"
        );
    }
    // Nothing changed: same workers, same generation, still running.
    let status = env.status();
    assert_eq!(status["generation"], 1);
    assert_eq!(status["target_workers"], 2);
    assert_eq!(status["phase"], "running");
}

#[test]
fn workers_as_root_need_allow_root_and_get_a_warning() {
    if !is_root() {
        eprintln!("skipped: needs root (CI runs as root)");
        return;
    }
    let mut env = Env::new(1);
    set_privileges(&env, "allow_root = false");
    env.start();
    let code = env.wait_exit(Duration::from_secs(20));
    let log = env.log();
    println!("as root without server.user: exit {code:?}: {}", log.trim());
    assert_ne!(code, Some(0));
    assert!(
        log.contains("server.user"),
        "the refusal says what to set: {log}"
    );
    assert!(!env.dir.path().join("arbiter.pid").exists());

    let text = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace("allow_root = false", "allow_root = true");
    std::fs::write(&env.config, text).unwrap();
    env.start_ready(1);
    assert!(
        env.log().contains("workers will run as root"),
        "allow_root is warned about: {}",
        env.log()
    );
    let worker = pids_in(&env, "ready")[0];
    assert_eq!(proc_status(worker, "Uid").unwrap()[1], "0");
}

/// No debug console, profiler, admin or config route: the seed ran Flask with `debug=True`.
#[test]
fn no_debug_or_introspection_route_is_reachable() {
    let mut env = Env::new(1);
    env.start_ready(1);
    let paths = [
        "/debug",
        "/debug/",
        "/console",
        "/admin",
        "/debug/pprof",
        "/debug/pprof/heap",
        "/debug/vars",
        "/_debug",
        "/__debug__",
        "/env",
        "/config",
        "/server-status",
        "/server-info",
        "/actuator",
        "/actuator/env",
        "/status",
        "/info",
        "/trace",
        "/.env",
        "/.git/config",
        "/static/../etc/passwd",
        "/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/model_predict/../debug",
        "/console?__debugger__=yes",
        "/shutdown",
        "/reload",
        "/v2/repository/models/resnet50/unload/../../index",
        "/v2/logging",
        "/v2/trace/setting",
    ];
    let mut answers = Vec::new();
    for path in paths {
        for method in ["GET", "POST"] {
            let r = request(env.addr(), method, path, &[], b"");
            answers.push(format!("{method} {path} {}", r.status));
            assert_eq!(r.status, 404, "{method} {path}: {}", r.text());
            assert!(r.json()["error"].is_string());
        }
    }
    // `/` is the page for people, `/v2/repository/...` Triton's repository routes: the Werkzeug
    // debugger's query gets the page, nothing more, and the repository answers what it is.
    let page = request(
        env.addr(),
        "GET",
        "/?__debugger__=yes&cmd=resource&f=style.css",
        &[],
        b"",
    );
    answers.push(format!("GET /?__debugger__ {}", page.status));
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(!page.text().contains("__debugger__") && !page.text().contains("Traceback"));
    let unload = request(
        env.addr(),
        "POST",
        "/v2/repository/models/resnet50/unload",
        &[],
        b"",
    );
    answers.push(format!(
        "POST /v2/repository/models/resnet50/unload {}",
        unload.status
    ));
    assert_eq!(unload.status, 403, "{}", unload.text());
    for method in ["TRACE", "OPTIONS", "DEBUG", "CONNECT"] {
        let r = request(env.addr(), method, "/", &[], b"");
        answers.push(format!("{method} / {}", r.status));
        assert!(
            (400..500).contains(&r.status),
            "{method} /: {} {}",
            r.status,
            r.text()
        );
        assert!(!r.text().contains("Host:"), "{method} echoes nothing");
    }
    println!(
        "debug and introspection probes: {} requests, every one 404 (TRACE/OPTIONS/DEBUG/CONNECT / 4xx)",
        answers.len()
    );
}
