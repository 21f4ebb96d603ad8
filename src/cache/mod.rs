//! The cache layer: cache-first reads of the organization. A read answers from SQLite while fresh
//! (`XYTE_CACHE_TTL`, or confirmed by the poller); past that, it asks Xyte and stores the answer. A read that has
//! something cached waits for Xyte at most [`REVALIDATE_WAIT`] (all the reads of one operation together; not at all
//! while Xyte is known unreachable or struggling): if Xyte fails, is rate-limited or is slow, it serves what is cached
//! marked `stale` with its `fetched_at`, and the refresh goes on in the background and stores what it gets
//! (stale-while-revalidate and stale-if-error, as in HTTP caches, RFC 5861). Only a read with nothing cached waits
//! for Xyte's answer (within the client's request budget), and fails when there is none.
//!
//! Below the operations and the poller, above the store (which only persists the rows) and the Xyte client: the
//! freshness rules, the coalescing of fetches ([`refresh`]), the rows' in-memory companions ([`rows`]: confirmed
//! snapshots, volatile fields, parsed copies) and the accessors of what the organization has ([`xyte`]).

mod compact;
mod memo;
mod refresh;
mod rows;
mod xyte;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

pub use compact::{Compact, Keys};
pub use memo::CachedList;
pub use refresh::{REVALIDATE_WAIT, within_revalidate_wait};
pub use xyte::{DeviceStatus, Ordered, model_id};

use crate::error::Error;
use crate::store::cache::CacheDiff;
use crate::store::{Store, StoreError, now_ms};
use crate::xyte::XyteClient;
use refresh::{Fetches, Refresh, Refreshes};

/// A collection as Xyte sends it, each item with its key.
type Keyed = Vec<(String, Value)>;

/// The items of a cached collection, shared with the parsed copy they were read from (no copy per read).
pub type Items = Arc<Vec<Compact>>;

/// What a read answers: the value, whether it is stale (not known to be Xyte's answer now), and when it was last
/// known to be Xyte's (ms since the epoch; 0 when unknown).
#[derive(Debug, Clone)]
pub struct Cached<T> {
    pub value: T,
    pub stale: bool,
    pub fetched_at: i64,
}

