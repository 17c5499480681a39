//! Several models in one arbiter (issue 22), through the real binary on a copy of
//! `etc/models.toml`: the seed's ResNet50 (the default), the trained EfficientNet-Lite0 and the
//! torchvision recipe on a set-up classifier, with one worker holding all three.
//!
//! - each answers `/model_predict?model=NAME` (and `/model_predict/NAME`) with its own reference
//!   answer, the default answers without a name, an unknown name is a 404;
//! - KServe v2 infer on each, fed the reference's own input pixels, gives the reference's raw
//!   outputs;
//! - a reload adds one model, changes one and removes one while a load runs on the one that stays
//!   unchanged: no request to it fails;
//! - Triton's own client (`tritonclient[http]`, `scripts/triton_check.py`) lists the repository,
//!   reads every model's metadata and config, and infers on each.
//!
//! The references: the seed's `var/reference/manifest.json` (ResNet50), the committed goldens
//! `tests/data/efficientnet-lite0-goldens.json` (EfficientNet-Lite0), `var/reference/models.json`
//! (the classifiers of `etc/torchvision.toml` and `etc/keras.toml`), and the resized pixels of
//! `var/reference/` that the Python pipelines fed their models.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arbiter_testkit::max_difference;
use serde_json::Value;

use crate::util::*;

