//! One worker's life as the arbiter sees it: booting, ready, draining, killed, and the
//! transitions between them as pure functions of the phase, the clock and what the worker's
//! scoreboard slot says. The supervisor applies them; nothing here touches a process.

use std::fmt;
use std::time::{Duration, Instant};

use arbiter_scoreboard::SlotState;
use nix::sys::signal::Signal;

/// Where a worker is, as the arbiter sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Forked; must be ready by the deadline.
    Booting { deadline: Instant },
    /// Serving; must heart-beat.
    Ready,
    /// Told to stop (TERM), or retiring itself; killed at `kill_at`, `None` once it was.
    Draining { kill_at: Option<Instant> },
    /// Sent SIGKILL, for this reason; waiting to be reaped.
    Killed { reason: KillReason },
}

/// Why the arbiter sends a worker SIGKILL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KillReason {
    /// Not ready within `boot_timeout`: counts as a failed boot.
    BootTimeout,
    /// No heartbeat within `heartbeat_timeout`: replaced like a crash.
    Hung,
    /// Still draining at its deadline: it is just gone, not a crash.
    GracefulTimeout,
    /// Its generation could not boot, so the reload that started it was aborted.
    ReloadAborted,
}

impl fmt::Display for KillReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KillReason::BootTimeout => "boot timeout",
            KillReason::Hung => "no heartbeat",
            KillReason::GracefulTimeout => "graceful timeout",
            KillReason::ReloadAborted => "reload aborted",
        })
    }
}

/// What the arbiter reads of a worker's slot on a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen {
    /// The state the worker wrote.
    pub(crate) state: SlotState,
    /// Time since its last heartbeat.
    pub(crate) heartbeat_age: Duration,
}

/// The timeouts a tick applies, from the current config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// `server.heartbeat_timeout`.
    pub(crate) heartbeat_timeout: Duration,
    /// `server.graceful_timeout`.
    pub(crate) graceful_timeout: Duration,
}

/// A transition a tick makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// A booting worker's slot says ready.
    Ready,
    /// A ready worker retires itself (`max_requests`); it drains until `kill_at`.
    Recycling { kill_at: Instant },
    /// Past a deadline: SIGKILL.
    Kill(KillReason),
}

impl Phase {
    /// The transition a tick at `now` makes of this phase, if any.
    pub(crate) fn on_tick(&self, now: Instant, seen: Seen, limits: Limits) -> Option<Step> {
        match *self {
            Phase::Booting { .. } if seen.state == SlotState::Ready => Some(Step::Ready),
            Phase::Booting { deadline } if now > deadline => {
                Some(Step::Kill(KillReason::BootTimeout))
            }
            Phase::Ready if seen.state == SlotState::Draining => Some(Step::Recycling {
                kill_at: now + limits.graceful_timeout,
            }),
            Phase::Ready if seen.heartbeat_age > limits.heartbeat_timeout => {
                Some(Step::Kill(KillReason::Hung))
            }
            Phase::Draining {
                kill_at: Some(kill_at),
            } if now > kill_at => Some(Step::Kill(KillReason::GracefulTimeout)),
            _ => None,
        }
    }

    /// The phase after `step`.
    pub(crate) fn after(step: Step) -> Phase {
        match step {
            Step::Ready => Phase::Ready,
            Step::Recycling { kill_at } => Phase::Draining {
                kill_at: Some(kill_at),
            },
            Step::Kill(reason) => Phase::killed(reason),
        }
    }

    /// The phase of a worker sent SIGKILL for `reason`. One past its graceful timeout stays
    /// draining: when reaped it retired, it did not crash.
    pub(crate) fn killed(reason: KillReason) -> Phase {
        match reason {
            KillReason::GracefulTimeout => Phase::Draining { kill_at: None },
            reason => Phase::Killed { reason },
        }
    }

    /// The phase of a worker told to stop with a deadline (a retirement or the arbiter's stop).
    /// One already killed stays killed, so its exit is still counted as what it was.
    pub(crate) fn told_to_stop(&self, kill_at: Instant) -> Phase {
        match *self {
            Phase::Killed { reason } => Phase::Killed { reason },
            _ => Phase::Draining {
                kill_at: Some(kill_at),
            },
        }
    }

    /// Its name in `arbiter status`.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Phase::Booting { .. } => "booting",
            Phase::Ready => "ready",
            Phase::Draining { .. } => "draining",
            Phase::Killed { .. } => "killed",
        }
    }

    /// Whether it counts towards its generation's workers (booting or serving).
    pub(crate) fn is_live(&self) -> bool {
        matches!(self, Phase::Booting { .. } | Phase::Ready)
    }
}

impl Step {
    /// The signal that goes with the step.
    pub(crate) fn signal(&self) -> Option<Signal> {
        match self {
            Step::Kill(_) => Some(Signal::SIGKILL),
            Step::Ready | Step::Recycling { .. } => None,
        }
    }
}

/// How a child ended, as `waitpid` tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it.
    Signal(Signal),
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exit code {code}"),
            Exit::Signal(signal) => write!(f, "signal {signal}"),
        }
    }
}

/// What a worker's exit means for the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ended {
    /// It drained and left (retired, or killed past its graceful timeout).
    Retired,
    /// It served `max_requests` and exited cleanly.
    Recycled,
    /// It never became ready: why.
    BootFailed(String),
    /// It was killed for this reason (not a boot timeout): replaced like a crash.
    Killed(KillReason),
    /// It died while serving.
    Crashed,
}

