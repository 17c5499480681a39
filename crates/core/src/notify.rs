//! systemd's service notification protocol (`sd_notify(3)`), for `Type=notify` and
//! `Type=notify-reload` units: `READY=1` once the first generation serves, `RELOADING=1` with
//! `MONOTONIC_USEC` then `READY=1` around a reload, `STOPPING=1`, `STATUS=` lines for
//! `systemctl status`, `WATCHDOG=1` at half of `WatchdogSec`, and `MAINPID` after `--daemon`.
//!
//! The protocol is a datagram of `KEY=VALUE` lines sent to the unix socket named by
//! `NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace). It is written here rather
//! than taken from the `sd-notify` crate: it is a few dozen lines over std's `UnixDatagram`, it
//! must stay synchronous and thread-free like the rest of the arbiter, and the arbiter must take
//! the variables out of its environment at a moment it chooses (before any fork) so that
//! workers and `[[program]]` children never speak for it. Without `NOTIFY_SOCKET` every call is
//! a no-op, so the arbiter behaves the same outside systemd.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

/// Where notifications go, and the watchdog's period; taken from the environment once.
#[derive(Debug)]
pub(crate) struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    /// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`.
    ping_every: Option<Duration>,
    last_ping: Option<Instant>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`, and removes them from the
    /// environment so that no child inherits them. Call while single-threaded.
    pub(crate) fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        let watchdog_usec = std::env::var("WATCHDOG_USEC").ok();
        let watchdog_pid = std::env::var("WATCHDOG_PID").ok();
        crate::sys::clear_notify_env();
        let target = socket.and_then(|s| match connect(&s.to_string_lossy()) {
            Ok(target) => Some(target),
            Err(e) => {
                warn!(socket = ?s, "NOTIFY_SOCKET is set but unusable, not notifying systemd: {e}");
                None
            }
        });
        let ping_every = ping_period(
            watchdog_usec.as_deref(),
            watchdog_pid.as_deref(),
            std::process::id(),
        )
        .filter(|_| target.is_some());
        Notifier {
            target,
            ping_every,
            last_ping: None,
        }
    }

    /// Sends one notification (newline-separated `KEY=VALUE` lines); failures are logged only.
    pub(crate) fn send(&self, state: &str) {
        let Some((socket, addr)) = &self.target else {
            return;
        };
        debug!(state, "sd_notify");
        if let Err(e) = socket.send_to_addr(state.as_bytes(), addr) {
            warn!("cannot notify systemd ({state:?}): {e}");
        }
    }

    /// The first generation serves: a request can be answered now.
    pub(crate) fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// A reload begins; systemd's `Type=notify-reload` waits for the `READY=1` that ends it.
    pub(crate) fn reloading(&self, status: &str) {
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS={status}",
            monotonic_usec()
        ));
    }

    /// The stop began.
    pub(crate) fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={status}"));
    }

    /// A status line alone.
    pub(crate) fn status(&self, status: &str) {
        self.send(&format!("STATUS={status}"));
    }

    /// After `--daemon`: this process, not the one systemd started, is the service.
    pub(crate) fn main_pid(&self) {
        self.send(&format!("MAINPID={}", std::process::id()));
    }

    /// Sends `WATCHDOG=1` when half of `WATCHDOG_USEC` passed since the last one.
    pub(crate) fn watchdog(&mut self, now: Instant) {
        let Some(every) = self.ping_every else {
            return;
        };
        if self
            .last_ping
            .is_none_or(|last| now.duration_since(last) >= every)
        {
            self.last_ping = Some(now);
            self.send("WATCHDOG=1");
        }
    }

    /// How often the watchdog is pinged, when systemd asked for it.
    pub(crate) fn watchdog_period(&self) -> Option<Duration> {
        self.ping_every
    }
}

/// Half of `WATCHDOG_USEC`, when it is set and `WATCHDOG_PID` is unset or `me`: systemd sets
/// the pid when the watchdog is meant for one process only (a wrapper's child, say).
fn ping_period(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let ours = pid.is_none_or(|p| p.trim().parse::<u32>().ok() == Some(me));
    usec.and_then(|u| u.trim().parse::<u64>().ok())
        .filter(|&u| u > 0 && ours)
        .map(|u| Duration::from_micros(u / 2))
}

/// An unbound datagram socket and the address `NOTIFY_SOCKET` names.
fn connect(name: &str) -> std::io::Result<(UnixDatagram, SocketAddr)> {
    let addr = if let Some(abstract_name) = name.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(abstract_name.as_bytes())?
    } else if name.starts_with('/') {
        SocketAddr::from_pathname(name)?
    } else {
        return Err(std::io::Error::other(
            "neither an absolute path nor an @abstract name",
        ));
    };
    Ok((UnixDatagram::unbound()?, addr))
}

/// `CLOCK_MONOTONIC` in microseconds, the clock systemd compares `MONOTONIC_USEC` with.
pub(crate) fn monotonic_usec() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notifier(dir: &std::path::Path, ping_every: Option<Duration>) -> (Notifier, UnixDatagram) {
        let path = dir.join("notify.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let notifier = Notifier {
            target: Some(connect(path.to_str().unwrap()).unwrap()),
            ping_every,
            last_ping: None,
        };
        (notifier, receiver)
    }

    fn recv(receiver: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = receiver.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn datagrams_carry_the_protocol_lines() {
        let dir = tempfile::tempdir().unwrap();
        let (notifier, receiver) = notifier(dir.path(), None);
        let before = monotonic_usec();
        notifier.reloading("reloading to generation 2");
        let after = monotonic_usec();
        let message = recv(&receiver);
        let mut lines = message.lines();
        assert_eq!(lines.next(), Some("RELOADING=1"));
        let usec: u64 = lines
            .next()
            .and_then(|l| l.strip_prefix("MONOTONIC_USEC="))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {message:?}"));
        assert!(
            (before..=after).contains(&usec),
            "{before} <= {usec} <= {after}"
        );
        assert_eq!(lines.next(), Some("STATUS=reloading to generation 2"));
        notifier.ready("serving");
        assert_eq!(recv(&receiver), "READY=1\nSTATUS=serving");
        notifier.main_pid();
        assert_eq!(recv(&receiver), format!("MAINPID={}", std::process::id()));
    }

    #[test]
    fn watchdog_pings_at_its_period_only() {
        let dir = tempfile::tempdir().unwrap();
        let (mut notifier, receiver) = notifier(dir.path(), Some(Duration::from_millis(500)));
        receiver.set_nonblocking(true).unwrap();
        let t0 = Instant::now();
        notifier.watchdog(t0);
        notifier.watchdog(t0 + Duration::from_millis(100));
        notifier.watchdog(t0 + Duration::from_millis(499));
        notifier.watchdog(t0 + Duration::from_millis(500));
        let mut buf = [0u8; 64];
        let mut pings = 0;
        while let Ok(n) = receiver.recv(&mut buf) {
            assert_eq!(&buf[..n], b"WATCHDOG=1");
            pings += 1;
        }
        assert_eq!(pings, 2, "at 0 and at 500 ms");
    }

    #[test]
    fn watchdog_only_for_this_pid() {
        let half = Some(Duration::from_millis(500));
        assert_eq!(ping_period(Some("1000000"), None, 42), half);
        assert_eq!(ping_period(Some("1000000"), Some("42"), 42), half);
        assert_eq!(ping_period(Some("1000000"), Some("43"), 42), None);
        assert_eq!(ping_period(Some("0"), None, 42), None);
        assert_eq!(ping_period(None, None, 42), None);
    }

    #[test]
    fn abstract_and_relative_names() {
        assert!(connect("@arbiter-test").is_ok());
        assert!(connect("relative/path").is_err());
        // No socket: nothing is sent and nothing fails.
        let quiet = Notifier {
            target: None,
            ping_every: None,
            last_ping: None,
        };
        quiet.ready("x");
    }
}
