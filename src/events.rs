//! The event bus: every event is appended to the SQLite log first (so it has its id and survives a
//! restart), then broadcast to live listeners — MCP subscriptions now, SSE and plugins later. A slow listener that
//! falls behind the broadcast buffer is told it lagged and resumes from the log.

use tokio::sync::broadcast;

use crate::error::Error;
use crate::store::events::{self, Event, NewEvent};
use crate::store::{Durability, Store, now_ms};

#[derive(Clone)]
pub struct EventBus {
    store: Store,
    live: broadcast::Sender<Event>,
}

impl EventBus {
    pub fn new(store: Store) -> Self {
        EventBus { store, live: broadcast::channel(1024).0 }
    }

    /// Appends the events (one transaction) and broadcasts them with their ids.
    pub async fn publish(&self, batch: Vec<NewEvent>) -> Result<Vec<Event>, Error> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let stored = self.store.write(Durability::Normal, move |c| events::append(c, &batch, now_ms())).await?;
        for e in &stored {
            crate::metrics::event(&e.kind);
            // No receivers is normal (nobody listening); the log still has it.
            let _ = self.live.send(e.clone());
        }
        Ok(stored)
    }

    /// Broadcasts events the caller already appended (in its own transaction, e.g. with a webhook receipt).
    pub fn broadcast(&self, stored: &[Event]) {
        for e in stored {
            crate::metrics::event(&e.kind);
            let _ = self.live.send(e.clone());
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.live.subscribe()
    }
}
