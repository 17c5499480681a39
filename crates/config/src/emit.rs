//! The effective config written back as TOML (`arbiter check` prints it): every default filled
//! in, and itself a valid config with the same meaning.

use std::path::Path;

use crate::{
    Amount, Autorestart, Config, ElementType, Geometry, Model, Output, TrustedProxy, units,
};

impl Config {
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
                TrustedProxy::Net(net) => quote(&net.to_string()),
            })
            .collect();
        let opt = |key: &str, value: Option<String>| match value {
            Some(v) => format!("{key} = {v}"),
            None => format!("# {key} is not set"),
        };
        let s_ = &self.server;
        let b = &self.batching;
        let l = &self.limits;
        let mut out = format!(
            "[server]\nbind = [{}]\nworkers = {}\nbacklog = {}\n{}\n{}\nallow_root = {}\npidfile = {}\ncontrol_socket = {}\n\
             graceful_timeout = \"{}\"\nboot_timeout = \"{}\"\nheartbeat_timeout = \"{}\"\nmax_requests = {}\nmax_requests_jitter = {}\ntrusted_proxies = [{}]\nui = {}\nown_huffman_decoder = {}\nmin_data_rate = {}\nmin_data_rate_grace = \"{}\"\nclose_on_overload = {}\naccept_batch = {}\nhttp_nice = {}\n\n\
             {}\
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
            s_.ui,
            s_.own_huffman_decoder,
            s_.min_data_rate,
            d(s_.min_data_rate_grace),
            s_.close_on_overload,
            s_.accept_batch,
            s_.http_nice,
            self.models_toml(),
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

    /// `[model]` for one model, else one `[[model]]` per model, each with its tables.
    fn models_toml(&self) -> String {
        use units::format_duration as d;
        let q = |p: &Path| quote(&p.display().to_string());
        let opt = |key: &str, value: Option<String>| match value {
            Some(v) => format!("{key} = {v}"),
            None => format!("# {key} is not set"),
        };
        let header = if self.models.len() == 1 {
            "[model]"
        } else {
            "[[model]]"
        };
        let mut out = String::new();
        for (i, m) in self.models.iter().enumerate() {
            let b = &m.batching;
            // One model is the default whatever it says; its batching is the file's unless it
            // has its own.
            let default = if self.models.len() == 1 {
                String::new()
            } else {
                format!("default = {}\n", i == self.default_model)
            };
            let batching = if *b == self.batching {
                String::new()
            } else {
                format!(
                    "[model.batching]\nmax_batch_size = {}\nmax_delay = \"{}\"\nqueue_size = {}\n\n",
                    b.max_batch_size,
                    d(b.max_delay),
                    b.queue_size
                )
            };
            out += &format!(
                "{header}\nname = {}\nversion = \"{}\"\n{default}path = {}\nlabels = {}\nthreshold = {}\ndevice = \"{}\"\nthreads = {}\nprecision = \"{}\"\n{}\n{}\nshare_weights = {}\ncache_dir = {}\nspinning = {}\nparallel_batches = {}\nfast_jpeg = {}\nnice = {}\n\n{}{batching}",
                quote(&m.name),
                m.version,
                q(&m.path),
                q(&m.labels),
                m.threshold,
                m.device,
                m.threads,
                m.precision,
                opt("runtime_library", m.runtime_library.as_deref().map(q)),
                opt("openvino_library", m.openvino_library.as_deref().map(q)),
                m.share_weights,
                q(&m.cache_dir),
                m.spinning,
                m.parallel_batches,
                m.fast_jpeg,
                m.nice,
                recipe(m),
            );
        }
        out
    }
}

/// `[model.preprocess]` and `[model.postprocess]`, each key that its form does not use written as
/// a comment (the file refuses it there).
fn recipe(m: &Model) -> String {
    let p = &m.preprocess;
    let (resize, shorter_side, crop_pct) = match p.resize {
        Geometry::Squash => ("squash", None, None),
        Geometry::ShorterSide(s) => ("shorter_side", Some(s), None),
        Geometry::CropPct(c) => ("crop_pct", None, Some(c)),
    };
    let only = |key: &str, value: Option<String>, form: &str| match value {
        Some(v) => format!("{key} = {v}\n"),
        None => format!("# {key} is only for {form}\n"),
    };
    let channel = |v: [f32; 3]| format!("[{}, {}, {}]", v[0], v[1], v[2]);
    let float = p.input_type == ElementType::Float32;
    let mut out = format!("[model.preprocess]\nresize = \"{resize}\"\n");
    out += &only(
        "shorter_side",
        shorter_side.map(|s| s.to_string()),
        "resize = \"shorter_side\"",
    );
    out += &only(
        "crop_pct",
        crop_pct.map(|c| c.to_string()),
        "resize = \"crop_pct\"",
    );
    out += &format!("interpolation = \"{}\"\n", p.interpolation.name());
    let uint8 = "input_type = \"float32\"";
    out += &only("divide_by", float.then(|| p.divide_by.to_string()), uint8);
    out += &only("mean", float.then(|| channel(p.mean)), uint8);
    out += &only("std", float.then(|| channel(p.std)), uint8);
    out += &format!(
        "channels = \"{}\"\nlayout = \"{}\"\ninput_type = \"{}\"\n",
        p.channels.name(),
        p.layout.name(),
        p.input_type.name()
    );
    out += &match p.input_size {
        Some(s) => format!("input_size = [{}, {}]\n", s.height, s.width),
        None => "# input_size is not set: the model's own\n".to_string(),
    };
    let (output, top_k) = match m.postprocess.output {
        Output::Threshold => ("threshold", None),
        Output::Sigmoid => ("sigmoid", None),
        Output::Softmax { top_k } => ("softmax", Some(top_k)),
    };
    out += &format!("\n[model.postprocess]\noutput = \"{output}\"\n");
    out += &only(
        "top_k",
        top_k.map(|k| k.to_string()),
        "output = \"softmax\"",
    );
    out += &format!("scores = {}\n\n", m.postprocess.scores);
    out
}

/// A TOML basic string (what `{:?}` writes is not always TOML: `\u{590}`, `\0`): `"` and `\`
/// escaped, control characters as TOML's escapes or `\uXXXX`, everything else as it is.
pub(crate) fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
