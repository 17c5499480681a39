//! The arbiter's event loop: one thread, one `poll`, a tick every 100 ms.
//!
//! Each turn it drains the signal pipe, reaps every exited child, answers the control socket,
//! then lets the [`Supervisor`] tick, and carries out what it asks (start or stop the programs,
//! close the listeners, answer the clients of a reload). The loop owns everything that is a
//! file descriptor or a config file: listeners, the control socket, the signal pipe, the
//! pidfile, the programs' pipes; the supervisor owns the workers' state. It also tells systemd
//! what it is doing (`notify`): ready once the first generation serves, reloading, stopping,
//! and the watchdog's ping on every turn that is due one.

use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use arbiter_config::{Bind, Config};
use arbiter_scoreboard::Scoreboard;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tracing::{debug, error, info, warn};

use crate::control::{Client, Request, Response, Server};
use crate::listeners::{self, Listener, Origin};
use crate::notify::Notifier;
use crate::pidfile::Pidfile;
use crate::processes::{Hooks, Os, SIGNALS};
use crate::programs::Programs;
use crate::status::{self, Context};
use crate::supervisor::Processes;
use crate::supervisor::{Action, ReloadOutcome, ReloadRequest, SLOTS, Supervisor};
use crate::{Error, budget, sys};

/// How often the loop wakes without an event.
const TICK: Duration = Duration::from_millis(100);

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

/// Who waits for the answer to a reload: the clients of the one rolling, and of the one
/// queued behind it.
#[derive(Debug, Default)]
struct ReloadClients {
    rolling: Vec<Client>,
    queued: Vec<Client>,
}

/// The arbiter: owns the listeners, the scoreboard and every worker process.
pub struct Arbiter<H: Hooks> {
    hooks: H,
    supervisor: Supervisor,
    listeners: Vec<(Bind, Listener)>,
    scoreboard: Scoreboard,
    reload_clients: ReloadClients,
    signals: Signals,
    control: Option<Server>,
    programs: Programs,
    started: Instant,
    notifier: Notifier,
    _pidfile: Pidfile,
}

