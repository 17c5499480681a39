//! One ONNX Runtime session for an image classifier, checked, warmed up and run by batches.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ort::ep::{self, ExecutionProvider};
use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::value::{TensorElementType, TensorRef, ValueType};

use crate::weights::MappedWeights;
use crate::{InferError, runtime};

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Device {
    /// ONNX Runtime's CPU execution provider.
    Cpu,
    /// The CUDA execution provider on this device index; never a silent CPU fallback.
    Cuda(u32),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// What [`Model::load`] needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelOptions {
    /// The `.onnx` file.
    pub path: PathBuf,
    /// The ONNX Runtime library (see [`crate::init_runtime`]); `None` looks at `ORT_DYLIB_PATH`
    /// then [`crate::DEFAULT_RUNTIME_LIBRARY`], unless a library is already loaded.
    pub runtime_library: Option<PathBuf>,
    /// Where the model runs.
    pub device: Device,
    /// ONNX Runtime intra-op threads, already resolved by the caller (0 is taken as 1).
    pub intra_threads: usize,
    /// The largest batch [`Model::run`] accepts (0 is taken as 1).
    pub max_batch: usize,
    /// The class count the model must output (the label count), when known.
    pub expected_classes: Option<usize>,
}

/// How a session is set up beyond [`ModelOptions`]: spinning as configured, the warm-up as the
/// device needs. [`Model::load`] uses [`SessionTuning::for_device`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTuning {
    /// Let ONNX Runtime's intra-op threads spin between parallel sections instead of sleeping
    /// (`model.spinning`): quicker to resume work, but a spinning thread burns the core time
    /// other threads (the worker's decoding, other programs) need.
    pub intra_op_spinning: bool,
    /// Besides the batch-1 warm-up, also run one batch of `max_batch` at load: CUDA picks its
    /// kernels per shape, so its first big batch is slow; a CPU's is not, and the extra run
    /// would only lengthen the load.
    pub warm_up_max_batch: bool,
}

impl SessionTuning {
    /// The tuning for `device`, with intra-op spinning as configured.
    pub fn for_device(device: Device, intra_op_spinning: bool) -> Self {
        SessionTuning {
            intra_op_spinning,
            warm_up_max_batch: matches!(device, Device::Cuda(_)),
        }
    }
}

/// A loaded, checked and warmed-up model: `[N, 3, H, W]` float32 in, `[N, C]` raw outputs out.
///
/// It is `Send` and meant to be owned by one inference thread; [`Model::run`] takes `&mut self`.
#[derive(Debug)]
pub struct Model {
    session: Session,
    /// The mapped weights the session uses in place; declared after `session`, so dropped after.
    _weights: Option<Arc<MappedWeights>>,
    input_name: String,
    output_name: String,
    width: u32,
    height: u32,
    classes: usize,
    /// `Some(k)` when the model's batch dimension is fixed at `k`: runs then go `k` at a time.
    fixed_batch: Option<usize>,
    max_batch: usize,
    device: Device,
    load_time: Duration,
}

/// The input and output found in the model's metadata.
struct Signature {
    input_name: String,
    output_name: String,
    fixed_batch: Option<usize>,
    height: u32,
    width: u32,
    /// `None` when the class dimension is symbolic; the warm-up run then tells.
    classes: Option<usize>,
}

impl Model {
    /// Loads the model on the configured device, checks its shapes, and warms it up.
    ///
    /// Loads ONNX Runtime first ([`crate::init_runtime`] with `opts.runtime_library`) unless it
    /// is already loaded. `intra_op_spinning` is `model.spinning` (see [`SessionTuning`]).
    pub fn load(opts: &ModelOptions, intra_op_spinning: bool) -> Result<Model, InferError> {
        Self::load_tuned(
            opts,
            &SessionTuning::for_device(opts.device, intra_op_spinning),
        )
    }

    /// [`Model::load`] with explicit session tuning (for measurements).
    pub fn load_tuned(opts: &ModelOptions, tuning: &SessionTuning) -> Result<Model, InferError> {
        Self::load_mapped(opts, tuning, None)
    }

