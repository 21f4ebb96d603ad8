//! The HTTP listeners: LAN TLS (HTTP/1.1 and HTTP/2 by ALPN) and loopback plain HTTP. Every connection
//! takes a slot from the daemon-wide connection limit, does its TLS handshake inside its own task under a timeout,
//! and must send its headers in time; on shutdown, connections finish their current request and close.
//!
//! When every slot is taken, a new connection does not simply bounce: the connection that has been idle longest (no
//! request in flight, no stream open — e.g. one that connected and never spoke) is closed to make room. Idle
//! connections cannot starve clients that actually make requests, and a request in flight is never cut off.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::response::Body;
use super::router::handle;
use super::state::{Http, Peer};
use crate::stall::StallGuard;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new connection waits for the slot an evicted idle connection frees.
const EVICTION_WAIT: Duration = Duration::from_secs(2);
pub const MAX_CONCURRENT_STREAMS: u32 = 32;

/// One open HTTP connection as the eviction policy sees it.
struct Activity {
    /// Requests in flight plus response bodies still streaming (an open SSE stream counts as busy).
    busy: AtomicUsize,
    /// ms since the tracker's epoch when the connection last finished something (or opened).
    idle_since_ms: AtomicU64,
    evict: CancellationToken,
}

/// The open HTTP connections of all listeners, so the idlest can be closed when the limit is reached.
pub struct Tracker {
    epoch: Instant,
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Activity>>>,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker { epoch: Instant::now(), next: AtomicU64::new(0), open: Mutex::default() }
    }
}

impl Tracker {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn register(self: &Arc<Self>) -> (u64, Arc<Activity>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity {
            busy: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(self.now_ms()),
            evict: CancellationToken::new(),
        });
        if let Ok(mut open) = self.open.lock() {
            open.insert(id, activity.clone());
        }
        (id, activity)
    }

    fn unregister(&self, id: u64) {
        if let Ok(mut open) = self.open.lock() {
            open.remove(&id);
        }
    }

    /// Asks the connection idle the longest to close; false when every connection is busy.
    fn evict_idlest(&self) -> bool {
        let Ok(open) = self.open.lock() else { return false };
        let idlest = open
            .values()
            .filter(|a| a.busy.load(Ordering::Acquire) == 0 && !a.evict.is_cancelled())
            .min_by_key(|a| a.idle_since_ms.load(Ordering::Relaxed));
        match idlest {
            Some(a) => {
                a.evict.cancel();
                true
            }
            None => false,
        }
    }
}

/// Marks its connection busy while alive: created when a request arrives, dropped when its response body ends.
struct Busy {
    activity: Arc<Activity>,
    tracker: Arc<Tracker>,
}

impl Busy {
    fn new(activity: Arc<Activity>, tracker: Arc<Tracker>) -> Busy {
        activity.busy.fetch_add(1, Ordering::AcqRel);
        Busy { activity, tracker }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.activity.idle_since_ms.store(self.tracker.now_ms(), Ordering::Relaxed);
        self.activity.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its connection marked busy until it has been sent (or dropped).
struct TrackedBody {
    inner: Body,
    _busy: Busy,
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A bound listener and whether it speaks TLS.
pub struct Bound {
    pub listener: TcpListener,
    pub addr: SocketAddr,
    pub tls: bool,
}

/// Binds every configured address before the daemon reports ready. In the demo a busy port is replaced by a free
/// one (the demo prints where it ended up); in production a busy port is an error.
pub async fn bind(addrs: &[SocketAddr], tls: bool, demo: bool) -> Result<Vec<Bound>, String> {
    let mut out = Vec::new();
    for addr in addrs {
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) if demo && e.kind() == std::io::ErrorKind::AddrInUse => {
                let any = SocketAddr::new(addr.ip(), 0);
                TcpListener::bind(any).await.map_err(|e| format!("cannot listen on {any}: {e}"))?
            }
            Err(e) => return Err(format!("cannot listen on {addr}: {e}")),
        };
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        out.push(Bound { listener, addr, tls });
    }
    Ok(out)
}

/// Accepts connections on `bound` until shutdown; each connection is served in its own task on `tasks`.
pub async fn serve(
    bound: Bound,
    http: Arc<Http>,
    acceptor: Option<TlsAcceptor>,
    connections: Arc<Semaphore>,
    tracker: Arc<Tracker>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    tracing::info!(addr = %bound.addr, tls = bound.tls, "HTTP listener ready");
    loop {
        let (stream, addr) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = bound.listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let permit = match connections.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) if tracker.evict_idlest() => {
                match tokio::time::timeout(EVICTION_WAIT, connections.clone().acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    _ => {
                        tracing::warn!(peer = %addr, "connection refused: XYTE_MAX_CONNECTIONS reached");
                        continue;
                    }
                }
            }
            Err(_) => {
                tracing::warn!(peer = %addr, "connection refused: XYTE_MAX_CONNECTIONS reached, every connection busy");
                continue;
            }
        };
        let (http, acceptor, shutdown, tracker) = (http.clone(), acceptor.clone(), shutdown.clone(), tracker.clone());
        let peer = Peer { addr, tls: bound.tls };
        tasks.spawn(async move {
            let _permit = permit;
            let (id, activity) = tracker.register();
            connection(stream, peer, http, acceptor, shutdown, activity, tracker.clone()).await;
            tracker.unregister(id);
        });
    }
}

