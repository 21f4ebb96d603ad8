//! The poller: every `XYTE_POLL_INTERVAL` it reads devices, active incidents and open tickets from Xyte (spaces and
//! organization info less often) at background priority, and stores each snapshot in the cache so reads never wait
//! for Xyte. It yields to interactive work through the client's rate limiter.

use std::fmt;
use std::time::{Duration, Instant};

use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use crate::error::Error;
use crate::runtime::App;
use crate::store::cache::{self, CacheDiff};
use crate::store::events::NewEvent;
use crate::systemd::Heartbeat;
use crate::xyte::{IncidentQuery, Priority};

/// Spaces and organization info change rarely; refresh them every this many cycles.
const SLOW_EVERY: u64 = 10;

/// What one sync cycle found, published for status output and the demo's progress lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub devices: usize,
    pub online: usize,
    pub active_incidents: usize,
    pub open_tickets: usize,
    pub spaces: Option<usize>,
    pub changed: usize,
    pub took: Duration,
    pub at: OffsetDateTime,
}

impl fmt::Display for SyncReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "synced {} devices ({} online), {} active incidents, {} open tickets",
            self.devices, self.online, self.active_incidents, self.open_tickets
        )?;
        if let Some(spaces) = self.spaces {
            write!(f, ", {spaces} spaces")?;
        }
        write!(f, " in {} ms ({} cache entries changed)", self.took.as_millis(), self.changed)
    }
}

pub struct Poller {
    app: Arc<App>,
    interval: Duration,
    heartbeat: Heartbeat,
    reports: watch::Sender<Option<SyncReport>>,
}

impl Poller {
    pub fn new(app: Arc<App>, interval: Duration, heartbeat: Heartbeat) -> Self {
        Poller { app, interval, heartbeat, reports: watch::channel(None).0 }
    }

    /// Every completed cycle is published here.
    pub fn reports(&self) -> watch::Receiver<Option<SyncReport>> {
        self.reports.subscribe()
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let mut cycle: u64 = 0;
        let mut reachable: Option<bool> = None;
        loop {
            self.heartbeat.beat();
            let started = Instant::now();
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.poll_once(cycle.is_multiple_of(SLOW_EVERY), cycle == 0) => r,
            };
            match outcome {
                Ok(report) => {
                    crate::metrics::upstream_reachable(true);
                    if reachable == Some(false) {
                        self.publish(vec![NewEvent::new("edge.xyte_reachable", serde_json::json!({}))]).await;
                    }
                    if reachable != Some(true) {
                        tracing::info!("Xyte reachable: {report}");
                    } else {
                        tracing::debug!("{report}");
                    }
                    reachable = Some(true);
                    self.app.sync.update(|s| {
                        s.reachable = Some(true);
                        s.last_ok_ms = crate::store::now_ms();
                        s.last_error = None;
                        s.devices = report.devices;
                        s.online = report.online;
                    });
                    self.reports.send_replace(Some(report));
                    cycle += 1;
                }
                // Xyte answered, but the gateway's own disk is full: not an outage (the store logs the disk).
                Err(e) if e.code == crate::error::ErrorCode::StorageFull => {
                    tracing::debug!("sync could not store what Xyte sent: {e}");
                }
                Err(e) => {
                    crate::metrics::upstream_reachable(false);
                    // Log the transition loudly, repeats quietly: an outage must not flood the journal.
                    if reachable != Some(false) {
                        tracing::warn!(code = %e.code, "sync failed, serving cached data: {e}");
                    } else {
                        tracing::debug!(code = %e.code, "sync still failing: {e}");
                    }
                    if reachable != Some(false) {
                        self.publish(vec![NewEvent::new(
                            "edge.xyte_unreachable",
                            serde_json::json!({"code": e.code, "message": e.message}),
                        )])
                        .await;
                    }
                    reachable = Some(false);
                    self.app.sync.update(|s| {
                        s.reachable = Some(false);
                        s.last_error = Some(e.to_string());
                    });
                }
            }
            // The cycle's parsed snapshots are freed now; give their pages back (see `heap`).
            self.app.store.release_page_caches().await;
            crate::heap::release_free_memory();
            let next = self.interval.saturating_sub(started.elapsed());
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.beating_sleep(next) => {}
            }
        }
    }

    /// Sleeps while still proving liveness to the watchdog (intervals may be longer than `WatchdogSec`).
    async fn beating_sleep(&self, total: Duration) {
        let deadline = tokio::time::Instant::now() + total;
        while tokio::time::Instant::now() < deadline {
            self.heartbeat.beat();
            tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + Duration::from_secs(1))).await;
        }
    }

    /// One cycle. Errors stop the cycle at the first failing read; what was stored before stays stored.
    /// The very first cycle fills an empty cache, which nothing else can answer from, so it runs at interactive
    /// priority; later cycles are background work that yields to callers.
    pub async fn poll_once(&self, slow_too: bool, first: bool) -> Result<SyncReport, Error> {
        let prio = if first { Priority::Interactive } else { Priority::Background };
        let started = Instant::now();
        let at = OffsetDateTime::now_utc();
        let mut changed = 0;

        let client = &self.app.client;
        let mut events = Vec::new();
        let (devices, diff) =
            self.app.cache.sync_set("device", client.list_devices(None, prio), |d| d.id.clone(), at).await?;
        let online = devices.iter().filter(|d| d.status.as_deref() == Some("online")).count();
        changed += diff.changed_count();
        device_events(&diff, &mut events);

        let query = IncidentQuery { status: Some("active".into()), ..Default::default() };
        let (incidents, diff) =
            self.app.cache.sync_set("incident", client.list_incidents(query, prio), |i| i.id.clone(), at).await?;
        changed += diff.changed_count();
        incident_events(&diff, &mut events);

        let (tickets, diff) =
            self.app.cache.sync_set("ticket", client.list_tickets(prio), |t| t.id.clone(), at).await?;
        changed += diff.changed_count();
        ticket_events(&diff, &mut events);

        let mut spaces = None;
        if slow_too {
            let (list, diff) = self.app.cache.sync_set("space", client.list_spaces(prio), |s| s.id.clone(), at).await?;
            spaces = Some(list.len());
            changed += diff.changed_count();
            let info = async { Ok(vec![client.info(prio).await?]) };
            let (_, diff) = self.app.cache.sync_set("organization", info, |_| "info".into(), at).await?;
            changed += diff.changed_count();
        }
        self.publish(events).await;
        Ok(SyncReport {
            devices: devices.len(),
            online,
            active_incidents: incidents.len(),
            open_tickets: tickets.len(),
            spaces,
            changed,
            took: started.elapsed(),
            at,
        })
    }

    async fn publish(&self, events: Vec<NewEvent>) {
        if let Err(e) = self.app.bus.publish(events).await {
            tracing::error!(error = %e, "could not record events");
        }
    }
}

