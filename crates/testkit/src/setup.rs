//! The files `scripts/setup` makes under `var/`: a test asks for one by its path and gets it, or
//! fails with a message that names the missing file and says to run `scripts/setup`, instead of
//! failing later on an unreadable path.

use std::path::{Path, PathBuf};

/// The ResNet50 that `scripts/setup` exports, relative to `var/`.
pub const RESNET50: &str = "models/resnet50-voc20.onnx";

/// ONNX Runtime's library that `scripts/setup` fetches, relative to `var/`.
pub const ONNXRUNTIME: &str = "onnxruntime/libonnxruntime.so.1.32.0";

/// The repository root.
pub fn repo_root() -> PathBuf {
    let testkit = Path::new(env!("CARGO_MANIFEST_DIR"));
    testkit
        .ancestors()
        .nth(2)
        .expect("crates/testkit sits two levels below the root")
        .to_path_buf()
}

/// `var/`, where `scripts/setup` puts what it makes.
pub fn var_dir() -> PathBuf {
    repo_root().join("var")
}

/// The file `var/<relative>`; panics, saying to run `scripts/setup`, when it is missing.
pub fn var(relative: &str) -> PathBuf {
    let path = var_dir().join(relative);
    assert!(
        path.exists(),
        "run scripts/setup first: var/{relative} is missing ({})",
        path.display()
    );
    path
}

/// The ResNet50 model, or a failure that says to run `scripts/setup`.
pub fn resnet50() -> PathBuf {
    var(RESNET50)
}

/// ONNX Runtime's library, or a failure that says to run `scripts/setup`.
pub fn onnxruntime() -> PathBuf {
    var(ONNXRUNTIME)
}

/// A photo from `var/photos/`, or a failure that says to run `scripts/setup`.
pub fn photo(name: &str) -> PathBuf {
    var(&format!("photos/{name}"))
}
