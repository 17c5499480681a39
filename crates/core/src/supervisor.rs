//! The workers' supervisor: every worker's phase, the generations, the rolling reload and the
//! stop, as a state machine that reaches processes only through [`Processes`] and the
//! scoreboard only through [`Slots`], with the clock passed in. The arbiter's loop feeds it
//! (ticks, exits, commands) and carries out the [`Action`]s it returns; tests feed it a fake
//! process table and fake slots.
//!
//! Each tick it promotes workers whose slot says ready, kills those past their boot deadline or
//! heartbeat timeout, kills draining ones past the grace period, and starts what is missing. A
//! reload rolls: it starts one worker of the new generation, waits until it is ready, retires
//! one of the old, and so on, so at most N + 1 workers ever hold a model (the budget's +1) and
//! the old generation serves until its replacements do. If the new generation cannot boot, the
//! reload is aborted and the old one keeps serving. A reload asked for while one rolls is
//! queued: once the rolling one ends, the config is read again and another reload rolls, so an
//! edit made after the first HUP is never lost.
//!
//! A worker that dies is replaced at once. Only a worker that dies without ever serving a
//! request, within `STABLE_AFTER` of becoming ready, looks like a crash loop and feeds the
//! restart backoff; a worker killed after doing its work (the OOM killer, an operator, chaos)
//! must not cost the service its capacity. Workers that fail to boot `MAX_BOOT_FAILURES` times
//! in a row stop the arbiter with an error (or abort the reload that started them).

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use arbiter_config::Config;
use nix::sys::signal::Signal;
use tracing::{error, info, warn};

use crate::Error;
use crate::backoff::Backoff;
use crate::phase::{Ended, Exit, KillReason, Limits, Phase, Seen, Step};

/// Consecutive boot failures after which the arbiter gives up.
const MAX_BOOT_FAILURES: u32 = 3;
/// A worker that answered a request, or stayed ready this long, was not caught in a crash loop:
/// when it dies it is replaced at once, however many others died recently. Only crashes of
/// workers that never served feed the restart backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// How long a fast stop (INT, QUIT) gives the workers before KILL.
const FAST_STOP_GRACE: Duration = Duration::from_secs(2);
/// Slots in the scoreboard: room for the workers, a reload's replacements and TTIN.
pub(crate) const SLOTS: usize = 128;

/// Processes, as the supervisor uses them: the arbiter forks, signals and reaps real ones.
pub(crate) trait Processes {
    /// Starts a worker of `generation` in scoreboard slot `slot`, running `config`; its pid.
    fn spawn(
        &mut self,
        slot: usize,
        generation: u64,
        config: &Config,
        max_requests: Option<u64>,
    ) -> Result<i32, String>;
    /// Sends `signal` to `pid`.
    fn kill(&mut self, pid: i32, signal: Signal);
    /// One exited child, if any is waiting (workers, programs and, as PID 1, orphans).
    fn reap(&mut self) -> Option<(i32, Exit)>;
}

/// The workers' scoreboard slots, as the supervisor reads them.
pub(crate) trait Slots {
    /// What the worker in `slot` says of itself, and how old its heartbeat is.
    fn seen(&self, slot: usize) -> Seen;
    /// Requests the worker in `slot` answered.
    fn requests_served(&self, slot: usize) -> u64;
    /// Why the worker in `slot` could not boot, if it wrote it.
    fn boot_error(&self, slot: usize) -> Option<String>;
    /// Frees a reaped worker's slot.
    fn free(&self, slot: usize);
    /// Counts a worker replaced after a crash or a hang, for metrics.
    fn count_restart(&self);
}

/// One worker process.
#[derive(Debug)]
pub(crate) struct Worker {
    /// Its scoreboard slot.
    pub(crate) slot: usize,
    /// The generation it belongs to.
    pub(crate) generation: u64,
    /// When it was started.
    pub(crate) started: Instant,
    /// When it became ready.
    ready_at: Option<Instant>,
    /// Where it is.
    pub(crate) phase: Phase,
}

