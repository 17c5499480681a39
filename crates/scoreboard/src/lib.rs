//! The scoreboard: a block of shared memory that the arbiter maps before it forks any worker, so
//! that the arbiter and every worker of every generation see the same bytes.
//!
//! # Theory of operation
//!
//! [`Scoreboard::create`] maps anonymous `MAP_SHARED` memory: a small header (global counters such
//! as worker restarts) followed by a fixed number of worker *slots*. A forked child inherits the
//! mapping, so writes from any process are visible to all. Everything inside is an atomic integer,
//! so nobody takes a lock, a crashed writer can never leave a lock held, and a reader at worst sees
//! a counter one increment old.
//!
//! The arbiter owns the slot life cycle: [`SlotRef::reset`] before forking a worker into a slot
//! (state [`SlotState::Booting`], counters and model names zeroed, heartbeat now),
//! [`SlotRef::set_pid`] once the fork returns, and [`SlotRef::free`] after reaping it. It watches
//! [`SlotRef::state`], [`SlotRef::heartbeat_age`], [`SlotRef::requests_served`] and, for a worker
//! that exits with the boot-failure code, [`SlotRef::boot_error`].
//!
//! The worker writes its own slot: state transitions, a heartbeat (CLOCK_MONOTONIC, which is one
//! clock for all processes on Linux), the in-flight gauge, and its metrics. Every worker serves
//! every configured model, so a slot has up to [`MAX_MODELS`] per-model blocks: the worker names
//! them once with [`SlotRef::set_models`] and then counts through a [`ModelRef`]
//! ([`SlotRef::model`]): requests by [`Route`] and status, duration histograms per route and per
//! [`Stage`], batch sizes, the queue depth and the model load time, all per model. The slot's own
//! request counters and per-route durations ([`SlotRef::record_request`]) are for requests that
//! name no model: health checks, `/metrics`, unknown paths. Every request, with a model or
//! without, counts in [`SlotRef::requests_served`].
//!
//! Any worker can then answer `/metrics` for the whole service with [`render_prometheus`], which
//! walks every non-free slot and labels per-model series with `model` and `version`.
//!
//! Histograms keep non-cumulative bucket counts and an integer sum (nanoseconds, or items for
//! batch sizes), so an observation is three `fetch_add`s; rendering makes the buckets cumulative.

mod layout;
mod render;
mod shm;

use std::sync::Arc;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::time::Duration;

use nix::time::{ClockId, clock_gettime};

pub use layout::{BOOT_ERROR_MAX, MAX_MODELS, MODEL_NAME_MAX, MODEL_VERSION_MAX};
use layout::{MAGIC, Metrics, ModelStats, Slot, status_column};
pub use render::render_prometheus;
use shm::Mapping;

