//! The arbiter's event loop: one thread, one `poll`, a tick every 100 ms.
//!
//! Each turn it drains the signal pipe, reaps every exited child, answers the control socket,
//! then supervises: it promotes workers whose slot says ready, kills those past their boot
//! deadline or heartbeat timeout, kills draining ones past the grace period, and forks what is
//! missing. A reload rolls: it forks one worker of the new generation, waits until it is ready,
//! retires one of the old, and so on, so at most N + 1 workers ever hold a model (the budget's
//! +1) and the old generation serves until its replacements do.
//! A reload asked for while one rolls is queued: once the rolling one ends, the config is read
//! again and another reload rolls, so an edit made after the first HUP is never lost.
//!
//! A worker that dies is replaced at once. Only a worker that dies without ever serving a
//! request, within `STABLE_AFTER` of becoming ready, looks like a crash loop and feeds the
//! restart backoff; a worker killed after doing its work (the OOM killer, an operator, chaos)
//! must not cost the service its capacity.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

use arbiter_config::{Bind, Config};
use arbiter_scoreboard::{EXIT_BOOT_FAILURE, Scoreboard, SlotState};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};
use tracing::{debug, error, info, warn};

use crate::backoff::Backoff;
use crate::control::{Request, Response, Status, WorkerStatus};
use crate::listeners::{self, Listener};
use crate::pidfile::Pidfile;
use crate::programs::Programs;
use crate::{Error, budget, sys};

/// Consecutive boot failures after which the arbiter gives up.
const MAX_BOOT_FAILURES: u32 = 3;
/// How often the loop wakes without an event.
const TICK: Duration = Duration::from_millis(100);
/// A worker that answered a request, or stayed ready this long, was not caught in a crash loop:
/// when it dies it is replaced at once, however many others died recently. Only crashes of
/// workers that never served feed the restart backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// How long the control socket is left alone after accept failed (out of descriptors), instead
/// of spinning on a socket that stays readable.
const CONTROL_BACKOFF: Duration = Duration::from_secs(1);
/// Slots in the scoreboard: room for the workers, a reload's replacements and TTIN.
const SLOTS: usize = 128;
/// The signals the arbiter handles; a forked worker resets them all to their defaults.
const SIGNALS: [Signal; 8] = [
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
    /// ONNX Runtime intra-op threads for this worker.
    pub threads: usize,
}

/// Where a worker is, as the arbiter sees it.
#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// Forked; must be ready by the deadline.
    Booting { deadline: Instant },
    /// Serving; must heart-beat.
    Ready,
    /// Told to stop (TERM); killed at the deadline.
    Draining { kill_at: Instant },
    /// Sent SIGKILL, for this reason; waiting to be reaped.
    Killed { reason: &'static str },
}

#[derive(Debug)]
struct Worker {
    slot: usize,
    generation: u64,
    started: Instant,
    /// When it became ready.
    ready_at: Option<Instant>,
    phase: Phase,
}

/// A config and the number it runs under.
#[derive(Debug, Clone)]
struct Generation {
    number: u64,
    config: Rc<Config>,
    target: usize,
}

/// A reload in progress: what to go back to if the new generation cannot boot.
#[derive(Debug)]
struct Reload {
    previous: Generation,
    /// Who asked for this reload, answered when it ends.
    replies: Vec<UnixStream>,
    /// A reload was asked for while this one rolled: once it ends, the config is read again and
    /// another reload follows (an edit made after the first HUP is never lost).
    again: bool,
    /// Who asked for that next reload.
    next_replies: Vec<UnixStream>,
}

/// A stop in progress. Programs stop first; workers are told once they are gone (at once for a
/// fast stop), and killed at `deadline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stop {
    fast: bool,
    /// Set when the workers were told to stop.
    deadline: Option<Instant>,
}

/// The pipe the signal handlers write to, to wake `poll`.
#[derive(Debug)]
struct Signals {
    wake_read: UnixStream,
    _wake_write: UnixStream,
}

