//! Reading request bodies within the size limit, the body deadline and the minimum data rate.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{CONTENT_LENGTH, HeaderMap};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep, timeout_at};

/// The error type bodies may carry.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BodyError {
    /// More bytes than the limit.
    #[error("the request body is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit in force.
        limit: u64,
    },
    /// The client did not send the body in time.
    #[error("the request body was not received within {secs} s")]
    Timeout {
        /// The body read timeout.
        secs: u64,
    },
    /// The client sent the body slower than the minimum rate.
    #[error("the request body arrived slower than {rate} bytes a second")]
    TooSlow {
        /// The minimum rate, in bytes a second.
        rate: u64,
    },
    /// The connection failed mid-body.
    #[error("the request body could not be read: {0}")]
    Read(String),
}

/// The body length a request declares (`Content-Length`), if it is a number.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// How much of a body may be read, and until when.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyBudget {
    pub limit: u64,
    pub deadline: Instant,
    /// The body read timeout, for messages.
    pub timeout_secs: u64,
    /// Bytes a second the body must arrive at, counted from `rate_from` (0: no minimum).
    pub min_rate: u64,
    /// When the minimum rate starts to count: the body's start plus a grace.
    pub rate_from: Instant,
}

impl BodyBudget {
    /// When the next chunk must have come, `seen` bytes read: the deadline, or sooner the
    /// instant the client falls below the minimum rate (a second of credit per `min_rate`
    /// bytes, as Apache mod_reqtimeout's MinRate), and which error that is.
    fn next_deadline(&self, seen: u64) -> (Instant, BodyError) {
        let timeout = BodyError::Timeout {
            secs: self.timeout_secs,
        };
        if self.min_rate == 0 {
            return (self.deadline, timeout);
        }
        let credit = Duration::from_secs_f64(seen as f64 / self.min_rate as f64);
        let slow = self.rate_from + credit;
        if slow < self.deadline {
            (
                slow,
                BodyError::TooSlow {
                    rate: self.min_rate,
                },
            )
        } else {
            (self.deadline, timeout)
        }
    }
}

