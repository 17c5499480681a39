//! The inference threads: one per lane, taking turns at the queue, and the traffic rule that
//! keeps a whole-backend run from sharing the cores with a lane.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::Semaphore;

use super::backend::{Backend, LaneLoader, ModelInfo};
use super::counters::{Counters, MAX_LANES};
use super::queue::{Intake, Job, gather};
use super::run::run_batch;
use crate::options::Batching;
use crate::tensor::Elements;

/// Which engine runs a batch, as claimed from the [`Traffic`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// The backend itself, on all its threads.
    Whole,
    /// The lane's own single-thread engine, beside the other lanes.
    Lane,
}

/// Who is running what, so that a whole-backend run never shares the cores with a lane.
struct Traffic {
    /// Lanes serving (1 until the lanes are loaded).
    lanes: AtomicUsize,
    state: Mutex<TrafficState>,
    changed: Condvar,
}

#[derive(Default)]
struct TrafficState {
    /// Lanes running a batch (on either engine).
    busy: usize,
    /// Whether the backend itself is running (on all threads).
    whole: bool,
}

impl Traffic {
    fn state(&self) -> MutexGuard<'_, TrafficState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lanes not running a batch, counting the caller's.
    fn idle(&self) -> usize {
        let lanes = self.lanes.load(Relaxed);
        lanes.saturating_sub(self.state().busy).max(1)
    }