impl Signals {
    fn install() -> Result<Signals, Error> {
        let (wake_read, wake_write) = UnixStream::pair().map_err(Error::Io)?;
        wake_read.set_nonblocking(true).map_err(Error::Io)?;
        wake_write.set_nonblocking(true).map_err(Error::Io)?;
        sys::install_handlers(&SIGNALS, wake_write.as_raw_fd()).map_err(|e| Error::Io(e.into()))?;
        Ok(Signals {
            wake_read,
            _wake_write: wake_write,
        })
    }

    /// The signals received since the last call, in a fixed order.
    fn take(&self) -> Vec<Signal> {
        let mut buf = [0u8; 64];
        while matches!(std::io::Read::read(&mut &self.wake_read, &mut buf), Ok(n) if n > 0) {}
        SIGNALS
            .into_iter()
            .filter(|s| sys::take_signal(*s))
            .collect()
    }
}

/// The arbiter: owns the listeners, the scoreboard and every worker process.
pub struct Arbiter<H: Hooks> {
    hooks: H,
    current: Generation,
    next_generation: u64,
    listeners: Vec<(Bind, Listener)>,
    scoreboard: Scoreboard,
    workers: BTreeMap<i32, Worker>,
    slot_restarts: Vec<u64>,
    backoff: Backoff,
    boot_failures: u32,
    last_boot_error: Option<String>,
    reload: Option<Reload>,
    stop: Option<Stop>,
    fatal: Option<String>,
    signals: Signals,
    control: Option<UnixListener>,
    /// Set after a failed accept on the control socket: leave it alone until then.
    control_paused_until: Option<Instant>,
    programs: Programs,
    programs_started: bool,
    started: Instant,
    seed: u64,
    _pidfile: Pidfile,
}

impl<H: Hooks> std::fmt::Debug for Arbiter<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arbiter")
            .field("generation", &self.current.number)
            .field("workers", &self.workers)
            .finish()
    }
}

impl<H: Hooks> Arbiter<H> {
    /// Checks the budget, claims the pidfile, binds every listener and the control socket.
    /// Nothing is forked yet.
    pub fn new(config: Config, hooks: H) -> Result<Arbiter<H>, Error> {
        if sys::thread_count() != 1 {
            return Err(Error::Threads(sys::thread_count()));
        }
        crate::privileges::check_start(&config)?;
        crate::privileges::prepare_dirs(&config)?;
        let budget = budget::compute(&config, config.server.workers, 0)?;
        budget.check()?;
        info!(%budget, "memory budget");
        let pidfile = Pidfile::create(&config.server.pidfile)?;
        let mut bound = Vec::new();
        for bind in &config.server.bind {
            let listener = listeners::bind(bind, config.server.backlog)?;
            info!(listener = %listener.describe(), "listening");
            bound.push((bind.clone(), listener));
        }
        for listener in listeners::from_systemd().map_err(Error::Io)? {
            info!(listener = %listener.describe(), "listening (socket activation)");
            bound.push((Bind::Fd(listener.fd()), listener));
        }
        let control = bind_control(&config.server.control_socket)?;
        let scoreboard =
            Scoreboard::create(SLOTS).map_err(|e| Error::Io(std::io::Error::other(e)))?;
        let signals = Signals::install()?;
        let target = config.server.workers;
        let programs = Programs::new(&config.programs);
        let seed = std::process::id() as u64 ^ Instant::now().elapsed().as_nanos() as u64;
        Ok(Arbiter {
            hooks,
            current: Generation {
                number: 1,
                config: Rc::new(config),
                target,
            },
            next_generation: 2,
            listeners: bound,
            scoreboard,
            workers: BTreeMap::new(),
            slot_restarts: vec![0; SLOTS],
            backoff: Backoff::default(),
            boot_failures: 0,
            last_boot_error: None,
            reload: None,
            stop: None,
            fatal: None,
            signals,
            control: Some(control),
            control_paused_until: None,
            programs,
            programs_started: false,
            started: Instant::now(),
            seed,
            _pidfile: pidfile,
        })
    }

