//! Admission: a request takes a [`Permit`] from its headers, before its body is read (a refusal
//! then costs no body; a slow sender is bounded by the minimum data rate and the body timeout),
//! and keeps it while its body arrives and it is prepared, queued and run. When every place is
//! taken the next request is refused at once, so the queue never grows without bound and its
//! channel is never full. Before it is decoded, a request also waits for a place among the
//! images prepared ahead of the model, given back when its batch starts.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
}

impl Permit {
    /// Takes a place, or refuses with [`InferenceError::Overloaded`] when all are taken.
    pub(super) fn admit(counters: &Arc<Counters>) -> Result<Permit, InferenceError> {
        let mut current = counters.admitted.load(Relaxed);
        loop {
            if current >= counters.capacity {
                return Err(InferenceError::Overloaded);
            }
            match counters
                .admitted
                .compare_exchange_weak(current, current + 1, Relaxed, Relaxed)
            {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        Ok(Permit {
            counters: Arc::clone(counters),
            preparing: false,
            ahead: None,
        })
    }

    /// Waits for a place among the images prepared ahead of the model (`ahead`'s permits), and
    /// counts the request as being prepared until it is queued.
    pub(super) async fn before_preparing(
        &mut self,
        ahead: &Arc<Semaphore>,
    ) -> Result<(), InferenceError> {
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
        self.counters.admitted.fetch_sub(1, Relaxed);
        self.prepared();
    }
}
