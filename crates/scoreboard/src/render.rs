//! Prometheus text exposition (format 0.0.4) of every non-free slot.
//!
//! Each metric family is written once, with its `# HELP` and `# TYPE` lines, then one series per
//! worker (labels `worker` = slot index and `generation`). Request counters and per-route duration
//! histograms are written only for the routes a worker has seen, to keep the page short.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use crate::layout::Histogram;
use crate::{
    BATCH_BUCKETS, DURATION_BUCKETS_NS, Route, STATUS_CODES, Scoreboard, SlotRef, SlotState, Stage,
};

/// Renders the whole scoreboard as Prometheus text (`text/plain; version=0.0.4`).
pub fn render_prometheus(board: &Scoreboard) -> String {
    let live: Vec<SlotRef> = board
        .slots()
        .filter(|s| s.state() != SlotState::Free)
        .collect();
    let mut out = String::with_capacity(4096 + live.len() * 8192);

    family(
        &mut out,
        "arbiter_worker_restarts_total",
        "counter",
        "Workers replaced after a crash or a missed heartbeat.",
    );
    let _ = writeln!(
        out,
        "arbiter_worker_restarts_total {}",
        board.worker_restarts()
    );

    family(
        &mut out,
        "arbiter_worker_info",
        "gauge",
        "One series per worker slot in use, with its pid and state.",
    );
    for s in &live {
        let _ = writeln!(
            out,
            "arbiter_worker_info{{{},pid=\"{}\",state=\"{}\"}} 1",
            labels(s),
            s.pid(),
            s.state().as_str()
        );
    }

    family(
        &mut out,
        "arbiter_worker_heartbeat_age_seconds",
        "gauge",
        "Seconds since the worker's last heartbeat.",
    );
    for s in &live {
        let _ = writeln!(
            out,
            "arbiter_worker_heartbeat_age_seconds{{{}}} {}",
            labels(s),
            s.heartbeat_age().as_secs_f64()
        );
    }

    family(
        &mut out,
        "arbiter_requests_total",
        "counter",
        "HTTP requests answered, by route and status code.",
    );
    for s in &live {
        let raw = s.raw();
        for route in Route::ALL {
            for (column, counter) in raw.requests[route.index()].iter().enumerate() {
                let n = counter.load(Relaxed);
                if n == 0 {
                    continue;
                }
                let status = STATUS_CODES
                    .get(column)
                    .map_or_else(|| "other".to_owned(), u16::to_string);
                let _ = writeln!(
                    out,
                    "arbiter_requests_total{{{},route=\"{}\",status=\"{}\"}} {}",
                    labels(s),
                    route.as_str(),
                    status,
                    n
                );
            }
        }
    }

    family(
        &mut out,
        "arbiter_request_duration_seconds",
        "histogram",
        "Time from request head to response, by route.",
    );
    for s in &live {
        for route in Route::ALL {
            let h = &s.raw().request_duration[route.index()];
            if h.count.load(Relaxed) > 0 {
                let extra = format!("{},route=\"{}\"", labels(s), route.as_str());
                histogram(
                    &mut out,
                    "arbiter_request_duration_seconds",
                    &extra,
                    h,
                    &DURATION_BUCKETS_NS,
                    seconds,
                );
            }
        }
    }

    family(
        &mut out,
        "arbiter_stage_duration_seconds",
        "histogram",
        "Time per request in each stage: decode, preprocess, queue_wait, inference.",
    );
    for s in &live {
        for stage in Stage::ALL {
            let h = &s.raw().stage_duration[stage.index()];
            let extra = format!("{},stage=\"{}\"", labels(s), stage.as_str());
            histogram(
                &mut out,
                "arbiter_stage_duration_seconds",
                &extra,
                h,
                &DURATION_BUCKETS_NS,
                seconds,
            );
        }
    }

    family(
        &mut out,
        "arbiter_batch_size",
        "histogram",
        "Images per model run.",
    );
    for s in &live {
        histogram(
            &mut out,
            "arbiter_batch_size",
            &labels(s),
            &s.raw().batch_size,
            &BATCH_BUCKETS,
            |v| v.to_string(),
        );
    }

    family(
        &mut out,
        "arbiter_queue_depth",
        "gauge",
        "Requests waiting for the inference thread.",
    );
    for s in &live {
        let _ = writeln!(
            out,
            "arbiter_queue_depth{{{}}} {}",
            labels(s),
            s.queue_depth().max(0)
        );
    }

    family(
        &mut out,
        "arbiter_in_flight_requests",
        "gauge",
        "Requests being handled.",
    );
    for s in &live {
        let _ = writeln!(
            out,
            "arbiter_in_flight_requests{{{}}} {}",
            labels(s),
            s.in_flight().max(0)
        );
    }

    family(
        &mut out,
        "arbiter_model_load_seconds",
        "gauge",
        "Time to load and warm up the model (0 while booting).",
    );
    for s in &live {
        let ns = s.raw().model_load_ns.load(Relaxed);
        let _ = writeln!(
            out,
            "arbiter_model_load_seconds{{{}}} {}",
            labels(s),
            seconds(ns)
        );
    }

    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn labels(s: &SlotRef) -> String {
    format!("worker=\"{}\",generation=\"{}\"", s.index(), s.generation())
}

fn seconds(ns: u64) -> String {
    (ns as f64 / 1e9).to_string()
}

/// Writes `_bucket` (cumulative), `_sum` and `_count` lines of one histogram series.
fn histogram<const N: usize>(
    out: &mut String,
    name: &str,
    labels: &str,
    h: &Histogram<N>,
    bounds: &[u64],
    unit: impl Fn(u64) -> String,
) {
    let mut cumulative = 0u64;
    for (i, bucket) in h.buckets.iter().enumerate() {
        cumulative += bucket.load(Relaxed);
        let le = bounds
            .get(i)
            .map_or_else(|| "+Inf".to_owned(), |&b| unit(b));
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
    }
    // The count is the +Inf bucket, so the two always agree even while another thread observes.
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", unit(h.sum.load(Relaxed)));
    let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
}
