//! The command outbox (SPEC §9.2): a task per acknowledged async command, delivered in order per device.
//! States: queued → sending → sent → pending / in_progress → done | failed | aborted; or rejected, expired, cancelled.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;
use serde_json::Value;

use super::StoreError;

/// States a task can still move out of.
pub const OPEN: &[&str] = &["queued", "sending", "sent", "pending", "in_progress", "scheduled"];
/// States in which the command is at Xyte and its status is tracked.
pub const AT_XYTE: &[&str] = &["sent", "pending", "in_progress", "scheduled"];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Task {
    pub task_id: String,
    pub device_id: String,
    pub command: String,
    pub body: Value,
    pub state: String,
    pub xyte_command_id: Option<String>,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub updated_at: i64,
    pub last_error: Option<String>,
    pub principal: String,
}

const COLUMNS: &str = "task_id, device_id, command, body, state, xyte_command_id, attempts, next_attempt_at, created_at, \
                       expires_at, updated_at, last_error, principal";

fn row(r: &Row<'_>) -> rusqlite::Result<(Task, String)> {
    let body: String = r.get(3)?;
    Ok((
        Task {
            task_id: r.get(0)?,
            device_id: r.get(1)?,
            command: r.get(2)?,
            body: Value::Null,
            state: r.get(4)?,
            xyte_command_id: r.get(5)?,
            attempts: r.get(6)?,
            next_attempt_at: r.get(7)?,
            created_at: r.get(8)?,
            expires_at: r.get(9)?,
            updated_at: r.get(10)?,
            last_error: r.get(11)?,
            principal: r.get(12)?,
        },
        body,
    ))
}

fn finish((mut t, body): (Task, String)) -> Result<Task, StoreError> {
    t.body = serde_json::from_str(&body)?;
    Ok(t)
}

pub fn new_id() -> String {
    let mut b = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    format!("tsk_{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>())
}

/// Inserts a queued task; call with `Durability::Full` — the caller acknowledges it right after.
pub fn insert(
    conn: &Connection,
    device_id: &str,
    command: &str,
    body: &Value,
    principal: &str,
    now: i64,
    ttl_ms: i64,
) -> Result<Task, StoreError> {
    let id = new_id();
    let seq: i64 = conn.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM tasks", [], |r| r.get(0))?;
    conn.execute(
        "INSERT INTO tasks (task_id, seq, device_id, command, body, state, attempts, next_attempt_at, created_at, expires_at,
                            updated_at, principal)
         VALUES (?1, ?2, ?3, ?4, ?5, 'queued', 0, ?6, ?6, ?7, ?6, ?8)",
        params![id, seq, device_id, command, serde_json::to_string(body)?, now, now + ttl_ms, principal],
    )?;
    get(conn, &id)?.ok_or_else(|| StoreError::Data("inserted task vanished".into()))
}

pub fn get(conn: &Connection, task_id: &str) -> Result<Option<Task>, StoreError> {
    conn.query_row(&format!("SELECT {COLUMNS} FROM tasks WHERE task_id = ?1"), [task_id], row)
        .optional()?
        .map(finish)
        .transpose()
}

/// Queued tasks whose turn has come: the oldest open task of each device, if it is queued and due.
pub fn due(conn: &Connection, now: i64, limit: usize) -> Result<Vec<Task>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM tasks t
         WHERE state IN ('queued', 'sending') AND next_attempt_at <= ?1
           AND seq = (SELECT MIN(seq) FROM tasks o WHERE o.device_id = t.device_id
                      AND o.state IN ('queued', 'sending'))
         ORDER BY seq LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![now, limit as i64], row)?;
    rows.map(|r| finish(r?)).collect()
}

/// Commands not yet handed to Xyte: queued or being sent (`outbox_depth` in status and metrics). Kept by the
/// database's triggers (outbox_depth.sql), so this is one row read however deep the outbox is.
pub fn outbox_depth(conn: &Connection) -> Result<i64, StoreError> {
    device_outbox_depth(conn, "")
}

/// [`outbox_depth`] of one device (what `XYTE_OUTBOX_MAX_PER_DEVICE` limits); `""` is the total.
pub fn device_outbox_depth(conn: &Connection, device_id: &str) -> Result<i64, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT n FROM outbox_depth WHERE device_id = ?1")?;
    Ok(stmt.query_row([device_id], |r| r.get(0)).optional()?.unwrap_or(0))
}

pub fn in_states(conn: &Connection, states: &[&str]) -> Result<Vec<Task>, StoreError> {
    let list = serde_json::to_string(states)?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM tasks WHERE state IN (SELECT value FROM json_each(?1)) ORDER BY seq"
    ))?;
    let rows = stmt.query_map([list], row)?;
    rows.map(|r| finish(r?)).collect()
}

/// What a transition changes besides the state.
#[derive(Debug, Default, Clone)]
pub struct Patch {
    pub xyte_command_id: Option<String>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<i64>,
    pub count_attempt: bool,
}

/// Compare-and-set: moves the task to `to` only if it is in one of `from`. Returns whether it moved.
pub fn transition(
    conn: &Connection,
    task_id: &str,
    from: &[&str],
    to: &str,
    patch: &Patch,
    now: i64,
) -> Result<bool, StoreError> {
    let from = serde_json::to_string(from)?;
    let n = conn.execute(
        "UPDATE tasks SET state = ?3, updated_at = ?4,
             xyte_command_id = COALESCE(?5, xyte_command_id),
             last_error = COALESCE(?6, last_error),
             next_attempt_at = COALESCE(?7, next_attempt_at),
             attempts = attempts + ?8
         WHERE task_id = ?1 AND state IN (SELECT value FROM json_each(?2))",
        params![
            task_id,
            from,
            to,
            now,
            patch.xyte_command_id,
            patch.last_error,
            patch.next_attempt_at,
            i64::from(patch.count_attempt)
        ],
    )?;
    Ok(n == 1)
}
