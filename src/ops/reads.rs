//! Cache-first reads (SPEC §9.1): answer from SQLite while fresh (`XYTE_CACHE_TTL`, or confirmed by the poller);
//! past that, ask Xyte and store the answer; if Xyte cannot be reached, serve what is cached marked `stale` with
//! its `fetched_at`, and fail only when nothing was ever cached.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{Value, json};
use tokio::sync::OwnedMutexGuard;

use super::Ctx;
use crate::error::Error;
use crate::store::{CachedList, Compact, Keys, now_ms};

/// Items of a cached collection with their provenance.
pub struct Snapshot {
    /// Shared with the store's parsed copy (no copy per read).
    pub items: Arc<Vec<Compact>>,
    pub fetched_at: i64,
    pub stale: bool,
}

impl Snapshot {
    /// `stale` and `fetched_at` as every read result carries them.
    pub fn provenance(&self) -> Value {
        json!({"stale": self.stale, "fetched_at": rfc3339(self.fetched_at)})
    }
}

pub fn rfc3339(ms: i64) -> Option<String> {
    if ms <= 0 {
        return None;
    }
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
}

fn fresh(ctx: &Ctx, fetched_at: i64) -> bool {
    now_ms() - fetched_at < ctx.app.cache_ttl.as_millis() as i64
}

/// The poller's last cycle could not reach Xyte: a read that has a cached answer serves it (marked stale) at once
/// instead of spending its time budget on retries against a link that is down. The next successful poll ends this.
pub(super) fn known_unreachable(ctx: &Ctx) -> bool {
    ctx.app.sync.get().reachable == Some(false)
}

