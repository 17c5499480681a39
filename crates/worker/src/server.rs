//! Accepting connections on the inherited listeners and serving HTTP/1 on each.
//!
//! - Connections per worker are bounded (`max_connections`). At the limit, the connection just
//!   accepted takes the place of another, asked to close ([`Open::evict_one`]): of those with no
//!   request running, the one waiting longest, idle since its last answer or still sending its
//!   request's headers, once it has waited [`EVICT_AFTER`].
//!   Clients that merely hold connections open (idle, or trickling headers: slowloris) cannot
//!   lock out a client that sends its request at once.
//! - Accept errors such as EMFILE close idle connections to make room (and back off for a moment
//!   when there is none), and the soft limit on open files is raised to the hard one at start.
//! - A flood of connections is accepted `accept_batch` at a time, the requests already in
//!   running in between.
//! - Headers must arrive within `header_read_timeout` (hyper's timer), and, after a grace of
//!   `min_data_rate_grace`, at `min_data_rate` bytes a second or more; a client that started a
//!   request and stalls gets a 408 before the connection closes. (`body.rs` holds bodies to the
//!   same rate.)
//! - An idle keep-alive connection (no request running, nothing read) closes after
//!   `keepalive_timeout`.
//! - A connection closed after an answer its client may not have finished sending for (a 503
//!   refused from the headers alone) reads off what follows for a moment first, so the close
//!   does not reset the answer away.
//! - On shutdown, the accept loops stop (dropping this worker's copy of the listeners) and every
//!   connection finishes the request it is running, then closes; a connection accepted before
//!   the drain whose first request has not begun yet waits up to a second for it (its client
//!   may already have sent it). [`serve`] returns when the last connection has closed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{Notify, Semaphore, TryAcquireError, watch};
use tokio::time::Instant;

use crate::client::Peer;
use crate::options::Limits;
use crate::service::Service;

/// A listening socket inherited from the arbiter, already bound and listening.
#[derive(Debug)]
pub enum Listener {
    /// A TCP socket.
    Tcp(std::net::TcpListener),
    /// A unix socket.
    Unix(std::os::unix::net::UnixListener),
}

/// How long accept backs off after an error like EMFILE when no connection can be shed.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// While every connection slot is taken, how often another connection is asked to make room.
const SHED_INTERVAL: Duration = Duration::from_millis(100);
/// How long a connection with no request running must have waited before it is closed to make
/// room for a new one at `max_connections`. Attackers that reconnect at once queue in the listen
/// backlog ahead of a new well-behaved client, which then waits about this long to be accepted;
/// shorter lets the attackers churn connections (and the cores) faster (docs/overload.md).
const EVICT_AFTER: Duration = Duration::from_secs(1);
/// When accept runs out of file descriptors: connections closed to make room, and how long
/// they get to close before accept tries again.
const SHED_ON_EMFILE: usize = 8;
const SHED_PAUSE: Duration = Duration::from_millis(5);
/// After an answer that closes the connection (a 503 with its body unread, a 413), what of the
/// client's request is read and dropped before closing, so that closing with unread bytes does
/// not reset the connection under the answer (nginx's lingering close).
const LINGER_BYTES: usize = 1024 * 1024;
const LINGER_TIME: Duration = Duration::from_millis(500);

/// Serves `service` on `listeners` until `shutdown` becomes true, then drains: returns when every
/// connection has finished. Fails only if a listener cannot be registered with tokio.
pub async fn serve(
    service: Service,
    listeners: Vec<Listener>,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    raise_fd_limit();
    // The HTTP thread (serve runs on it) and the blocking threads it starts from now on: under
    // overload the models keep the cores (their threads and decode pools started before, at
    // their own nice values), and the HTTP side, whose work grows with the load, gets what is
    // left (docs/overload.md).
    crate::decode::set_thread_nice(limits.http_nice, "the HTTP thread");
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS) as u32;
    let slots = Arc::new(Semaphore::new(max as usize));
    let open = Arc::new(Open::default());
    let limits = Arc::new(limits);
    let mut accepts = Vec::new();
    for listener in listeners {
        let acceptor = Acceptor::new(listener)?;
        let task = accept_loop(
            acceptor,
            service.clone(),
            Arc::clone(&limits),
            Arc::clone(&slots),
            Arc::clone(&open),
            shutdown.clone(),
        );
        accepts.push(tokio::spawn(task));
    }
    for task in accepts {
        let _ = task.await;
    }
    // Every connection holds a permit until it closes: all permits back = all connections done.
    let _all = slots.acquire_many(max).await;
    Ok(())
}

