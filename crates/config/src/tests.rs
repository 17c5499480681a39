use super::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
    Config::parse(text, Path::new("/etc/arbiter/arbiter.toml")).map_err(|e| match e {
        LoadError::Invalid { errors, .. } => errors,
        other => panic!("unexpected {other}"),
    })
}

#[test]
fn empty_file_gives_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c.server.workers, 1);
    assert_eq!(
        c.server.bind,
        vec![Bind::Tcp("127.0.0.1:10086".parse().unwrap())]
    );
    assert_eq!(c.model().threshold, 0.5);
    assert_eq!(c.model().labels, Path::new("/etc/arbiter/class_name.json"));
    assert_eq!(
        c.memory,
        Memory {
            limit: Amount::Auto,
            per_worker: Amount::Auto
        }
    );
}

#[test]
fn every_value_is_read() {
    let c = parse(
        r#"
[server]
bind = ["127.0.0.1:9000", "unix:run/a.sock", "fd://3", "[::1]:9001"]
workers = 4
graceful_timeout = "5s"
heartbeat_timeout = "3s"
max_requests = 1000
max_requests_jitter = 50
trusted_proxies = ["unix", "10.0.0.0/8"]
ui = false
[model]
path = "/models/m.onnx"
threshold = 0.7
device = "cuda:1"
threads = 1
[batching]
max_batch_size = 16
max_delay = "0ms"
[limits]
max_body = "8MiB"
[memory]
limit = "12GiB"
per_worker = "3GiB"
[log]
format = "json"
[[program]]
name = "nginx"
command = ["nginx", "-g", "daemon off;"]
environment = { LANG = "C" }
autorestart = "always"
stopsignal = "QUIT"
[[program]]
name = "sidecar"
command = "sleep"
"#,
    )
    .unwrap();
    assert_eq!(
        c.server.bind[1],
        Bind::Unix("/etc/arbiter/run/a.sock".into())
    );
    assert_eq!(c.server.bind[2], Bind::Fd(3));
    assert_eq!(c.server.bind[3], Bind::Tcp("[::1]:9001".parse().unwrap()));
    assert_eq!(c.server.workers, 4);
    assert_eq!(c.server.graceful_timeout, Duration::from_secs(5));
    assert_eq!(c.server.max_requests, Some(1000));
    assert!(!c.server.ui);
    assert_eq!(
        c.server.trusted_proxies[1],
        TrustedProxy::Net("10.0.0.0/8".parse().unwrap())
    );
    assert_eq!(c.model().device, Device::Cuda(1));
    assert_eq!(c.model().threshold, 0.7);
    assert_eq!(c.batching.max_batch_size, 16);
    assert_eq!(c.batching.max_delay, Duration::ZERO);
    assert_eq!(c.limits.max_body, 8 << 20);
    assert_eq!(c.memory.limit, Amount::Bytes(12 << 30));
    assert!(c.log.json);
    assert_eq!(c.programs.len(), 2);
    assert_eq!(c.programs[0].command, ["nginx", "-g", "daemon off;"]);
    assert_eq!(
        c.programs[0].environment,
        [("LANG".to_string(), "C".to_string())]
    );
    assert_eq!(c.programs[0].autorestart, Autorestart::Always);
    assert_eq!(c.programs[0].stopsignal, "QUIT");
    assert_eq!(c.programs[1].autorestart, Autorestart::Unexpected);
    // The effective config is itself a valid config with the same meaning.
    let again = Config::parse(&c.to_toml(), &c.file).unwrap();
    assert_eq!(again, c);
}

#[test]
fn all_errors_are_reported_at_once_with_key_and_line() {
    let errors = parse(
        "[server]\nworkers = 0\nwrokers = 2\ngraceful_timeout = \"soon\"\n\n[model]\ndevice = \"tpu\"\nthreshold = \"high\"\n\n[colour]\nx = 1\n",
    )
    .unwrap_err();
    let got: Vec<(String, Option<usize>)> =
        errors.iter().map(|e| (e.key.clone(), e.line)).collect();
    assert_eq!(
        got,
        vec![
            ("server.workers".into(), Some(2)),
            ("server.wrokers".into(), Some(3)),
            ("server.graceful_timeout".into(), Some(4)),
            ("model.device".into(), Some(7)),
            ("model.threshold".into(), Some(8)),
            ("colour".into(), Some(10)),
        ]
    );
    assert!(
        errors[1].message.contains("did you mean `workers`"),
        "{}",
        errors[1].message
    );
    assert!(errors[3].message.contains("cuda:N"));
}