/// Reads the next data chunk (skipping trailers), `seen` bytes read before; `None` at the end.
async fn next_chunk<B>(
    body: &mut B,
    budget: &BodyBudget,
    seen: u64,
) -> Result<Option<Bytes>, BodyError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    loop {
        let (deadline, late) = budget.next_deadline(seen);
        let frame = timeout_at(deadline, body.frame()).await.map_err(|_| late)?;
        match frame {
            None => return Ok(None),
            Some(Err(e)) => return Err(BodyError::Read(e.into().to_string())),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// Reads a whole body into memory.
pub(crate) async fn read_all<B>(body: &mut B, budget: BodyBudget) -> Result<Bytes, BodyError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let mut buf = BytesMut::new();
    while let Some(chunk) = next_chunk(body, &budget, buf.len() as u64).await? {
        if (buf.len() + chunk.len()) as u64 > budget.limit {
            return Err(BodyError::TooLarge {
                limit: budget.limit,
            });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// The body as a stream of chunks for `multer`, ending with an error past the limit or deadline.
pub(crate) fn stream<'a, B>(
    body: &'a mut B,
    budget: BodyBudget,
) -> impl Stream<Item = Result<Bytes, BodyError>> + Send + 'a
where
    B: Body<Data = Bytes> + Unpin + Send + 'a,
    B::Error: Into<BoxError>,
{
    futures_util::stream::unfold(Some((body, 0u64)), move |state| async move {
        let (body, seen) = state?;
        match next_chunk(body, &budget, seen).await {
            Ok(None) => None,
            Ok(Some(chunk)) => {
                let seen = seen + chunk.len() as u64;
                if seen > budget.limit {
                    Some((
                        Err(BodyError::TooLarge {
                            limit: budget.limit,
                        }),
                        None,
                    ))
                } else {
                    Some((Ok(chunk), Some((body, seen))))
                }
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

/// A body that holds a reservation of the worker's body memory while its bytes keep coming, and
/// gives it back once the client has sent nothing for [`STALL`]: a client that trickles (or
/// stops) cannot keep others' uploads waiting; what it does send is then read unaccounted, as
/// any body is read once started.
pub(crate) struct Metered<B> {
    inner: B,
    reservation: Option<OwnedSemaphorePermit>,
    stall: Pin<Box<Sleep>>,
    armed: bool,
}

/// How long a body may send nothing before its memory reservation is given back.
pub(crate) const STALL: Duration = Duration::from_millis(200);

impl<B> Metered<B> {
    pub(crate) fn new(inner: B, reservation: OwnedSemaphorePermit) -> Metered<B> {
        Metered {
            inner,
            reservation: Some(reservation),
            stall: Box::pin(tokio::time::sleep(STALL)),
            armed: false,
        }
    }

    /// The reservation, if the body kept it: held on while the body is decoded.
    pub(crate) fn take_reservation(&mut self) -> Option<OwnedSemaphorePermit> {
        self.reservation.take()
    }
}

impl<B: Body + Unpin> Body for Metered<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.armed = false;
                Poll::Ready(frame)
            }
            Poll::Pending => {
                if this.reservation.is_some() {
                    if !this.armed {
                        this.stall.as_mut().reset(Instant::now() + STALL);
                        this.armed = true;
                    }
                    if this.stall.as_mut().poll(cx).is_ready() {
                        this.reservation = None;
                    }
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Reads and drops what is left of a body, up to `max` bytes or the deadline, so that the client
/// can finish sending and then read our error response (closing with unread data would reset the
/// connection under it). Returns whether the body ended.
pub(crate) async fn discard<B>(body: &mut B, max: u64, deadline: Instant) -> bool
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let budget = BodyBudget {
        limit: max,
        deadline,
        timeout_secs: 0,
        min_rate: 0,
        rate_from: deadline,
    };
    let mut seen = 0u64;
    loop {
        match next_chunk(body, &budget, seen).await {
            Ok(None) => return true,
            Ok(Some(chunk)) => {
                seen += chunk.len() as u64;
                if seen > max {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use http_body_util::{Full, StreamBody};

    fn budget(limit: u64) -> BodyBudget {
        BodyBudget {
            limit,
            deadline: Instant::now() + Duration::from_secs(5),
            timeout_secs: 5,
            min_rate: 0,
            rate_from: Instant::now(),
        }
    }

    #[tokio::test]
    async fn read_all_enforces_the_limit() {
        let mut body = Full::new(Bytes::from_static(b"0123456789"));
        assert_eq!(read_all(&mut body, budget(10)).await.unwrap(), "0123456789");
        let mut body = Full::new(Bytes::from_static(b"0123456789"));
        assert_eq!(
            read_all(&mut body, budget(9)).await,
            Err(BodyError::TooLarge { limit: 9 })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_times_out() {
        let chunks = futures_util::stream::iter(vec![Ok::<_, BoxError>(Frame::data(
            Bytes::from_static(b"ab"),
        ))])
        .chain(futures_util::stream::pending());
        let mut body = StreamBody::new(chunks);
        let b = BodyBudget {
            limit: 100,
            deadline: Instant::now() + Duration::from_secs(3),
            timeout_secs: 3,
            min_rate: 0,
            rate_from: Instant::now(),
        };
        assert_eq!(
            read_all(&mut body, b).await,
            Err(BodyError::Timeout { secs: 3 })
        );
    }

    #[tokio::test]
    async fn stream_stops_past_the_limit() {
        let chunks: Vec<Result<Frame<Bytes>, BoxError>> = (0..4)
            .map(|_| Ok(Frame::data(Bytes::from_static(b"xxxx"))))
            .collect();
        let mut body = StreamBody::new(futures_util::stream::iter(chunks));
        let s = stream(&mut body, budget(10));
        let items: Vec<_> = s.collect().await;
        assert_eq!(items.len(), 3);
        assert!(items[0].is_ok() && items[1].is_ok());
        assert_eq!(items[2], Err(BodyError::TooLarge { limit: 10 }));
    }

    /// A body trickled a byte at a time: cut at the minimum rate after the grace, long before
    /// its deadline (paused time: no wall clock in it).
    #[tokio::test(start_paused = true)]
    async fn a_trickled_body_is_cut_at_the_minimum_rate() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        let trickle = tokio::spawn(async move {
            for _ in 0..1000 {
                if tx
                    .send(Ok(Frame::data(Bytes::from_static(b"x"))))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let mut body = StreamBody::new(Box::pin(tokio_stream_of(rx)));
        let started = Instant::now();
        let b = BodyBudget {
            limit: 1 << 20,
            deadline: started + Duration::from_secs(60),
            timeout_secs: 60,
            min_rate: 100,
            rate_from: started + Duration::from_secs(2),
        };
        assert_eq!(
            read_all(&mut body, b).await,
            Err(BodyError::TooSlow { rate: 100 })
        );
        // 10 bytes a second against 100 after a 2 s grace: cut within the third second.
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(3),
            "{took:?}"
        );
        trickle.abort();
    }

    fn tokio_stream_of<T: Send + 'static>(
        rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> {
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
    }
}
