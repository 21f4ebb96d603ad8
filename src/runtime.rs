//! The run-time state shared by every front door, operation and background task ([`App`]), and who is calling
//! ([`Principal`], [`Ctx`]). Below the operations and the background work, so that both use it without importing
//! each other.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde_json::{Value, json};

use crate::cache::{Cache, SyncStatus};
use crate::config::Role;
use crate::config::alerts::AlertRules;
use crate::config::presets::Presets;
use crate::copies::Copies;
use crate::error::Error;
use crate::store::{Store, StoreError, context, tasks};
use crate::xyte::XyteClient;

/// Each principal's `set_context` defaults, which most tools read when an argument is left out. Kept in memory after
/// the first read ([`Copies`]): the daemon is the only writer (`set_context`, which calls [`Contexts::changed`] after
/// its commit), so a tool call costs no database read for them.
pub struct Contexts(Copies<String, Value>);

impl Default for Contexts {
    /// Far more principals than a gateway serves.
    fn default() -> Contexts {
        Contexts(Copies::new(1024))
    }
}

impl Contexts {
    /// The principal's stored context, `{}` when none.
    pub fn get(&self, store: &Store, principal: &str) -> Result<Value, StoreError> {
        let generation = match self.0.get(principal) {
            Ok(kept) => return Ok(kept),
            Err(generation) => generation,
        };
        // A primary-key lookup: on this thread, not through the blocking pool (see `Store::read_blocking`).
        let found = store.read_blocking(|c| context::get(c, principal))?.unwrap_or_else(|| json!({}));
        self.0.keep(generation, principal.to_string(), found.clone());
        Ok(found)
    }

    /// After a write of the principal's context (committed or not): read it again next time.
    pub fn changed(&self, principal: &str) {
        self.0.forget(principal);
    }
}

/// Everything operations need, shared by every front door.
pub struct App {
    pub store: Store,
    pub bus: crate::events::EventBus,
    /// What the last sync cycles found (the poller's record; the cache consults it too).
    pub sync: Arc<SyncStatus>,
    pub client: XyteClient,
    /// Cache-first reads of the organization (`XYTE_CACHE_TTL` is its `ttl`).
    pub cache: Cache,
    pub read_only: bool,
    pub command_ttl: Duration,
    /// `XYTE_OUTBOX_MAX`, `XYTE_OUTBOX_MAX_PER_DEVICE`: what `send_command_async` and presets admit.
    pub outbox_limits: OutboxLimits,
    pub env_label: String,
    pub started: Instant,
    /// Wakes the forwarder when a task is queued.
    pub outbox_wake: tokio::sync::Notify,
    /// MCP socket connections open now (for status).
    pub mcp_clients: std::sync::atomic::AtomicUsize,
    /// `XYTE_EXPERIMENTAL_APIS`: catalogue entries marked experimental may be called.
    pub experimental_apis: bool,
    /// Room presets; replaced whole on SIGHUP.
    pub presets: std::sync::RwLock<Arc<Presets>>,
    /// What the MQTT uplink last reported (`None` when it is not configured).
    pub uplink: std::sync::Mutex<Option<UplinkState>>,
    /// `XYTE_SCHEDULE_GRACE`: how late a missed due time of a room schedule may still fire.
    pub schedule_grace: Duration,
    /// Wakes the scheduler when the schedules or a pause changed.
    pub schedule_wake: tokio::sync::Notify,
    /// Alert rules and channels (`XYTE_ALERTS_FILE`); replaced whole on SIGHUP.
    pub alerts: std::sync::RwLock<Arc<AlertRules>>,
    /// Wakes the alerter when the rules or the silences changed.
    pub alerts_wake: tokio::sync::Notify,
    /// `XYTE_SITE`: names this gateway in alerts.
    pub site: String,
    /// Each principal's `set_context` defaults, as last read or written.
    pub contexts: Contexts,
}

impl App {
    /// An App with the settings of an empty configuration ([`crate::config::Config::defaults`]), no presets, and its
    /// run-time state empty. Callers set what differs with struct update syntax
    /// (`App { read_only: true, ..App::new(store, client) }`), so a new field is added here once.
    pub fn new(store: Store, client: XyteClient) -> App {
        let defaults = crate::config::Config::defaults();
        let sync = Arc::<SyncStatus>::default();
        App {
            bus: crate::events::EventBus::new(store.clone()),
            cache: Cache::new(store.clone(), client.clone(), defaults.cache_ttl, sync.clone()),
            store,
            sync,
            client,
            read_only: defaults.read_only,
            command_ttl: defaults.command_ttl,
            outbox_limits: OutboxLimits::new(
                defaults.outbox_max,
                defaults.outbox_max_per_device,
                defaults.rate_limit_per_min,
            ),
            env_label: defaults.env_label,
            started: Instant::now(),
            outbox_wake: Default::default(),
            mcp_clients: Default::default(),
            experimental_apis: defaults.experimental_apis,
            presets: Default::default(),
            uplink: Default::default(),
            schedule_grace: defaults.schedule_grace,
            schedule_wake: Default::default(),
            alerts: Default::default(),
            alerts_wake: Default::default(),
            site: defaults.site,
            contexts: Default::default(),
        }
    }

