//! One ONNX Runtime session for an image classifier, checked, warmed up and run by batches.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arbiter_config::{Device, ElementType, TensorLayout};
use ort::ep::{self, ExecutionProvider};
use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::value::{PrimitiveTensorElementType, TensorRef};

use crate::signature::{self, InputRecipe, ModelSignature, ResolvedInput};
use crate::weights::MappedWeights;
use crate::{CpuOffers, InferError, openvino, runtime};

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
    /// What the preprocessing recipe feeds the model (layout, element type, size), checked
    /// against the model's input at load ([`signature::resolve`]).
    pub input: InputRecipe,
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

/// A loaded, checked and warmed-up model: one image input (`[N, 3, H, W]` or `[N, H, W, 3]`,
/// float32 or uint8, as the recipe says), `[N, C]` raw outputs out.
///
/// It is `Send` and meant to be owned by one inference thread; [`Model::run`] takes `&mut self`.
#[derive(Debug)]
pub struct Model {
    runner: Runner,
    /// The mapped weights the session uses in place; declared after `session`, so dropped after.
    _weights: Option<Arc<MappedWeights>>,
    input_name: String,
    output_name: String,
    /// The input's layout, element type and size; `fixed_batch`, when `Some(k)`, makes runs go
    /// `k` images at a time.
    input: ResolvedInput,
    classes: usize,
    max_batch: usize,
    device: Device,
    load_time: Duration,
}

/// What runs the model: an ONNX Runtime session, or OpenVINO for `precision = "bf16"`.
#[derive(Debug)]
enum Runner {
    Ort(Session),
    OpenVino(openvino::Request),
}

/// The element types of a batch [`Model::run`] takes: `f32` for a `float32` input, `u8` for a
/// `uint8` one. Sealed: the two the recipe knows.
pub trait InputElement:
    PrimitiveTensorElementType + Copy + Default + fmt::Debug + private::Sealed + 'static
{
    /// The input type it feeds.
    const ELEMENT: ElementType;
}

impl InputElement for f32 {
    const ELEMENT: ElementType = ElementType::Float32;
}

impl InputElement for u8 {
    const ELEMENT: ElementType = ElementType::Uint8;
}