    /// Runs until stopped. `Ok` after a stop asked for (TERM, INT, QUIT, `arbiter stop`);
    /// `Err` when workers cannot boot.
    pub fn run(mut self) -> Result<(), Error> {
        info!(
            pid = std::process::id(),
            workers = self.current.target,
            generation = self.current.number,
            "arbiter started"
        );
        loop {
            self.wait();
            for signal in self.signals.take() {
                self.on_signal(signal);
            }
            self.reap();
            self.serve_control();
            self.supervise();
            if self.stop.is_some() && self.workers.is_empty() && self.programs.all_stopped() {
                break;
            }
        }
        self.cleanup();
        match self.fatal.take() {
            Some(message) => Err(Error::WorkersFailed(message)),
            None => {
                info!("arbiter stopped");
                Ok(())
            }
        }
    }

    fn wait(&self) {
        let mut fds = vec![PollFd::new(
            self.signals.wake_read.as_fd(),
            PollFlags::POLLIN,
        )];
        if let Some(control) = &self.control
            && self.control_paused_until.is_none()
        {
            fds.push(PollFd::new(control.as_fd(), PollFlags::POLLIN));
        }
        for fd in self.programs.fds() {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        match poll(
            &mut fds,
            PollTimeout::try_from(TICK).unwrap_or(PollTimeout::NONE),
        ) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => warn!(error = %e, "poll failed"),
        }
    }