#[test]
fn invalid_toml_names_the_line() {
    let errors = parse("[server]\nworkers = = 2\n").unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].line, Some(2));
    assert!(errors[0].message.starts_with("not valid TOML"));
}

#[test]
fn bad_binds_are_explained() {
    let errors = parse(
        "[server]\nbind = [\"nowhere\", \"unix:\", \"fd://1\", \"127.0.0.1:1\", \"127.0.0.1:1\"]\n",
    )
    .unwrap_err();
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "server.bind[0]",
            "server.bind[1]",
            "server.bind[2]",
            "server.bind[4]"
        ]
    );
    assert!(errors[3].message.contains("twice"));
}

#[test]
fn memory_accepts_auto_or_a_size() {
    let c = parse("[memory]\nlimit = \"auto\"\nper_worker = 1073741824\n").unwrap();
    assert_eq!(c.memory.per_worker, Amount::Bytes(1 << 30));
    let errors = parse("[memory]\nlimit = \"lots\"\n").unwrap_err();
    assert_eq!(errors[0].key, "memory.limit");
}

#[test]
fn threads_auto_divides_the_cores() {
    let mut c = parse("[server]\nworkers = 2\n").unwrap();
    assert_eq!(c.threads_per_worker(c.model(), 2), 1);
    assert_eq!(c.threads_per_worker(c.model(), 16), 8);
    c.server.workers = 4;
    assert_eq!(c.threads_per_worker(c.model(), 2), 1);
    c.models[0].threads = 3;
    assert_eq!(c.threads_per_worker(c.model(), 2), 3);
}

#[test]
fn render_lists_every_error() {
    let err = Config::parse("[server]\nworkers = -1\n", Path::new("a.toml")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "a.toml has 1 error:\n  a.toml:2: server.workers: must be at least 1, got -1"
    );
}

fn etc() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../etc")
}

/// Every file shipped in `etc/` is a valid config, or, for JSON, a valid label file: an object
/// mapping "0", "1", ... (every index once) to non-empty class names.
#[test]
fn every_file_in_etc_parses() {
    let etc = etc();
    let (mut configs, mut label_files) = (0, 0);
    for entry in std::fs::read_dir(&etc).unwrap() {
        let path = entry.unwrap().path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => {
                Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
                configs += 1;
            }
            Some("json") => {
                let text = std::fs::read_to_string(&path).unwrap();
                let names = label_file(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert!(!names.is_empty(), "{} has no labels", path.display());
                label_files += 1;
            }
            _ => {}
        }
    }
    assert!(configs >= 1, "no config found in {}", etc.display());
    assert!(label_files >= 1, "no label file found in {}", etc.display());
}

/// The class names of a label file, in index order, or what is wrong with it.
fn label_file(text: &str) -> Result<Vec<String>, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let table = value.as_object().ok_or("not a JSON object")?;
    let mut names = vec![None; table.len()];
    for (key, name) in table {
        let index: usize = key
            .parse()
            .map_err(|_| format!("key {key:?} is not a class index"))?;
        let slot = names
            .get_mut(index)
            .ok_or_else(|| format!("index {index} with only {} classes", table.len()))?;
        match name.as_str() {
            Some(n) if !n.trim().is_empty() => *slot = Some(n.to_owned()),
            _ => return Err(format!("class {index} is not a non-empty string")),
        }
    }
    names
        .into_iter()
        .enumerate()
        .map(|(i, n)| n.ok_or_else(|| format!("class {i} is missing")))
        .collect()
}

