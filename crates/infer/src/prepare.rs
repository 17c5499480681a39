//! Prepared models: one physical copy of the weights for every worker on a CPU.
//!
//! Built from a plain `.onnx`, each ONNX Runtime session re-lays the weights out for the CPU's
//! kernels (NCHWc) in its own private memory, so N workers hold N copies. A prepared model is
//! that work done once: the model optimized at level ALL and saved with its weights, already
//! re-laid-out, in an external data file that ONNX Runtime writes 4 KiB-aligned. Sessions built
//! from it map the data file read-only, so every worker shares the same page-cache pages (a
//! worker maps it once for all its sessions: see [`crate::weights`]).
//!
//! A prepared file fits one model, one ONNX Runtime and one CPU feature level, so the cache entry
//! is named by all three: `CACHE/<model sha256>-<runtime>-<cpu level>/`. The first worker to need
//! an entry builds it under an exclusive lock into a temporary directory, writes a manifest of
//! the files' sizes last, and renames the directory into place; others wait on the lock, then
//! find it done. A file workers may have mapped is never rewritten: a bad entry is renamed away
//! and rebuilt. Each worker holds a shared lock on its entry while it runs, so old entries (a
//! previous model, after a reload) are removed once no worker holds them.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::fcntl::{Flock, FlockArg};
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use sha2::{Digest, Sha256};

use crate::runtime;

/// The prepared model's file name inside a cache entry.
const MODEL_FILE: &str = "model.onnx";
/// Its external weights, mapped by every worker.
pub const DATA_FILE: &str = "model.onnx.data";
/// Written last: the sizes of the two files. An entry without it, or whose files differ from it,
/// is incomplete.
const MANIFEST: &str = "manifest";

/// Why a model could not be prepared (the worker then loads the original, and logs this).
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// A file operation in the cache failed.
    #[error("{what} {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// ONNX Runtime could not write the optimized model.
    #[error("ONNX Runtime could not write the prepared model for {}", path.display())]
    Build {
        /// The original model.
        path: PathBuf,
        /// What ONNX Runtime said.
        #[source]
        source: ort::Error,
    },
    /// The runtime was not initialised.
    #[error(transparent)]
    Runtime(#[from] crate::InferError),
}

fn io<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> PrepareError + 'p {
    move |source| PrepareError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// A prepared model in the cache, held (shared lock) for as long as this value lives.
#[derive(Debug)]
pub struct Prepared {
    /// The prepared `.onnx`, to load instead of the original.
    pub model: PathBuf,
    /// Its weights file, mapped by every worker.
    pub data: PathBuf,
    /// The cache entry's name.
    pub key: String,
    /// Whether this call built it (false: it was already there).
    pub built: bool,
    cache: PathBuf,
    hold: Option<Flock<File>>,
}

impl Drop for Prepared {
    /// Lets go of the entry, then removes the entries nobody holds any more but the one most
    /// recently taken: the last worker of an old generation clears its model away, and a
    /// stopped service keeps its current entry for the next start.
    fn drop(&mut self) {
        drop(self.hold.take());
        sweep(&self.cache, None);
    }
}

/// Prepares `model` in `cache` (or finds it prepared), removes entries no worker holds, and
/// returns the entry, held. `runtime_library` names the ONNX Runtime in the key.
pub fn prepare(
    model: &Path,
    cache: &Path,
    runtime_library: &Path,
) -> Result<Prepared, PrepareError> {
    fs::create_dir_all(cache).map_err(io("cannot create the cache folder", cache))?;
    let key = format!(
        "{}-{}-{}",
        model_digest(model, cache)?,
        runtime_tag(runtime_library),
        cpu_level()
    );
    let entry = cache.join(&key);
    // Two locks: `.build` serializes building; the entry's own lock is held shared by every
    // worker using it, so a sweep can tell which entries are in use.
    let hold_path = cache.join(format!("{key}.lock"));
    let hold = Flock::lock(open_lock(&hold_path)?, FlockArg::LockShared)
        .map_err(|(_, e)| io("cannot lock", &hold_path)(e.into()))?;
    let mut built = false;
    if !is_complete(&entry) {
        let build_path = cache.join(format!("{key}.build"));
        let _building = Flock::lock(open_lock(&build_path)?, FlockArg::LockExclusive)
            .map_err(|(_, e)| io("cannot lock", &build_path)(e.into()))?;
        // Another worker may have built it while this one waited.
        if !is_complete(&entry) {
            if entry.exists() {
                tracing::warn!(entry = %entry.display(), "prepared model incomplete or damaged; rebuilding it");
                let trash = cache.join(format!("{key}.bad.{}", std::process::id()));
                fs::rename(&entry, &trash).map_err(io("cannot move aside", &entry))?;
                let _ = fs::remove_dir_all(&trash);
            }
            build(model, cache, &entry)?;
            built = true;
        }
    }
    sweep(cache, Some(&key));
    Ok(Prepared {
        model: entry.join(MODEL_FILE),
        data: entry.join(DATA_FILE),
        key,
        built,
        cache: cache.to_path_buf(),
        hold: Some(hold),
    })
}

fn open_lock(path: &Path) -> Result<File, PrepareError> {
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io("cannot open the lock", path))
}

