//! The command line without a running server: check, predict, reload's validation.

use std::path::PathBuf;

use crate::util::*;

/// `etc/arbiter.toml`, after checking that the model and ONNX Runtime it names (made by
/// `scripts/setup`) are there: `check` sizes the model, `predict` runs it.
fn etc_config() -> PathBuf {
    resnet50();
    onnxruntime();
    root().join("etc/arbiter.toml")
}

#[test]
fn check_prints_the_effective_config_and_budget() {
    let out = bin()
        .args(["check", "-c"])
        .arg(etc_config())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("[server]") && stdout.contains("workers = "),
        "{stdout}"
    );
    assert!(stdout.contains("memory budget:"), "{stdout}");
}

#[test]
fn check_reports_every_error_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nworkers = 0\nwrokers = 2\n\n[model]\ndevice = \"tpu\"\n",
    )
    .unwrap();
    let out = bin().args(["check", "-c"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("3 errors"), "{stderr}");
    assert!(
        stderr.contains(":2: server.workers: must be at least 1"),
        "{stderr}"
    );
    assert!(
        stderr.contains(":3: server.wrokers: unknown key (did you mean `workers`?)"),
        "{stderr}"
    );
    assert!(stderr.contains(":6: model.device:"), "{stderr}");
}

#[test]
fn budget_refusal_names_the_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.toml");
    let memory = "[memory]\nlimit = \"12GiB\"\nper_worker = \"3GiB\"\n";
    std::fs::write(
        &path,
        config_text(Model::ResNet50, dir.path(), free_port(), 4, "", memory),
    )
    .unwrap();
    let out = bin().args(["check", "-c"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "4 workers need 15.0 GiB ((4+1) x 3.0 GiB) but the host has 12.0 GiB: at most 3 fit"
        ),
        "{stderr}"
    );
}

/// `arbiter predict` gives the Python reference's labels (the original service's answer).
#[test]
fn predict_matches_the_reference() {
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(var("reference/manifest.json")).unwrap())
            .unwrap();
    let images: Vec<_> = manifest["images"]
        .as_array()
        .unwrap()
        .iter()
        .take(6)
        .collect();
    let paths: Vec<_> = images
        .iter()
        .map(|i| photo(i["file"].as_str().unwrap()))
        .collect();
    let answers = predict_cli(&etc_config(), &paths);
    assert_eq!(answers.len(), images.len());
    for (image, answer) in images.iter().zip(&answers) {
        assert_eq!(answer, &image["prediction"], "{}", image["file"]);
    }
}

#[test]
fn predict_reports_a_broken_image_and_goes_on() {
    let answers = predict_cli(
        &etc_config(),
        &[photo("bad/truncated.jpg"), photo("grace_hopper.jpg")],
    );
    assert!(
        answers[0]["error"]
            .as_str()
            .unwrap()
            .contains("truncated.jpg"),
        "{}",
        answers[0]
    );
    assert_eq!(answers[1]["status"], 1);
}
