//! systemd integration: `READY=1` once the daemon is serving, `STATUS=` summaries, `WATCHDOG=1` only while
//! every registered heartbeat is fresh (a wedged store writer must get the service restarted), `STOPPING=1`.
//! Every call is a no-op without `NOTIFY_SOCKET`, so the same code runs from a terminal.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// A liveness signal a long-running loop bumps; the watchdog pings only while all of them are recent.
#[derive(Clone)]
pub struct Heartbeat {
    name: &'static str,
    epoch: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Heartbeat {
    pub fn new(name: &'static str) -> Self {
        Heartbeat { name, epoch: Instant::now(), last_ms: Arc::new(AtomicU64::new(0)) }
    }

    pub fn beat(&self) {
        self.last_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub fn age(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }

    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// Pings the watchdog at half its interval while every heartbeat is younger than the interval. Returns at once when
/// systemd asked for no watchdog.
pub async fn run_watchdog(heartbeats: Vec<Heartbeat>, shutdown: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else { return };
    let mut tick = tokio::time::interval(interval / 2);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match heartbeats.iter().find(|h| h.age() > interval) {
            None => notify(&[NotifyState::Watchdog]),
            Some(stale) => {
                tracing::error!(
                    component = stale.name(),
                    age_ms = stale.age().as_millis() as u64,
                    "heartbeat stale; withholding the watchdog ping"
                );
            }
        }
    }
}
