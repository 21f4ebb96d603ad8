//! The legacy-era MCP sessions of `/mcp` clients (SPEC §6.1), kept in the shared HTTP state between requests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::body::Chunk;
use crate::mcp::outgoing::Outgoing;
use crate::mcp::session::Session;

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
