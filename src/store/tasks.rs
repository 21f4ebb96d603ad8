//! The command outbox: a task per acknowledged async command, delivered in order per device.
//! States: queued → sending → sent → pending / in_progress → done | failed | aborted; or rejected, expired, cancelled.
//! A step of a run (several commands as one sequence, [`insert_run`]) starts `held` and is queued when the step before
//! it ends (or `skipped` when that step failed and could not be continued past): see `runs.sql`.

use std::collections::HashSet;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, Type, ValueRef};
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Serialize, Serializer};

use super::StoreError;
use crate::xyte::SendCommand;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// A step of a run waiting for the step before it.
    Held,
    Queued,
    Sending,
    Sent,
    Pending,
    InProgress,
    Scheduled,
    Done,
    Failed,
    Aborted,
    Rejected,
    Expired,
    Cancelled,
    /// A step of a run not sent because an earlier step failed.
    Skipped,
}

use TaskState::*;

/// States in which the command is at Xyte and its status is tracked.
pub const AT_XYTE: &[TaskState] = &[Sent, Pending, InProgress, Scheduled];

impl TaskState {
    const ALL: [TaskState; 14] = [
        Held, Queued, Sending, Sent, Pending, InProgress, Scheduled, Done, Failed, Aborted, Rejected, Expired,
        Cancelled, Skipped,
    ];

    /// The one text of a state: in the database, and in every answer and event that shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Held => "held",
            Queued => "queued",
            Sending => "sending",
            Sent => "sent",
            Pending => "pending",
            InProgress => "in_progress",
            Scheduled => "scheduled",
            Done => "done",
            Failed => "failed",
            Aborted => "aborted",
            Rejected => "rejected",
            Expired => "expired",
            Cancelled => "cancelled",
            Skipped => "skipped",
        }
    }

    pub fn parse(text: &str) -> Option<TaskState> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// What a command status read from Xyte moves a task at Xyte to; Xyte's statuses share our names.
    pub fn from_xyte(status: &str) -> Option<TaskState> {
        Self::parse(status).filter(|s| matches!(s, Pending | InProgress | Scheduled | Done | Failed | Aborted))
    }

    /// Whether the task can still move out of this state.
    pub fn is_open(self) -> bool {
        matches!(self, Held | Queued | Sending | Sent | Pending | InProgress | Scheduled)
    }
}

impl Serialize for TaskState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl ToSql for TaskState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

impl FromSql for TaskState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = value.as_str()?;
        TaskState::parse(text).ok_or_else(|| FromSqlError::Other(format!("unknown task state {text:?}").into()))
    }
}

/// What `last_error` says while a task's outcome is unknown, for people; code reads `Task::outcome_unknown`.
const UNKNOWN_OUTCOME: &str = "unknown outcome";

#[derive(Debug, Clone)]
pub struct Task {
    pub task_id: String,
    pub device_id: String,
    pub command: String,
    pub body: SendCommand,
    pub state: TaskState,
    pub xyte_command_id: Option<String>,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub updated_at: i64,
    pub last_error: Option<String>,
    /// The last POST may have reached Xyte without our knowing (timeout, 5xx, crash mid-POST): Xyte has no
    /// idempotency keys, so the task must be reconciled against the device's command list before anything else.
    pub outcome_unknown: bool,
    pub principal: String,
    /// The run this task is a step of, and which step (from 1).
    pub run: Option<(String, i64)>,
}

const COLUMNS: &str = "task_id, device_id, command, body, state, xyte_command_id, attempts, next_attempt_at, created_at, \
                       expires_at, updated_at, last_error, outcome_unknown, principal, run_id, step";