    /// Waits until no whole-backend run is going, then picks the engine: the whole backend when
    /// `lone()` says the batch is all there is to do and no lane is busy, else the lane.
    fn claim(&self, lone: impl Fn() -> bool) -> Claim {
        let mut state = self.state();
        while state.whole {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.busy += 1;
        if state.busy == 1 && lone() {
            state.whole = true;
            Claim::Whole
        } else {
            Claim::Lane
        }
    }

    /// Waits until nothing runs, then claims the whole backend (for a thread without a lane:
    /// the first, before the lanes are loaded).
    fn claim_whole(&self) -> Claim {
        let mut state = self.state();
        while state.whole || state.busy > 0 {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.busy = 1;
        state.whole = true;
        Claim::Whole
    }

    fn release(&self, claim: Claim) {
        let mut state = self.state();
        state.busy = state.busy.saturating_sub(1);
        if claim == Claim::Whole {
            state.whole = false;
        }
        drop(state);
        self.changed.notify_all();
    }
}

/// What every inference thread shares.
struct Lanes<B> {
    intake: Mutex<Intake>,
    /// The backend itself, run on all its threads.
    whole: Mutex<B>,
    traffic: Traffic,
    /// The first lane, for the first thread to pick up once loaded.
    first: Mutex<Option<B>>,
    info: ModelInfo,
    batching: Batching,
    counters: Arc<Counters>,
}

/// Serves the queue until every sender is gone and it is empty: on this thread with the whole
/// backend, and, once `loader` has loaded the lanes (on a thread of its own), with one thread per
/// lane, this one taking the first lane. `ahead` gets two batches' more places per lane loaded.
pub(super) fn serve<B: Backend>(
    backend: B,
    loader: Option<LaneLoader<B>>,
    info: &ModelInfo,
    batching: &Batching,
    rx: Receiver<Job>,
    counters: &Arc<Counters>,
    ahead: &Arc<Semaphore>,
) {
    let all = Arc::new(Lanes {
        intake: Mutex::new(Intake { rx, carry: None }),
        whole: Mutex::new(backend),
        traffic: Traffic {
            lanes: AtomicUsize::new(1),
            state: Mutex::default(),
            changed: Condvar::new(),
        },
        first: Mutex::new(None),
        info: info.clone(),
        batching: batching.clone(),
        counters: Arc::clone(counters),
    });
    let loading = loader.and_then(|loader| {
        let (all, ahead) = (Arc::clone(&all), Arc::clone(ahead));
        std::thread::Builder::new()
            .name("inference-load".to_owned())
            .spawn(move || load_lanes(loader, &all, &ahead))
            .map_err(|e| tracing::warn!("cannot start loading the inference lanes: {e}"))
            .ok()
    });
    serve_lane(0, None, &all);
    if let Some(handle) = loading {
        let _ = handle.join();
    }
}

/// Loads the lanes, hands the first to the first thread, starts a thread for each other one, and
/// waits for them to end. A loader that fails leaves the backend serving alone.
fn load_lanes<B: Backend>(loader: LaneLoader<B>, all: &Arc<Lanes<B>>, ahead: &Semaphore) {
    let started = Instant::now();
    let lanes = match catch_unwind(AssertUnwindSafe(loader)) {
        Ok(Ok(lanes)) => lanes,
        Ok(Err(e)) => {
            tracing::warn!(
                "cannot load the model's lanes, one batch at a time: {}",
                arbiter_infer::error_chain(&e)
            );
            return;
        }
        Err(_) => {
            tracing::warn!("loading the model's lanes panicked; one batch at a time");
            return;
        }
    };
    let mut lanes = lanes.into_iter().take(MAX_LANES);
    let Some(first) = lanes.next() else { return };
    *all.first.lock().unwrap_or_else(|p| p.into_inner()) = Some(first);
    let mut others = Vec::new();
    for (index, lane) in (1..).zip(lanes) {
        let all = Arc::clone(all);
        let spawned = std::thread::Builder::new()
            .name(format!("inference-{}", index + 1))
            .spawn(move || serve_lane(index, Some(lane), &all));
        match spawned {
            Ok(handle) => others.push(handle),
            Err(e) => tracing::warn!("cannot start an inference lane: {e}"),
        }
    }
    let count = others.len() + 1;
    // Two batches ahead of each lane.
    ahead.add_permits(2 * all.batching.max_batch_size.max(1) * (count - 1));
    all.traffic.lanes.store(count, Relaxed);
    tracing::info!(
        lanes = count,
        load_ms = started.elapsed().as_millis() as u64,
        "inference lanes ready"
    );
    for handle in others {
        let _ = handle.join();
    }
}

/// One inference thread's loop: gather a batch, run it on the lane or on the whole backend,
/// answer each job; ends when every sender is gone and the queue is empty. The first thread
/// (index 0) starts without a lane and picks up `all.first` once it is loaded.
fn serve_lane<B: Backend>(index: usize, mut lane: Option<B>, all: &Lanes<B>) {
    let (traffic, counters) = (&all.traffic, &*all.counters);
    // The model's input, reused from batch to batch (see `run_batch`).
    let mut input = Elements::empty(all.info.element);
    loop {
        let (batch, claim, last) = {
            let mut intake = all.intake.lock().unwrap_or_else(|p| p.into_inner());
            let idle = || traffic.idle();
            let Some((batch, disconnected)) = gather(&mut intake, &all.batching, idle, counters)
            else {
                return;
            };
            let last = disconnected && intake.carry.is_none();
            if lane.is_none() && index == 0 {
                lane = all.first.lock().unwrap_or_else(|p| p.into_inner()).take();
            }
            let claim = if lane.is_some() {
                traffic.claim(|| {
                    counters.queued.load(Relaxed) == 0
                        && counters.preparing.load(Relaxed) == 0
                        && intake.carry.is_none()
                })
            } else {
                traffic.claim_whole()
            };
            (batch, claim, last)
        };
        // The claim ends as soon as the model is done, before the answers go out: the next
        // request of a client that waits for its answer must find this lane idle.
        let done = || traffic.release(claim);
        match (claim, lane.as_mut()) {
            (Claim::Lane, Some(lane)) => {
                run_batch(lane, &all.info, batch, &mut input, counters, index, done);
            }
            _ => {
                let mut whole = all.whole.lock().unwrap_or_else(|p| p.into_inner());
                run_batch(
                    &mut *whole,
                    &all.info,
                    batch,
                    &mut input,
                    counters,
                    index,
                    done,
                );
            }
        }
        if last {
            return;
        }
    }
}
