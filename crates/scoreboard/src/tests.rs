use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::*;

#[test]
fn create_gives_free_slots() {
    let board = Scoreboard::create(4).unwrap();
    assert_eq!(board.capacity(), 4);
    assert!(board.slots().all(|s| s.state() == SlotState::Free));
    assert!(board.get(4).is_none());
    assert_eq!(board.worker_restarts(), 0);
    assert!(Scoreboard::create(0).is_err());
    assert!(Scoreboard::create(usize::MAX / 2).is_err());
}

#[test]
fn reset_clears_previous_worker() {
    let board = Scoreboard::create(2).unwrap();
    let slot = board.slot(1);
    slot.reset(0, 1);
    slot.record_request(Route::ModelPredict, 200, Duration::from_millis(3));
    slot.set_boot_error("boom");
    slot.add_in_flight(2);
    slot.reset(42, 2);
    assert_eq!(slot.state(), SlotState::Booting);
    assert_eq!((slot.pid(), slot.generation()), (42, 2));
    assert_eq!(slot.requests_served(), 0);
    assert_eq!(slot.requests(Route::ModelPredict, 200), 0);
    assert_eq!(slot.boot_error(), None);
    assert_eq!(slot.in_flight(), 0);
    assert!(slot.heartbeat_age() < Duration::from_secs(1));
    slot.free();
    assert_eq!(slot.state(), SlotState::Free);
}

#[test]
fn boot_error_is_truncated_at_a_char_boundary() {
    let board = Scoreboard::create(1).unwrap();
    let slot = board.slot(0);
    // 'é' is two bytes, so 1023 'a' + 'é' crosses the 1024-byte limit in the middle of a char.
    let message = format!("{}é tail", "a".repeat(BOOT_ERROR_MAX - 1));
    slot.set_boot_error(&message);
    let stored = slot.boot_error().unwrap();
    assert_eq!(stored, "a".repeat(BOOT_ERROR_MAX - 1));
    assert_eq!(slot.state(), SlotState::Failed);
}

#[test]
#[allow(unsafe_code)]
fn a_forked_child_writes_what_the_parent_reads() {
    use nix::sys::wait::{WaitStatus, waitpid};
    use nix::unistd::{ForkResult, fork};

    let board = Scoreboard::create(3).unwrap();
    let slot = board.slot(2);
    slot.reset(0, 7);
    // Make the heartbeat old, so the child's heartbeat is visible as a fresh one.
    slot.raw().heartbeat_ns.store(0, Relaxed);
    // SAFETY: the test harness has other threads, so the child only touches atomics in the
    // already-mapped shared memory (no allocation, no locks) and leaves with `_exit`.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            slot.set_state(SlotState::Ready);
            slot.heartbeat();
            slot.record_request(Route::V2Infer, 200, Duration::from_millis(20));
            slot.record_request(Route::V2Infer, 418, Duration::from_millis(1));
            slot.observe_batch(3);
            slot.set_boot_error("model file missing");
            board.inc_worker_restarts();
            // SAFETY: `_exit` ends the child at once, running no destructor or atexit handler.
            unsafe { nix::libc::_exit(0) };
        }
        ForkResult::Parent { child } => {
            slot.set_pid(child.as_raw() as u32);
            assert_eq!(waitpid(child, None).unwrap(), WaitStatus::Exited(child, 0));
        }
    }
    assert_eq!(slot.state(), SlotState::Failed);
    assert!(slot.heartbeat_age() < Duration::from_secs(5));
    assert_eq!(slot.requests_served(), 2);
    assert_eq!(slot.requests(Route::V2Infer, 200), 1);
    assert_eq!(
        slot.requests(Route::V2Infer, 418),
        1,
        "unknown codes land in 'other'"
    );
    assert_eq!(slot.boot_error().as_deref(), Some("model file missing"));
    assert_eq!(board.worker_restarts(), 1);
}

