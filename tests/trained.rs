//! The trained model through the binary: `arbiter check` and `arbiter predict` with
//! `etc/efficientnet-lite0.toml` on a few photos answer as the committed goldens and the set-up's
//! Python reference. `crates/worker/tests/trained.rs` holds every photo, in-process, through
//! `/model_predict` and KServe v2, and says why the scores' tolerance is what it is.

use std::path::PathBuf;

use serde_json::Value;

use crate::util::*;

const CONFIG: &str = "etc/efficientnet-lite0.toml";
const SCORE_TOLERANCE: f64 = 1e-6;

/// The trained config, after checking that the set-up made its model.
fn config() -> PathBuf {
    onnxruntime();
    var("models/efficientnet-lite0.onnx");
    root().join(CONFIG)
}

fn read_json(path: PathBuf) -> Value {
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Checks `arbiter predict`'s scored answer against a `top5` of `[index, name, score]`.
fn check_answer(label: &str, answer: &Value, top5: &Value) {
    assert_eq!(answer["status"], 1, "{label}: {answer}");
    let top5 = top5.as_array().unwrap();
    let names: Vec<&Value> = top5.iter().map(|c| &c[1]).collect();
    assert_eq!(answer["result"], serde_json::json!(names), "{label}");
    let classes = answer["classes"].as_array().expect("a scored answer");
    assert_eq!(classes.len(), top5.len(), "{label}: {answer}");
    for (ours, theirs) in classes.iter().zip(top5) {
        assert_eq!(ours["index"], theirs[0], "{label}: {answer}");
        assert_eq!(ours["label"], theirs[1], "{label}: {answer}");
        let diff = (ours["score"].as_f64().unwrap() - theirs[2].as_f64().unwrap()).abs();
        assert!(diff <= SCORE_TOLERANCE, "{label}: {diff:e}: {answer}");
    }
}

#[test]
fn check_accepts_the_trained_config() {
    let out = bin().args(["check", "-c"]).arg(config()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1000 labels"), "{stdout}");
}

/// `arbiter predict` on the six golden photos and two odd ones (a grayscale JPEG, a 16-bit PNG):
/// the goldens' and the reference's top 5 with their scores; the cat photo is a tiger cat.
#[test]
fn predict_names_what_is_in_the_photos() {
    let config = config();
    let goldens = read_json(root().join("tests/data/efficientnet-lite0-goldens.json"));
    let reference = read_json(var("reference/efficientnet-lite0.json"));
    let goldens = goldens["photos"].as_object().unwrap();
    let mut labels: Vec<&str> = goldens.keys().map(String::as_str).collect();
    labels.extend(["chelsea_gray.jpg", "corpus/gray16.png"]);
    let paths: Vec<PathBuf> = labels
        .iter()
        .map(|l| match l.strip_prefix("corpus/") {
            Some(name) => root().join("tests/corpus").join(name),
            None => photo(l),
        })
        .collect();
    let answers = predict_cli(&config, &paths);
    assert_eq!(answers.len(), labels.len(), "{answers:?}");
    for (label, answer) in labels.iter().zip(&answers) {
        check_answer(label, answer, &reference["photos"][*label]["top5"]);
        if let Some(golden) = goldens.get(*label) {
            check_answer(&format!("{label} (golden)"), answer, &golden["top5"]);
        }
    }
    assert_eq!(
        answers[labels.iter().position(|l| *l == "chelsea.png").unwrap()]["result"][0],
        "tiger cat"
    );
}
