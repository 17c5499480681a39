//! Admission: a request takes a [`Permit`] from its headers, before its body is read (a refusal
//! then costs no body; a slow sender is bounded by the minimum data rate and the body timeout),
//! and keeps it while its body arrives and it is prepared, queued and run. When every place is
//! taken the next request is refused at once, so the queue never grows without bound and its
//! channel is never full, unless a place is held by a request whose body is still arriving past
//! a grace: that place goes to the new request and the slow one is answered 503, so clients that
//! send their bodies just above the minimum rate cannot hold every place until the body timeout.
//! Before it is decoded, a request also waits for a place among the images prepared ahead of
//! the model, given back when its batch starts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::counters::Counters;
use super::error::InferenceError;

/// A place in the pipeline, held from admission until the job is answered (or dropped).
#[derive(Debug)]
pub struct Permit {
    counters: Arc<Counters>,
    /// Counted in `Counters::preparing`.
    preparing: bool,
    /// A place among the images prepared ahead of the model, given back when the job's batch
    /// starts.
    ahead: Option<OwnedSemaphorePermit>,
    /// While its body arrives, when slow bodies may be overtaken: its entry in
    /// `Counters::readers`.
    reading: Option<Arc<Reader>>,
}

/// An admitted request whose body is still arriving.
#[derive(Debug)]
pub(super) struct Reader {
    since: Instant,
    /// Set, under the readers' lock, once its place went to a newer request.
    overtaken: AtomicBool,
    /// Woken when it is overtaken.
    woken: Notify,
}

impl Permit {
    /// Takes a place, or refuses with [`InferenceError::Overloaded`] when all are taken. With
    /// `overtake_after`, the request counts as reading its body until [`Permit::body_arrived`],
    /// and when every place is taken the oldest request still reading its body after that long
    /// gives its place to this one ([`Permit::overtaken`] then ends for it).
    pub(super) fn admit(
        counters: &Arc<Counters>,
        overtake_after: Option<Duration>,
    ) -> Result<Permit, InferenceError> {
        let mut current = counters.admitted.load(Relaxed);
        loop {
            if current >= counters.capacity {
                return match overtake_after {
                    Some(after) => Permit::overtake(counters, after),
                    None => Err(InferenceError::Overloaded),
                };
            }
            match counters
                .admitted
                .compare_exchange_weak(current, current + 1, Relaxed, Relaxed)
            {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        let mut permit = Permit {
            counters: Arc::clone(counters),
            preparing: false,
            ahead: None,
            reading: None,
        };
        if overtake_after.is_some() {
            permit.reading = Some(start_reading(&mut lock(counters)));
        }
        Ok(permit)
    }

    /// Takes the place of the oldest request still reading its body after `after`, if any: the
    /// count of places out stays the same, the place changes hands.
    fn overtake(counters: &Arc<Counters>, after: Duration) -> Result<Permit, InferenceError> {
        let mut readers = lock(counters);
        // Oldest first: readers are pushed as they are admitted.
        let slow = readers.first().filter(|r| r.since.elapsed() >= after);
        let Some(slow) = slow.cloned() else {
            return Err(InferenceError::Overloaded);
        };
        readers.remove(0);
        slow.overtaken.store(true, Relaxed);
        slow.woken.notify_one();
        let mut permit = Permit {
            counters: Arc::clone(counters),
            preparing: false,
            ahead: None,
            reading: None,
        };
        permit.reading = Some(start_reading(&mut readers));
        Ok(permit)
    }

    /// Ends once a newer request has taken this one's place while its body was still
    /// arriving (never, when it is not reading or slow bodies are not overtaken): the caller
    /// stops reading and answers [`InferenceError::Overtaken`].
    pub async fn overtaken(&self) {
        let Some(reader) = &self.reading else {
            return std::future::pending().await;
        };
        loop {
            let woken = reader.woken.notified();
            if reader.overtaken.load(Relaxed) {
                return;
            }
            woken.await;
        }
    }

    /// Its body has arrived: it keeps its place from now on. Fails if the place went to a newer
    /// request first.
    pub fn body_arrived(&mut self) -> Result<(), InferenceError> {
        let Some(reader) = self.reading.take() else {
            return Ok(());
        };
        let mut readers = lock(&self.counters);
        if reader.overtaken.load(Relaxed) {
            // Keep it: the place is no longer this permit's to give back.
            drop(readers);
            self.reading = Some(reader);
            return Err(InferenceError::Overtaken);
        }
        readers.retain(|r| !Arc::ptr_eq(r, &reader));
        Ok(())
    }

    /// Waits for a place among the images prepared ahead of the model (`ahead`'s permits), and
    /// counts the request as being prepared until it is queued.
    pub(super) async fn before_preparing(
        &mut self,
        ahead: &Arc<Semaphore>,
    ) -> Result<(), InferenceError> {
        self.body_arrived()?;
        let place = Arc::clone(ahead)
            .acquire_owned()
            .await
            .map_err(|_| InferenceError::ShuttingDown)?;
        self.ahead = Some(place);
        if !self.preparing {
            self.preparing = true;
            self.counters.preparing.fetch_add(1, Relaxed);
        }
        Ok(())
    }

    /// The request is prepared and about to be queued: no longer counted as being prepared.
    pub(super) fn prepared(&mut self) {
        if self.preparing {
            self.preparing = false;
            self.counters.preparing.fetch_sub(1, Relaxed);
        }
    }

    /// The job's batch starts: its place ahead of the model goes to the next image to prepare.
    pub(super) fn batch_started(&mut self) {
        self.ahead = None;
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(reader) = self.reading.take() {
            let mut readers = lock(&self.counters);
            if reader.overtaken.load(Relaxed) {
                // Its place went to the request that overtook it.
                return;
            }
            readers.retain(|r| !Arc::ptr_eq(r, &reader));
        }
        self.counters.admitted.fetch_sub(1, Relaxed);
        self.prepared();
    }
}

/// Counts a request as reading its body, from now.
fn start_reading(readers: &mut Vec<Arc<Reader>>) -> Arc<Reader> {
    let reader = Arc::new(Reader {
        since: Instant::now(),
        overtaken: AtomicBool::new(false),
        woken: Notify::new(),
    });
    readers.push(Arc::clone(&reader));
    reader
}

fn lock(counters: &Counters) -> std::sync::MutexGuard<'_, Vec<Arc<Reader>>> {
    counters
        .readers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
