//! The control socket: how `arbiter status|reload|stop|ttin|ttou` talk to a running arbiter.
//!
//! A unix socket with mode 0600 (only its owner may connect), one JSON line each way. The CLI
//! falls back to the pidfile and signals when the socket cannot be reached. The CLI's end is
//! [`send`] and [`render`]; the arbiter's end is `Server`, which accepts without blocking the
//! arbiter's loop and hands each request on with the `Client` to answer.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::Error;

/// How long the control socket is left alone after accept failed (out of descriptors), instead
/// of spinning on a socket that stays readable.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
/// How long a client may take to send its request line.
const READ_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a client may take to read its answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// A command sent to the arbiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    /// Report workers, listeners and the budget.
    Status,
    /// Re-read the config and roll the workers onto it; answered once done or refused.
    Reload,
    /// Stop: gracefully, or at once with `now`.
    Stop {
        /// Skip the graceful drain.
        now: bool,
    },
    /// One worker more.
    Ttin,
    /// One worker less.
    Ttou,
}

/// The arbiter's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the command was carried out.
    pub ok: bool,
    /// What happened, for a person.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The status, for `Status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

impl Response {
    /// A success with a message.
    pub fn ok(message: impl Into<String>) -> Response {
        Response {
            ok: true,
            message: message.into(),
            status: None,
        }
    }

    /// A refusal with the reason.
    pub fn error(message: impl Into<String>) -> Response {
        Response {
            ok: false,
            message: message.into(),
            status: None,
        }
    }
}

/// What `arbiter status` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The arbiter's pid.
    pub pid: u32,
    /// The config file.
    pub config: String,
    /// The arbiter's phase: running, reloading, stopping.
    pub phase: String,
    /// The current generation (increments on every reload).
    pub generation: u64,
    /// How many workers it keeps running.
    pub target_workers: usize,
    /// Every worker process.
    pub workers: Vec<WorkerStatus>,
    /// Every listener.
    pub listeners: Vec<String>,
    /// The memory budget, in words.
    pub budget: String,
    /// Workers replaced after a crash or a hang, since start.
    pub worker_restarts: u64,
    /// Seconds since the arbiter started.
    pub uptime_secs: f64,
    /// Supervised programs.
    #[serde(default)]
    pub programs: Vec<crate::programs::ProgramStatus>,
    /// The whole service's memory: PSS of the arbiter and every worker, in bytes.
    #[serde(default)]
    pub total_pss_bytes: u64,
    /// The models every worker serves, in the running config's order.
    #[serde(default)]
    pub models: Vec<ModelStatus>,
}

/// One model in `arbiter status`, from the running config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelStatus {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its ONNX file.
    pub path: String,
    /// Whether `/model_predict` answers with it when the request names no model.
    pub default: bool,
}

/// One worker in `arbiter status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// The scoreboard slot, also its `worker` label in metrics.
    pub slot: usize,
    /// Its pid.
    pub pid: u32,
    /// The generation it belongs to.
    pub generation: u64,
    /// booting, ready, draining.
    pub state: String,
    /// Seconds since it was forked.
    pub uptime_secs: f64,
    /// Requests it has answered.
    pub requests: u64,
    /// How many times this slot's worker was replaced after a crash or hang.
    pub restarts: u64,
    /// Memory only this worker uses (`/proc/PID/smaps_rollup` Private_*), in bytes.
    #[serde(default)]
    pub private_bytes: u64,
    /// Memory it shares with other processes (the mapped weights, libraries), in bytes.
    #[serde(default)]
    pub shared_bytes: u64,
    /// Its proportional share of memory (PSS), in bytes: what summing over processes counts once.
    #[serde(default)]
    pub pss_bytes: u64,
}

/// Sends one request and waits up to `timeout` for the answer.
pub fn send(socket: &Path, request: Request, timeout: Duration) -> std::io::Result<Response> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut line = serde_json::to_string(&request).map_err(std::io::Error::other)?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    if answer.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the arbiter closed the connection without answering",
        ));
    }
    serde_json::from_str(&answer)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// The arbiter's end of the control socket.
#[derive(Debug)]
pub(crate) struct Server {
    listener: UnixListener,
    path: PathBuf,
    /// Set after a failed accept: left alone until then.
    paused_until: Option<Instant>,
}

/// A connected client, waiting for its answer.
#[derive(Debug)]
pub(crate) struct Client(UnixStream);

