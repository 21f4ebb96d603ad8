//! Peers that stop reading are disconnected. A write to a connection that makes no progress for [`STALL`] fails with
//! `TimedOut`, which ends the connection like any write error. Without this a client that never reads its answers
//! (an HTTP client, an MCP agent on the socket) keeps its connection, its slot under `XYTE_MAX_CONNECTIONS` and
//! whatever is queued for it forever: neither hyper nor the socket writer has a write timeout of its own.
//!
//! Only writes are watched: a connection with nothing to send (an idle keep-alive, a quiet event stream between
//! heartbeats) never times out here. A slow reader that takes anything at all within [`STALL`] is not stalled.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How long a write may wait for a peer that reads nothing before the connection is closed (README).
pub const STALL: Duration = Duration::from_secs(15);

/// An I/O stream whose writes fail after [`STALL`] without progress.
pub struct StallGuard<S> {
    inner: S,
    /// Armed while a write is pending; boxed, and made only once a write has had to wait.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl<S> StallGuard<S> {
    pub fn new(inner: S) -> Self {
        StallGuard { inner, timer: None, armed: false }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner write returned `ready`: progress, so the timer is disarmed.
    fn progressed<T>(&mut self, ready: io::Result<T>) -> Poll<io::Result<T>> {
        self.armed = false;
        Poll::Ready(ready)
    }

    /// The inner write is pending: starts the timer if it is not running, and fails once it has run out.
    fn waiting<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let deadline = Instant::now() + STALL;
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            timer.as_mut().reset(deadline);
            self.armed = true;
        }
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, Stalled)))
    }
}

/// The error a stalled write fails with.
#[derive(Debug)]
pub struct Stalled;

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the peer read nothing for {}s", STALL.as_secs())
    }
}

impl std::error::Error for Stalled {}

impl<S: AsyncRead + Unpin> AsyncRead for StallGuard<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallGuard<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(r) => self.progressed(r),
            Poll::Pending => self.waiting(cx),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => self.progressed(r),
            Poll::Pending => self.waiting(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Ready(r) => self.progressed(r),
            Poll::Pending => self.waiting(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_shutdown(cx) {
            Poll::Ready(r) => self.progressed(r),
            Poll::Pending => self.waiting(cx),
        }
    }
}

/// Whether `error` (or what caused it) is a [`StallGuard`] timeout: the peer stopped reading.
pub fn is_stall(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<Stalled>()
            || e.downcast_ref::<io::Error>().and_then(io::Error::get_ref).is_some_and(|i| i.is::<Stalled>())
        {
            return true;
        }
        cause = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_reads_nothing_fails_the_write_after_the_bound() {
        let (ours, theirs) = tokio::io::duplex(1024);
        let mut guarded = StallGuard::new(ours);
        // Room for the first KiB; the peer reads none of it, so the second write waits, then fails.
        guarded.write_all(&[0u8; 1024]).await.unwrap();
        let started = Instant::now();
        let e = guarded.write_all(&[0u8; 1024]).await.unwrap_err();
        assert!(is_stall(&e), "{e}");
        assert_eq!(started.elapsed(), STALL);
        // A peer that reads keeps the connection: the timer restarts with each write that goes through.
        let (ours, mut theirs2) = tokio::io::duplex(16);
        let mut guarded = StallGuard::new(ours);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            let mut total = 0;
            while total < 64 {
                tokio::time::sleep(STALL / 2).await;
                total += theirs2.read(&mut buf).await.unwrap();
            }
        });
        guarded.write_all(&[1u8; 64]).await.unwrap();
        reader.await.unwrap();
        drop(theirs);
    }
}
