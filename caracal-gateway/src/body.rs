//! Streaming bodies, both ways, never buffered.
//!
//! - [`CappedBody`]: the inbound request body on its way upstream, frame by frame, failing once
//!   more than `MAX_REQUEST_BYTES` went through (the flag tells the proxy to answer 413) or
//!   once the whole read took longer than `READ_TIMEOUT`.
//! - [`RelayBody`]: the upstream response on its way to the client. Before every read it
//!   re-checks the mandate's revocation anchors; a revoked mandate stops the copy, drops the
//!   upstream body and ends the response with the trailer `X-Caracal-Revoked: true` (the
//!   status and bytes already sent stand). Each read waits at most the idle timeout
//!   (`STREAM_IDLE_TIMEOUT`, pushed forward by every chunk) or, for a non-streaming response,
//!   until the write deadline (`WRITE_TIMEOUT` from the start). When the copy ends for any
//!   reason (end, revocation, error, client gone) the finisher runs exactly once.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::HeaderMap;
use hyper::header::HeaderValue;
use tokio::time::{Instant, Sleep};

/// The trailer announcing a revocation cut.
pub const REVOKED_TRAILER: &str = "x-caracal-revoked";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The inbound body with a byte cap and a whole-read deadline.
pub struct CappedBody<B> {
    inner: B,
    seen: u64,
    cap: u64,
    over: Arc<AtomicBool>,
    deadline: Pin<Box<Sleep>>,
}

impl<B> CappedBody<B> {
    /// Wrap `inner`; `over` turns true when the cap was exceeded.
    pub fn new(inner: B, cap: u64, read_timeout: Duration, over: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            seen: 0,
            cap,
            over,
            deadline: Box::pin(tokio::time::sleep(read_timeout)),
        }
    }
}

impl<B> Body for CappedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen = this.seen.saturating_add(data.len() as u64);
                    if this.seen > this.cap {
                        this.over.store(true, Ordering::SeqCst);
                        return Poll::Ready(Some(Err("request body too large".into())));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err("request body read timeout".into())));
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

/// How a relayed copy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayEnd {
    /// Bytes relayed.
    pub bytes: u64,
    /// Cut by a revocation.
    pub revoked: bool,
    /// Ended by an upstream error, the idle/write timeout, or the client going away.
    pub failed: bool,
}

type Finisher = Box<dyn FnOnce(RelayEnd) + Send>;

/// The upstream response on its way to the client (module docs).
pub struct RelayBody<B> {
    inner: Option<B>,
    revoked: Arc<dyn Fn() -> bool + Send + Sync>,
    idle: Duration,
    reset_per_chunk: bool,
    timer: Pin<Box<Sleep>>,
    bytes: u64,
    /// The client sent `TE: trailers`: the cut is signalled by the trailer. Otherwise (hyper
    /// sends trailers only to clients that asked for them) the response is aborted, so the
    /// client sees a truncated message rather than a clean end.
    trailers_allowed: bool,
    finisher: Option<Finisher>,
}

impl<B> RelayBody<B> {
    /// Relay `inner`. `revoked` is asked before every read; `idle` bounds each read (pushed
    /// forward per chunk when `streaming`, else a deadline for the whole copy).
    pub fn new(
        inner: B,
        revoked: Arc<dyn Fn() -> bool + Send + Sync>,
        idle: Duration,
        streaming: bool,
        trailers_allowed: bool,
        finisher: Finisher,
    ) -> Self {
        Self {
            inner: Some(inner),
            revoked,
            idle,
            reset_per_chunk: streaming,
            timer: Box::pin(tokio::time::sleep(idle)),
            bytes: 0,
            trailers_allowed,
            finisher: Some(finisher),
        }
    }

    fn finish(&mut self, revoked: bool, failed: bool) {
        self.inner = None;
        if let Some(f) = self.finisher.take() {
            f(RelayEnd {
                bytes: self.bytes,
                revoked,
                failed,
            });
        }
    }
}

