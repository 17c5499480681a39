//! The arbiter's configuration: the TOML file users edit, read into a validated, typed [`Config`].
//!
//! Reading happens in two stages. TOML is parsed into its spanned tree, then a reader walks it
//! key by key, converting and checking each value. Every problem is collected, never just the
//! first: an unknown key (with a suggestion), a wrong type, a bad duration, an impossible value.
//! Each error names its key path and line, so `arbiter check` shows a user everything at once.
//!
//! Relative paths in the file are resolved against the directory of the file itself, so a
//! config works the same whatever directory the arbiter is started from.

mod reader;
pub mod units;

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use reader::{Errors, Table};

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key path, like `server.workers` or `server.bind[1]`.
    pub key: String,
    /// The 1-based line in the file, when known.
    pub line: Option<usize>,
    /// What is wrong, for a person.
    pub message: String,
}

/// Everything wrong with a config file, reported at once.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid config.
    #[error("{}", render_errors(file, errors))]
    Invalid {
        /// The file.
        file: PathBuf,
        /// Every problem found.
        errors: Vec<ConfigError>,
    },
}

fn render_errors(file: &Path, errors: &[ConfigError]) -> String {
    let mut out = format!(
        "{} has {} error{}:",
        file.display(),
        errors.len(),
        if errors.len() == 1 { "" } else { "s" }
    );
    for e in errors {
        let line = e.line.map(|l| format!(":{l}")).unwrap_or_default();
        let key = if e.key.is_empty() {
            String::new()
        } else {
            format!(" {}:", e.key)
        };
        out.push_str(&format!("\n  {}{line}:{key} {}", file.display(), e.message));
    }
    out
}

/// A listening address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    /// `"127.0.0.1:10086"`, `"[::1]:10086"`, `"localhost:10086"`.
    Tcp(SocketAddr),
    /// `"unix:/run/arbiter.sock"`.
    Unix(PathBuf),
    /// `"fd://3"`: a socket already open in this process (systemd, a parent supervisor).
    Fd(i32),
}

impl fmt::Display for Bind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bind::Tcp(addr) => write!(f, "{addr}"),
            Bind::Unix(path) => write!(f, "unix:{}", path.display()),
            Bind::Fd(fd) => write!(f, "fd://{fd}"),
        }
    }
}

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// The CPU.
    Cpu,
    /// The CUDA device with this ordinal.
    Cuda(u32),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// A memory amount that may be measured instead of declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amount {
    /// Measure it (device memory, available host memory, or the model's footprint).
    Auto,
    /// This many bytes.
    Bytes(u64),
}

/// A source of client addresses that is trusted to set `X-Forwarded-For`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustedProxy {
    /// Any peer on a unix socket (a reverse proxy on the same machine).
    Unix,
    /// A network: an address and a prefix length.
    Net(IpAddr, u8),
}

/// `[server]`: listeners, workers and the process lifecycle.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    /// Every address to listen on; bound once by the arbiter, inherited by workers.
    pub bind: Vec<Bind>,
    /// How many workers to run.
    pub workers: usize,
    /// Listen backlog.
    pub backlog: i32,
    /// The user workers run as (the arbiter must start as root to switch).
    pub user: Option<String>,
    /// The group workers run as.
    pub group: Option<String>,
    /// Allow workers to run as root.
    pub allow_root: bool,
    /// The pidfile.
    pub pidfile: PathBuf,
    /// The control socket `arbiter status|reload|stop` talk to.
    pub control_socket: PathBuf,
    /// How long a draining worker may take to finish in-flight requests before it is killed.
    pub graceful_timeout: Duration,
    /// How long a worker may take to load and warm up its model.
    pub boot_timeout: Duration,
    /// How long a serving worker may go without a heartbeat before it is killed.
    pub heartbeat_timeout: Duration,
    /// Recycle a worker after this many requests.
    pub max_requests: Option<u64>,
    /// Add up to this many requests at random per worker, so workers never recycle together.
    pub max_requests_jitter: u64,
    /// Who may set `X-Forwarded-For`.
    pub trusted_proxies: Vec<TrustedProxy>,
}

