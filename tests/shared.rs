//! Shared weights on a CPU: every worker maps one prepared copy of the model's weights.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::util::*;

/// The prepared weights files a process maps.
fn mapped_data(pid: u64) -> Vec<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut files: Vec<String> = maps
        .lines()
        .filter(|l| l.ends_with("model.onnx.data"))
        .map(|l| l.rsplit(' ').next().unwrap().to_string())
        .collect();
    files.sort();
    files.dedup();
    files
}

fn worker_pids(env: &Env) -> Vec<u64> {
    env.workers("ready")
        .iter()
        .map(|w| w["pid"].as_u64().unwrap())
        .collect()
}

fn entries(cache: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(cache)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "digests")
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn with_model(env: &Env, model: &Path, share: bool) {
    let text = std::fs::read_to_string(&env.config).unwrap();
    let cache = env.dir.path().join("cache");
    let text = text
        .replace(
            &resnet50().display().to_string(),
            &model.display().to_string(),
        )
        .replace(
            "threads = 1",
            &format!(
                "threads = 1\nshare_weights = {share}\ncache_dir = \"{}\"",
                cache.display()
            ),
        );
    std::fs::write(&env.config, text).unwrap();
}

fn answers(env: &Env, photos: &[PathBuf]) -> Vec<serde_json::Value> {
    photos.iter().map(|p| env.predict(p).json()).collect()
}

#[test]
fn workers_map_one_prepared_copy_and_answer_the_same() {
    let photos: Vec<PathBuf> = [
        "grace_hopper.jpg",
        "chelsea.png",
        "coffee.png",
        "astronaut.png",
    ]
    .iter()
    .map(|p| photo(p))
    .collect();
    let model = var("models/resnet50-voc20.onnx");

    let mut unshared = Env::new(2);
    with_model(&unshared, &model, false);
    unshared.start_ready(2);
    let expected = answers(&unshared, &photos);
    for pid in worker_pids(&unshared) {
        assert!(
            mapped_data(pid).is_empty(),
            "unshared workers map no prepared file"
        );
    }
    drop(unshared);

    let mut env = Env::new(3);
    with_model(&env, &model, true);
    env.start_ready(3);
    let pids = worker_pids(&env);
    let first = mapped_data(pids[0]);
    assert_eq!(first.len(), 1, "one prepared weights file: {first:?}");
    for pid in &pids {
        assert_eq!(mapped_data(*pid), first, "worker {pid} maps the same file");
    }
    assert_eq!(
        answers(&env, &photos),
        expected,
        "identical answers with shared weights"
    );
    let status = env.status();
    let private: u64 = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["private_bytes"].as_u64().unwrap())
        .sum();
    println!(
        "3 workers, shared weights: total PSS {:.0} MiB, private {:.0} MiB",
        status["total_pss_bytes"].as_u64().unwrap() as f64 / 1048576.0,
        private as f64 / 1048576.0
    );
    assert!(
        status["budget"].as_str().unwrap().contains("shared +"),
        "{}",
        status["budget"]
    );
}

#[test]
fn a_new_model_gets_a_new_entry_old_ones_go_and_damage_is_rebuilt() {
    let mut env = Env::new(1);
    let model = env.dir.path().join("model.onnx");
    std::fs::copy(var("models/resnet50-voc20.onnx"), &model).unwrap();
    with_model(&env, &model, true);
    let cache = env.dir.path().join("cache");
    env.start_ready(1);
    let before = entries(&cache);
    assert_eq!(before.len(), 1, "{before:?}");
    let old_answer = env.predict(&photo("grace_hopper.jpg")).json();

    // A different model (zero-bias head) at the same path, then a reload.
    let out = std::process::Command::new(var("venv/bin/python"))
        .arg(root().join("scripts/make_model.py"))
        .arg("--no-calibration")
        .arg(env.dir.path().join("next.onnx"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(env.dir.path().join("next.onnx"), &model).unwrap();
    let out = env.cli(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.wait_ready(1, Duration::from_secs(60));
    wait_until(
        Duration::from_secs(10),
        "the old entry to be removed once no worker holds it",
        || entries(&cache).len() == 1,
    );
    let after = entries(&cache);
    assert_ne!(after, before, "a new model, a new entry");
    assert_ne!(
        env.predict(&photo("grace_hopper.jpg")).json(),
        old_answer,
        "the new model answers"
    );

    // Damage the prepared weights; the next worker rebuilds them instead of loading garbage.
    let data = cache.join(&after[0]).join("model.onnx.data");
    let len = std::fs::metadata(&data).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&data)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let out = env.cli(&["reload"]);
    assert!(out.status.success());
    // A reload with an unchanged config still rolls the workers: the new one finds the damage.
    env.wait_ready(1, Duration::from_secs(60));
    wait_until(Duration::from_secs(10), "the rebuild in the log", || {
        env.log().contains("rebuilding it")
    });
    assert_eq!(
        std::fs::metadata(cache.join(&after[0]).join("model.onnx.data"))
            .unwrap()
            .len(),
        len
    );
    assert_eq!(env.predict(&photo("chelsea.png")).status, 200);
}

/// A cache that an earlier run as root filled is handed to the workers' user, so workers that
/// dropped root still share the weights.
#[test]
fn a_cache_left_by_root_serves_unprivileged_workers() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root to switch users (CI runs as root)");
        return;
    }
    let model = var("models/resnet50-voc20.onnx");
    let mut env = Env::new(1);
    with_model(&env, &model, true);
    env.start_ready(1);
    assert!(env.log().contains("with shared weights"), "{}", env.log());
    assert_eq!(env.cli(&["stop"]).status.code(), Some(0));
    env.wait_exit(Duration::from_secs(20));
    // The dir is writable for its readers: let the temp dir be traversable by `nobody`.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let text = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace("allow_root = true", "user = \"nobody\"");
    std::fs::write(&env.config, text).unwrap();
    env.start_ready(1);
    let log = env.log();
    assert!(
        log.contains("with shared weights") && !log.contains("cannot prepare"),
        "{log}"
    );
    assert_eq!(env.predict(&photo("chelsea.png")).status, 200);
}
