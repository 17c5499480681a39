//! The inference thread and its bounded queue, with dynamic batching.
//!
//! One `std::thread` owns the [`Backend`] (the model). Requests reach it through a bounded
//! channel of [`Job`]s, each with a `oneshot` reply. The thread takes the first job, then keeps
//! taking queued jobs until the batch holds `max_batch_size` images; it waits up to `max_delay`
//! for more only while other requests are still being preprocessed (so a lone request never
//! waits for company that is not coming). Jobs whose client has gone (the reply receiver was
//! dropped) are skipped, never computed.
//!
//! # Lanes
//!
//! A backend that runs a batch on several threads may also offer *lanes* ([`Backend::lanes`]):
//! engines that run a batch on one thread each, side by side. There is then one inference thread
//! per lane. They take turns at the queue; each takes its share of what is waiting (split evenly
//! between the idle lanes, up to `max_batch_size`) and runs it on its own lane, beside the
//! others. A request that is all there is to do (nothing else queued, being preprocessed or
//! running) runs on the backend itself, on every thread, so a lone request is answered as fast
//! as one all-thread inference allows; no lane starts while such a run is going, so the cores
//! are never oversubscribed. On a CPU, lanes serve more images per second under load than one
//! batch on all threads: the threads of one batch wait for each other at every layer, and a
//! thread that loses its core for a moment (to a decoding thread) holds the others up. The lanes
//! load on a thread of their own once the backend is up: until they are ready, the backend
//! serves alone, so a worker (and a replacement for a dead one) answers as soon as its first
//! session is loaded.
//!
//! Preprocessing runs at most two batches ahead of the model (of each lane): a request waits for
//! a place among the prepared images ([`InferenceQueue::before_preparing`]) before it is decoded,
//! and gives it back when its batch starts. Decoding further ahead would only take the cores from
//! the model (measured with 64 clients posting 12-megapixel photos: 7.6 requests/s against 10.5
//! with 8).
//!
//! Admission is counted here too: a request takes a [`Permit`] once its body is read (a slow
//! client does not hold a place while it sends), and keeps it while it is preprocessed, queued
//! and run; when `queue_capacity + preprocess_threads` permits are out, the next request is
//! refused at once (503), so the queue never grows without bound and the channel itself is
//! never full.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arbiter_scoreboard::{SlotRef, Stage};
use arbiter_vision::RgbImage;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::error::ApiError;
use crate::options::Batching;

/// What the model can do, as the HTTP layer needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// Name of the input tensor (KServe metadata).
    pub input_name: String,
    /// Name of the output tensor.
    pub output_name: String,
    /// Input width.
    pub width: u32,
    /// Input height.
    pub height: u32,
    /// Outputs per image.
    pub num_classes: usize,
    /// Largest batch one [`Backend::run`] call accepts.
    pub max_batch: usize,
    /// Time the model took to load and warm up.
    pub load_time: Duration,
}

impl ModelInfo {
    /// Floats per image: `3 * height * width`.
    pub fn image_len(&self) -> usize {
        3 * self.width as usize * self.height as usize
    }
}

/// An inference engine owned by the inference thread: the real model, or a fake in tests.
pub trait Backend: Send + 'static {
    /// The model's shapes and names.
    fn info(&self) -> ModelInfo;
    /// Runs `n` CHW images laid end to end (`n <= info().max_batch`); returns `n * num_classes`
    /// raw outputs.
    fn run(&mut self, batch: &[f32], n: usize) -> Result<Vec<f32>, String>;

    /// How to load engines that each run a batch on one thread, to run batches side by side
    /// under load (see the module's "Lanes"). Called once, on the inference thread, after
    /// loading; the loader then runs on a thread of its own while the backend already serves
    /// (alone, on all its threads), so that a worker is ready as soon as its first session is.
    /// `None`, the default, when this backend runs one batch at a time.
    fn lanes(&mut self) -> Option<LaneLoader<Self>>
    where
        Self: Sized,
    {
        None
    }
}

/// Loads a backend's lanes (see [`Backend::lanes`]).
pub type LaneLoader<B> = Box<dyn FnOnce() -> Result<Vec<B>, String> + Send>;

/// The answer to one job: its outputs and how long it spent in each stage.
#[derive(Debug, Clone, PartialEq)]
pub struct JobOutput {
    /// `n * num_classes` raw outputs.
    pub outputs: Vec<f32>,
    /// Images in the model run(s) this job was part of.
    pub batch_size: usize,
}

