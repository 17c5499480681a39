//! The inference thread and its bounded queue, with dynamic batching.
//!
//! One `std::thread` owns the [`Backend`] (the model). Requests reach it through a bounded
//! channel of jobs, each with a `oneshot` reply (`queue.rs`). The thread takes the first job, then
//! keeps taking queued jobs until the batch holds `max_batch_size` images; it waits up to
//! `max_delay` for more only while other requests are still being preprocessed (so a lone request
//! never waits for company that is not coming). Jobs whose client has gone (the reply receiver
//! was dropped) are skipped, never computed (`run.rs`).
//!
//! # Lanes
//!
//! A backend that runs a batch on several threads may also offer *lanes* ([`Backend::lanes`]):
//! engines that run a batch on one thread each, side by side (`lanes.rs`). There is then one
//! inference thread per lane. They take turns at the queue; each takes its share of what is
//! waiting (split evenly between the idle lanes, up to `max_batch_size`) and runs it on its own
//! lane, beside the others. A request that is all there is to do (nothing else queued, being
//! preprocessed or running) runs on the backend itself, on every thread, so a lone request is
//! answered as fast as one all-thread inference allows; no lane starts while such a run is going,
//! so the cores are never oversubscribed. On a CPU, lanes serve more images per second under load
//! than one batch on all threads: the threads of one batch wait for each other at every layer,
//! and a thread that loses its core for a moment (to a decoding thread) holds the others up. The
//! lanes load on a thread of their own once the backend is up: until they are ready, the backend
//! serves alone, so a worker (and a replacement for a dead one) answers as soon as its first
//! session is loaded.
//!
//! # Admission
//!
//! A request takes a [`Permit`] from its headers, before its body is read (so that a refusal
//! costs no body: the service's `admitted_body`), and keeps it while its body arrives and it is
//! preprocessed, queued and run; when `queue_capacity + preprocess_threads` permits are out, the next request
//! is refused at once (`admission.rs`). Preprocessing runs at most two batches ahead of the model
//! (of each lane): a request waits for a place among the prepared images
//! ([`InferenceQueue::before_preparing`]) before it is decoded, and gives it back when its batch
//! starts. Images decoded further ahead would only wait in the queue, and decoding them takes the
//! cores from the model (`docs/defaults.md` has the measurement).
//!
//! Every way the queue can fail a request is an [`InferenceError`]; the worker's `ApiError`
//! gives each its HTTP status.

mod admission;
mod backend;
mod counters;
mod error;
mod lanes;
mod queue;
mod run;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arbiter_infer::InferError;
use arbiter_scoreboard::ModelRef;
use tokio::sync::Semaphore;

pub use admission::Permit;
pub use backend::{Backend, LaneLoader, ModelInfo};
pub use error::{InferenceError, StartError};
pub use queue::{Input, JobOutput};

use counters::Counters;
use queue::Job;

use crate::options::Batching;

/// The sending side of the inference queue, shared by all request handlers.
#[derive(Debug)]
pub struct InferenceQueue {
    tx: SyncSender<Job>,
    counters: Arc<Counters>,
    info: ModelInfo,
    /// Places for images prepared ahead of the model: two batches' worth per lane.
    ahead: Arc<Semaphore>,
}

/// The inference thread, to wait for once the queue's senders are gone.
#[derive(Debug)]
pub struct InferenceThread {
    handle: Mutex<Option<JoinHandle<()>>>,
    counters: Arc<Counters>,
}

