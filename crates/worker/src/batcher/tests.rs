//! The batcher with a scripted backend: each way a model run can fail reaches every job of its
//! batch as its own [`InferenceError`], the thread goes on serving, and admission refuses what
//! does not fit.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbiter_infer::InferError;
use arbiter_scoreboard::Scoreboard;

use super::*;
use crate::tensor::{Batch, Elements};

/// Floats per image of the scripted model: 3 x 2 x 2.
const IMAGE: usize = 12;
/// Outputs per image.
const CLASSES: usize = 3;

/// What the scripted model does on each run, in order; it answers once the script is done.
#[derive(Debug, Clone, Copy)]
enum Step {
    Fail,
    Panic,
    TooFew,
}

struct Scripted {
    script: Arc<Mutex<VecDeque<Step>>>,
}

impl Backend for Scripted {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            input_name: "input".into(),
            output_name: "output".into(),
            width: 2,
            height: 2,
            element: arbiter_config::ElementType::Float32,
            layout: arbiter_config::TensorLayout::Nchw,
            num_classes: CLASSES,
            max_batch: 4,
            load_time: Duration::ZERO,
        }
    }

    fn run(&mut self, batch: Batch<'_>, n: usize) -> Result<Vec<f32>, InferError> {
        let Batch::F32(batch) = batch else {
            panic!("a float32 model")
        };
        let step = self.script.lock().unwrap().pop_front();
        match step {
            Some(Step::Fail) => Err(InferError::Batch("scripted failure".into())),
            Some(Step::Panic) => panic!("scripted panic"),
            Some(Step::TooFew) => Ok(vec![0.0; n * CLASSES - 1]),
            None => Ok(batch
                .chunks(IMAGE)
                .flat_map(|image| image[..CLASSES].to_vec())
                .collect()),
        }
    }
}

fn batching(queue_capacity: usize) -> Batching {
    Batching {
        max_batch_size: 4,
        max_delay: Duration::ZERO,
        queue_capacity,
    }
}

fn start(script: &[Step], queue_capacity: usize) -> (InferenceQueue, InferenceThread) {
    let board = Scoreboard::create(1).unwrap();
    let slot = board.slot(0);
    slot.reset(std::process::id(), 1);
    let script = Arc::new(Mutex::new(script.iter().copied().collect()));
    InferenceQueue::start(
        move || Ok(Scripted { script }),
        &batching(queue_capacity),
        1,
        slot.model(0),
        || {},
    )
    .unwrap()
}

async fn run(queue: &InferenceQueue, value: f32) -> Result<JobOutput, InferenceError> {
    let mut permit = queue.admit(None)?;
    queue.before_preparing(&mut permit).await?;
    queue
        .run(permit, Input::Tensor(Elements::F32(vec![value; IMAGE])), 1)
        .await
}

#[tokio::test]
async fn each_failure_of_the_model_is_its_own_error_and_the_thread_goes_on() {
    let (queue, _thread) = start(&[Step::Fail, Step::Panic, Step::TooFew], 4);
    let failed = run(&queue, 1.0).await.unwrap_err();
    assert!(matches!(failed, InferenceError::Run(_)), "{failed:?}");
    assert_eq!(
        arbiter_infer::error_chain(&failed),
        "inference failed: bad batch: scripted failure"
    );
    let panicked = run(&queue, 1.0).await.unwrap_err();
    assert!(matches!(panicked, InferenceError::Panicked), "{panicked:?}");
    let short = run(&queue, 1.0).await.unwrap_err();
    assert!(
        matches!(short, InferenceError::Outputs { got: 2, images: 1 }),
        "{short:?}"
    );
    let answered = run(&queue, 7.0).await.unwrap();
    assert_eq!(answered.outputs, vec![7.0; CLASSES]);
    assert_eq!(answered.batch_size, 1);
}

#[tokio::test]
async fn a_job_that_does_not_fit_the_model_is_refused() {
    let (queue, _thread) = start(&[], 4);
    let mut permit = queue.admit(None).unwrap();
    queue.before_preparing(&mut permit).await.unwrap();
    let misfit = queue
        .run(
            permit,
            Input::Tensor(Elements::F32(vec![0.0; IMAGE + 1])),
            1,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            misfit,
            InferenceError::Misfit {
                n: 1,
                width: 2,
                height: 2
            }
        ),
        "{misfit:?}"
    );
}

#[test]
fn admission_refuses_past_capacity_and_a_dropped_permit_frees_its_place() {
    // queue_capacity 2 + 1 preprocessing thread.
    let (queue, _thread) = start(&[], 2);
    let permits: Vec<Permit> = (0..3).map(|_| queue.admit(None).unwrap()).collect();
    assert!(matches!(queue.admit(None), Err(InferenceError::Overloaded)));
    drop(permits);
    assert!(queue.admit(None).is_ok());
}

#[tokio::test]
async fn a_place_held_while_the_body_arrives_goes_to_a_new_request_past_the_grace() {
    // queue_capacity 2 + 1 preprocessing thread.
    let (queue, _thread) = start(&[], 2);
    let grace = Some(Duration::ZERO);
    let mut permits: Vec<Permit> = (0..3).map(|_| queue.admit(grace).unwrap()).collect();
    // Its body arrived: it keeps its place whatever comes.
    permits[1].body_arrived().unwrap();
    // Full: the oldest still reading gives its place, then the next; the one whose body
    // arrived is never taken.
    let first = queue.admit(grace).unwrap();
    let second = queue.admit(grace).unwrap();
    assert!(matches!(queue.admit(None), Err(InferenceError::Overloaded)));
    tokio::time::timeout(Duration::from_secs(5), permits[0].overtaken())
        .await
        .expect("the oldest is told");
    assert!(matches!(
        permits[0].body_arrived(),
        Err(InferenceError::Overtaken)
    ));
    // The places changed hands, their count did not: all given back, all free again.
    drop((permits, first, second));
    let again: Vec<Permit> = (0..3).map(|_| queue.admit(None).unwrap()).collect();
    assert!(matches!(queue.admit(None), Err(InferenceError::Overloaded)));
    drop(again);
}

#[test]
fn a_loader_that_fails_or_panics_says_why() {
    let slot = || {
        let board = Scoreboard::create(1).unwrap();
        board.slot(0).model(0)
    };
    let failed = InferenceQueue::start(
        || -> Result<Scripted, InferError> {
            Err(InferError::ModelMissing {
                path: "/nowhere.onnx".into(),
            })
        },
        &batching(1),
        1,
        slot(),
        || {},
    )
    .unwrap_err();
    assert_eq!(failed.to_string(), "model file /nowhere.onnx not found");
    let panicked = InferenceQueue::start(
        || -> Result<Scripted, InferError> { panic!("scripted panic") },
        &batching(1),
        1,
        slot(),
        || {},
    )
    .unwrap_err();
    assert!(
        matches!(panicked, StartError::LoaderPanicked),
        "{panicked:?}"
    );
}
