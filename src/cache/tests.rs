use std::time::Duration;

use serde_json::json;

use super::*;
use crate::config::{Secret, XyteCredential};
use crate::sim::{self, Faults, SimHandle, SimOptions};
use crate::store::cache;
use crate::store::{Durability, StoreError};
use crate::xyte::ClientConfig;

/// A cache of an empty store, with a client of Xyte at `base_url`.
fn cache(base_url: String, api_key: &str) -> (tempfile::TempDir, Cache) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Default::default()).unwrap();
    let credential = XyteCredential::ApiKey(Secret::new(api_key.into()));
    let config =
        ClientConfig { base_url, credential, request_timeout: Duration::from_secs(10), rate_limit_per_min: 6000 };
    (dir, Cache::new(store, XyteClient::new(config).unwrap(), Duration::from_secs(60), Arc::default()))
}

/// With a client that reaches nothing.
fn offline() -> (tempfile::TempDir, Cache) {
    cache("http://127.0.0.1:1".into(), "k")
}

async fn rig() -> (tempfile::TempDir, SimHandle, Cache) {
    let opts = SimOptions { devices: 2, churn: false, ..Default::default() };
    let sim = sim::spawn("127.0.0.1:0".parse().unwrap(), opts).await.unwrap();
    let (dir, cache) = cache(sim.base_url(), sim.sim.api_key());
    (dir, sim, cache)
}

fn t(s: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(s).unwrap()
}

/// Waits for the refresh of a device that runs now.
async fn refresh_of(cache: &Cache, id: &str) -> Result<Cached<Body>, Error> {
    let key = ("device", id.to_string());
    let none = || Box::pin(std::future::ready(Err(Error::internal("no refresh ran")))) as Refresh<_>;
    let refreshes = &cache.state.refreshes;
    landed(refreshes.entries.join(key, none, &refreshes.struggling), None).await
}