/// A config and the number it runs under.
#[derive(Debug, Clone)]
pub(crate) struct Generation {
    /// Increments on every reload.
    pub(crate) number: u64,
    /// The config its workers run.
    pub(crate) config: Rc<Config>,
    /// How many workers it keeps.
    pub(crate) target: usize,
}

/// A reload in progress: what to go back to if the new generation cannot boot.
#[derive(Debug)]
struct Reload {
    previous: Generation,
    /// Another reload was asked for while this one rolled.
    again: bool,
}

/// A stop in progress. Programs stop first; workers are told once they are gone (at once for a
/// fast stop), and killed at `deadline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stop {
    fast: bool,
    /// Set when the workers were told to stop.
    deadline: Option<Instant>,
}

/// What the arbiter must do for the supervisor, beyond processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Every worker first serves: start the programs.
    StartPrograms,
    /// A stop began (or turned fast): stop the programs, refuse pending reloads.
    Stopping,
    /// The workers were told to stop: stop accepting (they hold their own listeners).
    CloseListeners,
    /// The reload rolling ended; `again` if another was asked for meanwhile.
    ReloadEnded { outcome: ReloadOutcome, again: bool },
}

/// How a reload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReloadOutcome {
    /// The new generation serves; the message says which.
    Done(String),
    /// The new generation could not boot and the previous one keeps serving; why.
    Aborted(String),
}

/// What becomes of a reload asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReloadRequest {
    /// The arbiter is stopping.
    Refused,
    /// One rolls: this one follows once it ends.
    Queued,
    /// Read the config and call [`Supervisor::begin_reload`].
    Start,
}

/// The workers' supervisor.
#[derive(Debug)]
pub(crate) struct Supervisor {
    current: Generation,
    next_generation: u64,
    workers: BTreeMap<i32, Worker>,
    slot_restarts: Vec<u64>,
    backoff: Backoff,
    boot_failures: u32,
    reload: Option<Reload>,
    stop: Option<Stop>,
    fatal: Option<String>,
    programs_started: bool,
    seed: u64,
    actions: Vec<Action>,
}

impl Supervisor {
    /// Generation 1 on `config`, no worker yet. `seed` spreads `max_requests` jitter.
    pub(crate) fn new(config: Config, seed: u64) -> Supervisor {
        let target = config.server.workers;
        Supervisor {
            current: Generation {
                number: 1,
                config: Rc::new(config),
                target,
            },
            next_generation: 2,
            workers: BTreeMap::new(),
            slot_restarts: vec![0; SLOTS],
            backoff: Backoff::default(),
            boot_failures: 0,
            reload: None,
            stop: None,
            fatal: None,
            programs_started: false,
            seed,
            actions: Vec::new(),
        }
    }

    /// The generation new workers join.
    pub(crate) fn current(&self) -> &Generation {
        &self.current
    }

    /// Every worker process by pid.
    pub(crate) fn workers(&self) -> &BTreeMap<i32, Worker> {
        &self.workers
    }

    /// How many times `slot`'s worker was replaced after a crash or a hang.
    pub(crate) fn restarts(&self, slot: usize) -> u64 {
        self.slot_restarts[slot]
    }

