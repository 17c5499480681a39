//! Supervised programs (`[[program]]`): supervisord's job, inside the arbiter.
//!
//! Each program is a small state machine with supervisord's states. It starts after the workers
//! are first ready and is stopped before the workers drain, so a reverse proxy stops accepting
//! before the service behind it does. A program that exits before `startsecs` failed to start:
//! it is retried with a growing delay, and after `startretries` failures it is FATAL and left
//! alone. One that exits later is restarted as `autorestart` says. Its stdout and stderr are
//! read through pipes and logged line by line under its name.
//!
//! The arbiter reaps every child itself (`waitpid(-1)`), so exits arrive here by pid.

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::process::{ChildStderr, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use arbiter_config::{Autorestart, Program};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use crate::phase::Exit;

/// supervisord's process states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not started, or stopped on request.
    Stopped,
    /// Started, not yet up for `startsecs`.
    Starting,
    /// Up.
    Running,
    /// Failed to start; waiting to retry.
    Backoff,
    /// Sent its stop signal; waiting for it to exit.
    Stopping,
    /// Exited and not restarted (expected exit, or `autorestart = "never"`).
    Exited,
    /// Failed to start `startretries` times; given up.
    Fatal,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Stopped => "STOPPED",
            State::Starting => "STARTING",
            State::Running => "RUNNING",
            State::Backoff => "BACKOFF",
            State::Stopping => "STOPPING",
            State::Exited => "EXITED",
            State::Fatal => "FATAL",
        }
    }
}

/// One program in `arbiter status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgramStatus {
    /// Its name.
    pub name: String,
    /// Its supervisord state.
    pub state: String,
    /// Its pid while it runs.
    pub pid: Option<u32>,
    /// Seconds since it started, while it runs.
    pub uptime_secs: f64,
    /// How many times it was restarted.
    pub restarts: u64,
    /// How it last ended, if it did.
    pub last_exit: Option<String>,
}

#[derive(Debug)]
struct Output {
    stream: &'static str,
    pipe: Box<dyn ReadFd>,
    partial: Vec<u8>,
}

trait ReadFd: Read + std::fmt::Debug {
    fn fd(&self) -> BorrowedFd<'_>;
}
impl ReadFd for ChildStdout {
    fn fd(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }
}
impl ReadFd for ChildStderr {
    fn fd(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }
}

#[derive(Debug)]
struct Supervised {
    spec: Program,
    state: State,
    pid: Option<i32>,
    started: Instant,
    /// Failed starts in a row.
    failures: u32,
    restarts: u64,
    retry_at: Option<Instant>,
    kill_at: Option<Instant>,
    last_exit: Option<String>,
    outputs: Vec<Output>,
}

/// Every supervised program.
#[derive(Debug, Default)]
pub struct Programs {
    list: Vec<Supervised>,
}

impl Programs {
    /// Programs from the config, all stopped.
    pub fn new(specs: &[Program]) -> Programs {
        Programs {
            list: specs.iter().cloned().map(Supervised::new).collect(),
        }
    }

    /// Starts every stopped program.
    pub fn start_all(&mut self) {
        for p in &mut self.list {
            if p.state == State::Stopped {
                p.spawn();
            }
        }
    }

    /// Sends every live program its stop signal.
    pub fn stop_all(&mut self) {
        for p in &mut self.list {
            p.stop();
        }
    }

    /// Whether no program process is left.
    pub fn all_stopped(&self) -> bool {
        self.list.iter().all(|p| p.pid.is_none())
    }

    /// Applies a reloaded config: removed programs stop, new ones start, changed ones restart.
    pub fn apply(&mut self, specs: &[Program], start_new: bool) {
        for p in &mut self.list {
            match specs.iter().find(|s| s.name == p.spec.name) {
                Some(s) if *s == p.spec => {}
                _ => {
                    info!(program = %p.spec.name, "program removed or changed by the reload; stopping it");
                    p.stop();
                }
            }
        }
        for spec in specs {
            let unchanged = self.list.iter().any(|p| p.spec == *spec);
            if !unchanged {
                let mut p = Supervised::new(spec.clone());
                if start_new {
                    p.spawn();
                }
                self.list.push(p);
            }
        }
        // Old entries leave once their process is gone (see `tick`).
    }

    /// Handles a reaped child; false if it was not a program.
    pub(crate) fn on_exit(&mut self, pid: i32, exit: Exit) -> bool {
        let Some(p) = self.list.iter_mut().find(|p| p.pid == Some(pid)) else {
            return false;
        };
        p.exited(exit);
        true
    }

