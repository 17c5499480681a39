//! One gathered batch through the model: its images laid into one input, run in chunks of the
//! backend's largest batch, and every job answered.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use arbiter_scoreboard::Stage;

use super::backend::{Backend, ModelInfo};
use super::counters::{Counters, MAX_LANES};
use super::error::InferenceError;
use super::queue::{Input, Job, JobOutput};
use crate::tensor::Elements;

/// The largest model input an inference thread keeps for its next batch, in bytes: 32 MiB, 55
/// images of 224 x 224 floats.
const MAX_KEPT_INPUT: usize = 32 << 20;

/// Runs one gathered batch (in chunks of the backend's maximum) on lane `lane` and answers each
/// job. Calls `model_done` once the model has run (or at once if there is nothing to run),
/// before answering. The batch's values go in `input`, kept by the caller for the next batch: a
/// 224 x 224 image's are 588 KiB, which a new allocation would map afresh and the kernel fault
/// in page by page for every request.
pub(super) fn run_batch<B: Backend>(
    backend: &mut B,
    info: &ModelInfo,
    mut batch: Vec<Job>,
    input: &mut Elements,
    counters: &Counters,
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
    input.reset(info.element);
    match input {
        Elements::F32(v) => v.reserve(total * per_image),
        Elements::U8(v) => v.reserve(total * per_image),
    }
    for job in &mut batch {
        job.permit.batch_started();
        counters
            .stats
            .observe_stage(Stage::QueueWait, started.duration_since(job.enqueued));
        // `submit` let in only jobs of the model's element type and size.
        let appended = match std::mem::replace(&mut job.input, Input::Tensor(Elements::default())) {
            Input::Tensor(mut values) => input.append(&mut values),
            Input::Image(img, to_tensor) => to_tensor.append(&img, input),
        };
        debug_assert!(appended, "a job of another element type was queued");
    }
    let busy = &counters.busy_since[lane.min(MAX_LANES - 1)];
    busy.store(counters.now_ns(), Relaxed);
    let outputs = run_chunks(backend, info, input, total, counters);
    busy.store(0, Relaxed);
    model_done();
    if input.capacity_bytes() > MAX_KEPT_INPUT {
        *input = Elements::empty(info.element);
    }
    if let Err(e) = &outputs {
        tracing::error!(
            error = %arbiter_infer::error_chain(e),
            images = total,
            "model run failed"
        );
    }
    let elapsed = started.elapsed();
    let mut offset = 0;
    for job in batch {
        counters.stats.observe_stage(Stage::Inference, elapsed);
        let answer = match &outputs {
            Err(e) => Err(e.clone()),
            Ok(outputs) => {
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

/// Runs `total` images of `input` in chunks of the backend's largest batch; the outputs of all,
/// or why one chunk failed (the rest are not run).
fn run_chunks<B: Backend>(
    backend: &mut B,
    info: &ModelInfo,
    input: &Elements,
    total: usize,
    counters: &Counters,
) -> Result<Vec<f32>, InferenceError> {
    let per_image = info.image_len();
    let chunk = info.max_batch.max(1);
    let mut outputs = Vec::with_capacity(total * info.num_classes);
    let mut done = 0;
    while done < total {
        let n = chunk.min(total - done);
        let slice = input.slice(done * per_image..(done + n) * per_image);
        let out = catch_unwind(AssertUnwindSafe(|| backend.run(slice, n)))
            .map_err(|_| InferenceError::Panicked)?
            .map_err(|e| InferenceError::Run(Arc::new(e)))?;
        if out.len() != n * info.num_classes {
            return Err(InferenceError::Outputs {
                got: out.len(),
                images: n,
            });
        }
        outputs.extend_from_slice(&out);
        counters.stats.observe_batch(n);
        done += n;
    }
    Ok(outputs)
}
