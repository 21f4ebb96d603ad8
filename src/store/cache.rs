//! The read cache: the last body Xyte sent for each (resource, key), with the time it was fetched.
//!
//! Unchanged data is never rewritten: a row's `hash` is compared first, and a poll that finds nothing new writes
//! nothing to disk. Fields that move on every poll without meaning anything ([`volatile_fields`]) are left out of the
//! hash, so they alone never cause a write; their latest values live in memory (`crate::cache` lays them over
//! the rows), and the row on disk stays consistent with its own `fetched_at`. Freshness of a whole snapshot is tracked
//! in memory too (`crate::cache`); after a restart the on-disk `fetched_at` is what is known, the conservative answer.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::StoreError;

#[derive(Debug, Clone, PartialEq)]
pub struct CacheEntry {
    pub key: String,
    pub body: Value,
    /// ms since the epoch; 0 after an invalidation (the body is kept for stale answers).
    pub fetched_at: i64,
}

/// What a snapshot changed, with old and new bodies so the poller can describe the change as events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CacheDiff {
    pub added: Vec<(String, Value)>,
    /// (key, old body, new body)
    pub changed: Vec<(String, Value, Value)>,
    pub removed: Vec<(String, Value)>,
    /// The first complete snapshot of the resource (an empty cache filled): its rows are not news.
    pub first: bool,
}

impl CacheDiff {
    pub fn changed_count(&self) -> usize {
        self.added.len() + self.changed.len() + self.removed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.changed_count() == 0
    }
}

/// Fields of `resource` that change without news: a device's `last_seen_at` follows every telemetry report, so on a
/// quiet fleet of 500 devices it alone would rewrite every row on every poll (about 860 KB of writes each time).
pub fn volatile_fields(resource: &str) -> &'static [&'static str] {
    match resource {
        "device" => &["last_seen_at"],
        _ => &[],
    }
}

/// The body's text (what is stored) and the hash of its meaningful part (what decides whether it is stored).
fn text_and_hash(resource: &str, body: &Value) -> Result<(String, Vec<u8>), StoreError> {
    let text = serde_json::to_string(body)?;
    let volatile = volatile_fields(resource);
    let hashed = match body.as_object() {
        Some(o) if volatile.iter().any(|f| o.contains_key(*f)) => {
            let mut stable = o.clone();
            stable.retain(|k, _| !volatile.contains(&k.as_str()));
            serde_json::to_string(&stable)?
        }
        _ => text.clone(),
    };
    Ok((text, ring::digest::digest(&ring::digest::SHA256, hashed.as_bytes()).as_ref().to_vec()))
}

/// Stores one entry; returns whether the body differed from what was stored. An unchanged body updates nothing.
pub fn put(conn: &Connection, resource: &str, key: &str, body: &Value, fetched_at: i64) -> Result<bool, StoreError> {
    let (text, h) = text_and_hash(resource, body)?;
    let n = conn.execute(
        "INSERT INTO cache (resource, key, body, hash, fetched_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (resource, key) DO UPDATE SET body = excluded.body, hash = excluded.hash,
             fetched_at = excluded.fetched_at
         WHERE cache.hash != excluded.hash OR cache.fetched_at = 0",
        params![resource, key, text, h, fetched_at],
    )?;
    Ok(n > 0)
}

pub fn get(conn: &Connection, resource: &str, key: &str) -> Result<Option<CacheEntry>, StoreError> {
    // Cached: this runs for every cached read, and preparing it each time was a visible part of their cost.
    let mut stmt = conn.prepare_cached("SELECT body, fetched_at FROM cache WHERE resource = ?1 AND key = ?2")?;
    let row =
        stmt.query_row(params![resource, key], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))).optional()?;
    row.map(|(body, fetched_at)| {
        Ok(CacheEntry { key: key.to_string(), body: serde_json::from_str(&body)?, fetched_at })
    })
    .transpose()
}

