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

/// A config serving one of the set-up's test classifiers with `labels`, `sections` after
/// `[model]`'s keys (a `[model.preprocess]` table, say).
fn classifier_config(dir: &std::path::Path, model: &str, labels: &str, sections: &str) -> PathBuf {
    let path = dir.join("classifier.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nworkers = 1\npidfile = \"{dir}/a.pid\"\ncontrol_socket = \"{dir}/a.sock\"\n\n\
             [model]\npath = \"{model}\"\nlabels = \"{labels}\"\nruntime_library = \"{runtime}\"\n\
             threads = 1\n\n{sections}\n",
            dir = dir.display(),
            model = var(model).display(),
            labels = var(labels).display(),
            runtime = onnxruntime().display(),
        ),
    )
    .unwrap();
    path
}

fn check(config: &std::path::Path) -> (Option<i32>, String, String) {
    let out = bin().args(["check", "-c"]).arg(config).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `arbiter inspect` prints the model's input and output, and a `[model]` section that, its
/// labels written in, `arbiter check` accepts; what it cannot infer it says.
#[test]
fn inspect_prints_the_models_signature_and_a_section_that_serves_it() {
    let model = var("models/classifier-nhwc-uint8.onnx");
    let out = bin()
        .arg("inspect")
        .arg(&model)
        .arg("--runtime-library")
        .arg(onnxruntime())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "#   `input` uint8 [N, 224, 224, 3]",
        "#   `logits` float32 [N, 1000]",
        "[model]",
        "[model.preprocess]\nlayout = \"nhwc\"\ninput_type = \"uint8\"",
        "a file of 1000 names",
        "# Not in an ONNX file, so not inferred: the resize",
    ] {
        assert!(stdout.contains(line), "{line:?} in:\n{stdout}");
    }

    let dir = tempfile::tempdir().unwrap();
    let labels = var("models/classifier-labels.txt");
    let served = stdout.replacen(
        "# labels = \"...\"",
        &format!(
            "labels = {:?}\nruntime_library = {:?}  #",
            labels.display().to_string(),
            onnxruntime().display().to_string()
        ),
        1,
    );
    let path = dir.path().join("inspected.toml");
    let server = format!(
        "[server]\nworkers = 1\npidfile = \"{0}/a.pid\"\ncontrol_socket = \"{0}/a.sock\"\n",
        dir.path().display()
    );
    std::fs::write(&path, server + &served).unwrap();
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("# model input `input` is uint8 [N, 224, 224, 3] (NHWC): fed 224 x 224 NHWC uint8; 1000 labels"),
        "{stdout}"
    );

    // A symbolic size is asked for; a model that is no image classifier is named as such.
    let out = bin()
        .arg("inspect")
        .arg(var("models/classifier-any-size.onnx"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("# input_size = [height, width]  # required"),
        "{stdout}"
    );
    let out = bin()
        .arg("inspect")
        .arg(root().join("crates/infer/tests/data/int_input.onnx"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot be served: model input `input` has element type int64"),
        "{stderr}"
    );
}

/// `arbiter check` refuses a recipe the model cannot take, naming the model's actual input, and
/// labels that are not the model's count, with both numbers.
#[test]
fn check_refuses_a_recipe_the_model_cannot_take() {
    let dir = tempfile::tempdir().unwrap();
    let uint8 = "models/classifier-nhwc-uint8.onnx";
    let labels = "models/classifier-labels.json";
    let (code, _, stderr) = check(&classifier_config(dir.path(), uint8, labels, ""));
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(
            "classifier-nhwc-uint8.onnx: model input `input` is uint8 [N, 224, 224, 3] (NHWC) but \
             model.preprocess.input_type = \"float32\""
        ),
        "{stderr}"
    );
    let nchw = "[model.preprocess]\ninput_type = \"uint8\"\n";
    let (code, _, stderr) = check(&classifier_config(dir.path(), uint8, labels, nchw));
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("(NHWC) but model.preprocess.layout = \"nchw\""),
        "{stderr}"
    );
    let any = "models/classifier-any-size.onnx";
    let (code, _, stderr) = check(&classifier_config(dir.path(), any, labels, ""));
    assert_eq!(code, Some(1));
    assert!(stderr.contains("input_size is not set"), "{stderr}");
    let sized = "[model.preprocess]\ninput_size = [240, 320]\n";
    let (code, stdout, stderr) = check(&classifier_config(dir.path(), any, labels, sized));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("fed 240 x 320 NCHW float32"), "{stdout}");
    // timm's crop_pct on a non-square input: timm versions disagree on it, so it is refused.
    let crop_pct = "[model.preprocess]\ninput_size = [240, 320]\nresize = \"crop_pct\"\n\
                    crop_pct = 0.875\n";
    let (code, _, stderr) = check(&classifier_config(dir.path(), any, labels, crop_pct));
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("model.preprocess: crop_pct") && stderr.contains("square"),
        "{stderr}"
    );

    let nchw256 = "models/classifier-nchw256.onnx";
    let twenty = dir.path().join("twenty.json");
    std::fs::copy(root().join("etc/class_name.json"), &twenty).unwrap();
    let config = classifier_config(dir.path(), nchw256, labels, "");
    // Points the config's path `from` at `to`.
    let repoint = |from: &std::path::Path, to: &std::path::Path| {
        let text = std::fs::read_to_string(&config).unwrap();
        let text = text.replace(&from.display().to_string(), &to.display().to_string());
        std::fs::write(&config, text).unwrap();
    };
    repoint(&var(labels), &twenty);
    let (code, _, stderr) = check(&config);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("the model has 1000 classes but the label file has 20 names"),
        "{stderr}"
    );

    // A model a worker could not load at all (two outputs) is refused as the load refuses it.
    repoint(
        &var(nchw256),
        &root().join("crates/infer/tests/data/two_outputs.onnx"),
    );
    let (code, _, stderr) = check(&config);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("model has 2 outputs (`output`, `extra`); expected exactly one output"),
        "{stderr}"
    );
}

