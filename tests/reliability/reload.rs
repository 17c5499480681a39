//! Reload storms: 20 HUPs 1 s apart under load lose no request; a HUP that arrives while a
//! reload is rolling is not lost (its config is applied after); a reload onto a different model
//! file switches the answers with no failure.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{Value, json};

use super::*;
use crate::util::*;

/// Waits until no reload is in progress and `n` workers of the current generation are ready;
/// returns that generation.
fn settled(env: &Env, n: usize, timeout: Duration) -> u64 {
    let mut generation = 0;
    wait_until(timeout, "the reloads to settle", || {
        let status = env.status();
        generation = status["generation"].as_u64().unwrap();
        let workers = status["workers"].as_array().unwrap();
        status["phase"] == "running"
            && workers.len() == n
            && workers
                .iter()
                .all(|w| w["state"] == "ready" && w["generation"] == generation)
    });
    generation
}

fn failures(outcomes: &[Outcome]) -> Vec<&Failure> {
    outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().err())
        .collect()
}

#[test]
fn reload_storm_of_20_hups_loses_nothing() {
    let mut env = Env::new(2);
    env.start_ready(2);
    let image = photo("chelsea.png");
    let expected = env.predict(&image).json();
    let load = TimedLoad::start(env.addr(), &image, 8, Duration::from_secs(120));
    let started = Instant::now();
    for _ in 0..20 {
        env.signal(Signal::SIGHUP);
        std::thread::sleep(Duration::from_secs(1));
    }
    let generation = settled(&env, 2, Duration::from_secs(60));
    let settle = started.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let outcomes = load.finish();
    let failed = failures(&outcomes);
    let status = env.status();
    println!(
        "reload storm: 20 HUPs 1 s apart, 8 clients, 2 workers: {} requests answered, {} failed; \
         {} reloads rolled (generation {generation}), settled {:.1} s after the first HUP; \
         {} workers ready, {} restarts",
        outcomes.len() - failed.len(),
        failed.len(),
        generation - 1,
        settle.as_secs_f64(),
        status["workers"].as_array().unwrap().len(),
        status["worker_restarts"]
    );
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(
        generation >= 3,
        "the HUPs rolled the workers ({generation})"
    );
    assert_eq!(status["target_workers"], 2);
    assert_eq!(status["worker_restarts"], 0);
    assert!(
        outcomes
            .iter()
            .all(|o| o.result.as_ref().ok() == Some(&expected)),
        "every answer is the same"
    );
}

/// Regression: a HUP during a rolling reload used to "join" it, so a config edited after the
/// first HUP was never applied. Now it is read and applied once the rolling reload ends.
#[test]
fn a_hup_during_a_reload_is_not_lost() {
    let mut env = Env::new(1);
    env.start_ready(1);
    let image = photo("grace_hopper.jpg");
    assert_eq!(env.predict(&image).json()["status"], 1);
    env.signal(Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        env.status()["phase"],
        "reloading",
        "the first reload is rolling"
    );
    let text = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace("threads = 1", "threads = 1\nthreshold = 1000.0");
    std::fs::write(&env.config, text).unwrap();
    env.signal(Signal::SIGHUP);
    let generation = settled(&env, 1, Duration::from_secs(60));
    println!("two HUPs 100 ms apart, the config edited in between: generation {generation}");
    assert_eq!(generation, 3, "the second HUP rolled its own generation");
    assert_eq!(
        env.predict(&image).json(),
        json!({"result": "No Categories", "status": 0}),
        "the config of the second HUP is in force"
    );
}

#[test]
fn reload_onto_another_model_switches_answers_with_no_failure() {
    let mut env = Env::new(2);
    // A different model file: the same graph with the fc biases left at zero.
    let other = env.dir.path().join("other-model.onnx");
    let python = var("venv/bin/python");
    let made = std::process::Command::new(python)
        .arg(root().join("scripts/make_model.py"))
        .arg("--no-calibration")
        .arg(&other)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "make_model.py: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    env.start_ready(2);
    let image = photo("grace_hopper.jpg");
    let old = env.predict(&image).json();
    let original = std::fs::read_to_string(&env.config).unwrap();
    let swapped = original.replace(
        &resnet50().display().to_string(),
        &other.display().to_string(),
    );
    assert_ne!(original, swapped);
    std::fs::write(&env.config, &swapped).unwrap();
    let new: Value = predict_cli(&env.config, std::slice::from_ref(&image))
        .pop()
        .unwrap();
    assert_ne!(old, new, "the two models answer differently");

    let load = TimedLoad::start(env.addr(), &image, 8, Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(500));
    let reload_started = Instant::now();
    let out = env.cli(&["reload"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let reloaded = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let outcomes = load.finish();
    let failed = failures(&outcomes);
    let answers: Vec<&Value> = outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().ok())
        .collect();
    let olds = answers.iter().filter(|a| **a == &old).count();
    let news = answers.iter().filter(|a| **a == &new).count();
    println!(
        "model swap under load (8 clients, 2 workers): reload took {:.2} s; {} answers from the old model, \
         {} from the new, {} other, {} failed",
        (reloaded - reload_started).as_secs_f64(),
        olds,
        news,
        answers.len() - olds - news,
        failed.len()
    );
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert_eq!(
        olds + news,
        answers.len(),
        "every answer is the old or the new one"
    );
    assert!(olds > 0 && news > 0, "the answers switched over under load");
    for o in outcomes.iter().filter(|o| o.start > reloaded) {
        assert_eq!(
            o.result.as_ref().ok(),
            Some(&new),
            "after the reload, only the new model"
        );
    }
    assert_eq!(env.predict(&image).json(), new);
}