    /// [`Model::load_tuned`], the session taking the initializers stored in `weights` (the
    /// external data of the prepared model `opts.path`) in place from that one mapping.
    pub fn load_mapped(
        opts: &ModelOptions,
        tuning: &SessionTuning,
        weights: Option<&Arc<MappedWeights>>,
    ) -> Result<Model, InferError> {
        let started = Instant::now();
        runtime::init_runtime(opts.runtime_library.as_deref())?;
        let env = runtime::environment()?;
        if !opts.path.is_file() {
            return Err(InferError::ModelMissing {
                path: opts.path.clone(),
            });
        }
        let model_err = |source: ort::Error| InferError::ModelLoad {
            path: opts.path.clone(),
            source,
        };
        let builder = configure(
            Session::builder(&env).map_err(model_err)?,
            opts.intra_threads.max(1),
            tuning,
        )
        .map_err(model_err)?;
        let mut builder = match opts.device {
            Device::Cpu => builder,
            Device::Cuda(device) => with_cuda(builder, device)?,
        };
        for (w, init) in weights
            .iter()
            .flat_map(|w| w.initializers().iter().map(move |i| (w, i)))
        {
            let value = w.value(init).map_err(|detail| InferError::Shape {
                expected: "weights ONNX Runtime can use in place".to_owned(),
                found: format!("the mapped initializer `{}`: {detail}", init.name),
            })?;
            builder = builder
                .with_initializer(&init.name, value)
                .map_err(|e| model_err(e.into()))?;
        }
        let session = builder.commit_from_file(&opts.path).map_err(model_err)?;
        let sig = check_signature(&session)?;

        let mut model = Model {
            session,
            _weights: weights.cloned(),
            input_name: sig.input_name,
            output_name: sig.output_name,
            width: sig.width,
            height: sig.height,
            classes: sig.classes.unwrap_or(0),
            fixed_batch: sig.fixed_batch,
            max_batch: opts.max_batch.max(1),
            device: opts.device,
            load_time: Duration::ZERO,
        };

        // Warm-up: the first run allocates buffers and picks kernels; better at load than on a
        // request. It also tells the class count when the model leaves it symbolic.
        let first = model.fixed_batch.unwrap_or(1);
        let zeros = vec![0.0; model.image_len() * first];
        let out = model.run_chunk(&zeros, first, sig.classes.is_none())?;
        if sig.classes.is_none() {
            model.classes = out.len() / first;
            if model.classes == 0 {
                return Err(InferError::Shape {
                    expected: "[N, C] with C >= 1".to_owned(),
                    found: format!("model output `{}` returned no classes", model.output_name),
                });
            }
        }
        if let Some(expected) = opts.expected_classes
            && expected != model.classes
        {
            return Err(InferError::LabelCount {
                model: model.classes,
                labels: expected,
            });
        }
        if tuning.warm_up_max_batch && model.max_batch > first {
            let zeros = vec![0.0; model.image_len() * model.max_batch];
            model.run(&zeros, model.max_batch)?;
        }
        model.load_time = started.elapsed();
        tracing::info!(
            model = %opts.path.display(),
            device = %model.device,
            input = %model.input_name,
            output = %model.output_name,
            width = model.width,
            height = model.height,
            classes = model.classes,
            intra_threads = opts.intra_threads.max(1),
            load_ms = model.load_time.as_millis() as u64,
            "model loaded"
        );
        Ok(model)
    }

    /// `(width, height)` of the images the model takes.
    pub fn input_size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Number of classes the model outputs per image.
    pub fn num_classes(&self) -> usize {
        self.classes
    }

    /// Name of the model's input tensor.
    pub fn input_name(&self) -> &str {
        &self.input_name
    }

    /// Name of the model's output tensor.
    pub fn output_name(&self) -> &str {
        &self.output_name
    }

    /// Where the model runs.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The largest batch [`Model::run`] accepts.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// How long [`Model::load`] took, warm-up included.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// Floats per image in a batch: `3 * H * W`.
    pub fn image_len(&self) -> usize {
        3 * self.width as usize * self.height as usize
    }

