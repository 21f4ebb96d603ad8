//! Webhook receipts: the ids of deliveries already accepted, so a repeated delivery is stored once.
//! The receipt and its `webhook.received` event are written in the same transaction, so a delivery is either
//! fully recorded or not at all.

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use super::events::{self, Event, NewEvent};

/// What [`receive`] did with a delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Receipt {
    /// When the delivery with this id was first accepted (ms since the epoch).
    pub received_at: i64,
    /// The event appended now; `None` for a repeated id.
    pub event: Option<Event>,
    /// The event's id: the new one, or for a repeated id the original one while the log still holds it.
    pub event_id: Option<i64>,
}

impl Receipt {
    pub fn duplicate(&self) -> bool {
        self.event.is_none()
    }
}

/// Records delivery `id` at `now` and appends `event` (stamped `now`) only if the id is new. Run it inside one
/// write so the receipt and the event commit together.
pub fn receive(conn: &Connection, id: &str, now: i64, event: NewEvent) -> Result<Receipt, StoreError> {
    let inserted = conn
        .prepare_cached("INSERT OR IGNORE INTO webhook_receipts (id, received_at) VALUES (?1, ?2)")?
        .execute(params![id, now])?;
    if inserted == 1 {
        let stored = events::append(conn, &[event], now)?.pop();
        let event_id = stored.as_ref().map(|e| e.id);
        return Ok(Receipt { received_at: now, event: stored, event_id });
    }
    let received_at: i64 = conn
        .prepare_cached("SELECT received_at FROM webhook_receipts WHERE id = ?1")?
        .query_row(params![id], |r| r.get(0))?;
    // The original event has the receipt's timestamp: the `ts` index finds it without scanning the log.
    let event_id = conn
        .prepare_cached(
            "SELECT id FROM events WHERE ts = ?1 AND kind = 'webhook.received' AND json_extract(data, '$.id') = ?2
             ORDER BY id LIMIT 1",
        )?
        .query_row(params![received_at, id], |r| r.get(0))
        .optional()?;
    Ok(Receipt { received_at, event: None, event_id })
}

/// Forgets receipts older than `cutoff` (at most `batch` per call; callers repeat until 0), so the table stays
/// bounded like the event log.
pub fn prune(conn: &Connection, cutoff: i64, batch: usize) -> Result<usize, StoreError> {
    Ok(conn.execute(
        "DELETE FROM webhook_receipts WHERE id IN (
            SELECT id FROM webhook_receipts WHERE received_at < ?1 LIMIT ?2)",
        params![cutoff, batch as i64],
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conn() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(include_str!("schema.sql")).unwrap();
        c
    }

    #[test]
    fn a_repeated_id_is_recorded_once_and_points_at_the_original_event() {
        let c = conn();
        let ev = |n: i64| NewEvent::new("webhook.received", json!({"type": "t", "id": "d-1", "data": {"n": n}}));
        let first = receive(&c, "d-1", 1_000, ev(1)).unwrap();
        assert!(!first.duplicate());
        assert_eq!(first.received_at, 1_000);
        let event = first.event.clone().unwrap();
        assert_eq!((event.kind.as_str(), event.ts, first.event_id), ("webhook.received", 1_000, Some(event.id)));

        let again = receive(&c, "d-1", 2_000, ev(2)).unwrap();
        assert!(again.duplicate());
        assert_eq!((again.received_at, again.event_id), (1_000, Some(event.id)));
        let all = events::after(&c, 0, &Default::default(), 10).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].data["data"]["n"], 1);

        assert!(!receive(&c, "d-2", 2_000, ev(3)).unwrap().duplicate());
        assert_eq!(prune(&c, 1_500, 10).unwrap(), 1);
        // Once its receipt is forgotten, an id is new again.
        assert!(!receive(&c, "d-1", 3_000, ev(4)).unwrap().duplicate());
    }
}
