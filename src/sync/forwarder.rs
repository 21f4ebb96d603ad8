//! The forwarder: delivers queued commands from the outbox to Xyte, in order per device, with backoff; expires
//! what waited longer than `XYTE_COMMAND_TTL`; follows delivered commands to their final status. Every step is an
//! event. A delivery whose outcome is unknown (timeout or crash mid-POST) is reconciled by reading the device's
//! recent commands before anything is sent again, because Xyte has no idempotency keys.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::error::ErrorCode;
use crate::runtime::App;
use crate::store::events::NewEvent;
use crate::store::tasks::{self, AT_XYTE, Patch, Task, TaskState};
use crate::store::{Durability, now_ms};
use crate::systemd::Heartbeat;
use crate::xyte::Priority;

const EXPIRED: &str = "not delivered within XYTE_COMMAND_TTL";
const TRACK_EVERY: Duration = Duration::from_secs(2);
/// Expired tasks read and marked per forwarder round.
const EXPIRE_BATCH: usize = 256;
/// Commands read per device when reconciling or tracking: what real clients ask for, so a busy
/// device's task is not pushed out of view by the 100 newest.
const COMMAND_LIST: usize = 500;

/// How long a task waits before its next attempt, after `attempts` so far: 1 s doubling up to about a minute.
fn backoff_ms(attempts: i64) -> i64 {
    1000 * 2i64.pow((attempts as u32).min(6))
}

/// What Xyte's command list says about a delivery whose outcome was unknown.
enum Reconciled {
    /// It arrived: this is its Xyte command id.
    Delivered(String),
    NotDelivered,
    /// The list could not be read, so nobody knows yet.
    Unknown,
}

pub struct Forwarder {
    app: Arc<App>,
    heartbeat: Heartbeat,
}

