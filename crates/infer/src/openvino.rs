//! OpenVINO through its C library (`libopenvino_c.so`), for a model served at `precision = "bf16"`.
//!
//! ONNX Runtime's CPU execution provider has no BF16 path on x86, and OpenVINO's execution
//! provider for it (`onnxruntime-ep-openvino`, a plugin for a stock ONNX Runtime) offers no device
//! on a non-Intel CPU (docs/int8.md), so BF16 goes to OpenVINO itself: its CPU plugin reads the
//! same `.onnx` file and, asked for `INFERENCE_PRECISION_HINT=bf16`, runs the convolutions and
//! matrix products in BF16 (AVX512-BF16 or AMX), keeping FP32 where its own rules say.
//!
//! The library is loaded once per process, at run time like ONNX Runtime's: from
//! `ARBITER_OPENVINO_LIBRARY`, else [`DEFAULT_OPENVINO_LIBRARY`] (`scripts/setup` copies the
//! `openvino` wheel's libraries there). One `ov_core_t` per process reads and compiles every
//! model. A [`Source`] is a model as read (its FP32 weights); a [`Compiled`] model of it holds
//! its own BF16 copy of the weights and shares the source's FP32 ones (measured: reading
//! ResNet50 once and compiling it twice holds 249 MiB, compiling it twice from the file 333 MiB).
//! A [`Request`] is one infer request of a compiled model, owned by one inference thread, and
//! keeps the model alive (an `Arc`: OpenVINO frees a compiled model only after its requests). An
//! engine's whole backend is its source compiled in latency mode (one stream on all its threads,
//! one request); its lanes share one compilation of the same source in throughput mode (one
//! stream of one thread per lane), one request each. Only the non-variadic entry points are
//! called (`ov_core_compile_model_props`).

// The FFI to OpenVINO's C library: every unsafe block says why it holds.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_void};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use libloading::Library;

use crate::InferError;

/// Where the OpenVINO C library is looked for when `ARBITER_OPENVINO_LIBRARY` does not name it
/// (relative to the working directory; `scripts/setup` puts it there).
pub const DEFAULT_OPENVINO_LIBRARY: &str = "var/openvino/libopenvino_c.so";

/// The environment variable naming the OpenVINO C library.
pub const OPENVINO_ENV_VAR: &str = "ARBITER_OPENVINO_LIBRARY";

type Status = i32;
type Handle = *mut c_void;

/// `ov_shape_t`.
#[repr(C)]
struct Shape {
    rank: i64,
    dims: *mut i64,
}

/// `ov_property_t`: a key and its value (a C string for every key used here).
#[repr(C)]
struct Property {
    key: *const c_char,
    value: *const c_void,
}

/// The entry points used, resolved once.
struct Api {
    core_create: unsafe extern "C" fn(*mut Handle) -> Status,
    read_model: unsafe extern "C" fn(Handle, *const c_char, *const c_char, *mut Handle) -> Status,
    model_free: unsafe extern "C" fn(Handle),
    compile: unsafe extern "C" fn(
        Handle,
        Handle,
        *const c_char,
        usize,
        *const Property,
        *mut Handle,
    ) -> Status,
    compiled_free: unsafe extern "C" fn(Handle),
    compiled_input: unsafe extern "C" fn(Handle, *mut Handle) -> Status,
    port_element_type: unsafe extern "C" fn(Handle, *mut u32) -> Status,
    port_free: unsafe extern "C" fn(Handle),
    create_request: unsafe extern "C" fn(Handle, *mut Handle) -> Status,
    request_free: unsafe extern "C" fn(Handle),
    shape_create: unsafe extern "C" fn(i64, *const i64, *mut Shape) -> Status,
    shape_free: unsafe extern "C" fn(*mut Shape) -> Status,
    tensor_from_host: unsafe extern "C" fn(u32, Shape, *mut c_void, *mut Handle) -> Status,
    tensor_free: unsafe extern "C" fn(Handle),
    tensor_shape: unsafe extern "C" fn(Handle, *mut Shape) -> Status,
    tensor_data: unsafe extern "C" fn(Handle, *mut *mut c_void) -> Status,
    set_input: unsafe extern "C" fn(Handle, Handle) -> Status,
    infer: unsafe extern "C" fn(Handle) -> Status,
    get_output: unsafe extern "C" fn(Handle, *mut Handle) -> Status,
    last_error: unsafe extern "C" fn() -> *const c_char,
    /// Keeps the functions above loaded; declared last.
    _lib: Library,
}

/// The process's OpenVINO: the library's entry points and its one core.
struct OpenVino {
    api: Api,
    core: Handle,
}