/// `[model]`: what to serve and how to run it.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// The model's name in the KServe v2 routes.
    pub name: String,
    /// The ONNX file.
    pub path: PathBuf,
    /// The class-name JSON file (`{"0": "Aeroplane", ...}`).
    pub labels: PathBuf,
    /// Outputs above this are labels.
    pub threshold: f32,
    /// CPU or a CUDA device.
    pub device: Device,
    /// ONNX Runtime intra-op threads per worker; 0 means cores / workers.
    pub threads: usize,
    /// ONNX Runtime's shared library; when absent, `ORT_DYLIB_PATH`.
    pub runtime_library: Option<PathBuf>,
    /// On a CPU, share one copy of the weights between workers through a prepared model.
    pub share_weights: bool,
    /// Where prepared models are kept.
    pub cache_dir: PathBuf,
    /// Let ONNX Runtime's intra-op threads spin while waiting for work.
    pub spinning: bool,
    /// On a CPU with several threads per worker, run batches side by side under load, one
    /// thread each; a lone request still runs on every thread.
    pub parallel_batches: bool,
    /// Decode big JPEGs at a reduced scale (libjpeg's DCT scaling, as Pillow's `draft`) when
    /// they stay at least twice the model's input: faster, but not the seed's exact pixels.
    pub fast_jpeg: bool,
}

/// `[batching]`: how a worker groups requests for the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Batching {
    /// The largest batch.
    pub max_batch_size: usize,
    /// How long the first request of a batch waits for others; 0 takes what is queued.
    pub max_delay: Duration,
    /// Requests waiting for the model, per worker; a full queue answers 503 at once.
    pub queue_size: usize,
    /// Threads per worker that decode and preprocess images; 0 means cores / workers.
    pub preprocess_threads: usize,
}

/// `[limits]`: what a request may cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// The largest request body.
    pub max_body: u64,
    /// The most pixels an image may declare; refused before decoding.
    pub max_pixels: u64,
    /// Time allowed to send the request headers.
    pub header_timeout: Duration,
    /// Time allowed to send the body.
    pub body_timeout: Duration,
    /// Time allowed for the whole request.
    pub request_deadline: Duration,
    /// How long an idle keep-alive connection stays open.
    pub keepalive: Duration,
    /// Open connections per worker.
    pub max_connections: usize,
}

/// `[memory]`: the budget checked before any worker starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// The capacity: `Auto` reads the GPU (NVML) or available host memory.
    pub limit: Amount,
    /// One worker's footprint: `Auto` estimates it from the model file.
    pub per_worker: Amount,
}

/// `[log]`: where logs go and how they look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// A file to append to (reopened on USR1); stderr when absent.
    pub file: Option<PathBuf>,
    /// `"text"` or `"json"`.
    pub json: bool,
    /// A tracing filter, like `"info"` or `"arbiter=debug"`.
    pub level: String,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from.
    pub file: PathBuf,
    /// `[server]`.
    pub server: Server,
    /// `[model]`.
    pub model: Model,
    /// `[batching]`.
    pub batching: Batching,
    /// `[limits]`.
    pub limits: Limits,
    /// `[memory]`.
    pub memory: Memory,
    /// `[log]`.
    pub log: Log,
    /// `[[program]]`: other processes the arbiter keeps running, like supervisord.
    pub programs: Vec<Program>,
}

/// When a supervised program is restarted after it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Autorestart {
    /// Whatever the exit code.
    Always,
    /// Only when the exit code is not in `exitcodes` (or it died from a signal).
    Unexpected,
    /// Never.
    Never,
}

