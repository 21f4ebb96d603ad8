//! The MQTT uplink's records: a small key/value table (schema version 4).
//! - `session`: the connection counter carried in the birth and will messages, so a consumer can tell a stale will
//!   from the current connection's;
//! - `cursor`: the id of the last event the broker acknowledged (delivery resumes after it);
//! - `devices`: the ids whose state the uplink left retained at the broker, so a device that disappears while the
//!   daemon was stopped still gets its retained state cleared.

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;

fn get(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    Ok(conn.query_row("SELECT value FROM uplink WHERE key = ?1", [key], |r| r.get(0)).optional()?)
}

fn set(conn: &Connection, key: &str, value: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO uplink (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

/// Counts one more connection and returns its number (1 for the first).
pub fn next_session(conn: &Connection) -> Result<i64, StoreError> {
    let n = get(conn, "session")?.and_then(|v| v.parse::<i64>().ok()).unwrap_or(0) + 1;
    set(conn, "session", &n.to_string())?;
    Ok(n)
}

/// Where delivery resumes. The first time, the head of the log: the uplink delivers what happens from the moment it
/// is configured; what happened before stays readable through `/v1/events`.
pub fn cursor(conn: &Connection) -> Result<i64, StoreError> {
    match saved_cursor(conn)? {
        Some(id) => Ok(id),
        None => {
            let head = super::events::latest_id(conn)?;
            set(conn, "cursor", &head.to_string())?;
            Ok(head)
        }
    }
}

/// The cursor as written, without setting it the first time (for readers).
pub fn saved_cursor(conn: &Connection) -> Result<Option<i64>, StoreError> {
    Ok(get(conn, "cursor")?.and_then(|v| v.parse::<i64>().ok()))
}

pub fn set_cursor(conn: &Connection, id: i64) -> Result<(), StoreError> {
    set(conn, "cursor", &id.to_string())
}

pub fn retained_devices(conn: &Connection) -> Result<Vec<String>, StoreError> {
    Ok(get(conn, "devices")?.and_then(|v| serde_json::from_str(&v).ok()).unwrap_or_default())
}

pub fn set_retained_devices(conn: &Connection, ids: &[String]) -> Result<(), StoreError> {
    set(conn, "devices", &serde_json::to_string(ids)?)
}
