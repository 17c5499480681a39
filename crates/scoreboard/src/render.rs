//! Prometheus text exposition (format 0.0.4) of every non-free slot.
//!
//! Each metric family is written once, with its `# HELP` and `# TYPE` lines, then its series.
//! Every series carries `worker` (the slot index) and `generation`. The families about the worker
//! itself (info, heartbeat age, in-flight requests) and the restart counter have no more labels.
//! The families about models (requests, request durations, stage durations, batch sizes, queue
//! depth, model load time) have one series per named model, labelled `model` and `version` after
//! the worker's labels. `arbiter_requests_total` and `arbiter_request_duration_seconds` also have
//! series without a model label, for requests that named none (health checks, `/metrics`, unknown
//! paths). A slot whose worker has not named its models yet is rendered with its slot-level values
//! and no model label, as a single-model worker was.
//!
//! `arbiter_queued_requests` (the sum of a worker's model queue depths) and
//! `arbiter_in_flight_requests` have one series per worker and one without labels, the total over
//! every worker, which an autoscaler reads without summing (`sum()` over the family would count
//! each request twice: select `{worker!=""}` or the unlabelled series).
//!
//! Request counters and per-route duration histograms are written only for the routes a worker
//! (or model) has seen, to keep the page short.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use crate::layout::{Histogram, Metrics};
use crate::{
    BATCH_BUCKETS, DURATION_BUCKETS_NS, Route, STATUS_CODES, Scoreboard, SlotRef, SlotState, Stage,
};

/// One slot being rendered, with its labels and its named models read once.
struct Live {
    slot: SlotRef,
    labels: String,
    /// (model index, labels including `model` and `version`).
    models: Vec<(usize, String)>,
}

impl Live {
    fn new(slot: SlotRef) -> Live {
        let labels = format!(
            "worker=\"{}\",generation=\"{}\"",
            slot.index(),
            slot.generation()
        );
        let models = slot
            .raw()
            .models
            .iter()
            .enumerate()
            .filter(|(_, m)| !m.name.is_empty())
            .map(|(i, m)| {
                let model = format!(
                    "{labels},model=\"{}\",version=\"{}\"",
                    escape(&m.name.load()),
                    escape(&m.version.load())
                );
                (i, model)
            })
            .collect();
        Live {
            slot,
            labels,
            models,
        }
    }

    /// The slot-level metrics (requests that name no model) with the worker's labels.
    fn unnamed(&self) -> (&str, &Metrics) {
        (&self.labels, &self.slot.raw().metrics)
    }

    /// Each named model's metrics with its labels.
    fn named(&self) -> impl Iterator<Item = (&str, &Metrics)> + '_ {
        let raw = self.slot.raw();
        self.models
            .iter()
            .map(move |(i, labels)| (labels.as_str(), &raw.models[*i].metrics))
    }

    /// Where the model families' values are: each named model's block, or the slot's own block
    /// while the worker has named none.
    fn model_scopes(&self) -> Vec<(&str, &Metrics)> {
        if self.models.is_empty() {
            vec![self.unnamed()]
        } else {
            self.named().collect()
        }
    }

    /// Requests queued for any of the worker's models (its own block's while it has named none).
    fn queued(&self) -> i64 {
        self.model_scopes()
            .iter()
            .map(|(_, m)| m.queue_depth.load(Relaxed).max(0))
            .sum()
    }

    /// Where request counts are: the slot's own block (requests naming no model), then each model.
    fn request_scopes(&self) -> impl Iterator<Item = (&str, &Metrics)> + '_ {
        std::iter::once(self.unnamed()).chain(self.named())
    }
}