#[test]
fn program_errors_are_reported_with_their_index() {
    let errors = parse("[[program]]\nname = \"a\"\ncommand = []\n[[program]]\nname = \"a\"\ncommand = [\"x\"]\nautorestart = \"sometimes\"\nstopsignal = \"STOP\"\nbogus = 1\n").unwrap_err();
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "program[0].command",
            "program[1].name",
            "program[1].autorestart",
            "program[1].stopsignal",
            "program[1].bogus"
        ]
    );
}

/// `etc/arbiter.toml` spells out the built-in defaults: parsed, it is the config that a file
/// holding only the keys with no portable default (the ONNX Runtime and OpenVINO libraries
/// `scripts/setup` fetches) gives, and it writes every key the effective config has.
#[test]
fn etc_arbiter_toml_shows_the_defaults() {
    let path = etc().join("arbiter.toml");
    let shipped = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let minimal = Config::parse(
        "[model]\nruntime_library = \"../var/onnxruntime/libonnxruntime.so.1.32.0\"\n\
         openvino_library = \"../var/openvino/libopenvino_c.so\"\n",
        &path,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(shipped, minimal);
    fn leaves(prefix: &str, table: &toml::Table, out: &mut Vec<String>) {
        for (key, value) in table {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match value.as_table() {
                Some(t) => leaves(&path, t, out),
                None => out.push(path),
            }
        }
    }
    let keys = |text: &str| -> Vec<String> {
        let mut out = Vec::new();
        leaves("", &text.parse().unwrap(), &mut out);
        out
    };
    let written = keys(&std::fs::read_to_string(&path).unwrap());
    let effective = keys(&minimal.to_toml());
    assert_eq!(
        written, effective,
        "etc/arbiter.toml and the effective config list different keys"
    );
}

#[test]
fn bad_trusted_proxies_are_explained() {
    let errors = parse("[server]\ntrusted_proxies = [\"unix\", \"10.0.0.0/33\", \"nowhere\"]\n")
        .unwrap_err();
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        ["server.trusted_proxies[1]", "server.trusted_proxies[2]"]
    );
    assert!(
        errors[0].message.contains("prefix length"),
        "{}",
        errors[0].message
    );
    assert!(
        errors[1].message.contains("not an IP address"),
        "{}",
        errors[1].message
    );
}

#[test]
fn lanes_only_on_a_cpu_with_several_threads() {
    assert!(runs_lanes(true, true, 2));
    assert!(!runs_lanes(true, true, 1));
    assert!(!runs_lanes(true, false, 4));
    assert!(!runs_lanes(false, true, 4));
}

const THREE_MODELS: &str = r#"
[batching]
queue_size = 32
max_batch_size = 4

[[model]]
name = "resnet50"
path = "/m/resnet50.onnx"

[[model]]
name = "effnet"
version = "3"
default = true
spinning = true
[model.postprocess]
output = "softmax"
top_k = 5
[model.batching]
queue_size = 8

[[model]]
name = "effnet"
version = "12"
path = "/m/effnet-12.onnx"
nice = 10
"#;

#[test]
fn several_models_each_with_their_own_keys() {
    let c = parse(THREE_MODELS).unwrap();
    assert_eq!(c.models.len(), 3);
    assert_eq!(c.default_model, 1);
    assert_eq!(c.model().name, "effnet");
    assert_eq!(c.model().version, "3");
    assert_eq!(c.models[0].version, "1");
    assert_eq!(c.models[0].path, Path::new("/m/resnet50.onnx"));
    // [model.batching] over [batching], key by key.
    assert_eq!(c.models[1].batching.queue_size, 8);
    assert_eq!(c.models[1].batching.max_batch_size, 4);
    assert_eq!(c.models[0].batching, c.batching);
    assert_eq!(c.models[1].postprocess.output, Output::Softmax { top_k: 5 });
    assert_eq!(c.models[0].postprocess.output, Output::Threshold);
    // Several models do not spin unless one says so.
    assert!(!c.models[0].spinning);
    assert!(c.models[1].spinning);
    assert!(parse("").unwrap().model().spinning);
    // Each model's own nice value; 0, the worker's, by default.
    assert_eq!((c.models[0].nice, c.models[2].nice), (0, 10));
    // The version rule: exact, else the highest number (12 > 3, not "3" > "12").
    assert_eq!(c.find_model("effnet", None).unwrap().version, "12");
    assert_eq!(c.find_model("effnet", Some("3")).unwrap().version, "3");
    assert!(c.find_model("effnet", Some("4")).is_none());
    assert!(c.find_model("nope", None).is_none());
    // The effective config says the same thing.
    let again = Config::parse(&c.to_toml(), &c.file).unwrap();
    assert_eq!(again, c);
}

