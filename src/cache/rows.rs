//! The cache rows as reads see them: the store's rows (the truth, `store::cache`) with what is kept in memory beside
//! them: when Xyte last confirmed each whole snapshot, the latest values of volatile fields (a poll where only they
//! moved writes nothing), the parsed copies ([`super::memo`]) and how often each resource was invalidated.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use serde_json::Value;

use super::memo::{CachedList, Memo};
use super::{Cache, Compact, Keys};
use crate::store::cache::{self, CacheDiff, CacheEntry};
use crate::store::{Durability, StoreError};

type JsonObject = serde_json::Map<String, Value>;

/// What the cache keeps in memory about its rows.
#[derive(Default)]
pub(super) struct Kept {
    /// When a whole resource snapshot was last confirmed by Xyte: an unchanged poll writes nothing. After a restart
    /// the rows' own `fetched_at` is what is known, which is the conservative answer.
    confirmed: Mutex<HashMap<&'static str, i64>>,
    /// The latest values of volatile cache fields ([`cache::volatile_fields`]) by resource and key: in memory only,
    /// so a poll where only they moved writes nothing.
    volatile: Mutex<HashMap<&'static str, HashMap<String, JsonObject>>>,
    /// Rows each cached collection had when last listed: a small one is read on the calling thread (see
    /// [`Cache::list`]).
    listed: Mutex<HashMap<&'static str, usize>>,
    /// Parsed copies of cache rows already read, dropped by every write of their resource.
    memo: Mutex<Memo>,
    /// How often each resource was invalidated ([`Cache::invalidations`]).
    invalidated: Mutex<HashMap<&'static str, u64>>,
}

impl Kept {
    /// How many times `resource` was invalidated so far. A fetch from Xyte notes it before it asks and hands it to
    /// [`Cache::put`] or [`Cache::replace_set`]: an answer that left Xyte before a write through the daemon must not
    /// be stored as fresh after that write invalidated the cache.
    fn invalidations(&self, resource: &'static str) -> u64 {
        self.invalidated.lock().map(|n| n.get(resource).copied().unwrap_or(0)).unwrap_or(0)
    }

    /// Checked inside the write transaction, so that an invalidation queued before it wins.
    fn not_invalidated(&self, resource: &'static str, since: Option<u64>) -> Result<(), StoreError> {
        match since {
            Some(since) if self.invalidations(resource) != since => Err(StoreError::Invalidated),
            _ => Ok(()),
        }
    }

    /// After a write of `resource`'s cache rows: parsed copies of them are not the truth any more.
    fn forget(&self, resource: &'static str) {
        if let Ok(mut m) = self.memo.lock() {
            m.forget(resource);
        }
    }

    fn generation(&self, resource: &'static str) -> u64 {
        self.memo.lock().map(|m| m.generation(resource)).unwrap_or(0)
    }

