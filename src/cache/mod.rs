//! The cache layer: cache-first reads of the organization. A read answers from SQLite while fresh
//! (`XYTE_CACHE_TTL`, or confirmed by the poller); past that, it asks Xyte and stores the answer. A read that has
//! something cached waits for Xyte at most [`REVALIDATE_WAIT`] (all the reads of one operation together; not at all
//! while Xyte is known unreachable or struggling): if Xyte fails, is rate-limited or is slow, it serves what is cached
//! marked `stale` with its `fetched_at`, and the refresh goes on in the background and stores what it gets
//! (stale-while-revalidate and stale-if-error, as in HTTP caches, RFC 5861). Only a read with nothing cached waits
//! for Xyte's answer (within the client's request budget), and fails when there is none.
//!
//! Below the operations and the poller, above the store (which only persists the rows) and the Xyte client: the
//! freshness rules, the coalescing of fetches from Xyte (`Fetches`, `Refreshes`), what is kept in memory beside the
//! rows (`Kept`) and the accessors of what the organization has (`xyte.rs`).

mod compact;
mod memo;
mod xyte;

use std::collections::HashMap;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde_json::{Value, json};
use tokio::sync::{OwnedMutexGuard, watch};

pub use compact::{Compact, Keys};
pub use memo::{Body, Row};
use memo::{CachedList, Memo};
pub use xyte::{DeviceStatus, Ordered, model_id};