type Reply = oneshot::Sender<Result<JobOutput, String>>;

/// What a request queues for the model.
#[derive(Debug)]
pub enum Input {
    /// `n * image_len` floats, ready (KServe tensors).
    Tensor(Vec<f32>),
    /// One image already resized to the model's input, as RGB bytes: normalised into the batch
    /// when it runs, so a queued image holds a quarter of the memory its floats would.
    Image(RgbImage),
}

struct Job {
    input: Input,
    n: usize,
    enqueued: Instant,
    reply: Reply,
    permit: Permit,
}

/// The most inference threads (lanes) a worker runs.
const MAX_LANES: usize = 16;

struct Shared {
    /// Permits out: requests admitted and not yet taken by the inference thread.
    admitted: AtomicUsize,
    capacity: usize,
    /// Jobs in the channel.
    queued: AtomicUsize,
    /// Requests being preprocessed (holding a place ahead of the model, not yet queued): the
    /// batcher waits for them, up to `max_delay`.
    preparing: AtomicUsize,
    /// Per lane: monotonic ns since `epoch` when its current batch started; 0 when idle.
    busy_since: [AtomicU64; MAX_LANES],
    epoch: Instant,
    slot: SlotRef,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

/// A place in the pipeline, held from admission until the job is answered (or dropped).
#[derive(Debug)]
pub struct Permit {
    shared: Arc<Shared>,
    /// Counted in `Shared::preparing`.
    preparing: bool,
    /// A place among the images prepared ahead of the model, given back when the job's batch
    /// starts.
    ahead: Option<OwnedSemaphorePermit>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("admitted", &self.admitted.load(Relaxed))
            .field("capacity", &self.capacity)
            .field("queued", &self.queued.load(Relaxed))
            .finish_non_exhaustive()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let s = &self.shared;
        s.admitted.fetch_sub(1, Relaxed);
        if self.preparing {
            s.preparing.fetch_sub(1, Relaxed);
        }
    }
}

/// The sending side of the inference queue, shared by all request handlers.
#[derive(Debug)]
pub struct InferenceQueue {
    tx: SyncSender<Job>,
    shared: Arc<Shared>,
    info: ModelInfo,
    /// Places for images prepared ahead of the model: two batches' worth.
    ahead: Arc<Semaphore>,
}