fn row(r: &Row<'_>) -> rusqlite::Result<Task> {
    let body: String = r.get(3)?;
    Ok(Task {
        task_id: r.get(0)?,
        device_id: r.get(1)?,
        command: r.get(2)?,
        body: serde_json::from_str(&body)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(3, Type::Text, e.into()))?,
        state: r.get(4)?,
        xyte_command_id: r.get(5)?,
        attempts: r.get(6)?,
        next_attempt_at: r.get(7)?,
        created_at: r.get(8)?,
        expires_at: r.get(9)?,
        updated_at: r.get(10)?,
        last_error: r.get(11)?,
        outcome_unknown: r.get(12)?,
        principal: r.get(13)?,
        run: match (r.get::<_, Option<String>>(14)?, r.get::<_, Option<i64>>(15)?) {
            (Some(run), Some(step)) => Some((run, step)),
            _ => None,
        },
    })
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
    cmd: &SendCommand,
    principal: &str,
    now: i64,
    ttl_ms: i64,
) -> Result<Task, StoreError> {
    let id = new_id();
    let seq: i64 = conn.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM tasks", [], |r| r.get(0))?;
    conn.execute(
        "INSERT INTO tasks (task_id, seq, device_id, command, body, state, attempts, next_attempt_at, created_at, expires_at,
                            updated_at, principal)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?7, ?8, ?7, ?9)",
        params![id, seq, device_id, cmd.command, serde_json::to_string(cmd)?, Queued, now, now + ttl_ms, principal],
    )?;
    get(conn, &id)?.ok_or_else(|| StoreError::Data("inserted task vanished".into()))
}

/// One step of a run: a command for a device, and whether the run goes on when it fails.
#[derive(Debug, Clone)]
pub struct Step {
    pub device_id: String,
    pub cmd: SendCommand,
    pub continue_on_error: bool,
}

/// Inserts a run: one task per step, in order, the first queued and the others held until the step before them
/// ends (`runs.sql` moves the run on). Every step expires `ttl_ms` after `now`, so a run held up for longer sends
/// nothing late. Call with `Durability::Full`, in the transaction that records why the run started.
pub fn insert_run(
    conn: &Connection,
    run_id: &str,
    steps: &[Step],
    principal: &str,
    now: i64,
    ttl_ms: i64,
) -> Result<Vec<Task>, StoreError> {
    let mut seq: i64 = conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM tasks", [], |r| r.get(0))?;
    for (i, step) in steps.iter().enumerate() {
        let id = new_id();
        seq += 1;
        let state = if i == 0 { Queued } else { Held };
        conn.execute(
            "INSERT INTO tasks (task_id, seq, device_id, command, body, state, attempts, next_attempt_at, created_at,
                                expires_at, updated_at, principal, run_id, step, continue_on_error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?7, ?8, ?7, ?9, ?10, ?11, ?12)",
            params![
                id,
                seq,
                step.device_id,
                step.cmd.command,
                serde_json::to_string(&step.cmd)?,
                state,
                now,
                now + ttl_ms,
                principal,
                run_id,
                i as i64 + 1,
                step.continue_on_error
            ],
        )?;
    }
    run(conn, run_id)
}