impl<B> Drop for RelayBody<B> {
    fn drop(&mut self) {
        // Dropped before the end was seen: the client went away mid-copy. (A body whose
        // inner stream reported its end is finished when that was seen.)
        self.finish(false, true);
    }
}

impl<B> Body for RelayBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(inner) = this.inner.as_mut() else {
                return Poll::Ready(None);
            };
            if (this.revoked)() {
                this.finish(true, false);
                if !this.trailers_allowed {
                    return Poll::Ready(Some(Err("mandate revoked mid-stream".into())));
                }
                let mut trailers = HeaderMap::new();
                trailers.insert(REVOKED_TRAILER, HeaderValue::from_static("true"));
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
            match Pin::new(&mut *inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        this.bytes = this.bytes.saturating_add(data.len() as u64);
                        if this.reset_per_chunk {
                            let at = Instant::now() + this.idle;
                            this.timer.as_mut().reset(at);
                        }
                        // A length-delimited body may not be polled again after its last
                        // byte: finish as soon as the inner stream says it ended.
                        if inner.is_end_stream() {
                            this.finish(false, false);
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    // Upstream trailers are not relayed (only the Gateway's is announced).
                    Err(_) => continue,
                },
                Poll::Ready(Some(Err(e))) => {
                    tracing::debug!(error = %e, "upstream body failed");
                    this.finish(false, true);
                    return Poll::Ready(Some(Err("upstream body failed".into())));
                }
                Poll::Ready(None) => {
                    this.finish(false, false);
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    if this.timer.as_mut().poll(cx).is_ready() {
                        this.finish(false, true);
                        return Poll::Ready(Some(Err("upstream idle timeout".into())));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Mutex;

    use http_body_util::BodyExt;

    use super::*;

    /// Frames fed through a channel.
    struct Chan(tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>);

    impl Body for Chan {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            self.get_mut().0.poll_recv(cx)
        }
    }

    #[tokio::test]
    async fn revocation_cuts_between_chunks_with_trailer() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let flag = Arc::new(AtomicBool::new(false));
        let ended = Arc::new(Mutex::new(None));
        let f2 = flag.clone();
        let e2 = ended.clone();
        let mut body = RelayBody::new(
            Chan(rx),
            Arc::new(move || f2.load(Ordering::SeqCst)),
            Duration::from_secs(5),
            true,
            true,
            Box::new(move |end| *e2.lock().unwrap() = Some(end)),
        );
        tx.send(Ok(Frame::data(Bytes::from_static(b"one"))))
            .await
            .unwrap();
        let f = body.frame().await.unwrap().unwrap();
        assert_eq!(f.into_data().unwrap(), "one");
        flag.store(true, Ordering::SeqCst);
        tx.send(Ok(Frame::data(Bytes::from_static(b"two"))))
            .await
            .unwrap();
        let f = body.frame().await.unwrap().unwrap();
        let t = f.into_trailers().unwrap();
        assert_eq!(t[REVOKED_TRAILER], "true");
        assert!(body.frame().await.is_none());
        assert_eq!(
            *ended.lock().unwrap(),
            Some(RelayEnd {
                bytes: 3,
                revoked: true,
                failed: false
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_upstream_ends_the_copy() {
        let (_tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
        let ended = Arc::new(Mutex::new(None));
        let e2 = ended.clone();
        let mut body = RelayBody::new(
            Chan(rx),
            Arc::new(|| false),
            Duration::from_secs(60),
            true,
            true,
            Box::new(move |end| *e2.lock().unwrap() = Some(end)),
        );
        assert!(body.frame().await.unwrap().is_err());
        assert!(ended.lock().unwrap().unwrap().failed);
    }

    #[tokio::test]
    async fn cap_is_enforced() {
        let over = Arc::new(AtomicBool::new(false));
        let body = CappedBody::new(
            http_body_util::Full::new(Bytes::from(vec![0u8; 11])),
            10,
            Duration::from_secs(5),
            over.clone(),
        );
        assert!(body.collect().await.is_err());
        assert!(over.load(Ordering::SeqCst));
    }
}
