//! The bounded channel of [`Job`]s between the request handlers and the inference threads, and
//! how a thread gathers a batch from it.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, Instant};

use arbiter_vision::RgbImage;
use tokio::sync::oneshot;

use super::admission::Permit;
use super::backend::ModelInfo;
use super::counters::Counters;
use super::error::InferenceError;
use crate::options::Batching;
use crate::tensor::{Elements, ToTensor};

/// What a request queues for the model.
#[derive(Debug)]
pub enum Input {
    /// `n * image_len` values of the model's element type, ready (KServe tensors).
    Tensor(Elements),
    /// One image already resized to the model's input, as RGB bytes, and how it becomes the
    /// input: written into the batch when it runs, so a queued image holds a quarter of the
    /// memory its floats would.
    Image(RgbImage, ToTensor),
}

/// The answer to one job: its outputs and the size of the batch it ran in.
#[derive(Debug, Clone, PartialEq)]
pub struct JobOutput {
    /// `n * num_classes` raw outputs.
    pub outputs: Vec<f32>,
    /// Images in the model run(s) this job was part of.
    pub batch_size: usize,
}

/// Where a job's answer goes; dropped by a client that left.
pub(super) type Reply = oneshot::Sender<Result<JobOutput, InferenceError>>;

/// One request's images, queued for the model with its place in the pipeline.
pub(super) struct Job {
    pub(super) input: Input,
    /// Images in `input`.
    pub(super) n: usize,
    pub(super) enqueued: Instant,
    pub(super) reply: Reply,
    pub(super) permit: Permit,
}

/// Queues `n` preprocessed images (`n * image_len` values of the model's element type, or one image
/// of the model's input size); the receiver gets the outputs. Dropping the receiver cancels the job
/// if it has not started.
pub(super) fn submit(
    tx: &SyncSender<Job>,
    counters: &Counters,
    info: &ModelInfo,
    mut permit: Permit,
    input: Input,
    n: usize,
) -> Result<oneshot::Receiver<Result<JobOutput, InferenceError>>, InferenceError> {
    let fits = match &input {
        Input::Tensor(t) => t.len() == n * info.image_len() && t.element() == info.element,
        Input::Image(img, to) => {
            n == 1
                && img.width == info.width
                && img.height == info.height
                && to.element() == info.element
        }
    };
    if !fits {
        return Err(InferenceError::Misfit {
            n,
            width: info.width,
            height: info.height,
        });
    }
    let (reply, rx) = oneshot::channel();
    permit.prepared();
    let job = Job {
        input,
        n,
        enqueued: Instant::now(),
        reply,
        permit,
    };
    let depth = counters.queued.fetch_add(1, Relaxed) + 1;
    match tx.try_send(job) {
        Ok(()) => {
            counters.stats.set_queue_depth(depth);
            Ok(rx)
        }
        Err(TrySendError::Full(_)) => {
            counters.queued.fetch_sub(1, Relaxed);
            Err(InferenceError::Overloaded)
        }
        Err(TrySendError::Disconnected(_)) => {
            counters.queued.fetch_sub(1, Relaxed);
            Err(InferenceError::Stopped)
        }
    }
}

/// What the inference threads take turns at: the channel, and a job that did not fit the last
/// batch.
pub(super) struct Intake {
    pub(super) rx: Receiver<Job>,
    pub(super) carry: Option<Job>,
}

/// Takes the next batch off the queue (blocking for its first job); `None` once every sender is
/// gone and nothing is left, else the batch and whether the senders are gone. When `idle()`, asked
/// once the first job is in, counts several idle lanes, takes only its share of what is waiting.
pub(super) fn gather(
    intake: &mut Intake,
    batching: &Batching,
    idle: impl FnOnce() -> usize,
    counters: &Counters,
) -> Option<(Vec<Job>, bool)> {
    let first = loop {
        let job = match intake.carry.take() {
            Some(job) => job,
            None => match intake.rx.recv() {
                Ok(job) => {
                    counters.dequeued();
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
    let idle = idle();
    if idle > 1 {
        let waiting = first.n + counters.queued.load(Relaxed) + counters.preparing.load(Relaxed);
        max_images = max_images.min(waiting.div_ceil(idle)).max(1);
    }
    let mut images = first.n;
    let mut batch = vec![first];
    let deadline = Instant::now() + batching.max_delay;
    let mut disconnected = false;
    while images < max_images {
        // Wait for more only while requests are on their way (being preprocessed).
        let now = Instant::now();
        let wait = if counters.preparing.load(Relaxed) > 0 && now < deadline {
            Some(deadline - now)
        } else {
            None
        };
        match take(&intake.rx, counters, wait) {
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
            Err(Disconnected) => {
                disconnected = true;
                break;
            }
        }
    }
    Some((batch, disconnected))
}

/// Every sender of the channel is gone.
struct Disconnected;

/// Takes one job off the channel (blocking up to `wait`, or not at all when `None`).
fn take(
    rx: &Receiver<Job>,
    counters: &Counters,
    wait: Option<Duration>,
) -> Result<Option<Job>, Disconnected> {
    let got = match wait {
        None => match rx.try_recv() {
            Ok(j) => Some(j),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => return Err(Disconnected),
        },
        Some(d) => match rx.recv_timeout(d) {
            Ok(j) => Some(j),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return Err(Disconnected),
        },
    };
    if got.is_some() {
        counters.dequeued();
    }
    Ok(got)
}
