//! What every request handler shares, the connection a request arrived on, and the bearer-token gate.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::Response;
use hyper::header;
use tokio_util::sync::CancellationToken;

use super::auth::{Caller, FailureLimiter, Rejection, authenticate};
use super::mcp_sessions::Sessions;
use super::response::{Body, error_response, unauthenticated};
use crate::config::Secret;
use crate::ops::{App, Principal};
use crate::systemd::Heartbeat;

/// What every request handler shares.
pub struct Http {
    pub app: Arc<App>,
    pub limiter: FailureLimiter,
    /// Store writer and forwarder: `/healthz` is 200 only while they beat.
    pub heartbeats: Vec<Heartbeat>,
    /// `XYTE_WEBHOOK_SECRET`: HMAC key for `POST /v1/webhook`.
    pub webhook_secret: Option<Secret<String>>,
    /// `XYTE_ALLOWED_HOSTS`: Host header allow-list for `/mcp` (DNS-rebinding defence).
    pub allowed_hosts: Vec<String>,
    /// Cancelled at shutdown: ends SSE streams so connections can close.
    pub shutdown: CancellationToken,
    /// Legacy-era MCP sessions of `/mcp` clients.
    pub(crate) mcp_sessions: Sessions,
}

/// The connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The LAN TLS listener (true) or the loopback plain listener (false).
    pub tls: bool,
}

/// The caller's token principal, or the answer for a request without a valid one (401, or 429 when the address
/// failed too often). Boxed: a response is large, and this is the uncommon path.
pub async fn require_token(
    http: &Http,
    peer: Peer,
    headers: &hyper::HeaderMap,
) -> Result<Principal, Box<Response<Body>>> {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match authenticate(&http.app, &http.limiter, peer.addr.ip(), auth).await {
        Ok(Caller::Token(p)) => Ok(p),
        Ok(Caller::Anonymous) => Err(Box::new(unauthenticated("a bearer token is required"))),
        Err(Rejection::Unauthenticated(m)) => Err(Box::new(unauthenticated(&m))),
        Err(Rejection::Refused(e)) => Err(Box::new(error_response(&e))),
    }
}
