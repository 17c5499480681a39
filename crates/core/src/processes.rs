//! The real processes behind the supervisor's [`Processes`] and [`Slots`]: `fork` into a
//! worker, `kill`, `waitpid`, and the shared-memory scoreboard. The child side of the fork
//! lives here too: it sheds the arbiter's state, drops privileges and runs the binary's worker.

use arbiter_config::{Bind, Config};
use arbiter_scoreboard::{EXIT_BOOT_FAILURE, Scoreboard};
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};
use tracing::warn;

use crate::control::Server;
use crate::listeners::Listener;
use crate::phase::{Exit, Seen};
use crate::supervisor::{Processes, Slots};
use crate::sys;

/// The signals the arbiter handles; a forked worker resets them all to their defaults.
pub(crate) const SIGNALS: [Signal; 8] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGHUP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGUSR1,
    Signal::SIGCHLD,
];

/// What the binary plugs into the arbiter: the worker's body, and log reopening.
pub trait Hooks {
    /// Runs a worker in the freshly forked child and returns its exit code. Signals are back to
    /// their defaults, the arbiter's own descriptors are closed, privileges are dropped.
    fn worker(&self, config: &Config, spec: WorkerSpec) -> i32;
    /// USR1: reopen log files.
    fn reopen_logs(&self);
}

/// Everything a worker gets from the arbiter.
#[derive(Debug)]
pub struct WorkerSpec {
    /// Its scoreboard slot, also its `worker` label in metrics.
    pub slot: usize,
    /// The generation it belongs to.
    pub generation: u64,
    /// The inherited listening sockets.
    pub listeners: Vec<Listener>,
    /// The shared scoreboard.
    pub scoreboard: Scoreboard,
    /// Retire after this many requests (jitter already applied).
    pub max_requests: Option<u64>,
}

/// The operating system's processes, borrowed from the arbiter for one turn of its loop: what a
/// forked child needs to become a worker, and what it must shed.
pub(crate) struct Os<'a, H: Hooks> {
    /// The binary's worker body.
    pub(crate) hooks: &'a H,
    /// The listening sockets: the child keeps them, as its own.
    pub(crate) listeners: &'a mut Vec<(Bind, Listener)>,
    /// The control socket: the child closes it.
    pub(crate) control: &'a mut Option<Server>,
    /// The shared scoreboard.
    pub(crate) scoreboard: &'a Scoreboard,
}

impl<H: Hooks> Processes for Os<'_, H> {
    fn spawn(
        &mut self,
        slot: usize,
        generation: u64,
        config: &Config,
        max_requests: Option<u64>,
    ) -> Result<i32, String> {
        self.scoreboard.slot(slot).reset(0, generation);
        let arbiter_pid = std::process::id();
        match sys::fork() {
            Ok(ForkResult::Child) => {
                let code = self.become_worker(arbiter_pid, slot, generation, config, max_requests);
                std::process::exit(code);
            }
            Ok(ForkResult::Parent { child }) => {
                self.scoreboard.slot(slot).set_pid(child.as_raw() as u32);
                Ok(child.as_raw())
            }
            Err(e) => {
                self.scoreboard.slot(slot).free();
                Err(e.to_string())
            }
        }
    }

    fn kill(&mut self, pid: i32, signal: Signal) {
        let _ = kill(Pid::from_raw(pid), signal);
    }

    fn reap(&mut self) -> Option<(i32, Exit)> {
        reap()
    }
}

impl<H: Hooks> Os<'_, H> {
    /// In the forked child: shed the arbiter's state, drop privileges, run the worker.
    fn become_worker(
        &mut self,
        arbiter_pid: u32,
        slot: usize,
        generation: u64,
        config: &Config,
        max_requests: Option<u64>,
    ) -> i32 {
        sys::reset_signals(&SIGNALS);
        sys::tune_malloc();
        *self.control = None;
        let listeners = std::mem::take(self.listeners)
            .into_iter()
            .map(|(_, l)| l)
            .collect();
        if let Err(e) = crate::privileges::drop_to(config) {
            self.scoreboard.slot(slot).set_boot_error(&e.to_string());
            return EXIT_BOOT_FAILURE;
        }
        // Die with the arbiter: a worker must never outlive it holding the socket. SIGKILL, not
        // a drain: nobody is left to replace it or to stop it later. Asked after dropping
        // privileges, which clears the setting; then the parent is checked, since an arbiter
        // that died before the request would never send the signal.
        let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
        if nix::unistd::getppid().as_raw() as u32 != arbiter_pid {
            return 1;
        }
        let spec = WorkerSpec {
            slot,
            generation,
            listeners,
            scoreboard: self.scoreboard.clone(),
            max_requests,
        };
        self.hooks.worker(config, spec)
    }
}

/// One exited child, workers, programs and, as PID 1, orphans alike; `None` once none waits.
pub(crate) fn reap() -> Option<(i32, Exit)> {
    loop {
        return match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => Some((pid.as_raw(), Exit::Code(code))),
            Ok(WaitStatus::Signaled(pid, signal, _)) => Some((pid.as_raw(), Exit::Signal(signal))),
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => None,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => {
                warn!(error = %e, "waitpid failed");
                None
            }
        };
    }
}

impl Slots for Scoreboard {
    fn seen(&self, slot: usize) -> Seen {
        let slot = self.slot(slot);
        Seen {
            state: slot.state(),
            heartbeat_age: slot.heartbeat_age(),
        }
    }

    fn requests_served(&self, slot: usize) -> u64 {
        self.slot(slot).requests_served()
    }

    fn boot_error(&self, slot: usize) -> Option<String> {
        self.slot(slot).boot_error()
    }

    fn free(&self, slot: usize) {
        self.slot(slot).free();
    }

    fn count_restart(&self) {
        self.inc_worker_restarts();
    }
}
