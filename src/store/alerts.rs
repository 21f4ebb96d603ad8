//! Alerts' records (schema version 7, `alerts.sql`; being built, nothing writes them yet): the alerts that fire and
//! those that recently resolved or were told, the silences, and every message to a channel from before it is tried
//! until it is acknowledged or given up.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::StoreError;
use crate::alerts::{Silence, Subject};

/// An alert as recorded: `state` is `firing`, `resolving` (resolved, the notice not queued yet), `resolved`,
/// `notified` (an event rule's alert, told once) or `silenced` (an event rule's alert that a silence kept quiet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRow {
    pub rule: String,
    pub subject: Subject,
    pub state: String,
    pub since: i64,
    pub fired_at: i64,
    pub told_at: Option<i64>,
    pub resolved_at: Option<i64>,
}

const ALERT_COLUMNS: &str = "rule, subject, label, space, state, since, fired_at, told_at, resolved_at";

fn alert_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AlertRow> {
    Ok(AlertRow {
        rule: r.get(0)?,
        subject: Subject { key: r.get(1)?, label: r.get(2)?, space: r.get(3)? },
        state: r.get(4)?,
        since: r.get(5)?,
        fired_at: r.get(6)?,
        told_at: r.get(7)?,
        resolved_at: r.get(8)?,
    })
}

/// Records an alert (new, told again, resolved …): the row for its rule and subject is replaced.
pub fn put(conn: &Connection, a: &AlertRow) -> Result<(), StoreError> {
    conn.execute(
        &format!("INSERT OR REPLACE INTO alerts ({ALERT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
        params![
            a.rule,
            a.subject.key,
            a.subject.label,
            a.subject.space,
            a.state,
            a.since,
            a.fired_at,
            a.told_at,
            a.resolved_at
        ],
    )?;
    Ok(())
}

/// Marks a firing alert resolved at `at` — `resolving` while its notice is still to be queued ([`resolve_told`]);
/// false when it was not firing.
pub fn resolve(conn: &Connection, rule: &str, subject: &str, at: i64, notice: bool) -> Result<bool, StoreError> {
    let state = if notice { "resolving" } else { "resolved" };
    Ok(conn.execute(
        "UPDATE alerts SET state = ?4, resolved_at = ?3 WHERE rule = ?1 AND subject = ?2 AND state = 'firing'",
        params![rule, subject, at, state],
    )? == 1)
}

/// The alerts that fire now, to rebuild the tracker at start.
pub fn firing(conn: &Connection) -> Result<Vec<AlertRow>, StoreError> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE state = 'firing' ORDER BY fired_at"))?;
    let rows = stmt.query_map([], alert_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Event alerts recorded but not told yet (the daemon stopped inside their grouping window).
pub fn untold_notices(conn: &Connection) -> Result<Vec<AlertRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ALERT_COLUMNS} FROM alerts WHERE state = 'notified' AND told_at IS NULL ORDER BY fired_at"
    ))?;
    let rows = stmt.query_map([], alert_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// What fires, and what resolved or was told since `since`: newest first.
pub fn recent(conn: &Connection, since: i64) -> Result<Vec<AlertRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ALERT_COLUMNS} FROM alerts WHERE state = 'firing' OR COALESCE(resolved_at, fired_at) >= ?1
         ORDER BY COALESCE(resolved_at, fired_at) DESC"
    ))?;
    let rows = stmt.query_map([since], alert_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Deletes alerts that ended before `before`, and deliveries done before it; returns how many rows went.
pub fn prune(conn: &Connection, before: i64) -> Result<usize, StoreError> {
    let alerts =
        conn.execute("DELETE FROM alerts WHERE state <> 'firing' AND COALESCE(resolved_at, fired_at) < ?1", [before])?;
    let deliveries =
        conn.execute("DELETE FROM alert_deliveries WHERE state <> 'pending' AND done_at < ?1", [before])?;
    let silences = conn.execute("DELETE FROM alert_silences WHERE until < ?1", [before])?;
    Ok(alerts + deliveries + silences)
}

pub fn add_silence(conn: &Connection, s: &Silence, created_at: i64, comment: Option<&str>) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO alert_silences (id, rule, space, device, until, by, created_at, comment)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![s.id, s.rule, s.space, s.device, s.until, s.by, created_at, comment],
    )?;
    Ok(())
}