/// A config serving two models: the seed's ResNet50 as `voc` (the default) and the set-up's
/// 256 x 256 test classifier as `small` version 2, its own recipe (a softmax's top 3) and labels.
/// `small_path` replaces the small classifier's file.
fn two_models(dir: &std::path::Path, small_path: &std::path::Path) -> PathBuf {
    resnet50();
    let path = dir.join("two.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nworkers = 1\npidfile = \"{dir}/a.pid\"\ncontrol_socket = \"{dir}/a.sock\"\n\n\
             [[model]]\nname = \"voc\"\npath = \"{voc}\"\nlabels = \"{voc_labels}\"\n\
             runtime_library = \"{runtime}\"\nthreads = 1\n\n\
             [[model]]\nname = \"small\"\nversion = \"2\"\npath = \"{small}\"\n\
             labels = \"{small_labels}\"\nruntime_library = \"{runtime}\"\nthreads = 1\n\
             [model.postprocess]\noutput = \"softmax\"\ntop_k = 3\n",
            dir = dir.display(),
            voc = var("models/resnet50-voc20.onnx").display(),
            voc_labels = root().join("etc/class_name.json").display(),
            small = small_path.display(),
            small_labels = var("models/classifier-labels.json").display(),
            runtime = onnxruntime().display(),
        ),
    )
    .unwrap();
    path
}

/// `arbiter check` checks every model, and a model whose file is missing is named.
#[test]
fn check_names_the_model_that_fails() {
    let dir = tempfile::tempdir().unwrap();
    let config = two_models(dir.path(), &var("models/classifier-nchw256.onnx"));
    let (code, stdout, stderr) = check(&config);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("# model `voc`: model input")
            && stdout.contains("# model `small`: model input"),
        "{stdout}"
    );
    let missing = dir.path().join("gone.onnx");
    let (code, stdout, stderr) = check(&two_models(dir.path(), &missing));
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("model `small`") && stderr.contains("gone.onnx"),
        "{stderr}"
    );
    assert!(!stderr.contains("model `voc`"), "{stderr}");
}

/// `arbiter predict --model` answers with that model's file, recipe and labels; without it, the
/// default model answers; an unknown model is refused with the ones there are.
#[test]
fn predict_picks_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let config = two_models(dir.path(), &var("models/classifier-nchw256.onnx"));
    let images = [photo("chelsea.png"), photo("grace_hopper.jpg")];
    let run = |model: Option<&str>| -> Vec<serde_json::Value> {
        let mut cmd = bin();
        cmd.arg("predict").arg("-c").arg(&config);
        if let Some(m) = model {
            cmd.args(["--model", m]);
        }
        let out = cmd.args(&images).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let seed = predict_cli(&etc_config(), &images);
    assert_eq!(run(None), seed);
    assert_eq!(run(Some("voc")), seed);
    let small = run(Some("small:2"));
    assert_eq!(run(Some("small")), small);
    for answer in &small {
        let result = answer["result"].as_array().unwrap();
        assert_eq!(result.len(), 3, "{answer}");
        assert_ne!(answer, &seed[0]);
    }
    let out = bin()
        .arg("predict")
        .arg("-c")
        .arg(&config)
        .args(["--model", "small:7"])
        .args(&images)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no model `small:7`") && stderr.contains("voc:1, small:2"),
        "{stderr}"
    );
}

/// `arbiter inspect --model` reads the config's model.
#[test]
fn inspect_reads_the_configs_model() {
    let dir = tempfile::tempdir().unwrap();
    let config = two_models(dir.path(), &var("models/classifier-nchw256.onnx"));
    let out = bin()
        .arg("inspect")
        .arg("-c")
        .arg(&config)
        .args(["--model", "small"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("classifier-nchw256.onnx") && stdout.contains("[N, 3, 256, 256]"),
        "{stdout}"
    );
}
