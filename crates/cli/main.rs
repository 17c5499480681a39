//! `arbiter`: the command line. Thin glue: it parses arguments, loads the config, and wires
//! the arbiter core (supervision) to the worker (HTTP and inference) it forks.

mod inspect;
mod logging;
mod predict;
mod serve;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use arbiter_config::Config;
use arbiter_core::control::{self, Request};
use clap::{Parser, Subcommand};

/// Exit code when the command line or the config is wrong, or a command failed.
const EXIT_FAILURE: u8 = 1;

/// Serve an ONNX image classifier over HTTP: a pre-fork arbiter and its model workers.
#[derive(Debug, Parser)]
#[command(name = "arbiter", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct ConfigArg {
    /// The config file [default: $ARBITER_CONFIG, else etc/arbiter.toml, else /etc/arbiter/arbiter.toml]
    #[arg(short, long, value_name = "CONFIG")]
    config: Option<PathBuf>,
}

impl ConfigArg {
    fn path(&self) -> PathBuf {
        if let Some(path) = &self.config {
            return path.clone();
        }
        if let Some(path) = std::env::var_os("ARBITER_CONFIG") {
            return PathBuf::from(path);
        }
        let local = Path::new("etc/arbiter.toml");
        if local.exists() {
            local.to_path_buf()
        } else {
            PathBuf::from("/etc/arbiter/arbiter.toml")
        }
    }

    fn load(&self) -> anyhow::Result<Config> {
        Ok(Config::load(&self.path())?)
    }

    /// Where the running arbiter is, even when the file has since been broken by an edit.
    fn locate(&self) -> Target {
        let file = self.path();
        match Config::load(&file) {
            Ok(config) => Target {
                control_socket: config.server.control_socket,
                pidfile: config.server.pidfile,
                graceful_timeout: config.server.graceful_timeout,
                file,
            },
            Err(e) => {
                let (control_socket, pidfile) = arbiter_config::locate(&file);
                eprintln!(
                    "arbiter: warning: {e}\narbiter: talking to the arbiter at {} anyway",
                    control_socket.display()
                );
                Target {
                    control_socket,
                    pidfile,
                    graceful_timeout: Duration::from_secs(60),
                    file,
                }
            }
        }
    }
}

