//! The local event log: append-only rows with monotonic ids, read back by id for SSE replay and
//! `list_events`, pruned in small batches by age and count.

use rusqlite::{Connection, params};
use serde::Serialize;
use serde_json::Value;

use super::StoreError;

/// An event to append; `ts` is assigned by [`append`] when absent.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub kind: String,
    pub device_id: Option<String>,
    pub space_id: Option<String>,
    pub data: Value,
}

impl NewEvent {
    pub fn new(kind: impl Into<String>, data: Value) -> Self {
        NewEvent { kind: kind.into(), device_id: None, space_id: None, data }
    }

    pub fn device(mut self, id: impl Into<String>) -> Self {
        self.device_id = Some(id.into());
        self
    }

    pub fn space(mut self, id: Option<String>) -> Self {
        self.space_id = id;
        self
    }
}

/// A stored event as SSE, MCP and REST show it (`ts` in RFC 3339).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub id: i64,
    #[serde(serialize_with = "rfc3339_ms")]
    pub ts: i64,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub space_id: Option<String>,
    pub data: Value,
}

fn rfc3339_ms<S: serde::Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    let t =
        time::OffsetDateTime::from_unix_timestamp_nanos(*ms as i128 * 1_000_000).map_err(serde::ser::Error::custom)?;
    s.serialize_str(&t.format(&time::format_description::well_known::Rfc3339).map_err(serde::ser::Error::custom)?)
}

#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub kinds: Vec<String>,
    pub device_id: Option<String>,
}

pub fn append(conn: &Connection, events: &[NewEvent], ts: i64) -> Result<Vec<Event>, StoreError> {
    let mut stmt =
        conn.prepare_cached("INSERT INTO events (ts, kind, device_id, space_id, data) VALUES (?1, ?2, ?3, ?4, ?5)")?;
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        stmt.execute(params![ts, e.kind, e.device_id, e.space_id, serde_json::to_string(&e.data)?])?;
        out.push(Event {
            id: conn.last_insert_rowid(),
            ts,
            kind: e.kind.clone(),
            device_id: e.device_id.clone(),
            space_id: e.space_id.clone(),
            data: e.data.clone(),
        });
    }
    Ok(out)
}

/// Events with `id > after_id`, oldest first, at most `limit`.
pub fn after(conn: &Connection, after_id: i64, filter: &EventFilter, limit: usize) -> Result<Vec<Event>, StoreError> {
    let kinds = serde_json::to_string(&filter.kinds)?;
    let mut stmt = conn.prepare_cached(
        "SELECT id, ts, kind, device_id, space_id, data FROM events
         WHERE id > ?1
           AND (?2 = '[]' OR kind IN (SELECT value FROM json_each(?2)))
           AND (?3 IS NULL OR device_id = ?3)
         ORDER BY id LIMIT ?4",
    )?;
    let rows = stmt.query_map(params![after_id, kinds, filter.device_id, limit as i64], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get::<_, String>(5)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, ts, kind, device_id, space_id, data) = row?;
        out.push(Event { id, ts, kind, device_id, space_id, data: serde_json::from_str(&data)? });
    }
    Ok(out)
}

pub fn latest_id(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?)
}

/// Deletes at most `batch` of the oldest events that are older than `cutoff_ts` or beyond the newest `max_rows`.
/// Returns how many went; callers repeat until 0, yielding between batches so the writer is never held long.
pub fn prune(conn: &Connection, cutoff_ts: i64, max_rows: u64, batch: usize) -> Result<usize, StoreError> {
    let n = conn.execute(
        "DELETE FROM events WHERE id IN (
            SELECT id FROM events
            WHERE ts < ?1 OR id <= (SELECT COALESCE(MAX(id), 0) FROM events) - ?2
            ORDER BY id LIMIT ?3)",
        params![cutoff_ts, max_rows as i64, batch as i64],
    )?;
    Ok(n)
}

/// The time of each device's newest event of `kind` still in the log (the alerter's "offline since" after a restart).
pub fn latest_per_device(conn: &Connection, kind: &str) -> Result<Vec<(String, i64)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT device_id, MAX(ts) FROM events WHERE kind = ?1 AND device_id IS NOT NULL GROUP BY device_id",
    )?;
    let rows = stmt.query_map([kind], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