/// A `[[program]]`: a process supervised like supervisord's programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// Its name in logs and `arbiter status`.
    pub name: String,
    /// The argv, `command[0]` looked up in `PATH`.
    pub command: Vec<String>,
    /// The working directory.
    pub directory: Option<PathBuf>,
    /// Extra environment variables.
    pub environment: Vec<(String, String)>,
    /// When to restart it.
    pub autorestart: Autorestart,
    /// Exit codes that count as expected.
    pub exitcodes: Vec<i32>,
    /// How long it must stay up to count as started.
    pub startsecs: Duration,
    /// Failed starts in a row before it is FATAL.
    pub startretries: u32,
    /// The signal that stops it (a name like "TERM" or "QUIT").
    pub stopsignal: String,
    /// How long to wait after `stopsignal` before KILL.
    pub stopwaitsecs: Duration,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Validates config text; `file` names it in errors and anchors relative paths.
    pub fn parse(text: &str, file: &Path) -> Result<Config, LoadError> {
        let invalid = |errors| LoadError::Invalid {
            file: file.to_path_buf(),
            errors,
        };
        let doc = toml::de::DeTable::parse(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            invalid(vec![ConfigError {
                key: String::new(),
                line,
                message: format!("not valid TOML: {}", e.message()),
            }])
        })?;
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut errs = Errors::new(text);
        let mut root = Table::root(&doc);
        let server = read_server(&mut root, &base, &mut errs);
        let model = read_model(&mut root, &base, &mut errs);
        let batching = read_batching(&mut root, &mut errs);
        let limits = read_limits(&mut root, &mut errs);
        let memory = read_memory(&mut root, &mut errs);
        let log = read_log(&mut root, &base, &mut errs);
        let programs = read_programs(&mut root, &base, &mut errs);
        root.finish(&mut errs);
        if !errs.list.is_empty() {
            errs.list.sort_by_key(|e| e.line);
            return Err(invalid(errs.list));
        }
        Ok(Config {
            file: file.to_path_buf(),
            server,
            model,
            batching,
            limits,
            memory,
            log,
            programs,
        })
    }

    /// Preprocessing threads per worker once `0` (auto) is resolved against `cores`.
    pub fn preprocess_threads_per_worker(&self, cores: usize) -> usize {
        if self.batching.preprocess_threads > 0 {
            self.batching.preprocess_threads
        } else {
            (cores / self.server.workers.max(1)).max(1)
        }
    }

    /// Intra-op threads per worker once `0` (auto) is resolved against `cores`.
    pub fn threads_per_worker(&self, cores: usize) -> usize {
        if self.model.threads > 0 {
            self.model.threads
        } else {
            (cores / self.server.workers.max(1)).max(1)
        }
    }

    /// The effective config as TOML, every default filled in.
    pub fn to_toml(&self) -> String {
        use units::{format_duration as d, format_size_exact as s};
        let q = |p: &Path| quote(&p.display().to_string());
        let amount = |a: Amount| match a {
            Amount::Auto => "\"auto\"".to_string(),
            Amount::Bytes(b) => format!("\"{}\"", s(b)),
        };
        let binds: Vec<String> = self
            .server
            .bind
            .iter()
            .map(|b| quote(&b.to_string()))
            .collect();
        let proxies: Vec<String> = self
            .server
            .trusted_proxies
            .iter()
            .map(|p| match p {
                TrustedProxy::Unix => "\"unix\"".to_string(),
                TrustedProxy::Net(ip, len) => format!("\"{ip}/{len}\""),
            })
            .collect();
        let opt = |key: &str, value: Option<String>| match value {
            Some(v) => format!("{key} = {v}"),
            None => format!("# {key} is not set"),
        };
        let s_ = &self.server;
        let m = &self.model;
        let b = &self.batching;
        let l = &self.limits;
        let mut out = format!(
            "[server]\nbind = [{}]\nworkers = {}\nbacklog = {}\n{}\n{}\nallow_root = {}\npidfile = {}\ncontrol_socket = {}\n\
             graceful_timeout = \"{}\"\nboot_timeout = \"{}\"\nheartbeat_timeout = \"{}\"\nmax_requests = {}\nmax_requests_jitter = {}\ntrusted_proxies = [{}]\n\n\
             [model]\nname = {}\npath = {}\nlabels = {}\nthreshold = {}\ndevice = \"{}\"\nthreads = {}\n{}\nshare_weights = {}\ncache_dir = {}\nspinning = {}\nparallel_batches = {}\nfast_jpeg = {}\n\n\
             [batching]\nmax_batch_size = {}\nmax_delay = \"{}\"\nqueue_size = {}\npreprocess_threads = {}\n\n\
             [limits]\nmax_body = \"{}\"\nmax_pixels = {}\nheader_timeout = \"{}\"\nbody_timeout = \"{}\"\nrequest_deadline = \"{}\"\nkeepalive = \"{}\"\nmax_connections = {}\n\n\
             [memory]\nlimit = {}\nper_worker = {}\n\n[log]\n{}\nformat = \"{}\"\nlevel = {}\n",
            binds.join(", "),
            s_.workers,
            s_.backlog,
            opt("user", s_.user.as_ref().map(|u| quote(u))),
            opt("group", s_.group.as_ref().map(|g| quote(g))),
            s_.allow_root,
            q(&s_.pidfile),
            q(&s_.control_socket),
            d(s_.graceful_timeout),
            d(s_.boot_timeout),
            d(s_.heartbeat_timeout),
            s_.max_requests.unwrap_or(0),
            s_.max_requests_jitter,
            proxies.join(", "),
            quote(&m.name),
            q(&m.path),
            q(&m.labels),
            m.threshold,
            m.device,
            m.threads,
            opt("runtime_library", m.runtime_library.as_deref().map(q)),
            m.share_weights,
            q(&m.cache_dir),
            m.spinning,
            m.parallel_batches,
            m.fast_jpeg,
            b.max_batch_size,
            d(b.max_delay),
            b.queue_size,
            b.preprocess_threads,
            s(l.max_body),
            l.max_pixels,
            d(l.header_timeout),
            d(l.body_timeout),
            d(l.request_deadline),
            d(l.keepalive),
            l.max_connections,
            amount(self.memory.limit),
            amount(self.memory.per_worker),
            opt("file", self.log.file.as_deref().map(q)),
            if self.log.json { "json" } else { "text" },
            quote(&self.log.level),
        );
        for p in &self.programs {
            let argv: Vec<String> = p.command.iter().map(|a| quote(a)).collect();
            let env: Vec<String> = p
                .environment
                .iter()
                .map(|(k, v)| format!("{} = {}", quote(k), quote(v)))
                .collect();
            let codes: Vec<String> = p.exitcodes.iter().map(|c| c.to_string()).collect();
            let autorestart = match p.autorestart {
                Autorestart::Always => "always",
                Autorestart::Unexpected => "unexpected",
                Autorestart::Never => "never",
            };
            out.push_str(&format!(
                "\n[[program]]\nname = {}\ncommand = [{}]\n{}\nenvironment = {{ {} }}\nautorestart = \"{autorestart}\"\nexitcodes = [{}]\nstartsecs = \"{}\"\nstartretries = {}\nstopsignal = \"{}\"\nstopwaitsecs = \"{}\"\n",
                quote(&p.name),
                argv.join(", "),
                opt("directory", p.directory.as_deref().map(q)),
                env.join(", "),
                codes.join(", "),
                d(p.startsecs),
                p.startretries,
                p.stopsignal,
                d(p.stopwaitsecs),
            ));
        }
        out
    }
}