    fn on_signal(&mut self, signal: Signal) {
        match signal {
            Signal::SIGTERM => self.begin_stop(false),
            Signal::SIGINT | Signal::SIGQUIT => self.begin_stop(true),
            Signal::SIGHUP => self.begin_reload(Vec::new()),
            Signal::SIGTTIN => {
                if let Err(e) = self.scale(1) {
                    error!("TTIN refused: {e}");
                }
            }
            Signal::SIGTTOU => {
                if let Err(e) = self.scale(-1) {
                    error!("TTOU refused: {e}");
                }
            }
            Signal::SIGUSR1 => {
                info!("reopening log files");
                self.hooks.reopen_logs();
                // Ready workers handle USR1 (a booting one would die of it) and reopen theirs.
                for (&pid, worker) in &self.workers {
                    if worker.phase == Phase::Ready {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGUSR1);
                    }
                }
            }
            _ => {} // SIGCHLD: reaping happens every turn.
        }
    }

    /// Reaps every exited child, its own workers and, as PID 1, orphans too.
    fn reap(&mut self) {
        loop {
            let (pid, code, signal) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, Some(code), None),
                Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, None, Some(signal)),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    warn!(error = %e, "waitpid failed");
                    return;
                }
            };
            match self.workers.remove(&pid.as_raw()) {
                Some(worker) => self.on_exit(pid, worker, code, signal),
                None if self.programs.on_exit(pid.as_raw(), code, signal) => {}
                None => debug!(pid = pid.as_raw(), ?code, ?signal, "reaped an orphan"),
            }
        }
    }

    fn on_exit(&mut self, pid: Pid, worker: Worker, code: Option<i32>, signal: Option<Signal>) {
        let slot = self.scoreboard.slot(worker.slot);
        let boot_error = slot.boot_error();
        let served = slot.requests_served();
        slot.free();
        // Dying before doing any work looks like a crash loop; dying after is just a crash.
        let crash_loop = served == 0 && worker.ready_at.is_none_or(|t| t.elapsed() < STABLE_AFTER);
        let fields = (worker.slot, pid.as_raw(), worker.generation);
        let how = match (code, signal) {
            (Some(c), _) => format!("exit code {c}"),
            (_, Some(s)) => format!("signal {s}"),
            _ => "unknown".into(),
        };
        match &worker.phase {
            Phase::Draining { .. } => {
                info!(worker = fields.0, pid = fields.1, generation = fields.2, status = %how, "worker retired")
            }
            Phase::Killed { reason } => {
                warn!(
                    worker = fields.0,
                    pid = fields.1,
                    generation = fields.2,
                    reason,
                    "killed worker reaped"
                );
                if *reason == "boot timeout" {
                    self.boot_failed(format!(
                        "worker did not become ready within boot_timeout ({:?})",
                        self.current.config.server.boot_timeout
                    ));
                } else {
                    self.count_restart(worker.slot, crash_loop);
                }
            }
            Phase::Ready if code == Some(0) => {
                info!(
                    worker = fields.0,
                    pid = fields.1,
                    generation = fields.2,
                    "worker recycled (max_requests)"
                )
            }
            Phase::Booting { .. } => {
                let message =
                    boot_error.unwrap_or_else(|| format!("worker exited during boot ({how})"));
                error!(worker = fields.0, pid = fields.1, generation = fields.2, error = %message, "worker failed to boot");
                self.boot_failed(message);
            }
            _ => {
                error!(worker = fields.0, pid = fields.1, generation = fields.2, status = %how, served, "worker crashed");
                self.count_restart(worker.slot, crash_loop);
            }
        }
    }

    /// Counts a crashed or hung worker; a crash loop's also delays the next replacements.
    fn count_restart(&mut self, slot: usize, crash_loop: bool) {
        self.scoreboard.inc_worker_restarts();
        self.slot_restarts[slot] += 1;
        if crash_loop {
            self.backoff.record(Instant::now());
        }
    }

    fn boot_failed(&mut self, message: String) {
        self.boot_failures += 1;
        self.backoff.record(Instant::now());
        self.last_boot_error = Some(message.clone());
        if self.boot_failures < MAX_BOOT_FAILURES || self.stop.is_some() {
            return;
        }
        let summary = format!(
            "workers failed to boot {} times in a row; the last error: {message}",
            self.boot_failures
        );
        if self.reload.is_some() {
            self.abort_reload(&summary);
        } else {
            error!("{summary}; stopping");
            self.fatal = Some(message);
            self.begin_stop(true);
        }
    }

    /// Kills what lingers, promotes ready workers, and forks what is missing.
    fn supervise(&mut self) {
        let now = Instant::now();
        self.programs
            .tick(self.stop.is_some(), &self.current.config.programs);
        let heartbeat_timeout = self.current.config.server.heartbeat_timeout;
        let mut kills = Vec::new();
        for (&pid, worker) in self.workers.iter_mut() {
            let slot = self.scoreboard.slot(worker.slot);
            match worker.phase {
                Phase::Booting { deadline } => {
                    if slot.state() == SlotState::Ready {
                        worker.phase = Phase::Ready;
                        worker.ready_at = Some(now);
                        self.boot_failures = 0;
                        info!(
                            worker = worker.slot,
                            pid,
                            generation = worker.generation,
                            boot_ms = worker.started.elapsed().as_millis() as u64,
                            "worker ready"
                        );
                    } else if now > deadline {
                        kills.push((pid, "boot timeout"));
                    }
                }
                Phase::Ready => {
                    if slot.state() == SlotState::Draining {
                        // The worker retires itself (max_requests); its replacement starts now.
                        info!(
                            worker = worker.slot,
                            pid,
                            generation = worker.generation,
                            "worker recycling itself (max_requests)"
                        );
                        worker.phase = Phase::Draining {
                            kill_at: now + self.current.config.server.graceful_timeout,
                        };
                    } else if slot.heartbeat_age() > heartbeat_timeout {
                        kills.push((pid, "no heartbeat"));
                    }
                }
                Phase::Draining { kill_at } if now > kill_at => {
                    kills.push((pid, "graceful timeout"))
                }
                _ => {}
            }
        }
        for (pid, reason) in kills {
            if let Some(worker) = self.workers.get_mut(&pid) {
                warn!(
                    worker = worker.slot,
                    pid,
                    generation = worker.generation,
                    reason,
                    "killing worker"
                );
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                // A worker past its graceful timeout is not a crash; it is just gone.
                worker.phase = if reason == "graceful timeout" {
                    Phase::Draining {
                        kill_at: far_future(),
                    }
                } else {
                    Phase::Killed { reason }
                };
            }
        }
        if let Some(stop) = self.stop {
            match stop.deadline {
                None if stop.fast || self.programs.all_stopped() => self.stop_workers(stop.fast),
                Some(deadline) if now > deadline => {
                    for &pid in self.workers.keys() {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
                _ => {}
            }
            return;
        }
        self.maintain(now);
        // Programs (a reverse proxy, say) start once the workers behind them first serve.
        if !self.programs_started && self.reload.is_none() {
            let ready = self
                .workers
                .values()
                .filter(|w| w.phase == Phase::Ready)
                .count();
            if ready >= self.current.target {
                self.programs_started = true;
                self.programs.start_all();
            }
        }
    }

    fn live(&self, generation: impl Fn(u64) -> bool) -> Vec<i32> {
        self.workers
            .iter()
            .filter(|(_, w)| {
                generation(w.generation) && matches!(w.phase, Phase::Booting { .. } | Phase::Ready)
            })
            .map(|(pid, _)| *pid)
            .collect()
    }

    fn maintain(&mut self, now: Instant) {
        let current = self.current.number;
        let new = self.live(|g| g == current);
        let old = self.live(|g| g < current);
        let ready_new = new
            .iter()
            .filter(|p| self.workers[p].phase == Phase::Ready)
            .count();
        let booting_new = new.len() - ready_new;
        let may_start = self.backoff.next_start().is_none_or(|t| now >= t) && self.fatal.is_none();

        if old.is_empty() {
            if may_start {
                for _ in new.len()..self.current.target {
                    self.spawn();
                }
            }
            // TTOU or a smaller reload: retire the newest extras.
            for pid in new
                .iter()
                .rev()
                .take(new.len().saturating_sub(self.current.target))
            {
                self.retire(*pid);
            }
            if self.reload.is_some() && booting_new == 0 && new.len() == self.current.target {
                self.finish_reload();
            }
            return;
        }
        // Rolling: one new worker boots at a time; each one ready retires one old.
        if booting_new == 0 && new.len() < self.current.target && may_start {
            self.spawn();
        }
        let surplus = (old.len() + ready_new).saturating_sub(self.current.target);
        let all_new_ready = new.len() >= self.current.target && booting_new == 0;
        let retire = if all_new_ready {
            old.len()
        } else {
            surplus.min(old.len())
        };
        for pid in old.iter().take(retire) {
            self.retire(*pid);
        }
    }

    fn retire(&mut self, pid: i32) {
        let grace = self.current.config.server.graceful_timeout;
        if let Some(worker) = self.workers.get_mut(&pid) {
            info!(
                worker = worker.slot,
                pid,
                generation = worker.generation,
                "retiring worker"
            );
            worker.phase = Phase::Draining {
                kill_at: Instant::now() + grace,
            };
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }

    fn free_slot(&self) -> Option<usize> {
        (0..SLOTS).find(|i| !self.workers.values().any(|w| w.slot == *i))
    }

    fn spawn(&mut self) {
        let Some(slot) = self.free_slot() else {
            error!("no free scoreboard slot: too many workers");
            return;
        };
        let config = Rc::clone(&self.current.config);
        let generation = self.current.number;
        let max_requests = config
            .server
            .max_requests
            .map(|base| base + self.jitter(config.server.max_requests_jitter));
        let threads =
            config.threads_per_worker(std::thread::available_parallelism().map_or(1, |n| n.get()));
        self.scoreboard.slot(slot).reset(0, generation);
        let arbiter_pid = std::process::id();
        match sys::fork() {
            Ok(ForkResult::Child) => {
                let code = self.become_worker(
                    arbiter_pid,
                    slot,
                    generation,
                    &config,
                    max_requests,
                    threads,
                );
                std::process::exit(code);
            }
            Ok(ForkResult::Parent { child }) => {
                self.scoreboard.slot(slot).set_pid(child.as_raw() as u32);
                info!(
                    worker = slot,
                    pid = child.as_raw(),
                    generation,
                    "worker booting"
                );
                let deadline = Instant::now() + config.server.boot_timeout;
                self.workers.insert(
                    child.as_raw(),
                    Worker {
                        slot,
                        generation,
                        started: Instant::now(),
                        ready_at: None,
                        phase: Phase::Booting { deadline },
                    },
                );
            }
            Err(e) => {
                error!(error = %e, "fork failed");
                self.scoreboard.slot(slot).free();
                self.backoff.record(Instant::now());
            }
        }
    }

    /// In the forked child: shed the arbiter's state, drop privileges, run the worker.
    fn become_worker(
        &mut self,
        arbiter_pid: u32,
        slot: usize,
        generation: u64,
        config: &Config,
        max_requests: Option<u64>,
        threads: usize,
    ) -> i32 {
        sys::reset_signals(&SIGNALS);
        sys::tune_malloc();
        // Die with the arbiter: a worker must never outlive it holding the socket.
        let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
        if nix::unistd::getppid().as_raw() as u32 != arbiter_pid {
            return 1;
        }
        self.control = None;
        let listeners = std::mem::take(&mut self.listeners)
            .into_iter()
            .map(|(_, l)| l)
            .collect();
        if let Err(e) = crate::privileges::drop_to(config) {
            self.scoreboard.slot(slot).set_boot_error(&e.to_string());
            return EXIT_BOOT_FAILURE;
        }
        let spec = WorkerSpec {
            slot,
            generation,
            listeners,
            scoreboard: self.scoreboard.clone(),
            max_requests,
            threads,
        };
        self.hooks.worker(config, spec)
    }

    fn jitter(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        // xorshift: no need for a cryptographic generator to spread recycling.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        self.seed % (max + 1)
    }

    fn begin_stop(&mut self, fast: bool) {
        match self.stop {
            Some(Stop { fast: true, .. }) => return,
            Some(_) if !fast => return,
            _ => {}
        }
        info!(graceful = !fast, workers = self.workers.len(), "stopping");
        self.stop = Some(Stop {
            fast,
            deadline: None,
        });
        if let Some(reload) = self.reload.take() {
            for stream in reload.replies.into_iter().chain(reload.next_replies) {
                reply(stream, &Response::error("the arbiter is stopping"));
            }
        }
        // Programs first: a reverse proxy stops accepting before the workers drain.
        self.programs.stop_all();
    }

    /// Tells every worker to stop, and stops accepting: the workers hold their own copies of
    /// the listeners and close them as they drain.
    fn stop_workers(&mut self, fast: bool) {
        let now = Instant::now();
        let deadline = if fast {
            now + Duration::from_secs(2)
        } else {
            now + self.current.config.server.graceful_timeout
        };
        self.stop = Some(Stop {
            fast,
            deadline: Some(deadline),
        });
        for (_, listener) in &self.listeners {
            listener.cleanup();
        }
        self.listeners.clear();
        let signal = if fast {
            Signal::SIGQUIT
        } else {
            Signal::SIGTERM
        };
        for (&pid, worker) in self.workers.iter_mut() {
            let _ = kill(Pid::from_raw(pid), signal);
            if !matches!(worker.phase, Phase::Killed { .. }) {
                worker.phase = Phase::Draining { kill_at: deadline };
            }
        }
    }

    fn scale(&mut self, delta: i64) -> Result<String, Error> {
        if self.stop.is_some() {
            return Err(Error::Refused("the arbiter is stopping".into()));
        }
        let target = self.current.target as i64 + delta;
        if target < 1 {
            return Err(Error::Refused("already at 1 worker".into()));
        }
        let target = target as usize;
        if delta > 0 {
            let budget = budget::compute(&self.current.config, target, self.held_memory())?;
            budget.check()?;
        }
        self.current.target = target;
        let message = format!("now {target} workers");
        info!(workers = target, "scaled");
        Ok(message)
    }

    /// Memory the running workers hold, counted back into the host's available memory: their
    /// PSS, so weights they share are counted once.
    fn held_memory(&self) -> u64 {
        self.workers
            .keys()
            .filter_map(|pid| Memory::of(*pid))
            .map(|m| m.pss)
            .sum()
    }

    /// Starts a reload for `clients` (none for a HUP), or queues one after the reload rolling.
    fn begin_reload(&mut self, clients: Vec<UnixStream>) {
        if self.stop.is_some() {
            for c in clients {
                reply(c, &Response::error("the arbiter is stopping"));
            }
            return;
        }
        if let Some(reload) = self.reload.as_mut() {
            info!(
                "a reload is in progress; another follows once it ends, with the config as it is then"
            );
            reload.again = true;
            reload.next_replies.extend(clients);
            return;
        }
        match self.prepare_reload() {
            Ok(generation) => {
                info!(
                    generation = generation.number,
                    workers = generation.target,
                    "reloading"
                );
                let previous = std::mem::replace(&mut self.current, generation);
                self.boot_failures = 0;
                self.reload = Some(Reload {
                    previous,
                    replies: clients,
                    again: false,
                    next_replies: Vec::new(),
                });
            }
            Err(e) => {
                error!("reload refused, nothing changed: {e}");
                for c in clients {
                    reply(
                        c,
                        &Response::error(format!("reload refused, nothing changed: {e}")),
                    );
                }
            }
        }
    }

    fn prepare_reload(&mut self) -> Result<Generation, Error> {
        let config = Config::load(&self.current.config.file)?;
        crate::privileges::prepare_dirs(&config)?;
        let budget = budget::compute(&config, config.server.workers, self.held_memory())?;
        budget.check()?;
        // Bind what is new; keep what stays; close what is gone (workers keep their copies).
        let mut next = Vec::new();
        for bind in &config.server.bind {
            match self.listeners.iter().position(|(b, _)| b == bind) {
                Some(i) => next.push(self.listeners.remove(i)),
                None => next.push((bind.clone(), listeners::bind(bind, config.server.backlog)?)),
            }
        }
        // Sockets inherited from systemd stay whatever the file says.
        let inherited: Vec<_> = self
            .listeners
            .extract_if(.., |(b, _)| matches!(b, Bind::Fd(_)))
            .collect();
        next.extend(inherited);
        for (_, gone) in self.listeners.drain(..) {
            info!(listener = %gone.describe(), "no longer listening");
            gone.cleanup();
        }
        self.listeners = next;
        let number = self.next_generation;
        self.next_generation += 1;
        let target = config.server.workers;
        Ok(Generation {
            number,
            config: Rc::new(config),
            target,
        })
    }

    fn finish_reload(&mut self) {
        if let Some(reload) = self.reload.take() {
            self.programs
                .apply(&self.current.config.programs, self.programs_started);
            let message = format!(
                "reloaded: generation {} with {} workers",
                self.current.number, self.current.target
            );
            info!(generation = self.current.number, "reload complete");
            for stream in reload.replies {
                reply(stream, &Response::ok(message.clone()));
            }
            if reload.again {
                self.begin_reload(reload.next_replies);
            }
        }
    }

    fn abort_reload(&mut self, why: &str) {
        let Some(reload) = self.reload.take() else {
            return;
        };
        let failed = self.current.number;
        error!(
            generation = failed,
            "reload aborted, the previous generation keeps serving: {why}"
        );
        for (&pid, worker) in self.workers.iter_mut() {
            if worker.generation == failed {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                worker.phase = Phase::Killed {
                    reason: "reload aborted",
                };
            }
        }
        self.current = reload.previous;
        self.boot_failures = 0;
        for stream in reload.replies {
            reply(
                stream,
                &Response::error(format!(
                    "reload aborted, the previous generation keeps serving: {why}"
                )),
            );
        }
        if reload.again {
            self.begin_reload(reload.next_replies);
        }
    }

    fn serve_control(&mut self) {
        if let Some(until) = self.control_paused_until {
            if Instant::now() < until {
                return;
            }
            self.control_paused_until = None;
        }
        loop {
            let Some(control) = &self.control else { return };
            let stream = match control.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // Out of descriptors, most likely: the socket stays readable, so polling it
                    // again at once would spin.
                    warn!(error = %e, pause_ms = CONTROL_BACKOFF.as_millis() as u64, "control socket accept failed; backing off");
                    self.control_paused_until = Some(Instant::now() + CONTROL_BACKOFF);
                    return;
                }
            };
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
            let mut line = String::new();
            let request = BufReader::new(&stream)
                .read_line(&mut line)
                .ok()
                .and_then(|_| serde_json::from_str::<Request>(&line).ok());
            match request {
                None => reply(
                    stream,
                    &Response::error(format!("not a control request: {:?}", line.trim())),
                ),
                Some(Request::Status) => {
                    let response = Response {
                        ok: true,
                        message: String::new(),
                        status: Some(self.status()),
                    };
                    reply(stream, &response);
                }
                Some(Request::Reload) => self.begin_reload(vec![stream]),
                Some(Request::Stop { now }) => {
                    reply(
                        stream,
                        &Response::ok(if now {
                            "stopping now"
                        } else {
                            "stopping gracefully"
                        }),
                    );
                    self.begin_stop(now);
                }
                Some(Request::Ttin) => reply(
                    stream,
                    &self
                        .scale(1)
                        .map_or_else(|e| Response::error(e.to_string()), Response::ok),
                ),
                Some(Request::Ttou) => reply(
                    stream,
                    &self
                        .scale(-1)
                        .map_or_else(|e| Response::error(e.to_string()), Response::ok),
                ),
            }
        }
    }

    fn status(&self) -> Status {
        let workers = self
            .workers
            .iter()
            .map(|(&pid, w)| {
                let slot = self.scoreboard.slot(w.slot);
                let memory = Memory::of(pid).unwrap_or_default();
                let state = match w.phase {
                    Phase::Booting { .. } => "booting",
                    Phase::Ready => "ready",
                    Phase::Draining { .. } => "draining",
                    Phase::Killed { .. } => "killed",
                };
                WorkerStatus {
                    slot: w.slot,
                    pid: pid as u32,
                    generation: w.generation,
                    state: state.into(),
                    uptime_secs: w.started.elapsed().as_secs_f64(),
                    requests: slot.requests_served(),
                    restarts: self.slot_restarts[w.slot],
                    private_bytes: memory.private,
                    shared_bytes: memory.shared,
                    pss_bytes: memory.pss,
                }
            })
            .collect();
        let phase = match (self.stop, &self.reload) {
            (Some(_), _) => "stopping",
            (None, Some(_)) => "reloading",
            (None, None) => "running",
        };
        let budget = budget::compute(
            &self.current.config,
            self.current.target,
            self.held_memory(),
        )
        .map(|b| b.to_string())
        .unwrap_or_else(|e| e.to_string());
        Status {
            pid: std::process::id(),
            config: self.current.config.file.display().to_string(),
            phase: phase.into(),
            generation: self.current.number,
            target_workers: self.current.target,
            workers,
            listeners: self.listeners.iter().map(|(_, l)| l.describe()).collect(),
            budget,
            worker_restarts: self.scoreboard.worker_restarts(),
            programs: self.programs.status(),
            total_pss_bytes: Memory::of(std::process::id() as i32)
                .unwrap_or_default()
                .pss
                + self
                    .workers
                    .keys()
                    .filter_map(|pid| Memory::of(*pid))
                    .map(|m| m.pss)
                    .sum::<u64>(),
            uptime_secs: self.started.elapsed().as_secs_f64(),
        }
    }

    fn cleanup(&mut self) {
        for (_, listener) in &self.listeners {
            listener.cleanup();
        }
        self.listeners.clear();
        if self.control.take().is_some() {
            let _ = std::fs::remove_file(&self.current.config.server.control_socket);
        }
        // Reap whatever is left (orphans, as PID 1) without blocking.
        while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            if status == WaitStatus::StillAlive {
                break;
            }
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(3600 * 24 * 365)
}

fn reply(mut stream: UnixStream, response: &Response) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    if let Ok(mut line) = serde_json::to_string(response) {
        line.push('\n');
        let _ = stream.write_all(line.as_bytes());
    }
}

/// A process's memory, split as `arbiter status` shows it, from `/proc/PID/smaps_rollup`.
#[derive(Debug, Default, Clone, Copy)]
struct Memory {
    private: u64,
    shared: u64,
    pss: u64,
}

impl Memory {
    fn of(pid: i32) -> Option<Memory> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
        let mut m = Memory::default();
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            let (Some(key), Some(kb)) = (
                parts.next(),
                parts.next().and_then(|v| v.parse::<u64>().ok()),
            ) else {
                continue;
            };
            match key {
                "Private_Clean:" | "Private_Dirty:" => m.private += kb * 1024,
                "Shared_Clean:" | "Shared_Dirty:" => m.shared += kb * 1024,
                "Pss:" => m.pss = kb * 1024,
                _ => {}
            }
        }
        Some(m)
    }
}

fn bind_control(path: &std::path::Path) -> Result<UnixListener, Error> {
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
    Ok(listener)
}