/// The steps of a run, in order.
pub fn run(conn: &Connection, run_id: &str) -> Result<Vec<Task>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM tasks WHERE run_id = ?1 ORDER BY step"))?;
    let rows = stmt.query_map([run_id], row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn get(conn: &Connection, task_id: &str) -> Result<Option<Task>, StoreError> {
    Ok(conn.query_row(&format!("SELECT {COLUMNS} FROM tasks WHERE task_id = ?1"), [task_id], row).optional()?)
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
    Ok(rows.collect::<Result<_, _>>()?)
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

pub fn in_states(conn: &Connection, device_id: &str, states: &[TaskState]) -> Result<Vec<Task>, StoreError> {
    let list = serde_json::to_string(states)?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM tasks WHERE device_id = ?1 AND state IN (SELECT value FROM json_each(?2)) ORDER BY seq"
    ))?;
    let rows = stmt.query_map(params![device_id, list], row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The devices with a task in one of `states`, in id order: callers then read one device's tasks at a time, so a
/// deep outbox (tens of thousands of commands) is never held in memory at once.
pub fn devices_in_states(conn: &Connection, states: &[TaskState]) -> Result<Vec<String>, StoreError> {
    let list = serde_json::to_string(states)?;
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT device_id FROM tasks WHERE state IN (SELECT value FROM json_each(?1)) ORDER BY device_id",
    )?;
    let rows = stmt.query_map([list], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Queued tasks past their expiry, oldest first, at most `limit` — except those whose last POST has an unknown
/// outcome: they may be at Xyte, so only reconciliation may call them expired.
pub fn expired(conn: &Connection, now: i64, limit: usize) -> Result<Vec<Task>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM tasks WHERE state = 'queued' AND expires_at <= ?1 AND outcome_unknown = 0
         ORDER BY seq LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![now, limit as i64], row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Xyte command ids already known to belong to tasks of `device_id`.
pub fn claimed_command_ids(conn: &Connection, device_id: &str) -> Result<HashSet<String>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT xyte_command_id FROM tasks WHERE device_id = ?1 AND xyte_command_id IS NOT NULL")?;
    let ids = stmt.query_map([device_id], |r| r.get(0))?;
    Ok(ids.collect::<Result<_, _>>()?)
}

/// Queues again, with an unknown outcome and not before `due`, every task a previous process left `sending`.
pub fn requeue_interrupted(conn: &Connection, now: i64, due: i64) -> Result<usize, StoreError> {
    Ok(conn.execute(
        "UPDATE tasks SET state = ?1, outcome_unknown = 1, last_error = ?2, updated_at = ?3, next_attempt_at = ?4
         WHERE state = ?5",
        params![Queued, UNKNOWN_OUTCOME, now, due, Sending],
    )?)
}

/// Makes every queued task due now.
pub fn retry_queued_now(conn: &Connection, now: i64) -> Result<usize, StoreError> {
    Ok(conn.execute("UPDATE tasks SET next_attempt_at = ?1 WHERE state = ?2", params![now, Queued])?)
}

/// What a transition changes besides the state.
#[derive(Debug, Default, Clone)]
pub struct Patch {
    pub xyte_command_id: Option<String>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<i64>,
    pub count_attempt: bool,
    /// The task's outcome after this transition: unknown only while a transition says so (`last_error` then says
    /// "unknown outcome" in place of this patch's).
    pub outcome_unknown: bool,
}

/// Compare-and-set: moves the task to `to` only if it is in one of `from`. Returns whether it moved.
pub fn transition(
    conn: &Connection,
    task_id: &str,
    from: &[TaskState],
    to: TaskState,
    patch: &Patch,
    now: i64,
) -> Result<bool, StoreError> {
    let from = serde_json::to_string(from)?;
    let last_error = if patch.outcome_unknown { Some(UNKNOWN_OUTCOME) } else { patch.last_error.as_deref() };
    let n = conn.execute(
        "UPDATE tasks SET state = ?3, updated_at = ?4,
             xyte_command_id = COALESCE(?5, xyte_command_id),
             last_error = COALESCE(?6, last_error),
             next_attempt_at = COALESCE(?7, next_attempt_at),
             attempts = attempts + ?8,
             outcome_unknown = ?9
         WHERE task_id = ?1 AND state IN (SELECT value FROM json_each(?2))",
        params![
            task_id,
            from,
            to,
            now,
            patch.xyte_command_id,
            last_error,
            patch.next_attempt_at,
            i64::from(patch.count_attempt),
            patch.outcome_unknown
        ],
    )?;
    Ok(n == 1)
}

/// When the oldest command still waiting to reach Xyte was accepted (for the `outbox_older_than` alert).
pub fn oldest_waiting(conn: &Connection) -> Result<Option<i64>, StoreError> {
    Ok(conn.query_row("SELECT MIN(created_at) FROM tasks WHERE state IN ('queued', 'sending')", [], |r| r.get(0))?)
}
