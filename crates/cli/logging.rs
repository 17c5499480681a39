//! Logs: `tracing` to stderr or to a file that USR1 reopens (for logrotate).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arbiter_config::Log;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// The installed logger's handle.
#[derive(Debug, Clone)]
pub(crate) struct Logs {
    file: Option<(PathBuf, Arc<Mutex<File>>)>,
}

impl Logs {
    /// Installs the global subscriber. `RUST_LOG` overrides the configured level.
    pub(crate) fn init(config: &Log) -> anyhow::Result<Logs> {
        let filter =
            EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&config.level))?;
        let file = match &config.file {
            Some(path) => Some((path.clone(), Arc::new(Mutex::new(open(path)?)))),
            None => None,
        };
        let writer = Writer {
            file: file.as_ref().map(|(_, f)| Arc::clone(f)),
        };
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer)
            .with_ansi(false);
        let result = if config.json {
            builder.json().try_init()
        } else {
            builder.try_init()
        };
        result.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))?;
        Ok(Logs { file })
    }

    /// Reopens the log file, after logrotate moved it away.
    pub(crate) fn reopen(&self) -> std::io::Result<()> {
        if let Some((path, file)) = &self.file {
            let fresh = open(path)?;
            *file.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
        }
        Ok(())
    }
}

fn open(path: &PathBuf) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// Writes each event to the current log file, or to stderr.
#[derive(Debug, Clone)]
struct Writer {
    file: Option<Arc<Mutex<File>>>,
}

impl<'a> MakeWriter<'a> for Writer {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> EventWriter {
        EventWriter {
            file: self.file.clone(),
            buffer: Vec::new(),
        }
    }
}

/// Collects one event and writes it in one `write` call, so lines from the arbiter and its
/// workers never interleave within a line.
#[derive(Debug)]
struct EventWriter {
    file: Option<Arc<Mutex<File>>>,
    buffer: Vec<u8>,
}

impl Write for EventWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let _ = match &self.file {
            Some(file) => file
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .write_all(&self.buffer),
            None => std::io::stderr().write_all(&self.buffer),
        };
    }
}