/// Whole-collection fetches from Xyte in flight, by resource: the poller's and those of reads that missed. A read
/// that misses while one runs waits for it and answers from what it stored instead of asking Xyte for the same
/// pages again. Without this, a client reading during the first sync listed the whole fleet a second time (100
/// pages for 10,000 devices), sharing the rate limit with the sync it duplicated.
#[derive(Default)]
pub struct Fetches(Mutex<HashMap<&'static str, Arc<tokio::sync::Mutex<()>>>>);

/// Held while fetching one collection and storing it.
pub struct Fetching {
    _turn: OwnedMutexGuard<()>,
    /// Another fetch of the same collection ran first: what it stored may be the answer.
    pub waited: bool,
}

impl Fetches {
    pub async fn start(&self, resource: &'static str) -> Fetching {
        let turn = self.0.lock().unwrap_or_else(PoisonError::into_inner).entry(resource).or_default().clone();
        match turn.clone().try_lock_owned() {
            Ok(t) => Fetching { _turn: t, waited: false },
            Err(_) => Fetching { _turn: turn.lock_owned().await, waited: true },
        }
    }

    /// Whether a fetch of `resource` is running now.
    pub fn running(&self, resource: &'static str) -> bool {
        let turn = self.0.lock().unwrap_or_else(PoisonError::into_inner).get(resource).cloned();
        turn.is_some_and(|t| t.try_lock().is_err())
    }
}

/// The stored collection and when it was last known to be Xyte's.
async fn stored(ctx: &Ctx, resource: &'static str) -> Result<(Arc<CachedList>, i64), Error> {
    let store = &ctx.app.store;
    let list = store.cache_list(resource).await?;
    // Rows of single entries fetched on their own are not the collection; without a stored snapshot, ask Xyte.
    let newest_row = if list.complete { list.newest_fetched_at } else { 0 };
    let known = store.confirmed_at(resource).unwrap_or(0).max(newest_row);
    Ok((list, known))
}

/// A whole collection (`device`, `incident`, `ticket`, `space`…), as the poller keeps it.
pub async fn collection<F, Fut>(ctx: &Ctx, resource: &'static str, fetch: F) -> Result<Snapshot, Error>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Vec<(String, Value)>, Error>>,
{
    let store = &ctx.app.store;
    let (mut list, mut known) = stored(ctx, resource).await?;
    // A complete snapshot may be empty (no active incidents): that is an answer too, not a miss.
    let hit = list.complete && fresh(ctx, known);
    crate::metrics::cache(resource, hit);
    if hit {
        return Ok(Snapshot { items: list.bodies.clone(), fetched_at: known, stale: false });
    }
    if list.complete && known_unreachable(ctx) {
        return Ok(Snapshot { items: list.bodies.clone(), fetched_at: known, stale: true });
    }
    let fetching = ctx.app.fetches.start(resource).await;
    if fetching.waited {
        (list, known) = stored(ctx, resource).await?;
        if list.complete && fresh(ctx, known) {
            return Ok(Snapshot { items: list.bodies.clone(), fetched_at: known, stale: false });
        }
    }
    let complete = list.complete;
    match fetch().await {
        Ok(fetched) => {
            let mut keys = Keys::default();
            let items = Arc::new(fetched.iter().map(|(_, v)| Compact::of(v, &mut keys)).collect());
            let kept = store.cache_replace_set(resource, fetched, time::OffsetDateTime::now_utc()).await;
            not_kept(resource, kept.err());
            Ok(Snapshot { items, fetched_at: now_ms(), stale: false })
        }
        Err(e) if e.code.is_unreachable() && complete => {
            tracing::debug!(resource, code = %e.code, "serving stale cache");
            Ok(Snapshot { items: list.bodies.clone(), fetched_at: known, stale: true })
        }
        Err(e) => Err(e),
    }
}

/// One cached object (`device/<id>`, `ticket_full/<id>`, `model/<id>`…).
pub async fn entry<F, Fut>(ctx: &Ctx, resource: &'static str, key: &str, fetch: F) -> Result<(Value, Value), Error>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Value, Error>>,
{
    let store = &ctx.app.store;
    let mut cached = store.cache_get(resource, key).await?;
    let fresh_at = cached
        .as_ref()
        .filter(|e| e.fetched_at > 0)
        .map(|e| store.confirmed_at(resource).unwrap_or(0).max(e.fetched_at));
    if let Some(known) = fresh_at.filter(|known| fresh(ctx, *known))
        && let Some(e) = cached.take()
    {
        crate::metrics::cache(resource, true);
        return Ok((e.body, json!({"stale": false, "fetched_at": rfc3339(known)})));
    }
    crate::metrics::cache(resource, false);
    if let Some(old) = &cached
        && known_unreachable(ctx)
    {
        return Ok((old.body.clone(), json!({"stale": true, "fetched_at": rfc3339(old.fetched_at)})));
    }
    match (fetch().await, cached) {
        (Ok(v), _) => {
            let at = now_ms();
            not_kept(resource, store.cache_put(resource, key, v.clone(), at).await.err());
            Ok((v, json!({"stale": false, "fetched_at": rfc3339(at)})))
        }
        (Err(e), Some(old)) if e.code.is_unreachable() => {
            Ok((old.body, json!({"stale": true, "fetched_at": rfc3339(old.fetched_at)})))
        }
        (Err(e), _) => Err(e),
    }
}

/// A fresh answer from Xyte is still the answer when it cannot be cached (a full disk): the caller asked to read,
/// and failing the read would turn a storage problem into an outage of every read past the cache TTL.
fn not_kept(resource: &str, error: Option<crate::store::StoreError>) {
    match error {
        // The store logs a full disk once per episode; one line per read would flood the journal.
        Some(e) if e.is_disk_full() => tracing::debug!(resource, error = %e, "fresh answer not cached"),
        Some(e) => tracing::warn!(resource, error = %e, "fresh answer not cached"),
        None => {}
    }
}

/// After a write through the daemon: the next read of this entry goes to Xyte.
pub async fn invalidate(ctx: &Ctx, resource: &'static str, key: Option<&str>) {
    let _ = ctx.app.store.cache_invalidate(resource, key).await;
    if key.is_none() {
        ctx.app.store.mark_confirmed(resource, 0);
    }
}

pub fn keyed<T: serde::Serialize>(items: &[T], id: impl Fn(&T) -> String) -> Vec<(String, Value)> {
    items.iter().map(|i| (id(i), serde_json::to_value(i).unwrap_or(Value::Null))).collect()
}