// SAFETY: the core is only used to read and compile models, which OpenVINO allows from any thread
// at once; the function pointers are plain code addresses of a library that stays loaded.
unsafe impl Send for OpenVino {}
// SAFETY: as for Send: `ov_core_read_model` and `ov_core_compile_model*` are thread-safe, nothing
// else touches the core.
unsafe impl Sync for OpenVino {}

static OPENVINO: OnceLock<Result<OpenVino, String>> = OnceLock::new();

/// The OpenVINO C library a `bf16` model loads: `ARBITER_OPENVINO_LIBRARY`, else
/// [`DEFAULT_OPENVINO_LIBRARY`], made absolute.
pub fn library_path() -> PathBuf {
    let path = std::env::var_os(OPENVINO_ENV_VAR)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_OPENVINO_LIBRARY), PathBuf::from);
    std::path::absolute(&path).unwrap_or(path)
}

fn load(path: &Path) -> Result<OpenVino, String> {
    if !path.is_file() {
        return Err(format!(
            "the OpenVINO C library {} is missing (run scripts/setup, or set {OPENVINO_ENV_VAR})",
            path.display()
        ));
    }
    // SAFETY: loading OpenVINO's C library runs its initialisers, which only set up its own
    // state; the symbols below are declared with the signatures of its C headers (2026.4).
    unsafe {
        let lib = Library::new(path).map_err(|e| format!("cannot load {}: {e}", path.display()))?;
        macro_rules! sym {
            ($name:literal) => {
                *lib.get($name)
                    .map_err(|e| format!("{}: {e}", String::from_utf8_lossy($name)))?
            };
        }
        let api = Api {
            core_create: sym!(b"ov_core_create"),
            read_model: sym!(b"ov_core_read_model"),
            model_free: sym!(b"ov_model_free"),
            compile: sym!(b"ov_core_compile_model_props"),
            compiled_free: sym!(b"ov_compiled_model_free"),
            compiled_input: sym!(b"ov_compiled_model_input"),
            port_element_type: sym!(b"ov_port_get_element_type"),
            port_free: sym!(b"ov_output_const_port_free"),
            create_request: sym!(b"ov_compiled_model_create_infer_request"),
            request_free: sym!(b"ov_infer_request_free"),
            shape_create: sym!(b"ov_shape_create"),
            shape_free: sym!(b"ov_shape_free"),
            tensor_from_host: sym!(b"ov_tensor_create_from_host_ptr"),
            tensor_free: sym!(b"ov_tensor_free"),
            tensor_shape: sym!(b"ov_tensor_get_shape"),
            tensor_data: sym!(b"ov_tensor_data"),
            set_input: sym!(b"ov_infer_request_set_input_tensor"),
            infer: sym!(b"ov_infer_request_infer"),
            get_output: sym!(b"ov_infer_request_get_output_tensor"),
            last_error: sym!(b"ov_get_last_err_msg"),
            _lib: lib,
        };
        let mut core = std::ptr::null_mut();
        let status = (api.core_create)(&mut core);
        if status != 0 || core.is_null() {
            return Err(format!("ov_core_create failed ({status})"));
        }
        Ok(OpenVino { api, core })
    }
}

/// Loads OpenVINO's C library (once per process): `library` when given, else
/// [`library_path`]'s; returns the error of the first load on every later call. A `bf16` model
/// loads it on first use; a caller that knows where it is (a test) calls this first.
pub fn init_openvino(library: Option<&Path>) -> Result<(), InferError> {
    let path = library.map_or_else(library_path, Path::to_path_buf);
    OPENVINO
        .get_or_init(|| load(&path))
        .as_ref()
        .map(drop)
        .map_err(|reason| InferError::Precision {
            precision: "bf16",
            reason: reason.clone(),
        })
}

fn openvino() -> Result<&'static OpenVino, InferError> {
    OPENVINO
        .get_or_init(|| load(&library_path()))
        .as_ref()
        .map_err(|reason| InferError::Precision {
            precision: "bf16",
            reason: reason.clone(),
        })
}