impl<H: Hooks> std::fmt::Debug for Arbiter<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arbiter")
            .field("supervisor", &self.supervisor)
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
        let notifier = Notifier::from_env();
        let inherited = listeners::from_systemd().map_err(Error::Io)?;
        let mut bound = Vec::new();
        for (bind, listener, origin) in
            listeners::open_all(&config.server.bind, config.server.backlog, inherited)?
        {
            match origin {
                Origin::Bound => info!(listener = %listener.describe(), %bind, "listening"),
                Origin::Activated(name) => info!(
                    listener = %listener.describe(),
                    %bind,
                    name = name.as_deref().unwrap_or(""),
                    "listening (socket activation)"
                ),
            }
            bound.push((bind, listener));
        }
        let control = Server::bind(&config.server.control_socket)?;
        let scoreboard =
            Scoreboard::create(SLOTS).map_err(|e| Error::Io(std::io::Error::other(e)))?;
        let signals = Signals::install()?;
        let programs = Programs::new(&config.programs);
        let seed = std::process::id() as u64 ^ Instant::now().elapsed().as_nanos() as u64;
        Ok(Arbiter {
            hooks,
            supervisor: Supervisor::new(config, seed),
            listeners: bound,
            scoreboard,
            reload_clients: ReloadClients::default(),
            signals,
            control: Some(control),
            programs,
            started: Instant::now(),
            notifier,
            _pidfile: pidfile,
        })
    }

    /// After `--daemon`: tells systemd that this process is the service's main process
    /// (`MAINPID`; the unit needs `NotifyAccess=all` to accept it from a process it did not
    /// start).
    pub fn notify_main_pid(&self) {
        self.notifier.main_pid();
    }

    /// The `STATUS=` line while serving.
    fn serving_status(&self) -> String {
        let current = self.supervisor.current();
        let listeners: Vec<String> = self.listeners.iter().map(|(_, l)| l.describe()).collect();
        format!(
            "serving: {} workers of generation {} on {}",
            current.target,
            current.number,
            listeners.join(", ")
        )
    }

    /// Runs until stopped. `Ok` after a stop asked for (TERM, INT, QUIT, `arbiter stop`);
    /// `Err` when workers cannot boot.
    pub fn run(mut self) -> Result<(), Error> {
        info!(
            pid = std::process::id(),
            workers = self.supervisor.current().target,
            generation = self.supervisor.current().number,
            "arbiter started"
        );
        if let Some(every) = self.notifier.watchdog_period() {
            info!(
                ping_every_ms = every.as_millis() as u64,
                "systemd watchdog enabled"
            );
        }
        self.notifier.status(&format!(
            "starting {} workers",
            self.supervisor.current().target
        ));
        loop {
            self.wait();
            self.notifier.watchdog(Instant::now());
            for signal in self.signals.take() {
                self.on_signal(signal);
            }
            self.reap();
            self.serve_control();
            self.supervise();
            if self.supervisor.finished() && self.programs.all_stopped() {
                break;
            }
        }
        self.cleanup();
        match self.supervisor.fatal() {
            Some(message) => {
                self.notifier
                    .status(&format!("stopped: workers cannot start: {message}"));
                Err(Error::WorkersFailed(message.to_owned()))
            }
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
        if let Some(fd) = self.control.as_ref().and_then(Server::fd) {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
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

    /// The real processes, for one call into the supervisor.
    fn os(&mut self) -> (Os<'_, H>, &mut Supervisor) {
        let os = Os {
            hooks: &self.hooks,
            listeners: &mut self.listeners,
            control: &mut self.control,
            scoreboard: &self.scoreboard,
        };
        (os, &mut self.supervisor)
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
                for pid in self.supervisor.ready_pids() {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGUSR1);
                }
            }
            _ => {} // SIGCHLD: reaping happens every turn.
        }
    }

    /// Reaps every exited child: its own workers, its programs and, as PID 1, orphans too.
    fn reap(&mut self) {
        loop {
            let (mut os, supervisor) = self.os();
            let Some((pid, exit)) = os.reap() else {
                return;
            };
            let now = Instant::now();
            let scoreboard = os.scoreboard;
            match supervisor.on_exit(now, pid, exit, &mut os, scoreboard) {
                Some(actions) => self.carry_out(actions),
                None if self.programs.on_exit(pid, exit) => {}
                None => debug!(pid, %exit, "reaped an orphan"),
            }
        }
    }

    fn supervise(&mut self) {
        let stopping = self.supervisor.stopping();
        self.programs
            .tick(stopping, &self.supervisor.current().config.programs);
        let programs_stopped = self.programs.all_stopped();
        let (mut os, supervisor) = self.os();
        let scoreboard = os.scoreboard;
        let actions = supervisor.tick(Instant::now(), &mut os, scoreboard, programs_stopped);
        self.carry_out(actions);
    }

    /// Does what the supervisor asked.
    fn carry_out(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::StartPrograms => {
                    // Every worker of the first generation accepts: a request gets its answer.
                    self.notifier.ready(&self.serving_status());
                    self.programs.start_all();
                }
                Action::Stopping => {
                    self.notifier
                        .stopping(if self.supervisor.fatal().is_some() {
                            "stopping: workers cannot start"
                        } else {
                            "stopping"
                        });
                    let clients = std::mem::take(&mut self.reload_clients);
                    for client in clients.rolling.into_iter().chain(clients.queued) {
                        client.reply(&Response::error("the arbiter is stopping"));
                    }
                    // Programs first: a reverse proxy stops accepting before the workers drain.
                    self.programs.stop_all();
                }
                Action::CloseListeners => {
                    for (_, listener) in &self.listeners {
                        listener.cleanup();
                    }
                    self.listeners.clear();
                }
                Action::ReloadEnded { outcome, again } => {
                    let response = match outcome {
                        ReloadOutcome::Done(message) => {
                            self.programs.apply(
                                &self.supervisor.current().config.programs,
                                self.supervisor.programs_started(),
                            );
                            self.notifier.ready(&self.serving_status());
                            Response::ok(message)
                        }
                        ReloadOutcome::Aborted(why) => {
                            self.notifier
                                .ready(&format!("{why}; {}", self.serving_status()));
                            Response::error(why)
                        }
                    };
                    let rolling = std::mem::take(&mut self.reload_clients.rolling);
                    for client in rolling {
                        client.reply(&response);
                    }
                    if again {
                        let queued = std::mem::take(&mut self.reload_clients.queued);
                        self.begin_reload(queued);
                    }
                }
            }
        }
    }

    fn serve_control(&mut self) {
        let now = Instant::now();
        while let Some((client, request)) = self.control.as_mut().and_then(|c| c.next(now)) {
            match request {
                Request::Status => {
                    let response = Response {
                        ok: true,
                        message: String::new(),
                        status: Some(self.status()),
                    };
                    client.reply(&response);
                }
                Request::Reload => self.begin_reload(vec![client]),
                Request::Stop { now } => {
                    client.reply(&Response::ok(if now {
                        "stopping now"
                    } else {
                        "stopping gracefully"
                    }));
                    self.begin_stop(now);
                }
                Request::Ttin => client.reply(
                    &self
                        .scale(1)
                        .map_or_else(|e| Response::error(e.to_string()), Response::ok),
                ),
                Request::Ttou => client.reply(
                    &self
                        .scale(-1)
                        .map_or_else(|e| Response::error(e.to_string()), Response::ok),
                ),
            }
        }
    }

    fn status(&self) -> crate::control::Status {
        status::status(
            &self.supervisor,
            Context {
                scoreboard: &self.scoreboard,
                listeners: self.listeners.iter().map(|(_, l)| l.describe()).collect(),
                programs: self.programs.status(),
                uptime_secs: self.started.elapsed().as_secs_f64(),
            },
        )
    }

    fn begin_stop(&mut self, fast: bool) {
        let actions = self.supervisor.begin_stop(fast);
        self.carry_out(actions);
    }

    fn scale(&mut self, delta: i64) -> Result<String, Error> {
        let target = self.supervisor.scaled_target(delta)?;
        if delta > 0 {
            let current = self.supervisor.current();
            let held = status::held_memory(&self.supervisor);
            budget::compute(&current.config, target, held)?.check()?;
        }
        self.supervisor.set_target(target);
        Ok(format!("now {target} workers"))
    }

    /// Starts a reload for `clients` (none for a HUP), or queues one after the reload rolling.
    fn begin_reload(&mut self, clients: Vec<Client>) {
        match self.supervisor.request_reload() {
            ReloadRequest::Refused => {
                for client in clients {
                    client.reply(&Response::error("the arbiter is stopping"));
                }
            }
            ReloadRequest::Queued => self.reload_clients.queued.extend(clients),
            ReloadRequest::Start => {
                self.notifier.reloading("reloading: reading the config");
                self.start_reload(clients);
            }
        }
    }

    /// Reads the config again and rolls the workers onto it, or refuses (and says it is ready
    /// again: systemd waits for a `READY=1` after `RELOADING=1`).
    fn start_reload(&mut self, clients: Vec<Client>) {
        match self.prepare_reload() {
            Ok(config) => {
                self.supervisor.begin_reload(config);
                self.reload_clients.rolling = clients;
                let current = self.supervisor.current();
                self.notifier.status(&format!(
                    "reloading: rolling {} workers onto generation {}",
                    current.target, current.number
                ));
            }
            Err(e) => {
                error!("reload refused, nothing changed: {e}");
                self.notifier.ready(&format!(
                    "reload refused, nothing changed: {e}; {}",
                    self.serving_status()
                ));
                for client in clients {
                    client.reply(&Response::error(format!(
                        "reload refused, nothing changed: {e}"
                    )));
                }
            }
        }
    }

    /// Reads and checks the config again, and binds what it adds.
    fn prepare_reload(&mut self) -> Result<Config, Error> {
        let config = Config::load(&self.supervisor.current().config.file)?;
        crate::privileges::prepare_dirs(&config)?;
        let held = status::held_memory(&self.supervisor);
        budget::compute(&config, config.server.workers, held)?.check()?;
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
        Ok(config)
    }

    fn cleanup(&mut self) {
        for (_, listener) in &self.listeners {
            listener.cleanup();
        }
        self.listeners.clear();
        if let Some(control) = self.control.take() {
            control.remove();
        }
        // Reap whatever is left (orphans, as PID 1) without blocking.
        while crate::processes::reap().is_some() {}
    }
}