fn build(model: &Path, cache: &Path, entry: &Path) -> Result<(), PrepareError> {
    let started = Instant::now();
    let tmp = cache.join(format!(".building.{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(io("cannot create", &tmp))?;
    let env = runtime::environment()?;
    let fail = |source| PrepareError::Build {
        path: model.to_path_buf(),
        source,
    };
    let write = || -> Result<Session, ort::Error> {
        Session::builder(&env)?
            .with_optimization_level(GraphOptimizationLevel::All)?
            .with_intra_threads(1)?
            .with_optimized_model_path(tmp.join(MODEL_FILE))?
            .with_config_entry(
                "session.optimized_model_external_initializers_file_name",
                DATA_FILE,
            )?
            .with_config_entry(
                "session.optimized_model_external_initializers_min_size_in_bytes",
                "1024",
            )?
            .commit_from_file(model)
    };
    drop(write().map_err(fail)?);
    let sizes = sizes(&tmp).ok_or_else(|| {
        io("ONNX Runtime wrote no prepared model in", &tmp)(std::io::Error::from(
            std::io::ErrorKind::NotFound,
        ))
    })?;
    let manifest = tmp.join(MANIFEST);
    let mut file = File::create(&manifest).map_err(io("cannot write", &manifest))?;
    writeln!(file, "{} {}", sizes.0, sizes.1)
        .and_then(|_| file.sync_all())
        .map_err(io("cannot write", &manifest))?;
    fs::rename(&tmp, entry).map_err(io("cannot move into place", entry))?;
    tracing::info!(
        model = %model.display(),
        entry = %entry.display(),
        data_bytes = sizes.1,
        ms = started.elapsed().as_millis() as u64,
        "prepared the model for sharing its weights"
    );
    Ok(())
}

fn sizes(dir: &Path) -> Option<(u64, u64)> {
    Some((
        fs::metadata(dir.join(MODEL_FILE)).ok()?.len(),
        fs::metadata(dir.join(DATA_FILE)).ok()?.len(),
    ))
}

fn is_complete(entry: &Path) -> bool {
    let Ok(manifest) = fs::read_to_string(entry.join(MANIFEST)) else {
        return false;
    };
    let expected: Vec<u64> = manifest
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    matches!((expected.as_slice(), sizes(entry)), ([m, d], Some((am, ad))) if *m == am && *d == ad && ad > 0)
}

/// Removes the entries whose lock no worker holds, except `keep` and the entry the newest
/// worker took (the most recently touched lock).
fn sweep(cache: &Path, keep: Option<&str>) {
    let Ok(dir) = fs::read_dir(cache) else { return };
    let locks: Vec<(String, PathBuf, std::time::SystemTime)> = dir
        .flatten()
        .filter_map(|item| {
            let name = item.file_name().to_string_lossy().into_owned();
            let key = name.strip_suffix(".lock")?.to_string();
            let touched = item.metadata().and_then(|m| m.modified()).ok()?;
            Some((key, item.path(), touched))
        })
        .collect();
    let newest = locks
        .iter()
        .max_by_key(|(_, _, t)| *t)
        .map(|(k, _, _)| k.clone());
    for (key, path, _) in locks {
        if Some(key.as_str()) == keep || Some(&key) == newest.as_ref() {
            continue;
        }
        let Ok(file) = fs::OpenOptions::new().write(true).open(&path) else {
            continue;
        };
        // Not blocking: an entry a worker holds (shared) is in use.
        if let Ok(_unused) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            let _ = fs::remove_dir_all(cache.join(&key));
            let _ = fs::remove_file(cache.join(format!("{key}.build")));
            let _ = fs::remove_file(&path);
            tracing::info!(entry = key, "removed a prepared model no worker uses");
        }
    }
}

/// The model's sha256, remembered per (inode, size, mtime) so a boot does not re-hash 100 MB.
fn model_digest(model: &Path, cache: &Path) -> Result<String, PrepareError> {
    let meta = fs::metadata(model).map_err(io("cannot read", model))?;
    let memo = cache.join("digests").join(format!(
        "{}-{}-{}-{}",
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.mtime_nsec() + meta.mtime() * 1_000_000_000
    ));
    if let Ok(digest) = fs::read_to_string(&memo)
        && digest.len() == 64
    {
        return Ok(digest[..16].to_string());
    }
    let mut file = File::open(model).map_err(io("cannot read", model))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io("cannot read", model))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let digest: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if let Some(dir) = memo.parent() {
        let _ = fs::create_dir_all(dir);
        let tmp = memo.with_extension(format!("tmp{}", std::process::id()));
        if fs::write(&tmp, &digest).is_ok() {
            let _ = fs::rename(&tmp, &memo);
        }
    }
    Ok(digest[..16].to_string())
}

/// The ONNX Runtime library's name and size: a different runtime lays weights out differently.
fn runtime_tag(library: &Path) -> String {
    let name = library
        .file_name()
        .map(|n| n.to_string_lossy().replace("libonnxruntime.so.", "ort"))
        .unwrap_or_default();
    let size = fs::metadata(library).map(|m| m.len()).unwrap_or(0);
    format!("{name}.{size:x}")
}

/// The CPU feature level the NCHWc layout depends on.
pub fn cpu_level() -> &'static str {
    let flags = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = flags.lines().find(|l| l.starts_with("flags")).unwrap_or("");
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    if has("avx512f") && has("avx512bw") {
        "avx512"
    } else if has("avx2") && has("fma") {
        "avx2"
    } else if has("avx") {
        "avx"
    } else {
        "sse"
    }
}
