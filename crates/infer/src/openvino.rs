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
//! `openvino` wheel's libraries there). One `ov_core_t` per process compiles every model; a
//! [`Request`] is one compiled model and its one infer request, owned by one inference thread.
//! Only the non-variadic entry points are called (`ov_core_compile_model_from_file_props`).

// The FFI to OpenVINO's C library: every unsafe block says why it holds.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_void};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

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
    compile: unsafe extern "C" fn(
        Handle,
        *const c_char,
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

// SAFETY: the core is only used to compile models, which OpenVINO allows from any thread at
// once; the function pointers are plain code addresses of a library that stays loaded.
unsafe impl Send for OpenVino {}
// SAFETY: as for Send: `ov_core_compile_model*` is thread-safe, nothing else touches the core.
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
            compile: sym!(b"ov_core_compile_model_from_file_props"),
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

/// One compiled model on OpenVINO's CPU plugin and its infer request, run by one thread.
#[derive(Debug)]
pub(crate) struct Request {
    compiled: Handle,
    request: Handle,
    /// The input's `ov_element_type_e`, as the compiled model reports it.
    input_type: u32,
}

// SAFETY: an infer request and its compiled model may be used from any thread, one call at a
// time; `Request` is owned by one inference thread and every call takes `&mut self`.
unsafe impl Send for Request {}

impl Request {
    /// Compiles `model` for the CPU at BF16 inference precision on `threads` threads (latency
    /// mode, one stream) and creates its infer request.
    pub(crate) fn compile(model: &Path, threads: usize) -> Result<Request, InferError> {
        let ov = openvino()?;
        let fail = |reason: String| InferError::Precision {
            precision: "bf16",
            reason: format!("OpenVINO cannot compile {}: {reason}", model.display()),
        };
        let path =
            CString::new(model.to_string_lossy().as_bytes()).map_err(|e| fail(e.to_string()))?;
        let threads = CString::new(threads.max(1).to_string()).unwrap_or_default();
        let pairs: [(&CStr, &CStr); 4] = [
            (c"INFERENCE_PRECISION_HINT", c"bf16"),
            (c"PERFORMANCE_HINT", c"LATENCY"),
            (c"NUM_STREAMS", c"1"),
            (c"INFERENCE_NUM_THREADS", threads.as_c_str()),
        ];
        let props: Vec<Property> = pairs
            .iter()
            .map(|(k, v)| Property {
                key: k.as_ptr(),
                value: v.as_ptr().cast(),
            })
            .collect();
        let mut compiled = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call (the strings outlive it), `compiled` is
        // written by the library.
        let status = unsafe {
            (ov.api.compile)(
                ov.core,
                path.as_ptr(),
                c"CPU".as_ptr(),
                props.len(),
                props.as_ptr(),
                &mut compiled,
            )
        };
        ov.check(status, "ov_core_compile_model_from_file_props")
            .map_err(fail)?;
        let mut this = Request {
            compiled,
            request: std::ptr::null_mut(),
            input_type: 0,
        };
        // SAFETY: `compiled` is a live compiled model; the port is freed after its one use.
        unsafe {
            let mut port = std::ptr::null_mut();
            ov.check(
                (ov.api.compiled_input)(compiled, &mut port),
                "ov_compiled_model_input",
            )
            .map_err(fail)?;
            let status = (ov.api.port_element_type)(port, &mut this.input_type);
            (ov.api.port_free)(port);
            ov.check(status, "ov_port_get_element_type").map_err(fail)?;
            ov.check(
                (ov.api.create_request)(compiled, &mut this.request),
                "ov_compiled_model_create_infer_request",
            )
            .map_err(fail)?;
        }
        Ok(this)
    }

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
                self.input_type,
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
        if let Ok(ov) = openvino() {
            // SAFETY: both handles were created by this request and are freed once, request
            // first.
            unsafe {
                if !self.request.is_null() {
                    (ov.api.request_free)(self.request);
                }
                if !self.compiled.is_null() {
                    (ov.api.compiled_free)(self.compiled);
                }
            }
        }
    }
}