/// Every row of `resource` in key order as (key, body, fetched_at), each body handed to `shape` as it is parsed: the
/// caller keeps its own form of each row without all the parsed `Value`s existing at once.
pub fn list<T>(
    conn: &Connection,
    resource: &str,
    mut shape: impl FnMut(&str, Value) -> T,
) -> Result<Vec<(String, T, i64)>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT key, body, fetched_at FROM cache WHERE resource = ?1 ORDER BY key")?;
    let mut rows = stmt.query(params![resource])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        // Parsed from SQLite's own buffer: a copy of each body's text would be one more allocation per row, and
        // the holes those copies leave between the kept values kept about a MiB of heap resident.
        let body = serde_json::from_slice(r.get_ref(1)?.as_bytes().map_err(rusqlite::Error::from)?)?;
        let key: String = r.get(0)?;
        let kept = shape(&key, body);
        out.push((key, kept, r.get(2)?));
    }
    Ok(out)
}

/// What the stored devices say before the first sync of this run: how many, how many online, and when the newest
/// row came from Xyte (0: none) — a restart while Xyte is unreachable tells the truth about its cache from this.
pub fn device_summary(conn: &Connection) -> Result<(usize, usize, i64), StoreError> {
    Ok(conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(body ->> '$.status' = 'online'), 0), COALESCE(MAX(fetched_at), 0)
         FROM cache WHERE resource = 'device'",
        [],
        |r| Ok((r.get::<_, i64>(0)? as usize, r.get::<_, i64>(1)? as usize, r.get(2)?)),
    )?)
}

/// Marks entries stale (after a write through the daemon) while keeping their bodies for stale answers.
pub fn invalidate(conn: &Connection, resource: &str, key: Option<&str>) -> Result<usize, StoreError> {
    let n = match key {
        Some(k) => {
            conn.execute("UPDATE cache SET fetched_at = 0 WHERE resource = ?1 AND key = ?2", params![resource, k])?
        }
        None => conn.execute("UPDATE cache SET fetched_at = 0 WHERE resource = ?1", params![resource])?,
    };
    Ok(n)
}

/// Marker rows (`_set`, resource) say that a complete snapshot of `resource` was stored. Single entries share the
/// resource's rows (a device fetched alone is a `device` row), so without the marker a few such rows could pass for
/// the whole fleet.
const SETS: &str = "_set";

/// Whether a complete snapshot of `resource` was ever stored (its rows are a collection, not a few stray entries).
pub fn has_set(conn: &Connection, resource: &str) -> Result<bool, StoreError> {
    Ok(get(conn, SETS, resource)?.is_some())
}

/// Replaces the stored set of `resource` with a complete snapshot: inserts new keys, updates changed bodies,
/// deletes keys that disappeared, and leaves identical rows untouched.
pub fn replace_set(
    conn: &Connection,
    resource: &str,
    entries: &[(String, Value)],
    at: i64,
) -> Result<CacheDiff, StoreError> {
    let mut existing: std::collections::HashMap<String, (Vec<u8>, String)> = std::collections::HashMap::new();
    {
        let mut stmt = conn.prepare_cached("SELECT key, hash, body FROM cache WHERE resource = ?1")?;
        let rows =
            stmt.query_map(params![resource], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?, r.get(2)?)))?;
        for row in rows {
            let (k, h, b) = row?;
            existing.insert(k, (h, b));
        }
    }
    let mut diff = CacheDiff { first: !has_set(conn, resource)?, ..Default::default() };
    let mut upsert = conn.prepare_cached(
        "INSERT INTO cache (resource, key, body, hash, fetched_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (resource, key) DO UPDATE SET body = excluded.body, hash = excluded.hash,
             fetched_at = excluded.fetched_at",
    )?;
    for (key, body) in entries {
        let (text, h) = text_and_hash(resource, body)?;
        match existing.remove(key) {
            Some((old_hash, _)) if old_hash == h => {}
            Some((_, old_body)) => {
                upsert.execute(params![resource, key, text, h, at])?;
                diff.changed.push((key.clone(), serde_json::from_str(&old_body)?, body.clone()));
            }
            None => {
                upsert.execute(params![resource, key, text, h, at])?;
                diff.added.push((key.clone(), body.clone()));
            }
        }
    }
    let mut delete = conn.prepare_cached("DELETE FROM cache WHERE resource = ?1 AND key = ?2")?;
    let mut gone: Vec<_> = existing.into_iter().collect();
    gone.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, (_, old_body)) in gone {
        delete.execute(params![resource, key])?;
        diff.removed.push((key, serde_json::from_str(&old_body)?));
    }
    // Written once; `put` leaves an identical marker untouched, so unchanged polls still write nothing.
    put(conn, SETS, resource, &Value::Bool(true), at)?;
    Ok(diff)
}