/// A running arbiter's addresses.
#[derive(Debug)]
struct Target {
    file: PathBuf,
    control_socket: PathBuf,
    pidfile: PathBuf,
    graceful_timeout: Duration,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the arbiter and its workers (in the foreground unless --daemon).
    Start {
        #[command(flatten)]
        config: ConfigArg,
        /// Detach and run in the background; returns once the arbiter is listening.
        #[arg(long)]
        daemon: bool,
        /// Run the workers as this user (overrides server.user).
        #[arg(long, value_name = "USER")]
        user: Option<String>,
    },
    /// Stop a running arbiter: gracefully, or at once with --now.
    Stop {
        #[command(flatten)]
        config: ConfigArg,
        /// Skip the graceful drain.
        #[arg(long)]
        now: bool,
    },
    /// Validate the edited config, then roll the workers onto it without dropping a request.
    Reload {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Show the models, workers, listeners and memory budget of a running arbiter.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Validate a config and print it with every default filled in, and its memory budget; check
    /// every model against its recipe and labels.
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Add one worker to a running arbiter.
    Ttin {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Remove one worker from a running arbiter.
    Ttou {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Print a model's inputs and outputs, and the [model] config section that serves it: the
    /// file given, else the config's model (--model picks one of several).
    Inspect {
        /// The ONNX model file [default: the config's model]
        #[arg(value_name = "MODEL", conflicts_with = "model")]
        file: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArg,
        /// The config's model to inspect, by name and optional version [default: the default
        /// model]
        #[arg(long, value_name = "NAME[:VERSION]")]
        model: Option<String>,
        /// ONNX Runtime's shared library [default: the model's runtime_library, else
        /// $ORT_DYLIB_PATH, else var/onnxruntime/]
        #[arg(long, value_name = "LIBRARY")]
        runtime_library: Option<PathBuf>,
    },
    /// Classify images without a server: print the JSON the service would answer, per image.
    Predict {
        #[command(flatten)]
        config: ConfigArg,
        /// The model to answer with, by name and optional version (without one, its highest)
        /// [default: the default model]
        #[arg(long, value_name = "NAME[:VERSION]")]
        model: Option<String>,
        /// Image files.
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
}

/// The model `NAME[:VERSION]` names in `config` (without a version, its highest), or the
/// default model when `spec` is `None`.
fn pick_model<'c>(
    config: &'c Config,
    spec: Option<&str>,
) -> anyhow::Result<&'c arbiter_config::Model> {
    let Some(spec) = spec else {
        return Ok(config.model());
    };
    let (name, version) = match spec.split_once(':') {
        Some((name, version)) => (name, Some(version)),
        None => (spec, None),
    };
    config.find_model(name, version).ok_or_else(|| {
        let served: Vec<String> = config
            .models
            .iter()
            .map(|m| format!("{}:{}", m.name, m.version))
            .collect();
        anyhow::anyhow!(
            "no model `{spec}` in {} (its models: {})",
            config.file.display(),
            served.join(", ")
        )
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("arbiter: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Start {
            config,
            daemon,
            user,
        } => {
            let mut config = config.load()?;
            if user.is_some() {
                config.server.user = user;
            }
            serve::start(config, daemon)
        }
        Command::Stop { config, now } => stop(&config.locate(), now),
        Command::Reload { config } => reload(&config),
        Command::Status { config, json } => status(&config.locate(), json),
        Command::Check { config } => check(&config),
        Command::Ttin { config } => scale(
            &config.locate(),
            Request::Ttin,
            nix::sys::signal::Signal::SIGTTIN,
        ),
        Command::Ttou { config } => scale(
            &config.locate(),
            Request::Ttou,
            nix::sys::signal::Signal::SIGTTOU,
        ),
        Command::Predict {
            config,
            model,
            images,
        } => {
            let config = config.load()?;
            predict::run(&config, pick_model(&config, model.as_deref())?, &images)
        }
        Command::Inspect {
            file: Some(file),
            runtime_library,
            ..
        } => inspect::run(&file, runtime_library.as_deref()),
        Command::Inspect {
            file: None,
            config,
            model,
            runtime_library,
        } => {
            let config = config.load()?;
            let model = pick_model(&config, model.as_deref())?;
            let library = runtime_library.or_else(|| model.runtime_library.clone());
            inspect::run(&model.path, library.as_deref())
        }
    }
}

/// Sends a request over the control socket; `None` when no arbiter answers there.
fn ask(
    target: &Target,
    request: Request,
    timeout: Duration,
) -> Option<std::io::Result<control::Response>> {
    match control::send(&target.control_socket, request, timeout) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            None
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Some(Err(std::io::Error::new(
                e.kind(),
                format!(
                    "cannot connect to the control socket {}: permission denied (it is mode 0600: \
                     run as the user that started the arbiter)",
                    target.control_socket.display()
                ),
            )))
        }
        other => Some(other),
    }
}

/// The running arbiter's pid, from the pidfile, for the signal fallback.
fn running_pid(target: &Target) -> anyhow::Result<nix::unistd::Pid> {
    match arbiter_core::pidfile::read_live(&target.pidfile) {
        Some(pid) => Ok(nix::unistd::Pid::from_raw(pid as i32)),
        None => bail!(
            "no arbiter is running for {} (no control socket at {}, no live pid in {})",
            target.file.display(),
            target.control_socket.display(),
            target.pidfile.display()
        ),
    }
}

fn stop(config: &Target, now: bool) -> anyhow::Result<ExitCode> {
    let pid = arbiter_core::pidfile::read_live(&config.pidfile);
    match ask(config, Request::Stop { now }, Duration::from_secs(5)) {
        Some(answer) => {
            let answer = answer.context("the arbiter did not answer")?;
            if !answer.ok {
                bail!("{}", answer.message);
            }
        }
        None => {
            let signal = if now {
                nix::sys::signal::Signal::SIGQUIT
            } else {
                nix::sys::signal::Signal::SIGTERM
            };
            nix::sys::signal::kill(running_pid(config)?, signal)?;
        }
    }
    // Wait for it to be gone, so scripts can rely on `arbiter stop` returning after the stop.
    if let Some(pid) = pid {
        let deadline = Instant::now() + config.graceful_timeout + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !arbiter_core::pidfile::alive(pid) {
                println!("arbiter {pid} stopped");
                return Ok(ExitCode::SUCCESS);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("arbiter {pid} is still running after the graceful timeout");
    }
    println!("stop sent");
    Ok(ExitCode::SUCCESS)
}

fn reload(config: &ConfigArg) -> anyhow::Result<ExitCode> {
    // Validate first: a user who broke the file finds out here, and nothing changes.
    let path = config.path();
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("arbiter: reload refused, the running arbiter keeps its config:\n{e}");
            return Ok(ExitCode::from(EXIT_FAILURE));
        }
    };
    let timeout =
        config.server.boot_timeout * 4 + config.server.graceful_timeout + Duration::from_secs(10);
    let target = Target {
        control_socket: config.server.control_socket.clone(),
        pidfile: config.server.pidfile.clone(),
        graceful_timeout: config.server.graceful_timeout,
        file: config.file.clone(),
    };
    match ask(&target, Request::Reload, timeout) {
        Some(answer) => {
            let answer = answer.context("the arbiter did not answer the reload")?;
            if answer.ok {
                println!("{}", answer.message);
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("arbiter: {}", answer.message);
                Ok(ExitCode::from(EXIT_FAILURE))
            }
        }
        None => {
            nix::sys::signal::kill(running_pid(&target)?, nix::sys::signal::Signal::SIGHUP)?;
            println!("reload signalled (HUP); see the arbiter's log for the outcome");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn status(config: &Target, json: bool) -> anyhow::Result<ExitCode> {
    let Some(answer) = ask(config, Request::Status, Duration::from_secs(5)) else {
        let pid = running_pid(config)?;
        bail!(
            "arbiter {pid} is running but its control socket {} does not answer",
            config.control_socket.display()
        );
    };
    let answer = answer.context("the arbiter did not answer")?;
    let Some(status) = answer.status else {
        bail!("{}", answer.message)
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", control::render(&status));
    }
    Ok(ExitCode::SUCCESS)
}

fn scale(
    config: &Target,
    request: Request,
    signal: nix::sys::signal::Signal,
) -> anyhow::Result<ExitCode> {
    match ask(config, request, Duration::from_secs(10)) {
        Some(answer) => {
            let answer = answer.context("the arbiter did not answer")?;
            if !answer.ok {
                bail!("{}", answer.message);
            }
            println!("{}", answer.message);
        }
        None => {
            nix::sys::signal::kill(running_pid(config)?, signal)?;
            println!("{signal} sent");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn check(config: &ConfigArg) -> anyhow::Result<ExitCode> {
    let path = config.path();
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(EXIT_FAILURE));
        }
    };
    println!("# {} is valid. The effective config:\n", path.display());
    println!("{}", config.to_toml());
    match arbiter_core::budget::compute(&config, config.server.workers, 0) {
        Ok(budget) => match budget.check() {
            Ok(()) => println!("# memory budget: {budget}"),
            Err(e) => {
                eprintln!("arbiter: {e}");
                return Ok(ExitCode::from(EXIT_FAILURE));
            }
        },
        Err(e) => {
            eprintln!("arbiter: {e}");
            return Ok(ExitCode::from(EXIT_FAILURE));
        }
    }
    // What this CPU's arithmetic offers, for `precision` and INT8 files.
    println!("# this CPU: {}", arbiter_infer::CpuOffers::detect());
    // Each model's recipe against its actual input (ONNX Runtime reads it; `check` never forks),
    // and its precision against this machine.
    let several = config.models.len() > 1;
    let mut failed = false;
    for model in &config.models {
        let name = if several {
            format!("model `{}`: ", model.name)
        } else {
            String::new()
        };
        let library = model.openvino_library.as_deref();
        let checked = (if model.precision == arbiter_config::Precision::Bf16 {
            arbiter_infer::init_openvino(library)
        } else {
            Ok(())
        })
        .and_then(|()| arbiter_infer::check_precision(model.device, model.precision))
        .map_err(|e| arbiter_infer::error_chain(&e))
        .and_then(|()| inspect::check_model(model));
        match checked {
            Ok(summary) => println!("# {name}{summary}"),
            Err(e) => {
                eprintln!("arbiter: {name}{e}");
                failed = true;
            }
        }
    }
    if failed {
        return Ok(ExitCode::from(EXIT_FAILURE));
    }
    Ok(ExitCode::SUCCESS)
}
