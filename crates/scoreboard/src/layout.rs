//! The `#[repr(C)]` structures that live in the shared mapping: only atomics, so an all-zero page
//! is a valid, empty scoreboard, and every process can read and write without locks.

use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};

use crate::{BATCH_BUCKETS, DURATION_BUCKETS_NS, ROUTES, STAGES, STATUS_CODES};

/// Longest boot error kept, in bytes.
pub const BOOT_ERROR_MAX: usize = 1024;

/// Value of `Header::magic` once the arbiter has initialised the mapping.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"ARBSCB01");

/// Global values, shared by all slots.
#[repr(C, align(64))]
#[derive(Debug)]
pub(crate) struct Header {
    pub magic: AtomicU64,
    pub capacity: AtomicU64,
    pub worker_restarts: AtomicU64,
}

/// A histogram: non-cumulative counts per bucket (the last is `+Inf`), the count and the sum.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Histogram<const N: usize> {
    pub buckets: [AtomicU64; N],
    pub count: AtomicU64,
    /// In the histogram's integer unit (nanoseconds for durations, items for batch sizes).
    pub sum: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    /// Adds one observation of `value` against `bounds` (N - 1 finite upper bounds, ascending).
    pub(crate) fn observe(&self, bounds: &[u64], value: u64) {
        let index = bounds
            .iter()
            .position(|&b| value <= b)
            .unwrap_or(bounds.len());
        self.buckets[index.min(N - 1)].fetch_add(1, Relaxed);
        self.sum.fetch_add(value, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    pub(crate) fn clear(&self) {
        for b in &self.buckets {
            b.store(0, Relaxed);
        }
        self.count.store(0, Relaxed);
        self.sum.store(0, Relaxed);
    }
}

/// Buckets of a duration histogram: the finite bounds plus `+Inf`.
pub(crate) const DURATION_SLOTS: usize = DURATION_BUCKETS_NS.len() + 1;
/// Buckets of the batch-size histogram: the finite bounds plus `+Inf`.
pub(crate) const BATCH_SLOTS: usize = BATCH_BUCKETS.len() + 1;
/// Status columns: the known codes plus "other".
pub(crate) const STATUS_SLOTS: usize = STATUS_CODES.len() + 1;

/// One worker's slot. Aligned to a cache line so two workers never write the same line.
#[repr(C, align(64))]
#[derive(Debug)]
pub(crate) struct Slot {
    pub state: AtomicU32,
    pub pid: AtomicU32,
    pub generation: AtomicU64,
    /// CLOCK_MONOTONIC nanoseconds of the last heartbeat.
    pub heartbeat_ns: AtomicU64,
    pub requests_served: AtomicU64,
    pub queue_depth: AtomicI64,
    pub in_flight: AtomicI64,
    pub model_load_ns: AtomicU64,
    pub requests: [[AtomicU64; STATUS_SLOTS]; ROUTES],
    pub request_duration: [Histogram<DURATION_SLOTS>; ROUTES],
    pub stage_duration: [Histogram<DURATION_SLOTS>; STAGES],
    pub batch_size: Histogram<BATCH_SLOTS>,
    /// Length of the boot error in bytes; written after the bytes, with Release.
    pub boot_error_len: AtomicU32,
    pub boot_error: [AtomicU8; BOOT_ERROR_MAX],
}

impl Slot {
    /// Zeroes every counter, histogram and gauge, and the boot error.
    pub(crate) fn clear_metrics(&self) {
        self.requests_served.store(0, Relaxed);
        self.queue_depth.store(0, Relaxed);
        self.in_flight.store(0, Relaxed);
        self.model_load_ns.store(0, Relaxed);
        for row in &self.requests {
            for c in row {
                c.store(0, Relaxed);
            }
        }
        for h in &self.request_duration {
            h.clear();
        }
        for h in &self.stage_duration {
            h.clear();
        }
        self.batch_size.clear();
        self.boot_error_len.store(0, Relaxed);
    }
}