    /// Lays the latest volatile fields of a row over its body (before it is kept in any form).
    fn lay_volatile(&self, resource: &'static str, key: &str, body: &mut Value) {
        let Ok(all) = self.volatile.lock() else { return };
        if let (Some(fields), Some(body)) = (all.get(resource).and_then(|r| r.get(key)), body.as_object_mut()) {
            body.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
}

impl Cache {
    /// Records that Xyte confirmed the whole `resource` snapshot at `at_ms` (in memory only).
    pub(super) fn mark_confirmed(&self, resource: &'static str, at_ms: i64) {
        if let Ok(mut m) = self.state.kept.confirmed.lock() {
            m.insert(resource, at_ms);
        }
    }

    pub(super) fn confirmed_at(&self, resource: &'static str) -> Option<i64> {
        self.state.kept.confirmed.lock().ok().and_then(|m| m.get(resource).copied())
    }

    pub(super) fn invalidations(&self, resource: &'static str) -> u64 {
        self.state.kept.invalidations(resource)
    }

    /// Stores a snapshot of `resource` (see [`cache::replace_set`]) and marks it confirmed. With `since` (the
    /// resource's [`Cache::invalidations`] when the fetch began), fails with [`StoreError::Invalidated`] instead
    /// when a write invalidated the resource meanwhile.
    pub(super) async fn replace_set(
        &self,
        resource: &'static str,
        entries: super::Keyed,
        at: time::OffsetDateTime,
        since: Option<u64>,
    ) -> Result<CacheDiff, StoreError> {
        let at_ms = (at.unix_timestamp_nanos() / 1_000_000) as i64;
        let latest: HashMap<String, _> =
            entries.iter().filter_map(|(k, body)| Some((k.clone(), volatile_part(resource, body)?))).collect();
        let state = self.state.clone();
        let diff = self
            .store
            .write(Durability::Normal, move |c| {
                state.kept.not_invalidated(resource, since)?;
                cache::replace_set(c, resource, &entries, at_ms)
            })
            .await;
        let kept = &self.state.kept;
        if diff.is_ok()
            && let Ok(mut v) = kept.volatile.lock()
        {
            v.insert(resource, latest);
        }
        kept.forget(resource);
        let diff = diff?;
        // An invalidation between the commit and here marked the rows stale: the snapshot must not be confirmed.
        kept.not_invalidated(resource, since)?;
        self.mark_confirmed(resource, at_ms);
        Ok(diff)
    }

    /// Stores one entry fetched on its own (see [`cache::put`]); `since` as for [`Cache::replace_set`].
    pub(super) async fn put(
        &self,
        resource: &'static str,
        key: &str,
        body: Value,
        at_ms: i64,
        since: Option<u64>,
    ) -> Result<(), StoreError> {
        let latest = volatile_part(resource, &body);
        let k = key.to_string();
        let state = self.state.clone();
        let written = self
            .store
            .write(Durability::Normal, move |c| {
                state.kept.not_invalidated(resource, since)?;
                cache::put(c, resource, &k, &body, at_ms)
            })
            .await;
        let kept = &self.state.kept;
        if let (Ok(_), Some(latest), Ok(mut v)) = (&written, latest, kept.volatile.lock()) {
            v.entry(resource).or_default().insert(key.to_string(), latest);
        }
        kept.forget(resource);
        written.map(|_| ())
    }

    /// After a write through the daemon: `resource`'s entries (or one of them) are marked stale, their bodies kept
    /// for stale answers (see [`cache::invalidate`]), and the next read of them goes to Xyte.
    pub async fn invalidate(&self, resource: &'static str, key: Option<&str>) {
        let kept = &self.state.kept;
        // Counted before the write is queued: a fetch's store that the writer runs after this count checks it and
        // stores nothing, and one that ran before is overwritten by this invalidation.
        if let Ok(mut n) = kept.invalidated.lock() {
            *n.entry(resource).or_default() += 1;
        }
        let key = key.map(String::from);
        let whole = key.is_none();
        let _ = self.store.write(Durability::Normal, move |c| cache::invalidate(c, resource, key.as_deref())).await;
        kept.forget(resource);
        if whole {
            self.mark_confirmed(resource, 0);
        }
    }

    /// One cached entry, with its volatile fields as last seen.
    pub async fn get(&self, resource: &'static str, key: &str) -> Result<Option<CacheEntry>, StoreError> {
        let kept = &self.state.kept;
        if let Some(e) = kept.memo.lock().ok().and_then(|m| m.entry(resource, key)) {
            return Ok(Some(e));
        }
        let generation = kept.generation(resource);
        let mut entry = self.store.read_blocking(|c| cache::get(c, resource, key))?;
        if let Some(e) = entry.as_mut() {
            kept.lay_volatile(resource, &e.key, &mut e.body);
            if let Ok(mut m) = kept.memo.lock() {
                m.keep_entry(resource, generation, e);
            }
        }
        Ok(entry)
    }

    /// Every cached entry of `resource`, with their volatile fields as last seen, and whether they are a complete
    /// snapshot ([`cache::has_set`]).
    pub(super) async fn list(&self, resource: &'static str) -> Result<Arc<CachedList>, StoreError> {
        let kept = &self.state.kept;
        if let Some(list) = kept.memo.lock().ok().and_then(|m| m.list(resource)) {
            return Ok(list);
        }
        let generation = kept.generation(resource);
        let state = self.state.clone();
        let list = move |c: &Connection| {
            let mut keys = Keys::default();
            let rows = cache::list(c, resource, |key, mut body| {
                state.kept.lay_volatile(resource, key, &mut body);
                Compact::of(&body, &mut keys)
            })?;
            Ok((rows, cache::has_set(c, resource)?))
        };
        // A collection of a few rows (active incidents, read by every get_device_status) costs microseconds: read it
        // here rather than through the blocking pool (see `Store::read_blocking`). A large one (the device set) stays
        // off the async workers.
        let small = kept.listed.lock().ok().and_then(|m| m.get(resource).copied()).is_some_and(|n| n <= 64);
        let (rows, complete) = if small { self.store.read_blocking(list)? } else { self.store.read(list).await? };
        if let Ok(mut m) = kept.listed.lock() {
            m.insert(resource, rows.len());
        }
        let list = Arc::new(CachedList::new(rows, complete));
        if let Ok(mut m) = kept.memo.lock() {
            m.keep_list(resource, generation, &list);
        }
        Ok(list)
    }
}

/// The volatile fields of one body, if it has any.
fn volatile_part(resource: &str, body: &Value) -> Option<JsonObject> {
    let fields = cache::volatile_fields(resource);
    let part: JsonObject = fields.iter().filter_map(|f| Some((f.to_string(), body.get(*f)?.clone()))).collect();
    (!part.is_empty()).then_some(part)
}
