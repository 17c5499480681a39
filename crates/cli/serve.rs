//! `arbiter start`: the arbiter in the foreground or as a daemon, and the worker body it forks.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use anyhow::bail;
use arbiter_config::Config;
use arbiter_core::{Arbiter, Hooks, Listener, WorkerSpec};
use arbiter_scoreboard::EXIT_BOOT_FAILURE;
use arbiter_worker::{WorkerContext, WorkerOptions};

use crate::logging::Logs;

/// The exit code when workers could not boot (a missing model file, say).
const EXIT_WORKERS_FAILED: u8 = EXIT_BOOT_FAILURE as u8;

/// Starts the arbiter; returns when it stops.
pub(crate) fn start(config: Config, daemon: bool) -> anyhow::Result<ExitCode> {
    if daemon {
        return start_daemon(config);
    }
    let logs = Logs::init(&config.log)?;
    let arbiter = Arbiter::new(config, Serve { logs })?;
    finish(arbiter.run())
}

fn finish(result: Result<(), arbiter_core::Error>) -> anyhow::Result<ExitCode> {
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e @ arbiter_core::Error::WorkersFailed(_)) => {
            tracing::error!("{e}");
            eprintln!("arbiter: {e}");
            Ok(ExitCode::from(EXIT_WORKERS_FAILED))
        }
        Err(e) => Err(e.into()),
    }
}

/// Detaches (fork, setsid, fork) and returns once the daemon is listening, or with its error.
fn start_daemon(mut config: Config) -> anyhow::Result<ExitCode> {
    // A daemon has no terminal: without a configured log file, log beside the pidfile.
    if config.log.file.is_none() {
        let file = config.server.pidfile.with_file_name("arbiter.log");
        println!("logging to {}", file.display());
        config.log.file = Some(file);
    }
    let (mut report_read, mut report_write) = UnixStream::pair()?;
    match arbiter_core::daemonize()? {
        arbiter_core::Daemon::Parent => {
            drop(report_write);
            let mut answer = String::new();
            report_read.read_to_string(&mut answer)?;
            match answer.strip_prefix("ok ") {
                Some(pid) => {
                    println!("arbiter started in the background, pid {pid}");
                    Ok(ExitCode::SUCCESS)
                }
                None if answer.is_empty() => {
                    bail!("the daemon exited before it was listening; see its log")
                }
                None => bail!("{answer}"),
            }
        }
        arbiter_core::Daemon::Child => {
            drop(report_read);
            let logs = Logs::init(&config.log)?;
            match Arbiter::new(config, Serve { logs }) {
                Ok(arbiter) => {
                    // Under a systemd unit, the daemon is the service now, not the process
                    // systemd started (which exits once it reads "ok").
                    arbiter.notify_main_pid();
                    let _ = write!(report_write, "ok {}", std::process::id());
                    drop(report_write);
                    finish(arbiter.run())
                }
                Err(e) => {
                    let _ = write!(report_write, "{:#}", anyhow::Error::from(e));
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

/// The hooks the arbiter calls: the worker's body, and log reopening.
#[derive(Debug)]
struct Serve {
    logs: Logs,
}

impl Hooks for Serve {
    fn worker(&self, config: &Config, spec: WorkerSpec) -> i32 {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = |model: &arbiter_config::Model| config.threads_per_worker(model, cores);
        let mut options = WorkerOptions::from_config(config, threads, spec.max_requests);
        let logs = self.logs.clone();
        options.reopen_logs = Some(arbiter_worker::ReopenLogs(std::sync::Arc::new(move || {
            if let Err(e) = logs.reopen() {
                tracing::error!("cannot reopen the log file: {e}");
            }
        })));
        let listeners = spec
            .listeners
            .into_iter()
            .map(|l| match l {
                Listener::Tcp(l) => arbiter_worker::Listener::Tcp(l),
                Listener::Unix { listener, .. } => arbiter_worker::Listener::Unix(listener),
            })
            .collect();
        let context = WorkerContext {
            index: spec.slot,
            generation: spec.generation,
            scoreboard: spec.scoreboard,
        };
        arbiter_worker::run(options, listeners, context)
    }

    fn reopen_logs(&self) {
        if let Err(e) = self.logs.reopen() {
            tracing::error!("cannot reopen the log file: {e}");
        }
    }
}
