//! The sender of alert messages: takes the messages whose time has come from the database (written there before
//! anything is tried), renders each for its channel (`alerts::message`) and sends it (`channels`). A receiver that
//! acknowledged a message is never sent it again; one that failed is retried with backoff, and a message older than
//! its channel's `give_up_after` is given up with the reason logged and an `alert.delivery_failed` event. Channels are
//! sent to side by side, each in order, and each at most its `per_hour` messages an hour (the rest wait).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::alerts::delivery::{Budget, Retry, after_failure};
use crate::alerts::message::{self, Context};
use crate::alerts::{Notification, Subject};
use crate::channels::email::{EmailSender, Server};
use crate::channels::http::HttpSender;
use crate::channels::syslog::Syslog;
use crate::config::alerts::{AlertRules, Channel, ChannelKind, Severity};
use crate::error::Error;
use crate::runtime::App;
use crate::store::alerts::{self as records, Delivery};
use crate::store::events::{self, NewEvent};
use crate::store::{Durability, now_ms};

/// Messages taken per round; the rest follow at once.
const BATCH: usize = 64;
/// With nothing pending, the sender still looks this often (a message another path queued without waking it).
const IDLE: Duration = Duration::from_secs(60);

pub async fn run(app: Arc<App>, queued: Arc<Notify>, shutdown: CancellationToken) {
    let mut senders = Senders::default();
    let mut budgets: HashMap<String, Budget> = HashMap::new();
    // Messages a receiver acknowledged whose record could not be written (a full disk): never sent again, recorded
    // before anything else is tried.
    let mut unrecorded: HashSet<i64> = HashSet::new();
    let host = crate::config::host_name();
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = round(&app, &mut senders, &mut budgets, &mut unrecorded, &host) => next.unwrap_or_else(|e| {
                // The store refused a write: wait, rather than try (and send) again at once.
                tracing::warn!("alert delivery: {e}");
                Some(now_ms() + 5_000)
            }),
        };
        let wait = next.map_or(IDLE, |n| Duration::from_millis((n - now_ms()).max(0) as u64)).min(IDLE);
        if wait.is_zero() {
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = queued.notified() => {}
        }
    }
}