// Every open connection's task holds these futures for its whole life, so they are kept small: the TLS stream is
// moved, never kept twice (an `async fn` keeps its arguments for its whole life, hence `drive` builds the connection
// before its future starts), and the builder is shared. BENCHMARKS.md has the memory per SSE connection.
async fn connection(
    stream: TcpStream,
    peer: Peer,
    http: Arc<Http>,
    acceptor: Option<TlsAcceptor>,
    shutdown: CancellationToken,
    activity: Arc<Activity>,
    tracker: Arc<Tracker>,
) {
    let _ = stream.set_nodelay(true);
    // Below TLS, where a peer that reads nothing shows as writes that cannot proceed.
    let stream = StallGuard::new(stream);
    match acceptor {
        Some(acceptor) => {
            // Boxed: the handshake's state (1.6 KiB) is needed only until it is done.
            let Some(tls) = Box::pin(handshake(stream, acceptor, peer, &shutdown, &activity)).await else { return };
            drive(TokioIo::new(tls), peer, http, shutdown, activity, tracker).await
        }
        None => drive(TokioIo::new(stream), peer, http, shutdown, activity, tracker).await,
    }
}

async fn handshake(
    stream: StallGuard<TcpStream>,
    acceptor: TlsAcceptor,
    peer: Peer,
    shutdown: &CancellationToken,
    activity: &Activity,
) -> Option<tokio_rustls::server::TlsStream<StallGuard<TcpStream>>> {
    let tls = tokio::select! {
        _ = shutdown.cancelled() => return None,
        _ = activity.evict.cancelled() => return None,
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => r,
    };
    match tls {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(peer = %peer.addr, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(peer = %peer.addr, "TLS handshake timed out");
            None
        }
    }
}

/// HTTP/1.1 and HTTP/2 (by ALPN or prior knowledge) with the same limits on every connection.
static BUILDER: LazyLock<auto::Builder<TokioExecutor>> = LazyLock::new(|| {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // max_buf_size: hyper's read buffer would otherwise grow to 16 KiB on a connection that sent one small request
    // (an SSE subscriber keeps it for hours); 8 KiB also bounds the request head, as common servers do.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).max_buf_size(8192);
    // Requests one HTTP/2 connection may have in flight (HTTP/1.1 has one at a time): each holds its answer until
    // the client reads it, so this bounds what one client that does not read can make the daemon hold (README).
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(MAX_CONCURRENT_STREAMS);
    builder
});

fn drive<I>(
    io: TokioIo<I>,
    peer: Peer,
    http: Arc<Http>,
    shutdown: CancellationToken,
    activity: Arc<Activity>,
    tracker: Arc<Tracker>,
) -> impl Future<Output = ()>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let evict = activity.evict.clone();
    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let busy = Busy::new(activity.clone(), tracker.clone());
        let http = http.clone();
        // An error answered before the request's body was read (no token, wrong role, too large) makes hyper close an
        // HTTP/1.1 connection after the response. Saying so in the response keeps the client from sending its next
        // request into that closing connection (a POST is not retried: it would fail with "peer disconnected").
        let body_sent = req.version() < hyper::Version::HTTP_2 && !req.body().is_end_stream();
        async move {
            let mut response = handle(http, peer, req).await?;
            if body_sent && response.status().is_client_error() {
                response
                    .headers_mut()
                    .insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(response.map(|inner| TrackedBody { inner, _busy: busy }.boxed()))
        }
    });
    // Boxed once here: pinning it inside the future would keep a second, moved-from copy of it there.
    let mut conn = Box::pin(BUILDER.serve_connection_with_upgrades(io, service));
    async move {
        tokio::select! {
            r = conn.as_mut() => match r {
                Err(e) if crate::stall::is_stall(&*e) => {
                    tracing::warn!(peer = %peer.addr, "HTTP client disconnected: it read nothing for {}s while its \
                                   answer waited", crate::stall::STALL.as_secs());
                    crate::metrics::stalled_client("http");
                }
                Err(e) => tracing::debug!(peer = %peer.addr, error = %e, "connection ended with an error"),
                Ok(()) => {}
            },
            _ = shutdown.cancelled() => {
                // Finish the request in flight, then close.
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
            _ = evict.cancelled() => {
                tracing::debug!(peer = %peer.addr, "idle connection closed to make room");
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
    }
}
