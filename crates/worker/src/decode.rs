//! The threads that prepare the models' requests (image decode and resize, tensor JSON parsing):
//! one pool per nice value they run at, `preprocess_threads` threads each. A model's requests are
//! prepared at its own nice value (`model.nice`) or the HTTP thread's (`server.http_nice`),
//! whichever is higher (the service's `decode_nice`): a bulk model's decode goes behind the
//! others' with its inference, and no decode goes ahead of the thread that reads the requests.
//! With the defaults there is one pool, at the HTTP thread's value.
//!
//! A thread inherits the nice value of the thread that starts it and, unprivileged, can raise its
//! own but never lower it: the pools are started with the service, before the HTTP thread raises
//! its own (`server::serve`), and each of their threads then sets its model's value.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, oneshot};

use crate::error::ApiError;

/// One piece of work and where its result goes.
type Job = Box<dyn FnOnce() + Send>;

/// `preprocess_threads` threads at one nice value, taking work in the order it was submitted.
pub(crate) struct DecodePool {
    nice: i32,
    jobs: Sender<Job>,
    /// One place per thread: work waits here (and can be abandoned) until a thread is free.
    places: Arc<Semaphore>,
}

impl std::fmt::Debug for DecodePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodePool")
            .field("nice", &self.nice)
            .field("free", &self.places.available_permits())
            .finish()
    }
}

impl DecodePool {
    /// Starts `threads` threads (at least one) at `nice`, named `decode` (nice 0) or `decode-N`.
    /// Fails only if the system refuses a thread. The threads end once the pool is dropped and
    /// their work is done.
    pub(crate) fn start(threads: usize, nice: i32) -> std::io::Result<DecodePool> {
        let threads = threads.max(1);
        let (jobs, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let name = if nice == 0 {
            "decode".to_owned()
        } else {
            format!("decode-{nice}")
        };
        for _ in 0..threads {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    set_thread_nice(nice, "a decode thread");
                    work(&rx);
                })?;
        }
        Ok(DecodePool {
            nice,
            jobs,
            places: Arc::new(Semaphore::new(threads)),
        })
    }

    /// The nice value of its threads.
    pub(crate) fn nice(&self) -> i32 {
        self.nice
    }

    /// Runs `work` on one of the pool's threads once one is free. A request abandoned while its
    /// work runs still holds that thread's place until the work ends; a panic in `work` is a
    /// request that could not be decoded.
    pub(crate) async fn run<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        F: FnOnce() -> Result<T, ApiError> + Send + 'static,
        T: Send + 'static,
    {
        let stopping = || ApiError::Unavailable("the worker is shutting down".to_owned());
        let place = Arc::clone(&self.places)
            .acquire_owned()
            .await
            .map_err(|_| stopping())?;
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let done = catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|_| {
                tracing::error!("decoding or parsing panicked");
                Err(ApiError::BadRequest(
                    "the request's content could not be decoded".to_owned(),
                ))
            });
            drop(place);
            let _ = tx.send(done);
        });
        self.jobs.send(job).map_err(|_| stopping())?;
        rx.await.map_err(|_| stopping())?
    }
}

/// A pool thread's loop: one job at a time until every sender is gone.
fn work(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

/// Sets the calling thread's nice value (0 leaves it as it is); threads it starts from then on
/// inherit it. `whose` names the thread in the warning logged when the system refuses (lowering
/// a nice value needs privileges).
#[allow(unsafe_code)]
pub(crate) fn set_thread_nice(nice: i32, whose: &str) {
    if nice == 0 {
        return;
    }
    // SAFETY: setpriority takes plain integers and touches no memory of ours; on Linux
    // PRIO_PROCESS with who = 0 is the calling thread.
    let rc = unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, 0, nice) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        tracing::warn!(error = %e, nice, "cannot set the nice value of {whose}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's nice value, from `/proc/thread-self/stat` (field 19).
    fn my_nice() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // The name (field 2) is in parentheses and may hold spaces: count after it.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        after.split(' ').nth(16).unwrap().parse().unwrap()
    }

    #[tokio::test]
    async fn work_runs_on_threads_at_the_pools_nice_value() {
        for nice in [0, 7] {
            let pool = DecodePool::start(2, nice).unwrap();
            assert_eq!(pool.nice(), nice);
            let (ran, name) = pool
                .run(|| {
                    let name = std::thread::current().name().map(str::to_owned);
                    Ok((my_nice(), name))
                })
                .await
                .unwrap();
            assert_eq!(ran, nice);
            let expected = if nice == 0 { "decode" } else { "decode-7" };
            assert_eq!(name.as_deref(), Some(expected));
        }
    }

    #[tokio::test]
    async fn a_panic_is_an_undecodable_request_and_the_pool_goes_on() {
        let pool = DecodePool::start(1, 0).unwrap();
        let failed = pool.run(|| -> Result<(), ApiError> { panic!("bad bytes") });
        assert!(matches!(failed.await, Err(ApiError::BadRequest(_))));
        assert_eq!(pool.run(|| Ok(42)).await.unwrap(), 42);
    }

    #[tokio::test]
    async fn no_more_work_runs_at_once_than_the_pool_has_threads() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let pool = Arc::new(DecodePool::start(2, 0).unwrap());
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut all = Vec::new();
        for _ in 0..8 {
            let (pool, running, most) =
                (Arc::clone(&pool), Arc::clone(&running), Arc::clone(&most));
            all.push(tokio::spawn(async move {
                pool.run(move || {
                    let now = running.fetch_add(1, SeqCst) + 1;
                    most.fetch_max(now, SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    running.fetch_sub(1, SeqCst);
                    Ok(())
                })
                .await
            }));
        }
        for task in all {
            task.await.unwrap().unwrap();
        }
        assert_eq!(most.load(SeqCst), 2);
    }
}
