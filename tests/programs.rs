//! Supervised programs (`[[program]]`) with real processes: restarts, FATAL, stop order, output.

use std::time::Duration;

use crate::util::*;

fn program(env: &Env, name: &str) -> serde_json::Value {
    env.status()["programs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
        .unwrap_or_default()
}

#[test]
fn crashing_program_is_restarted_and_crash_loop_goes_fatal() {
    let sections = r#"
[[program]]
name = "flaky"
command = ["sh", "-c", "echo flaky says hello; sleep 1.2; exit 7"]
startsecs = "1s"
autorestart = "unexpected"

[[program]]
name = "broken"
command = ["sh", "-c", "echo broken fails >&2; exit 1"]
startsecs = "1s"
startretries = 2
"#;
    let mut env = Env::with_model(Model::Tiny, 1, "", sections);
    env.start_ready(1);
    wait_until(Duration::from_secs(20), "flaky to be restarted", || {
        program(&env, "flaky")["restarts"].as_u64().unwrap_or(0) >= 1
    });
    wait_until(Duration::from_secs(20), "broken to go FATAL", || {
        program(&env, "broken")["state"] == "FATAL"
    });
    let log = env.log();
    assert!(
        log.contains("flaky says hello") && log.contains("program=flaky"),
        "{log}"
    );
    assert!(
        log.contains("broken fails") && log.contains("stream=\"stderr\""),
        "{log}"
    );
    let table = String::from_utf8(env.cli(&["status"]).stdout).unwrap();
    assert!(
        table.contains("PROGRAM") && table.contains("FATAL"),
        "{table}"
    );
    // The service itself is untouched.
    assert_eq!(env.predict(&photo("chelsea.png")).status, 200);
}

#[test]
fn programs_start_after_workers_and_stop_before_them() {
    let sections = r#"
[[program]]
name = "proxy"
command = ["sh", "-c", "trap 'echo proxy-got-term; exit 0' TERM; echo proxy-up; while true; do sleep 0.1; done"]
startsecs = "0s"
stopwaitsecs = "5s"
"#;
    let mut env = Env::with_model(Model::Tiny, 1, "", sections);
    env.start_ready(1);
    wait_until(Duration::from_secs(10), "the program to run", || {
        program(&env, "proxy")["state"] == "RUNNING"
    });
    let out = env.cli(&["stop"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.wait_exit(Duration::from_secs(5)), Some(0));
    let log = env.log();
    let at = |needle: &str| {
        log.find(needle)
            .unwrap_or_else(|| panic!("`{needle}` not in log:\n{log}"))
    };
    assert!(
        at("worker ready") < at("proxy-up"),
        "the program starts after the workers are ready"
    );
    assert!(
        at("proxy-got-term") < at("draining"),
        "the program stops before the workers drain:\n{log}"
    );
    assert!(at("program stopped") < at("worker retired"));
}

#[test]
fn reload_applies_changed_programs() {
    let one = "[[program]]\nname = \"a\"\ncommand = [\"sleep\", \"300\"]\nstartsecs = \"0s\"\n";
    let mut env = Env::with_model(Model::Tiny, 1, "", one);
    env.start_ready(1);
    wait_until(Duration::from_secs(10), "a to run", || {
        program(&env, "a")["state"] == "RUNNING"
    });
    let first = program(&env, "a")["pid"].as_u64().unwrap();
    env.write_config(
        1,
        "",
        "[[program]]\nname = \"b\"\ncommand = [\"sleep\", \"300\"]\nstartsecs = \"0s\"\n",
    );
    let out = env.cli(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(Duration::from_secs(10), "b to run and a to go", || {
        program(&env, "b")["state"] == "RUNNING" && program(&env, "a").is_null()
    });
    assert!(
        std::fs::metadata(format!("/proc/{first}")).is_err() || {
            let stat = std::fs::read_to_string(format!("/proc/{first}/stat")).unwrap_or_default();
            stat.contains(") Z")
        }
    );
}