/// One round: every due message tried once. Answers when the next one is due.
async fn round(
    app: &Arc<App>,
    senders: &mut Senders,
    budgets: &mut HashMap<String, Budget>,
    unrecorded: &mut HashSet<i64>,
    host: &str,
) -> Result<Option<i64>, Error> {
    if !unrecorded.is_empty() {
        let ids: Vec<i64> = unrecorded.iter().copied().collect();
        app.store
            .write(Durability::Full, move |c| ids.iter().try_for_each(|id| records::sent(c, *id, now_ms()).map(drop)))
            .await?;
        unrecorded.clear();
    }
    let now = now_ms();
    let due = app.store.read(move |c| records::due(c, now, BATCH)).await?;
    if due.is_empty() {
        return Ok(app.store.read(records::next_due).await?);
    }
    let rules = app.alert_rules();
    senders.refresh(&rules);
    let mut by_channel: BTreeMap<String, Vec<Delivery>> = BTreeMap::new();
    for d in due {
        by_channel.entry(d.channel.clone()).or_default().push(d);
    }
    let mut running = JoinSet::new();
    for (name, list) in by_channel {
        let channel = rules.channels.get(&name).cloned();
        let budget = match &channel {
            Some(c) => budgets.remove(&name).unwrap_or_else(|| Budget::new(c.per_hour)),
            None => Budget::new(1),
        };
        let sender = senders.built.get(&name).cloned();
        let (app, site, host) = (app.clone(), app.site.clone(), host.to_string());
        running.spawn(async move {
            let mut budget = budget;
            for d in list {
                // A record that cannot be written ends this channel's turn (the next messages would fail alike).
                if let Err(e) = send_one(&app, channel.as_ref(), sender.as_deref(), &mut budget, &site, &host, d).await
                {
                    return (name, budget, Some(e));
                }
            }
            (name, budget, None)
        });
    }
    let mut failed = None;
    while let Some(done) = running.join_next().await {
        if let Ok((name, budget, error)) = done {
            budgets.insert(name, budget);
            if let Some(e) = error {
                unrecorded.extend(e.sent);
                failed = Some(e.error);
            }
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(Some(now_ms())),
    }
}

/// A record of an attempt that could not be written; `sent` when the receiver had acknowledged the message.
struct Unrecorded {
    sent: Option<i64>,
    error: Error,
}

impl Unrecorded {
    fn of(sent: Option<i64>) -> impl FnOnce(crate::store::StoreError) -> Unrecorded {
        move |e| Unrecorded { sent, error: e.into() }
    }
}

/// Tries one message and records the outcome.
async fn send_one(
    app: &App,
    channel: Option<&Channel>,
    sender: Option<&Sender>,
    budget: &mut Budget,
    site: &str,
    host: &str,
    d: Delivery,
) -> Result<(), Unrecorded> {
    let now = now_ms();
    let (Some(channel), Some(sender)) = (channel, sender) else {
        let why = format!("channel {:?} is no longer in the alerts file", d.channel);
        return record_failure(app, &d, &why, Retry::GiveUp).await;
    };
    if let Err(at) = budget.take(now) {
        // Over the channel's hourly budget: it waits, without counting an attempt.
        let id = d.id;
        return app
            .store
            .write(Durability::Normal, move |c| records::defer(c, id, at))
            .await
            .map_err(Unrecorded::of(None));
    }
    let Some(n) = notification(&d) else {
        return record_failure(app, &d, "the stored message cannot be read", Retry::GiveUp).await;
    };
    let severity = match d.notification["severity"].as_str() {
        Some("critical") => Severity::Critical,
        Some("info") => Severity::Info,
        _ => Severity::Warning,
    };
    let ctx = Context { site, severity };
    match sender.send(&channel.kind, &n, ctx, host).await {
        Ok(()) => {
            let id = d.id;
            // FULL: an acknowledged message must stay acknowledged across a power loss, or it would go out twice.
            app.store
                .write(Durability::Full, move |c| records::sent(c, id, now_ms()))
                .await
                .map_err(Unrecorded::of(Some(id)))?;
            tracing::info!(channel = %d.channel, rule = %d.rule, attempts = d.attempts + 1, "alert delivered");
            Ok(())
        }
        Err(error) => {
            let attempts = d.attempts + 1;
            let retry = after_failure(d.created_at, attempts, now_ms(), channel.give_up_after.as_millis() as i64);
            record_failure(app, &d, &error, retry).await
        }
    }
}

async fn record_failure(app: &App, d: &Delivery, error: &str, retry: Retry) -> Result<(), Unrecorded> {
    let (id, attempts, now) = (d.id, d.attempts + 1, now_ms());
    let error = error.to_string();
    match retry {
        Retry::At(at) => {
            // The first failure is worth a warning; the retries of a receiver that stays down are not.
            if d.attempts == 0 {
                tracing::warn!(channel = %d.channel, rule = %d.rule, "alert not delivered, will retry: {error}");
            } else {
                tracing::debug!(channel = %d.channel, rule = %d.rule, attempts, "alert not delivered: {error}");
            }
            let written = app.store.write(Durability::Normal, move |c| records::failed(c, id, &error, Some(at), now));
            written.await.map(drop).map_err(Unrecorded::of(None))
        }
        Retry::GiveUp => {
            tracing::warn!(channel = %d.channel, rule = %d.rule, attempts, "alert given up: {error}");
            let event = NewEvent::new(
                "alert.delivery_failed",
                json!({"delivery_id": id, "channel": d.channel, "rule": d.rule, "attempts": attempts, "error": error}),
            );
            let appended = app
                .store
                .write(Durability::Normal, move |c| {
                    records::failed(c, id, &error, None, now)?;
                    events::append(c, &[event], now)
                })
                .await
                .map_err(Unrecorded::of(None))?;
            app.bus.broadcast(&appended);
            Ok(())
        }
    }
}

/// The notification a stored message carries.
fn notification(d: &Delivery) -> Option<Notification> {
    let n = &d.notification;
    let subjects: Vec<Subject> = serde_json::from_value(n["subjects"].clone()).ok()?;
    Some(Notification {
        rule: n["rule"].as_str()?.to_string(),
        kind: if n["kind"] == "resolved" { "resolved" } else { "firing" },
        subjects,
        first_at: n["first_at"].as_i64().unwrap_or(d.created_at),
    })
}

/// One sender per channel, built when the rules are loaded (a bad CA file fails every message of that channel with
/// the reason, until a reload fixes it).
#[derive(Default)]
struct Senders {
    of: Option<Arc<AlertRules>>,
    built: HashMap<String, Arc<Sender>>,
}

impl Senders {
    fn refresh(&mut self, rules: &Arc<AlertRules>) {
        if self.of.as_ref().is_some_and(|r| Arc::ptr_eq(r, rules)) {
            return;
        }
        let http = HttpSender::default();
        self.built = rules.channels.iter().map(|(name, c)| (name.clone(), Arc::new(Sender::new(c, &http)))).collect();
        self.of = Some(rules.clone());
    }
}

enum Sender {
    Email(Box<EmailSender>),
    Http(HttpSender),
    Syslog(Syslog),
    /// The channel's settings could not be turned into a sender; every message fails with this.
    Broken(String),
}

impl Sender {
    fn new(c: &Channel, http: &HttpSender) -> Sender {
        let built = match &c.kind {
            ChannelKind::Email { host, port, tls, username, password, from, to, ca_file } => {
                let server = Server {
                    host,
                    port: *port,
                    tls: *tls,
                    username: username.as_deref(),
                    password: password.as_ref(),
                    ca_file: ca_file.as_deref(),
                };
                EmailSender::new(server, from, to).map(|m| Sender::Email(Box::new(m)))
            }
            ChannelKind::Slack { .. } | ChannelKind::Teams { .. } | ChannelKind::Webhook { .. } => {
                Ok(Sender::Http(http.clone()))
            }
            ChannelKind::Syslog { transport, host, port, ca_file } => {
                Syslog::new(*transport, host, *port, ca_file.as_deref()).map(Sender::Syslog)
            }
        };
        built.unwrap_or_else(|e| {
            tracing::warn!("alert channel {:?}: {e}", c.name);
            Sender::Broken(e)
        })
    }

    async fn send(&self, kind: &ChannelKind, n: &Notification, ctx: Context<'_>, host: &str) -> Result<(), String> {
        let body = |v: serde_json::Value| v.to_string().into_bytes();
        match (self, kind) {
            (Sender::Broken(e), _) => Err(e.clone()),
            (Sender::Email(mail), _) => {
                let (subject, text) = message::email(n, ctx);
                mail.send(&subject, &text).await
            }
            (Sender::Http(http), ChannelKind::Slack { url }) => {
                http.post(url.expose(), body(message::slack(n, ctx)), None).await
            }
            (Sender::Http(http), ChannelKind::Teams { url }) => {
                http.post(url.expose(), body(message::teams(n, ctx)), None).await
            }
            (Sender::Http(http), ChannelKind::Webhook { url, secret }) => {
                let secret = secret.as_ref().map(|s| s.expose().as_str());
                http.post(url, body(message::webhook(n, ctx)), secret).await
            }
            (Sender::Syslog(syslog), _) => {
                let stamp = crate::cache::rfc3339(now_ms()).unwrap_or_default();
                syslog.send(&message::syslog(n, ctx, host, &stamp)).await
            }
            (Sender::Http(_), _) => Err("internal: an HTTP sender for a channel that is not HTTP".into()),
        }
    }
}