mod private {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for u8 {}
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
        let sig = signature::check(&ModelSignature::of(&session), &opts.input)?;
        let classes = sig.classes;
        Model::assemble(Runner::Ort(session), weights.cloned(), sig, opts)
            .finish(classes, opts, tuning, started)
    }

    /// Loads the model at `precision = "bf16"`: compiled by OpenVINO's CPU plugin with BF16
    /// inference precision in latency mode (see [`crate::openvino`]), after the same checks of
    /// its input and output as [`Model::load`] (read through ONNX Runtime) and the same warm-up.
    /// Refused, with the reason, off the CPU, on a CPU without AVX512-BF16 or AMX
    /// ([`CpuOffers`]), or where the OpenVINO library is missing: never a silent FP32 fallback.
    pub fn load_bf16(opts: &ModelOptions, tuning: &SessionTuning) -> Result<Model, InferError> {
        Self::load_bf16_source(opts, tuning).map(|(model, _)| model)
    }

    /// [`Model::load_bf16`], with the model as OpenVINO read it, for [`Model::load_bf16_lanes`]
    /// to compile again with the same FP32 weights.
    pub(crate) fn load_bf16_source(
        opts: &ModelOptions,
        tuning: &SessionTuning,
    ) -> Result<(Model, openvino::Source), InferError> {
        let started = Instant::now();
        let sig = check_bf16(opts)?;
        let source = openvino::Source::read(&opts.path)?;
        let compiled = openvino::Compiled::compile(&source, opts.intra_threads, 1)?;
        let model = Model::of_request(&compiled, sig, opts, tuning, started)?;
        Ok((model, source))
    }

    /// `lanes` models of `source` (read from `opts.path`) that run side by side, one thread
    /// each: one compilation in throughput mode (one stream per lane, its BF16 weights held once)
    /// and one infer request of it per model, each warmed up.
    pub(crate) fn load_bf16_lanes(
        source: &openvino::Source,
        opts: &ModelOptions,
        tuning: &SessionTuning,
        lanes: usize,
    ) -> Result<Vec<Model>, InferError> {
        let started = Instant::now();
        let single = ModelOptions {
            intra_threads: 1,
            ..opts.clone()
        };
        let sig = check_bf16(&single)?;
        let lanes = lanes.max(1);
        let compiled = openvino::Compiled::compile(source, lanes, lanes)?;
        (0..lanes)
            .map(|_| Model::of_request(&compiled, sig.clone(), &single, tuning, started))
            .collect()
    }

    /// A model of a new infer request of `compiled`, warmed up.
    fn of_request(
        compiled: &Arc<openvino::Compiled>,
        sig: signature::Served,
        opts: &ModelOptions,
        tuning: &SessionTuning,
        started: Instant,
    ) -> Result<Model, InferError> {
        let classes = sig.classes;
        let request = compiled.request()?;
        Model::assemble(Runner::OpenVino(request), None, sig, opts)
            .finish(classes, opts, tuning, started)
    }

    /// A model of `runner` whose input and output `sig` checked, before its warm-up.
    fn assemble(
        runner: Runner,
        weights: Option<Arc<MappedWeights>>,
        sig: signature::Served,
        opts: &ModelOptions,
    ) -> Model {
        Model {
            runner,
            _weights: weights,
            input_name: sig.input_name,
            output_name: sig.output_name,
            input: sig.input,
            classes: sig.classes.unwrap_or(0),
            max_batch: opts.max_batch.max(1),
            device: opts.device,
            load_time: Duration::ZERO,
        }
    }

    /// The end of a load: the warm-up, the class count checked, the load logged.
    fn finish(
        mut self,
        sig_classes: Option<usize>,
        opts: &ModelOptions,
        tuning: &SessionTuning,
        started: Instant,
    ) -> Result<Model, InferError> {
        let model = &mut self;
        let sig_classes_none = sig_classes.is_none();
        // Warm-up: the first run allocates buffers and picks kernels; better at load than on a
        // request. It also tells the class count when the model leaves it symbolic.
        let first = model.input.fixed_batch.unwrap_or(1);
        let out = model.run_zeros(first, sig_classes_none)?;
        if sig_classes_none {
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
            match model.input.element {
                ElementType::Float32 => model.warm_up::<f32>()?,
                ElementType::Uint8 => model.warm_up::<u8>()?,
            }
        }
        model.load_time = started.elapsed();
        tracing::info!(
            model = %opts.path.display(),
            device = %model.device,
            input = %model.input_name,
            input_type = model.input.element.name(),
            layout = model.input.layout.name(),
            output = %model.output_name,
            width = model.input.width,
            height = model.input.height,
            classes = model.classes,
            intra_threads = opts.intra_threads.max(1),
            load_ms = model.load_time.as_millis() as u64,
            precision = match model.runner {
                Runner::Ort(_) => "fp32",
                Runner::OpenVino(_) => "bf16 (OpenVINO)",
            },
            "model loaded"
        );
        Ok(self)
    }

    /// `(width, height)` of the images the model takes.
    pub fn input_size(&self) -> (u32, u32) {
        (self.input.width, self.input.height)
    }

    /// The input the model is run with: layout, element type, size, fixed batch.
    pub fn input(&self) -> &ResolvedInput {
        &self.input
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

    /// Elements per image in a batch: `3 * H * W`.
    pub fn image_len(&self) -> usize {
        3 * self.input.width as usize * self.input.height as usize
    }

    /// The runs of a load's warm-up on `max_batch` images of zeros.
    fn warm_up<T: InputElement>(&mut self) -> Result<(), InferError> {
        let zeros = vec![T::default(); self.image_len() * self.max_batch];
        self.run(&zeros, self.max_batch).map(drop)
    }

    /// One run on `n` images of zeros of the input's element type (see [`Model::run_chunk`]).
    fn run_zeros(&mut self, n: usize, any_classes: bool) -> Result<Vec<f32>, InferError> {
        let len = self.image_len() * n;
        match self.input.element {
            ElementType::Float32 => self.run_chunk(&vec![0.0f32; len], n, any_classes),
            ElementType::Uint8 => self.run_chunk(&vec![0u8; len], n, any_classes),
        }
    }

    /// Runs `n` images (in the input's layout, one after another in `batch`, `f32` for a
    /// `float32` input and `u8` for a `uint8` one); returns `n * C` raw outputs. The batch is
    /// handed to ONNX Runtime in place, not copied.
    pub fn run<T: InputElement>(&mut self, batch: &[T], n: usize) -> Result<Vec<f32>, InferError> {
        if T::ELEMENT != self.input.element {
            return Err(InferError::Batch(format!(
                "{} values for a model input of {}",
                T::ELEMENT.name(),
                self.input.element.name()
            )));
        }
        if n > self.max_batch {
            return Err(InferError::Batch(format!(
                "{n} images exceed the maximum batch of {}",
                self.max_batch
            )));
        }
        let per_image = self.image_len();
        if batch.len() != n * per_image {
            return Err(InferError::Batch(format!(
                "{} {}s for {n} images of 3x{}x{} ({} expected)",
                batch.len(),
                match self.input.element {
                    ElementType::Float32 => "float",
                    ElementType::Uint8 => "byte",
                },
                self.input.height,
                self.input.width,
                n * per_image
            )));
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        let Some(k) = self.input.fixed_batch.filter(|&k| k != n) else {
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
                padded.resize(k * per_image, T::default());
                &padded
            };
            let result = self.run_chunk(full, k, false)?;
            out.extend_from_slice(&result[..images * self.classes]);
        }
        Ok(out)
    }

    /// One session run on exactly `n` images; checks the output is `[n, C]` (any `C` when
    /// `any_classes`, for the warm-up of a model whose class count is symbolic).
    fn run_chunk<T: InputElement>(
        &mut self,
        data: &[T],
        n: usize,
        any_classes: bool,
    ) -> Result<Vec<f32>, InferError> {
        let (h, w) = (self.input.height as usize, self.input.width as usize);
        let shape = match self.input.layout {
            TensorLayout::Nchw => [n, 3, h, w],
            TensorLayout::Nhwc => [n, h, w, 3],
        };
        let session = match &mut self.runner {
            Runner::Ort(session) => session,
            Runner::OpenVino(request) => {
                let (out_shape, values) = request.run(data, &shape)?;
                check_output(&self.output_name, self.classes, &out_shape, n, any_classes)?;
                return Ok(values);
            }
        };
        let input = TensorRef::from_array_view((shape, data))
            .map_err(|source| InferError::Run { source })?;
        let outputs = session
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
        check_output(&self.output_name, self.classes, out_shape, n, any_classes)?;
        Ok(values.to_vec())
    }
}

