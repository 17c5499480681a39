//! What reading a config file can go wrong with: one [`ConfigError`] per problem, all of them
//! gathered in a [`LoadError`].

use std::path::{Path, PathBuf};

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key path, like `server.workers` or `server.bind[1]`.
    pub key: String,
    /// The 1-based line in the file, when known.
    pub line: Option<usize>,
    /// What is wrong, for a person.
    pub message: String,
}

/// Everything wrong with a config file, reported at once.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid config.
    #[error("{}", render_errors(file, errors))]
    Invalid {
        /// The file.
        file: PathBuf,
        /// Every problem found.
        errors: Vec<ConfigError>,
    },
}

/// `FILE has N errors:` then one `FILE:LINE: KEY: message` line per problem.
fn render_errors(file: &Path, errors: &[ConfigError]) -> String {
    let mut out = format!(
        "{} has {} error{}:",
        file.display(),
        errors.len(),
        if errors.len() == 1 { "" } else { "s" }
    );
    for e in errors {
        let line = e.line.map(|l| format!(":{l}")).unwrap_or_default();
        let key = if e.key.is_empty() {
            String::new()
        } else {
            format!(" {}:", e.key)
        };
        out.push_str(&format!("\n  {}{line}:{key} {}", file.display(), e.message));
    }
    out
}
