//! Accepting connections on the inherited listeners and serving HTTP/1 on each.
//!
//! - Connections per worker are bounded by a semaphore taken before `accept`, so past the limit
//!   new connections wait in the kernel's backlog (where another worker may take them). At the
//!   limit, idle keep-alive connections (no request running, none begun) are closed to make
//!   room, as nginx reuses its own: otherwise clients that merely hold connections open, sending
//!   a request now and then, would lock everyone else out.
//! - Accept errors such as EMFILE back off for a moment instead of spinning.
//! - Headers must arrive within `header_read_timeout` (hyper's timer); a client that started a
//!   request and stalls gets a 408 before the connection closes.
//! - An idle keep-alive connection (no request running, nothing read) closes after
//!   `keepalive_timeout`.
//! - On shutdown, the accept loops stop (dropping this worker's copy of the listeners) and every
//!   connection finishes the request it is running, then closes; a connection accepted before
//!   the drain whose first request has not begun yet waits up to a second for it (its client
//!   may already have sent it). [`serve`] returns when the last connection has closed.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
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

/// How long accept backs off after an error like EMFILE.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// While every connection slot is taken, how often idle connections are asked again to close.
const SHED_INTERVAL: Duration = Duration::from_millis(100);

/// Serves `service` on `listeners` until `shutdown` becomes true, then drains: returns when every
/// connection has finished. Fails only if a listener cannot be registered with tokio.
pub async fn serve(
    service: Service,
    listeners: Vec<Listener>,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS) as u32;
    let connections = Arc::new(Semaphore::new(max as usize));
    let shed_idle = Arc::new(Notify::new());
    let limits = Arc::new(limits);
    let mut accepts = Vec::new();
    for listener in listeners {
        let acceptor = Acceptor::new(listener)?;
        let task = accept_loop(
            acceptor,
            service.clone(),
            Arc::clone(&limits),
            Arc::clone(&connections),
            Arc::clone(&shed_idle),
            shutdown.clone(),
        );
        accepts.push(tokio::spawn(task));
    }
    for task in accepts {
        let _ = task.await;
    }
    // Every connection holds a permit until it closes: all permits back = all connections done.
    let _all = connections.acquire_many(max).await;
    Ok(())
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

async fn accept_loop(
    acceptor: Acceptor,
    service: Service,
    limits: Arc<Limits>,
    connections: Arc<Semaphore>,
    shed_idle: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let permit = match Arc::clone(&connections).try_acquire_owned() {
            Ok(p) => p,
            Err(TryAcquireError::Closed) => return,
            // Every slot is taken: idle connections give theirs up.
            Err(TryAcquireError::NoPermits) => loop {
                shed_idle.notify_waiters();
                tokio::select! {
                    biased;
                    _ = shutdown.wait_for(|stop| *stop) => return,
                    permit = Arc::clone(&connections).acquire_owned() => match permit {
                        Ok(p) => break p,
                        Err(_) => return,
                    },
                    _ = tokio::time::sleep(SHED_INTERVAL) => {}
                }
            },
        };
        let accepted = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => return,
            accepted = acceptor.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let service = service.clone();
                let limits = Arc::clone(&limits);
                let shutdown = shutdown.clone();
                let shed = Arc::clone(&shed_idle);
                tokio::spawn(async move {
                    match stream {
                        Stream::Tcp(s) => {
                            connection(s, peer, service, &limits, shed, shutdown).await
                        }
                        Stream::Unix(s) => {
                            connection(s, peer, service, &limits, shed, shutdown).await
                        }
                    }
                    drop(permit);
                });
            }
            Err(e) if is_resource_error(&e) => {
                tracing::warn!(error = %e, "accept failed; backing off");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
            // A connection reset before accept, and the like: nothing to do but go on.
            Err(e) => tracing::debug!(error = %e, "accept failed"),
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

/// What a connection has been doing, for the keep-alive idle timer and the 408 decision.
#[derive(Debug)]
struct Activity {
    epoch: Instant,
    /// Nanoseconds since `epoch` of the last byte read or response finished.
    last: AtomicU64,
    /// Requests being handled.
    active: AtomicUsize,
    /// Bytes read in all, and the count when the last request was received.
    read_total: AtomicU64,
    read_at_last_request: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ns = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.store(ns, Relaxed);
    }

    fn idle_until(&self, keepalive: Duration) -> Instant {
        self.epoch + Duration::from_nanos(self.last.load(Relaxed)) + keepalive
    }

    /// No request running, and nothing of the next one read.
    fn is_idle(&self) -> bool {
        self.active.load(Relaxed) == 0
            && self.read_total.load(Relaxed) == self.read_at_last_request.load(Relaxed)
    }
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
            self.activity.read_total.fetch_add(read as u64, Relaxed);
            self.activity.touch();
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

/// Serves one connection until it closes.
async fn connection<S>(
    stream: S,
    peer: Peer,
    service: Service,
    limits: &Limits,
    shed_idle: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity {
        epoch: Instant::now(),
        last: AtomicU64::new(0),
        active: AtomicUsize::new(0),
        read_total: AtomicU64::new(0),
        read_at_last_request: AtomicU64::new(0),
    });
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
        activity
            .read_at_last_request
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
    let result = loop {
        let idle_at = activity.idle_until(limits.keepalive_timeout);
        tokio::select! {
            result = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => break result,
            _ = shutdown.wait_for(|stop| *stop), if !closing && first_request_until.is_none() => {
                if activity.read_at_last_request.load(Relaxed) == 0 {
                    first_request_until = Some(Instant::now() + limits.header_read_timeout.min(FIRST_REQUEST_GRACE));
                } else {
                    Pin::new(&mut conn).graceful_shutdown();
                    closing = true;
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(10)), if !closing && first_request_until.is_some() => {
                let begun = activity.read_at_last_request.load(Relaxed) > 0;
                if begun || first_request_until.is_some_and(|until| Instant::now() >= until) {
                    Pin::new(&mut conn).graceful_shutdown();
                    closing = true;
                }
            }
            _ = shed_idle.notified(), if !closing => {
                if activity.is_idle() {
                    Pin::new(&mut conn).graceful_shutdown();
                    closing = true;
                }
            }
            _ = tokio::time::sleep_until(idle_at), if !closing => {
                if activity.active.load(Relaxed) == 0 && Instant::now() >= activity.idle_until(limits.keepalive_timeout) {
                    Pin::new(&mut conn).graceful_shutdown();
                    closing = true;
                }
            }
        }
    };
    let parts = conn.into_parts();
    let mut stream = parts.io.into_inner().inner;
    match result {
        Ok(()) => {}
        Err(e) if e.is_timeout() => {
            // Headers did not arrive in time. Say so only if a request had begun: an idle
            // keep-alive connection just closes.
            if activity.read_total.load(Relaxed) > activity.read_at_last_request.load(Relaxed) {
                service.note_header_timeout(peer);
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    stream.write_all(&request_timeout_response(limits)),
                )
                .await;
            }
        }
        Err(e) => tracing::debug!(error = %e, "connection ended with an error"),
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
}

struct ActiveGuard(Arc<Activity>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.active.fetch_sub(1, Relaxed);
    }
}

/// A raw 408 response, written when hyper's header timer fired.
fn request_timeout_response(limits: &Limits) -> Vec<u8> {
    let body = serde_json::json!({
        "error": format!("the request headers were not received within {} s", limits.header_read_timeout.as_secs())
    })
    .to_string();
    format!(
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