    /// Timers: promotion to RUNNING, retries after BACKOFF, KILL after `stopwaitsecs`; output.
    pub fn tick(&mut self, stopping: bool, specs: &[Program]) {
        let now = Instant::now();
        for p in &mut self.list {
            p.drain_output();
            match p.state {
                State::Starting if now.duration_since(p.started) >= p.spec.startsecs => {
                    p.state = State::Running;
                    p.failures = 0;
                    info!(program = %p.spec.name, pid = p.pid, "program running");
                }
                State::Backoff if !stopping && p.retry_at.is_some_and(|t| now >= t) => p.spawn(),
                State::Stopping if p.kill_at.is_some_and(|t| now >= t) => {
                    if let Some(pid) = p.pid {
                        warn!(program = %p.spec.name, pid, "program ignored its stop signal; killing its process group");
                        let _ = nix::sys::signal::killpg(Pid::from_raw(pid), Signal::SIGKILL);
                        p.kill_at = None;
                    }
                }
                _ => {}
            }
        }
        // Programs a reload removed or replaced, once gone.
        self.list
            .retain(|p| p.pid.is_some() || specs.contains(&p.spec));
    }

    /// The output pipes, for `poll`.
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        self.list
            .iter()
            .flat_map(|p| p.outputs.iter().map(|o| o.pipe.fd()))
            .collect()
    }

    /// For `arbiter status`.
    pub fn status(&self) -> Vec<ProgramStatus> {
        self.list
            .iter()
            .map(|p| ProgramStatus {
                name: p.spec.name.clone(),
                state: p.state.as_str().into(),
                pid: p.pid.map(|p| p as u32),
                uptime_secs: if p.pid.is_some() {
                    p.started.elapsed().as_secs_f64()
                } else {
                    0.0
                },
                restarts: p.restarts,
                last_exit: p.last_exit.clone(),
            })
            .collect()
    }
}

impl Supervised {
    fn new(spec: Program) -> Supervised {
        Supervised {
            spec,
            state: State::Stopped,
            pid: None,
            started: Instant::now(),
            failures: 0,
            restarts: 0,
            retry_at: None,
            kill_at: None,
            last_exit: None,
            outputs: Vec::new(),
        }
    }

    fn spawn(&mut self) {
        let mut command = Command::new(&self.spec.command[0]);
        command
            .args(&self.spec.command[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command.envs(self.spec.environment.iter().map(|(k, v)| (k, v)));
        if let Some(dir) = &self.spec.directory {
            command.current_dir(dir);
        }
        // Its own process group: a Ctrl-C at the terminal reaches the arbiter, which stops the
        // program in order, rather than everything at once.
        command.process_group(0);
        // Killed with the arbiter (SIGKILL), like its workers: an arbiter killed outright
        // leaves no program behind.
        crate::sys::die_with_parent(&mut command);
        self.started = Instant::now();
        self.retry_at = None;
        match command.spawn() {
            Ok(mut child) => {
                let pid = child.id() as i32;
                let mut outputs = Vec::new();
                if let Some(out) = child.stdout.take() {
                    outputs.push(Output {
                        stream: "stdout",
                        pipe: Box::new(out),
                        partial: Vec::new(),
                    });
                }
                if let Some(err) = child.stderr.take() {
                    outputs.push(Output {
                        stream: "stderr",
                        pipe: Box::new(err),
                        partial: Vec::new(),
                    });
                }
                for o in &outputs {
                    let _ = nix::fcntl::fcntl(
                        o.pipe.fd(),
                        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                    );
                }
                self.outputs = outputs;
                self.pid = Some(pid);
                self.state = State::Starting;
                info!(program = %self.spec.name, pid, "program starting");
                // `child` is dropped without waiting: the arbiter reaps it by pid.
            }
            Err(e) => {
                error!(program = %self.spec.name, command = %self.spec.command[0], "cannot start program: {e}");
                self.last_exit = Some(format!("could not start: {e}"));
                self.failed_start();
            }
        }
    }

    fn failed_start(&mut self) {
        self.failures += 1;
        match retry_after(self.failures, self.spec.startretries) {
            None => {
                self.state = State::Fatal;
                error!(program = %self.spec.name, failures = self.failures, "program failed to start too many times: FATAL");
            }
            Some(delay) => {
                self.state = State::Backoff;
                self.retry_at = Some(Instant::now() + delay);
                warn!(program = %self.spec.name, retry_in_secs = delay.as_secs(), "program failed to start; retrying");
            }
        }
    }

    fn stop(&mut self) {
        match (self.pid, self.state) {
            (Some(pid), State::Starting | State::Running) => {
                let signal = signal_named(&self.spec.stopsignal);
                info!(program = %self.spec.name, pid, %signal, "stopping program");
                let _ = kill(Pid::from_raw(pid), signal);
                self.state = State::Stopping;
                self.kill_at = Some(Instant::now() + self.spec.stopwaitsecs);
            }
            (None, State::Backoff) => self.state = State::Stopped,
            _ => {}
        }
    }

    fn exited(&mut self, exit: Exit) {
        self.drain_output();
        self.outputs.clear();
        // supervisord's killasgroup: whatever the program left in its process group (nginx's
        // workers after its master died) goes too, or it would hold the port its restart needs.
        if let Some(pid) = self.pid {
            let _ = nix::sys::signal::killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        self.pid = None;
        let how = exit.to_string();
        self.last_exit = Some(how.clone());
        match after_exit(self.state, self.started.elapsed(), exit, &self.spec) {
            AfterExit::Stopped => {
                info!(program = %self.spec.name, status = %how, "program stopped");
                self.state = State::Stopped;
            }
            AfterExit::FailedStart => {
                warn!(program = %self.spec.name, status = %how, "program exited before startsecs");
                self.failed_start();
            }
            AfterExit::Restart { expected } => {
                warn!(program = %self.spec.name, status = %how, expected, "program exited; restarting it");
                self.restarts += 1;
                self.spawn();
            }
            AfterExit::Exited { expected } => {
                info!(program = %self.spec.name, status = %how, expected, "program exited");
                self.state = State::Exited;
            }
        }
    }

    fn drain_output(&mut self) {
        let name = &self.spec.name;
        for o in &mut self.outputs {
            let mut buf = [0u8; 8192];
            loop {
                match o.pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => o.partial.extend_from_slice(&buf[..n]),
                    Err(_) => break,
                }
            }
            while let Some(end) = o.partial.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = o.partial.drain(..=end).collect();
                let text = String::from_utf8_lossy(&line);
                info!(program = %name, stream = o.stream, "{}", text.trim_end());
            }
            if o.partial.len() > 64 * 1024 {
                let text = String::from_utf8_lossy(&o.partial).into_owned();
                o.partial.clear();
                info!(program = %name, stream = o.stream, "{text}");
            }
        }
    }
}

/// What a program's exit leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterExit {
    /// It was told to stop.
    Stopped,
    /// It died before `startsecs`: a failed start.
    FailedStart,
    /// `autorestart` says to start it again; `expected` if its code is in `exitcodes`.
    Restart { expected: bool },
    /// `autorestart` says to leave it.
    Exited { expected: bool },
}

