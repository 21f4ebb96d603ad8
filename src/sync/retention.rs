//! Retention: the event log is bounded by age (`XYTE_EVENT_RETENTION_DAYS`) and by count
//! (`XYTE_EVENT_RETENTION_ROWS`), webhook receipts and audit records by age only (alerts' records after a week) — audit records are never dropped to
//! make room, so they are kept at least as long as events. Deletion runs in small batches, each its own short write,
//! so the writer is never held long and readers never wait; SQLite reuses the freed pages, so the file stops growing.

use std::time::Duration;

use rusqlite::params;
use tokio_util::sync::CancellationToken;

use crate::store::{Durability, Store, StoreError, alerts, events, now_ms, webhooks};

/// Rows deleted per write transaction.
const BATCH: usize = 2000;
/// How often retention runs (also once at start).
const PERIOD: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub days: u32,
    pub rows: u64,
}

/// How many rows one pass removed, per table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub events: usize,
    pub webhook_receipts: usize,
    pub audit: usize,
    /// Alerts, silences and alert messages that ended more than `alerts::KEEP_MS` ago.
    pub alerts: usize,
}

/// Repeats one batched delete until a batch comes back short, yielding between batches; returns the total.
async fn drain(
    store: &Store,
    batch: impl Fn(&rusqlite::Connection) -> Result<usize, StoreError> + Copy + Send + 'static,
) -> Result<usize, StoreError> {
    let mut total = 0;
    loop {
        let n = store.write(Durability::Normal, batch).await?;
        total += n;
        if n < BATCH {
            return Ok(total);
        }
        tokio::task::yield_now().await;
    }
}

/// One pass: deletes in batches until everything over the limits is gone.
pub async fn prune(store: &Store, limits: Limits) -> Result<Pruned, StoreError> {
    let cutoff = now_ms() - i64::from(limits.days) * 86_400_000;
    Ok(Pruned {
        events: drain(store, move |c| events::prune(c, cutoff, limits.rows, BATCH)).await?,
        webhook_receipts: drain(store, move |c| webhooks::prune(c, cutoff, BATCH)).await?,
        audit: drain(store, move |c| {
            Ok(c.execute(
                "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE ts < ?1 ORDER BY id LIMIT ?2)",
                params![cutoff, BATCH as i64],
            )?)
        })
        .await?,
        alerts: drain(store, move |c| alerts::prune(c, now_ms() - alerts::KEEP_MS)).await?,
    })
}

/// Runs [`prune`] at start and every minute until shutdown.
pub async fn run(store: Store, limits: Limits, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(PERIOD);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match prune(&store, limits).await {
            Ok(p) if p != Pruned::default() => tracing::info!(
                events = p.events,
                webhook_receipts = p.webhook_receipts,
                audit = p.audit,
                alerts = p.alerts,
                "retention: pruned"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention pass failed; retrying next minute"),
        }
    }
}
