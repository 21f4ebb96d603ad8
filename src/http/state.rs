//! What every request handler shares (among it the legacy-era MCP sessions of `/mcp` clients), the
//! connection a request arrived on, and the bearer-token gate.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::{Response, header};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::auth::{Caller, FailureLimiter, KnownTokens, Rejection, authenticate};
use super::body::Chunk;
use super::response::{Body, error_response, unauthenticated};
use crate::config::Secret;
use crate::mcp::outgoing::Outgoing;
use crate::mcp::session::Session;
use crate::runtime::{App, Principal};
use crate::systemd::Heartbeat;

/// What every request handler shares.
pub struct Http {
    pub app: Arc<App>,
    /// What `/mcp` sessions serve beside the catalogue.
    pub mcp_extension: Arc<dyn crate::mcp::Extension>,
    pub limiter: FailureLimiter,
    /// The tokens verified so far (a request costs a `stat`, not a database read).
    pub known_tokens: KnownTokens,
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
    match authenticate(&http.app, &http.limiter, &http.known_tokens, peer.addr.ip(), auth).await {
        Ok(Caller::Token(p)) => Ok(p),
        Ok(Caller::Anonymous) => Err(Box::new(unauthenticated("a bearer token is required"))),
        Err(Rejection::Unauthenticated(m)) => Err(Box::new(unauthenticated(&m))),
        Err(Rejection::Refused(e)) => Err(Box::new(error_response(&e))),
    }
}

/// Legacy sessions kept at once, and how long an unused one lives.
const MAX_SESSIONS: usize = 256;
const SESSION_IDLE: Duration = Duration::from_secs(30 * 60);

/// Where the messages a legacy session sends go: a POST waiting for its response, that POST's stream (progress),
/// or the session's GET stream (everything not tied to a request).
#[derive(Default)]
pub(super) struct Routes {
    pub(super) waiters: HashMap<String, mpsc::UnboundedSender<Outgoing>>,
    /// progressToken → request key
    pub(super) progress: HashMap<String, String>,
    pub(super) stream: Option<mpsc::Sender<Chunk>>,
}

pub(super) struct Legacy {
    pub(super) session: Arc<Session>,
    pub(super) principal: String,
    /// The revision `initialize` agreed on; later requests must say the same in `MCP-Protocol-Version`.
    pub(super) version: Mutex<Option<String>>,
    pub(super) routes: Arc<Mutex<Routes>>,
    pub(super) last_used: Mutex<Instant>,
    /// Counts the session in `xyte_edge_mcp_connections{transport="http"}` while it exists.
    pub(super) _gauge: crate::metrics::Guard,
}

/// The legacy sessions of all HTTP clients.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Legacy>>>,
}

impl Sessions {
    pub(super) fn get(&self, id: &str) -> Option<Arc<Legacy>> {
        let found = self.map.lock().ok()?.get(id).cloned();
        if let Some(s) = &found
            && let Ok(mut t) = s.last_used.lock()
        {
            *t = Instant::now();
        }
        found
    }

    pub(super) fn insert(&self, id: String, session: Arc<Legacy>) {
        let Ok(mut map) = self.map.lock() else { return };
        map.retain(|_, s| s.last_used.lock().map(|t| t.elapsed() < SESSION_IDLE).unwrap_or(false));
        if map.len() >= MAX_SESSIONS {
            // Full: the least recently used session goes (its client re-initializes on 404).
            let oldest = map
                .iter()
                .min_by_key(|(_, s)| s.last_used.lock().map(|t| *t).unwrap_or_else(|_| Instant::now()))
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                map.remove(&k);
            }
        }
        map.insert(id, session);
    }

    pub(super) fn remove(&self, id: &str) -> Option<Arc<Legacy>> {
        self.map.lock().ok()?.remove(id)
    }
}