/// The inference thread, to wait for once the queue's senders are gone.
#[derive(Debug)]
pub struct InferenceThread {
    handle: Mutex<Option<JoinHandle<()>>>,
    shared: Arc<Shared>,
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
        let s = &self.shared;
        let since = s
            .busy_since
            .iter()
            .map(|b| b.load(Relaxed))
            .filter(|&since| since != 0)
            .min()?;
        Some(Duration::from_nanos(s.now_ns().saturating_sub(since)))
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
    /// Starts the inference thread, which calls `load` and then serves the queue; returns once
    /// the model is loaded (calling `waiting` every 250 ms until then), or with `load`'s error.
    pub fn start<B, F>(
        load: F,
        batching: &Batching,
        preprocess_threads: usize,
        slot: SlotRef,
        mut waiting: impl FnMut(),
    ) -> Result<(InferenceQueue, InferenceThread), String>
    where
        B: Backend,
        F: FnOnce() -> Result<B, String> + Send + 'static,
    {
        let capacity = batching.queue_capacity.max(1) + preprocess_threads.max(1);
        let shared = Arc::new(Shared {
            admitted: AtomicUsize::new(0),
            capacity,
            queued: AtomicUsize::new(0),
            preparing: AtomicUsize::new(0),
            busy_since: std::array::from_fn(|_| AtomicU64::new(0)),
            epoch: Instant::now(),
            slot,
        });
        let (tx, rx) = mpsc::sync_channel::<Job>(capacity);
        let (boot_tx, boot_rx) = mpsc::channel::<Result<ModelInfo, String>>();
        let thread_shared = Arc::clone(&shared);
        let ahead = Arc::new(Semaphore::new(2 * batching.max_batch_size.max(1)));
        let thread_ahead = Arc::clone(&ahead);
        let batching = batching.clone();
        let handle = std::thread::Builder::new()
            .name("inference".to_owned())
            .spawn(move || {
                let loaded = catch_unwind(AssertUnwindSafe(load))
                    .unwrap_or_else(|_| Err("the model loader panicked".to_owned()));
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
                serve(
                    backend,
                    lanes,
                    &info,
                    &batching,
                    rx,
                    &thread_shared,
                    &thread_ahead,
                );
            })
            .map_err(|e| format!("cannot start the inference thread: {e}"))?;
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
                    return Err("the inference thread ended while loading the model".to_owned());
                }
            }
        };
        let thread = InferenceThread {
            handle: Mutex::new(Some(handle)),
            shared: Arc::clone(&shared),
        };
        Ok((
            InferenceQueue {
                tx,
                shared,
                info,
                ahead,
            },
            thread,
        ))
    }

    /// The model's shapes and names.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Takes a place in the pipeline, or refuses with [`ApiError::Overloaded`].
    pub fn admit(&self) -> Result<Permit, ApiError> {
        let s = &self.shared;
        let mut current = s.admitted.load(Relaxed);
        loop {
            if current >= s.capacity {
                return Err(ApiError::Overloaded);
            }
            match s
                .admitted
                .compare_exchange_weak(current, current + 1, Relaxed, Relaxed)
            {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        Ok(Permit {
            shared: Arc::clone(&self.shared),
            preparing: false,
            ahead: None,
        })
    }

    /// Waits for a place among the images prepared ahead of the model (two batches' worth),
    /// before decoding or parsing a request's input. Decoding far ahead of the model only takes
    /// the cores from it: the images would wait in the queue anyway.
    pub async fn before_preparing(&self, permit: &mut Permit) -> Result<(), ApiError> {
        let place = Arc::clone(&self.ahead)
            .acquire_owned()
            .await
            .map_err(|_| ApiError::Unavailable("the worker is shutting down".to_owned()))?;
        permit.ahead = Some(place);
        if !permit.preparing {
            permit.preparing = true;
            self.shared.preparing.fetch_add(1, Relaxed);
        }
        Ok(())
    }

    /// Queues `n` preprocessed images (`n * image_len` floats, or one image of the model's
    /// input size); the receiver gets the outputs. Dropping the receiver cancels the job if it
    /// has not started.
    pub fn submit(
        &self,
        mut permit: Permit,
        input: Input,
        n: usize,
    ) -> Result<oneshot::Receiver<Result<JobOutput, String>>, ApiError> {
        let fits = match &input {
            Input::Tensor(t) => t.len() == n * self.info.image_len(),
            Input::Image(img) => {
                n == 1 && img.width == self.info.width && img.height == self.info.height
            }
        };
        if !fits {
            return Err(ApiError::Internal(format!(
                "a job of {n} image(s) does not fit the model's {}x{} input",
                self.info.width, self.info.height
            )));
        }
        let (reply, rx) = oneshot::channel();
        let s = &self.shared;
        if permit.preparing {
            permit.preparing = false;
            s.preparing.fetch_sub(1, Relaxed);
        }
        let job = Job {
            input,
            n,
            enqueued: Instant::now(),
            reply,
            permit,
        };
        let depth = s.queued.fetch_add(1, Relaxed) + 1;
        match self.tx.try_send(job) {
            Ok(()) => {
                s.slot.set_queue_depth(depth);
                Ok(rx)
            }
            Err(TrySendError::Full(_)) => {
                s.queued.fetch_sub(1, Relaxed);
                Err(ApiError::Overloaded)
            }
            Err(TrySendError::Disconnected(_)) => {
                s.queued.fetch_sub(1, Relaxed);
                Err(ApiError::Internal(
                    "the inference thread has stopped".to_owned(),
                ))
            }
        }
    }
}

/// Takes one job off the channel (blocking up to `wait`, or not at all when `None`).
fn take(rx: &Receiver<Job>, shared: &Shared, wait: Option<Duration>) -> Result<Option<Job>, ()> {
    let got = match wait {
        None => match rx.try_recv() {
            Ok(j) => Some(j),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => return Err(()),
        },
        Some(d) => match rx.recv_timeout(d) {
            Ok(j) => Some(j),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return Err(()),
        },
    };
    if got.is_some() {
        let depth = shared.queued.fetch_sub(1, Relaxed).saturating_sub(1);
        shared.slot.set_queue_depth(depth);
    }
    Ok(got)
}

/// What the lanes take turns at: the channel, and a job that did not fit the last batch.
struct Intake {
    rx: Receiver<Job>,
    carry: Option<Job>,
}

/// Which engine runs a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
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
    fn state(&self) -> std::sync::MutexGuard<'_, TrafficState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lanes not running a batch, counting the caller's.
    fn idle(&self) -> usize {
        let lanes = self.lanes.load(Relaxed);
        lanes.saturating_sub(self.state().busy).max(1)
    }

    /// Waits until no whole-backend run is going, then picks the engine: the whole backend when
    /// `lone()` says the batch is all there is to do and no lane is busy, else the lane.
    fn claim(&self, lone: impl Fn() -> bool) -> Engine {
        let mut state = self.state();
        while state.whole {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.busy += 1;
        if state.busy == 1 && lone() {
            state.whole = true;
            Engine::Whole
        } else {
            Engine::Lane
        }
    }

    /// Waits until nothing runs, then claims the whole backend (for a thread without a lane:
    /// the first, before the lanes are loaded).
    fn claim_whole(&self) -> Engine {
        let mut state = self.state();
        while state.whole || state.busy > 0 {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.busy = 1;
        state.whole = true;
        Engine::Whole
    }

    fn release(&self, engine: Engine) {
        let mut state = self.state();
        state.busy = state.busy.saturating_sub(1);
        if engine == Engine::Whole {
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
    shared: Arc<Shared>,
}

/// Serves the queue until every sender is gone and it is empty: on this thread with the whole
/// backend, and, once `loader` has loaded the lanes (on a thread of its own), with one thread per
/// lane, this one taking the first lane.
fn serve<B: Backend>(
    backend: B,
    loader: Option<LaneLoader<B>>,
    info: &ModelInfo,
    batching: &Batching,
    rx: Receiver<Job>,
    shared: &Arc<Shared>,
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
        shared: Arc::clone(shared),
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
/// waits for them to end.
fn load_lanes<B: Backend>(loader: LaneLoader<B>, all: &Arc<Lanes<B>>, ahead: &Semaphore) {
    let started = Instant::now();
    let lanes = match catch_unwind(AssertUnwindSafe(loader)) {
        Ok(Ok(lanes)) => lanes,
        Ok(Err(e)) => {
            tracing::warn!("cannot load the model's lanes, one batch at a time: {e}");
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
    let (traffic, shared) = (&all.traffic, &*all.shared);
    // The model's input, reused from batch to batch (see `run_batch`).
    let mut input = Vec::new();
    loop {
        let (batch, engine, last) = {
            let mut intake = all.intake.lock().unwrap_or_else(|p| p.into_inner());
            let Some((batch, disconnected)) = gather(&mut intake, &all.batching, traffic, shared)
            else {
                return;
            };
            let last = disconnected && intake.carry.is_none();
            if lane.is_none() && index == 0 {
                lane = all.first.lock().unwrap_or_else(|p| p.into_inner()).take();
            }
            let engine = if lane.is_some() {
                traffic.claim(|| {
                    shared.queued.load(Relaxed) == 0
                        && shared.preparing.load(Relaxed) == 0
                        && intake.carry.is_none()
                })
            } else {
                traffic.claim_whole()
            };
            (batch, engine, last)
        };
        // The claim ends as soon as the model is done, before the answers go out: the next
        // request of a client that waits for its answer must find this lane idle.
        let done = || traffic.release(engine);
        match (engine, lane.as_mut()) {
            (Engine::Lane, Some(lane)) => {
                run_batch(lane, &all.info, batch, &mut input, shared, index, done);
            }
            _ => {
                let mut whole = all.whole.lock().unwrap_or_else(|p| p.into_inner());
                run_batch(
                    &mut *whole,
                    &all.info,
                    batch,
                    &mut input,
                    shared,
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

/// Takes the next batch off the queue (blocking for its first job); `None` once every sender is
/// gone and nothing is left. With several idle lanes, takes only its share of what is waiting.
fn gather(
    intake: &mut Intake,
    batching: &Batching,
    traffic: &Traffic,
    shared: &Shared,
) -> Option<(Vec<Job>, bool)> {
    let first = loop {
        let job = match intake.carry.take() {
            Some(job) => job,
            None => match intake.rx.recv() {
                Ok(job) => {
                    let depth = shared.queued.fetch_sub(1, Relaxed).saturating_sub(1);
                    shared.slot.set_queue_depth(depth);
                    job
                }
                Err(_) => return None,
            },
        };
        if !job.reply.is_closed() {
            break job;
        }
    };
    let mut max_images = batching.max_batch_size.max(1);
    let idle = traffic.idle();
    if idle > 1 {
        let waiting = first.n + shared.queued.load(Relaxed) + shared.preparing.load(Relaxed);
        max_images = max_images.min(waiting.div_ceil(idle)).max(1);
    }
    let mut images = first.n;
    let mut batch = vec![first];
    let deadline = Instant::now() + batching.max_delay;
    let mut disconnected = false;
    while images < max_images {
        // Wait for more only while requests are on their way (being preprocessed).
        let now = Instant::now();
        let wait = if shared.preparing.load(Relaxed) > 0 && now < deadline {
            Some(deadline - now)
        } else {
            None
        };
        match take(&intake.rx, shared, wait) {
            Ok(Some(job)) if job.reply.is_closed() => {}
            Ok(Some(job)) if images + job.n > max_images => {
                intake.carry = Some(job);
                break;
            }
            Ok(Some(job)) => {
                images += job.n;
                batch.push(job);
            }
            Ok(None) if wait.is_some() => {}
            Ok(None) => break,
            Err(()) => {
                disconnected = true;
                break;
            }
        }
    }
    Some((batch, disconnected))
}

/// The largest model input an inference thread keeps for its next batch: 32 MiB, 55 images of
/// 224 x 224.
const MAX_KEPT_INPUT: usize = (32 << 20) / size_of::<f32>();

/// Runs one gathered batch (in chunks of the backend's maximum) and answers each job.
/// Calls `model_done` once the model has run (or at once if there is nothing to run), before
/// answering. The batch's floats go in `input`, kept by the caller for the next batch: a
/// 224 x 224 image's are 588 KiB, which a new allocation would map afresh and the kernel fault
/// in page by page for every request.
fn run_batch<B: Backend>(
    backend: &mut B,
    info: &ModelInfo,
    mut batch: Vec<Job>,
    input: &mut Vec<f32>,
    shared: &Shared,
    lane: usize,
    model_done: impl FnOnce(),
) {
    // A client may have left while the batch was gathered.
    batch.retain(|j| !j.reply.is_closed());
    if batch.is_empty() {
        model_done();
        return;
    }
    let started = Instant::now();
    let total: usize = batch.iter().map(|j| j.n).sum();
    let per_image = info.image_len();
    input.clear();
    input.reserve(total * per_image);
    for job in &mut batch {
        // Its place ahead of the model goes to the next image to prepare.
        job.permit.ahead = None;
        shared
            .slot
            .observe_stage(Stage::QueueWait, started.duration_since(job.enqueued));
        match std::mem::replace(&mut job.input, Input::Tensor(Vec::new())) {
            Input::Tensor(mut floats) => input.append(&mut floats),
            Input::Image(img) => {
                let at = input.len();
                input.resize(at + per_image, 0.0);
                arbiter_vision::normalize_chw(&img, &mut input[at..]);
            }
        }
    }
    let busy = &shared.busy_since[lane.min(MAX_LANES - 1)];
    busy.store(shared.now_ns(), Relaxed);
    let chunk = info.max_batch.max(1);
    let mut outputs = Vec::with_capacity(total * info.num_classes);
    let mut failure = None;
    let mut done = 0;
    while done < total {
        let n = chunk.min(total - done);
        let slice = input
            .get(done * per_image..(done + n) * per_image)
            .unwrap_or(&[]);
        let result = catch_unwind(AssertUnwindSafe(|| backend.run(slice, n)))
            .unwrap_or_else(|_| Err("the model panicked".to_owned()));
        match result {
            Ok(out) if out.len() == n * info.num_classes => outputs.extend_from_slice(&out),
            Ok(out) => {
                failure = Some(format!(
                    "the model returned {} outputs for {n} images",
                    out.len()
                ));
                break;
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
        shared.slot.observe_batch(n);
        done += n;
    }
    busy.store(0, Relaxed);
    model_done();
    if input.capacity() > MAX_KEPT_INPUT {
        *input = Vec::new();
    }
    let elapsed = started.elapsed();
    let mut offset = 0;
    for job in batch {
        shared.slot.observe_stage(Stage::Inference, elapsed);
        let answer = match &failure {
            Some(e) => Err(format!("inference failed: {e}")),
            None => {
                let len = job.n * info.num_classes;
                let out = outputs.get(offset..offset + len).unwrap_or(&[]).to_vec();
                offset += len;
                Ok(JobOutput {
                    outputs: out,
                    batch_size: total,
                })
            }
        };
        let _ = job.reply.send(answer);
    }
}
