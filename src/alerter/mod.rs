//! The alerter: watches what the gateway already knows — the cached devices, its own connections, the outbox, the
//! disk, the event log — against the alert rules (`XYTE_ALERTS_FILE`), keeps each alert's record (`store/alerts.rs`),
//! groups what fires together, and writes one message per channel before anything is tried; [`deliver`] sends them.
//! What fires, repeats, resolves or stays silent is decided by `alerts` (pure); this module gathers the picture,
//! keeps the records and the clock.
//!
//! Durability: an alert's row says whether people were told (`told_at`) and a resolve whose notice is not queued yet
//! stays `resolving`, both written with the messages in one FULL transaction; so a crash inside a grouping window tells
//! after the restart what it had not told, and never tells twice what it had queued.

pub mod deliver;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alerts::conditions::{self, Device, Gateway};
use crate::alerts::{Alert, Change, Grouper, Notification, Silence, State, Subject, Tracker};
use crate::cache::Compact;
use crate::config::alerts::{AlertRules, ChannelKind, Condition, DeviceFacts, Rule, SyslogTransport};
use crate::error::Error;
use crate::runtime::App;
use crate::store::alerts::{self as records, AlertRow};
use crate::store::events::{self, EventFilter, NewEvent};
use crate::store::{Durability, now_ms, tasks};

/// Rules are looked at again at least this often (the disk, the outbox's age, the uplink: states without events).
const RECHECK: Duration = Duration::from_secs(15);
/// A channel's server is probed at start and reload this long at most.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Subjects an `alert.*` event lists at most (the count says how many there were).
const EVENT_SUBJECTS: usize = 50;
/// Events of the log read per pass for the event rules.
const EVENT_BATCH: usize = 1000;

/// Starts the alerter and its sender.
pub fn start(app: Arc<App>, tasks: &TaskTracker, shutdown: &CancellationToken) {
    let queued = Arc::new(Notify::new());
    tasks.spawn(Watcher::new(app.clone(), queued.clone()).run(shutdown.clone()));
    tasks.spawn(deliver::run(app, queued, shutdown.clone()));
}

/// Re-reads the alerts file (SIGHUP). A file that cannot be read or is not JSON keeps the previous rules.
pub fn reload(app: &App) {
    let path = app.alert_rules().path.clone();
    match AlertRules::load(&path) {
        Ok(rules) => {
            tracing::info!(file = %path.display(), rules = rules.rules.len(), channels = rules.channels.len(),
                           "alert rules reloaded");
            report_problems(&rules);
            app.set_alert_rules(rules);
        }
        Err(e) => tracing::error!("alert rules not reloaded, keeping the previous ones: {e}"),
    }
}

/// Loads the file at start; a file that cannot be read is reported and means no alerts until a reload fixes it.
pub fn load(path: &std::path::Path) -> AlertRules {
    match AlertRules::load(path) {
        Ok(rules) => {
            report_problems(&rules);
            rules
        }
        Err(e) => {
            tracing::error!("no alerts: {e}");
            AlertRules { path: path.to_path_buf(), problems: vec![e], ..Default::default() }
        }
    }
}

fn report_problems(rules: &AlertRules) {
    for p in &rules.problems {
        tracing::error!("alerts file {}: {p} (left out; the rest is used)", rules.path.display());
    }
}

/// What the watcher keeps between passes.
struct Watcher {
    app: Arc<App>,
    /// Told when messages were queued, to wake the sender.
    queued: Arc<Notify>,
    tracker: Tracker,
    grouper: Grouper,
    /// The rules of the last pass, to notice a reload.
    rules: Arc<AlertRules>,
    /// Each device's status and since when (ms), as this watcher saw it change.
    statuses: HashMap<String, (String, i64)>,
    /// Before the first pass: each device's last status change in the event log (a restart keeps "offline since").
    changed_at: Option<HashMap<String, i64>>,
    xyte_down: Option<i64>,
    uplink_down: Option<i64>,
    /// The last event of the log the event rules have seen.
    cursor: i64,
}

