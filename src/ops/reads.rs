//! Cache-first reads: answer from SQLite while fresh (`XYTE_CACHE_TTL`, or confirmed by the poller);
//! past that, ask Xyte and store the answer. A read that has something cached waits for Xyte at most
//! [`REVALIDATE_WAIT`] (all the reads of one operation together; not at all while Xyte is known unreachable or
//! struggling): if Xyte fails, is rate-limited or is slow, it serves what is cached marked `stale` with its
//! `fetched_at`, and the refresh goes on in the background and stores what it gets (stale-while-revalidate and
//! stale-if-error, as in HTTP caches, RFC 5861). Only a read with nothing cached waits for Xyte's answer (within the
//! client's request budget), and fails when there is none.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{OwnedMutexGuard, watch};

use super::{App, Ctx};
use crate::error::{Error, ErrorCode};
use crate::store::{CachedList, Compact, Keys, StoreError, now_ms};

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
pub(super) async fn within_revalidate_wait<T>(operation: impl Future<Output = T>) -> T {
    if REVALIDATE_BY.try_with(|_| ()).is_ok() {
        return operation.await;
    }
    REVALIDATE_BY.scope(Instant::now() + REVALIDATE_WAIT, operation).await
}

/// How much longer a read with a cached answer may wait for the refresh that `began` then: what is left of its
/// operation's [`REVALIDATE_WAIT`] (reads outside any operation: all of it), and nothing once the refresh itself
/// has waited that long, or while Xyte is struggling ([`Refreshes::struggling`]): a read then answers from the
/// cache at once rather than spend its wait on a refresh that will most likely not make it.
fn revalidate_wait(app: &App, began: Instant) -> Duration {
    if app.refreshes.struggling.load(Ordering::Relaxed) {
        return Duration::ZERO;
    }
    let by = REVALIDATE_BY.try_with(|by| *by).unwrap_or_else(|_| Instant::now() + REVALIDATE_WAIT);
    by.min(began + REVALIDATE_WAIT).saturating_duration_since(Instant::now())
}

/// Items of a cached collection with their provenance.
#[derive(Clone)]
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

