//! Per-principal defaults set by `set_context`, and the audit trail of mutating calls.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::StoreError;

pub fn get(conn: &Connection, principal: &str) -> Result<Option<Value>, StoreError> {
    let row: Option<String> =
        conn.query_row("SELECT data FROM context WHERE principal = ?1", [principal], |r| r.get(0)).optional()?;
    row.map(|d| serde_json::from_str(&d).map_err(StoreError::from)).transpose()
}

pub fn set(conn: &Connection, principal: &str, data: &Value, now: i64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO context (principal, data, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (principal) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
        params![principal, serde_json::to_string(data)?, now],
    )?;
    Ok(())
}

/// One audit record: who called which tool with which (secret-free) arguments, and how it ended.
pub fn audit(
    conn: &Connection,
    ts: i64,
    principal: &str,
    tool: &str,
    arguments: &Value,
    outcome: &str,
    error_code: Option<&str>,
) -> Result<i64, StoreError> {
    conn.execute(
        "INSERT INTO audit (ts, principal, tool, arguments, outcome, error_code) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![ts, principal, tool, serde_json::to_string(arguments)?, outcome, error_code],
    )?;
    Ok(conn.last_insert_rowid())
}