impl Watcher {
    fn new(app: Arc<App>, queued: Arc<Notify>) -> Watcher {
        Watcher {
            app,
            queued,
            tracker: Tracker::default(),
            grouper: Grouper::default(),
            rules: Arc::default(),
            statuses: HashMap::new(),
            changed_at: None,
            xyte_down: None,
            uplink_down: None,
            cursor: 0,
        }
    }

    /// Rebuilds the tracker from the records (at start, and after a pass failed half-way, so memory and records agree
    /// again): firing alerts (told or not), resolves not yet told, event alerts not
    /// yet told; and starts the event rules at the end of the log (events before the start were someone else's news).
    async fn restore(&mut self) -> Result<(), Error> {
        self.tracker = Tracker::default();
        self.grouper = Grouper::default();
        let now = now_ms();
        let (firing, resolving, untold, silences, cursor, changed) = self
            .app
            .store
            .read(move |c| {
                Ok((
                    records::firing(c)?,
                    records::resolving(c)?,
                    records::untold_notices(c)?,
                    records::silences(c, now)?,
                    events::latest_id(c)?,
                    events::latest_per_device(c, "device.status_changed")?,
                ))
            })
            .await?;
        for row in firing {
            let key = (row.rule.clone(), row.subject.key.clone());
            let alert = Alert {
                rule: row.rule,
                subject: row.subject,
                state: State::Firing,
                since: row.since,
                fired_at: Some(row.fired_at),
                told_at: row.told_at,
            };
            self.tracker.alerts.insert(key, alert);
        }
        for row in resolving {
            let at = row.resolved_at.unwrap_or(now);
            self.grouper.add(&Change::Resolve { rule: row.rule, subject: row.subject, since: row.since, at }, now);
        }
        for row in untold.into_iter().filter(|r| !silences.iter().any(|s| s.matches(&r.rule, &r.subject, now))) {
            self.grouper.add(&Change::Fire { rule: row.rule, subject: row.subject, since: row.since }, now);
        }
        self.cursor = cursor;
        self.changed_at = Some(changed.into_iter().collect());
        Ok(())
    }