/// Where the arbiter running on `file` keeps its control socket and pidfile, read leniently:
/// a file broken by an edit still finds the arbiter that runs on its previous version.
pub fn locate(file: &Path) -> (PathBuf, PathBuf) {
    let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut control = base.join("../var/run/arbiter.sock");
    let mut pidfile = base.join("../var/run/arbiter.pid");
    if let Ok(text) = std::fs::read_to_string(file)
        && let Ok(doc) = toml::de::DeTable::parse(&text)
        && let Some(server) = doc
            .get_ref()
            .get("server")
            .and_then(|s| s.get_ref().as_table())
    {
        let get = |key: &str| {
            server
                .get(key)
                .and_then(|v| v.get_ref().as_str())
                .map(|p| resolve(&base, p))
        };
        control = get("control_socket").unwrap_or(control);
        pidfile = get("pidfile").unwrap_or(pidfile);
    }
    (control, pidfile)
}

/// A TOML basic string: what `{:?}` would write is not always TOML (`\u{590}`, `\0`).
fn quote(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn resolve(base: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// An empty table for a section the file leaves out, so defaults apply.
fn section<'a, 'i>(
    root: &mut Table<'a, 'i>,
    key: &str,
    errs: &mut Errors,
) -> Option<Table<'a, 'i>> {
    root.table(key, errs)
}

fn read_server(root: &mut Table, base: &Path, errs: &mut Errors) -> Server {
    let mut server = Server {
        bind: vec![Bind::Tcp(SocketAddr::from(([127, 0, 0, 1], 10086)))],
        workers: 2,
        backlog: 2048,
        user: None,
        group: None,
        allow_root: false,
        pidfile: base.join("../var/run/arbiter.pid"),
        control_socket: base.join("../var/run/arbiter.sock"),
        graceful_timeout: Duration::from_secs(30),
        boot_timeout: Duration::from_secs(60),
        heartbeat_timeout: Duration::from_secs(10),
        max_requests: None,
        max_requests_jitter: 0,
        trusted_proxies: vec![
            TrustedProxy::Unix,
            TrustedProxy::Net(IpAddr::from([127, 0, 0, 1]), 32),
        ],
    };
    let Some(mut t) = section(root, "server", errs) else {
        return server;
    };
    if let Some((items, field)) = t.strings("bind", errs) {
        if items.is_empty() {
            errs.at(
                &field.path,
                &field.span,
                "needs at least one address, like \"127.0.0.1:10086\"",
            );
        }
        let mut binds = Vec::new();
        for (i, (text, span)) in items.iter().enumerate() {
            match parse_bind(text, base) {
                Ok(b) if binds.contains(&b) => errs.at(
                    &format!("server.bind[{i}]"),
                    span,
                    format!("`{text}` is listed twice"),
                ),
                Ok(b) => binds.push(b),
                Err(e) => errs.at(&format!("server.bind[{i}]"), span, e),
            }
        }
        if !binds.is_empty() {
            server.bind = binds;
        }
    }
    if let Some(n) = t.count("workers", 1, errs) {
        server.workers = n;
    }
    if let Some(n) = t.count("backlog", 1, errs) {
        server.backlog = n.min(i32::MAX as usize) as i32;
    }
    server.user = t.string("user", errs).map(|(s, _)| s);
    server.group = t.string("group", errs).map(|(s, _)| s);
    if let Some(b) = t.boolean("allow_root", errs) {
        server.allow_root = b;
    }
    if let Some((p, _)) = t.string("pidfile", errs) {
        server.pidfile = resolve(base, &p);
    }
    if let Some((p, _)) = t.string("control_socket", errs) {
        server.control_socket = resolve(base, &p);
    }
    if let Some(d) = t.duration("graceful_timeout", errs) {
        server.graceful_timeout = d;
    }
    if let Some(d) = t.duration("boot_timeout", errs) {
        server.boot_timeout = d;
    }
    if let Some(field) = t.field("heartbeat_timeout")
        && let Some(d) = t.duration("heartbeat_timeout", errs)
    {
        {
            if d < Duration::from_secs(2) {
                errs.at(
                    &field.path,
                    &field.span,
                    "must be at least 2s (workers heart-beat once a second)",
                );
            } else {
                server.heartbeat_timeout = d;
            }
        }
    }
    if let Some(n) = t.count("max_requests", 0, errs) {
        server.max_requests = (n > 0).then_some(n as u64);
    }
    if let Some(n) = t.count("max_requests_jitter", 0, errs) {
        server.max_requests_jitter = n as u64;
    }
    if let Some((items, _)) = t.strings("trusted_proxies", errs) {
        server.trusted_proxies.clear();
        for (i, (text, span)) in items.iter().enumerate() {
            match parse_proxy(text) {
                Ok(p) => server.trusted_proxies.push(p),
                Err(e) => errs.at(&format!("server.trusted_proxies[{i}]"), span, e),
            }
        }
    }
    if server.group.is_some() && server.user.is_none() {
        errs.at(
            &format!("{}.group", t.path),
            &t.span,
            "needs server.user as well",
        );
    }
    let path = t.path.clone();
    let span = t.span.clone();
    if server.max_requests.is_none() && server.max_requests_jitter > 0 {
        errs.at(
            &format!("{path}.max_requests_jitter"),
            &span,
            "has no effect without server.max_requests",
        );
    }
    t.finish(errs);
    server
}

fn parse_bind(text: &str, base: &Path) -> Result<Bind, String> {
    if let Some(path) = text.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("`unix:` needs a path, like \"unix:/run/arbiter.sock\"".into());
        }
        return Ok(Bind::Unix(resolve(base, path)));
    }
    if let Some(fd) = text.strip_prefix("fd://") {
        return match fd.parse::<i32>() {
            Ok(n) if n >= 3 => Ok(Bind::Fd(n)),
            _ => Err(format!(
                "`{text}`: fd:// needs a descriptor number of 3 or more"
            )),
        };
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(Bind::Tcp(addr));
    }
    if let Some(port) = text.strip_prefix("localhost:") {
        return port
            .parse::<u16>()
            .map(|p| Bind::Tcp(SocketAddr::from(([127, 0, 0, 1], p))))
            .map_err(|_| format!("`{text}` has no valid port"));
    }
    match text.to_socket_addrs().ok().and_then(|mut a| a.next()) {
        Some(addr) => Ok(Bind::Tcp(addr)),
        None => Err(format!(
            "`{text}` is not an address; write \"127.0.0.1:10086\", \"[::1]:10086\", \"unix:/path.sock\" or \"fd://3\""
        )),
    }
}