impl InferenceThread {
    /// Waits up to `timeout` for the thread to finish (after every sender was dropped).
    pub fn join(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let Ok(mut guard) = self.handle.lock() else {
            return false;
        };
        let Some(handle) = guard.take() else {
            return true;
        };
        while !handle.is_finished() {
            if Instant::now() >= deadline {
                *guard = Some(handle);
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        handle.join().is_ok()
    }

    /// How long the oldest model run going on has been going, if one is.
    pub fn busy_for(&self) -> Option<Duration> {
        let c = &self.counters;
        let since = c
            .busy_since
            .iter()
            .map(|b| b.load(Relaxed))
            .filter(|&since| since != 0)
            .min()?;
        Some(Duration::from_nanos(c.now_ns().saturating_sub(since)))
    }

    /// Whether the thread has ended (all senders dropped, or it died).
    pub fn is_finished(&self) -> bool {
        self.handle
            .lock()
            .map(|h| h.as_ref().is_none_or(JoinHandle::is_finished))
            .unwrap_or(true)
    }
}

impl InferenceQueue {
    /// Starts the inference thread of one model, which calls `load` and then serves the queue,
    /// counting into the model's block of the scoreboard (`stats`); returns once
    /// the model is loaded (calling `waiting` every 250 ms until then), or with why it did not.
    pub fn start<B, F>(
        load: F,
        batching: &Batching,
        preprocess_threads: usize,
        stats: ModelRef,
        mut waiting: impl FnMut(),
    ) -> Result<(InferenceQueue, InferenceThread), StartError>
    where
        B: Backend,
        F: FnOnce() -> Result<B, InferError> + Send + 'static,
    {
        let capacity = batching.queue_capacity.max(1) + preprocess_threads.max(1);
        let counters = Arc::new(Counters::new(capacity, stats));
        let (tx, rx) = mpsc::sync_channel::<Job>(capacity);
        let (boot_tx, boot_rx) = mpsc::channel::<Result<ModelInfo, StartError>>();
        let thread_counters = Arc::clone(&counters);
        let ahead = Arc::new(Semaphore::new(2 * batching.max_batch_size.max(1)));
        let thread_ahead = Arc::clone(&ahead);
        let batching = batching.clone();
        let handle = std::thread::Builder::new()
            .name("inference".to_owned())
            .spawn(move || {
                let loaded = match catch_unwind(AssertUnwindSafe(load)) {
                    Ok(loaded) => loaded.map_err(StartError::Load),
                    Err(_) => Err(StartError::LoaderPanicked),
                };
                let mut backend = match loaded {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = boot_tx.send(Err(e));
                        return;
                    }
                };
                let lanes =
                    catch_unwind(AssertUnwindSafe(|| backend.lanes())).unwrap_or_else(|_| {
                        tracing::warn!("the model's lanes panicked; one batch at a time");
                        None
                    });
                let info = backend.info();
                if boot_tx.send(Ok(info.clone())).is_err() {
                    return;
                }
                drop(boot_tx);
                lanes::serve(
                    backend,
                    lanes,
                    &info,
                    &batching,
                    rx,
                    &thread_counters,
                    &thread_ahead,
                );
            })
            .map_err(StartError::Spawn)?;
        let info = loop {
            match boot_rx.recv_timeout(Duration::from_millis(250)) {
                Ok(Ok(info)) => break info,
                Ok(Err(e)) => {
                    let _ = handle.join();
                    return Err(e);
                }
                Err(RecvTimeoutError::Timeout) => waiting(),
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = handle.join();
                    return Err(StartError::Ended);
                }
            }
        };
        let thread = InferenceThread {
            handle: Mutex::new(Some(handle)),
            counters: Arc::clone(&counters),
        };
        let queue = InferenceQueue {
            tx,
            counters,
            info,
            ahead,
        };
        Ok((queue, thread))
    }

    /// The model's shapes and names.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Takes a place in the pipeline, or refuses with [`InferenceError::Overloaded`]. With
    /// `overtake_after`, a request still reading its body after that long when every place is
    /// taken gives its place to this one (see the admission module).
    pub fn admit(&self, overtake_after: Option<Duration>) -> Result<Permit, InferenceError> {
        Permit::admit(&self.counters, overtake_after)
    }

    /// Waits for a place among the images prepared ahead of the model (two batches' worth per
    /// lane), before decoding or parsing a request's input. Decoding far ahead of the model only
    /// takes the cores from it: the images would wait in the queue anyway.
    pub async fn before_preparing(&self, permit: &mut Permit) -> Result<(), InferenceError> {
        permit.before_preparing(&self.ahead).await
    }

    /// Runs `n` preprocessed images (`n * image_len` floats, or one image of the model's input
    /// size) with the batch they join, and returns their outputs. Dropping the future before the
    /// batch starts cancels the job.
    pub async fn run(
        &self,
        permit: Permit,
        input: Input,
        n: usize,
    ) -> Result<JobOutput, InferenceError> {
        let reply = queue::submit(&self.tx, &self.counters, &self.info, permit, input, n)?;
        reply.await.unwrap_or(Err(InferenceError::Stopped))
    }
}

#[cfg(test)]
mod tests;