use crate::error::{Error, ErrorCode};
use crate::store::cache::{self, CacheDiff};
use crate::store::{Durability, Store, StoreError, now_ms};
use crate::xyte::XyteClient;

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
    /// The object `out` with `stale` and `fetched_at`, as every read result carries them.
    pub fn stamp(&self, mut out: Value) -> Value {
        for (key, value) in self.freshness() {
            out[key] = value;
        }
        out
    }

    /// The fields [`Cached::stamp`] sets, in key order.
    pub fn freshness(&self) -> [(&'static str, Value); 2] {
        [("fetched_at", json!(rfc3339(self.fetched_at))), ("stale", json!(self.stale))]
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

    /// [`SyncState::reachable`] alone: reads ask on every call, and need no copy of the rest.
    pub fn reachable(&self) -> Option<bool> {
        self.state.lock().map(|s| s.reachable).unwrap_or_default()
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
    /// Read by every cached read on both workers, written by the cache's writes: readers do not wait for each other.
    kept: RwLock<Kept>,
    /// The device collection in name order, and `list_devices` pages, for `list_devices`.
    from_devices: xyte::FromDevices,
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
        self.sync.reachable() == Some(false)
    }

    /// Whether a whole-collection fetch of `resource` is running now.
    pub fn fetching(&self, resource: &'static str) -> bool {
        let turn = self.state.fetches.0.lock().unwrap_or_else(PoisonError::into_inner).get(resource).cloned();
        turn.is_some_and(|t| t.try_lock().is_err())
    }

    /// The poller's fetch of a whole collection, stored whole, as the only fetch of it in flight: a read that misses
    /// meanwhile waits and answers from what this stored.
    pub async fn sync_set<T: serde::Serialize>(
        &self,
        resource: &'static str,
        fetch: impl Future<Output = Result<Vec<T>, Error>>,
        key: impl Fn(&T) -> String,
        at: time::OffsetDateTime,
    ) -> Result<(Vec<T>, CacheDiff), Error> {
        let (_turn, _) = self.state.fetches.start(resource).await;
        let items = fetch.await?;
        let diff = self.replace_set(resource, xyte::keyed(&items, key), at, None).await?;
        Ok((items, diff))
    }

    /// The stored collection, if a complete snapshot of it is (rows of single entries fetched on their own are not
    /// the collection). A complete snapshot may be empty (no active incidents): that is an answer too, not a miss.
    async fn stored(&self, resource: &'static str) -> Result<Option<Cached<Items>>, Error> {
        let list = self.list(resource).await?;
        let known = self.confirmed_at(resource).unwrap_or(0).max(list.newest_fetched_at);
        Ok(list.complete.then(|| Cached { value: list.bodies.clone(), fetched_at: known, stale: !self.fresh(known) }))
    }

    /// The stored collection as it is, never asking Xyte: for background watchers (alerts) that must add no upstream
    /// load. `None` until a complete snapshot is stored.
    pub async fn stored_collection(&self, resource: &'static str) -> Result<Option<Items>, Error> {
        Ok(self.stored(resource).await?.map(|c| c.value))
    }

    /// A whole collection (`device`, `incident`, `ticket`, `space`…), as the poller keeps it. `fetch` is what to ask
    /// Xyte for when the cache cannot answer (a plain function: the code of a read is compiled once, not once per
    /// caller).
    async fn collection(
        &self,
        resource: &'static str,
        fetch: fn(XyteClient) -> Refresh<Keyed>,
    ) -> Result<Cached<Items>, Error> {
        let cached = self.stored(resource).await?;
        let start = || Box::pin(self.clone().refresh_collection(resource, fetch(self.client.clone()))) as Refresh<_>;
        self.answer(resource, cached, &self.state.refreshes.collections, resource, start).await
    }

    /// Fetches a collection and stores it, as the only fetch of it in flight (the poller's included).
    async fn refresh_collection(self, resource: &'static str, fetch: Refresh<Keyed>) -> Result<Cached<Items>, Error> {
        let (_turn, waited) = self.state.fetches.start(resource).await;
        if waited && let Some(stored) = self.stored(resource).await?.filter(|s| !s.stale) {
            return Ok(stored);
        }
        let since = self.state.invalidations(resource);
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
    ) -> Result<Cached<Body>, Error> {
        let cached = self.get(resource, key).await?.map(|e| {
            // An invalidated row (`fetched_at` 0) stays stale whatever the poll confirmed since.
            let known = self.confirmed_at(resource).unwrap_or(0).max(e.fetched_at);
            let fresh = e.fetched_at > 0 && self.fresh(known);
            Cached { value: e.body, stale: !fresh, fetched_at: if fresh { known } else { e.fetched_at } }
        });
        let fetch = || fetch(self.client.clone(), key.to_string());
        let start = || Box::pin(self.clone().refresh_entry(resource, key.to_string(), fetch())) as Refresh<_>;
        self.answer(resource, cached, &self.state.refreshes.entries, (resource, key.to_string()), start).await
    }

    /// What a read answers from what the cache has: a fresh answer at once, and a stale one at once too while Xyte
    /// is known to be unreachable; else the refresh of `key` (the one running, or the one `start` begins), waited for
    /// as [`Refreshes::revalidated`] says.
    async fn answer<K: Hash + Eq + Clone + Send + 'static, T: Clone + Send + Sync + 'static>(
        &self,
        resource: &'static str,
        cached: Option<Cached<T>>,
        in_flight: &InFlight<K, Cached<T>>,
        key: K,
        start: impl FnOnce() -> Refresh<Cached<T>>,
    ) -> Result<Cached<T>, Error> {
        crate::metrics::cache(resource, cached.as_ref().is_some_and(|c| !c.stale));
        let stale = match cached {
            Some(c) if !c.stale || self.known_unreachable() => return Ok(c),
            stale => stale,
        };
        let refreshes = &self.state.refreshes;
        let landing = in_flight.join(key, start, &refreshes.struggling);
        refreshes.revalidated(resource, landing, stale).await
    }

    /// Fetches one entry and stores it.
    async fn refresh_entry(
        self,
        resource: &'static str,
        key: String,
        fetch: Refresh<Value>,
    ) -> Result<Cached<Body>, Error> {
        let since = self.state.invalidations(resource);
        let v = fetch.await?;
        let at = now_ms();
        let body = Body::of(&v);
        let kept = self.put(resource, &key, v, at, Some(since)).await;
        Ok(Cached { value: body, stale: stale_unless_kept(resource, kept.err()), fetched_at: at })
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

type JsonObject = serde_json::Map<String, Value>;

/// What the cache keeps in memory beside the store's rows (the truth): when Xyte last confirmed each whole snapshot,
/// the latest values of volatile fields, the parsed copies ([`memo`]) and how often each resource was invalidated.
#[derive(Default)]
struct Kept {
    /// When a whole resource snapshot was last confirmed by Xyte: an unchanged poll writes nothing. After a restart
    /// the rows' own `fetched_at` is what is known, which is the conservative answer.
    confirmed: HashMap<&'static str, i64>,
    /// The latest values of volatile cache fields ([`cache::volatile_fields`]) by resource and key: in memory only,
    /// so a poll where only they moved writes nothing.
    volatile: HashMap<&'static str, HashMap<String, JsonObject>>,
    /// Rows each cached collection had when last listed: a small one is read on the calling thread (see
    /// [`Cache::list`]).
    listed: HashMap<&'static str, usize>,
    /// Parsed copies of cache rows already read, dropped by every write of their resource.
    memo: Memo,
    /// How often each resource was invalidated. A fetch from Xyte notes it before it asks and hands it to
    /// `Cache::put` or `Cache::replace_set`: an answer that left Xyte before a write through the daemon must not
    /// be stored as fresh after that write invalidated the cache.
    invalidated: HashMap<&'static str, u64>,
}

impl State {
    /// For a change.
    fn kept(&self) -> RwLockWriteGuard<'_, Kept> {
        self.kept.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// For a look: a cached read takes this several times (it was a `Mutex`, and the two workers' reads of the
    /// memo put each other to sleep on it: a tenth of a cached `get_device_status` on eight connections).
    fn seen(&self) -> RwLockReadGuard<'_, Kept> {
        self.kept.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn invalidations(&self, resource: &'static str) -> u64 {
        self.seen().invalidated.get(resource).copied().unwrap_or(0)
    }

    /// Checked inside the write transaction too, so that an invalidation queued before it wins.
    fn not_invalidated(&self, resource: &'static str, since: Option<u64>) -> Result<(), StoreError> {
        match since {
            Some(since) if self.invalidations(resource) != since => Err(StoreError::Invalidated),
            _ => Ok(()),
        }
    }

    /// Lays the latest volatile fields of a row over its body (before it is kept in any form).
    fn lay_volatile(&self, resource: &'static str, key: &str, body: &mut Value) {
        let kept = self.seen();
        if let (Some(fields), Some(body)) = (kept.volatile.get(resource).and_then(|r| r.get(key)), body.as_object_mut())
        {
            body.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
}

impl Cache {
    fn confirmed_at(&self, resource: &'static str) -> Option<i64> {
        self.state.seen().confirmed.get(resource).copied()
    }

    /// Stores a snapshot of `resource` (see [`cache::replace_set`]) and marks it confirmed. With `since` (the
    /// resource's invalidation count when the fetch began), fails with [`StoreError::Invalidated`] instead
    /// when a write invalidated the resource meanwhile.
    async fn replace_set(
        &self,
        resource: &'static str,
        entries: Keyed,
        at: time::OffsetDateTime,
        since: Option<u64>,
    ) -> Result<CacheDiff, StoreError> {
        let at_ms = (at.unix_timestamp_nanos() / 1_000_000) as i64;
        let latest: HashMap<String, _> =
            entries.iter().filter_map(|(k, body)| Some((k.clone(), volatile_part(resource, body)?))).collect();
        let state = self.state.clone();
        let write = move |c: &Connection| {
            state.not_invalidated(resource, since)?;
            cache::replace_set(c, resource, &entries, at_ms)
        };
        let diff = self.store.write(Durability::Normal, write).await;
        let mut kept = self.state.kept();
        if diff.is_ok() {
            kept.volatile.insert(resource, latest);
        }
        kept.memo.forget(resource);
        drop(kept);
        let diff = diff?;
        // An invalidation between the commit and here marked the rows stale: the snapshot must not be confirmed.
        self.state.not_invalidated(resource, since)?;
        self.state.kept().confirmed.insert(resource, at_ms);
        Ok(diff)
    }

    /// Stores one entry fetched on its own (see [`cache::put`]); `since` as for [`Cache::replace_set`].
    async fn put(
        &self,
        resource: &'static str,
        key: &str,
        body: Value,
        at_ms: i64,
        since: Option<u64>,
    ) -> Result<(), StoreError> {
        let latest = volatile_part(resource, &body);
        let (k, state) = (key.to_string(), self.state.clone());
        let write = move |c: &Connection| {
            state.not_invalidated(resource, since)?;
            cache::put(c, resource, &k, &body, at_ms)
        };
        let written = self.store.write(Durability::Normal, write).await;
        let mut kept = self.state.kept();
        if let (Ok(_), Some(latest)) = (&written, latest) {
            kept.volatile.entry(resource).or_default().insert(key.to_string(), latest);
        }
        kept.memo.forget(resource);
        written.map(|_| ())
    }

    /// After a write through the daemon: `resource`'s entries (or one of them) are marked stale, their bodies kept
    /// for stale answers (see [`cache::invalidate`]), and the next read of them goes to Xyte.
    pub async fn invalidate(&self, resource: &'static str, key: Option<&str>) {
        // Counted before the write is queued: a fetch's store that the writer runs after this count checks it and
        // stores nothing, and one that ran before is overwritten by this invalidation.
        *self.state.kept().invalidated.entry(resource).or_default() += 1;
        let key = key.map(String::from);
        let whole = key.is_none();
        let _ = self.store.write(Durability::Normal, move |c| cache::invalidate(c, resource, key.as_deref())).await;
        let mut kept = self.state.kept();
        kept.memo.forget(resource);
        if whole {
            kept.confirmed.insert(resource, 0);
        }
    }

    /// One cached entry, with its volatile fields as last seen.
    pub async fn get(&self, resource: &'static str, key: &str) -> Result<Option<Row>, StoreError> {
        let generation = {
            let kept = self.state.seen();
            if let Some(e) = kept.memo.entry(resource, key) {
                return Ok(Some(e));
            }
            kept.memo.generation(resource)
        };
        let Some(mut entry) = self.store.read_blocking(|c| cache::get(c, resource, key))? else { return Ok(None) };
        self.state.lay_volatile(resource, &entry.key, &mut entry.body);
        let row = Row::from(entry);
        self.state.kept().memo.keep_entry(resource, generation, &row);
        Ok(Some(row))
    }

    /// Every cached entry of `resource`, with their volatile fields as last seen, and whether they are a complete
    /// snapshot ([`cache::has_set`]).
    async fn list(&self, resource: &'static str) -> Result<Arc<CachedList>, StoreError> {
        let (generation, listed) = {
            let kept = self.state.seen();
            if let Some(list) = kept.memo.list(resource) {
                return Ok(list);
            }
            (kept.memo.generation(resource), kept.listed.get(resource).copied())
        };
        let state = self.state.clone();
        let list = move |c: &Connection| {
            let mut keys = Keys::default();
            let rows = cache::list(c, resource, |key, mut body| {
                state.lay_volatile(resource, key, &mut body);
                Compact::of(&body, &mut keys)
            })?;
            Ok((rows, cache::has_set(c, resource)?))
        };
        // A collection of a few rows (active incidents, read by every get_device_status) costs microseconds: read it
        // here rather than through the blocking pool (see `Store::read_blocking`). A large one (the device set) stays
        // off the async workers.
        let small = listed.is_some_and(|n| n <= 64);
        let (rows, complete) = if small { self.store.read_blocking(list)? } else { self.store.read(list).await? };
        let list = Arc::new(CachedList::new(rows, complete));
        let mut kept = self.state.kept();
        kept.listed.insert(resource, list.keys.len());
        kept.memo.keep_list(resource, generation, &list);
        Ok(list)
    }
}

/// The volatile fields of one body, if it has any.
fn volatile_part(resource: &str, body: &Value) -> Option<JsonObject> {
    let fields = cache::volatile_fields(resource);
    let part: JsonObject = fields.iter().filter_map(|f| Some((f.to_string(), body.get(*f)?.clone()))).collect();
    (!part.is_empty()).then_some(part)
}

/// How long an operation waits for Xyte in reads that have an answer cached past its TTL, before such a read serves
/// the cached answer marked stale while the refresh continues without it. A healthy Xyte answers well within this,
/// so on a good link reads past the TTL stay fresh; a struggling one held such reads for its whole retry budget (9
/// to 25 s seen under a storm of 503s and 429s). Under a second, so that such a read answers within about a second.
pub const REVALIDATE_WAIT: Duration = Duration::from_millis(750);

tokio::task_local! {
    /// When the operation running on this task stops waiting for Xyte in reads that have a cached answer.
    static REVALIDATE_BY: Instant;
}

/// Runs one operation with its reads sharing one [`REVALIDATE_WAIT`]: `get_device_status` reads a device, its
/// commands and the active incidents, and must not wait three times as long when all three are past their TTL.
/// An operation called from within another one shares the outer one's wait.
pub async fn within_revalidate_wait<T>(operation: impl Future<Output = T>) -> T {
    if REVALIDATE_BY.try_with(|_| ()).is_ok() {
        return operation.await;
    }
    REVALIDATE_BY.scope(Instant::now() + REVALIDATE_WAIT, operation).await
}

/// Whole-collection fetches from Xyte in flight, by resource: the poller's and those of reads that missed. A read
/// that misses while one runs waits for it and answers from what it stored instead of asking Xyte for the same
/// pages again. Without this, a client reading during the first sync listed the whole fleet a second time (100
/// pages for 10,000 devices), sharing the rate limit with the sync it duplicated.
#[derive(Default)]
struct Fetches(pub Mutex<HashMap<&'static str, Arc<tokio::sync::Mutex<()>>>>);

impl Fetches {
    /// The turn to fetch `resource` and store it, held while doing so, and whether another fetch of it ran first
    /// (what that one stored may be the answer).
    pub async fn start(&self, resource: &'static str) -> (OwnedMutexGuard<()>, bool) {
        let turn = self.0.lock().unwrap_or_else(PoisonError::into_inner).entry(resource).or_default().clone();
        match turn.clone().try_lock_owned() {
            Ok(t) => (t, false),
            Err(_) => (turn.lock_owned().await, true),
        }
    }
}

/// Refreshes from Xyte that reads started and that run now: at most one per collection and one per entry, shared
/// by every read that needs it, and running to the end (storing what they fetch) when the reads stop waiting.
/// Without this, each read past the TTL of a slow Xyte would add its own request for the same entry.
#[derive(Default)]
struct Refreshes {
    pub collections: InFlight<&'static str, Cached<Items>>,
    pub entries: InFlight<(&'static str, String), Cached<Body>>,
    /// The last refresh that landed could not reach Xyte or took longer than [`REVALIDATE_WAIT`]: under a storm
    /// of errors, 429s or latency, reads with a cached answer then serve it without waiting at all. Any refresh
    /// that lands in time ends this (the refreshes go on while reads do not wait for them).
    pub struggling: Arc<AtomicBool>,
}

impl Refreshes {
    /// What a read that missed answers: the refresh's result, and the `stale` answer when the refresh could not reach
    /// Xyte in time. With a stale answer to fall back on, a read waits at most what is left of its operation's
    /// [`REVALIDATE_WAIT`] (reads outside any operation: all of it), and nothing once the refresh itself has waited
    /// that long, or while Xyte is struggling: it then answers from the cache at once rather than spend its wait on a
    /// refresh that will most likely not make it. With none, it waits as long as the refresh takes.
    pub async fn revalidated<T: Clone>(
        &self,
        resource: &str,
        landing: Landing<T>,
        stale: Option<T>,
    ) -> Result<T, Error> {
        let by = REVALIDATE_BY.try_with(|by| *by).unwrap_or_else(|_| Instant::now() + REVALIDATE_WAIT);
        let wait = match self.struggling.load(Ordering::Relaxed) {
            true => Duration::ZERO,
            false => by.min(landing.began + REVALIDATE_WAIT).saturating_duration_since(Instant::now()),
        };
        let wait = stale.as_ref().map(|_| wait);
        match (landed(landing, wait).await, stale) {
            (Ok(fresh), _) => Ok(fresh),
            (Err(e), Some(stale)) if e.code.is_unreachable() => {
                tracing::debug!(resource, code = %e.code, "serving stale cache");
                Ok(stale)
            }
            (Err(e), _) => Err(e),
        }
    }
}

/// What a refresh lands, once it has, and when it began.
#[derive(Clone)]
struct Landing<T> {
    began: Instant,
    result: watch::Receiver<Option<Result<T, Error>>>,
}
type Running<K, T> = Arc<Mutex<HashMap<K, Landing<T>>>>;

struct InFlight<K, T>(Running<K, T>);

impl<K, T> Default for InFlight<K, T> {
    fn default() -> Self {
        InFlight(Arc::default())
    }
}

/// A refresh, boxed: the task that runs it is then compiled once per kind of result, not once per read site (each
/// of the twenty-odd read sites had its own copy of the task's code: +150 KiB of binary).
type Refresh<T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send>>;

impl<K: Hash + Eq + Clone + Send + 'static, T: Clone + Send + Sync + 'static> InFlight<K, T> {
    /// The refresh of `key` that runs now, else the one `start` makes, spawned as a task of its own.
    pub fn join(&self, key: K, start: impl FnOnce() -> Refresh<T>, struggling: &Arc<AtomicBool>) -> Landing<T> {
        let mut running = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(landing) = running.get(&key) {
            return landing.clone();
        }
        let (tell, result) = watch::channel(None);
        let landing = Landing { began: Instant::now(), result };
        running.insert(key.clone(), landing.clone());
        let done = Done(self.0.clone(), Some(key));
        tokio::spawn(run(start(), done, tell, landing.began, struggling.clone()));
        landing
    }
}

/// Runs one refresh to the end and tells its readers what landed.
async fn run<K: Hash + Eq, T>(
    refresh: Refresh<T>,
    done: Done<K, T>,
    tell: watch::Sender<Option<Result<T, Error>>>,
    began: Instant,
    struggling: Arc<AtomicBool>,
) {
    let landed = refresh.await;
    let failed = matches!(&landed, Err(e) if e.code.is_unreachable());
    struggling.store(failed || began.elapsed() > REVALIDATE_WAIT, Ordering::Relaxed);
    // Forgotten before the readers are told: a read that comes later finds what was stored (or starts the next
    // refresh), never this finished one.
    drop(done);
    tell.send_replace(Some(landed));
}

/// Forgets a refresh when its task ends, however it ends (a panic, the runtime shutting down): a refresh left in
/// the map would be joined forever and never land.
struct Done<K: Hash + Eq, T>(Running<K, T>, Option<K>);

impl<K: Hash + Eq, T> Drop for Done<K, T> {
    fn drop(&mut self) {
        if let Some(key) = self.1.take() {
            self.0.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
        }
    }
}

/// The refresh's result, waiting at most `wait` (`None`: as long as it takes; the client's request budget bounds it).
async fn landed<T: Clone>(landing: Landing<T>, wait: Option<Duration>) -> Result<T, Error> {
    let mut result = landing.result;
    let landed = async move {
        match result.wait_for(Option::is_some).await {
            Ok(result) => result.clone().unwrap_or_else(|| Err(Error::internal("a refresh landed empty"))),
            Err(_) => Err(Error::internal("the refresh from Xyte ended without an answer")),
        }
    };
    let Some(wait) = wait else { return landed.await };
    tokio::time::timeout(wait, landed).await.unwrap_or_else(|_| {
        Err(Error::new(ErrorCode::Timeout, format!("Xyte did not answer within {} ms", wait.as_millis())))
    })
}

#[cfg(test)]
mod tests;