/// Raises the soft limit on open files to the hard one: each connection is a file descriptor,
/// and the usual soft limit (1024) is far below what idle keep-alive connections can take.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "raised the open files limit"),
            Err(e) => tracing::warn!(error = %e, soft, hard, "cannot raise the open files limit"),
        },
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the open files limit"),
    }
}

enum Acceptor {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Acceptor {
    fn new(listener: Listener) -> io::Result<Acceptor> {
        Ok(match listener {
            Listener::Tcp(l) => {
                l.set_nonblocking(true)?;
                Acceptor::Tcp(tokio::net::TcpListener::from_std(l)?)
            }
            Listener::Unix(l) => {
                l.set_nonblocking(true)?;
                Acceptor::Unix(tokio::net::UnixListener::from_std(l)?)
            }
        })
    }

    async fn accept(&self) -> io::Result<(Stream, Peer)> {
        match self {
            Acceptor::Tcp(l) => {
                let (s, addr) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok((Stream::Tcp(s), Peer::Tcp(addr)))
            }
            Acceptor::Unix(l) => {
                let (s, _) = l.accept().await?;
                Ok((Stream::Unix(s), Peer::Unix))
            }
        }
    }
}

/// The open connections of a worker, to choose which one closes when they run short.
#[derive(Debug)]
struct Open {
    /// The instant every connection's times count from.
    base: Instant,
    next_id: AtomicU64,
    connections: Mutex<HashMap<u64, Arc<Activity>>>,
}

impl Default for Open {
    fn default() -> Open {
        Open {
            base: Instant::now(),
            next_id: AtomicU64::new(0),
            connections: Mutex::new(HashMap::new()),
        }
    }
}

impl Open {
    fn register(&self) -> (u64, Arc<Activity>) {
        let id = self.next_id.fetch_add(1, Relaxed);
        let activity = Arc::new(Activity::new(self.base));
        self.lock().insert(id, Arc::clone(&activity));
        (id, activity)
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        self.connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Asks one connection to close to make room: of those with no request running that have
    /// waited at least `at_least`, the one that has waited longest, idle since its last answer
    /// or in the headers of its next request (a well-behaved client sends them at once, so that
    /// is a slow one). A client busy with requests is never chosen, nor is one between two
    /// requests while older ones wait. Returns whether one was asked.
    fn evict_one(&self, at_least: Duration) -> bool {
        let latest = ns_since(self.base).saturating_sub(duration_ns(at_least));
        let connections = self.lock();
        let mut oldest: Option<(u64, &Arc<Activity>)> = None;
        for activity in connections.values() {
            if activity.evicting.load(Relaxed) {
                continue;
            }
            let since = match activity.phase() {
                Phase::Idle => activity.last.load(Relaxed),
                Phase::Headers => activity.header_since.load(Relaxed),
                Phase::Request => continue,
            };
            if since <= latest && oldest.is_none_or(|(t, _)| since < t) {
                oldest = Some((since, activity));
            }
        }
        match oldest {
            Some((_, victim)) => {
                victim.evicting.store(true, Relaxed);
                victim.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

async fn accept_loop(
    acceptor: Acceptor,
    service: Service,
    limits: Arc<Limits>,
    slots: Arc<Semaphore>,
    open: Arc<Open>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut in_a_row = 0;
    let mut last_shed_warning: Option<Instant> = None;
    let mut shed_total = 0;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => return,
            accepted = acceptor.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_resource_error(&e) => {
                // Out of file descriptors (or memory): idle connections make room for the one
                // waiting, rather than accept failing until some client leaves.
                let shed = (0..SHED_ON_EMFILE)
                    .filter(|_| open.evict_one(Duration::ZERO))
                    .count();
                if shed > 0 {
                    shed_total += shed;
                    // Said once a second at most: a flood would otherwise write a line per accept.
                    if last_shed_warning
                        .is_none_or(|at: Instant| at.elapsed() >= Duration::from_secs(1))
                    {
                        tracing::warn!(error = %e, closed = shed_total, "accept failed; closing idle connections to make room");
                        last_shed_warning = Some(Instant::now());
                        shed_total = 0;
                    }
                    tokio::time::sleep(SHED_PAUSE).await;
                } else {
                    tracing::warn!(error = %e, "accept failed; backing off");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                continue;
            }
            // A connection reset before accept, and the like: nothing to do but go on.
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                continue;
            }
        };
        let permit = match Arc::clone(&slots).try_acquire_owned() {
            Ok(p) => p,
            Err(TryAcquireError::Closed) => return,
            // Every slot is taken: the connection waiting longest with no request running makes
            // room for this one, once it has waited EVICT_AFTER.
            Err(TryAcquireError::NoPermits) => loop {
                open.evict_one(EVICT_AFTER);
                tokio::select! {
                    biased;
                    _ = shutdown.wait_for(|stop| *stop) => return,
                    permit = Arc::clone(&slots).acquire_owned() => match permit {
                        Ok(p) => break p,
                        Err(_) => return,
                    },
                    _ = tokio::time::sleep(SHED_INTERVAL) => {}
                }
            },
        };
        let service = service.clone();
        let shared = Arc::clone(&limits);
        let shutdown = shutdown.clone();
        let open = Arc::clone(&open);
        tokio::spawn(async move {
            let limits = shared;
            let (id, activity) = open.register();
            match stream {
                Stream::Tcp(s) => connection(s, peer, service, &limits, activity, shutdown).await,
                Stream::Unix(s) => connection(s, peer, service, &limits, activity, shutdown).await,
            }
            open.remove(id);
            drop(permit);
        });
        // A flood of connections must not keep the requests already in from running.
        in_a_row += 1;
        if in_a_row >= limits.accept_batch {
            in_a_row = 0;
            tokio::task::yield_now().await;
        }
    }
}

fn is_resource_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc_codes::EMFILE | libc_codes::ENFILE | libc_codes::ENOBUFS | libc_codes::ENOMEM)
    )
}

/// The errno values of resource exhaustion on Linux.
mod libc_codes {
    pub(super) const ENOMEM: i32 = 12;
    pub(super) const ENFILE: i32 = 23;
    pub(super) const EMFILE: i32 = 24;
    pub(super) const ENOBUFS: i32 = 105;
}

/// Where a connection is between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Answered at least one request, nothing of the next one read.
    Idle,
    /// Receiving a request's headers: just accepted, or some of the next request read.
    Headers,
    /// A request is being handled (its body read, its answer computed or written).
    Request,
}