#[test]
fn histogram_buckets_are_inclusive_upper_bounds() {
    let board = Scoreboard::create(1).unwrap();
    let slot = board.slot(0);
    slot.reset(1, 1);
    slot.observe_stage(Stage::Decode, Duration::from_millis(1)); // le 0.001 exactly
    slot.observe_stage(Stage::Decode, Duration::from_nanos(1_000_001)); // le 0.0025
    slot.observe_stage(Stage::Decode, Duration::from_secs(60)); // +Inf
    for n in [1, 3, 8, 100] {
        slot.observe_batch(n);
    }
    let h = &slot.raw().metrics.stage_duration[Stage::Decode.index()];
    let counts: Vec<u64> = h.buckets.iter().map(|b| b.load(Relaxed)).collect();
    assert_eq!(counts[0], 1);
    assert_eq!(counts[1], 1);
    assert_eq!(counts[DURATION_BUCKETS_NS.len()], 1);
    assert_eq!(counts.iter().sum::<u64>(), 3);
    assert_eq!(h.sum.load(Relaxed), 1_000_000 + 1_000_001 + 60_000_000_000);

    let text = render_prometheus(&board);
    let sample = |line: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line))
            .unwrap_or_else(|| panic!("no line {line} in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let l = "worker=\"0\",generation=\"1\"";
    // Cumulative buckets: 1 (le 1), 1 (le 2), 2 (le 4), 3 (le 8), ..., 4 (+Inf).
    assert_eq!(
        sample(&format!("arbiter_batch_size_bucket{{{l},le=\"1\"}}")),
        1.0
    );
    assert_eq!(
        sample(&format!("arbiter_batch_size_bucket{{{l},le=\"2\"}}")),
        1.0
    );
    assert_eq!(
        sample(&format!("arbiter_batch_size_bucket{{{l},le=\"4\"}}")),
        2.0
    );
    assert_eq!(
        sample(&format!("arbiter_batch_size_bucket{{{l},le=\"8\"}}")),
        3.0
    );
    assert_eq!(
        sample(&format!("arbiter_batch_size_bucket{{{l},le=\"64\"}}")),
        3.0
    );
    assert_eq!(
        sample(&format!("arbiter_batch_size_bucket{{{l},le=\"+Inf\"}}")),
        4.0
    );
    assert_eq!(sample(&format!("arbiter_batch_size_sum{{{l}}}")), 112.0);
    assert_eq!(sample(&format!("arbiter_batch_size_count{{{l}}}")), 4.0);
    let decode = format!("{l},stage=\"decode\"");
    assert_eq!(
        sample(&format!(
            "arbiter_stage_duration_seconds_bucket{{{decode},le=\"0.001\"}}"
        )),
        1.0
    );
    assert_eq!(
        sample(&format!(
            "arbiter_stage_duration_seconds_bucket{{{decode},le=\"0.0025\"}}"
        )),
        2.0
    );
    assert_eq!(
        sample(&format!(
            "arbiter_stage_duration_seconds_bucket{{{decode},le=\"10\"}}"
        )),
        2.0
    );
    assert_eq!(
        sample(&format!("arbiter_stage_duration_seconds_count{{{decode}}}")),
        3.0
    );
    assert!(
        (sample(&format!("arbiter_stage_duration_seconds_sum{{{decode}}}")) - 60.002000001).abs()
            < 1e-9
    );
}

/// Checks the text exposition format: every sample's family has one HELP and one TYPE line that
/// come before its samples, names and labels are well formed, values parse, and histogram buckets
/// are cumulative with `+Inf` equal to `_count`.
fn check_exposition(text: &str) -> HashMap<String, f64> {
    let mut help = HashSet::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = HashMap::new();
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    let mut last_bucket: HashMap<String, f64> = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(help.insert(name.to_owned()), "HELP twice for {name}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let (name, kind) = (it.next().unwrap(), it.next().unwrap());
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "TYPE twice for {name}"
            );
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "unexpected line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (
                n,
                l.strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}")),
            ),
            None => (series, ""),
        };
        assert!(name_ok(name), "bad name in {line}");
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap();
            assert!(
                name_ok(k) && v.starts_with('"') && v.ends_with('"') && v.len() >= 2,
                "{line}"
            );
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).map(String::as_str) == Some("histogram"))
            })
            .unwrap_or(name);
        assert!(
            types.contains_key(family) && help.contains(family),
            "no HELP/TYPE before {line}"
        );
        if name.ends_with("_bucket") {
            let key = labels.split(",le=").next().unwrap().to_owned();
            let previous = last_bucket.insert(key.clone(), value).unwrap_or(0.0);
            assert!(value >= previous, "buckets not cumulative at {line}");
        }
        if name.ends_with("_count") && family != name {
            assert_eq!(
                last_bucket.get(labels),
                Some(&value),
                "+Inf != _count at {line}"
            );
        }
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "duplicate series {series}"
        );
    }
    samples
}