    async fn run(mut self, shutdown: CancellationToken) {
        let mut events = self.app.bus.subscribe();
        if let Err(e) = self.restore().await {
            tracing::error!("alerts: cannot read their records, alerts are off until a restart: {e}");
            return;
        }
        loop {
            let next = match self.pass(now_ms()).await {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!("alerts: {e}; starting again from the records");
                    if let Err(e) = self.restore().await {
                        tracing::warn!("alerts: cannot read their records: {e}");
                    }
                    None
                }
            };
            let wait = next.map_or(RECHECK, |n| Duration::from_millis((n - now_ms()).max(0) as u64));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait.min(RECHECK)) => {}
                _ = self.app.alerts_wake.notified() => {}
                event = events.recv() => {
                    use tokio::sync::broadcast::error::RecvError;
                    match event {
                        // Its own events are no news to it.
                        Ok(e) if e.kind.starts_with("alert.") => continue,
                        Ok(_) | Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => return,
                    }
                    // A burst (a poll that changed 200 devices) is one pass: take what else is waiting.
                    while events.try_recv().is_ok() {}
                }
            }
        }
    }

    /// One look at everything: records what changed, queues what is due, and answers when to look again.
    async fn pass(&mut self, now: i64) -> Result<Option<i64>, Error> {
        let rules = self.app.alert_rules();
        if !Arc::ptr_eq(&rules, &self.rules) {
            self.rules = rules.clone();
            tokio::spawn(probe(rules.clone()));
            // Rules loaded now watch events from now on: what happened before is not news to them.
            self.cursor = self.app.store.read(events::latest_id).await?;
        }
        // No rules and nothing left to tell (a gateway without alerts): nothing to read.
        if rules.rules.is_empty() && self.tracker.alerts.is_empty() && self.grouper.next_due(|_| 0).is_none() {
            return Ok(None);
        }
        let silences = self.app.store.read(move |c| records::silences(c, now)).await?;
        let devices = self.devices(&rules, now).await?;
        let gateway = self.gateway(&rules, now).await?;
        let facts: Vec<Device<'_>> = devices.iter().map(DeviceRow::facts).collect();

        let mut writes: Vec<Write> = vec![];
        let mut changes: Vec<Change> = vec![];
        // Alerts of rules that are gone (a reload) end without a word.
        let gone: Vec<(String, String)> =
            self.tracker.alerts.keys().filter(|(r, _)| !rules.rules.iter().any(|x| &x.name == r)).cloned().collect();
        for key in gone {
            if let Some(a) = self.tracker.alerts.remove(&key) {
                writes.push(Write::Resolve { rule: a.rule, subject: a.subject.key, notice: false });
            }
        }
        for rule in &rules.rules {
            let Some(holding) = conditions::holding(&rule.condition, &facts, &gateway, now) else { continue };
            let before: Vec<(String, State)> = self
                .tracker
                .alerts
                .values()
                .filter(|a| a.rule == rule.name)
                .map(|a| (a.subject.key.clone(), a.state))
                .collect();
            let told = self.tracker.observe(&rule.name, conditions::timing(rule), &holding, now, &silences);
            for (key, state) in &before {
                let still = self.tracker.alerts.get(&(rule.name.clone(), key.clone()));
                if *state == State::Firing && still.is_none() {
                    let notice =
                        told.iter().any(|c| matches!(c, Change::Resolve { subject, .. } if &subject.key == key));
                    writes.push(Write::Resolve { rule: rule.name.clone(), subject: key.clone(), notice });
                }
            }
            for a in self.tracker.alerts.values().filter(|a| a.rule == rule.name && a.state == State::Firing) {
                if !before.iter().any(|(k, s)| *k == a.subject.key && *s == State::Firing) {
                    writes.push(Write::Fired(row(a, "firing", now)));
                }
            }
            changes.extend(told);
        }
        changes.extend(self.event_alerts(&rules, &silences, now, &mut writes).await?);
        if !writes.is_empty() {
            self.app
                .store
                .write(Durability::Normal, move |c| {
                    for w in &writes {
                        match w {
                            Write::Fired(row) => records::put(c, row)?,
                            Write::Resolve { rule, subject, notice } => {
                                records::resolve(c, rule, subject, now, *notice)?;
                            }
                        }
                    }
                    Ok(())
                })
                .await?;
        }
        for c in &changes {
            self.grouper.add(c, now);
        }
        let window = |rule: &str| window_ms(&rules, rule);
        for n in self.grouper.take_due(now, window) {
            self.queue(&rules, n, now).await?;
        }
        let next = rules
            .rules
            .iter()
            .filter_map(|r| self.tracker.next_due(&r.name, conditions::timing(r)))
            .chain(self.grouper.next_due(window))
            // A silence's end: what it kept quiet and still fires is told then.
            .chain(silences.iter().map(|s| s.until))
            .min();
        Ok(next)
    }

    /// The cached devices (never asking Xyte), with each one's status kept since the watcher saw it change.
    async fn devices(&mut self, rules: &AlertRules, now: i64) -> Result<Vec<DeviceRow>, Error> {
        if !rules.rules.iter().any(|r| matches!(r.condition, Condition::Device { .. })) {
            return Ok(vec![]);
        }
        let Some(items) = self.app.cache.stored_collection("device").await? else { return Ok(vec![]) };
        let changed_at = self.changed_at.take().unwrap_or_default();
        let mut out = Vec::with_capacity(items.len());
        for d in items.iter() {
            let id = text(&d["id"]);
            let status = d["status"].as_str().unwrap_or("unknown");
            let since = match self.statuses.get(&id) {
                Some((s, since)) if s == status => *since,
                Some(_) => now,
                // First seen: its last status change in the log; else, offline, when Xyte last heard from it.
                None => changed_at.get(&id).copied().or_else(|| offline_since(d, status)).unwrap_or(now).min(now),
            };
            self.statuses.insert(id.clone(), (status.to_string(), since));
            out.push(DeviceRow {
                id,
                name: d["name"].as_str().unwrap_or("").to_string(),
                model: d["model"]["name"].as_str().unwrap_or("").to_string(),
                vendor: d["model"]["vendor"].as_str().map(String::from),
                space: d["space"]["full_path"].as_str().unwrap_or("").to_string(),
                status: status.to_string(),
                since,
            });
        }
        let present: std::collections::HashSet<&str> = out.iter().map(|d| d.id.as_str()).collect();
        self.statuses.retain(|id, _| present.contains(id.as_str()));
        Ok(out)
    }

    /// The gateway's own state; reads only what some rule needs.
    async fn gateway(&mut self, rules: &AlertRules, now: i64) -> Result<Gateway, Error> {
        let wants = |f: fn(&Condition) -> bool| rules.rules.iter().any(|r| f(&r.condition));
        let sync = self.app.sync.get();
        self.xyte_down = match sync.reachable {
            // Down since the last cycle that reached Xyte (or, with none since the start, since it was noticed).
            Some(false) => Some(self.xyte_down.unwrap_or(if sync.last_ok_ms > 0 { sync.last_ok_ms } else { now })),
            _ => None,
        };
        self.uplink_down = match self.app.uplink() {
            Some(u) if !u.connected => Some(self.uplink_down.unwrap_or(now)),
            _ => None,
        };
        let mut gw =
            Gateway { xyte_down_since: self.xyte_down, uplink_down_since: self.uplink_down, ..Default::default() };
        if wants(|c| matches!(c, Condition::OutboxOlderThan(_) | Condition::OutboxDeeperThan(_))) {
            let (oldest, depth) =
                self.app.store.read(|c| Ok((tasks::oldest_waiting(c)?, tasks::outbox_depth(c)?))).await?;
            gw.oldest_queued_at = oldest;
            gw.outbox_depth = depth.max(0) as u64;
        }
        if wants(|c| matches!(c, Condition::DiskFreeBelow(_))) {
            gw.disk_free = crate::store::free_bytes(self.app.store.state_dir()).ok();
        }
        Ok(gw)
    }

    /// Events since the last pass that fire an event rule: each told once (unless silenced), recorded `notified`.
    async fn event_alerts(
        &mut self,
        rules: &AlertRules,
        silences: &[Silence],
        now: i64,
        writes: &mut Vec<Write>,
    ) -> Result<Vec<Change>, Error> {
        let watched: Vec<&Rule> = rules.rules.iter().filter(|r| r.condition.is_event()).collect();
        let mut changes = vec![];
        if watched.is_empty() {
            self.cursor = self.app.store.read(events::latest_id).await?;
            return Ok(changes);
        }
        loop {
            let cursor = self.cursor;
            let batch =
                self.app.store.read(move |c| events::after(c, cursor, &EventFilter::default(), EVENT_BATCH)).await?;
            let Some(last) = batch.last() else { break };
            self.cursor = last.id;
            for e in &batch {
                for rule in &watched {
                    let Some(subject) =
                        conditions::triggered(&rule.condition, &e.kind, &e.data, e.device_id.as_deref())
                    else {
                        continue;
                    };
                    let alert = Alert {
                        rule: rule.name.clone(),
                        subject: subject.clone(),
                        state: State::Firing,
                        since: e.ts,
                        fired_at: Some(now),
                        told_at: None,
                    };
                    // Silenced, it is recorded as such and never told: an event is news only when it happens.
                    let silenced = silences.iter().any(|s| s.matches(&rule.name, &subject, now));
                    writes.push(Write::Fired(row(&alert, if silenced { "silenced" } else { "notified" }, now)));
                    if !silenced {
                        changes.push(Change::Fire { rule: rule.name.clone(), subject, since: e.ts });
                    }
                }
            }
            if batch.len() < EVENT_BATCH {
                break;
            }
        }
        Ok(changes)
    }

    /// Writes one message per channel of the rule, marks its alerts told, and appends the `alert.*` event — one FULL
    /// transaction, so a crash before it tells again after the restart and a crash after it sends what it queued.
    async fn queue(&self, rules: &AlertRules, n: Notification, now: i64) -> Result<(), Error> {
        let Some(rule) = rules.rules.iter().find(|r| r.name == n.rule) else { return Ok(()) };
        let stored = stored_notification(&n, rule);
        let channels = rule.channels.clone();
        let keys: Vec<String> = n.subjects.iter().map(|s| s.key.clone()).collect();
        let subjects: Vec<Value> = n.subjects.iter().take(EVENT_SUBJECTS).map(subject_json).collect();
        let mut event = NewEvent::new(
            format!("alert.{}", n.kind),
            json!({"rule": n.rule, "severity": rule.severity.as_str(), "count": n.subjects.len(), "subjects": subjects}),
        );
        if let [one] = &n.subjects[..]
            && matches!(rule.condition, Condition::Device { .. })
        {
            event = event.device(one.key.clone());
        }
        let (rule_name, firing) = (n.rule.clone(), n.kind == "firing");
        let appended = self
            .app
            .store
            .write(Durability::Full, move |c| {
                for ch in &channels {
                    records::enqueue(c, ch, &rule_name, &stored, now)?;
                }
                let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                if firing {
                    records::told(c, &rule_name, &keys, now)?;
                } else {
                    records::resolve_told(c, &rule_name, &keys)?;
                }
                events::append(c, &[event], now)
            })
            .await?;
        self.app.bus.broadcast(&appended);
        tracing::info!(rule = %n.rule, status = n.kind, subjects = n.subjects.len(), channels = rule.channels.len(),
                       "alert queued");
        self.queued.notify_one();
        Ok(())
    }
}