impl Phase {
    /// What an exit in this phase means. `boot_error` is what a worker that could not boot wrote
    /// into its slot; `boot_timeout` names the limit a killed booting worker missed.
    pub(crate) fn ended(
        &self,
        exit: Exit,
        boot_error: Option<String>,
        boot_timeout: Duration,
    ) -> Ended {
        match *self {
            Phase::Draining { .. } => Ended::Retired,
            Phase::Killed {
                reason: KillReason::BootTimeout,
            } => Ended::BootFailed(format!(
                "worker did not become ready within boot_timeout ({boot_timeout:?})"
            )),
            Phase::Killed { reason } => Ended::Killed(reason),
            Phase::Ready if exit == Exit::Code(0) => Ended::Recycled,
            Phase::Booting { .. } => Ended::BootFailed(
                boot_error.unwrap_or_else(|| format!("worker exited during boot ({exit})")),
            ),
            Phase::Ready => Ended::Crashed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        heartbeat_timeout: Duration::from_secs(5),
        graceful_timeout: Duration::from_secs(30),
    };

    fn seen(state: SlotState, heartbeat_secs: u64) -> Seen {
        Seen {
            state,
            heartbeat_age: Duration::from_secs(heartbeat_secs),
        }
    }

    #[test]
    fn booting_becomes_ready_or_is_killed_at_its_deadline() {
        let t0 = Instant::now();
        let booting = Phase::Booting {
            deadline: t0 + Duration::from_secs(60),
        };
        assert_eq!(
            booting.on_tick(t0, seen(SlotState::Booting, 0), LIMITS),
            None
        );
        assert_eq!(
            booting.on_tick(t0, seen(SlotState::Ready, 0), LIMITS),
            Some(Step::Ready)
        );
        let late = t0 + Duration::from_secs(61);
        let step = booting.on_tick(late, seen(SlotState::Booting, 0), LIMITS);
        assert_eq!(step, Some(Step::Kill(KillReason::BootTimeout)));
        assert_eq!(step.unwrap().signal(), Some(Signal::SIGKILL));
        assert_eq!(
            Phase::after(step.unwrap()),
            Phase::Killed {
                reason: KillReason::BootTimeout
            }
        );
    }

    #[test]
    fn ready_recycles_itself_or_is_killed_without_heartbeat() {
        let t0 = Instant::now();
        assert_eq!(
            Phase::Ready.on_tick(t0, seen(SlotState::Ready, 4), LIMITS),
            None
        );
        assert_eq!(
            Phase::Ready.on_tick(t0, seen(SlotState::Draining, 0), LIMITS),
            Some(Step::Recycling {
                kill_at: t0 + LIMITS.graceful_timeout
            })
        );
        assert_eq!(
            Phase::Ready.on_tick(t0, seen(SlotState::Ready, 6), LIMITS),
            Some(Step::Kill(KillReason::Hung))
        );
    }

    #[test]
    fn a_drain_past_its_deadline_is_killed_but_still_retires() {
        let t0 = Instant::now();
        let draining = Phase::Draining { kill_at: Some(t0) };
        let step = draining
            .on_tick(
                t0 + Duration::from_millis(1),
                seen(SlotState::Draining, 0),
                LIMITS,
            )
            .unwrap();
        assert_eq!(step, Step::Kill(KillReason::GracefulTimeout));
        let killed = Phase::after(step);
        assert_eq!(killed, Phase::Draining { kill_at: None });
        assert_eq!(
            killed.on_tick(
                t0 + Duration::from_secs(99),
                seen(SlotState::Draining, 99),
                LIMITS
            ),
            None
        );
        assert_eq!(
            killed.ended(Exit::Signal(Signal::SIGKILL), None, Duration::ZERO),
            Ended::Retired
        );
    }

    #[test]
    fn exits_mean_what_the_phase_says() {
        let boot_timeout = Duration::from_secs(60);
        let booting = Phase::Booting {
            deadline: Instant::now(),
        };
        assert_eq!(
            booting.ended(Exit::Code(3), Some("no model".into()), boot_timeout),
            Ended::BootFailed("no model".into())
        );
        assert_eq!(
            booting.ended(Exit::Signal(Signal::SIGSEGV), None, boot_timeout),
            Ended::BootFailed("worker exited during boot (signal SIGSEGV)".into())
        );
        assert_eq!(
            Phase::Ready.ended(Exit::Code(0), None, boot_timeout),
            Ended::Recycled
        );
        assert_eq!(
            Phase::Ready.ended(Exit::Code(1), None, boot_timeout),
            Ended::Crashed
        );
        let hung = Phase::killed(KillReason::Hung);
        assert_eq!(
            hung.ended(Exit::Signal(Signal::SIGKILL), None, boot_timeout),
            Ended::Killed(KillReason::Hung)
        );
        assert!(matches!(
            Phase::killed(KillReason::BootTimeout).ended(Exit::Signal(Signal::SIGKILL), None, boot_timeout),
            Ended::BootFailed(m) if m.contains("boot_timeout")
        ));
        assert_eq!(
            hung.told_to_stop(Instant::now()),
            hung,
            "a killed worker told to stop is still counted as killed"
        );
    }
}