#[test]
fn rendering_is_valid_exposition_over_all_live_slots() {
    let board = Scoreboard::create(4).unwrap();
    for (i, generation) in [(0, 1), (2, 3)] {
        let s = board.slot(i);
        s.reset(100 + i as u32, generation);
        s.set_state(SlotState::Ready);
        s.record_request(Route::ModelPredict, 200, Duration::from_millis(40));
        s.record_request(Route::ModelPredict, 413, Duration::from_millis(1));
        s.record_request(Route::Health, 200, Duration::from_micros(50));
        s.observe_stage(Stage::Inference, Duration::from_millis(38));
        s.observe_batch(1);
        s.set_queue_depth(2);
        s.add_in_flight(1);
        s.set_model_load(Duration::from_millis(260));
    }
    board.inc_worker_restarts();
    let text = render_prometheus(&board);
    let samples = check_exposition(&text);
    assert_eq!(samples["arbiter_worker_restarts_total"], 1.0);
    for (w, g) in [(0, 1), (2, 3)] {
        let l = format!("worker=\"{w}\",generation=\"{g}\"");
        assert_eq!(
            samples
                [&format!("arbiter_requests_total{{{l},route=\"model_predict\",status=\"200\"}}")],
            1.0
        );
        assert_eq!(
            samples
                [&format!("arbiter_requests_total{{{l},route=\"model_predict\",status=\"413\"}}")],
            1.0
        );
        assert_eq!(
            samples
                [&format!("arbiter_request_duration_seconds_count{{{l},route=\"model_predict\"}}")],
            2.0
        );
        assert_eq!(samples[&format!("arbiter_queue_depth{{{l}}}")], 2.0);
        assert_eq!(samples[&format!("arbiter_in_flight_requests{{{l}}}")], 1.0);
        assert_eq!(samples[&format!("arbiter_model_load_seconds{{{l}}}")], 0.26);
    }
    assert!(
        !text.contains("worker=\"1\""),
        "free slots are not rendered"
    );
    assert!(
        !text.contains("route=\"v2_infer\""),
        "unseen routes are not rendered"
    );
}

#[test]
fn a_slot_stays_small_enough_to_map_many() {
    let size = size_of::<layout::Slot>();
    assert!(size < 256 * 1024, "a slot is {size} bytes");
    assert!(
        size > 16 * 1024,
        "a slot holds {MAX_MODELS} model blocks: {size} bytes"
    );
    assert_eq!(size % 64, 0, "slots stay on cache lines");
}