/// A record to write after a pass.
enum Write {
    Fired(AlertRow),
    Resolve { rule: String, subject: String, notice: bool },
}

fn row(a: &Alert, state: &str, now: i64) -> AlertRow {
    AlertRow {
        rule: a.rule.clone(),
        subject: a.subject.clone(),
        state: state.to_string(),
        since: a.since,
        fired_at: a.fired_at.unwrap_or(now),
        // Told once its message is queued (`records::told`), not before.
        told_at: None,
        resolved_at: None,
    }
}

/// A device as the watcher keeps it for one pass.
struct DeviceRow {
    id: String,
    name: String,
    model: String,
    vendor: Option<String>,
    space: String,
    status: String,
    since: i64,
}

impl DeviceRow {
    fn facts(&self) -> Device<'_> {
        Device {
            id: &self.id,
            facts: DeviceFacts {
                name: &self.name,
                model: &self.model,
                vendor: self.vendor.as_deref(),
                space: &self.space,
            },
            status: &self.status,
            since: self.since,
        }
    }
}

fn text(v: &Compact) -> String {
    v.as_str().map(String::from).or_else(|| v.as_i64().map(|n| n.to_string())).unwrap_or_default()
}

/// An offline device's `last_seen_at` (ms), as the start of its outage when the log has no status change of it.
fn offline_since(d: &Compact, status: &str) -> Option<i64> {
    if status != "offline" {
        return None;
    }
    let seen = time::OffsetDateTime::parse(d["last_seen_at"].as_str()?, &time::format_description::well_known::Rfc3339)
        .ok()?;
    Some((seen.unix_timestamp_nanos() / 1_000_000) as i64)
}