fn parse_proxy(text: &str) -> Result<TrustedProxy, String> {
    if text == "unix" {
        return Ok(TrustedProxy::Unix);
    }
    let (ip, len) = match text.split_once('/') {
        Some((ip, len)) => (ip, Some(len)),
        None => (text, None),
    };
    let ip: IpAddr = ip.parse().map_err(|_| {
        format!("`{text}` is not an address or network like \"10.0.0.0/8\" or \"unix\"")
    })?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("`{text}` has a bad prefix length"))?,
    };
    Ok(TrustedProxy::Net(ip, len))
}

fn read_model(root: &mut Table, base: &Path, errs: &mut Errors) -> Model {
    let mut model = Model {
        name: "resnet50".into(),
        path: base.join("../var/models/resnet50-voc20.onnx"),
        labels: base.join("class_name.json"),
        threshold: 0.5,
        device: Device::Cpu,
        threads: 0,
        runtime_library: None,
        share_weights: true,
        cache_dir: base.join("../var/cache/prepared"),
        spinning: true,
        parallel_batches: true,
        fast_jpeg: false,
    };
    let Some(mut t) = section(root, "model", errs) else {
        return model;
    };
    if let Some((name, field)) = t.string("name", errs) {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            errs.at(&field.path, &field.span, format!("`{name}` must be non-empty letters, digits, '-', '_' or '.' (it appears in URLs)"));
        } else {
            model.name = name;
        }
    }
    if let Some((p, _)) = t.string("path", errs) {
        model.path = resolve(base, &p);
    }
    if let Some((p, _)) = t.string("labels", errs) {
        model.labels = resolve(base, &p);
    }
    if let Some((x, field)) = t.float("threshold", errs) {
        if x.is_finite() {
            model.threshold = x as f32;
        } else {
            errs.at(&field.path, &field.span, "must be a finite number");
        }
    }
    if let Some((d, field)) = t.string("device", errs) {
        match parse_device(&d) {
            Some(dev) => model.device = dev,
            None => errs.at(
                &field.path,
                &field.span,
                format!("`{d}` is not a device; use \"cpu\" or \"cuda:N\" (like \"cuda:0\")"),
            ),
        }
    }
    if let Some(n) = t.count("threads", 0, errs) {
        model.threads = n;
    }
    if let Some((p, _)) = t.string("runtime_library", errs) {
        model.runtime_library = Some(resolve(base, &p));
    }
    if let Some(b) = t.boolean("share_weights", errs) {
        model.share_weights = b;
    }
    if let Some((p, _)) = t.string("cache_dir", errs) {
        model.cache_dir = resolve(base, &p);
    }
    if let Some(b) = t.boolean("spinning", errs) {
        model.spinning = b;
    }
    if let Some(b) = t.boolean("parallel_batches", errs) {
        model.parallel_batches = b;
    }
    if let Some(b) = t.boolean("fast_jpeg", errs) {
        model.fast_jpeg = b;
    }
    t.finish(errs);
    model
}