#[test]
fn set_models_round_trips_truncates_and_is_cleared_by_reset() {
    let board = Scoreboard::create(1).unwrap();
    let slot = board.slot(0);
    slot.reset(1, 1);
    assert!(slot.models().is_empty(), "a reset slot names no model");
    // 'é' is two bytes, so 63 'n' + 'é' crosses the 64-byte limit in the middle of a char.
    let long_name = format!("{}é", "n".repeat(MODEL_NAME_MAX - 1));
    let long_version = "v".repeat(MODEL_VERSION_MAX + 5);
    slot.set_models(&[("a", "1"), (&long_name, &long_version), ("c", "")]);
    assert_eq!(
        slot.models(),
        [
            ("a".to_owned(), "1".to_owned()),
            (
                "n".repeat(MODEL_NAME_MAX - 1),
                "v".repeat(MODEL_VERSION_MAX)
            ),
            ("c".to_owned(), String::new()),
        ]
    );
    assert_eq!(
        (slot.model(0).name(), slot.model(0).version()),
        ("a".into(), "1".into())
    );
    assert_eq!(slot.model(2).index(), 2);
    assert_eq!(slot.model(3).name(), "", "blocks past the list are unnamed");

    // Fewer models clear the blocks after them, counts included.
    slot.model(1)
        .record_request(Route::V2Infer, 200, Duration::from_millis(1));
    slot.set_models(&[("b", "2")]);
    assert_eq!(slot.models(), [("b".to_owned(), "2".to_owned())]);
    assert_eq!(slot.model(1).requests(Route::V2Infer, 200), 0);

    slot.model(0)
        .record_request(Route::V2Infer, 200, Duration::from_millis(1));
    slot.model(0).set_queue_depth(3);
    slot.reset(2, 2);
    assert!(slot.models().is_empty());
    assert_eq!(slot.model(0).requests(Route::V2Infer, 200), 0);
    assert_eq!(slot.model(0).queue_depth(), 0);
    assert_eq!(slot.model(0).name(), "");
}

#[test]
fn model_handles_are_bounded() {
    let board = Scoreboard::create(1).unwrap();
    let slot = board.slot(0);
    assert!(slot.get_model(MAX_MODELS - 1).is_some());
    assert!(slot.get_model(MAX_MODELS).is_none());
    assert!(std::panic::catch_unwind(|| slot.model(MAX_MODELS)).is_err());
    let too_many = vec![("m", "1"); MAX_MODELS + 1];
    assert!(std::panic::catch_unwind(|| slot.set_models(&too_many)).is_err());
    slot.set_models(&vec![("m", "1"); MAX_MODELS]);
    assert_eq!(slot.models().len(), MAX_MODELS);
}

#[test]
fn each_model_counts_apart_from_the_others_and_from_the_slot() {
    let board = Scoreboard::create(1).unwrap();
    let slot = board.slot(0);
    slot.reset(1, 1);
    slot.set_models(&[("a", "1"), ("b", "7")]);
    let (a, b) = (slot.model(0), slot.model(1));
    a.record_request(Route::V2Infer, 200, Duration::from_millis(5));
    a.record_request(Route::V2Infer, 200, Duration::from_millis(5));
    a.record_request(Route::V2Infer, 418, Duration::from_millis(5));
    b.record_request(Route::ModelPredict, 429, Duration::from_millis(1));
    slot.record_request(Route::Health, 200, Duration::from_micros(10));
    a.set_queue_depth(4);
    b.set_queue_depth(1);

    assert_eq!(a.requests(Route::V2Infer, 200), 2);
    assert_eq!(
        a.requests(Route::V2Infer, 418),
        1,
        "unknown codes land in 'other'"
    );
    assert_eq!(
        a.requests(Route::V2Infer, 599),
        1,
        "every unknown code reads 'other'"
    );
    assert_eq!(a.requests(Route::ModelPredict, 429), 0);
    assert_eq!(b.requests(Route::ModelPredict, 429), 1);
    assert_eq!(b.requests(Route::V2Infer, 200), 0);
    // Every listed code has its own column in each model's block.
    for (i, &code) in STATUS_CODES.iter().enumerate() {
        let c = slot.model(2 + i % 2);
        c.record_request(Route::V2Metadata, code, Duration::ZERO);
        assert_eq!(c.requests(Route::V2Metadata, code), 1, "{code}");
        assert_eq!(
            c.requests(Route::V2Metadata, 418),
            0,
            "{code} is not 'other'"
        );
    }
    assert_eq!((a.queue_depth(), b.queue_depth()), (4, 1));
    assert_eq!(slot.queue_depth(), 0, "the slot-level gauge is apart");
    // Model requests stay out of the slot's route counters, but count as served.
    assert_eq!(slot.requests(Route::V2Infer, 200), 0);
    assert_eq!(slot.requests(Route::Health, 200), 1);
    assert_eq!(slot.requests_served(), 5 + STATUS_CODES.len() as u64);
}