    /// Runs `n` images (CHW float32, one after another in `batch`); returns `n * C` raw outputs.
    pub fn run(&mut self, batch: &[f32], n: usize) -> Result<Vec<f32>, InferError> {
        if n > self.max_batch {
            return Err(InferError::Batch(format!(
                "{n} images exceed the maximum batch of {}",
                self.max_batch
            )));
        }
        let per_image = self.image_len();
        if batch.len() != n * per_image {
            return Err(InferError::Batch(format!(
                "{} floats for {n} images of 3x{}x{} ({} expected)",
                batch.len(),
                self.height,
                self.width,
                n * per_image
            )));
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        let Some(k) = self.fixed_batch.filter(|&k| k != n) else {
            return self.run_chunk(batch, n, false);
        };
        // A fixed batch dimension: run k images at a time, padding the last group with zeros.
        let mut out = Vec::with_capacity(n * self.classes);
        let mut padded = Vec::new();
        for group in batch.chunks(k * per_image) {
            let images = group.len() / per_image;
            let full = if images == k {
                group
            } else {
                padded.clear();
                padded.extend_from_slice(group);
                padded.resize(k * per_image, 0.0);
                &padded
            };
            let result = self.run_chunk(full, k, false)?;
            out.extend_from_slice(&result[..images * self.classes]);
        }
        Ok(out)
    }

    /// One session run on exactly `n` images; checks the output is `[n, C]` (any `C` when
    /// `any_classes`, for the warm-up of a model whose class count is symbolic).
    fn run_chunk(
        &mut self,
        data: &[f32],
        n: usize,
        any_classes: bool,
    ) -> Result<Vec<f32>, InferError> {
        let shape = [n, 3, self.height as usize, self.width as usize];
        let input = TensorRef::from_array_view((shape, data))
            .map_err(|source| InferError::Run { source })?;
        let outputs = self
            .session
            .run(ort::inputs![self.input_name.as_str() => input])
            .map_err(|source| InferError::Run { source })?;
        let Some(output) = outputs.get(&self.output_name) else {
            return Err(InferError::Shape {
                expected: format!("an output named `{}`", self.output_name),
                found: "the model run returned none".to_owned(),
            });
        };
        let (out_shape, values) = output
            .try_extract_tensor::<f32>()
            .map_err(|source| InferError::Run { source })?;
        let classes_ok = any_classes || out_shape.get(1) == Some(&(self.classes as i64));
        if out_shape.len() != 2 || out_shape[0] != n as i64 || !classes_ok {
            return Err(InferError::Shape {
                expected: format!(
                    "[{n}, {}]",
                    if any_classes {
                        "C".to_owned()
                    } else {
                        self.classes.to_string()
                    }
                ),
                found: format!(
                    "model output `{}` returned shape {:?} for a batch of {n}",
                    self.output_name,
                    &out_shape[..]
                ),
            });
        }
        Ok(values.to_vec())
    }
}

/// The CPU session settings: one graph, run sequentially, intra-op threads as given.
fn configure(
    builder: SessionBuilder,
    intra_threads: usize,
    tuning: &SessionTuning,
) -> Result<SessionBuilder, ort::Error> {
    Ok(builder
        .with_optimization_level(GraphOptimizationLevel::All)?
        .with_intra_threads(intra_threads)?
        .with_inter_threads(1)?
        .with_parallel_execution(false)?
        .with_intra_op_spinning(tuning.intra_op_spinning)?)
}

/// Registers the CUDA execution provider, failing (never falling back to CPU) when it cannot.
fn with_cuda(builder: SessionBuilder, device: u32) -> Result<SessionBuilder, InferError> {
    let provider = ep::CUDA::default()
        .with_device_id(i32::try_from(device).unwrap_or(i32::MAX))
        .build()
        .error_on_failure();
    builder.with_execution_providers([provider]).map_err(|e| {
        let hint = if ep::CUDA::is_available().unwrap_or(false) {
            "this ONNX Runtime build has CUDA support, but CUDA could not start here: check the \
             NVIDIA driver, that the device exists, and that the CUDA 13 and cuDNN 9 libraries \
             are on the library path"
        } else {
            "this ONNX Runtime build (CPU) has no CUDA support; install onnxruntime-gpu's library \
             (libonnxruntime.so with libonnxruntime_providers_shared.so and \
             libonnxruntime_providers_cuda.so beside it) and point runtime_library at it, or run \
             on the CPU"
        };
        InferError::CudaUnavailable {
            device,
            reason: e.message().trim_end_matches('.').to_owned(),
            hint: hint.to_owned(),
        }
    })
}

/// The largest input height or width accepted: a batch-1 warm-up input of this size is 3 GiB.
const MAX_SIDE: u32 = 16384;

/// Checks the session has one `[N, 3, H, W]` float32 input and one `[N, C]` float32 output.
fn check_signature(session: &Session) -> Result<Signature, InferError> {
    const INPUT: &str = "[N, 3, H, W] float32 (N dynamic or fixed, H and W fixed)";
    const OUTPUT: &str = "[N, C] float32";
    let [input] = session.inputs() else {
        return Err(InferError::Shape {
            expected: format!("exactly one input {INPUT}"),
            found: format!(
                "model has {} inputs ({})",
                session.inputs().len(),
                names(session.inputs())
            ),
        });
    };
    let [output] = session.outputs() else {
        return Err(InferError::Shape {
            expected: format!("exactly one output {OUTPUT}"),
            found: format!(
                "model has {} outputs ({})",
                session.outputs().len(),
                names(session.outputs())
            ),
        });
    };
    let (in_dims, in_desc) = float_tensor("input", input.name(), input.dtype(), INPUT)?;
    let shape_err = |expected: &str| InferError::Shape {
        expected: expected.to_owned(),
        found: format!("model input `{}` has shape {in_desc}", input.name()),
    };
    let [n, c, h, w] = in_dims[..] else {
        return Err(shape_err("[N, 3, H, W]"));
    };
    if c != 3 || n == 0 || n < -1 {
        return Err(shape_err("[N, 3, H, W]"));
    }
    let (Ok(height), Ok(width)) = (u32::try_from(h), u32::try_from(w)) else {
        return Err(shape_err("[N, 3, H, W] with H and W fixed numbers"));
    };
    if height == 0 || width == 0 {
        return Err(shape_err("[N, 3, H, W] with H and W fixed numbers"));
    }
    if height > MAX_SIDE || width > MAX_SIDE {
        return Err(shape_err(&format!(
            "[N, 3, H, W] with H and W at most {MAX_SIDE}"
        )));
    }
    let fixed_batch = usize::try_from(n).ok();

    let (out_dims, out_desc) = float_tensor("output", output.name(), output.dtype(), OUTPUT)?;
    let out_err = || InferError::Shape {
        expected: "[N, C]".to_owned(),
        found: format!("model output `{}` has shape {out_desc}", output.name()),
    };
    let [on, oc] = out_dims[..] else {
        return Err(out_err());
    };
    // The output's batch follows the input's: symbolic, or the same fixed size.
    let batch_ok = on == -1 || fixed_batch.is_some_and(|k| on == k as i64);
    if !batch_ok || oc == 0 || oc < -1 {
        return Err(out_err());
    }
    Ok(Signature {
        input_name: input.name().to_owned(),
        output_name: output.name().to_owned(),
        fixed_batch,
        height,
        width,
        classes: usize::try_from(oc).ok(),
    })
}

/// A float32 tensor's dims (-1 where symbolic) and their display, e.g. `[N, 3, 224, 224]`.
fn float_tensor(
    role: &str,
    name: &str,
    dtype: &ValueType,
    expected: &str,
) -> Result<(Vec<i64>, String), InferError> {
    let ValueType::Tensor {
        ty,
        shape,
        dimension_symbols,
    } = dtype
    else {
        return Err(InferError::Shape {
            expected: expected.to_owned(),
            found: format!("model {role} `{name}` is not a tensor ({dtype:?})"),
        });
    };
    let dims: Vec<i64> = shape.iter().copied().collect();
    let shown: Vec<String> = dims
        .iter()
        .enumerate()
        .map(|(i, &d)| match dimension_symbols.get(i) {
            _ if d >= 0 => d.to_string(),
            Some(sym) if !sym.is_empty() => sym.clone(),
            _ => "?".to_owned(),
        })
        .collect();
    let desc = format!("[{}]", shown.join(", "));
    if *ty != TensorElementType::Float32 {
        return Err(InferError::Shape {
            expected: expected.to_owned(),
            found: format!("model {role} `{name}` has element type {ty} (shape {desc})"),
        });
    }
    Ok((dims, desc))
}

fn names(outlets: &[ort::value::Outlet]) -> String {
    outlets
        .iter()
        .map(|o| format!("`{}`", o.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_reports_a_missing_runtime_library() {
        let opts = ModelOptions {
            path: PathBuf::from("tests/data/tiny_ok.onnx"),
            runtime_library: Some(PathBuf::from("/nonexistent/ort/libonnxruntime.so.1.32.0")),
            device: Device::Cpu,
            intra_threads: 1,
            max_batch: 1,
            expected_classes: None,
        };
        let err = Model::load(&opts, false).unwrap_err();
        assert!(matches!(err, InferError::RuntimeMissing { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("/nonexistent/ort/libonnxruntime.so.1.32.0"),
            "{msg}"
        );
        assert!(msg.contains("run scripts/setup"), "{msg}");
    }

    #[test]
    fn device_display() {
        assert_eq!(Device::Cpu.to_string(), "cpu");
        assert_eq!(Device::Cuda(1).to_string(), "cuda:1");
    }
}
