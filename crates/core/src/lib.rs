//! The arbiter: a single-threaded pre-fork supervisor, gunicorn's arbiter and supervisord in one.
//!
//! How it works: [`Arbiter::new`] checks the memory budget, claims the pidfile, binds every
//! listener and the control socket, and creates the shared-memory scoreboard, all before any
//! fork. [`Arbiter::run`] then forks the workers; each child resets the signal dispositions,
//! drops privileges and runs the body the binary supplies through [`Hooks::worker`] (where
//! tokio and ONNX Runtime start, after the fork). Workers report their state and heartbeat
//! through their scoreboard slot; the arbiter reads the slots on every 100 ms tick, and acts on
//! signals (TERM, INT, QUIT, HUP, TTIN, TTOU, USR1, CHLD) and control-socket commands.
//!
//! The loop (`arbiter`) owns what is a descriptor or a file: listeners, the control socket
//! (`control`), the signal pipe, the programs (`programs`). The workers' phases, the rolling
//! reload and the stop are a state machine (`supervisor`, `phase`) that reaches processes and
//! the scoreboard only through two small traits, so its transitions are unit-tested with a fake
//! process table; `processes` holds the real fork, kill and waitpid.
//!
//! This crate knows the config and the OS, nothing of HTTP, tokio or ONNX Runtime, and never
//! starts a thread: a child forked from a process with threads can deadlock on a lock some
//! thread held at the fork.
//!
//! | signal | action |
//! |---|---|
//! | TERM | graceful stop: workers finish in-flight requests within `graceful_timeout`, then KILL |
//! | INT, QUIT | fast stop |
//! | HUP | reload: re-read and validate the config; roll the workers onto it, no request failing |
//! | TTIN, TTOU | one worker more, one less |
//! | USR1 | reopen log files |
//! | CHLD | reap every child (orphans too, as PID 1) |
//!
//! Under systemd (`deploy/systemd/`), the arbiter adopts the sockets of a socket unit
//! (`LISTEN_FDS`, matched to the binds that name them), and reports through `NOTIFY_SOCKET`:
//! `READY=1` once the first generation answers, `RELOADING=1` and `READY=1` around a HUP
//! reload (`Type=notify-reload`), `STOPPING=1`, `STATUS=` lines and the watchdog's pings. The
//! pidfile is locked for the arbiter's life, and workers and programs die with it
//! (`PR_SET_PDEATHSIG`), so a killed arbiter leaves nothing serving.

mod arbiter;
mod backoff;
pub mod budget;
pub mod control;
pub mod listeners;
mod notify;
mod phase;
pub mod pidfile;
mod privileges;
mod processes;
pub mod programs;
mod status;
mod supervisor;
mod sys;

pub use arbiter::Arbiter;
pub use listeners::Listener;
pub use processes::{Hooks, WorkerSpec};
pub use sys::{Daemon, daemonize, set_env};

use std::path::PathBuf;

/// What can go wrong in the arbiter.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] arbiter_config::LoadError),
    /// The workers do not fit in memory.
    #[error("{0}")]
    OverBudget(String),
    /// The budget could not be computed.
    #[error("memory budget: {0}")]
    Budget(String),
    /// Another arbiter owns the pidfile.
    #[error("an arbiter is already running with pid {pid} (pidfile {})", pidfile.display())]
    AlreadyRunning {
        /// Its pid.
        pid: u32,
        /// The pidfile.
        pidfile: PathBuf,
    },
    /// The pidfile could not be written.
    #[error("cannot write the pidfile {}", path.display())]
    Pidfile {
        /// The pidfile.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A listening socket could not be bound.
    #[error("cannot listen on {address}")]
    Bind {
        /// The address.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// User or group switching failed, or workers would run as root.
    #[error("{0}")]
    Privileges(String),
    /// The process already has threads, so forking would be unsafe.
    #[error(
        "the arbiter must be single-threaded before it forks, but this process has {0} threads"
    )]
    Threads(usize),
    /// Workers failed to boot again and again.
    #[error("workers cannot start: {0}")]
    WorkersFailed(String),
    /// A command that cannot be carried out now.
    #[error("{0}")]
    Refused(String),
    /// An operating-system error.
    #[error(transparent)]
    Io(std::io::Error),
}