/// True when a snapshot only filled an empty cache (first start): that is not news, so no events. (A snapshot that
/// only adds to a known set — one new incident, nothing else changed — is news.)
fn initial_fill(diff: &CacheDiff) -> bool {
    diff.first
}

fn text(v: &Value, key: &str) -> Option<String> {
    match &v[key] {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Devices: status changes, other meaningful changes, and removals.
fn device_events(diff: &CacheDiff, out: &mut Vec<NewEvent>) {
    let space = |d: &Value| d["space"]["id"].as_i64().map(|i| i.to_string()).or_else(|| text(&d["space"], "id"));
    if !initial_fill(diff) {
        for (id, d) in &diff.added {
            out.push(
                NewEvent::new(
                    "device.updated",
                    serde_json::json!({"change": "appeared", "name": d["name"], "status": d["status"]}),
                )
                .device(id)
                .space(space(d)),
            );
        }
    }
    for (id, old, new) in &diff.changed {
        if old["status"] != new["status"] {
            out.push(
                NewEvent::new(
                    "device.status_changed",
                    serde_json::json!({"name": new["name"], "from": old["status"], "to": new["status"]}),
                )
                .device(id)
                .space(space(new)),
            );
        } else {
            // A changed row differs in more than volatile fields (the cache's hash leaves those out).
            let volatile = cache::volatile_fields("device");
            let keys: Vec<&String> = new
                .as_object()
                .map(|o| o.keys().filter(|k| old[*k] != new[*k] && !volatile.contains(&k.as_str())).collect())
                .unwrap_or_default();
            out.push(
                NewEvent::new(
                    "device.updated",
                    serde_json::json!({"name": new["name"], "changed": keys, "state": new["state"]}),
                )
                .device(id)
                .space(space(new)),
            );
        }
    }
    for (id, old) in &diff.removed {
        out.push(
            NewEvent::new("device.deleted", serde_json::json!({"name": old["name"]})).device(id).space(space(old)),
        );
    }
}

fn incident_events(diff: &CacheDiff, out: &mut Vec<NewEvent>) {
    let ev = |kind: &str, i: &Value| {
        let e = NewEvent::new(
            kind,
            serde_json::json!({"incident_id": i["id"], "title": i["title"], "priority": i["priority"]}),
        )
        .space(text(i, "space_id"));
        match text(i, "device_id") {
            Some(d) => e.device(d),
            None => e,
        }
    };
    if !initial_fill(diff) {
        out.extend(diff.added.iter().map(|(_, i)| ev("incident.opened", i)));
    }
    // Gone from the active set: closed.
    out.extend(diff.removed.iter().map(|(_, i)| ev("incident.closed", i)));
}

fn ticket_events(diff: &CacheDiff, out: &mut Vec<NewEvent>) {
    let ev = |t: &Value, change: &str| {
        NewEvent::new(
            "ticket.updated",
            serde_json::json!({"ticket_id": t["id"], "title": t["title"], "change": change}),
        )
    };
    if !initial_fill(diff) {
        out.extend(diff.added.iter().map(|(_, t)| ev(t, "opened")));
    }
    out.extend(diff.changed.iter().map(|(_, _, t)| ev(t, "updated")));
    out.extend(diff.removed.iter().map(|(_, t)| ev(t, "no longer open")));
}