/// Errors creating a scoreboard.
#[derive(Debug, thiserror::Error)]
pub enum ScoreboardError {
    /// The kernel refused the shared mapping.
    #[error("cannot map the shared scoreboard")]
    Mmap(#[source] nix::Error),
    /// The requested slot count does not fit in memory arithmetic (or is zero).
    #[error("a scoreboard of {slots} slots is not possible")]
    TooLarge {
        /// The slot count asked for.
        slots: usize,
    },
}

/// Upper bounds (inclusive, nanoseconds) of the duration histograms' finite buckets.
pub const DURATION_BUCKETS_NS: [u64; 15] = [
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    75_000_000,
    100_000_000,
    150_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Upper bounds (inclusive) of the batch-size histogram's finite buckets.
pub const BATCH_BUCKETS: [u64; 7] = [1, 2, 4, 8, 16, 32, 64];

/// The status codes counted one by one; any other is counted as `other`.
pub const STATUS_CODES: [u16; 12] = [200, 400, 404, 405, 408, 413, 415, 422, 429, 499, 500, 503];

/// Number of [`Route`] values.
pub const ROUTES: usize = 6;
/// Number of [`Stage`] values.
pub const STAGES: usize = 4;

/// The routes that requests are counted by (the metrics' `route` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `POST /model_predict`, the seed's API.
    ModelPredict,
    /// `POST /v2/models/{name}/infer`.
    V2Infer,
    /// The other KServe v2 routes: server and model metadata, readiness.
    V2Metadata,
    /// `/healthz`, `/readyz`, `/v2/health/*`.
    Health,
    /// `/metrics`.
    Metrics,
    /// Anything else (unknown paths, the OpenAPI document).
    Other,
}

impl Route {
    /// All routes, in index order.
    pub const ALL: [Route; ROUTES] = [
        Route::ModelPredict,
        Route::V2Infer,
        Route::V2Metadata,
        Route::Health,
        Route::Metrics,
        Route::Other,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::ModelPredict => "model_predict",
            Route::V2Infer => "v2_infer",
            Route::V2Metadata => "v2_metadata",
            Route::Health => "health",
            Route::Metrics => "metrics",
            Route::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The stages of one prediction that are timed separately (the metrics' `stage` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Image bytes to RGB pixels.
    Decode,
    /// Resize and normalise into the input tensor.
    Preprocess,
    /// Waiting in the inference queue.
    QueueWait,
    /// The model run of the batch the request was in.
    Inference,
}

impl Stage {
    /// All stages, in index order.
    pub const ALL: [Stage; STAGES] = [
        Stage::Decode,
        Stage::Preprocess,
        Stage::QueueWait,
        Stage::Inference,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Preprocess => "preprocess",
            Stage::QueueWait => "queue_wait",
            Stage::Inference => "inference",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Exit code of a worker that could not boot: it wrote why into its slot
/// ([`SlotRef::set_boot_error`]), and the arbiter counts it as a boot failure, not a crash.
pub const EXIT_BOOT_FAILURE: i32 = 3;

/// Where a slot's worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlotState {
    /// No worker.
    Free,
    /// Forked, loading and warming up the model.
    Booting,
    /// Serving.
    Ready,
    /// No longer accepting; finishing what it accepted.
    Draining,
    /// Failed to boot; see [`SlotRef::boot_error`].
    Failed,
}

impl SlotState {
    /// The lower-case name, as logs and metrics show it.
    pub fn as_str(self) -> &'static str {
        match self {
            SlotState::Free => "free",
            SlotState::Booting => "booting",
            SlotState::Ready => "ready",
            SlotState::Draining => "draining",
            SlotState::Failed => "failed",
        }
    }

    fn to_raw(self) -> u32 {
        match self {
            SlotState::Free => 0,
            SlotState::Booting => 1,
            SlotState::Ready => 2,
            SlotState::Draining => 3,
            SlotState::Failed => 4,
        }
    }

    fn from_raw(raw: u32) -> SlotState {
        match raw {
            1 => SlotState::Booting,
            2 => SlotState::Ready,
            3 => SlotState::Draining,
            4 => SlotState::Failed,
            _ => SlotState::Free,
        }
    }
}

/// Nanoseconds on CLOCK_MONOTONIC, the same clock in every process of the machine.
pub fn monotonic_ns() -> u64 {
    match clock_gettime(ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => {
            let secs = u64::try_from(ts.tv_sec()).unwrap_or(0);
            let nanos = u64::try_from(ts.tv_nsec()).unwrap_or(0);
            secs.saturating_mul(1_000_000_000).saturating_add(nanos)
        }
        // CLOCK_MONOTONIC cannot fail on Linux; 0 makes every heartbeat look old, the safe side.
        Err(_) => 0,
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn gauge(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The shared scoreboard. Cloning is cheap and shares the same mapping; a forked child inherits it.
#[derive(Debug, Clone)]
pub struct Scoreboard {
    map: Arc<Mapping>,
}

impl Scoreboard {
    /// Maps a new, empty scoreboard with `slots` worker slots (all [`SlotState::Free`]).
    pub fn create(slots: usize) -> Result<Scoreboard, ScoreboardError> {
        if slots == 0 {
            return Err(ScoreboardError::TooLarge { slots });
        }
        let map = Mapping::create(slots)?;
        let header = map.header();
        header.capacity.store(slots as u64, Relaxed);
        header.magic.store(MAGIC, Release);
        Ok(Scoreboard { map: Arc::new(map) })
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.map.capacity()
    }

    /// A handle on slot `index`.
    ///
    /// # Panics
    ///
    /// If `index >= capacity()`, like slice indexing; see [`Scoreboard::get`].
    pub fn slot(&self, index: usize) -> SlotRef {
        assert!(
            index < self.capacity(),
            "slot {index} out of range (capacity {})",
            self.capacity()
        );
        SlotRef {
            map: Arc::clone(&self.map),
            index,
        }
    }

    /// A handle on slot `index`, or `None` if out of range.
    pub fn get(&self, index: usize) -> Option<SlotRef> {
        (index < self.capacity()).then(|| SlotRef {
            map: Arc::clone(&self.map),
            index,
        })
    }

    /// Handles on every slot, in index order.
    pub fn slots(&self) -> impl Iterator<Item = SlotRef> + '_ {
        (0..self.capacity()).map(|i| self.slot(i))
    }

    /// The first free slot, if any.
    pub fn find_free(&self) -> Option<SlotRef> {
        self.slots().find(|s| s.state() == SlotState::Free)
    }

    /// Counts one replaced (crashed or hung) worker.
    pub fn inc_worker_restarts(&self) {
        self.map.header().worker_restarts.fetch_add(1, Relaxed);
    }

    /// Workers replaced so far.
    pub fn worker_restarts(&self) -> u64 {
        self.map.header().worker_restarts.load(Relaxed)
    }
}

/// A cheap handle on one slot, usable from any thread of any process that shares the scoreboard.
#[derive(Debug, Clone)]
pub struct SlotRef {
    map: Arc<Mapping>,
    index: usize,
}

impl SlotRef {
    fn raw(&self) -> &Slot {
        self.map.slot(self.index)
    }

    /// This slot's index (the metrics' `worker` label).
    pub fn index(&self) -> usize {
        self.index
    }

    // ---- arbiter side ----

    /// Prepares the slot for a new worker: counters zeroed, state Booting, heartbeat now.
    ///
    /// Call it before forking (with `pid` 0 if not known yet, then [`SlotRef::set_pid`]), so that
    /// the child can never write its first state before the reset.
    pub fn reset(&self, pid: u32, generation: u64) {
        let s = self.raw();
        s.clear_metrics();
        s.pid.store(pid, Relaxed);
        s.generation.store(generation, Relaxed);
        s.heartbeat_ns.store(monotonic_ns(), Relaxed);
        s.state.store(SlotState::Booting.to_raw(), Release);
    }

    /// Records the worker's process id.
    pub fn set_pid(&self, pid: u32) {
        self.raw().pid.store(pid, Relaxed);
    }

    /// Marks the slot free (after its worker was reaped).
    pub fn free(&self) {
        let s = self.raw();
        s.state.store(SlotState::Free.to_raw(), Release);
        s.pid.store(0, Relaxed);
    }

    /// The worker's state.
    pub fn state(&self) -> SlotState {
        SlotState::from_raw(self.raw().state.load(Acquire))
    }

    /// The worker's process id (0 if not set).
    pub fn pid(&self) -> u32 {
        self.raw().pid.load(Relaxed)
    }

    /// The generation the worker was started in.
    pub fn generation(&self) -> u64 {
        self.raw().generation.load(Relaxed)
    }

    /// Time since the worker's last heartbeat (or since `reset`).
    pub fn heartbeat_age(&self) -> Duration {
        let last = self.raw().heartbeat_ns.load(Relaxed);
        Duration::from_nanos(monotonic_ns().saturating_sub(last))
    }

    /// Requests the worker has answered since `reset`.
    pub fn requests_served(&self) -> u64 {
        self.raw().requests_served.load(Relaxed)
    }

    /// The error message a worker wrote before failing to boot, if any.
    pub fn boot_error(&self) -> Option<String> {
        let text = self.raw().boot_error.load();
        (!text.is_empty()).then_some(text)
    }

    /// The models named by [`SlotRef::set_models`]: (name, version) in model index order.
    pub fn models(&self) -> Vec<(String, String)> {
        self.raw()
            .models
            .iter()
            .filter(|m| !m.name.is_empty())
            .map(|m| (m.name.load(), m.version.load()))
            .collect()
    }

    // ---- worker side ----

    /// Sets the worker's state.
    pub fn set_state(&self, state: SlotState) {
        self.raw().state.store(state.to_raw(), Release);
    }

    /// Records that the worker is alive now.
    pub fn heartbeat(&self) {
        self.raw().heartbeat_ns.store(monotonic_ns(), Relaxed);
    }

    /// Stores a boot error message (truncated to [`BOOT_ERROR_MAX`] bytes at a char boundary) and
    /// sets the state to Failed.
    pub fn set_boot_error(&self, message: &str) {
        self.raw().boot_error.store(message);
        self.set_state(SlotState::Failed);
    }

    /// Names the models this worker serves, as (name, version): `models[i]` becomes model index
    /// `i` of [`SlotRef::model`]. Names are truncated to [`MODEL_NAME_MAX`] bytes and versions to
    /// [`MODEL_VERSION_MAX`], at a char boundary; the blocks past `models.len()` are cleared. An
    /// empty name marks a block unused, so it is neither listed by [`SlotRef::models`] nor
    /// rendered.
    ///
    /// Call it once while booting, before counting through a [`ModelRef`]: it leaves the metrics
    /// of the named blocks as they are ([`SlotRef::reset`] has zeroed them).
    ///
    /// # Panics
    ///
    /// If `models` has more than [`MAX_MODELS`] entries (the configuration refuses more).
    pub fn set_models(&self, models: &[(&str, &str)]) {
        assert!(
            models.len() <= MAX_MODELS,
            "{} models configured, the scoreboard holds at most {MAX_MODELS}",
            models.len()
        );
        let blocks = &self.raw().models;
        for (block, (name, version)) in blocks.iter().zip(models) {
            block.version.store(version);
            block.name.store(name);
        }
        for block in &blocks[models.len()..] {
            block.clear();
        }
    }

    /// A handle on model block `index` (the place of the model in [`SlotRef::set_models`]).
    ///
    /// # Panics
    ///
    /// If `index >= MAX_MODELS`, like slice indexing; see [`SlotRef::get_model`].
    pub fn model(&self, index: usize) -> ModelRef {
        self.get_model(index).unwrap_or_else(|| {
            panic!("model {index} out of range (the scoreboard holds {MAX_MODELS})")
        })
    }

    /// A handle on model block `index`, or `None` if `index >= MAX_MODELS`. The block need not be
    /// named: counts into an unnamed block are kept but not rendered.
    pub fn get_model(&self, index: usize) -> Option<ModelRef> {
        (index < MAX_MODELS).then(|| ModelRef {
            slot: self.clone(),
            index,
        })
    }

    /// Counts one answered request that names no model (health, `/metrics`, unknown paths) and its
    /// duration. Requests to a model are counted with [`ModelRef::record_request`].
    pub fn record_request(&self, route: Route, status: u16, duration: Duration) {
        let s = self.raw();
        s.metrics
            .record_request(route.index(), status, duration_ns(duration));
        s.requests_served.fetch_add(1, Relaxed);
    }

    /// Adds one observation of a stage's duration, without a model.
    ///
    /// Kept for a worker that has not named its models: a worker that has uses
    /// [`ModelRef::observe_stage`], and once a slot has models only theirs are rendered.
    pub fn observe_stage(&self, stage: Stage, duration: Duration) {
        self.raw().metrics.stage_duration[stage.index()]
            .observe(&DURATION_BUCKETS_NS, duration_ns(duration));
    }

    /// Adds one observation of a batch size, without a model (see [`SlotRef::observe_stage`];
    /// the per-model one is [`ModelRef::observe_batch`]).
    pub fn observe_batch(&self, size: usize) {
        self.raw()
            .metrics
            .batch_size
            .observe(&BATCH_BUCKETS, size as u64);
    }

    /// Sets the queue depth gauge, without a model (see [`SlotRef::observe_stage`]; the
    /// per-model one is [`ModelRef::set_queue_depth`]).
    pub fn set_queue_depth(&self, depth: usize) {
        self.raw().metrics.queue_depth.store(gauge(depth), Relaxed);
    }

    /// Adds `delta` (may be negative) to the in-flight requests gauge.
    pub fn add_in_flight(&self, delta: i64) {
        self.raw().in_flight.fetch_add(delta, Relaxed);
    }

    /// Sets the model load time gauge, without a model (see [`SlotRef::observe_stage`]; the
    /// per-model one is [`ModelRef::set_model_load`]).
    pub fn set_model_load(&self, duration: Duration) {
        self.raw()
            .metrics
            .model_load_ns
            .store(duration_ns(duration), Relaxed);
    }

    /// Requests without a model counted for `route` with `status` (a status outside
    /// [`STATUS_CODES`] reads the `other` column).
    pub fn requests(&self, route: Route, status: u16) -> u64 {
        self.raw().metrics.requests[route.index()][status_column(status)].load(Relaxed)
    }

    /// The in-flight requests gauge.
    pub fn in_flight(&self) -> i64 {
        self.raw().in_flight.load(Relaxed)
    }

    /// The queue depth gauge without a model (see [`SlotRef::set_queue_depth`]).
    pub fn queue_depth(&self) -> i64 {
        self.raw().metrics.queue_depth.load(Relaxed)
    }
}

/// A cheap handle on one model's block in one slot: what the worker counts a model's requests,
/// stages, batches, queue depth and load time with.
#[derive(Debug, Clone)]
pub struct ModelRef {
    slot: SlotRef,
    index: usize,
}

impl ModelRef {
    fn raw(&self) -> &ModelStats {
        &self.slot.raw().models[self.index]
    }

    fn metrics(&self) -> &Metrics {
        &self.raw().metrics
    }

    /// The model's index in the slot (its place in [`SlotRef::set_models`]).
    pub fn index(&self) -> usize {
        self.index
    }

    /// The model's name ("" if the block is unused).
    pub fn name(&self) -> String {
        self.raw().name.load()
    }

    /// The model's version ("" if none was set).
    pub fn version(&self) -> String {
        self.raw().version.load()
    }

    /// Counts one answered request to this model and its duration, in the model's block only;
    /// the slot's [`SlotRef::requests_served`] counts it too, as it counts every request.
    pub fn record_request(&self, route: Route, status: u16, duration: Duration) {
        self.metrics()
            .record_request(route.index(), status, duration_ns(duration));
        self.slot.raw().requests_served.fetch_add(1, Relaxed);
    }

    /// Adds one observation of a stage's duration.
    pub fn observe_stage(&self, stage: Stage, duration: Duration) {
        self.metrics().stage_duration[stage.index()]
            .observe(&DURATION_BUCKETS_NS, duration_ns(duration));
    }

    /// Adds one observation of a batch size.
    pub fn observe_batch(&self, size: usize) {
        self.metrics()
            .batch_size
            .observe(&BATCH_BUCKETS, size as u64);
    }

    /// Sets the model's queue depth gauge.
    pub fn set_queue_depth(&self, depth: usize) {
        self.metrics().queue_depth.store(gauge(depth), Relaxed);
    }

    /// Sets the model's load (and warm-up) time gauge.
    pub fn set_model_load(&self, duration: Duration) {
        self.metrics()
            .model_load_ns
            .store(duration_ns(duration), Relaxed);
    }

    /// Requests to this model counted for `route` with `status` (a status outside
    /// [`STATUS_CODES`] reads the `other` column).
    pub fn requests(&self, route: Route, status: u16) -> u64 {
        self.metrics().requests[route.index()][status_column(status)].load(Relaxed)
    }

    /// The model's queue depth gauge.
    pub fn queue_depth(&self) -> i64 {
        self.metrics().queue_depth.load(Relaxed)
    }
}

#[cfg(test)]
mod tests;