impl Server {
    /// Binds the socket at `path`, mode 0600, unless another arbiter answers on it.
    pub(crate) fn bind(path: &Path) -> Result<Server, Error> {
        let fail = |source| Error::Bind {
            address: format!("control socket {}", path.display()),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(fail(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another arbiter answers on it",
                )));
            }
            std::fs::remove_file(path).map_err(fail)?;
        }
        // Created with a umask that leaves only the owner's bits, so no other user can connect
        // even in the instant before the chmod.
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let listener = UnixListener::bind(path);
        nix::sys::stat::umask(old);
        let listener = listener.map_err(fail)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
        listener.set_nonblocking(true).map_err(fail)?;
        Ok(Server {
            listener,
            path: path.to_path_buf(),
            paused_until: None,
        })
    }

    /// The socket to poll, unless accepting is paused.
    pub(crate) fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.paused_until.is_none().then(|| self.listener.as_fd())
    }

    /// The next request waiting, with its client; `None` when none waits. A line that is not a
    /// request is answered here.
    pub(crate) fn next(&mut self, now: Instant) -> Option<(Client, Request)> {
        if let Some(until) = self.paused_until {
            if now < until {
                return None;
            }
            self.paused_until = None;
        }
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // Out of descriptors, most likely: the socket stays readable, so polling it
                    // again at once would spin.
                    warn!(error = %e, pause_ms = ACCEPT_BACKOFF.as_millis() as u64, "control socket accept failed; backing off");
                    self.paused_until = Some(now + ACCEPT_BACKOFF);
                    return None;
                }
            };
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
            let mut line = String::new();
            let request = BufReader::new(&stream)
                .read_line(&mut line)
                .ok()
                .and_then(|_| serde_json::from_str::<Request>(&line).ok());
            let client = Client(stream);
            match request {
                Some(request) => return Some((client, request)),
                None => client.reply(&Response::error(format!(
                    "not a control request: {:?}",
                    line.trim()
                ))),
            }
        }
    }

    /// Closes the socket and removes its file.
    pub(crate) fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Client {
    /// Answers, and hangs up.
    pub(crate) fn reply(mut self, response: &Response) {
        let _ = self.0.set_write_timeout(Some(WRITE_TIMEOUT));
        if let Ok(mut line) = serde_json::to_string(response) {
            line.push('\n');
            let _ = self.0.write_all(line.as_bytes());
        }
    }
}

/// Formats a status as the table `arbiter status` prints.
pub fn render(status: &Status) -> String {
    let mut out = format!(
        "arbiter pid {}  {}  generation {}  up {}  config {}\n",
        status.pid,
        status.phase,
        status.generation,
        human(status.uptime_secs),
        status.config
    );
    out.push_str(&format!("listening on {}\n", status.listeners.join(", ")));
    out.push_str(&format!("memory budget: {}\n", status.budget));
    out.push_str(&format!(
        "memory in use: {} (PSS of the arbiter and its workers)\n",
        mib(status.total_pss_bytes)
    ));
    if !status.models.is_empty() {
        out.push_str(&format!(
            "\n{:<24}  {:>7}  {:<7}  {}\n",
            "MODEL", "VERSION", "DEFAULT", "PATH"
        ));
        for m in &status.models {
            out.push_str(&format!(
                "{:<24}  {:>7}  {:<7}  {}\n",
                m.name,
                m.version,
                if m.default { "yes" } else { "" },
                m.path
            ));
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "workers: {} running, {} wanted, {} restarts\n\n",
        status.workers.len(),
        status.target_workers,
        status.worker_restarts
    ));
    out.push_str(&format!(
        "{:>4}  {:>8}  {:>3}  {:<9}  {:>8}  {:>9}  {:>8}  {:>9}  {:>9}\n",
        "SLOT", "PID", "GEN", "STATE", "UPTIME", "REQUESTS", "RESTARTS", "PRIVATE", "SHARED"
    ));
    for w in &status.workers {
        out.push_str(&format!(
            "{:>4}  {:>8}  {:>3}  {:<9}  {:>8}  {:>9}  {:>8}  {:>9}  {:>9}\n",
            w.slot,
            w.pid,
            w.generation,
            w.state,
            human(w.uptime_secs),
            w.requests,
            w.restarts,
            mib(w.private_bytes),
            mib(w.shared_bytes)
        ));
    }
    if !status.programs.is_empty() {
        out.push_str(&format!(
            "\n{:<16}  {:<9}  {:>8}  {:>8}  {:>8}  {}\n",
            "PROGRAM", "STATE", "PID", "UPTIME", "RESTARTS", "LAST EXIT"
        ));
        for p in &status.programs {
            out.push_str(&format!(
                "{:<16}  {:<9}  {:>8}  {:>8}  {:>8}  {}\n",
                p.name,
                p.state,
                p.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                if p.pid.is_some() {
                    human(p.uptime_secs)
                } else {
                    "-".into()
                },
                p.restarts,
                p.last_exit.as_deref().unwrap_or("-")
            ));
        }
    }
    out
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

fn human(secs: f64) -> String {
    let s = secs as u64;
    match s {
        0..=59 => format!("{secs:.1}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_json_lines() {
        for r in [
            Request::Status,
            Request::Reload,
            Request::Stop { now: true },
            Request::Ttin,
            Request::Ttou,
        ] {
            let text = serde_json::to_string(&r).unwrap();
            assert!(!text.contains('\n'));
            assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r);
        }
        assert_eq!(
            serde_json::to_string(&Request::Stop { now: false }).unwrap(),
            r#"{"command":"stop","now":false}"#
        );
    }
}
