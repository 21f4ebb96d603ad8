//! The HTTP listeners (SPEC §7.1): LAN TLS (HTTP/1.1 and HTTP/2 by ALPN) and loopback plain HTTP. Every connection
//! takes a slot from the daemon-wide connection limit, does its TLS handshake inside its own task under a timeout,
//! and must send its headers in time; on shutdown, connections finish their current request and close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::router::{Http, Peer, handle};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

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
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(peer = %addr, "connection refused: XYTE_MAX_CONNECTIONS reached");
            drop(stream);
            continue;
        };
        let (http, acceptor, shutdown) = (http.clone(), acceptor.clone(), shutdown.clone());
        let peer = Peer { addr, tls: bound.tls };
        tasks.spawn(async move {
            let _permit = permit;
            connection(stream, peer, http, acceptor, shutdown).await;
        });
    }
}

async fn connection(
    stream: TcpStream,
    peer: Peer,
    http: Arc<Http>,
    acceptor: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    match acceptor {
        Some(acceptor) => {
            let tls = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => r,
            };
            match tls {
                Ok(Ok(stream)) => drive(TokioIo::new(stream), peer, http, shutdown).await,
                Ok(Err(e)) => tracing::debug!(peer = %peer.addr, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(peer = %peer.addr, "TLS handshake timed out"),
            }
        }
        None => drive(TokioIo::new(stream), peer, http, shutdown).await,
    }
}

async fn drive<I>(io: TokioIo<I>, peer: Peer, http: Arc<Http>, shutdown: CancellationToken)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(128);
    let service = service_fn(move |req| handle(http.clone(), peer, req));
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(peer = %peer.addr, error = %e, "connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            // Finish the request in flight, then close.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