/// What a connection has been doing: for the keep-alive timer, the minimum data rate, the 408
/// decision and the choice of a connection to close. Times are nanoseconds since `base`.
#[derive(Debug)]
struct Activity {
    base: Instant,
    /// The last byte read or response finished.
    last: AtomicU64,
    /// When the current headers began: the accept, or the first byte after an answer.
    header_since: AtomicU64,
    /// Requests being handled.
    active: AtomicUsize,
    /// Requests begun.
    requests: AtomicU64,
    /// Bytes read in all, and the count when the last request began or was answered.
    read_total: AtomicU64,
    read_mark: AtomicU64,
    /// Asked to close to make room ([`Open::evict_one`]).
    evicting: AtomicBool,
    evict: Notify,
}

impl Activity {
    fn new(base: Instant) -> Activity {
        let now = ns_since(base);
        Activity {
            base,
            last: AtomicU64::new(now),
            header_since: AtomicU64::new(now),
            active: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            read_total: AtomicU64::new(0),
            read_mark: AtomicU64::new(0),
            evicting: AtomicBool::new(false),
            evict: Notify::new(),
        }
    }

    fn touch(&self) {
        self.last.store(ns_since(self.base), Relaxed);
    }

    fn at(&self, ns: u64) -> Instant {
        self.base + Duration::from_nanos(ns)
    }

    fn idle_until(&self, keepalive: Duration) -> Instant {
        self.at(self.last.load(Relaxed)) + keepalive
    }

    /// Bytes of the next request read so far.
    fn pending(&self) -> u64 {
        self.read_total.load(Relaxed) - self.read_mark.load(Relaxed)
    }

    fn phase(&self) -> Phase {
        if self.active.load(Relaxed) > 0 {
            Phase::Request
        } else if self.requests.load(Relaxed) > 0 && self.pending() == 0 {
            Phase::Idle
        } else {
            Phase::Headers
        }
    }

    /// In the headers, the instant the client falls below `min_rate` bytes a second: the
    /// grace, plus a second per `min_rate` bytes sent (Apache mod_reqtimeout's MinRate).
    fn too_slow_at(&self, limits: &Limits) -> Option<Instant> {
        if limits.min_data_rate == 0 || self.phase() != Phase::Headers {
            return None;
        }
        let since = self.at(self.header_since.load(Relaxed));
        let credit = Duration::from_secs_f64(self.pending() as f64 / limits.min_data_rate as f64);
        Some(since + limits.min_data_rate_grace + credit)
    }
}

