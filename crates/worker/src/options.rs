//! What the binary hands a worker: model and labels, limits, batching, proxies, timings.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Everything one worker needs, built by the binary from the validated config.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// How to load the model (path, runtime library, device, threads, max batch).
    pub model: arbiter_infer::ModelOptions,
    /// The class-name file (`{"0": "Aeroplane", ...}`).
    pub labels: PathBuf,
    /// Outputs strictly above this are kept (the seed uses 0.5).
    pub threshold: f32,
    /// The model's name in the KServe v2 routes.
    pub model_name: String,
    /// Request limits.
    pub limits: Limits,
    /// Dynamic batching and the inference queue.
    pub batching: Batching,
    /// Threads decoding and preprocessing images (and parsing tensor JSON) at once.
    pub preprocess_threads: usize,
    /// Peers whose `X-Forwarded-For` / `X-Real-IP` headers are believed.
    pub trusted_proxies: Vec<IpCidr>,
    /// Whether a peer on a unix socket counts as a trusted proxy.
    pub trust_unix_peers: bool,
    /// How often the worker writes its heartbeat into the scoreboard.
    pub heartbeat_interval: Duration,
    /// How long a drain may take before the worker gives up on the remaining requests.
    pub graceful_timeout: Duration,
    /// Drain and exit (code 0) after answering this many requests.
    pub max_requests: Option<u64>,
    /// On a CPU, prepare the model in this cache folder so all workers share one copy of the
    /// weights (see `arbiter_infer::prepare`); `None` loads the model as it is.
    pub shared_weights_cache: Option<PathBuf>,
    /// Let ONNX Runtime's intra-op threads spin between parallel sections.
    pub intra_op_spinning: bool,
    /// On a CPU with several intra-op threads, run batches side by side under load, one thread
    /// each (see `batcher`'s "Lanes"); a lone request still runs on every thread.
    pub parallel_batches: bool,
    /// Decode JPEGs over twice the model's input at a reduced scale (libjpeg's DCT scaling, as
    /// Pillow's `draft`): several times faster on big photos, not the seed's exact pixels.
    pub fast_jpeg: bool,
    /// Called on USR1: reopen the log file the worker writes to.
    pub reopen_logs: Option<ReopenLogs>,
}

/// What a worker calls on USR1 to reopen its log file (the binary owns the logger).
#[derive(Clone)]
pub struct ReopenLogs(pub std::sync::Arc<dyn Fn() + Send + Sync>);

impl fmt::Debug for ReopenLogs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReopenLogs")
    }
}

impl WorkerOptions {
    /// Options with the defaults for everything but the model and label files.
    pub fn new(model: arbiter_infer::ModelOptions, labels: PathBuf) -> WorkerOptions {
        WorkerOptions {
            model,
            labels,
            threshold: 0.5,
            model_name: DEFAULT_MODEL_NAME.to_owned(),
            limits: Limits::default(),
            batching: Batching::default(),
            preprocess_threads: 2,
            trusted_proxies: vec![IpCidr::LOCALHOST_V4, IpCidr::LOCALHOST_V6],
            trust_unix_peers: true,
            heartbeat_interval: Duration::from_secs(1),
            graceful_timeout: Duration::from_secs(30),
            max_requests: None,
            shared_weights_cache: None,
            intra_op_spinning: false,
            parallel_batches: true,
            fast_jpeg: false,
            reopen_logs: None,
        }
    }
}

/// The model name the KServe v2 routes answer to unless configured otherwise.
pub const DEFAULT_MODEL_NAME: &str = "resnet50";

/// Request limits. The defaults are what nginx and gunicorn users expect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body (the whole multipart body, a raw image or a tensor request).
    pub max_body_bytes: u64,
    /// Largest image, in pixels, decoded (Pillow's decompression-bomb limit is 89,478,485).
    pub max_pixels: u64,
    /// Time a client has to send a request's headers.
    pub header_read_timeout: Duration,
    /// Time a client has to send a request's body.
    pub body_read_timeout: Duration,
    /// Time from request head to response, body included; past it the request is abandoned.
    pub request_deadline: Duration,
    /// How long an idle keep-alive connection stays open.
    pub keepalive_timeout: Duration,
    /// Open connections per worker; more wait in the kernel's accept queue.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body_bytes: 20 * 1024 * 1024,
            max_pixels: 89_478_485,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            request_deadline: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(5),
            max_connections: 1000,
        }
    }
}

/// Dynamic batching: how the inference thread groups queued requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batching {
    /// Most images in one model run.
    pub max_batch_size: usize,
    /// How long the inference thread waits for more requests once it has one, while more are on
    /// their way (being preprocessed); 0 = take only what is already queued.
    pub max_delay: Duration,
    /// Requests admitted past body reading and not yet answered by the model, beyond the
    /// preprocessing threads; more get an immediate 503.
    pub queue_capacity: usize,
}

impl Default for Batching {
    fn default() -> Batching {
        // On CPU, ONNX Runtime gives the same images/s at batch 1 and 8, so batching buys little
        // there and costs latency; a small batch and delay keep single requests fast and still
        // help a GPU. See the worker's report for the measurements.
        Batching {
            max_batch_size: 8,
            max_delay: Duration::from_millis(2),
            queue_capacity: 64,
        }
    }
}

/// An IP network (`10.0.0.0/8`, `::1/128`, or a bare address meaning one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpCidr {
    addr: IpAddr,
    prefix: u8,
}

/// A string that is not an IP network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address or network (like 10.0.0.0/8 or ::1)")]
pub struct CidrError(String);

impl IpCidr {
    /// 127.0.0.0/8.
    pub const LOCALHOST_V4: IpCidr = IpCidr {
        addr: IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 0)),
        prefix: 8,
    };
    /// ::1/128.
    pub const LOCALHOST_V6: IpCidr = IpCidr {
        addr: IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        prefix: 128,
    };

    /// Whether `ip` is inside this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpCidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<IpCidr, CidrError> {
        let err = || CidrError(s.to_owned());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| err())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(err)?,
            None => max,
        };
        Ok(IpCidr { addr, prefix })
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parse_and_contains() {
        let net: IpCidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(
            net.contains("::ffff:10.1.0.9".parse().unwrap()),
            "v4-mapped counts as v4"
        );
        let host: IpCidr = "192.168.1.5".parse().unwrap();
        assert_eq!(host.to_string(), "192.168.1.5/32");
        assert!(host.contains("192.168.1.5".parse().unwrap()));
        assert!(!host.contains("192.168.1.6".parse().unwrap()));
        let all: IpCidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!(!all.contains("::1".parse().unwrap()));
        assert!(IpCidr::LOCALHOST_V6.contains("::1".parse().unwrap()));
        let v6: IpCidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "example",
            "10.0.0.0/x",
            "1.2.3/8",
        ] {
            assert!(bad.parse::<IpCidr>().is_err(), "{bad}");
        }
    }
}
