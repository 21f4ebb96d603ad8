//! The room schedules' clock: a front door whose caller is time. One task sleeps until the earliest due time of any
//! schedule (never longer than [`RECHECK`], so a clock that was set forward or back is noticed), then lets
//! `schedule::plan` decide for each schedule which due times since the last one handled fire and which are skipped,
//! and asks `ops::schedules` to fire or record them (each one transaction with its event). It also records a run's
//! result once every step of it is final, noticed from the command events of the outbox.
//!
//! Clocks: due times are wall-clock instants. A clock set forward (an NTP correction, or a box without a
//! battery-backed clock that booted in 1970 and was then corrected) fires at most the latest due time, and only
//! within `XYTE_SCHEDULE_GRACE`; the older ones are skipped with the reason. A clock set back runs nothing twice (only
//! due times after the last one handled count) and runs the next due time once the clock reaches it. A clock earlier
//! than this release is not trusted at all: schedules wait, recording nothing, until it is set.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Role;
use crate::config::presets::Schedule;
use crate::error::Error;
use crate::ops::schedules::{self as ops, next_after, spec_text};
use crate::runtime::{App, Ctx, Principal};
use crate::schedule::plan::{self, Action};
use crate::store::Durability;
use crate::store::schedules::{self, State};

/// The longest the scheduler sleeps before reading the clock again.
const RECHECK: Duration = Duration::from_secs(30);
/// 2026-12-01T00:00:00Z: a clock before this release is wrong (a box without a real-time clock, before NTP).
const EARLIEST_TRUSTED_MS: i64 = 1_796_083_200_000;
/// Due times are looked for at most this far back: after a longer downtime the older ones are not counted.
const LOOKBACK_MS: i64 = 31 * 86_400_000;

/// What the scheduler reads the time from: the system's clock, or a test's.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        crate::store::now_ms()
    }
}

pub struct Scheduler {
    app: Arc<App>,
    clock: Arc<dyn Clock>,
    warned_clock: std::sync::atomic::AtomicBool,
}

impl Scheduler {
    pub fn new(app: Arc<App>, clock: Arc<dyn Clock>) -> Scheduler {
        Scheduler { app, clock, warned_clock: Default::default() }
    }

    /// Handles every due time up to now, and records the result of runs whose steps all ended: called at start
    /// before the daemon reports ready, so what came due while it was down is decided first.
    pub async fn catch_up(&self) -> Result<Option<i64>, Error> {
        let next = self.pass().await?;
        ops::finish_runs(&self.app).await?;
        Ok(next)
    }

    /// One pass over every schedule: each due time since the last one handled fired or skipped, as
    /// `schedule::plan::due` decides. Returns the earliest due time still to come.
    pub async fn pass(&self) -> Result<Option<i64>, Error> {
        let presets = self.app.presets();
        if presets.schedules.is_empty() {
            return Ok(None);
        }
        let now = self.clock.now_ms();
        if now < EARLIEST_TRUSTED_MS {
            if !self.warned_clock.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(
                    "the system clock says {}, before this release: room schedules wait until the clock is set (NTP)",
                    crate::cache::rfc3339(now).unwrap_or_else(|| "1970".into())
                );
            }
            return Ok(None);
        }
        let states = self.states(&presets.schedules, presets.problems.is_empty(), now).await?;
        let grace = self.app.schedule_grace.as_millis() as i64;
        let mut earliest: Option<i64> = None;
        for s in presets.schedules.iter().filter(|s| s.enabled) {
            let Some(state) = states.iter().find(|(name, _)| *name == s.name).map(|(_, st)| st) else { continue };
            let paused_until = state.paused.as_ref().map(|(until, _)| until.unwrap_or(i64::MAX));
            let from = state.handled.max(now - LOOKBACK_MS);
            let actions = plan::due(from, now, grace, paused_until, |t| next_after(s, &presets.holidays, t));
            for action in actions {
                self.act(s, action).await?;
            }
            if let Some(next) = next_after(s, &presets.holidays, now.max(state.handled)) {
                earliest = Some(earliest.map_or(next, |e: i64| e.min(next)));
            }
        }
        Ok(earliest)
    }

    /// Each schedule's record, first writing those of new or edited schedules (and, when every entry of the file
    /// loaded, forgetting removed ones). Writes nothing when nothing changed: an idle gateway writes no disk.
    async fn states(&self, list: &[Schedule], forget: bool, now: i64) -> Result<Vec<(String, State)>, Error> {
        let known = self.app.store.read(schedules::states).await?;
        let stale: Vec<(String, String)> = list
            .iter()
            .filter(|s| known.get(&s.name).is_none_or(|st| st.spec != spec_text(s)))
            .map(|s| (s.name.clone(), spec_text(s)))
            .collect();
        let removed = forget && known.keys().any(|k| !list.iter().any(|s| &s.name == k));
        if stale.is_empty() && !removed {
            return Ok(known.into_iter().collect());
        }
        let names: Vec<String> = list.iter().map(|s| s.name.clone()).collect();
        let states = self
            .app
            .store
            .write(Durability::Full, move |c| {
                for (name, spec) in &stale {
                    schedules::ensure(c, name, spec, now)?;
                }
                if removed {
                    schedules::forget_except(c, &names)?;
                }
                schedules::states(c)
            })
            .await?;
        Ok(states.into_iter().collect())
    }

    async fn act(&self, s: &Schedule, action: Action) -> Result<(), Error> {
        match action {
            Action::Fire { due, late_ms } => {
                let ctx = Ctx {
                    app: self.app.clone(),
                    principal: Principal { id: format!("schedule:{}", s.name), role: Role::Operator },
                    progress: None,
                };
                ops::fire(&ctx, s, Some(due), late_ms).await?;
            }
            Action::Skip { due, reason } => ops::skip(&self.app, s, due, due, 1, reason).await?,
            Action::SkipMany { first, last, count, reason } => {
                ops::skip(&self.app, s, first, last, count, reason).await?
            }
        }
        Ok(())
    }

    /// Runs until shutdown: a pass at every due time (and at least every [`RECHECK`]), after a reload or a pause,
    /// and a look at open runs whenever a command's state changed.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut events = self.app.bus.subscribe();
        let mut open_runs = true;
        loop {
            let next = self.pass().await.unwrap_or_else(|e| {
                tracing::warn!("room schedules: {e}");
                None
            });
            let wait = next.map_or(RECHECK, |n| Duration::from_millis((n - self.clock.now_ms()).max(0) as u64));
            let timer = tokio::time::sleep(wait.min(RECHECK));
            tokio::pin!(timer);
            loop {
                if open_runs {
                    open_runs = ops::finish_runs(&self.app).await.map(|n| n > 0).unwrap_or(true);
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = &mut timer => break,
                    _ = self.app.schedule_wake.notified() => break,
                    event = events.recv() => match event {
                        Ok(e) if e.kind.starts_with("command.") || e.kind == "schedule.fired" => open_runs = true,
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => open_runs = true,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                }
            }
        }
    }
}
