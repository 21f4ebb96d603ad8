//! The poller: every `XYTE_POLL_INTERVAL` it reads devices, active incidents and open tickets from Xyte (spaces and
//! organization info less often) at background priority, and stores each snapshot in the cache so reads never wait
//! for Xyte. It yields to interactive work through the client's rate limiter.

use std::fmt;
use std::time::{Duration, Instant};

use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::store::Store;
use crate::systemd::Heartbeat;
use crate::xyte::{IncidentQuery, Priority, XyteClient};

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
    client: XyteClient,
    store: Store,
    interval: Duration,
    heartbeat: Heartbeat,
    reports: watch::Sender<Option<SyncReport>>,
}

impl Poller {
    pub fn new(client: XyteClient, store: Store, interval: Duration, heartbeat: Heartbeat) -> Self {
        Poller { client, store, interval, heartbeat, reports: watch::channel(None).0 }
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
                    if reachable != Some(true) {
                        tracing::info!("Xyte reachable: {report}");
                    } else {
                        tracing::debug!("{report}");
                    }
                    reachable = Some(true);
                    self.reports.send_replace(Some(report));
                    cycle += 1;
                }
                Err(e) => {
                    // Log the transition loudly, repeats quietly: an outage must not flood the journal.
                    if reachable != Some(false) {
                        tracing::warn!(code = %e.code, "sync failed, serving cached data: {e}");
                    } else {
                        tracing::debug!(code = %e.code, "sync still failing: {e}");
                    }
                    reachable = Some(false);
                }
            }
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

        let devices = self.client.list_devices(None, prio).await?;
        let online = devices.iter().filter(|d| d.status.as_deref() == Some("online")).count();
        changed += self.store_set("device", devices.iter().map(|d| (d.id.clone(), to_json(d))).collect(), at).await?;

        let query = IncidentQuery { status: Some("active".into()), ..Default::default() };
        let incidents = self.client.list_incidents(query, prio).await?;
        changed +=
            self.store_set("incident", incidents.iter().map(|i| (i.id.clone(), to_json(i))).collect(), at).await?;

        let tickets = self.client.list_tickets(prio).await?;
        changed += self.store_set("ticket", tickets.iter().map(|t| (t.id.clone(), to_json(t))).collect(), at).await?;

        let mut spaces = None;
        if slow_too {
            let list = self.client.list_spaces(prio).await?;
            spaces = Some(list.len());
            changed += self.store_set("space", list.iter().map(|s| (s.id.clone(), to_json(s))).collect(), at).await?;
            let info = self.client.info(prio).await?;
            changed += self.store_set("organization", vec![("info".into(), to_json(&info))], at).await?;
        }
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

    async fn store_set(
        &self,
        resource: &'static str,
        entries: Vec<(String, Value)>,
        at: OffsetDateTime,
    ) -> Result<usize, Error> {
        let diff = self.store.cache_replace_set(resource, entries, at).await?;
        Ok(diff.changed_count())
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}
