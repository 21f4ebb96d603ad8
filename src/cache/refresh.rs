//! Fetches from Xyte in flight: whole-collection fetches one per collection at a time ([`Fetches`], the poller's
//! and reads'), and the refreshes reads start, shared by every read that needs them and waited for at most
//! [`REVALIDATE_WAIT`] per operation ([`Refreshes`]).

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{OwnedMutexGuard, watch};

use super::Cached;
use crate::error::{Error, ErrorCode};

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
pub(super) struct Fetches(pub Mutex<HashMap<&'static str, Arc<tokio::sync::Mutex<()>>>>);

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
pub(super) struct Refreshes {
    pub collections: InFlight<&'static str, Cached<super::Items>>,
    pub entries: InFlight<(&'static str, String), Cached<Value>>,
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
pub(super) struct Landing<T> {
    began: Instant,
    result: watch::Receiver<Option<Result<T, Error>>>,
}
type Running<K, T> = Arc<Mutex<HashMap<K, Landing<T>>>>;

pub(super) struct InFlight<K, T>(Running<K, T>);

impl<K, T> Default for InFlight<K, T> {
    fn default() -> Self {
        InFlight(Arc::default())
    }
}

/// A refresh, boxed: the task that runs it is then compiled once per kind of result, not once per read site (each
/// of the twenty-odd read sites had its own copy of the task's code: +150 KiB of binary).
pub(super) type Refresh<T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send>>;

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
pub(super) async fn landed<T: Clone>(landing: Landing<T>, wait: Option<Duration>) -> Result<T, Error> {
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