    pub fn presets(&self) -> Arc<Presets> {
        self.presets.read().map(|p| p.clone()).unwrap_or_default()
    }

    pub fn alert_rules(&self) -> Arc<AlertRules> {
        self.alerts.read().map(|a| a.clone()).unwrap_or_default()
    }

    pub fn set_alert_rules(&self, rules: AlertRules) {
        if let Ok(mut a) = self.alerts.write() {
            *a = Arc::new(rules);
        }
        self.alerts_wake.notify_one();
    }

    pub fn set_presets(&self, presets: Presets) {
        if let Ok(mut p) = self.presets.write() {
            *p = Arc::new(presets);
        }
        self.schedule_wake.notify_one();
    }
}

/// The MQTT uplink as readiness, `xyte-edge status`, metrics and the dashboard show it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct UplinkState {
    /// The broker URL (never with credentials).
    pub broker: String,
    pub connected: bool,
    /// The connection counter of the current (or last) connection.
    pub session: i64,
    /// Events of the log not yet acknowledged by the broker.
    pub backlog: u64,
    /// Why the last connection ended or failed.
    pub last_error: Option<String>,
    /// Whether command requests are answered.
    pub commands: bool,
}

impl App {
    pub fn uplink(&self) -> Option<UplinkState> {
        self.uplink.lock().ok().and_then(|u| u.clone())
    }

    pub fn update_uplink(&self, f: impl FnOnce(&mut UplinkState)) {
        if let Ok(mut u) = self.uplink.lock() {
            f(u.get_or_insert_with(Default::default));
        }
    }
}

/// Who is calling: a stable id (for context and audit) and a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// e.g. `uid:1000` for a socket peer, `token:ops-laptop` for a LAN token.
    pub id: String,
    pub role: Role,
}

/// Reports progress of a long operation (presets, `send_command` with `wait`) to whoever asked for it.
pub type Progress = Arc<dyn Fn(f64, Option<f64>, String) + Send + Sync>;

pub struct Ctx {
    pub app: Arc<App>,
    pub principal: Principal,
    pub progress: Option<Progress>,
}

impl Ctx {
    pub fn report(&self, done: f64, total: Option<f64>, message: impl Into<String>) {
        if let Some(p) = &self.progress {
            p(done, total, message.into());
        }
    }
}

/// Admission control of the outbox (issue 23): acknowledging a command promises it is delivered once or explicitly
/// expired, so the outbox takes no more than the upstream budget can deliver within `XYTE_COMMAND_TTL`.
///
/// Only commands not yet handed to Xyte count (`queued`, `sending`): they are the ones waiting for the budget, and
/// the only ones that can expire. Once at Xyte a command's progress is the device's; counting it would let an
/// offline device, whose commands stay pending at Xyte for hours, block its queue that long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    /// `XYTE_OUTBOX_MAX`: over all devices.
    pub max: u64,
    /// `XYTE_OUTBOX_MAX_PER_DEVICE`.
    pub per_device: u64,
    /// What a refusal suggests waiting: the time the commands' share of the budget (half of it, as the default
    /// limits assume) takes to deliver one command, which frees a place.
    pub retry_after_s: u64,
}

impl OutboxLimits {
    pub fn new(max: u64, per_device: u64, rate_limit_per_min: u32) -> Self {
        let retry_after_s = 120u64.div_ceil(u64::from(rate_limit_per_min.max(1)));
        OutboxLimits { max, per_device, retry_after_s }
    }

    /// Refuses (`rate_limited`, nothing stored) when `wanted` more commands per device would take a device's queue
    /// or the whole outbox past its limit. Run it in the write transaction that stores them, so two callers cannot
    /// both take the last place.
    pub fn admit(&self, conn: &Connection, wanted: &[(String, u64)]) -> Result<Result<(), Error>, StoreError> {
        let more = |n: u64| if n == 1 { "another command".to_string() } else { format!("{n} more commands") };
        for (device, n) in wanted {
            let queued = tasks::device_outbox_depth(conn, device)? as u64;
            if queued + n > self.per_device {
                return Ok(Err(self.refusal(format!(
                    "device {device} already has {queued} undelivered commands in the outbox; \
                     XYTE_OUTBOX_MAX_PER_DEVICE={} leaves no room for {}",
                    self.per_device,
                    more(*n)
                ))));
            }
        }
        let total = wanted.iter().map(|(_, n)| n).sum();
        let queued = tasks::outbox_depth(conn)? as u64;
        if queued + total > self.max {
            return Ok(Err(self.refusal(format!(
                "the outbox already holds {queued} undelivered commands; XYTE_OUTBOX_MAX={} leaves no room for {}",
                self.max,
                more(total)
            ))));
        }
        Ok(Ok(()))
    }

    fn refusal(&self, why: String) -> Error {
        Error::over_limit(
            format!(
                "{why}. Nothing was queued or sent: commands are delivered to Xyte only as fast as XYTE_RATE_LIMIT \
                 allows"
            ),
            self.retry_after_s,
        )
        .with_hint("retry after retry_after_s seconds, or once get_task_status shows earlier commands sent")
    }
}