/// Silences that have not ended at `now`.
pub fn silences(conn: &Connection, now: i64) -> Result<Vec<Silence>, StoreError> {
    Ok(silence_rows(conn, now)?.into_iter().map(|r| r.silence).collect())
}

/// A silence with what only people read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SilenceRow {
    pub silence: Silence,
    pub created_at: i64,
    pub comment: Option<String>,
}

/// [`silences`], with when each was made and why.
pub fn silence_rows(conn: &Connection, now: i64) -> Result<Vec<SilenceRow>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, rule, space, device, until, by, created_at, comment FROM alert_silences WHERE until > ?1
         ORDER BY created_at",
    )?;
    let rows = stmt.query_map([now], |r| {
        Ok(SilenceRow {
            silence: Silence {
                id: r.get(0)?,
                rule: r.get(1)?,
                space: r.get(2)?,
                device: r.get(3)?,
                until: r.get(4)?,
                by: r.get(5)?,
            },
            created_at: r.get(6)?,
            comment: r.get(7)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Ends a silence now; false when there is no such silence still running.
pub fn end_silence(conn: &Connection, id: &str, now: i64) -> Result<bool, StoreError> {
    Ok(conn.execute("UPDATE alert_silences SET until = ?2 WHERE id = ?1 AND until > ?2", params![id, now])? == 1)
}

/// A message to a channel and how its delivery goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: i64,
    pub channel: String,
    pub rule: String,
    pub notification: Value,
    pub created_at: i64,
    /// `pending`, `sent` or `given_up`.
    pub state: String,
    pub attempts: u32,
    pub next_at: i64,
    pub last_error: Option<String>,
    pub done_at: Option<i64>,
}

const DELIVERY_COLUMNS: &str =
    "id, channel, rule, notification, created_at, state, attempts, next_at, last_error, done_at";

fn delivery_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
    let text: String = r.get(3)?;
    Ok(Delivery {
        id: r.get(0)?,
        channel: r.get(1)?,
        rule: r.get(2)?,
        notification: serde_json::from_str(&text).unwrap_or(Value::Null),
        created_at: r.get(4)?,
        state: r.get(5)?,
        attempts: r.get(6)?,
        next_at: r.get(7)?,
        last_error: r.get(8)?,
        done_at: r.get(9)?,
    })
}

/// Writes a message before it is tried (with `Durability::Full`: a crash before delivery still delivers it).
pub fn enqueue(
    conn: &Connection,
    channel: &str,
    rule: &str,
    notification: &Value,
    now: i64,
) -> Result<i64, StoreError> {
    conn.execute(
        "INSERT INTO alert_deliveries (channel, rule, notification, created_at, state, next_at)
         VALUES (?1, ?2, ?3, ?4, 'pending', ?4)",
        params![channel, rule, notification.to_string(), now],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Pending messages whose time has come, oldest first.
pub fn due(conn: &Connection, now: i64, limit: usize) -> Result<Vec<Delivery>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM alert_deliveries WHERE state = 'pending' AND next_at <= ?1 ORDER BY next_at, id
         LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![now, limit as i64], delivery_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The earliest pending message's time, for the sender's timer.
pub fn next_due(conn: &Connection) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .query_row("SELECT MIN(next_at) FROM alert_deliveries WHERE state = 'pending'", [], |r| r.get(0))
        .optional()?
        .flatten())
}

/// The receiver acknowledged it: never sent again.
pub fn sent(conn: &Connection, id: i64, now: i64) -> Result<bool, StoreError> {
    Ok(conn.execute(
        "UPDATE alert_deliveries SET state = 'sent', attempts = attempts + 1, done_at = ?2, last_error = NULL
         WHERE id = ?1 AND state = 'pending'",
        params![id, now],
    )? == 1)
}

/// An attempt failed with `error`: tried again at `retry_at`, or given up when `None`.
pub fn failed(conn: &Connection, id: i64, error: &str, retry_at: Option<i64>, now: i64) -> Result<bool, StoreError> {
    let changed = match retry_at {
        Some(at) => conn.execute(
            "UPDATE alert_deliveries SET attempts = attempts + 1, next_at = ?2, last_error = ?3
             WHERE id = ?1 AND state = 'pending'",
            params![id, at, error],
        )?,
        None => conn.execute(
            "UPDATE alert_deliveries SET state = 'given_up', attempts = attempts + 1, last_error = ?2, done_at = ?3
             WHERE id = ?1 AND state = 'pending'",
            params![id, error, now],
        )?,
    };
    Ok(changed == 1)
}

/// The messages of a rule about a subject, newest first (for list_alerts).
pub fn of_alert(conn: &Connection, rule: &str, subject: &str, limit: usize) -> Result<Vec<Delivery>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM alert_deliveries d WHERE rule = ?1
           AND EXISTS (SELECT 1 FROM json_each(d.notification, '$.subjects') s WHERE s.value ->> '$.key' = ?2)
         ORDER BY created_at DESC, id DESC LIMIT ?3"
    ))?;
    let rows = stmt.query_map(params![rule, subject, limit as i64], delivery_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Alerts firing now, for the metrics.
pub fn firing_count(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("SELECT COUNT(*) FROM alerts WHERE state = 'firing'", [], |r| r.get(0))?)
}