#[test]
fn model_table_errors_name_the_entry() {
    let errors = parse(
        r#"
[[model]]
path = "/a.onnx"
[[model]]
name = "b"
version = "v2"
[[model]]
name = "b"
default = true
[[model]]
name = "b"
default = true
[model.batching]
preprocess_threads = 2
"#,
    )
    .unwrap_err();
    let text: Vec<String> = errors
        .iter()
        .map(|e| format!("{}: {}", e.key, e.message))
        .collect();
    let has = |key: &str, words: &str| {
        assert!(
            text.iter().any(|e| e.contains(key) && e.contains(words)),
            "no error at {key} saying {words:?} in {text:#?}"
        )
    };
    has("model[0].name", "needs a name");
    has("model[1].version", "whole number");
    has("model[3].name", "another model is `b` version 1");
    has("model[3].default", "already the default");
    has("model[3].batching.preprocess_threads", "[batching]");
}

#[test]
fn a_models_nice_is_0_to_19() {
    assert_eq!(parse("[model]\nnice = 19\n").unwrap().model().nice, 19);
    for bad in ["-1", "20"] {
        let errors = parse(&format!("[model]\nnice = {bad}\n")).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].key.contains("model.nice"), "{}", errors[0].key);
        assert!(
            errors[0].message.contains("0 to 19"),
            "{}",
            errors[0].message
        );
    }
}

#[test]
fn precision_is_fp32_or_bf16() {
    let config = parse("[model]\nprecision = \"bf16\"\n").unwrap();
    assert_eq!(config.model().precision, crate::Precision::Bf16);
    let config = parse("[model]\n").unwrap();
    assert_eq!(config.model().precision, crate::Precision::Fp32);
    let errors = parse("[model]\nprecision = \"int8\"\n").unwrap_err();
    let text: Vec<String> = errors
        .iter()
        .map(|e| format!("{}: {}", e.key, e.message))
        .collect();
    assert!(
        text.iter()
            .any(|e| e.contains("precision") && e.contains("scripts/quantize.py")),
        "{text:?}"
    );
}

#[test]
fn quoted_strings_read_back_as_they_were() {
    for text in [
        "plain",
        "a \"quoted\" \\path\\",
        "tab\tnew\nline\rret",
        "nul\0 bell\u{7} del\u{7f} c1\u{85}",
        "\u{590} é 画像 🦀",
    ] {
        let doc = format!("key = {}\n", crate::emit::quote(text));
        let table: toml::Table = doc.parse().unwrap_or_else(|e| panic!("{doc}: {e}"));
        assert_eq!(table["key"].as_str(), Some(text), "{doc}");
    }
}

#[test]
fn the_overload_keys_are_read_and_checked() {
    let c = parse(
        "[server]\nmin_data_rate = 0\nmin_data_rate_grace = \"500ms\"\nclose_on_overload = false\naccept_batch = 4\nhttp_nice = 19\n",
    )
    .unwrap();
    let s = &c.server;
    assert_eq!(s.min_data_rate, 0);
    assert_eq!(s.min_data_rate_grace, Duration::from_millis(500));
    assert!(!s.close_on_overload);
    assert_eq!((s.accept_batch, s.http_nice), (4, 19));
    let errs =
        parse("[server]\nhttp_nice = 20\naccept_batch = 0\nmin_data_rate = -1\n").unwrap_err();
    let paths: Vec<_> = errs.iter().map(|e| e.key.clone()).collect();
    assert_eq!(errs.len(), 3, "{paths:?}");
    for key in [
        "server.http_nice",
        "server.accept_batch",
        "server.min_data_rate",
    ] {
        assert!(paths.iter().any(|p| p.contains(key)), "{key}: {paths:?}");
    }
}
