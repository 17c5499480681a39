//! The `#[repr(C)]` structures that live in the shared mapping: only atomics, so an all-zero page
//! is a valid, empty scoreboard, and every process can read and write without locks.
//!
//! A slot holds the worker's own values, one [`Metrics`] block for requests that name no model
//! (`/healthz`, `/metrics`, unknown paths), and [`MAX_MODELS`] [`ModelStats`] blocks, one per
//! model the worker serves, each with the model's name, version and its own [`Metrics`].

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU32, AtomicU64};

use crate::{BATCH_BUCKETS, DURATION_BUCKETS_NS, ROUTES, STAGES, STATUS_CODES};

/// Longest boot error kept, in bytes.
pub const BOOT_ERROR_MAX: usize = 1024;

/// Most models one worker can serve: each slot has this many per-model blocks.
pub const MAX_MODELS: usize = 16;

/// Longest model name kept, in bytes.
pub const MODEL_NAME_MAX: usize = 64;

/// Longest model version kept, in bytes.
pub const MODEL_VERSION_MAX: usize = 32;

/// Value of `Header::magic` once the arbiter has initialised the mapping.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"ARBSCB02");

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

/// A UTF-8 string of at most `N` bytes. Length 0 (the all-zero value) is the empty string.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Text<const N: usize> {
    /// Length in bytes; written after the bytes, with Release.
    pub len: AtomicU32,
    pub bytes: [AtomicU8; N],
}

impl<const N: usize> Text<N> {
    /// Stores `text`, truncated to `N` bytes at a char boundary.
    ///
    /// A reader racing a rewrite may see a mix of old and new bytes; texts are written while the
    /// worker boots, before anyone reads them for a purpose that matters.
    pub(crate) fn store(&self, text: &str) {
        let mut end = text.len().min(N);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        self.len.store(0, Relaxed);
        for (cell, byte) in self.bytes.iter().zip(&text.as_bytes()[..end]) {
            cell.store(*byte, Relaxed);
        }
        // Release: a reader that sees the length also sees the bytes.
        self.len.store(end as u32, Release);
    }

    /// The stored string ("" if none).
    pub(crate) fn load(&self) -> String {
        let len = (self.len.load(Acquire) as usize).min(N);
        let bytes: Vec<u8> = self.bytes[..len].iter().map(|b| b.load(Relaxed)).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Whether no string is stored.
    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Acquire) == 0
    }

    pub(crate) fn clear(&self) {
        self.len.store(0, Release);
    }
}

/// Buckets of a duration histogram: the finite bounds plus `+Inf`.
pub(crate) const DURATION_SLOTS: usize = DURATION_BUCKETS_NS.len() + 1;
/// Buckets of the batch-size histogram: the finite bounds plus `+Inf`.
pub(crate) const BATCH_SLOTS: usize = BATCH_BUCKETS.len() + 1;
/// Status columns: the known codes plus "other".
pub(crate) const STATUS_SLOTS: usize = STATUS_CODES.len() + 1;

/// The column of `status` in a requests row: its place in [`STATUS_CODES`], or the last ("other").
pub(crate) fn status_column(status: u16) -> usize {
    STATUS_CODES
        .iter()
        .position(|&c| c == status)
        .unwrap_or(STATUS_SLOTS - 1)
}

/// Request counters, histograms and gauges: once per slot for requests that name no model, and
/// once per model.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Metrics {
    pub requests: [[AtomicU64; STATUS_SLOTS]; ROUTES],
    pub request_duration: [Histogram<DURATION_SLOTS>; ROUTES],
    pub stage_duration: [Histogram<DURATION_SLOTS>; STAGES],
    pub batch_size: Histogram<BATCH_SLOTS>,
    pub queue_depth: AtomicI64,
    pub model_load_ns: AtomicU64,
}

impl Metrics {
    /// Counts one request in its route and status column, and its duration.
    pub(crate) fn record_request(&self, route: usize, status: u16, duration_ns: u64) {
        self.requests[route][status_column(status)].fetch_add(1, Relaxed);
        self.request_duration[route].observe(&DURATION_BUCKETS_NS, duration_ns);
    }

    pub(crate) fn clear(&self) {
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
        self.queue_depth.store(0, Relaxed);
        self.model_load_ns.store(0, Relaxed);
    }
}

/// One model's block in a slot: its name and version (empty name: unused) and its metrics.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct ModelStats {
    pub metrics: Metrics,
    pub name: Text<MODEL_NAME_MAX>,
    pub version: Text<MODEL_VERSION_MAX>,
}

impl ModelStats {
    /// Clears the name, the version and every metric.
    pub(crate) fn clear(&self) {
        self.name.clear();
        self.version.clear();
        self.metrics.clear();
    }
}

/// One worker's slot. Aligned to a cache line so two workers never write the same line.
#[repr(C, align(64))]
#[derive(Debug)]
pub(crate) struct Slot {
    pub state: AtomicU32,
    pub pid: AtomicU32,
    pub generation: AtomicU64,
    /// CLOCK_MONOTONIC nanoseconds of the last heartbeat.
    pub heartbeat_ns: AtomicU64,
    /// Every request answered, with or without a model: what the arbiter recycles workers by.
    pub requests_served: AtomicU64,
    pub in_flight: AtomicI64,
    /// Requests that name no model (and, until the worker sets its models, all of them).
    pub metrics: Metrics,
    pub models: [ModelStats; MAX_MODELS],
    pub boot_error: Text<BOOT_ERROR_MAX>,
}

impl Slot {
    /// Zeroes every counter, histogram and gauge, the model names and the boot error.
    pub(crate) fn clear_metrics(&self) {
        self.requests_served.store(0, Relaxed);
        self.in_flight.store(0, Relaxed);
        self.metrics.clear();
        for m in &self.models {
            m.clear();
        }
        self.boot_error.clear();
    }
}
