//! Room schedules' records (schema version 6, `schedules.sql`): per schedule the last due time handled and its
//! pause; per run its start, its schedule and, once every step is final, its result.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::StoreError;

/// What the gateway remembers of one schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    /// The when-text the due times were computed from.
    pub spec: String,
    /// The last due time fired or skipped (or when the schedule was first seen): only later ones are still to come.
    pub handled: i64,
    /// `Some((until, by))` while paused; `until` `None` means until resumed.
    pub paused: Option<(Option<i64>, String)>,
    /// The last skipped due time and why (`{"due_at", "reason"}`).
    pub last_skip: Option<Value>,
}

fn state_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, State)> {
    let by: Option<String> = r.get(4)?;
    let skip: Option<String> = r.get(5)?;
    Ok((
        r.get(0)?,
        State {
            spec: r.get(1)?,
            handled: r.get(2)?,
            paused: by.map(|by| (r.get::<_, Option<i64>>(3).ok().flatten(), by)),
            last_skip: skip.and_then(|s| serde_json::from_str(&s).ok()),
        },
    ))
}

const STATE_COLUMNS: &str = "name, spec, handled, paused_until, paused_by, last_skip";

pub fn states(conn: &Connection) -> Result<HashMap<String, State>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {STATE_COLUMNS} FROM schedules"))?;
    let rows = stmt.query_map([], state_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn state(conn: &Connection, name: &str) -> Result<Option<State>, StoreError> {
    let sql = format!("SELECT {STATE_COLUMNS} FROM schedules WHERE name = ?1");
    Ok(conn.query_row(&sql, [name], state_row).optional()?.map(|(_, s)| s))
}

/// The schedule's state, first recording it if it is new or its when-text changed: then nothing before `now` is
/// due, so a new or edited schedule does not catch up on times it never had.
pub fn ensure(conn: &Connection, name: &str, spec: &str, now: i64) -> Result<State, StoreError> {
    conn.execute(
        "INSERT INTO schedules (name, spec, handled) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, handled = MAX(handled, excluded.handled)
         WHERE spec <> excluded.spec",
        params![name, spec, now],
    )?;
    state(conn, name)?.ok_or_else(|| StoreError::Data("schedule row vanished".into()))
}

/// Records `due` as handled; false (and nothing changes) when it already was, so a due time is acted on once.
pub fn handle(conn: &Connection, name: &str, due: i64) -> Result<bool, StoreError> {
    Ok(conn.execute("UPDATE schedules SET handled = ?2 WHERE name = ?1 AND handled < ?2", params![name, due])? == 1)
}

pub fn set_last_skip(conn: &Connection, name: &str, skip: &Value) -> Result<(), StoreError> {
    conn.execute("UPDATE schedules SET last_skip = ?2 WHERE name = ?1", params![name, skip.to_string()])?;
    Ok(())
}

/// Pauses (`Some((until, by))`) or resumes (`None`) a schedule already recorded by [`ensure`].
pub fn set_pause(conn: &Connection, name: &str, pause: Option<(Option<i64>, &str)>) -> Result<(), StoreError> {
    let (until, by) = match pause {
        Some((until, by)) => (until, Some(by)),
        None => (None, None),
    };
    conn.execute("UPDATE schedules SET paused_until = ?2, paused_by = ?3 WHERE name = ?1", params![name, until, by])?;
    Ok(())
}

/// Forgets schedules no longer in the presets file (their pause goes with them); their runs stay in the history.
pub fn forget_except(conn: &Connection, names: &[String]) -> Result<usize, StoreError> {
    let list = serde_json::to_string(names)?;
    Ok(conn.execute("DELETE FROM schedules WHERE name NOT IN (SELECT value FROM json_each(?1))", [list])?)
}

/// One run of a schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub run_id: String,
    pub schedule: String,
    pub due: Option<i64>,
    pub fired_at: i64,
    pub principal: String,
    pub finished_at: Option<i64>,
    pub result: Option<Value>,
}

const RUN_COLUMNS: &str = "run_id, schedule, due, fired_at, principal, finished_at, result";

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Run> {
    let result: Option<String> = r.get(6)?;
    Ok(Run {
        run_id: r.get(0)?,
        schedule: r.get(1)?,
        due: r.get(2)?,
        fired_at: r.get(3)?,
        principal: r.get(4)?,
        finished_at: r.get(5)?,
        result: result.and_then(|s| serde_json::from_str(&s).ok()),
    })
}

/// Runs kept per schedule; older finished ones are deleted when a new one starts.
const RUNS_KEPT: i64 = 50;

pub fn insert_run(conn: &Connection, run: &Run) -> Result<(), StoreError> {
    conn.execute(
        &format!("INSERT INTO schedule_runs ({RUN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
        params![
            run.run_id,
            run.schedule,
            run.due,
            run.fired_at,
            run.principal,
            run.finished_at,
            run.result.as_ref().map(Value::to_string)
        ],
    )?;
    conn.execute(
        "DELETE FROM schedule_runs WHERE schedule = ?1 AND finished_at IS NOT NULL AND run_id NOT IN
           (SELECT run_id FROM schedule_runs WHERE schedule = ?1 ORDER BY fired_at DESC LIMIT ?2)",
        params![run.schedule, RUNS_KEPT],
    )?;
    Ok(())
}

/// Runs whose steps were not all final when last looked at.
pub fn open_runs(conn: &Connection) -> Result<Vec<Run>, StoreError> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM schedule_runs WHERE finished_at IS NULL"))?;
    let rows = stmt.query_map([], run_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Records a run's result; false when it was already recorded.
pub fn finish_run(conn: &Connection, run_id: &str, at: i64, result: &Value) -> Result<bool, StoreError> {
    Ok(conn.execute(
        "UPDATE schedule_runs SET finished_at = ?2, result = ?3 WHERE run_id = ?1 AND finished_at IS NULL",
        params![run_id, at, result.to_string()],
    )? == 1)
}

/// The latest run of each schedule.
pub fn last_runs(conn: &Connection) -> Result<HashMap<String, Run>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {RUN_COLUMNS} FROM schedule_runs r WHERE fired_at =
           (SELECT MAX(fired_at) FROM schedule_runs WHERE schedule = r.schedule)"
    ))?;
    let rows = stmt.query_map([], run_row)?;
    Ok(rows.map(|r| r.map(|run| (run.schedule.clone(), run))).collect::<Result<_, _>>()?)
}
