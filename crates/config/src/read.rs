//! Validation: the file's TOML tree read key by key into the validated [`Config`], starting from
//! the built-in defaults, every problem collected with its key path and line.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use crate::defaults::{HEARTBEAT_INTERVAL, control_socket_and_pidfile};
use crate::programs::read_programs;
use crate::reader::{Errors, Table, resolve};
use crate::recipe::{read_postprocess, read_preprocess};
use crate::units::format_duration;
use crate::{
    Amount, Batching, Bind, Config, ConfigError, Device, IpCidr, Limits, LoadError, Log, Memory,
    Model, Output, Precision, Server, TrustedProxy,
};

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
        let batching = match root.table("batching", &mut errs) {
            Some(mut t) => {
                let b = read_batching(&mut t, Batching::defaults(), &mut errs);
                t.finish(&mut errs);
                b
            }
            None => Batching::defaults(),
        };
        let (models, default_model) = read_models(&mut root, &base, &batching, &mut errs);
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
            models,
            default_model,
            batching,
            limits,
            memory,
            log,
            programs,
        })
    }
}

/// Where the arbiter running on `file` keeps its control socket and pidfile, read leniently:
/// a file broken by an edit still finds the arbiter that runs on its previous version.
pub fn locate(file: &Path) -> (PathBuf, PathBuf) {
    let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let (mut control, mut pidfile) = control_socket_and_pidfile(&base);
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

fn read_server(root: &mut Table, base: &Path, errs: &mut Errors) -> Server {
    let mut server = Server::defaults(base);
    let Some(mut t) = root.table("server", errs) else {
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
        let least = 2 * HEARTBEAT_INTERVAL;
        if d < least {
            errs.at(
                &field.path,
                &field.span,
                format!(
                    "must be at least {} (workers heart-beat every {})",
                    format_duration(least),
                    format_duration(HEARTBEAT_INTERVAL)
                ),
            );
        } else {
            server.heartbeat_timeout = d;
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
    if let Some(b) = t.boolean("ui", errs) {
        server.ui = b;
    }
    if let Some(b) = t.boolean("own_huffman_decoder", errs) {
        server.own_huffman_decoder = b;
    }
    if let Some(n) = t.count("min_data_rate", 0, errs) {
        server.min_data_rate = n as u64;
    }
    if let Some(d) = t.duration("min_data_rate_grace", errs) {
        server.min_data_rate_grace = d;
    }
    if let Some(b) = t.boolean("close_on_overload", errs) {
        server.close_on_overload = b;
    }
    if let Some(n) = t.count("accept_batch", 1, errs) {
        server.accept_batch = n;
    }
    if let Some(n) = read_nice(&mut t, "http_nice", errs) {
        server.http_nice = n;
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
    text.parse::<IpCidr>()
        .map(TrustedProxy::Net)
        .map_err(|e| format!("{e} (or \"unix\")"))
}

/// `[model]` (one model) or `[[model]]` (several): the models and the index of the default.
fn read_models(
    root: &mut Table,
    base: &Path,
    batching: &Batching,
    errs: &mut Errors,
) -> (Vec<Model>, usize) {
    let tables = match root.field("model") {
        None => return (vec![Model::defaults(base, batching)], 0),
        Some(field) if field.value.as_array().is_some() => root.tables("model", errs),
        Some(_) => root.table("model", errs).into_iter().collect(),
    };
    let mut models: Vec<Model> = Vec::new();
    let mut default = None;
    let mut spinning_set = Vec::new();
    let several = tables.len() > 1;
    if tables.len() > crate::defaults::MAX_MODELS {
        errs.at(
            "model",
            &root.span,
            format!(
                "has {} models; one arbiter serves at most {}",
                tables.len(),
                crate::defaults::MAX_MODELS
            ),
        );
    }
    for mut t in tables {
        let (model, is_default, spinning) = read_model(&mut t, base, batching, several, errs);
        let path = t.path.clone();
        let span = t.span.clone();
        t.finish(errs);
        if models
            .iter()
            .any(|m| m.name == model.name && m.version == model.version)
        {
            errs.at(
                &format!("{path}.name"),
                &span,
                format!(
                    "another model is `{}` version {}: give each its own name or version",
                    model.name, model.version
                ),
            );
        }
        if is_default {
            match default {
                Some(first) => errs.at(
                    &format!("{path}.default"),
                    &span,
                    format!(
                        "model `{}` is already the default: only one model may say default = true",
                        models.get(first).map_or("?", |m: &Model| m.name.as_str())
                    ),
                ),
                None => default = Some(models.len()),
            }
        }
        spinning_set.push(spinning);
        models.push(model);
    }
    if models.is_empty() {
        errs.at("model", &root.span, "needs at least one [[model]]");
        models.push(Model::defaults(base, batching));
        spinning_set.push(false);
    }
    let spinning = crate::defaults::spinning(models.len());
    for (model, set) in models.iter_mut().zip(spinning_set) {
        if !set {
            model.spinning = spinning;
        }
    }
    (models, default.unwrap_or(0))
}

/// Names in URLs, metrics and logs: letters, digits, '-', '_' and '.'.
fn url_safe(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// One model's table; returns it, whether it says `default = true`, and whether it sets
/// `spinning`. `several`: the file has more than one model, each of which must be named.
fn read_model(
    t: &mut Table,
    base: &Path,
    batching: &Batching,
    several: bool,
    errs: &mut Errors,
) -> (Model, bool, bool) {
    let mut model = Model::defaults(base, batching);
    match t.string("name", errs) {
        Some((name, field)) => {
            if url_safe(&name) {
                model.name = name;
            } else {
                errs.at(&field.path, &field.span, format!("`{name}` must be non-empty letters, digits, '-', '_' or '.' (it appears in URLs)"));
            }
        }
        None if several => errs.at(
            &format!("{}.name", t.path),
            &t.span,
            "every [[model]] needs a name when there are several",
        ),
        None => {}
    }
    if let Some((version, field)) = t.string("version", errs) {
        if !version.is_empty()
            && version.chars().all(|c| c.is_ascii_digit())
            && version.parse::<u64>().is_ok_and(|v| v > 0)
        {
            model.version = version;
        } else {
            errs.at(
                &field.path,
                &field.span,
                format!(
                    "`{version}` must be a whole number above 0, like \"2\" (Triton's versions)"
                ),
            );
        }
    }
    let is_default = t.boolean("default", errs).unwrap_or(false);
    if let Some((p, _)) = t.string("path", errs) {
        model.path = resolve(base, &p);
    }
    if let Some((p, _)) = t.string("labels", errs) {
        model.labels = resolve(base, &p);
    }
    let threshold = t.float("threshold", errs);
    if let Some((x, field)) = &threshold {
        if x.is_finite() {
            model.threshold = *x as f32;
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
    if let Some((p, field)) = t.string("precision", errs) {
        match p.as_str() {
            "fp32" => model.precision = Precision::Fp32,
            "bf16" => model.precision = Precision::Bf16,
            _ => errs.at(
                &field.path,
                &field.span,
                format!(
                    "`{p}` is not a precision; use \"fp32\" or \"bf16\" (an INT8 model is a \
                     file of its own: scripts/quantize.py, served at \"fp32\")"
                ),
            ),
        }
    }
    if let Some((p, _)) = t.string("runtime_library", errs) {
        model.runtime_library = Some(resolve(base, &p));
    }
    if let Some((p, _)) = t.string("openvino_library", errs) {
        model.openvino_library = Some(resolve(base, &p));
    }
    if let Some(b) = t.boolean("share_weights", errs) {
        model.share_weights = b;
    }
    if let Some((p, _)) = t.string("cache_dir", errs) {
        model.cache_dir = resolve(base, &p);
    }
    let spinning = t.boolean("spinning", errs);
    if let Some(b) = spinning {
        model.spinning = b;
    }
    if let Some(b) = t.boolean("parallel_batches", errs) {
        model.parallel_batches = b;
    }
    if let Some(b) = t.boolean("fast_jpeg", errs) {
        model.fast_jpeg = b;
    }
    if let Some(n) = read_nice(t, "nice", errs) {
        model.nice = n;
    }
    model.preprocess = read_preprocess(t, errs);
    model.postprocess = read_postprocess(t, errs);
    if let Some(mut b) = t.table("batching", errs) {
        if let Some(field) = b.field("preprocess_threads") {
            errs.at(
                &field.path,
                &field.span,
                "is shared by every model of a worker: set it in [batching]",
            );
        }
        model.batching = read_batching(&mut b, batching.clone(), errs);
        b.finish(errs);
    }
    if model.postprocess.output == Output::Sigmoid
        && let Some((x, field)) = &threshold
        && !(*x > 0.0 && *x < 1.0)
    {
        errs.at(
            &field.path,
            &field.span,
            format!(
                "with model.postprocess.output = \"sigmoid\" must lie between 0 and 1 \
                 (a sigmoid never reaches {x})"
            ),
        );
    }
    (model, is_default, spinning.is_some())
}

/// A nice value, 0 to 19: a worker may raise its threads' nice value, not lower it.
fn read_nice(t: &mut Table, key: &str, errs: &mut Errors) -> Option<i32> {
    let (n, field) = t.integer(key, errs)?;
    if (0..=19).contains(&n) {
        return Some(n as i32);
    }
    errs.at(
        &field.path,
        &field.span,
        format!(
            "must be 0 to 19, got {n} (a worker may raise its threads' nice value, not lower it)"
        ),
    );
    None
}

fn parse_device(text: &str) -> Option<Device> {
    match text {
        "cpu" => Some(Device::Cpu),
        "cuda" => Some(Device::Cuda(0)),
        _ => text.strip_prefix("cuda:")?.parse().ok().map(Device::Cuda),
    }
}

/// The keys of a `[batching]` table over `b`: the file's `[batching]` over the defaults, or a
/// `[model.batching]` over the file's `[batching]`.
fn read_batching(t: &mut Table, mut b: Batching, errs: &mut Errors) -> Batching {
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
    b
}

fn read_limits(root: &mut Table, errs: &mut Errors) -> Limits {
    let mut l = Limits::defaults();
    let Some(mut t) = root.table("limits", errs) else {
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
    let mut m = Memory::defaults();
    let Some(mut t) = root.table("memory", errs) else {
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
    let mut log = Log::defaults();
    let Some(mut t) = root.table("log", errs) else {
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