impl Forwarder {
    pub fn new(app: Arc<App>, heartbeat: Heartbeat) -> Self {
        Forwarder { app, heartbeat }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        // A task left in `sending` by a crash has an unknown outcome: reconcile before resending. Not at once: the
        // dead process's POST may still be in progress at Xyte, and a list read now would miss it and resend. After
        // a whole call budget, that POST has either landed or never will.
        let now = now_ms();
        let settle = now + self.app.client.call_budget().as_millis() as i64;
        let _ = self.app.store.write(Durability::Full, move |c| tasks::requeue_interrupted(c, now, settle)).await;
        // Following delivered commands runs beside delivery, not between deliveries: it reads one command list per
        // device, and with a slow Xyte that took seconds during which new commands waited in the outbox.
        let tracker = Forwarder { app: self.app.clone(), heartbeat: self.heartbeat.clone() };
        let tracking = tokio::spawn(tracker.track_until(shutdown.clone()));
        let mut reachable = self.app.sync.reachable();
        loop {
            self.heartbeat.beat();
            // Xyte is back after an outage: what waited out a long backoff goes now, not up to a minute later.
            let now_reachable = self.app.sync.reachable();
            if reachable == Some(false) && now_reachable == Some(true) {
                self.retry_now().await;
            }
            reachable = now_reachable;
            self.expire().await;
            self.deliver().await;
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = tracking.await;
                    return;
                }
                _ = self.app.outbox_wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn retry_now(&self) {
        let now = now_ms();
        let _ = self.app.store.write(Durability::Normal, move |c| tasks::retry_queued_now(c, now)).await;
    }

    async fn event(&self, kind: &str, t: &Task, data: Value) {
        let mut data = data;
        data["task_id"] = json!(t.task_id);
        data["command"] = json!(t.command);
        let _ = self.app.bus.publish(vec![NewEvent::new(kind, data).device(&t.device_id)]).await;
    }

    async fn set(&self, t: &Task, from: &'static [TaskState], to: TaskState, patch: Patch) -> bool {
        let id = t.task_id.clone();
        self.app
            .store
            .write(Durability::Full, move |c| tasks::transition(c, &id, from, to, &patch, now_ms()))
            .await
            .unwrap_or(false)
    }

    async fn expire(&self) {
        let now = now_ms();
        // A task whose last POST has an unknown outcome may already be at Xyte: calling it expired (and never
        // delivered) could be a lie, so `tasks::expired` leaves it out; `deliver` expires it once reconciliation
        // shows it never arrived. One batch per round (rounds are a second apart): an outbox tens of thousands deep
        // is never read whole, and a batch that cannot be marked (a full disk) is not re-read in a busy loop.
        let Ok(batch) = self.app.store.read(move |c| tasks::expired(c, now, EXPIRE_BATCH)).await else { return };
        for t in &batch {
            self.expire_one(t).await;
        }
    }

    async fn expire_one(&self, t: &Task) {
        let patch = Patch { last_error: Some(EXPIRED.into()), ..Default::default() };
        if self.set(t, &[TaskState::Queued], TaskState::Expired, patch).await {
            self.event("command.expired", t, json!({"reason": EXPIRED})).await;
        }
    }

    async fn deliver(&self) {
        let now = now_ms();
        let Ok(due) = self.app.store.read(move |c| tasks::due(c, now, 16)).await else { return };
        for t in due {
            // Deliveries run one at a time, right here, so a task still `sending` now is one whose outcome could not
            // be recorded (the disk was full when Xyte answered). Like one a crash left behind: reconcile, never resend.
            if t.state == TaskState::Sending {
                let patch = Patch { outcome_unknown: true, ..Default::default() };
                self.set(&t, &[TaskState::Sending], TaskState::Queued, patch).await;
                continue;
            }
            if t.outcome_unknown {
                match self.reconcile(&t).await {
                    Reconciled::Delivered(found) => {
                        let patch = Patch { xyte_command_id: Some(found.clone()), ..Default::default() };
                        if self.set(&t, &[TaskState::Queued], TaskState::Sent, patch).await {
                            self.event("command.sent", &t, json!({"xyte_command_id": found, "reconciled": true})).await;
                        }
                        continue;
                    }
                    Reconciled::NotDelivered if t.expires_at <= now_ms() => {
                        self.expire_one(&t).await;
                        continue;
                    }
                    Reconciled::NotDelivered => {}
                    Reconciled::Unknown => {
                        // Sending without knowing could deliver it twice (a 5xx on the list says nothing about the
                        // earlier POST): keep the outcome unknown and ask again after a backoff.
                        let patch = Patch {
                            next_attempt_at: Some(now_ms() + backoff_ms(t.attempts)),
                            outcome_unknown: true,
                            ..Default::default()
                        };
                        self.set(&t, &[TaskState::Queued], TaskState::Queued, patch).await;
                        continue;
                    }
                }
            }
            // `sending` clears an unknown outcome: reconciliation just found that POST never arrived; this one's counts.
            let sending = Patch { count_attempt: true, ..Default::default() };
            if !self.set(&t, &[TaskState::Queued], TaskState::Sending, sending).await {
                continue;
            }
            match self.app.client.send_command(&t.device_id, t.body.clone(), Priority::Command).await {
                Ok(sent) => {
                    let patch = Patch { xyte_command_id: Some(sent.id.clone()), ..Default::default() };
                    if self.set(&t, &[TaskState::Sending], TaskState::Sent, patch).await {
                        self.event("command.sent", &t, json!({"xyte_command_id": sent.id})).await;
                    }
                }
                Err(e) if e.code.is_unreachable() => {
                    // A timeout may have delivered it; a refused connection certainly did not.
                    let patch = Patch {
                        last_error: Some(e.message.clone()),
                        next_attempt_at: Some(now_ms() + backoff_ms(t.attempts)),
                        outcome_unknown: matches!(e.code, ErrorCode::Timeout | ErrorCode::XyteServerError),
                        ..Default::default()
                    };
                    self.set(&t, &[TaskState::Sending], TaskState::Queued, patch).await;
                }
                Err(e) => {
                    let patch = Patch { last_error: Some(e.to_string()), ..Default::default() };
                    if self.set(&t, &[TaskState::Sending], TaskState::Rejected, patch).await {
                        self.event("command.failed", &t, json!({"reason": e.message, "code": e.code})).await;
                    }
                }
            }
        }
    }

    /// Looks for the task's command among the device's commands created since the task: if found, it was delivered.
    /// Commands already known to belong to other tasks are not candidates — a device often gets the same command
    /// (`reboot`) many times, and one task must never take another's delivery for its own. Delivery is in order per
    /// device, so the oldest unclaimed match is this task's.
    async fn reconcile(&self, t: &Task) -> Reconciled {
        let Ok(list) = self.app.client.list_commands(&t.device_id, None, COMMAND_LIST, Priority::Command).await else {
            return Reconciled::Unknown;
        };
        let device = t.device_id.clone();
        let Ok(claimed) = self.app.store.read(move |c| tasks::claimed_command_ids(c, &device)).await else {
            return Reconciled::Unknown;
        };
        // Clocks differ a little between the gateway and Xyte; allow a few seconds.
        let since = t.created_at - 5_000;
        let created_ms = |at: &str| {
            time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                .map(|d| (d.unix_timestamp_nanos() / 1_000_000) as i64)
                .ok()
        };
        // The list is newest first; the oldest unclaimed match is the one this task's POST created.
        list.into_iter()
            .rev()
            .find(|c| {
                c.name.as_deref() == Some(t.command.as_str())
                    && !claimed.contains(&c.id)
                    && c.created_at.as_deref().and_then(created_ms).is_some_and(|ms| ms >= since)
            })
            .map_or(Reconciled::NotDelivered, |c| Reconciled::Delivered(c.id))
    }

    async fn track_until(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.track() => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(TRACK_EVERY) => {}
            }
        }
    }

    /// Follows delivered commands to their final status at Xyte.
    async fn track(&self) {
        // One device at a time: the tasks at Xyte of a deep outbox would otherwise all be held for the whole cycle.
        let Ok(devices) = self.app.store.read(|c| tasks::devices_in_states(c, AT_XYTE)).await else { return };
        for device in devices {
            let id = device.clone();
            let Ok(list) = self.app.store.read(move |c| tasks::in_states(c, &id, AT_XYTE)).await else { continue };
            let Ok(rows) = self.app.client.list_commands(&device, None, COMMAND_LIST, Priority::Interactive).await
            else {
                continue;
            };
            for t in list {
                let Some(row) = rows.iter().find(|r| Some(&r.id) == t.xyte_command_id.as_ref()) else { continue };
                let Some(to) = row.status.as_deref().and_then(TaskState::from_xyte) else { continue };
                if to != t.state && self.set(&t, AT_XYTE, to, Patch::default()).await {
                    self.event(
                        "command.status_changed",
                        &t,
                        json!({"from": t.state, "to": to, "message": row.message}),
                    )
                    .await;
                }
            }
        }
    }
}