impl<T> Cached<T> {
    /// Adds `stale` and `fetched_at`, as every read result carries them, to the object `out`.
    pub fn stamp(&self, out: &mut Value) {
        out["stale"] = json!(self.stale);
        out["fetched_at"] = json!(rfc3339(self.fetched_at));
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

/// What the last sync cycles found, for `edge://status`, `xyte-edge status` and health checks; reads consult
/// whether the last one reached Xyte.
#[derive(Debug, Default)]
pub struct SyncStatus {
    state: Mutex<SyncState>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SyncState {
    /// Whether the last cycle reached Xyte (`None` before the first cycle ended).
    pub reachable: Option<bool>,
    /// ms since the epoch of the last complete cycle.
    pub last_ok_ms: i64,
    pub last_error: Option<String>,
    pub devices: usize,
    pub online: usize,
}

impl SyncStatus {
    pub fn get(&self) -> SyncState {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn update(&self, f: impl FnOnce(&mut SyncState)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
        }
    }
}

/// The cache of one organization: cheap to clone (the refreshes it starts hold a clone).
#[derive(Clone)]
pub struct Cache {
    /// `XYTE_CACHE_TTL`: how long a row is fresh after Xyte sent it.
    pub ttl: Duration,
    store: Store,
    client: XyteClient,
    sync: Arc<SyncStatus>,
    state: Arc<State>,
}

#[derive(Default)]
struct State {
    /// Whole-collection fetches from Xyte in flight (the poller's and reads'), one per collection at a time.
    fetches: Fetches,
    /// Refreshes from Xyte that reads started, one per collection or entry at a time.
    refreshes: Refreshes,
    kept: rows::Kept,
    /// The device collection in name order, for `list_devices`.
    device_order: xyte::NameOrder,
}

impl Cache {
    /// `sync` is the poller's record (the one `App` shows).
    pub fn new(store: Store, client: XyteClient, ttl: Duration, sync: Arc<SyncStatus>) -> Cache {
        Cache { ttl, store, client, sync, state: Arc::default() }
    }

    fn fresh(&self, fetched_at: i64) -> bool {
        now_ms() - fetched_at < self.ttl.as_millis() as i64
    }

    /// The poller's last cycle could not reach Xyte: a read that has a cached answer serves it (marked stale) at
    /// once instead of spending its time budget on retries against a link that is down. The next successful poll
    /// ends this.
    pub fn known_unreachable(&self) -> bool {
        self.sync.get().reachable == Some(false)
    }

    /// Whether a whole-collection fetch of `resource` is running now.
    pub fn fetching(&self, resource: &'static str) -> bool {
        self.state.fetches.running(resource)
    }

    /// The poller's fetch of a whole collection, stored whole, as the only fetch of it in flight: a read that misses
    /// meanwhile waits and answers from what this stored.
    pub async fn sync_set<T>(
        &self,
        resource: &'static str,
        fetch: impl Future<Output = Result<Vec<T>, Error>>,
        entry: impl Fn(&T) -> (String, Value),
        at: time::OffsetDateTime,
    ) -> Result<(Vec<T>, CacheDiff), Error> {
        let _fetching = self.state.fetches.start(resource).await;
        let items = fetch.await?;
        let diff = self.replace_set(resource, items.iter().map(entry).collect(), at, None).await?;
        Ok((items, diff))
    }

    /// The stored collection and when it was last known to be Xyte's.
    async fn stored(&self, resource: &'static str) -> Result<(Arc<CachedList>, i64), Error> {
        let list = self.list(resource).await?;
        // Rows of single entries fetched on their own are not the collection; without a stored snapshot, ask Xyte.
        let newest_row = if list.complete { list.newest_fetched_at } else { 0 };
        let known = self.confirmed_at(resource).unwrap_or(0).max(newest_row);
        Ok((list, known))
    }

    /// A whole collection (`device`, `incident`, `ticket`, `space`…), as the poller keeps it. `fetch` is what to ask
    /// Xyte for when the cache cannot answer (a plain function: the code of a read is compiled once, not once per
    /// caller).
    async fn collection(
        &self,
        resource: &'static str,
        fetch: fn(XyteClient) -> Refresh<Keyed>,
    ) -> Result<Cached<Items>, Error> {
        let (list, known) = self.stored(resource).await?;
        // A complete snapshot may be empty (no active incidents): that is an answer too, not a miss.
        let hit = list.complete && self.fresh(known);
        crate::metrics::cache(resource, hit);
        let snapshot = |stale| Cached { value: list.bodies.clone(), fetched_at: known, stale };
        if hit {
            return Ok(snapshot(false));
        }
        let stale = list.complete.then(|| snapshot(true));
        if let Some(stale) = &stale
            && self.known_unreachable()
        {
            return Ok(stale.clone());
        }
        let start = || Box::pin(self.clone().refresh_collection(resource, fetch(self.client.clone()))) as Refresh<_>;
        let refreshes = &self.state.refreshes;
        let landing = refreshes.collections.join(resource, start, &refreshes.struggling);
        refreshes.revalidated(resource, landing, stale).await
    }

    /// Fetches a collection and stores it, as the only fetch of it in flight (the poller's included).
    async fn refresh_collection(self, resource: &'static str, fetch: Refresh<Keyed>) -> Result<Cached<Items>, Error> {
        let fetching = self.state.fetches.start(resource).await;
        if fetching.waited {
            let (list, known) = self.stored(resource).await?;
            if list.complete && self.fresh(known) {
                return Ok(Cached { value: list.bodies.clone(), fetched_at: known, stale: false });
            }
        }
        let since = self.invalidations(resource);
        let fetched = fetch.await?;
        let mut keys = Keys::default();
        let items = Arc::new(fetched.iter().map(|(_, v)| Compact::of(v, &mut keys)).collect());
        let at = time::OffsetDateTime::now_utc();
        let kept = self.replace_set(resource, fetched, at, Some(since)).await;
        Ok(Cached { value: items, fetched_at: now_ms(), stale: stale_unless_kept(resource, kept.err()) })
    }

    /// One cached object (`device/<id>`, `ticket_full/<id>`, `model/<id>`…); `fetch` as for `collection`.
    async fn entry(
        &self,
        resource: &'static str,
        key: &str,
        fetch: fn(XyteClient, String) -> Refresh<Value>,
    ) -> Result<Cached<Value>, Error> {
        let mut cached = self.get(resource, key).await?;
        let fresh_at = cached
            .as_ref()
            .filter(|e| e.fetched_at > 0)
            .map(|e| self.confirmed_at(resource).unwrap_or(0).max(e.fetched_at));
        if let Some(known) = fresh_at.filter(|known| self.fresh(*known))
            && let Some(e) = cached.take()
        {
            crate::metrics::cache(resource, true);
            return Ok(Cached { value: e.body, stale: false, fetched_at: known });
        }
        crate::metrics::cache(resource, false);
        let stale = cached.map(|old| Cached { value: old.body, stale: true, fetched_at: old.fetched_at });
        if let Some(stale) = &stale
            && self.known_unreachable()
        {
            return Ok(stale.clone());
        }
        let fetch = || fetch(self.client.clone(), key.to_string());
        let start = || Box::pin(self.clone().refresh_entry(resource, key.to_string(), fetch())) as Refresh<_>;
        let refreshes = &self.state.refreshes;
        let landing = refreshes.entries.join((resource, key.to_string()), start, &refreshes.struggling);
        refreshes.revalidated(resource, landing, stale).await
    }

    /// Fetches one entry and stores it.
    async fn refresh_entry(
        self,
        resource: &'static str,
        key: String,
        fetch: Refresh<Value>,
    ) -> Result<Cached<Value>, Error> {
        let since = self.invalidations(resource);
        let v = fetch.await?;
        let at = now_ms();
        let kept = self.put(resource, &key, v.clone(), at, Some(since)).await;
        Ok(Cached { value: v, stale: stale_unless_kept(resource, kept.err()), fetched_at: at })
    }
}

/// Whether an answer fetched from Xyte is stale because it could not be stored as fresh: a write through the daemon
/// invalidated the resource while it was fetched, so it may not show that write. A fresh answer is still the answer
/// when it cannot be cached (a full disk): the caller asked to read, and failing the read would turn a storage
/// problem into an outage of every read past the cache TTL.
fn stale_unless_kept(resource: &str, error: Option<StoreError>) -> bool {
    match error {
        Some(StoreError::Invalidated) => return true,
        // The store logs a full disk once per episode; one line per read would flood the journal.
        Some(e) if e.is_disk_full() => tracing::debug!(resource, error = %e, "fresh answer not cached"),
        Some(e) => tracing::warn!(resource, error = %e, "fresh answer not cached"),
        None => {}
    }
    false
}

#[cfg(test)]
mod tests;