/// The transition an exit after `uptime` in `state` makes, as `spec` says.
fn after_exit(state: State, uptime: Duration, exit: Exit, spec: &Program) -> AfterExit {
    match state {
        State::Stopping => AfterExit::Stopped,
        State::Starting if uptime < spec.startsecs => AfterExit::FailedStart,
        _ => {
            let expected = matches!(exit, Exit::Code(c) if spec.exitcodes.contains(&c));
            let restart = match spec.autorestart {
                Autorestart::Always => true,
                Autorestart::Unexpected => !expected,
                Autorestart::Never => false,
            };
            if restart {
                AfterExit::Restart { expected }
            } else {
                AfterExit::Exited { expected }
            }
        }
    }
}

/// How long to wait before retrying after the `failures`-th failed start in a row (a second
/// more each time), or `None` once past `startretries`: FATAL.
fn retry_after(failures: u32, startretries: u32) -> Option<Duration> {
    (failures <= startretries).then(|| Duration::from_secs(failures as u64))
}

fn signal_named(name: &str) -> Signal {
    match name {
        "INT" => Signal::SIGINT,
        "QUIT" => Signal::SIGQUIT,
        "HUP" => Signal::SIGHUP,
        "KILL" => Signal::SIGKILL,
        "USR1" => Signal::SIGUSR1,
        _ => Signal::SIGTERM,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program(toml: &str) -> Program {
        let text = format!("[[program]]\nname = \"proxy\"\ncommand = [\"nginx\"]\n{toml}");
        let config = arbiter_config::Config::parse(&text, std::path::Path::new("/etc/a.toml"))
            .expect("a valid program");
        config.programs[0].clone()
    }

    #[test]
    fn failed_starts_retry_a_second_later_each_time_then_are_fatal() {
        let startretries = program("startretries = 3\n").startretries;
        assert_eq!(startretries, 3);
        assert_eq!(retry_after(1, startretries), Some(Duration::from_secs(1)));
        assert_eq!(retry_after(3, startretries), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(4, startretries), None);
    }

    #[test]
    fn an_exit_before_startsecs_is_a_failed_start_and_a_stop_asked_for_is_not_restarted() {
        let spec = program("startsecs = \"2s\"\n");
        let early = Duration::from_millis(500);
        let later = Duration::from_secs(5);
        assert_eq!(
            after_exit(State::Starting, early, Exit::Code(1), &spec),
            AfterExit::FailedStart
        );
        assert_eq!(
            after_exit(State::Stopping, early, Exit::Code(1), &spec),
            AfterExit::Stopped
        );
        assert_eq!(
            after_exit(State::Running, later, Exit::Signal(Signal::SIGKILL), &spec),
            AfterExit::Restart { expected: false }
        );
    }

    #[test]
    fn autorestart_decides_after_a_run() {
        let later = Duration::from_secs(60);
        let unexpected = program("autorestart = \"unexpected\"\nexitcodes = [0, 2]\n");
        assert_eq!(
            after_exit(State::Running, later, Exit::Code(2), &unexpected),
            AfterExit::Exited { expected: true }
        );
        assert_eq!(
            after_exit(State::Running, later, Exit::Code(1), &unexpected),
            AfterExit::Restart { expected: false }
        );
        let never = program("autorestart = \"never\"\n");
        assert_eq!(
            after_exit(State::Running, later, Exit::Code(1), &never),
            AfterExit::Exited { expected: false }
        );
        let always = program("autorestart = \"always\"\n");
        assert_eq!(
            after_exit(State::Running, later, Exit::Code(0), &always),
            AfterExit::Restart { expected: true }
        );
    }
}