const RESNET: &str = "resnet50";
const EFFNET: &str = "efficientnet-lite0";
const CLASSIFIER: &str = "torchvision-classifier";
/// The model a reload adds: `etc/keras.toml`'s, as a `[[model]]` table.
const KERAS: &str = "keras-classifier";
const PHOTO: &str = "chelsea.png";
/// Raw outputs through KServe v2 against Python's: the same pixels normalized in float32 here as
/// numpy does, the same model file and ONNX Runtime.
const OUTPUT_TOLERANCE: f32 = 1e-4;
/// A scored answer's scores against the goldens' (rounded to 7 digits).
const SCORE_TOLERANCE: f64 = 1e-6;

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The `[[model]]` tables of a config text, each from its `[[model]]` line to the next one (its
/// sub-tables and the comments before the next included).
fn model_tables(text: &str) -> Vec<String> {
    text.split("\n[[model]]\n")
        .skip(1)
        .map(|t| format!("[[model]]\n{t}\n"))
        .collect()
}

/// `text` with its `path`, `labels` and `runtime_library` made absolute against `base` (the
/// folder of the file they came from), and `threads = 1` for each model (a 2-core machine).
fn absolute(text: &str, base: &Path) -> String {
    let mut out = String::new();
    for line in text.lines() {
        match line.split_once(" = ") {
            Some((key @ ("path" | "labels" | "runtime_library"), value))
                if value.starts_with('"') =>
            {
                let file = base.join(value.trim_matches('"'));
                out.push_str(&format!("{key} = \"{}\"\n", file.display()));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
        if line == "[[model]]" {
            out.push_str("threads = 1\n");
        }
    }
    out
}

/// The `[[model]]` tables of `etc/models.toml`, paths absolute, by name.
fn etc_models() -> Vec<(String, String)> {
    let etc = root().join("etc");
    let text = std::fs::read_to_string(etc.join("models.toml")).unwrap();
    model_tables(&absolute(&text, &etc))
        .into_iter()
        .map(|t| (table_name(&t), t))
        .collect()
}

/// `etc/keras.toml`'s model as a `[[model]]` table, paths absolute.
fn keras_table() -> String {
    let etc = root().join("etc");
    let text = std::fs::read_to_string(etc.join("keras.toml"))
        .unwrap()
        .replace("\n[model]\n", "\n[[model]]\n");
    let tables = model_tables(&absolute(&text, &etc));
    assert_eq!(tables.len(), 1, "etc/keras.toml has one [model]");
    assert_eq!(table_name(&tables[0]), KERAS);
    tables[0].clone()
}

fn table_name(table: &str) -> String {
    table
        .lines()
        .find_map(|l| l.strip_prefix("name = "))
        .map(|n| n.trim_matches('"').to_owned())
        .unwrap_or_else(|| panic!("a [[model]] without a name:\n{table}"))
}

/// Writes the test's config: its own port, pidfile and socket, then `tables`.
fn write_config(env: &Env, tables: &[String]) {
    let dir = env.dir.path().display();
    let server = format!(
        "[server]\nbind = [\"127.0.0.1:{port}\"]\nworkers = 1\npidfile = \"{dir}/arbiter.pid\"\n\
         control_socket = \"{dir}/arbiter.sock\"\nallow_root = true\ngraceful_timeout = \"10s\"\n\
         boot_timeout = \"120s\"\nheartbeat_timeout = \"5s\"\n\n",
        port = env.port
    );
    std::fs::write(&env.config, server + &tables.concat()).unwrap();
}

/// An arbiter on `etc/models.toml` (paths absolute), one worker, ready.
fn start_three() -> Env {
    var("models/efficientnet-lite0.onnx");
    var("models/classifier-any-size.onnx");
    let mut env = Env::new(1);
    let tables: Vec<String> = etc_models().into_iter().map(|(_, t)| t).collect();
    assert_eq!(tables.len(), 3, "etc/models.toml has three models");
    write_config(&env, &tables);
    env.start();
    env.wait_ready(1, Duration::from_secs(120));
    env
}

fn post(env: &Env, path: &str) -> Response {
    post_multipart(env.addr(), path, "image", &photo(PHOTO))
}

/// The seed's answer to the photo, from the set-up's reference.
fn resnet_reference() -> Value {
    let manifest = read_json(&var("reference/manifest.json"));
    manifest["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["file"] == PHOTO)
        .expect("the reference has the photo")
        .clone()
}

/// A case of `var/reference/models.json` (by its config) on the photo: its classes and outputs.
fn models_reference(config: &str) -> Value {
    let reference = read_json(&var("reference/models.json"));
    let case = reference["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["config"] == config)
        .unwrap_or_else(|| panic!("var/reference/models.json has no {config}"))
        .clone();
    case["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["file"].as_str().unwrap().ends_with(&format!("/{PHOTO}")))
        .expect("the photo in the models' reference")
        .clone()
}

/// The set-up classifiers' class names (one a line).
fn classifier_labels() -> Vec<String> {
    std::fs::read_to_string(var("models/classifier-labels.txt"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The goldens' top 5 of the photo, `[index, name, score]`, and its logits.
fn effnet_golden() -> (Vec<Value>, Vec<f32>) {
    let goldens = read_json(&root().join("tests/data/efficientnet-lite0-goldens.json"));
    let photo = &goldens["photos"][PHOTO];
    (
        photo["top5"].as_array().unwrap().clone(),
        floats(&photo["logits"]),
    )
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// A softmax answer's names: `index`es of the reference mapped through `labels`.
fn names(classes: &Value, labels: &[String]) -> Value {
    classes
        .as_array()
        .unwrap()
        .iter()
        .map(|i| Value::from(labels[i.as_u64().unwrap() as usize].clone()))
        .collect()
}

/// A scored EfficientNet answer against the goldens' first `k`.
fn check_effnet(label: &str, answer: &Value, top5: &[Value], k: usize) {
    assert_eq!(answer["status"], 1, "{label}: {answer}");
    let top = &top5[..k];
    let expected: Vec<&Value> = top.iter().map(|c| &c[1]).collect();
    assert_eq!(answer["result"], serde_json::json!(expected), "{label}");
    let classes = answer["classes"].as_array().expect("a scored answer");
    assert_eq!(classes.len(), k, "{label}: {answer}");
    for (ours, theirs) in classes.iter().zip(top) {
        assert_eq!(ours["index"], theirs[0], "{label}: {answer}");
        let diff = (ours["score"].as_f64().unwrap() - theirs[2].as_f64().unwrap()).abs();
        assert!(diff <= SCORE_TOLERANCE, "{label}: {diff:e}: {answer}");
    }
}

/// An HWC RGB `uint8` image of `height` x `width` (the reference's resized pixels) as a
/// float32 NCHW tensor, `(pixel / divide_by - mean) / std` in float32, as numpy computes it.
fn nchw(
    pixels: &[u8],
    size: (usize, usize),
    divide_by: f32,
    mean: [f32; 3],
    std: [f32; 3],
) -> Vec<f32> {
    let (height, width) = size;
    assert_eq!(
        pixels.len(),
        height * width * 3,
        "resized pixels of {height} x {width}"
    );
    let mut out = vec![0f32; pixels.len()];
    for c in 0..3 {
        for i in 0..height * width {
            out[c * height * width + i] = (pixels[i * 3 + c] as f32 / divide_by - mean[c]) / std[c];
        }
    }
    out
}

/// The pixels the Python pipeline fed its model: a file of `var/reference/`.
fn reference_pixels(relative: &str) -> Vec<u8> {
    std::fs::read(var(&format!("reference/{relative}"))).unwrap()
}

/// KServe v2 infer at `path` (`/v2/models/NAME[/versions/V]/infer`) on a float32 tensor of
/// `shape`, sent with the binary tensor extension: the first output, answered in JSON.
fn kserve_infer(env: &Env, path: &str, input: &str, shape: &[usize], data: &[f32]) -> Vec<f32> {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let json = serde_json::json!({"inputs": [{
        "name": input,
        "shape": shape,
        "datatype": "FP32",
        "parameters": {"binary_data_size": bytes.len()},
    }]})
    .to_string();
    let mut body = json.as_bytes().to_vec();
    body.extend_from_slice(&bytes);
    let length = json.len().to_string();
    let r = request(
        env.addr(),
        "POST",
        path,
        &[
            ("Content-Type", "application/octet-stream"),
            ("Inference-Header-Content-Length", &length),
        ],
        &body,
    );
    assert_eq!(r.status, 200, "POST {path}: {}", r.text());
    floats(&r.json()["outputs"][0]["data"])
}

/// The model's input name from its KServe v2 metadata, after checking its shape.
fn kserve_input(env: &Env, name: &str, shape: Value) -> String {
    let r = env.get(&format!("/v2/models/{name}"));
    assert_eq!(r.status, 200, "{name}: {}", r.text());
    let meta = r.json();
    assert_eq!(meta["name"], name, "{meta}");
    assert_eq!(meta["inputs"][0]["datatype"], "FP32", "{meta}");
    assert_eq!(meta["inputs"][0]["shape"], shape, "{meta}");
    meta["inputs"][0]["name"].as_str().unwrap().to_owned()
}

/// Every model answers with its own reference through `/model_predict` (by query and by path)
/// and KServe v2; the default answers without a name; an unknown name is a 404 with a JSON error.
#[test]
fn three_models_answer_with_their_own_references() {
    let env = start_three();
    let started = Instant::now();

    // ResNet50, the default: the seed's answer, with or without its name.
    let resnet = resnet_reference();
    for path in [
        "/model_predict".to_owned(),
        format!("/model_predict?model={RESNET}"),
        format!("/model_predict?model={RESNET}&version=1"),
        format!("/model_predict/{RESNET}"),
        format!("/model_predict/{RESNET}/versions/1"),
    ] {
        let r = post(&env, &path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.json(), resnet["prediction"], "{path}");
    }

    // EfficientNet-Lite0: the goldens' top 5 with their scores.
    let (top5, logits) = effnet_golden();
    for path in [
        format!("/model_predict?model={EFFNET}"),
        format!("/model_predict/{EFFNET}"),
    ] {
        let r = post(&env, &path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        check_effnet(&path, &r.json(), &top5, 5);
    }
    assert_eq!(
        post(&env, &format!("/model_predict?model={EFFNET}")).json()["result"][0],
        "tiger cat"
    );

    // The torchvision classifier: Python's classes.
    let classifier = models_reference("etc/torchvision.toml");
    let labels = classifier_labels();
    for path in [
        format!("/model_predict?model={CLASSIFIER}"),
        format!("/model_predict/{CLASSIFIER}"),
    ] {
        let r = post(&env, &path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let answer = r.json();
        assert_eq!(answer["status"], 1, "{path}: {answer}");
        assert_eq!(
            answer["result"],
            names(&classifier["classes"], &labels),
            "{path}"
        );
    }

    // Unknown models and versions.
    for path in [
        "/model_predict?model=no-such-model".to_owned(),
        "/model_predict/no-such-model".to_owned(),
        format!("/model_predict?model={RESNET}&version=9"),
    ] {
        let r = post(&env, &path);
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert!(!r.error().is_empty(), "{path}");
    }
    assert_eq!(env.get("/v2/models/no-such-model").status, 404);

    // KServe v2: the reference's own input pixels give the reference's raw outputs.
    let imagenet = ([0.485f32, 0.456, 0.406], [0.229f32, 0.224, 0.225]);
    let shape = serde_json::json!([-1, 3, 224, 224]);
    let input = kserve_input(&env, RESNET, shape.clone());
    let tensor = nchw(
        &reference_pixels(resnet["pixels"].as_str().unwrap()),
        (224, 224),
        255.0,
        imagenet.0,
        imagenet.1,
    );
    for path in [
        format!("/v2/models/{RESNET}/infer"),
        format!("/v2/models/{RESNET}/versions/1/infer"),
    ] {
        let out = kserve_infer(&env, &path, &input, &[1, 3, 224, 224], &tensor);
        let diff = max_difference(&out, &floats(&resnet["output"]));
        assert!(
            diff <= OUTPUT_TOLERANCE,
            "{path}: outputs differ by {diff:e}"
        );
    }

    let input = kserve_input(&env, EFFNET, shape.clone());
    let tensor = nchw(
        &reference_pixels(&format!("recipes/{PHOTO}.bicubic_shorter256_crop224.rgb")),
        (224, 224),
        1.0,
        [127.0; 3],
        [128.0; 3],
    );
    let path = format!("/v2/models/{EFFNET}/versions/1/infer");
    let out = kserve_infer(&env, &path, &input, &[1, 3, 224, 224], &tensor);
    let diff = max_difference(&out, &logits);
    assert!(
        diff <= OUTPUT_TOLERANCE,
        "{path}: logits differ by {diff:e}"
    );

    // A symbolic spatial size: the config's input_size, or -1 where the server leaves it open.
    let meta = env.get(&format!("/v2/models/{CLASSIFIER}")).json();
    let input = meta["inputs"][0]["name"].as_str().unwrap().to_owned();
    let tensor = nchw(
        &reference_pixels(&format!("recipes/{PHOTO}.bilinear_shorter256_crop224.rgb")),
        (224, 224),
        255.0,
        imagenet.0,
        imagenet.1,
    );
    let path = format!("/v2/models/{CLASSIFIER}/infer");
    let out = kserve_infer(&env, &path, &input, &[1, 3, 224, 224], &tensor);
    let diff = max_difference(&out, &floats(&classifier["output"]));
    assert!(
        diff <= OUTPUT_TOLERANCE,
        "{path}: outputs differ by {diff:e}"
    );

    // Readiness, Triton's model config, and the repository index name all three.
    for name in [RESNET, EFFNET, CLASSIFIER] {
        assert_eq!(
            env.get(&format!("/v2/models/{name}/ready")).status,
            200,
            "{name}"
        );
        let r = env.get(&format!("/v2/models/{name}/versions/1/ready"));
        assert_eq!(r.status, 200, "{name}");
        let r = env.get(&format!("/v2/models/{name}/config"));
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        let config = r.json();
        assert_eq!(config["name"], name, "{config}");
        assert_eq!(config["platform"], "onnxruntime_onnx", "{config}");
        assert_eq!(config["input"][0]["data_type"], "TYPE_FP32", "{config}");
        assert_eq!(config["output"][0]["data_type"], "TYPE_FP32", "{config}");
    }
    let index = repository_index(&env);
    assert_eq!(
        index,
        [(EFFNET, "1"), (RESNET, "1"), (CLASSIFIER, "1")].map(own)
    );

    // /metrics names each model.
    let metrics = env.get("/metrics").text();
    for name in [RESNET, EFFNET, CLASSIFIER] {
        assert!(
            metrics.contains(&format!("model=\"{name}\",version=\"1\"")),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    // etc/models.toml puts resnet50 at nice 19: its inference thread (and the ONNX Runtime
    // threads it starts, which take its name) runs there, the other two models' at 0; every
    // model's requests are decoded at 19, the HTTP thread's (server.http_nice), never ahead of
    // it.
    let pid = env.workers("ready")[0]["pid"].as_u64().unwrap();
    let threads = thread_nices(pid);
    let count = |name: &str, nice: i32| {
        threads
            .iter()
            .filter(|(n, v)| n == name && *v == nice)
            .count()
    };
    assert!(count("inference", 19) >= 1, "{threads:?}");
    assert!(count("inference", 0) >= 2, "{threads:?}");
    assert!(count("decode-19", 19) >= 1, "{threads:?}");
    for (name, nice) in &threads {
        if name.starts_with("decode") {
            assert_eq!((name.as_str(), *nice), ("decode-19", 19), "{threads:?}");
        }
    }
    println!("three models checked in {:?}", started.elapsed());
}

/// Each thread of process `pid`: its name and nice value (`/proc/PID/task/TID/stat`, field 19).
fn thread_nices(pid: u64) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let Ok(stat) = std::fs::read_to_string(task.unwrap().path().join("stat")) else {
            continue; // ended since the listing
        };
        let (open, close) = (stat.find('(').unwrap(), stat.rfind(')').unwrap());
        let name = stat[open + 1..close].to_owned();
        let nice = stat[close + 2..]
            .split(' ')
            .nth(16)
            .unwrap()
            .parse()
            .unwrap();
        out.push((name, nice));
    }
    out
}

fn own((name, version): (&str, &str)) -> (String, String) {
    (name.to_owned(), version.to_owned())
}

/// `POST /v2/repository/index`: (name, version) of every model, sorted; each must be READY.
fn repository_index(env: &Env) -> Vec<(String, String)> {
    let r = request(env.addr(), "POST", "/v2/repository/index", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let mut models: Vec<(String, String)> = r
        .json()
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {}", r.text()))
        .iter()
        .map(|m| {
            assert_eq!(m["state"], "READY", "{m}");
            (
                m["name"].as_str().unwrap().to_owned(),
                m["version"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    models.sort();
    models
}

/// A reload adds the Keras classifier, changes EfficientNet-Lite0 (top 3 instead of 5) and
/// removes the torchvision classifier, while four clients post to the default ResNet50, which
/// the reload leaves as it was: every one of their requests is answered, with the seed's answer.
/// Then the new model answers, the changed one shows its change, the removed one is a 404.
#[test]
fn reload_adds_changes_and_removes_models_under_load() {
    let env = start_three();
    let keras = keras_table();
    let resnet = resnet_reference();
    let (top5, _) = effnet_golden();
    assert_eq!(
        post(&env, &format!("/model_predict?model={CLASSIFIER}")).status,
        200
    );
    assert_eq!(
        post(&env, &format!("/model_predict?model={KERAS}")).status,
        404
    );

    let load = Load::start(env.addr(), photo(PHOTO), 4, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(1000));
    let mut tables = Vec::new();
    for (name, table) in etc_models() {
        match name.as_str() {
            CLASSIFIER => {}
            EFFNET => {
                assert!(table.contains("top_k = 5\n"), "{table}");
                tables.push(table.replace("top_k = 5\n", "top_k = 3\n"));
            }
            _ => tables.push(table),
        }
    }
    tables.push(keras);
    write_config(&env, &tables);
    let reload_started = Instant::now();
    let out = env.cli(&["reload"]);
    assert!(
        out.status.success(),
        "{}{}\nlog:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        env.log()
    );
    let reload_took = reload_started.elapsed();
    std::thread::sleep(Duration::from_millis(1000));
    let (ok, failures, answers) = load.finish();
    let during = answers
        .iter()
        .filter(|(sent, _)| *sent >= reload_started && *sent <= reload_started + reload_took)
        .count();
    println!(
        "reload of three models under load took {reload_took:?}: {ok} requests to {RESNET} \
         answered ({during} sent during the reload), {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "failed requests to {RESNET}: {failures:?}"
    );
    assert!(ok > 5, "the load ran ({ok} requests)");
    for (_, answer) in &answers {
        assert_eq!(answer, &resnet["prediction"], "{RESNET} answered otherwise");
    }

    // The new model, with Python's classes.
    let r = post(&env, &format!("/model_predict?model={KERAS}"));
    assert_eq!(r.status, 200, "{}", r.text());
    let expected = names(
        &models_reference("etc/keras.toml")["classes"],
        &classifier_labels(),
    );
    assert_eq!(r.json()["result"], expected);
    // The changed one: its top 3.
    let r = post(&env, &format!("/model_predict?model={EFFNET}"));
    assert_eq!(r.status, 200, "{}", r.text());
    check_effnet("after the reload", &r.json(), &top5, 3);
    // The removed one.
    let r = post(&env, &format!("/model_predict?model={CLASSIFIER}"));
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(env.get(&format!("/v2/models/{CLASSIFIER}")).status, 404);
    // The one that stayed, by default and by name.
    assert_eq!(post(&env, "/model_predict").json(), resnet["prediction"]);
    assert_eq!(
        post(&env, &format!("/model_predict/{RESNET}")).json(),
        resnet["prediction"]
    );
    assert_eq!(
        repository_index(&env),
        [(EFFNET, "1"), (KERAS, "1"), (RESNET, "1")].map(own)
    );
    env.wait_ready(1, Duration::from_secs(30));
}

/// The set-up's venv Python, when it has Triton's client (`scripts/setup` installs it).
fn triton_python() -> Option<PathBuf> {
    let python = var_dir().join("venv/bin/python");
    let has = std::process::Command::new(&python)
        .args(["-c", "import tritonclient.http"])
        .output()
        .is_ok_and(|o| o.status.success());
    has.then_some(python)
}

/// Triton's own HTTP client against the three models: `scripts/triton_check.py` lists the
/// repository, reads each model's metadata and config, infers on each (against ONNX Runtime in
/// Python on the same file), loads a configured model and is refused an unload.
#[test]
fn tritonclient_lists_reads_and_infers_every_model() {
    let Some(python) = triton_python() else {
        eprintln!(
            "skipped: var/venv has no tritonclient; run scripts/setup (it installs \
             scripts/requirements.txt, which pins tritonclient[http])"
        );
        return;
    };
    let env = start_three();
    let out = std::process::Command::new(python)
        .arg(root().join("scripts/triton_check.py"))
        .arg("--config")
        .arg(&env.config)
        .arg(format!("127.0.0.1:{}", env.port))
        .args([RESNET, EFFNET, &format!("{CLASSIFIER}:1")])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}");
    assert!(
        out.status.success(),
        "scripts/triton_check.py failed ({:?}):\n{report}{}\nlog:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        env.log()
    );
    assert!(report.contains("unload_model: refused"), "{report}");
}

/// A reload whose new file for one model cannot load changes nothing: `arbiter reload` fails
/// naming the model and why, and the generation serving keeps answering with every model.
#[test]
fn a_model_whose_new_file_fails_to_load_leaves_the_old_one_serving() {
    let env = start_three();
    let resnet = resnet_reference();
    let broken = env.dir.path().join("broken.onnx");
    std::fs::write(&broken, b"not an ONNX model").unwrap();
    let tables: Vec<String> = etc_models()
        .into_iter()
        .map(|(name, table)| {
            if name != CLASSIFIER {
                return table;
            }
            let path = table
                .lines()
                .find(|l| l.starts_with("path = "))
                .expect("a path line")
                .to_owned();
            table.replace(&path, &format!("path = \"{}\"", broken.display()))
        })
        .collect();
    write_config(&env, &tables);
    let out = env.cli(&["reload"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "the reload was accepted:\n{said}");
    assert!(
        said.contains("reload aborted") && said.contains(&format!("model `{CLASSIFIER}`")),
        "{said}\nlog:\n{}",
        env.log()
    );
    // Every model of the generation serving still answers, the classifier from its old file.
    assert_eq!(post(&env, "/model_predict").json(), resnet["prediction"]);
    let r = post(&env, &format!("/model_predict?model={CLASSIFIER}"));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post(&env, &format!("/model_predict?model={EFFNET}"));
    assert_eq!(r.status, 200, "{}", r.text());
    env.wait_ready(1, Duration::from_secs(30));
}