fn fresh(app: &App, fetched_at: i64) -> bool {
    now_ms() - fetched_at < app.cache_ttl.as_millis() as i64
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

/// Refreshes from Xyte that reads started and that run now: at most one per collection and one per entry, shared
/// by every read that needs it, and running to the end (storing what they fetch) when the reads stop waiting.
/// Without this, each read past the TTL of a slow Xyte would add its own request for the same entry.
#[derive(Default)]
pub struct Refreshes {
    collections: InFlight<&'static str, Snapshot>,
    entries: InFlight<(&'static str, String), (Value, Value)>,
    /// The last refresh that landed could not reach Xyte or took longer than [`REVALIDATE_WAIT`]: under a storm
    /// of errors, 429s or latency, reads with a cached answer then serve it without waiting at all. Any refresh
    /// that lands in time ends this (the refreshes go on while reads do not wait for them).
    struggling: Arc<AtomicBool>,
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
/// of the twenty-odd callers of `entry` and `collection` had its own copy of the task's code: +150 KiB of binary).
type Refresh<T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send>>;

impl<K: Hash + Eq + Clone + Send + 'static, T: Clone + Send + Sync + 'static> InFlight<K, T> {
    /// The refresh of `key` that runs now, else the one `start` makes, spawned as a task of its own.
    fn join(&self, key: K, start: impl FnOnce() -> Refresh<T>, struggling: &Arc<AtomicBool>) -> Landing<T> {
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

/// The stored collection and when it was last known to be Xyte's.
async fn stored(app: &App, resource: &'static str) -> Result<(Arc<CachedList>, i64), Error> {
    let store = &app.store;
    let list = store.cache_list(resource).await?;
    // Rows of single entries fetched on their own are not the collection; without a stored snapshot, ask Xyte.
    let newest_row = if list.complete { list.newest_fetched_at } else { 0 };
    let known = store.confirmed_at(resource).unwrap_or(0).max(newest_row);
    Ok((list, known))
}

/// What a read asks Xyte for when the cache cannot answer; called at most once. Boxed, like [`Refresh`], so the code
/// of a read is compiled once rather than once per caller: every caller's fetch is a type of its own.
type Fetch<'a, T> = Box<dyn FnOnce() -> Refresh<T> + Send + 'a>;

/// A whole collection (`device`, `incident`, `ticket`, `space`…), as the poller keeps it.
pub async fn collection<F, Fut>(ctx: &Ctx, resource: &'static str, fetch: F) -> Result<Snapshot, Error>
where
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = Result<Vec<(String, Value)>, Error>> + Send + 'static,
{
    cached_collection(ctx, resource, Box::new(|| Box::pin(fetch()))).await
}

async fn cached_collection(
    ctx: &Ctx,
    resource: &'static str,
    fetch: Fetch<'_, Vec<(String, Value)>>,
) -> Result<Snapshot, Error> {
    let app = &ctx.app;
    let (list, known) = stored(app, resource).await?;
    // A complete snapshot may be empty (no active incidents): that is an answer too, not a miss.
    let hit = list.complete && fresh(app, known);
    crate::metrics::cache(resource, hit);
    if hit {
        return Ok(Snapshot { items: list.bodies.clone(), fetched_at: known, stale: false });
    }
    let stale = list.complete.then(|| Snapshot { items: list.bodies.clone(), fetched_at: known, stale: true });
    if let Some(stale) = &stale
        && known_unreachable(ctx)
    {
        return Ok(stale.clone());
    }
    let start = || Box::pin(refresh_collection(app.clone(), resource, fetch())) as Refresh<_>;
    let landing = app.refreshes.collections.join(resource, start, &app.refreshes.struggling);
    revalidated(app, resource, landing, stale).await
}

/// Fetches a collection and stores it, as the only fetch of it in flight (the poller's included, see [`Fetches`]).
async fn refresh_collection(
    app: Arc<App>,
    resource: &'static str,
    fetch: Refresh<Vec<(String, Value)>>,
) -> Result<Snapshot, Error> {
    let fetching = app.fetches.start(resource).await;
    if fetching.waited {
        let (list, known) = stored(&app, resource).await?;
        if list.complete && fresh(&app, known) {
            return Ok(Snapshot { items: list.bodies.clone(), fetched_at: known, stale: false });
        }
    }
    let since = app.store.invalidations(resource);
    let fetched = fetch.await?;
    let mut keys = Keys::default();
    let items = Arc::new(fetched.iter().map(|(_, v)| Compact::of(v, &mut keys)).collect());
    let at = time::OffsetDateTime::now_utc();
    let kept = app.store.cache_replace_set(resource, fetched, at, Some(since)).await;
    Ok(Snapshot { items, fetched_at: now_ms(), stale: stale_unless_kept(resource, kept.err()) })
}

/// One cached object (`device/<id>`, `ticket_full/<id>`, `model/<id>`…).
pub async fn entry<F, Fut>(ctx: &Ctx, resource: &'static str, key: &str, fetch: F) -> Result<(Value, Value), Error>
where
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = Result<Value, Error>> + Send + 'static,
{
    cached_entry(ctx, resource, key, Box::new(|| Box::pin(fetch()))).await
}

async fn cached_entry(
    ctx: &Ctx,
    resource: &'static str,
    key: &str,
    fetch: Fetch<'_, Value>,
) -> Result<(Value, Value), Error> {
    let app = &ctx.app;
    let store = &app.store;
    let mut cached = store.cache_get(resource, key).await?;
    let fresh_at = cached
        .as_ref()
        .filter(|e| e.fetched_at > 0)
        .map(|e| store.confirmed_at(resource).unwrap_or(0).max(e.fetched_at));
    if let Some(known) = fresh_at.filter(|known| fresh(app, *known))
        && let Some(e) = cached.take()
    {
        crate::metrics::cache(resource, true);
        return Ok((e.body, json!({"stale": false, "fetched_at": rfc3339(known)})));
    }
    crate::metrics::cache(resource, false);
    let stale = cached.map(|old| (old.body, json!({"stale": true, "fetched_at": rfc3339(old.fetched_at)})));
    if let Some(stale) = &stale
        && known_unreachable(ctx)
    {
        return Ok(stale.clone());
    }
    let start = || Box::pin(refresh_entry(app.clone(), resource, key.to_string(), fetch())) as Refresh<_>;
    let landing = app.refreshes.entries.join((resource, key.to_string()), start, &app.refreshes.struggling);
    revalidated(app, resource, landing, stale).await
}

/// What a read that missed answers: the refresh's result, waited for at most what is left of the operation's
/// [`REVALIDATE_WAIT`] when there is a `stale` answer to fall back on (as long as it takes when there is none), and
/// the stale answer when the refresh could not reach Xyte in that time.
async fn revalidated<T: Clone>(app: &App, resource: &str, landing: Landing<T>, stale: Option<T>) -> Result<T, Error> {
    let wait = stale.as_ref().map(|_| revalidate_wait(app, landing.began));
    match (landed(landing, wait).await, stale) {
        (Ok(fresh), _) => Ok(fresh),
        (Err(e), Some(stale)) if e.code.is_unreachable() => {
            tracing::debug!(resource, code = %e.code, "serving stale cache");
            Ok(stale)
        }
        (Err(e), _) => Err(e),
    }
}

/// Fetches one entry and stores it.
async fn refresh_entry(
    app: Arc<App>,
    resource: &'static str,
    key: String,
    fetch: Refresh<Value>,
) -> Result<(Value, Value), Error> {
    let since = app.store.invalidations(resource);
    let v = fetch.await?;
    let at = now_ms();
    let kept = app.store.cache_put(resource, &key, v.clone(), at, Some(since)).await;
    Ok((v, json!({"stale": stale_unless_kept(resource, kept.err()), "fetched_at": rfc3339(at)})))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Role, Secret, XyteCredential};
    use crate::sim::{self, Faults, SimHandle, SimOptions};
    use crate::xyte::{ClientConfig, Priority, XyteClient};

    async fn rig() -> (tempfile::TempDir, SimHandle, Ctx) {
        let dir = tempfile::tempdir().unwrap();
        let opts = SimOptions { devices: 2, churn: false, ..Default::default() };
        let sim = sim::spawn("127.0.0.1:0".parse().unwrap(), opts).await.unwrap();
        let store = crate::store::Store::open(dir.path(), Default::default()).unwrap();
        let client = XyteClient::new(ClientConfig {
            base_url: sim.base_url(),
            credential: XyteCredential::ApiKey(Secret::new(sim.sim.api_key().into())),
            request_timeout: Duration::from_secs(10),
            rate_limit_per_min: 6000,
        })
        .unwrap();
        let app = Arc::new(App::new(store, client));
        let principal = crate::ops::Principal { id: "test".into(), role: Role::Viewer };
        (dir, sim, Ctx { app, principal, progress: None })
    }

    async fn read_device(ctx: &Ctx, id: &str) -> (Value, Value) {
        let client = ctx.app.client.clone();
        let key = id.to_string();
        entry(ctx, "device", id, || async move {
            Ok(serde_json::to_value(client.get_device(&key, Priority::Interactive).await?).unwrap())
        })
        .await
        .unwrap()
    }

    /// Waits for the refresh of a device that runs now.
    async fn refresh_of(ctx: &Ctx, id: &str) -> Result<(Value, Value), Error> {
        let key = ("device", id.to_string());
        let none = || Box::pin(std::future::ready(Err(Error::internal("no refresh ran")))) as Refresh<_>;
        let landing = ctx.app.refreshes.entries.join(key, none, &ctx.app.refreshes.struggling);
        landed(landing, None).await
    }

    fn fetches_of(sim: &SimHandle, id: &str) -> usize {
        let path = format!("{}/devices/{id}", sim::API_PREFIX);
        sim.sim.stats().requests.iter().filter(|r| r.path == path).count()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn past_the_ttl_a_slow_xyte_gets_stale_answers_and_one_refresh_that_lands_in_the_cache() {
        let (_dir, sim, ctx) = rig().await;
        let id = sim.sim.device_ids()[0].clone();
        // Cached long ago: past any TTL.
        ctx.app.store.cache_put("device", &id, json!({"id": id, "name": "old"}), 1, None).await.unwrap();
        // Slower than the wait by far, so the reads cannot have had Xyte's answer.
        sim.sim.set_faults(Faults { latency: REVALIDATE_WAIT * 8, ..Default::default() });

        let read = || read_device(&ctx, &id);
        let reads = tokio::join!(read(), read(), read(), read(), read());
        for (body, provenance) in [reads.0, reads.1, reads.2, reads.3, reads.4] {
            assert_eq!((body["name"].as_str(), &provenance["stale"]), (Some("old"), &json!(true)), "{provenance}");
            assert_eq!(provenance["fetched_at"], json!(rfc3339(1)));
        }
        let (body, provenance) = refresh_of(&ctx, &id).await.unwrap();
        assert_ne!(body["name"], "old");
        assert_eq!(provenance["stale"], false);
        assert_eq!(fetches_of(&sim, &id), 1, "five reads, one refresh");

        // The refresh stored what it fetched: the next read is fresh without asking Xyte.
        let (again, provenance) = read_device(&ctx, &id).await;
        assert_eq!((&again, &provenance["stale"]), (&body, &json!(false)));
        assert_eq!(fetches_of(&sim, &id), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refresh_that_began_before_a_write_does_not_make_the_entry_fresh() {
        let (_dir, sim, ctx) = rig().await;
        let id = sim.sim.device_ids()[0].clone();
        ctx.app.store.cache_put("device", &id, json!({"id": id, "name": "old"}), 1, None).await.unwrap();
        sim.sim.set_faults(Faults { latency: REVALIDATE_WAIT * 4, ..Default::default() });
        let (_, provenance) = read_device(&ctx, &id).await;
        assert_eq!(provenance["stale"], true);

        // A write through the daemon while the refresh waits for Xyte.
        invalidate(&ctx, "device", Some(&id)).await;
        let (_, provenance) = refresh_of(&ctx, &id).await.unwrap();
        assert_eq!(provenance["stale"], true, "what Xyte said before the write is not fresh after it");
        assert_eq!(ctx.app.store.cache_get("device", &id).await.unwrap().unwrap().fetched_at, 0);
    }
}