impl OpenVino {
    /// `Err` with OpenVINO's last error message when `status` is not OK.
    fn check(&self, status: Status, what: &str) -> Result<(), String> {
        if status == 0 {
            return Ok(());
        }
        // SAFETY: ov_get_last_err_msg returns a NUL-terminated string owned by the library, or
        // null; it is copied at once.
        let message = unsafe {
            let p = (self.api.last_error)();
            if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        Err(format!("{what} failed ({status}): {}", message.trim()))
    }
}

/// A model as OpenVINO read it from its `.onnx` file, compiled as many times as needed: each
/// compilation shares its FP32 weights.
#[derive(Debug)]
pub(crate) struct Source {
    handle: Handle,
    path: PathBuf,
}

// SAFETY: an `ov_model_t` may be used from any thread; `Source` is owned by one thread at a time
// (not `Sync`) and only compiled, which leaves it as it was.
unsafe impl Send for Source {}

impl Source {
    /// Reads `model` (its weights stay FP32 here; a compilation makes its own BF16 copy).
    pub(crate) fn read(model: &Path) -> Result<Source, InferError> {
        let ov = openvino()?;
        let fail = |reason: String| InferError::Precision {
            precision: "bf16",
            reason: format!("OpenVINO cannot read {}: {reason}", model.display()),
        };
        let path =
            CString::new(model.to_string_lossy().as_bytes()).map_err(|e| fail(e.to_string()))?;
        let mut handle = std::ptr::null_mut();
        // SAFETY: the path outlives the call, a null weights path means "beside the model or
        // inside it", `handle` is written by the library.
        let status =
            unsafe { (ov.api.read_model)(ov.core, path.as_ptr(), std::ptr::null(), &mut handle) };
        ov.check(status, "ov_core_read_model").map_err(fail)?;
        Ok(Source {
            handle,
            path: model.to_path_buf(),
        })
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        if let Ok(ov) = openvino()
            && !self.handle.is_null()
        {
            // SAFETY: the handle was created by `read` and is freed once; the models compiled
            // from it hold what they share of it themselves.
            unsafe { (ov.api.model_free)(self.handle) }
        }
    }
}

/// One model compiled by OpenVINO's CPU plugin (its weights in BF16, once), shared by the infer
/// requests made from it and freed after the last of them.
#[derive(Debug)]
pub(crate) struct Compiled {
    handle: Handle,
    /// The input's `ov_element_type_e`, as the compiled model reports it.
    input_type: u32,
}

// SAFETY: a compiled model may be used from any thread; after compiling, only
// `ov_compiled_model_create_infer_request` is called on it, which OpenVINO allows from several
// threads at once, and it is freed once, by the last owner.
unsafe impl Send for Compiled {}
// SAFETY: as for Send: creating infer requests is thread-safe, nothing else touches the model.
unsafe impl Sync for Compiled {}

impl Compiled {
    /// Compiles `source` for the CPU at BF16 inference precision on `threads` threads split
    /// between `streams` streams: one stream is latency mode (a request on every thread), more
    /// is throughput mode (as many requests at once, each on its stream's threads).
    pub(crate) fn compile(
        source: &Source,
        threads: usize,
        streams: usize,
    ) -> Result<Arc<Compiled>, InferError> {
        let ov = openvino()?;
        let fail = |reason: String| InferError::Precision {
            precision: "bf16",
            reason: format!(
                "OpenVINO cannot compile {}: {reason}",
                source.path.display()
            ),
        };
        let streams = streams.max(1);
        let threads = CString::new(threads.max(streams).to_string()).unwrap_or_default();
        let stream_count = CString::new(streams.to_string()).unwrap_or_default();
        let hint = if streams == 1 {
            c"LATENCY"
        } else {
            c"THROUGHPUT"
        };
        let pairs: [(&CStr, &CStr); 4] = [
            (c"INFERENCE_PRECISION_HINT", c"bf16"),
            (c"PERFORMANCE_HINT", hint),
            (c"NUM_STREAMS", stream_count.as_c_str()),
            (c"INFERENCE_NUM_THREADS", threads.as_c_str()),
        ];
        let props: Vec<Property> = pairs
            .iter()
            .map(|(k, v)| Property {
                key: k.as_ptr(),
                value: v.as_ptr().cast(),
            })
            .collect();
        let mut handle = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call (the strings outlive it, `source` is a live
        // model), `handle` is written by the library.
        let status = unsafe {
            (ov.api.compile)(
                ov.core,
                source.handle,
                c"CPU".as_ptr(),
                props.len(),
                props.as_ptr(),
                &mut handle,
            )
        };
        ov.check(status, "ov_core_compile_model_props")
            .map_err(fail)?;
        let mut this = Compiled {
            handle,
            input_type: 0,
        };
        // SAFETY: `handle` is a live compiled model; the port is freed after its one use.
        unsafe {
            let mut port = std::ptr::null_mut();
            ov.check(
                (ov.api.compiled_input)(handle, &mut port),
                "ov_compiled_model_input",
            )
            .map_err(fail)?;
            let status = (ov.api.port_element_type)(port, &mut this.input_type);
            (ov.api.port_free)(port);
            ov.check(status, "ov_port_get_element_type").map_err(fail)?;
        }
        Ok(Arc::new(this))
    }

    /// A new infer request of this model, which it keeps alive.
    pub(crate) fn request(self: &Arc<Self>) -> Result<Request, InferError> {
        let ov = openvino()?;
        let mut request = std::ptr::null_mut();
        // SAFETY: `self.handle` is a live compiled model; `request` is written by the library.
        let status = unsafe { (ov.api.create_request)(self.handle, &mut request) };
        ov.check(status, "ov_compiled_model_create_infer_request")
            .map_err(|reason| InferError::Precision {
                precision: "bf16",
                reason: format!("OpenVINO cannot create an infer request: {reason}"),
            })?;
        Ok(Request {
            request,
            compiled: Arc::clone(self),
        })
    }
}

impl Drop for Compiled {
    fn drop(&mut self) {
        if let Ok(ov) = openvino()
            && !self.handle.is_null()
        {
            // SAFETY: the handle was created by `compile` and is freed once; every request made
            // from it holds an `Arc` of it, so none is left.
            unsafe { (ov.api.compiled_free)(self.handle) }
        }
    }
}

/// One infer request of a [`Compiled`] model, run by one thread.
#[derive(Debug)]
pub(crate) struct Request {
    request: Handle,
    /// The model the request was made from, freed only after the request (see `Drop`).
    compiled: Arc<Compiled>,
}

// SAFETY: an infer request may be used from any thread, one call at a time; `Request` is owned
// by one inference thread and every call takes `&mut self`.
unsafe impl Send for Request {}

impl Request {
    /// Runs one batch: `data` is the input tensor of `shape`, in the element type the model
    /// takes (the caller checked it); returns the output's shape and values as `f32`.
    pub(crate) fn run<T: Copy>(
        &mut self,
        data: &[T],
        shape: &[usize],
    ) -> Result<(Vec<i64>, Vec<f32>), InferError> {
        let ov = openvino()?;
        let fail = |reason: String| InferError::Batch(format!("OpenVINO: {reason}"));
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        // SAFETY: `data` outlives the input tensor, which is freed before returning and only
        // read by the infer call; the output tensor belongs to the request and is copied out
        // before it is freed; its data holds as many f32 as its shape's product.
        unsafe {
            let mut in_shape = Shape {
                rank: 0,
                dims: std::ptr::null_mut(),
            };
            ov.check(
                (ov.api.shape_create)(dims.len() as i64, dims.as_ptr(), &mut in_shape),
                "ov_shape_create",
            )
            .map_err(fail)?;
            let mut tensor = std::ptr::null_mut();
            let status = (ov.api.tensor_from_host)(
                self.compiled.input_type,
                Shape {
                    rank: in_shape.rank,
                    dims: in_shape.dims,
                },
                data.as_ptr().cast_mut().cast(),
                &mut tensor,
            );
            (ov.api.shape_free)(&mut in_shape);
            ov.check(status, "ov_tensor_create_from_host_ptr")
                .map_err(fail)?;
            let status = (ov.api.set_input)(self.request, tensor);
            let ran = ov
                .check(status, "ov_infer_request_set_input_tensor")
                .and_then(|()| ov.check((ov.api.infer)(self.request), "ov_infer_request_infer"));
            (ov.api.tensor_free)(tensor);
            ran.map_err(fail)?;
            let mut out = std::ptr::null_mut();
            ov.check(
                (ov.api.get_output)(self.request, &mut out),
                "ov_infer_request_get_output_tensor",
            )
            .map_err(fail)?;
            let mut out_shape = Shape {
                rank: 0,
                dims: std::ptr::null_mut(),
            };
            let read = ov
                .check(
                    (ov.api.tensor_shape)(out, &mut out_shape),
                    "ov_tensor_get_shape",
                )
                .and_then(|()| {
                    let dims = std::slice::from_raw_parts(out_shape.dims, out_shape.rank as usize)
                        .to_vec();
                    let mut ptr = std::ptr::null_mut();
                    ov.check((ov.api.tensor_data)(out, &mut ptr), "ov_tensor_data")?;
                    let len = dims.iter().product::<i64>().max(0) as usize;
                    let values = std::slice::from_raw_parts(ptr.cast::<f32>(), len).to_vec();
                    Ok((dims, values))
                });
            (ov.api.shape_free)(&mut out_shape);
            (ov.api.tensor_free)(out);
            read.map_err(fail)
        }
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if let Ok(ov) = openvino()
            && !self.request.is_null()
        {
            // SAFETY: the request was created by `Compiled::request` and is freed once, before
            // its `compiled` field (dropped after this) can free the model.
            unsafe { (ov.api.request_free)(self.request) }
        }
    }
}