/// Messages pending, sent and given up, for the metrics.
pub fn counts(conn: &Connection) -> Result<(u64, u64, u64), StoreError> {
    Ok(conn.query_row(
        "SELECT COALESCE(SUM(state = 'pending'), 0), COALESCE(SUM(state = 'sent'), 0),
                COALESCE(SUM(state = 'given_up'), 0) FROM alert_deliveries",
        [],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64)),
    )?)
}

/// A message waits for its channel's hourly budget: tried at `at`, without counting an attempt.
pub fn defer(conn: &Connection, id: i64, at: i64) -> Result<(), StoreError> {
    conn.execute("UPDATE alert_deliveries SET next_at = ?2 WHERE id = ?1 AND state = 'pending'", params![id, at])?;
    Ok(())
}

/// People were told that `rule` fires for `subjects` (its messages are queued): a restart does not tell them again.
pub fn told(conn: &Connection, rule: &str, subjects: &[&str], now: i64) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "UPDATE alerts SET told_at = ?3 WHERE rule = ?1 AND subject = ?2 AND state IN ('firing', 'notified')",
    )?;
    for s in subjects {
        stmt.execute(params![rule, s, now])?;
    }
    Ok(())
}

/// Alerts that resolved and whose resolve notice is not queued yet (`resolving`): queued now, they are `resolved`.
pub fn resolve_told(conn: &Connection, rule: &str, subjects: &[&str]) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "UPDATE alerts SET state = 'resolved' WHERE rule = ?1 AND subject = ?2 AND state = 'resolving'",
    )?;
    for s in subjects {
        stmt.execute(params![rule, s])?;
    }
    Ok(())
}

/// The alerts that resolved but whose notice was not queued when the daemon stopped: queued again at start.
pub fn resolving(conn: &Connection) -> Result<Vec<AlertRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ALERT_COLUMNS} FROM alerts WHERE state = 'resolving' ORDER BY resolved_at"
    ))?;
    let rows = stmt.query_map([], alert_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}