    /// The arbiter's phase in `arbiter status`.
    pub(crate) fn phase_name(&self) -> &'static str {
        match (self.stop, &self.reload) {
            (Some(_), _) => "stopping",
            (None, Some(_)) => "reloading",
            (None, None) => "running",
        }
    }

    /// Whether a stop was asked for.
    pub(crate) fn stopping(&self) -> bool {
        self.stop.is_some()
    }

    /// Whether the programs were started.
    pub(crate) fn programs_started(&self) -> bool {
        self.programs_started
    }

    /// Stopping, and no worker left.
    pub(crate) fn finished(&self) -> bool {
        self.stop.is_some() && self.workers.is_empty()
    }

    /// Why the workers could not boot, once that stopped the arbiter.
    pub(crate) fn fatal(&self) -> Option<&str> {
        self.fatal.as_deref()
    }

    /// Ready workers: they handle USR1 (a booting one would die of it).
    pub(crate) fn ready_pids(&self) -> Vec<i32> {
        self.workers
            .iter()
            .filter(|(_, w)| w.phase == Phase::Ready)
            .map(|(&pid, _)| pid)
            .collect()
    }

    /// Begins a stop, or turns a graceful one fast.
    pub(crate) fn begin_stop(&mut self, fast: bool) -> Vec<Action> {
        match self.stop {
            Some(Stop { fast: true, .. }) => return Vec::new(),
            Some(_) if !fast => return Vec::new(),
            _ => {}
        }
        info!(graceful = !fast, workers = self.workers.len(), "stopping");
        self.stop = Some(Stop {
            fast,
            deadline: None,
        });
        self.reload = None;
        self.actions.push(Action::Stopping);
        self.take_actions()
    }

    /// Whether a reload asked for now starts, waits for the one rolling, or is refused.
    pub(crate) fn request_reload(&mut self) -> ReloadRequest {
        if self.stop.is_some() {
            return ReloadRequest::Refused;
        }
        if let Some(reload) = self.reload.as_mut() {
            info!(
                "a reload is in progress; another follows once it ends, with the config as it is then"
            );
            reload.again = true;
            return ReloadRequest::Queued;
        }
        ReloadRequest::Start
    }

    /// Rolls the workers onto `config`, a new generation (after [`ReloadRequest::Start`]).
    pub(crate) fn begin_reload(&mut self, config: Config) {
        let generation = Generation {
            number: self.next_generation,
            target: config.server.workers,
            config: Rc::new(config),
        };
        self.next_generation += 1;
        info!(
            generation = generation.number,
            workers = generation.target,
            "reloading"
        );
        let previous = std::mem::replace(&mut self.current, generation);
        self.boot_failures = 0;
        self.reload = Some(Reload {
            previous,
            again: false,
        });
    }

    /// The worker count `delta` asks for (TTIN, TTOU), unless refused.
    pub(crate) fn scaled_target(&self, delta: i64) -> Result<usize, Error> {
        if self.stop.is_some() {
            return Err(Error::Refused("the arbiter is stopping".into()));
        }
        let target = self.current.target as i64 + delta;
        if target < 1 {
            return Err(Error::Refused("already at 1 worker".into()));
        }
        Ok(target as usize)
    }

    /// Keeps `target` workers from the next tick on.
    pub(crate) fn set_target(&mut self, target: usize) {
        self.current.target = target;
        info!(workers = target, "scaled");
    }

    /// A reaped child: `None` if it was not a worker.
    pub(crate) fn on_exit(
        &mut self,
        now: Instant,
        pid: i32,
        exit: Exit,
        processes: &mut impl Processes,
        slots: &impl Slots,
    ) -> Option<Vec<Action>> {
        let worker = self.workers.remove(&pid)?;
        let boot_error = slots.boot_error(worker.slot);
        let served = slots.requests_served(worker.slot);
        slots.free(worker.slot);
        // Dying before doing any work looks like a crash loop; dying after is just a crash.
        let crash_loop = served == 0
            && worker
                .ready_at
                .is_none_or(|t| now.duration_since(t) < STABLE_AFTER);
        let (slot, generation) = (worker.slot, worker.generation);
        let boot_timeout = self.current.config.server.boot_timeout;
        match worker.phase.ended(exit, boot_error, boot_timeout) {
            Ended::Retired => {
                info!(worker = slot, pid, generation, status = %exit, "worker retired")
            }
            Ended::Recycled => {
                info!(
                    worker = slot,
                    pid, generation, "worker recycled (max_requests)"
                )
            }
            Ended::BootFailed(message) => {
                error!(worker = slot, pid, generation, error = %message, "worker failed to boot");
                self.boot_failed(now, message, processes);
            }
            Ended::Killed(reason) => {
                warn!(worker = slot, pid, generation, %reason, "killed worker reaped");
                self.count_restart(now, slot, crash_loop, slots);
            }
            Ended::Crashed => {
                error!(worker = slot, pid, generation, status = %exit, served, "worker crashed");
                self.count_restart(now, slot, crash_loop, slots);
            }
        }
        Some(self.take_actions())
    }

    /// Kills what lingers, promotes ready workers, starts what is missing. `programs_stopped`
    /// says whether the programs a stop stops first are gone.
    pub(crate) fn tick(
        &mut self,
        now: Instant,
        processes: &mut impl Processes,
        slots: &impl Slots,
        programs_stopped: bool,
    ) -> Vec<Action> {
        let server = &self.current.config.server;
        let limits = Limits {
            heartbeat_timeout: server.heartbeat_timeout,
            graceful_timeout: server.graceful_timeout,
        };
        let steps: Vec<(i32, Step)> = self
            .workers
            .iter()
            .filter_map(|(&pid, w)| {
                let step = w.phase.on_tick(now, slots.seen(w.slot), limits)?;
                Some((pid, step))
            })
            .collect();
        for (pid, step) in steps {
            self.apply(now, pid, step, processes);
        }
        if let Some(stop) = self.stop {
            match stop.deadline {
                None if stop.fast || programs_stopped => {
                    self.stop_workers(now, stop.fast, processes)
                }
                Some(deadline) if now > deadline => {
                    for &pid in self.workers.keys() {
                        processes.kill(pid, Signal::SIGKILL);
                    }
                }
                _ => {}
            }
            return self.take_actions();
        }
        self.maintain(now, processes);
        // Programs (a reverse proxy, say) start once the workers behind them first serve.
        if !self.programs_started && self.reload.is_none() {
            let ready = self.ready_pids().len();
            if ready >= self.current.target {
                self.programs_started = true;
                self.actions.push(Action::StartPrograms);
            }
        }
        self.take_actions()
    }

    fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    fn apply(&mut self, now: Instant, pid: i32, step: Step, processes: &mut impl Processes) {
        let Some(worker) = self.workers.get_mut(&pid) else {
            return;
        };
        let (slot, generation) = (worker.slot, worker.generation);
        match step {
            Step::Ready => {
                worker.ready_at = Some(now);
                self.boot_failures = 0;
                let boot_ms = now.duration_since(worker.started).as_millis() as u64;
                info!(worker = slot, pid, generation, boot_ms, "worker ready");
            }
            Step::Recycling { .. } => {
                // The worker retires itself (max_requests); its replacement starts now.
                info!(
                    worker = slot,
                    pid, generation, "worker recycling itself (max_requests)"
                );
            }
            Step::Kill(reason) => {
                warn!(worker = slot, pid, generation, %reason, "killing worker");
            }
        }
        if let Some(signal) = step.signal() {
            processes.kill(pid, signal);
        }
        worker.phase = Phase::after(step);
    }

    /// Counts a crashed or hung worker; a crash loop's also delays the next replacements.
    fn count_restart(&mut self, now: Instant, slot: usize, crash_loop: bool, slots: &impl Slots) {
        slots.count_restart();
        self.slot_restarts[slot] += 1;
        if crash_loop {
            self.backoff.record(now);
        }
    }

    fn boot_failed(&mut self, now: Instant, message: String, processes: &mut impl Processes) {
        self.boot_failures += 1;
        self.backoff.record(now);
        if self.boot_failures < MAX_BOOT_FAILURES || self.stop.is_some() {
            return;
        }
        let summary = format!(
            "workers failed to boot {} times in a row; the last error: {message}",
            self.boot_failures
        );
        if self.reload.is_some() {
            self.abort_reload(&summary, processes);
        } else {
            error!("{summary}; stopping");
            self.fatal = Some(message);
            let stopping = self.begin_stop(true);
            self.actions.extend(stopping);
        }
    }

    fn live(&self, generation: impl Fn(u64) -> bool) -> Vec<i32> {
        self.workers
            .iter()
            .filter(|(_, w)| generation(w.generation) && w.phase.is_live())
            .map(|(pid, _)| *pid)
            .collect()
    }

    fn maintain(&mut self, now: Instant, processes: &mut impl Processes) {
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
                    self.spawn(now, processes);
                }
            }
            // TTOU or a smaller reload: retire the newest extras.
            for pid in new
                .iter()
                .rev()
                .take(new.len().saturating_sub(self.current.target))
            {
                self.retire(now, *pid, processes);
            }
            if self.reload.is_some() && booting_new == 0 && new.len() == self.current.target {
                self.finish_reload();
            }
            return;
        }
        // Rolling: one new worker boots at a time; each one ready retires one old.
        if booting_new == 0 && new.len() < self.current.target && may_start {
            self.spawn(now, processes);
        }
        let surplus = (old.len() + ready_new).saturating_sub(self.current.target);
        let all_new_ready = new.len() >= self.current.target && booting_new == 0;
        let retire = if all_new_ready {
            old.len()
        } else {
            surplus.min(old.len())
        };
        for pid in old.iter().take(retire) {
            self.retire(now, *pid, processes);
        }
    }

    fn retire(&mut self, now: Instant, pid: i32, processes: &mut impl Processes) {
        let grace = self.current.config.server.graceful_timeout;
        if let Some(worker) = self.workers.get_mut(&pid) {
            info!(
                worker = worker.slot,
                pid,
                generation = worker.generation,
                "retiring worker"
            );
            worker.phase = worker.phase.told_to_stop(now + grace);
            processes.kill(pid, Signal::SIGTERM);
        }
    }

    fn free_slot(&self) -> Option<usize> {
        (0..SLOTS).find(|i| !self.workers.values().any(|w| w.slot == *i))
    }

    fn spawn(&mut self, now: Instant, processes: &mut impl Processes) {
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
        match processes.spawn(slot, generation, &config, max_requests) {
            Ok(pid) => {
                info!(worker = slot, pid, generation, "worker booting");
                self.workers.insert(
                    pid,
                    Worker {
                        slot,
                        generation,
                        started: now,
                        ready_at: None,
                        phase: Phase::Booting {
                            deadline: now + config.server.boot_timeout,
                        },
                    },
                );
            }
            Err(e) => {
                error!(error = %e, "fork failed");
                self.backoff.record(now);
            }
        }
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

    /// Tells every worker to stop; the arbiter stops accepting.
    fn stop_workers(&mut self, now: Instant, fast: bool, processes: &mut impl Processes) {
        let (deadline, signal) = if fast {
            (now + FAST_STOP_GRACE, Signal::SIGQUIT)
        } else {
            (
                now + self.current.config.server.graceful_timeout,
                Signal::SIGTERM,
            )
        };
        self.stop = Some(Stop {
            fast,
            deadline: Some(deadline),
        });
        self.actions.push(Action::CloseListeners);
        for (&pid, worker) in self.workers.iter_mut() {
            processes.kill(pid, signal);
            worker.phase = worker.phase.told_to_stop(deadline);
        }
    }

    fn finish_reload(&mut self) {
        let Some(reload) = self.reload.take() else {
            return;
        };
        info!(generation = self.current.number, "reload complete");
        let message = format!(
            "reloaded: generation {} with {} workers",
            self.current.number, self.current.target
        );
        self.actions.push(Action::ReloadEnded {
            outcome: ReloadOutcome::Done(message),
            again: reload.again,
        });
    }

    fn abort_reload(&mut self, why: &str, processes: &mut impl Processes) {
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
                processes.kill(pid, Signal::SIGKILL);
                worker.phase = Phase::killed(KillReason::ReloadAborted);
            }
        }
        self.current = reload.previous;
        self.boot_failures = 0;
        self.actions.push(Action::ReloadEnded {
            outcome: ReloadOutcome::Aborted(format!(
                "reload aborted, the previous generation keeps serving: {why}"
            )),
            again: reload.again,
        });
    }
}

#[cfg(test)]
mod tests;
