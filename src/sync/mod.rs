//! Background work that keeps the local picture current: the poller (Xyte → cache → events), the forwarder
//! (outbox → Xyte) and retention (keeps the event log bounded).
pub mod forwarder;
pub mod poller;
pub mod retention;

use std::sync::Mutex;

/// What the last sync cycles found, for `edge://status`, `xyte-edge status` and health checks.
#[derive(Debug, Default)]
pub struct SyncStatus {
    state: Mutex<SyncState>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SyncState {
    /// Whether the last cycle reached Xyte (`None` before the first cycle ended).
    pub reachable: Option<bool>,
    /// ms since the epoch of the last complete cycle.
    pub last_ok_ms: i64,
    pub last_error: Option<String>,
    pub devices: usize,
    pub online: usize,
}

impl SyncStatus {
    pub fn get(&self) -> SyncState {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn update(&self, f: impl FnOnce(&mut SyncState)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
        }
    }
}