fn parse_device(text: &str) -> Option<Device> {
    match text {
        "cpu" => Some(Device::Cpu),
        "cuda" => Some(Device::Cuda(0)),
        _ => text.strip_prefix("cuda:")?.parse().ok().map(Device::Cuda),
    }
}

fn read_batching(root: &mut Table, errs: &mut Errors) -> Batching {
    let mut b = Batching {
        max_batch_size: 1,
        max_delay: Duration::from_millis(2),
        queue_size: 64,
        preprocess_threads: 0,
    };
    let Some(mut t) = section(root, "batching", errs) else {
        return b;
    };
    if let Some(n) = t.count("max_batch_size", 1, errs) {
        b.max_batch_size = n;
    }
    if let Some(d) = t.duration("max_delay", errs) {
        b.max_delay = d;
    }
    if let Some(n) = t.count("queue_size", 1, errs) {
        b.queue_size = n;
    }
    if let Some(n) = t.count("preprocess_threads", 0, errs) {
        b.preprocess_threads = n;
    }
    t.finish(errs);
    b
}

fn read_limits(root: &mut Table, errs: &mut Errors) -> Limits {
    let mut l = Limits {
        max_body: 20 << 20,
        max_pixels: 89_478_485,
        header_timeout: Duration::from_secs(10),
        body_timeout: Duration::from_secs(30),
        request_deadline: Duration::from_secs(60),
        keepalive: Duration::from_secs(5),
        max_connections: 1000,
    };
    let Some(mut t) = section(root, "limits", errs) else {
        return l;
    };
    if let Some(n) = t.size("max_body", errs) {
        l.max_body = n;
    }
    if let Some(n) = t.count("max_pixels", 1, errs) {
        l.max_pixels = n as u64;
    }
    if let Some(d) = t.duration("header_timeout", errs) {
        l.header_timeout = d;
    }
    if let Some(d) = t.duration("body_timeout", errs) {
        l.body_timeout = d;
    }
    if let Some(d) = t.duration("request_deadline", errs) {
        l.request_deadline = d;
    }
    if let Some(d) = t.duration("keepalive", errs) {
        l.keepalive = d;
    }
    if let Some(n) = t.count("max_connections", 1, errs) {
        l.max_connections = n;
    }
    t.finish(errs);
    l
}

