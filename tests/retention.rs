//! Retention on a real SQLite file: 500,000 events are brought back within the row bound, events older
//! than the age bound go, audit records are never dropped for room (only for age), old webhook receipts go, and the
//! database file stops growing once retention runs (freed pages are reused).

use serde_json::json;
use xyte_edge::store::events::NewEvent;
use xyte_edge::store::{Durability, Store, now_ms};
use xyte_edge::sync::retention::{Limits, prune};

const DAY_MS: i64 = 86_400_000;

async fn insert_events(store: &Store, n: usize, ts: i64) {
    for chunk in 0..n.div_ceil(10_000) {
        let count = 10_000.min(n - chunk * 10_000);
        let batch: Vec<NewEvent> = (0..count)
            .map(|i| {
                NewEvent::new(
                    "device.status_changed",
                    json!({"name": "Board Room Projector", "from": "online", "to": "offline", "i": i}),
                )
                .device(format!("dev-{}", i % 500))
            })
            .collect();
        store.write(Durability::Normal, move |c| xyte_edge::store::events::append(c, &batch, ts)).await.unwrap();
    }
}

async fn count(store: &Store, table: &'static str) -> i64 {
    store.read(move |c| Ok(c.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?)).await.unwrap()
}

fn file_size(dir: &std::path::Path) -> u64 {
    ["xyte-edge.db", "xyte-edge.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_million_events_stay_within_bounds_and_the_file_stops_growing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Default::default()).unwrap();
    let limits = Limits { days: 14, rows: 200_000 };
    let now = now_ms();

    // Audit records and webhook receipts, old and recent.
    store
        .write(Durability::Normal, move |c| {
            for (i, ts) in [(0, now - 30 * DAY_MS), (1, now - DAY_MS)] {
                for j in 0..3 {
                    xyte_edge::store::context::audit(c, ts, "uid:0", "send_command", &json!({"j": j}), "ok", None)?;
                }
                xyte_edge::store::webhooks::receive(
                    c,
                    &format!("wh-{i}"),
                    ts,
                    NewEvent::new("webhook.received", json!({})),
                )?;
            }
            Ok(())
        })
        .await
        .unwrap();

    // 100,000 events a month old, then 400,000 recent ones.
    insert_events(&store, 100_000, now - 30 * DAY_MS).await;
    insert_events(&store, 400_000, now).await;
    assert_eq!(count(&store, "events").await, 500_002);
    let pruned = prune(&store, limits).await.unwrap();
    assert_eq!(count(&store, "events").await, 200_000, "the row bound holds: {pruned:?}");
    assert_eq!(count(&store, "audit").await, 3, "audit goes by age only");
    assert_eq!(pruned.audit, 3);
    assert_eq!(pruned.webhook_receipts, 1);
    let newest_kept: i64 =
        store.read(|c| Ok(c.query_row("SELECT MIN(ts) FROM events", [], |r| r.get(0))?)).await.unwrap();
    assert!(newest_kept >= now - DAY_MS, "the oldest events went first");

    // More rounds of the same volume: the file settles instead of growing with every round.
    // Measured after a checkpoint (from a separate connection, as an operator's sqlite3 would), so the WAL's
    // momentary size does not blur the comparison.
    let checkpoint = |dir: &std::path::Path| {
        let c = rusqlite::Connection::open(dir.join("xyte-edge.db")).unwrap();
        c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    };
    checkpoint(dir.path());
    let mut sizes = vec![file_size(dir.path())];
    for _ in 0..2 {
        insert_events(&store, 200_000, now_ms()).await;
        prune(&store, limits).await.unwrap();
        assert_eq!(count(&store, "events").await, 200_000);
        checkpoint(dir.path());
        sizes.push(file_size(dir.path()));
    }
    let (first, last) = (sizes[1], sizes[2]);
    assert!(last <= first + first / 10, "the database keeps growing: {sizes:?} bytes after each round");
    println!("database size after each round (bytes): {sizes:?}");
}