/// Checks a run's output shape is `[n, C]` (any `C` when `any_classes`).
fn check_output(
    output_name: &str,
    classes: usize,
    out_shape: &[i64],
    n: usize,
    any_classes: bool,
) -> Result<(), InferError> {
    let classes_ok = any_classes || out_shape.get(1) == Some(&(classes as i64));
    if out_shape.len() != 2 || out_shape[0] != n as i64 || !classes_ok {
        return Err(InferError::Shape {
            expected: format!(
                "[{n}, {}]",
                if any_classes {
                    "C".to_owned()
                } else {
                    classes.to_string()
                }
            ),
            found: format!(
                "model output `{}` returned shape {:?} for a batch of {n}",
                output_name, out_shape
            ),
        });
    }
    Ok(())
}

/// The checks of [`Model::load_bf16`] before OpenVINO compiles: the precision can be served
/// here, and the model's input and output (read through ONNX Runtime) fit the recipe.
fn check_bf16(opts: &ModelOptions) -> Result<signature::Served, InferError> {
    bf16_refusal(opts.device, CpuOffers::detect()).map_or(Ok(()), Err)?;
    let sig = signature::read(&opts.path, opts.runtime_library.as_deref())?;
    signature::check(&sig, &opts.input)
}

/// Why `precision = "bf16"` cannot be served on `device` with the CPU's `offers`, if it cannot.
pub(crate) fn bf16_refusal(device: Device, offers: CpuOffers) -> Option<InferError> {
    let reason = match device {
        Device::Cuda(_) => "bf16 is served on the CPU only (through OpenVINO); on a GPU use fp32",
        Device::Cpu if offers.bf16() => return None,
        Device::Cpu => {
            "this CPU has neither AVX512-BF16 nor AMX (the flags avx512_bf16 or amx_bf16 of \
             /proc/cpuinfo), so BF16 would be emulated, slower than FP32: serve the model at \
             precision = \"fp32\", or quantize it to INT8 (scripts/quantize.py)"
        }
    };
    Some(InferError::Precision {
        precision: "bf16",
        reason: reason.to_owned(),
    })
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
            input: InputRecipe::SEED,
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
    fn bf16_is_refused_without_the_instructions_or_off_the_cpu() {
        let old = CpuOffers::from_cpuinfo("flags : avx2 fma avx512f avx512_vnni\n");
        let err = bf16_refusal(Device::Cpu, old).expect("refused");
        let msg = err.to_string();
        assert!(msg.starts_with("precision bf16 cannot be served"), "{msg}");
        assert!(msg.contains("avx512_bf16") && msg.contains("fp32"), "{msg}");
        let bf16 = CpuOffers::from_cpuinfo("flags : avx512f avx512_bf16\n");
        assert!(bf16_refusal(Device::Cpu, bf16).is_none());
        assert!(bf16_refusal(Device::Cuda(0), bf16).is_some());
    }

    #[test]
    fn device_display() {
        assert_eq!(Device::Cpu.to_string(), "cpu");
        assert_eq!(Device::Cuda(1).to_string(), "cuda:1");
    }
}