fn read_memory(root: &mut Table, errs: &mut Errors) -> Memory {
    let mut m = Memory {
        limit: Amount::Auto,
        per_worker: Amount::Auto,
    };
    let Some(mut t) = section(root, "memory", errs) else {
        return m;
    };
    for (key, slot) in [("limit", &mut m.limit), ("per_worker", &mut m.per_worker)] {
        if let Some(field) = t.field(key) {
            if field.value.as_str() == Some("auto") {
                *slot = Amount::Auto;
            } else if let Some(n) = t.size(key, errs) {
                if n == 0 {
                    errs.at(
                        &field.path,
                        &field.span,
                        "must be more than 0 (or \"auto\")",
                    );
                } else {
                    *slot = Amount::Bytes(n);
                }
            }
        }
    }
    t.finish(errs);
    m
}

fn read_log(root: &mut Table, base: &Path, errs: &mut Errors) -> Log {
    let mut log = Log {
        file: None,
        json: false,
        level: "info".into(),
    };
    let Some(mut t) = section(root, "log", errs) else {
        return log;
    };
    if let Some((p, _)) = t.string("file", errs) {
        log.file = Some(resolve(base, &p));
    }
    if let Some((f, field)) = t.string("format", errs) {
        match f.as_str() {
            "text" => log.json = false,
            "json" => log.json = true,
            _ => errs.at(
                &field.path,
                &field.span,
                format!("`{f}` is not a log format; use \"text\" or \"json\""),
            ),
        }
    }
    if let Some((level, _)) = t.string("level", errs) {
        log.level = level;
    }
    t.finish(errs);
    log
}

/// The signal names `stopsignal` accepts.
pub const STOP_SIGNALS: [&str; 6] = ["TERM", "INT", "QUIT", "HUP", "KILL", "USR1"];