fn window_ms(rules: &AlertRules, rule: &str) -> i64 {
    rules.rules.iter().find(|r| r.name == rule).map_or(30_000, |r| r.group_window.as_millis() as i64)
}

fn subject_json(s: &Subject) -> Value {
    json!({"key": s.key, "label": s.label, "space": s.space})
}

/// A message as written before it is tried: the notification and the severity of its rule when it was queued.
fn stored_notification(n: &Notification, rule: &Rule) -> Value {
    json!({"rule": n.rule, "kind": n.kind, "severity": rule.severity.as_str(), "first_at": n.first_at,
           "subjects": n.subjects})
}

/// Tells the operator at start (and after a reload) about a channel whose server cannot be reached now: its messages
/// are kept and retried, and nothing else waits for it.
async fn probe(rules: Arc<AlertRules>) {
    for (name, channel) in &rules.channels {
        let (host, port) = match &channel.kind {
            ChannelKind::Email { host, port, .. } => (host, *port),
            ChannelKind::Syslog { transport: SyslogTransport::Tcp | SyslogTransport::Tls, host, port, .. } => {
                (host, *port)
            }
            _ => continue,
        };
        let reached = tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect((host.as_str(), port))).await;
        let error = match reached {
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {}s", PROBE_TIMEOUT.as_secs()),
        };
        tracing::warn!(
            "alert channel {name:?}: cannot reach {host}:{port}: {error} (its messages are kept and retried)"
        );
    }
}