fn fetches_of(sim: &SimHandle, id: &str) -> usize {
    let path = format!("{}/devices/{id}", sim::API_PREFIX);
    sim.sim.stats().requests.iter().filter(|r| r.path == path).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_ttl_a_slow_xyte_gets_stale_answers_and_one_refresh_that_lands_in_the_cache() {
    let (_dir, sim, cache) = rig().await;
    let id = sim.sim.device_ids()[0].clone();
    // Cached long ago: past any TTL.
    cache.put("device", &id, json!({"id": id, "name": "old"}), 1, None).await.unwrap();
    // Slower than the wait by far, so the reads cannot have had Xyte's answer.
    sim.sim.set_faults(Faults { latency: REVALIDATE_WAIT * 8, ..Default::default() });

    let read = || async { cache.device(&id).await.unwrap() };
    let reads = tokio::join!(read(), read(), read(), read(), read());
    for read in [reads.0, reads.1, reads.2, reads.3, reads.4] {
        assert_eq!((read.value["name"].as_str(), read.stale), (Some("old"), true));
        assert_eq!(read.fetched_at, 1);
    }
    let refreshed = refresh_of(&cache, &id).await.unwrap();
    assert_ne!(refreshed.value["name"], "old");
    assert!(!refreshed.stale);
    assert_eq!(fetches_of(&sim, &id), 1, "five reads, one refresh");

    // The refresh stored what it fetched: the next read is fresh without asking Xyte.
    let again = cache.device(&id).await.unwrap();
    assert_eq!((&*again.value, again.stale), (&*refreshed.value, false));
    assert_eq!(fetches_of(&sim, &id), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_that_began_before_a_write_does_not_make_the_entry_fresh() {
    let (_dir, sim, cache) = rig().await;
    let id = sim.sim.device_ids()[0].clone();
    cache.put("device", &id, json!({"id": id, "name": "old"}), 1, None).await.unwrap();
    sim.sim.set_faults(Faults { latency: REVALIDATE_WAIT * 4, ..Default::default() });
    assert!(cache.device(&id).await.unwrap().stale);

    // A write through the daemon while the refresh waits for Xyte.
    cache.invalidate("device", Some(&id)).await;
    assert!(refresh_of(&cache, &id).await.unwrap().stale, "what Xyte said before the write is not fresh after it");
    assert_eq!(cache.get("device", &id).await.unwrap().unwrap().fetched_at, 0);
}

#[tokio::test]
async fn volatile_fields_alone_write_nothing_yet_reads_show_their_latest_values() {
    let (_d, cache) = offline();
    let store = &cache.store;
    let seen = |at: &str| vec![("a".to_string(), json!({"id":"a","status":"online","last_seen_at": at}))];
    cache.replace_set("device", seen("10:00"), t(1), None).await.unwrap();
    let changes_before: i64 = store.write(Durability::Normal, |c| Ok(c.total_changes() as i64)).await.unwrap();
    let diff = cache.replace_set("device", seen("10:01"), t(2), None).await.unwrap();
    assert!(diff.is_empty(), "only last_seen_at moved: {diff:?}");
    let changes_after: i64 = store.write(Durability::Normal, |c| Ok(c.total_changes() as i64)).await.unwrap();
    assert_eq!(changes_before, changes_after, "a volatile field alone must not touch a row");

    // Reads lay the latest value over the row; the row itself stays as written, consistent with its fetched_at.
    let list = cache.list("device").await.unwrap();
    assert!(list.complete);
    assert_eq!(list.bodies[0]["last_seen_at"], "10:01");
    assert_eq!(cache.get("device", "a").await.unwrap().unwrap().body["last_seen_at"], "10:01");
    let on_disk = store.read(|c| cache::get(c, "device", "a")).await.unwrap().unwrap();
    assert_eq!((on_disk.body["last_seen_at"].as_str(), on_disk.fetched_at), (Some("10:00"), 1000));

    // A single fetch updates it too, and a real change is still a change.
    cache.put("device", "a", json!({"id":"a","status":"online","last_seen_at":"10:02"}), 3000, None).await.unwrap();
    assert_eq!(cache.get("device", "a").await.unwrap().unwrap().body["last_seen_at"], "10:02");
    let offline = vec![("a".to_string(), json!({"id":"a","status":"offline","last_seen_at":"10:03"}))];
    let diff = cache.replace_set("device", offline, t(4), None).await.unwrap();
    assert_eq!(diff.changed.len(), 1);
    let on_disk = store.read(|c| cache::get(c, "device", "a")).await.unwrap().unwrap();
    assert_eq!(on_disk.body["last_seen_at"], "10:03");
}

#[tokio::test]
async fn parsed_copies_follow_every_cache_write() {
    let (_d, cache) = offline();
    let one = |status: &str| vec![("a".to_string(), json!({"id":"a","status":status}))];
    cache.replace_set("device", one("online"), t(1), None).await.unwrap();
    // Read twice: the second answer is the kept copy (the same allocation), not a new parse.
    let first = cache.list("device").await.unwrap();
    assert!(Arc::ptr_eq(&first, &cache.list("device").await.unwrap()));
    assert_eq!(cache.get("device", "a").await.unwrap().unwrap().body["status"], "online");

    cache.replace_set("device", one("offline"), t(2), None).await.unwrap();
    let list = cache.list("device").await.unwrap();
    assert_eq!((list.bodies[0]["status"].as_str(), list.newest_fetched_at), (Some("offline"), 2000));
    assert_eq!(cache.get("device", "a").await.unwrap().unwrap().body["status"], "offline");

    cache.put("device", "a", json!({"id":"a","status":"error"}), 3000, None).await.unwrap();
    assert_eq!(cache.list("device").await.unwrap().bodies[0]["status"], "error");
    assert_eq!(cache.get("device", "a").await.unwrap().unwrap().body["status"], "error");

    cache.invalidate("device", Some("a")).await;
    assert_eq!(cache.get("device", "a").await.unwrap().unwrap().fetched_at, 0);
    assert_eq!(cache.list("device").await.unwrap().newest_fetched_at, 0);
}

#[tokio::test]
async fn releasing_the_page_caches_keeps_every_row_readable_and_writable() {
    let (_d, cache) = offline();
    let rows = (0..300).map(|i| (format!("d{i:03}"), json!({"id": format!("d{i:03}"), "pad": "x".repeat(500)})));
    cache.replace_set("device", rows.collect(), t(1), None).await.unwrap();
    assert_eq!(cache.list("device").await.unwrap().keys.len(), 300);
    cache.store.release_page_caches().await;
    cache.put("device", "d150", json!({"id": "d150", "status": "error"}), 2000, None).await.unwrap();
    let list = cache.list("device").await.unwrap();
    assert_eq!((list.keys.len(), list.bodies[150]["status"].as_str()), (300, Some("error")));
    assert_eq!(cache.get("device", "d299").await.unwrap().unwrap().body["pad"].as_str().map(str::len), Some(500));
}

#[tokio::test]
async fn a_fetch_that_began_before_an_invalidation_is_not_stored_as_fresh() {
    let (_d, cache) = offline();
    let one = |status: &str| vec![("a".to_string(), json!({"id":"a","status":status}))];
    cache.replace_set("device", one("online"), t(1), None).await.unwrap();

    // A refresh notes where it began; a write through the daemon invalidates while it waits for Xyte.
    let since = cache.state.invalidations("device");
    cache.invalidate("device", None).await;
    let put = cache.put("device", "a", json!({"id":"a","status":"before the write"}), 2000, Some(since)).await;
    assert!(matches!(put, Err(StoreError::Invalidated)), "{put:?}");
    let set = cache.replace_set("device", one("before the write"), t(2), Some(since)).await;
    assert!(matches!(set, Err(StoreError::Invalidated)), "{set:?}");
    let a = cache.get("device", "a").await.unwrap().unwrap();
    assert_eq!((a.body["status"].as_str(), a.fetched_at), (Some("online"), 0), "still the invalidated row");
    assert_eq!(cache.confirmed_at("device"), Some(0));

    // A refresh that began after it stores as usual.
    let since = cache.state.invalidations("device");
    cache.put("device", "a", json!({"id":"a","status":"after"}), 3000, Some(since)).await.unwrap();
    assert_eq!(cache.get("device", "a").await.unwrap().unwrap().fetched_at, 3000);
}

#[tokio::test]
async fn answers_from_the_device_collection_are_kept_per_collection_and_key() {
    let (_dir, cache) = offline();
    let mut keys = Keys::default();
    let collection = |names: &[&str], keys: &mut Keys| -> Items {
        Arc::new(names.iter().map(|n| Compact::of(&json!({"id": n, "name": n}), keys)).collect())
    };
    let first = collection(&["b", "a"], &mut keys);
    let computed = std::sync::atomic::AtomicUsize::new(0);
    let answer = |devices: &Items, key: &str| {
        cache
            .from_devices(devices, key.to_string(), || {
                computed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let order = cache.device_order(devices);
                let names: Vec<_> = order.iter().map(|(i, _)| devices[*i as usize]["name"].to_value()).collect();
                Ok(json!({"key": key, "names": names}).as_object().cloned().unwrap())
            })
            .map(|kept| Value::Object((*kept).clone()))
            .unwrap()
    };
    let count = || computed.load(std::sync::atomic::Ordering::SeqCst);

    assert_eq!(answer(&first, "k1"), json!({"key": "k1", "names": ["a", "b"]}));
    assert_eq!(answer(&first, "k1"), json!({"key": "k1", "names": ["a", "b"]}));
    assert_eq!(count(), 1, "the same collection and key: computed once");
    answer(&first, "k2");
    assert_eq!(count(), 2, "another key is another answer");

    // A new collection (what a write of the rows makes), even with an equal content: computed again.
    let second = collection(&["c", "a"], &mut keys);
    assert_eq!(answer(&second, "k1"), json!({"key": "k1", "names": ["a", "c"]}));
    assert_eq!(count(), 3);
    // The first collection is no longer the one kept: asking with it again recomputes, right.
    assert_eq!(answer(&first, "k1"), json!({"key": "k1", "names": ["a", "b"]}));
    assert_eq!(count(), 4);

    // An error is answered, not kept.
    let failed = cache.from_devices(&first, "bad".into(), || Err(Error::invalid_params("invalid cursor")));
    assert!(failed.is_err());
    assert_eq!(answer(&first, "bad"), json!({"key": "bad", "names": ["a", "b"]}));

    // Bounded: past MAX_ANSWERS keys the kept answers are dropped and refill.
    for i in 0..200 {
        answer(&first, &format!("page {i}"));
    }
    let kept = cache.state.from_devices.answers_kept();
    assert!(kept <= 16, "{kept} answers kept");
}