fn read_programs(root: &mut Table, base: &Path, errs: &mut Errors) -> Vec<Program> {
    let mut programs: Vec<Program> = Vec::new();
    for mut t in root.tables("program", errs) {
        let mut p = Program {
            name: String::new(),
            command: Vec::new(),
            directory: None,
            environment: Vec::new(),
            autorestart: Autorestart::Unexpected,
            exitcodes: vec![0],
            startsecs: Duration::from_secs(1),
            startretries: 3,
            stopsignal: "TERM".into(),
            stopwaitsecs: Duration::from_secs(10),
        };
        match t.string("name", errs) {
            Some((name, field)) => {
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                {
                    errs.at(
                        &field.path,
                        &field.span,
                        "must be non-empty letters, digits, '-', '_' or '.'",
                    );
                } else if programs.iter().any(|o| o.name == name) {
                    errs.at(
                        &field.path,
                        &field.span,
                        format!("another program is named `{name}`"),
                    );
                } else {
                    p.name = name;
                }
            }
            None => errs.at(
                &format!("{}.name", t.path),
                &t.span,
                "every [[program]] needs a name",
            ),
        }
        match t.strings("command", errs) {
            Some((argv, field)) if argv.is_empty() || argv[0].0.is_empty() => errs.at(
                &field.path,
                &field.span,
                "needs at least the program to run",
            ),
            Some((argv, _)) => p.command = argv.into_iter().map(|(a, _)| a).collect(),
            None => errs.at(
                &format!("{}.command", t.path),
                &t.span,
                "every [[program]] needs a command, like [\"nginx\", \"-g\", \"daemon off;\"]",
            ),
        }
        if let Some((dir, _)) = t.string("directory", errs) {
            p.directory = Some(resolve(base, &dir));
        }
        if let Some(mut env) = t.table("environment", errs) {
            let keys: Vec<String> = env.keys();
            for key in keys {
                if let Some((value, _)) = env.string(&key, errs) {
                    p.environment.push((key, value));
                }
            }
            env.finish(errs);
        }
        if let Some((mode, field)) = t.string("autorestart", errs) {
            match mode.as_str() {
                "always" => p.autorestart = Autorestart::Always,
                "unexpected" => p.autorestart = Autorestart::Unexpected,
                "never" => p.autorestart = Autorestart::Never,
                _ => errs.at(
                    &field.path,
                    &field.span,
                    format!("`{mode}`: use \"always\", \"unexpected\" or \"never\""),
                ),
            }
        }
        if let Some(field) = t.field("exitcodes") {
            match field.value.as_array() {
                Some(items) => {
                    let codes: Vec<i32> = items
                        .iter()
                        .filter_map(|i| i.get_ref().as_integer())
                        .filter_map(|i| i32::from_str_radix(i.as_str(), i.radix()).ok())
                        .collect();
                    if codes.len() != items.len() {
                        errs.at(
                            &field.path,
                            &field.span,
                            "expected a list of exit codes, like [0, 2]",
                        );
                    } else {
                        p.exitcodes = codes;
                    }
                }
                None => errs.at(
                    &field.path,
                    &field.span,
                    "expected a list of exit codes, like [0, 2]",
                ),
            }
        }
        if let Some(d) = t.duration("startsecs", errs) {
            p.startsecs = d;
        }
        if let Some(n) = t.count("startretries", 0, errs) {
            p.startretries = n.min(u32::MAX as usize) as u32;
        }
        if let Some((sig, field)) = t.string("stopsignal", errs) {
            let name = sig.trim_start_matches("SIG").to_ascii_uppercase();
            if STOP_SIGNALS.contains(&name.as_str()) {
                p.stopsignal = name;
            } else {
                errs.at(
                    &field.path,
                    &field.span,
                    format!("`{sig}` is not one of {}", STOP_SIGNALS.join(", ")),
                );
            }
        }
        if let Some(d) = t.duration("stopwaitsecs", errs) {
            p.stopwaitsecs = d;
        }
        t.finish(errs);
        programs.push(p);
    }
    programs
}

#[cfg(test)]
mod tests;