fn ns_since(base: Instant) -> u64 {
    duration_ns(base.elapsed())
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The connection's stream, noting reads in [`Activity`].
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            let a = &self.activity;
            // The first bytes of a keep-alive connection's next request start its headers.
            if a.active.load(Relaxed) == 0 && a.requests.load(Relaxed) > 0 && a.pending() == 0 {
                a.header_since.store(ns_since(a.base), Relaxed);
            }
            a.read_total.fetch_add(read as u64, Relaxed);
            a.touch();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

type BoxedResponse =
    Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send>>;

/// How long a connection accepted before a drain, whose first request has not begun, may take
/// to begin it: hyper's graceful shutdown would close it at once, losing a request its client
/// has already sent (seen under a reload: an empty answer).
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// Why a connection's loop ended.
enum End {
    /// hyper finished the connection (or failed it).
    Served(Result<(), hyper::Error>),
    /// Its client sent its headers slower than `min_data_rate`.
    TooSlow,
    /// Closed to make room for another connection, mid-headers.
    Evicted,
}

/// Serves one connection until it closes.
async fn connection<S>(
    stream: S,
    peer: Peer,
    service: Service,
    limits: &Limits,
    activity: Arc<Activity>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: Arc::clone(&activity),
    });
    let seen = Arc::clone(&activity);
    let svc = service.clone();
    let handler = hyper::service::service_fn(move |req: Request<Incoming>| -> BoxedResponse {
        let service = svc.clone();
        let activity = Arc::clone(&seen);
        activity.active.fetch_add(1, Relaxed);
        activity.requests.fetch_add(1, Relaxed);
        activity
            .read_mark
            .store(activity.read_total.load(Relaxed), Relaxed);
        Box::pin(async move {
            let guard = ActiveGuard(activity);
            let response = service.handle(req, peer).await;
            drop(guard);
            Ok(response)
        })
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let mut conn = builder.serve_connection(io, handler);
    let mut closing = false;
    // Set at shutdown on a connection whose first request has not begun: until then it waits for
    // that request (its client connected before the drain and is sending it), up to this instant.
    let mut first_request_until: Option<Instant> = None;
    let end = loop {
        let idle_at = activity.idle_until(limits.keepalive_timeout);
        let too_slow_at = activity.too_slow_at(limits);
        tokio::select! {
            result = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => break End::Served(result),
            _ = shutdown.wait_for(|stop| *stop), if !closing && first_request_until.is_none() => {
                if activity.requests.load(Relaxed) == 0 {
                    first_request_until = Some(Instant::now() + limits.header_read_timeout.min(FIRST_REQUEST_GRACE));
                } else {
                    Pin::new(&mut conn).graceful_shutdown();
                    closing = true;
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(10)), if !closing && first_request_until.is_some() => {
                let begun = activity.requests.load(Relaxed) > 0;
                if begun || first_request_until.is_some_and(|until| Instant::now() >= until) {
                    Pin::new(&mut conn).graceful_shutdown();
                    closing = true;
                }
            }
            _ = activity.evict.notified(), if !closing => match activity.phase() {
                Phase::Idle => {
                    Pin::new(&mut conn).graceful_shutdown();
                    closing = true;
                }
                Phase::Headers => break End::Evicted,
                // A request began since it was chosen: it stays.
                Phase::Request => activity.evicting.store(false, Relaxed),
            },
            _ = tokio::time::sleep_until(too_slow_at.unwrap_or(idle_at)), if !closing && too_slow_at.is_some() => {
                if activity.too_slow_at(limits).is_some_and(|at| Instant::now() >= at) {
                    break End::TooSlow;
                }
            }
            _ = tokio::time::sleep_until(idle_at), if !closing => {
                if activity.phase() == Phase::Idle && Instant::now() >= activity.idle_until(limits.keepalive_timeout) {
                    Pin::new(&mut conn).graceful_shutdown();
                    closing = true;
                }
            }
        }
    };
    let parts = conn.into_parts();
    let mut stream = parts.io.into_inner().inner;
    // Only a connection that began a request hears why it is closed: an idle one just closes.
    let begun = activity.pending() > 0;
    let mut linger = false;
    match end {
        End::Served(Ok(())) => linger = activity.requests.load(Relaxed) > 0,
        End::Served(Err(e)) if e.is_timeout() => {
            if begun {
                service.note_header_timeout(peer);
                write_bounded(&mut stream, &request_timeout_response(limits)).await;
            }
        }
        End::Served(Err(e)) => tracing::debug!(error = %e, "connection ended with an error"),
        End::TooSlow => {
            tracing::debug!("a client sent its headers too slowly; closing its connection");
            if begun {
                service.note_header_timeout(peer);
                write_bounded(&mut stream, &too_slow_response(limits)).await;
            }
        }
        End::Evicted => {
            tracing::debug!("connections at the limit: closing the slowest in its headers");
            if begun {
                write_bounded(&mut stream, EVICTED_RESPONSE).await;
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
    if linger {
        // The client may still be sending what it was answered without reading (a refused
        // body): read it off, bounded, so the close does not reset the answer away.
        let mut sink = vec![0u8; 16 * 1024];
        let mut left = LINGER_BYTES;
        let until = Instant::now() + LINGER_TIME;
        while left > 0 {
            match tokio::time::timeout_at(until, stream.read(&mut sink)).await {
                Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
                _ => break,
            }
        }
    }
}

async fn write_bounded<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) {
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(bytes)).await;
}

/// The answer of a connection closed mid-headers to make room for others.
const EVICTED_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 72\r\n\r\n{\"error\":\"too many connections: the slowest to send its request closed\"}";

struct ActiveGuard(Arc<Activity>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        // The request's bytes, body included, are done with: what comes next is the next one.
        self.0
            .read_mark
            .store(self.0.read_total.load(Relaxed), Relaxed);
        self.0.touch();
        self.0.active.fetch_sub(1, Relaxed);
    }
}

/// A raw 408 response, written when hyper's header timer fired.
fn request_timeout_response(limits: &Limits) -> Vec<u8> {
    raw_408(format!(
        "the request headers were not received within {} s",
        limits.header_read_timeout.as_secs()
    ))
}

/// A raw 408 response, for headers sent slower than the minimum rate.
fn too_slow_response(limits: &Limits) -> Vec<u8> {
    raw_408(format!(
        "the request headers arrived slower than {} bytes a second",
        limits.min_data_rate
    ))
}

fn raw_408(error: String) -> Vec<u8> {
    let body = serde_json::json!({ "error": error }).to_string();
    format!(
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection of `open` in `phase`, waiting since `ago` before now.
    fn connection(open: &Open, phase: Phase, ago: Duration) -> Arc<Activity> {
        let (_, a) = open.register();
        let since = ns_since(open.base).saturating_sub(duration_ns(ago));
        match phase {
            Phase::Idle => {
                a.requests.store(1, Relaxed);
                a.last.store(since, Relaxed);
            }
            Phase::Headers => {
                a.header_since.store(since, Relaxed);
                a.read_total.store(10, Relaxed);
            }
            Phase::Request => {
                a.requests.store(1, Relaxed);
                a.active.store(1, Relaxed);
                a.header_since.store(0, Relaxed);
                a.last.store(0, Relaxed);
            }
        }
        assert_eq!(a.phase(), phase);
        a
    }

    #[tokio::test(start_paused = true)]
    async fn the_connection_waiting_longest_with_no_request_running_is_asked_to_close() {
        tokio::time::advance(Duration::from_secs(100)).await;
        let open = Open {
            base: Instant::now() - Duration::from_secs(100),
            ..Open::default()
        };
        let busy = connection(&open, Phase::Request, Duration::ZERO);
        let idle = connection(&open, Phase::Idle, Duration::from_secs(3));
        let slow = connection(&open, Phase::Headers, Duration::from_secs(5));
        let fresh = connection(&open, Phase::Headers, Duration::from_millis(10));
        let chosen = |a: &Activity| a.evicting.load(Relaxed);

        // Nobody has waited a minute: nobody is asked.
        assert!(!open.evict_one(Duration::from_secs(60)));
        // The slowest in its headers first, then the longest idle; the others not past 1 s.
        assert!(open.evict_one(Duration::from_secs(1)));
        assert!(chosen(&slow) && !chosen(&idle));
        assert!(open.evict_one(Duration::from_secs(1)));
        assert!(chosen(&idle) && !chosen(&fresh));
        assert!(!open.evict_one(Duration::from_secs(1)));
        // Out of file descriptors: any connection with no request running, never a busy one.
        assert!(open.evict_one(Duration::ZERO));
        assert!(chosen(&fresh));
        assert!(!open.evict_one(Duration::ZERO));
        assert!(!chosen(&busy));
    }
}
