//! What the request handlers and the inference threads count together: places taken, jobs
//! queued, requests being prepared, and which lanes are running since when.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

use arbiter_scoreboard::ModelRef;

use super::admission::Reader;

/// The most inference threads (lanes) a worker runs.
pub(super) const MAX_LANES: usize = 16;

/// The pipeline's counters, shared by the queue's senders and the inference threads.
pub(super) struct Counters {
    /// Permits out: requests admitted and not yet answered (or dropped).
    pub(super) admitted: AtomicUsize,
    /// The most permits out at once.
    pub(super) capacity: usize,
    /// Jobs in the channel.
    pub(super) queued: AtomicUsize,
    /// Requests being preprocessed (holding a place ahead of the model, not yet queued): the
    /// batcher waits for them, up to `max_delay`.
    pub(super) preparing: AtomicUsize,
    /// The admitted requests whose bodies are still arriving, oldest first, when slow bodies
    /// may be overtaken (see `Permit::admit`).
    pub(super) readers: Mutex<Vec<Arc<Reader>>>,
    /// Per lane: monotonic ns since `epoch` when its current batch started; 0 when idle.
    pub(super) busy_since: [AtomicU64; MAX_LANES],
    epoch: Instant,
    /// The model's block of the worker's scoreboard slot: queue depth, stage times, batches.
    pub(super) stats: ModelRef,
}

impl Counters {
    /// Counters for a pipeline of `capacity` places, all free.
    pub(super) fn new(capacity: usize, stats: ModelRef) -> Counters {
        Counters {
            admitted: AtomicUsize::new(0),
            capacity,
            queued: AtomicUsize::new(0),
            preparing: AtomicUsize::new(0),
            readers: Mutex::new(Vec::new()),
            busy_since: std::array::from_fn(|_| AtomicU64::new(0)),
            epoch: Instant::now(),
            stats,
        }
    }

    /// Monotonic ns since `epoch`, never 0 (0 marks an idle lane).
    pub(super) fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Counts one job taken off the channel.
    pub(super) fn dequeued(&self) {
        let depth = self.queued.fetch_sub(1, Relaxed).saturating_sub(1);
        self.stats.set_queue_depth(depth);
    }
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counters")
            .field("admitted", &self.admitted.load(Relaxed))
            .field("capacity", &self.capacity)
            .field("queued", &self.queued.load(Relaxed))
            .finish_non_exhaustive()
    }
}