#[test]
fn rendering_labels_model_series_and_keeps_slot_series_unlabelled() {
    let board = Scoreboard::create(2).unwrap();
    let slot = board.slot(1);
    slot.reset(10, 3);
    slot.set_state(SlotState::Ready);
    slot.set_models(&[("a", "1"), ("b", "2.0")]);
    let (a, b) = (slot.model(0), slot.model(1));
    a.record_request(Route::V2Infer, 200, Duration::from_millis(30));
    a.observe_stage(Stage::Inference, Duration::from_millis(20));
    a.observe_batch(2);
    a.set_queue_depth(3);
    a.set_model_load(Duration::from_millis(500));
    b.record_request(Route::ModelPredict, 503, Duration::from_millis(2));
    slot.record_request(Route::Health, 200, Duration::from_micros(30));
    slot.record_request(Route::Other, 404, Duration::from_micros(30));

    let text = render_prometheus(&board);
    let samples = check_exposition(&text);
    let w = "worker=\"1\",generation=\"3\"";
    let ma = format!("{w},model=\"a\",version=\"1\"");
    let mb = format!("{w},model=\"b\",version=\"2.0\"");
    let get = |series: String| {
        *samples
            .get(&series)
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    assert_eq!(
        get(format!(
            "arbiter_requests_total{{{ma},route=\"v2_infer\",status=\"200\"}}"
        )),
        1.0
    );
    assert_eq!(
        get(format!(
            "arbiter_requests_total{{{mb},route=\"model_predict\",status=\"503\"}}"
        )),
        1.0
    );
    assert_eq!(
        get(format!(
            "arbiter_requests_total{{{w},route=\"health\",status=\"200\"}}"
        )),
        1.0
    );
    assert_eq!(
        get(format!(
            "arbiter_requests_total{{{w},route=\"other\",status=\"404\"}}"
        )),
        1.0
    );
    assert_eq!(
        get(format!(
            "arbiter_request_duration_seconds_count{{{ma},route=\"v2_infer\"}}"
        )),
        1.0
    );
    assert_eq!(
        get(format!(
            "arbiter_request_duration_seconds_count{{{w},route=\"health\"}}"
        )),
        1.0
    );
    assert_eq!(
        get(format!(
            "arbiter_stage_duration_seconds_count{{{ma},stage=\"inference\"}}"
        )),
        1.0
    );
    assert_eq!(
        get(format!(
            "arbiter_stage_duration_seconds_count{{{mb},stage=\"inference\"}}"
        )),
        0.0
    );
    assert_eq!(get(format!("arbiter_batch_size_sum{{{ma}}}")), 2.0);
    assert_eq!(get(format!("arbiter_queue_depth{{{ma}}}")), 3.0);
    assert_eq!(get(format!("arbiter_queue_depth{{{mb}}}")), 0.0);
    assert_eq!(get(format!("arbiter_model_load_seconds{{{ma}}}")), 0.5);
    assert_eq!(get(format!("arbiter_in_flight_requests{{{w}}}")), 0.0);
    assert_eq!(
        get(format!("arbiter_worker_heartbeat_age_seconds{{{w}}}")).min(0.0),
        0.0
    );
    // Once the worker has named its models, the model families have no series without a model.
    for family in [
        "arbiter_stage_duration_seconds_count",
        "arbiter_batch_size_count",
        "arbiter_queue_depth",
        "arbiter_model_load_seconds",
    ] {
        let unlabelled = samples
            .keys()
            .filter(|k| k.starts_with(&format!("{family}{{")) && !k.contains("model=\""))
            .count();
        assert_eq!(unlabelled, 0, "{family}");
    }
    // The worker families carry no model label.
    for family in ["arbiter_worker_info", "arbiter_in_flight_requests"] {
        assert!(
            text.lines()
                .filter(|l| l.starts_with(family))
                .all(|l| !l.contains("model=")),
            "{family}"
        );
    }
}

#[test]
fn an_all_zero_slot_renders_nothing_about_models() {
    let board = Scoreboard::create(2).unwrap();
    let empty = render_prometheus(&board);
    check_exposition(&empty);
    let samples: Vec<&str> = empty.lines().filter(|l| !l.starts_with('#')).collect();
    // The service-wide totals are always there, so an autoscaler never reads a missing series.
    assert_eq!(
        samples,
        [
            "arbiter_worker_restarts_total 0",
            "arbiter_queued_requests 0",
            "arbiter_in_flight_requests 0"
        ]
    );

    // A booting worker that has named no model yet has no model-labelled series.
    board.slot(0).reset(5, 1);
    let booting = render_prometheus(&board);
    check_exposition(&booting);
    assert!(!booting.contains("model=\""), "{booting}");
    assert!(!booting.contains("arbiter_requests_total{"), "{booting}");
}

#[test]
fn label_values_are_escaped() {
    assert_eq!(render::escape("plain-1.0_x"), "plain-1.0_x");
    assert_eq!(render::escape("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
    let board = Scoreboard::create(1).unwrap();
    let slot = board.slot(0);
    slot.reset(1, 1);
    slot.set_models(&[("we\"ird", "1\n")]);
    let text = render_prometheus(&board);
    assert!(
        text.contains("model=\"we\\\"ird\",version=\"1\\n\""),
        "{text}"
    );
}

#[test]
fn queued_and_in_flight_gauges_per_worker_and_in_all() {
    let board = Scoreboard::create(3).unwrap();
    // Worker 0 serves two models, worker 2 has not named its models yet.
    let w0 = board.slot(0);
    w0.reset(10, 1);
    w0.set_state(SlotState::Ready);
    w0.set_models(&[("a", "1"), ("b", "1")]);
    w0.model(0).set_queue_depth(3);
    w0.model(1).set_queue_depth(2);
    w0.add_in_flight(7);
    let w2 = board.slot(2);
    w2.reset(12, 1);
    w2.set_state(SlotState::Booting);
    w2.set_queue_depth(4);
    w2.add_in_flight(1);

    let text = render_prometheus(&board);
    let samples = check_exposition(&text);
    let w0 = "worker=\"0\",generation=\"1\"";
    let w2 = "worker=\"2\",generation=\"1\"";
    assert_eq!(samples[&format!("arbiter_queued_requests{{{w0}}}")], 5.0);
    assert_eq!(samples[&format!("arbiter_queued_requests{{{w2}}}")], 4.0);
    assert_eq!(samples["arbiter_queued_requests"], 9.0);
    assert_eq!(samples[&format!("arbiter_in_flight_requests{{{w0}}}")], 7.0);
    assert_eq!(samples[&format!("arbiter_in_flight_requests{{{w2}}}")], 1.0);
    assert_eq!(samples["arbiter_in_flight_requests"], 8.0);
    // The per-model depth is still there beside the worker's sum.
    assert_eq!(
        samples[&format!("arbiter_queue_depth{{{w0},model=\"a\",version=\"1\"}}")],
        3.0
    );

    // With no worker, the totals are there and zero.
    let empty = render_prometheus(&Scoreboard::create(1).unwrap());
    let samples = check_exposition(&empty);
    assert_eq!(samples["arbiter_queued_requests"], 0.0);
    assert_eq!(samples["arbiter_in_flight_requests"], 0.0);
}