/// Renders the whole scoreboard as Prometheus text (`text/plain; version=0.0.4`).
pub fn render_prometheus(board: &Scoreboard) -> String {
    let live: Vec<Live> = board
        .slots()
        .filter(|s| s.state() != SlotState::Free)
        .map(Live::new)
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
    for l in &live {
        let _ = writeln!(
            out,
            "arbiter_worker_info{{{},pid=\"{}\",state=\"{}\"}} 1",
            l.labels,
            l.slot.pid(),
            l.slot.state().as_str()
        );
    }

    family(
        &mut out,
        "arbiter_worker_heartbeat_age_seconds",
        "gauge",
        "Seconds since the worker's last heartbeat.",
    );
    for l in &live {
        let _ = writeln!(
            out,
            "arbiter_worker_heartbeat_age_seconds{{{}}} {}",
            l.labels,
            l.slot.heartbeat_age().as_secs_f64()
        );
    }

    family(
        &mut out,
        "arbiter_requests_total",
        "counter",
        "HTTP requests answered, by route and status code, and by model for those naming one.",
    );
    for (labels, m) in live.iter().flat_map(Live::request_scopes) {
        for route in Route::ALL {
            for (column, counter) in m.requests[route.index()].iter().enumerate() {
                let n = counter.load(Relaxed);
                if n == 0 {
                    continue;
                }
                let status = STATUS_CODES
                    .get(column)
                    .map_or_else(|| "other".to_owned(), u16::to_string);
                let _ = writeln!(
                    out,
                    "arbiter_requests_total{{{labels},route=\"{}\",status=\"{status}\"}} {n}",
                    route.as_str(),
                );
            }
        }
    }

    family(
        &mut out,
        "arbiter_request_duration_seconds",
        "histogram",
        "Time from request head to response, by route, and by model for those naming one.",
    );
    for (labels, m) in live.iter().flat_map(Live::request_scopes) {
        for route in Route::ALL {
            let h = &m.request_duration[route.index()];
            if h.count.load(Relaxed) > 0 {
                let extra = format!("{labels},route=\"{}\"", route.as_str());
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
        "Time per request in each stage (decode, preprocess, queue_wait, inference), by model.",
    );
    for l in &live {
        for (labels, m) in l.model_scopes() {
            for stage in Stage::ALL {
                let extra = format!("{labels},stage=\"{}\"", stage.as_str());
                histogram(
                    &mut out,
                    "arbiter_stage_duration_seconds",
                    &extra,
                    &m.stage_duration[stage.index()],
                    &DURATION_BUCKETS_NS,
                    seconds,
                );
            }
        }
    }

    family(
        &mut out,
        "arbiter_batch_size",
        "histogram",
        "Images per model run, by model.",
    );
    for l in &live {
        for (labels, m) in l.model_scopes() {
            histogram(
                &mut out,
                "arbiter_batch_size",
                labels,
                &m.batch_size,
                &BATCH_BUCKETS,
                |v| v.to_string(),
            );
        }
    }

    family(
        &mut out,
        "arbiter_queue_depth",
        "gauge",
        "Requests waiting for the model's inference thread.",
    );
    for l in &live {
        for (labels, m) in l.model_scopes() {
            let depth = m.queue_depth.load(Relaxed).max(0);
            let _ = writeln!(out, "arbiter_queue_depth{{{labels}}} {depth}");
        }
    }

    family(
        &mut out,
        "arbiter_queued_requests",
        "gauge",
        "Requests waiting for a model's inference thread, per worker (all its models), and in \
         all in the series without labels (for autoscaling).",
    );
    let queued: Vec<i64> = live.iter().map(Live::queued).collect();
    for (l, n) in live.iter().zip(&queued) {
        let _ = writeln!(out, "arbiter_queued_requests{{{}}} {n}", l.labels);
    }
    let _ = writeln!(
        out,
        "arbiter_queued_requests {}",
        queued.iter().sum::<i64>()
    );

    family(
        &mut out,
        "arbiter_in_flight_requests",
        "gauge",
        "Requests being handled (from head read to answer written), per worker, and in all in \
         the series without labels.",
    );
    let in_flight: Vec<i64> = live.iter().map(|l| l.slot.in_flight().max(0)).collect();
    for (l, n) in live.iter().zip(&in_flight) {
        let _ = writeln!(out, "arbiter_in_flight_requests{{{}}} {n}", l.labels);
    }
    let _ = writeln!(
        out,
        "arbiter_in_flight_requests {}",
        in_flight.iter().sum::<i64>()
    );

    family(
        &mut out,
        "arbiter_model_load_seconds",
        "gauge",
        "Time to load and warm up the model (0 while booting).",
    );
    for l in &live {
        for (labels, m) in l.model_scopes() {
            let load = seconds(m.model_load_ns.load(Relaxed));
            let _ = writeln!(out, "arbiter_model_load_seconds{{{labels}}} {load}");
        }
    }

    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value escaped for the text format: backslash, double quote and newline.
pub(crate) fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
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
