//! Finding and loading the ONNX Runtime shared library, once per process.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ort::environment::Environment;
use ort::logging::LogLevel;

use crate::InferError;

/// Where the library is looked for when neither the config nor `ORT_DYLIB_PATH` names it
/// (relative to the working directory; `scripts/setup` puts it there).
pub const DEFAULT_RUNTIME_LIBRARY: &str = "var/onnxruntime/libonnxruntime.so.1.32.0";

/// The environment variable that names the library when the config does not.
pub const RUNTIME_ENV_VAR: &str = "ORT_DYLIB_PATH";

/// The process's ONNX Runtime: the library it came from and the environment every session uses.
struct Runtime {
    path: PathBuf,
    env: Environment,
}

static RUNTIME: Mutex<Option<Runtime>> = Mutex::new(None);

/// Loads the ONNX Runtime library and creates the process's environment; returns the library path.
///
/// The library is `library` when given (the config's `runtime_library`), else the file named by
/// `ORT_DYLIB_PATH`, else [`DEFAULT_RUNTIME_LIBRARY`]. A missing file is an error naming every
/// place looked at and saying to run scripts/setup. Idempotent: once a library is loaded, later
/// calls return its path (a process cannot load a second one), after checking that a `library`
/// they name exists.
pub fn init_runtime(library: Option<&Path>) -> Result<PathBuf, InferError> {
    let mut runtime = RUNTIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let (None, Some(rt)) = (library, runtime.as_ref()) {
        return Ok(rt.path.clone());
    }
    let path = resolve_library(library, std::env::var_os(RUNTIME_ENV_VAR))?;
    if let Some(rt) = runtime.as_ref() {
        if rt.path != path {
            tracing::warn!(
                loaded = %rt.path.display(),
                asked = %path.display(),
                "ONNX Runtime is already loaded from another file; keeping it"
            );
        }
        return Ok(rt.path.clone());
    }
    let load_err = |source: Box<dyn std::error::Error + Send + Sync>| InferError::RuntimeLoad {
        path: path.clone(),
        source,
    };
    let env = ort::init_from(&path)
        .map_err(|e| load_err(Box::new(e)))?
        .with_name("arbiter")
        .with_telemetry(false)
        .with_logger(Arc::new(forward_log))
        .build()
        .map_err(|e| load_err(Box::new(e)))?;
    // The logger is created at verbose level; formatting every verbose message would slow
    // session creation for nothing.
    env.set_log_level(LogLevel::Warning);
    tracing::info!(library = %path.display(), "ONNX Runtime loaded");
    *runtime = Some(Runtime {
        path: path.clone(),
        env,
    });
    Ok(path)
}

/// Sends ONNX Runtime's own log messages (warnings and errors) to `tracing`, target
/// `onnxruntime`, instead of ONNX Runtime's plain-text stderr format.
fn forward_log(level: LogLevel, category: &str, id: &str, location: &str, message: &str) {
    const T: &str = "onnxruntime";
    match level {
        LogLevel::Verbose => tracing::trace!(target: T, category, id, location, "{message}"),
        LogLevel::Info => tracing::debug!(target: T, category, id, location, "{message}"),
        LogLevel::Warning => tracing::warn!(target: T, category, id, location, "{message}"),
        LogLevel::Error | LogLevel::Fatal => {
            tracing::error!(target: T, category, id, location, "{message}");
        }
    }
}

/// The environment created by [`init_runtime`], for building sessions.
pub(crate) fn environment() -> Result<Environment, InferError> {
    let runtime = RUNTIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    runtime
        .as_ref()
        .map(|rt| rt.env.clone())
        .ok_or(InferError::RuntimeNotInitialised)
}

/// Picks the library file: the configured path, else the environment variable, else the default.
/// Relative paths are made absolute against the working directory (the loader would otherwise
/// try the executable's directory first).
fn resolve_library(
    configured: Option<&Path>,
    env_value: Option<OsString>,
) -> Result<PathBuf, InferError> {
    let candidate = match (configured, env_value) {
        (Some(path), _) => path.to_path_buf(),
        (None, Some(value)) if !value.is_empty() => PathBuf::from(value),
        _ => PathBuf::from(DEFAULT_RUNTIME_LIBRARY),
    };
    let candidate = std::path::absolute(&candidate).unwrap_or(candidate);
    if candidate.is_file() {
        Ok(candidate)
    } else {
        Err(InferError::RuntimeMissing {
            looked: vec![candidate],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_path_wins_and_missing_is_named() {
        let err = resolve_library(
            Some(Path::new("/nonexistent/config/libonnxruntime.so")),
            Some("/nonexistent/env/libonnxruntime.so".into()),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("/nonexistent/config/libonnxruntime.so"),
            "{msg}"
        );
        assert!(!msg.contains("/nonexistent/env"), "{msg}");
        assert!(msg.contains("run scripts/setup"), "{msg}");
    }

    #[test]
    fn env_var_used_without_config() {
        let err =
            resolve_library(None, Some("/nonexistent/env/libonnxruntime.so".into())).unwrap_err();
        match err {
            InferError::RuntimeMissing { looked } => {
                assert_eq!(
                    looked,
                    vec![PathBuf::from("/nonexistent/env/libonnxruntime.so")]
                );
            }
            other => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn default_used_without_config_or_env() {
        let cwd = std::env::current_dir().unwrap();
        for env in [None, Some(OsString::new())] {
            match resolve_library(None, env) {
                Ok(path) => assert_eq!(path, cwd.join(DEFAULT_RUNTIME_LIBRARY)),
                Err(InferError::RuntimeMissing { looked }) => {
                    assert_eq!(looked, vec![cwd.join(DEFAULT_RUNTIME_LIBRARY)]);
                }
                Err(other) => panic!("unexpected error {other}"),
            }
        }
    }

    #[test]
    fn directory_is_not_a_library() {
        let dir = std::env::temp_dir();
        let err = resolve_library(Some(&dir), None).unwrap_err();
        assert!(matches!(err, InferError::RuntimeMissing { .. }), "{err}");
    }

    #[test]
    fn init_runtime_reports_missing_library() {
        let err =
            init_runtime(Some(Path::new("/nonexistent/libonnxruntime.so.1.32.0"))).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("/nonexistent/libonnxruntime.so.1.32.0"),
            "{msg}"
        );
        assert!(msg.contains("scripts/setup"), "{msg}");
    }
}
