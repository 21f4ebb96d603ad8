//! The MQTT uplink (README, Connect a fleet broker): the gateway connects out to the site's or the company's
//! MQTT 5 broker, so a fleet of gateways is one topic tree. Under `XYTE_MQTT_TOPIC_PREFIX` it publishes
//! - `gateway/state` (retained): a birth on every connection, the same topic as its will, `offline` on a clean stop;
//! - `gateway/health` (retained): reachability, last sync, outbox depth, log head, backlog — when they change;
//! - `device/<id>/state` (retained): each device's summary when it changes, empty when the device disappears;
//! - `events/<kind>`: every event of the log, delivered from a cursor kept in the database that moves only past
//!   events the broker acknowledged (PUBACK), so an outage, a partition or a crash loses none;
//!
//! and, with `XYTE_MQTT_COMMANDS=on`, answers command requests on `cmd/req/<tool>` ([`requests`]).
//!
//! One task owns the connection and everything it publishes, in order: the client library numbers publishes as it
//! sends them and reports each number (`Outgoing::Publish`) in the order they were handed to it, so the task can tie
//! every PUBACK to what it acknowledges. At most [`WINDOW`] publishes are handed over and unacknowledged at once:
//! the backlog drains at the broker's pace and a dead broker holds a bounded amount of memory. Each connection is
//! new (clean start); after a loss the task waits (backoff with jitter) and delivers again from the cursor.

mod broker;
mod requests;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, ConnectionError, Event as MqttEvent};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::mqtt::MqttConfig;
use crate::runtime::App;
use crate::store::events::{Event, EventFilter, NewEvent};
use crate::store::{Durability, uplink as records};

/// Publishes handed to the client and not yet acknowledged, at most.
const WINDOW: usize = 256;
/// Events are read from the log in batches of at least this many free places (or whatever is left).
const REFILL: usize = 64;
/// The cursor is written at most this often while events flow (and never while nothing changes).
const SAVE_EVERY: Duration = Duration::from_millis(200);
/// `gateway/health` is compared (and published when it changed) this often.
const HEALTH_EVERY: Duration = Duration::from_secs(5);
/// Device states are compared after device events, at most this often, and at least every [`DEVICES_AT_LEAST`].
const DEVICES_EVERY: Duration = Duration::from_secs(1);
const DEVICES_AT_LEAST: Duration = Duration::from_secs(30);
/// A device state whose only change is `last_seen_at` is published again at most this often.
const LAST_SEEN_EVERY: Duration = Duration::from_secs(300);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How often the backlog is counted again while the broker is away.
const BACKLOG_EVERY: Duration = Duration::from_secs(2);
/// A connection that lasted this long was healthy: the next loss starts the backoff from the minimum again (a broker
/// restarted for maintenance is found again within a second or two). Shorter ones (a broker that accepts and then
/// drops the connection) keep doubling it, so a flapping broker costs little.
const HEALTHY: Duration = Duration::from_secs(10);
/// At a clean stop, how long the `offline` state may take to be acknowledged before the connection is closed anyway.
const STOP_GRACE: Duration = Duration::from_millis(1500);

/// Checks what can only be checked by reading files (the TLS material) and starts the uplink.
pub fn start(
    config: MqttConfig,
    app: Arc<App>,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let tls = broker::tls(&config)?;
    app.update_uplink(|u| {
        u.broker = config.url.clone();
        u.commands = config.commands;
    });
    let topics = Topics::new(&config.topic_prefix);
    let requests = requests::Requests::new(app.clone(), config.role, topics.requests.clone());
    let uplink = Uplink {
        bus: app.bus.subscribe(),
        config,
        tls,
        topics,
        app,
        requests,
        started_at: crate::cache::rfc3339(crate::store::now_ms()).unwrap_or_default(),
    };
    tasks.spawn(uplink.run(shutdown.clone()));
    Ok(())
}

struct Topics {
    state: String,
    health: String,
    /// `<prefix>/device/`
    device: String,
    /// `<prefix>/events/`
    events: String,
    /// `<prefix>/cmd/req/`
    requests: String,
}

impl Topics {
    fn new(prefix: &str) -> Self {
        Topics {
            state: format!("{prefix}/gateway/state"),
            health: format!("{prefix}/gateway/health"),
            device: format!("{prefix}/device/"),
            events: format!("{prefix}/events/"),
            requests: format!("{prefix}/cmd/req/"),
        }
    }
}

/// What the connection lives on, kept across connections.
struct Uplink {
    config: MqttConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    topics: Topics,
    app: Arc<App>,
    bus: broadcast::Receiver<Event>,
    requests: requests::Requests,
    started_at: String,
}

/// Why a connection ended.
enum Ended {
    Stopped,
    Lost(String),
}

impl Uplink {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = BACKOFF_MIN;
        let mut connections = 0u64;
        let mut last_logged = String::new();
        loop {
            if connections > 0 {
                crate::metrics::mqtt_reconnect();
            }
            connections += 1;
            let began = Instant::now();
            let why = match self.connection(&shutdown).await {
                Ended::Stopped => return,
                Ended::Lost(why) => why,
            };
            crate::metrics::mqtt_state(false, self.app.uplink().map_or(0, |u| u.backlog));
            self.app.update_uplink(|u| {
                u.connected = false;
                u.last_error = Some(why.clone());
            });
            if began.elapsed() >= HEALTHY {
                backoff = BACKOFF_MIN;
            }
            let wait = jitter(backoff);
            // The same failure again and again (a broker down for hours) is logged once, then at debug level.
            if why != last_logged {
                tracing::warn!(broker = %self.config.url, "MQTT uplink: {why}; retrying in {:.1}s", wait.as_secs_f64());
                last_logged = why;
            } else {
                tracing::debug!(broker = %self.config.url, "MQTT uplink: {last_logged}; retrying in {:.1}s", wait.as_secs_f64());
            }
            let retry = tokio::time::sleep(wait);
            tokio::pin!(retry);
            let mut look = tokio::time::interval(BACKLOG_EVERY);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = &mut retry => break,
                    _ = look.tick() => self.backlog_while_away().await,
                }
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// While the broker is away the events keep coming: the backlog is what the log holds past the cursor last
    /// written (the connection's own count stops with it).
    async fn backlog_while_away(&self) {
        let read = self.app.store.read(|c| Ok((crate::store::events::latest_id(c)?, records::saved_cursor(c)?))).await;
        if let Ok((head, Some(cursor))) = read {
            let backlog = head.saturating_sub(cursor).max(0) as u64;
            crate::metrics::mqtt_state(false, backlog);
            self.app.update_uplink(|u| u.backlog = backlog);
        }
    }

    /// One connection, from CONNECT to its end.
    async fn connection(&mut self, shutdown: &CancellationToken) -> Ended {
        let Opened { mut conn, mut events, session, driver: _driver } = match self.open(shutdown).await {
            Ok(opened) => opened,
            Err(ended) => return ended,
        };
        tracing::info!(broker = %self.config.url, session, prefix = %self.config.topic_prefix, "MQTT uplink connected");
        self.app.update_uplink(|u| {
            u.connected = true;
            u.session = session;
        });
        let store = self.app.store.clone();
        let birth = json!({"state": "online", "session": session, "version": env!("CARGO_PKG_VERSION"),
                           "started_at": self.started_at, "site": self.config.site});
        conn.queue.push_back(Message::retained(&self.topics.state, birth.to_string().into_bytes()));
        if self.config.commands {
            let filter = format!("{}+", self.topics.requests);
            if let Err(e) = conn.client.try_subscribe(filter, QoS::AtLeastOnce) {
                return Ended::Lost(format!("cannot subscribe to command requests: {e}"));
            }
        }
        let mut devices = Devices::new(&self.app).await;
        let mut health = None;
        let mut save = tokio::time::interval(SAVE_EVERY);
        save.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut health_tick = tokio::time::interval(HEALTH_EVERY);
        health_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (devices_tx, mut devices_rx) = mpsc::channel(1);
        devices.refresh(&self.app, &devices_tx);

        let ended = loop {
            if let Err(why) = self.pump(&mut conn).await {
                break Ended::Lost(why);
            }
            self.report(&conn, session);
            tokio::select! {
                _ = shutdown.cancelled() => break Ended::Stopped,
                event = events.recv() => match event {
                    Some(Ok(event)) => {
                        if let Some(publish) = conn.on_event(event)
                            && let Some(reply) = self.requests.receive(publish)
                        {
                            conn.queue.push_back(Message::reply(reply));
                        }
                    }
                    Some(Err(e)) => break Ended::Lost(describe(&e)),
                    None => break Ended::Lost("the client's event loop ended".into()),
                },
                live = self.bus.recv() => match live {
                    Ok(e) => {
                        conn.head = conn.head.max(e.id);
                        if e.kind.starts_with("device.") || e.kind.starts_with("edge.xyte") {
                            devices.dirty = true;
                        }
                    }
                    // Missed some: the log has them; find the head again.
                    Err(broadcast::error::RecvError::Lagged(_)) => conn.head = i64::MAX,
                    Err(broadcast::error::RecvError::Closed) => {}
                },
                Some(done) = self.requests.done.recv() => {
                    conn.queue.extend(self.requests.finished(done).into_iter().map(Message::reply));
                }
                Some(states) = devices_rx.recv() => {
                    devices.running = false;
                    let changed = devices.diff(states, &self.topics.device, &mut conn.queue);
                    if changed {
                        let ids: Vec<String> = devices.retained.iter().cloned().collect();
                        let saved = store
                            .write(Durability::Normal, move |c| records::set_retained_devices(c, &ids))
                            .await;
                        if let Err(e) = saved {
                            tracing::warn!("MQTT uplink: cannot record the retained device states: {e}");
                        }
                    }
                }
                _ = save.tick() => {
                    self.save_cursor(&mut conn).await;
                    devices.refresh(&self.app, &devices_tx);
                }
                _ = health_tick.tick() => {
                    let now = self.health(&mut conn).await;
                    if health.as_ref() != Some(&now) {
                        conn.queue.push_back(Message::retained(&self.topics.health, now.to_string().into_bytes()));
                        health = Some(now);
                    }
                }
            }
        };
        if let Ended::Stopped = ended {
            self.stop(&mut conn, &mut events, session).await;
        }
        self.save_cursor(&mut conn).await;
        ended
    }

    /// Counts the connection, connects with the will that names it and waits for CONNACK.
    async fn open(&self, shutdown: &CancellationToken) -> Result<Opened, Ended> {
        let store = &self.app.store;
        // The counter is stored (and flushed) before the will that carries it is sent.
        let session = store
            .write(Durability::Full, records::next_session)
            .await
            .map_err(|e| Ended::Lost(format!("cannot count the connection: {e}")))?;
        let cursor = store
            .write(Durability::Normal, records::cursor)
            .await
            .map_err(|e| Ended::Lost(format!("cannot read the delivery cursor: {e}")))?;
        let will =
            (self.topics.state.clone(), json!({"state": "offline", "session": session}).to_string().into_bytes());
        let options = broker::options(&self.config, self.tls.as_ref(), will, WINDOW as u16);
        let (client, mut eventloop) = AsyncClient::new(options, WINDOW + 16);
        let (tx, mut events) = mpsc::channel(1024);
        // The client library's event loop runs in its own task: polling it from a `select!` could cancel it halfway
        // through writing a packet.
        let driver = AbortOnDrop(tokio::spawn(async move {
            loop {
                let event = eventloop.poll().await;
                let last = event.is_err() || matches!(event, Ok(MqttEvent::Outgoing(Outgoing::Disconnect)));
                if tx.send(event).await.is_err() || last {
                    return;
                }
            }
        }));
        let first = tokio::select! {
            _ = shutdown.cancelled() => return Err(Ended::Stopped),
            first = events.recv() => first,
        };
        match first {
            Some(Ok(MqttEvent::Incoming(Packet::ConnAck(_)))) => {}
            Some(Ok(other)) => return Err(Ended::Lost(format!("unexpected first packet from the broker: {other:?}"))),
            Some(Err(e)) => return Err(Ended::Lost(describe(&e))),
            None => return Err(Ended::Lost("the connection ended before CONNACK".into())),
        }
        let head = store.read(crate::store::events::latest_id).await.unwrap_or(cursor);
        Ok(Opened { conn: Connection::new(client, cursor.min(head), head), events, session, driver })
    }

    /// Hands queued messages, then events of the log, to the client while the window has room.
    async fn pump(&self, conn: &mut Connection) -> Result<(), String> {
        while conn.room() > 0 {
            let Some(message) = conn.queue.pop_front() else { break };
            conn.hand_over(message)?;
        }
        if conn.room() < REFILL.min(WINDOW) || conn.sent_up_to >= conn.head {
            return Ok(());
        }
        let (after, room) = (conn.sent_up_to, conn.room());
        let batch = self
            .app
            .store
            .read(move |c| crate::store::events::after(c, after, &EventFilter::default(), room))
            .await
            .map_err(|e| format!("cannot read the event log: {e}"))?;
        let Some(first) = batch.first() else {
            // Everything there is was handed over; the head was a guess (after a lag).
            conn.head = conn.sent_up_to;
            return Ok(());
        };
        if first.id > after + 1 {
            self.gap(conn, after + 1, first.id - 1).await;
        }
        for event in batch {
            let topic = format!("{}{}", self.topics.events, topic_safe(&event.kind));
            let payload = serde_json::to_vec(&event).map_err(|e| format!("cannot encode event {}: {e}", event.id))?;
            conn.sent_up_to = event.id;
            conn.unacked.insert(event.id);
            conn.hand_over(Message { topic, payload, retain: false, properties: None, tag: Tag::Event(event.id) })?;
        }
        Ok(())
    }

    /// Retention deleted events the broker never acknowledged: say so in the log (so every consumer sees it, the
    /// broker's subscribers included) and go on after them.
    async fn gap(&self, conn: &mut Connection, first: i64, last: i64) {
        let count = last - first + 1;
        tracing::warn!(first, last, "MQTT uplink: {count} events were deleted by retention before they were delivered");
        let lost = NewEvent::new(
            "edge.gap",
            json!({"first_id": first, "last_id": last, "count": count,
                   "reason": "deleted by retention (XYTE_EVENT_RETENTION_DAYS/_ROWS) before the MQTT uplink delivered them"}),
        );
        if let Err(e) = self.app.bus.publish(vec![lost]).await {
            tracing::warn!("MQTT uplink: cannot record the gap: {e}");
        }
        // Nothing waits for the lost ids any more.
        conn.sent_up_to = conn.sent_up_to.max(last);
    }

    /// Writes the cursor when it moved.
    async fn save_cursor(&self, conn: &mut Connection) {
        let cursor = conn.cursor();
        if cursor == conn.saved {
            return;
        }
        match self.app.store.write(Durability::Normal, move |c| records::set_cursor(c, cursor)).await {
            Ok(()) => conn.saved = cursor,
            Err(e) => tracing::warn!("MQTT uplink: cannot record the delivery cursor: {e}"),
        }
    }

    fn report(&self, conn: &Connection, session: i64) {
        let backlog = conn.head.saturating_sub(conn.cursor()).max(0) as u64;
        let backlog = if conn.head == i64::MAX { 0 } else { backlog };
        crate::metrics::mqtt_state(true, backlog);
        self.app.update_uplink(|u| {
            u.backlog = backlog;
            u.session = session;
        });
    }

    /// `gateway/health` as it is now. Reading the log's head here also makes sure nothing appended without a
    /// broadcast waits longer than [`HEALTH_EVERY`].
    async fn health(&self, conn: &mut Connection) -> Value {
        let sync = self.app.sync.get();
        let read = self
            .app
            .store
            .read(|c| Ok((crate::store::tasks::outbox_depth(c)?, crate::store::events::latest_id(c)?)))
            .await;
        let (outbox, head) = match read {
            Ok((outbox, head)) => (Some(outbox), Some(head)),
            Err(e) => {
                tracing::debug!("MQTT uplink: health not read: {e}");
                (None, None)
            }
        };
        if let Some(head) = head
            && conn.head != i64::MAX
        {
            conn.head = conn.head.max(head);
        }
        json!({
            "xyte_reachable": sync.reachable,
            "last_sync_at": crate::cache::rfc3339(sync.last_ok_ms),
            "outbox_depth": outbox,
            "event_log_head": head,
            "uplink_backlog": self.app.uplink().map_or(0, |u| u.backlog),
        })
    }

    /// A clean stop: `offline` published (and acknowledged, within [`STOP_GRACE`]), then DISCONNECT, which tells the
    /// broker to drop the will.
    async fn stop(
        &self,
        conn: &mut Connection,
        events: &mut mpsc::Receiver<Result<MqttEvent, ConnectionError>>,
        session: i64,
    ) {
        let offline = json!({"state": "offline", "session": session, "clean": true});
        let mut message = Message::retained(&self.topics.state, offline.to_string().into_bytes());
        message.tag = Tag::Offline;
        conn.queue.push_front(message);
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        while !conn.offline_acked {
            while conn.room() > 0 {
                let Some(message) = conn.queue.pop_front() else { break };
                if conn.hand_over(message).is_err() {
                    return;
                }
            }
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(Ok(event))) => {
                    conn.on_event(event);
                }
                _ => {
                    tracing::warn!("MQTT uplink: the broker did not acknowledge the offline state in time");
                    break;
                }
            }
        }
        if conn.client.try_disconnect().is_ok() {
            let _ = tokio::time::timeout_at(deadline + Duration::from_millis(500), async {
                while let Some(Ok(event)) = events.recv().await {
                    if matches!(event, MqttEvent::Outgoing(Outgoing::Disconnect)) {
                        return;
                    }
                    conn.on_event(event);
                }
            })
            .await;
        }
        tracing::info!("MQTT uplink: offline published, disconnected");
    }
}

/// A connection the broker accepted.
struct Opened {
    conn: Connection,
    events: mpsc::Receiver<Result<MqttEvent, ConnectionError>>,
    session: i64,
    /// The client library's event loop; stopped when this is dropped.
    driver: AbortOnDrop,
}

/// What a publish stands for, to act on its PUBACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Event(i64),
    Offline,
    Other,
}

struct Message {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
    properties: Option<PublishProperties>,
    tag: Tag,
}

impl Message {
    fn retained(topic: &str, payload: Vec<u8>) -> Self {
        Message { topic: topic.to_string(), payload, retain: true, properties: None, tag: Tag::Other }
    }

    fn reply(reply: requests::Reply) -> Self {
        let properties = PublishProperties {
            correlation_data: reply.correlation,
            message_expiry_interval: reply.expiry_s,
            content_type: Some("application/json".into()),
            ..Default::default()
        };
        Message {
            topic: reply.topic,
            payload: reply.payload,
            retain: false,
            properties: Some(properties),
            tag: Tag::Other,
        }
    }
}

/// One connection's delivery state.
struct Connection {
    client: AsyncClient,
    /// Waiting for room in the window (states, health, answers); events come straight from the log.
    queue: VecDeque<Message>,
    /// Handed to the client, packet id not known yet (in the order handed over).
    handed: VecDeque<Tag>,
    /// Sent, waiting for PUBACK, by packet id.
    inflight: HashMap<u16, Tag>,
    /// The newest event handed over.
    sent_up_to: i64,
    /// Events handed over and not acknowledged.
    unacked: BTreeSet<i64>,
    /// The newest event known to be in the log (`i64::MAX`: unknown, look).
    head: i64,
    /// The cursor as last written.
    saved: i64,
    offline_acked: bool,
}

impl Connection {
    fn new(client: AsyncClient, cursor: i64, head: i64) -> Self {
        Connection {
            client,
            queue: VecDeque::new(),
            handed: VecDeque::new(),
            inflight: HashMap::new(),
            sent_up_to: cursor,
            unacked: BTreeSet::new(),
            head,
            saved: cursor,
            offline_acked: false,
        }
    }

    fn room(&self) -> usize {
        WINDOW.saturating_sub(self.handed.len() + self.inflight.len())
    }

    /// Every event up to here was acknowledged.
    fn cursor(&self) -> i64 {
        self.unacked.first().map_or(self.sent_up_to, |first| first - 1)
    }

    fn hand_over(&mut self, m: Message) -> Result<(), String> {
        let sent = match m.properties {
            Some(p) => self.client.try_publish_with_properties(m.topic, QoS::AtLeastOnce, m.retain, m.payload, p),
            None => self.client.try_publish(m.topic, QoS::AtLeastOnce, m.retain, m.payload),
        };
        sent.map_err(|e| format!("cannot hand a message to the MQTT client: {e}"))?;
        self.handed.push_back(m.tag);
        crate::metrics::mqtt_published();
        Ok(())
    }

    /// Follows the client's report; returns an incoming publish (a command request) for the caller.
    fn on_event(&mut self, event: MqttEvent) -> Option<rumqttc::v5::mqttbytes::v5::Publish> {
        match event {
            MqttEvent::Outgoing(Outgoing::Publish(pkid)) => {
                if let Some(tag) = self.handed.pop_front() {
                    self.inflight.insert(pkid, tag);
                }
            }
            MqttEvent::Incoming(Packet::PubAck(ack)) => {
                let tag = self.inflight.remove(&ack.pkid)?;
                crate::metrics::mqtt_acked();
                use rumqttc::v5::mqttbytes::v5::PubAckReason::{NoMatchingSubscribers, Success};
                if !matches!(ack.reason, Success | NoMatchingSubscribers) {
                    // Refused by the broker (an ACL, a quota): waiting would stop the whole stream behind one message,
                    // so it counts as delivered, and the refusal is logged.
                    tracing::warn!(reason = ?ack.reason, "MQTT broker refused a message ({tag:?}); check its ACL for the prefix");
                }
                match tag {
                    Tag::Event(id) => {
                        self.unacked.remove(&id);
                    }
                    Tag::Offline => self.offline_acked = true,
                    Tag::Other => {}
                }
            }
            MqttEvent::Incoming(Packet::Publish(publish)) => return Some(publish),
            _ => {}
        }
        None
    }
}

/// The device states this uplink left retained at the broker, and what it published on this connection.
struct Devices {
    /// Ids with a retained state at the broker (recorded in the database, so a device deleted while the daemon was
    /// stopped is still cleared).
    retained: BTreeSet<String>,
    /// What this connection published, per device.
    published: HashMap<String, Published>,
    dirty: bool,
    running: bool,
    last: Option<Instant>,
}

impl Devices {
    async fn new(app: &App) -> Self {
        let retained = app.store.read(records::retained_devices).await.unwrap_or_default();
        Devices {
            retained: retained.into_iter().collect(),
            published: HashMap::new(),
            dirty: true,
            running: false,
            last: None,
        }
    }

    /// Starts reading the devices' summaries (in a task: with nothing cached it waits for Xyte) when something
    /// changed, or the last comparison is old.
    fn refresh(&mut self, app: &Arc<App>, tx: &mpsc::Sender<Vec<DeviceState>>) {
        let since = self.last.map(|t| t.elapsed());
        let due = match since {
            None => true,
            Some(s) => (self.dirty && s >= DEVICES_EVERY) || s >= DEVICES_AT_LEAST,
        };
        if self.running || !due {
            return;
        }
        self.running = true;
        self.dirty = false;
        self.last = Some(Instant::now());
        let (app, tx) = (app.clone(), tx.clone());
        tokio::spawn(async move {
            let states = match app.cache.devices().await {
                Ok(devices) => devices.value.iter().filter_map(DeviceState::of).collect(),
                Err(e) => {
                    tracing::debug!("MQTT uplink: device states not compared: {e}");
                    Vec::new()
                }
            };
            let _ = tx.send(states).await;
        });
    }

    /// Queues the states that changed and clears the devices that are gone; says whether the retained set changed.
    /// An empty list means the devices could not be read: nothing is cleared then.
    fn diff(&mut self, states: Vec<DeviceState>, prefix: &str, queue: &mut VecDeque<Message>) -> bool {
        if states.is_empty() {
            return false;
        }
        let mut changed = false;
        let current: BTreeSet<&str> = states.iter().map(|d| d.id.as_str()).collect();
        let gone: Vec<String> = self.retained.iter().filter(|id| !current.contains(id.as_str())).cloned().collect();
        for id in gone {
            queue.push_back(Message::retained(&format!("{prefix}{}/state", topic_safe(&id)), Vec::new()));
            self.published.remove(&id);
            self.retained.remove(&id);
            changed = true;
        }
        for state in states {
            let now = Instant::now();
            let (full, significant) = (fingerprint(&state.payload), state.significant);
            match self.published.get(&state.id) {
                Some(p) if p.full == full => continue,
                // Only `last_seen_at` moved (every poll, for every online device): at most every LAST_SEEN_EVERY.
                Some(p) if p.significant == significant && now.duration_since(p.at) < LAST_SEEN_EVERY => continue,
                _ => {}
            }
            queue.push_back(Message::retained(&format!("{prefix}{}/state", topic_safe(&state.id)), state.payload));
            self.published.insert(state.id.clone(), Published { full, significant, at: now });
            changed |= self.retained.insert(state.id);
        }
        changed
    }
}

/// One device's `list_devices` summary as published, and a fingerprint of it without `last_seen_at`.
struct DeviceState {
    id: String,
    payload: Vec<u8>,
    significant: u64,
}

impl DeviceState {
    fn of(device: &crate::cache::Compact) -> Option<DeviceState> {
        let mut summary = crate::ops::device_summary(device);
        let id = summary["id"].as_str()?.to_string();
        let payload = summary.to_string().into_bytes();
        summary["last_seen_at"] = Value::Null;
        Some(DeviceState { id, payload, significant: fingerprint(summary.to_string().as_bytes()) })
    }
}

/// What this connection last published for a device.
struct Published {
    full: u64,
    significant: u64,
    at: Instant,
}

fn fingerprint(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// A topic level from an event kind or a device id: the MQTT wildcards and the level separator become `_`.
fn topic_safe(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['/', '+', '#', '\0']) { s.replace(['/', '+', '#', '\0'], "_").into() } else { s.into() }
}

fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => format!("the broker refused the connection ({code:?})"),
        ConnectionError::Io(io) => format!("connection failed: {io}"),
        ConnectionError::Timeout(_) => "the broker did not answer in time".into(),
        ConnectionError::Tls(tls) => format!("TLS: {tls}"),
        other => other.to_string(),
    }
}

/// Between half and one and a half times `d`, so a fleet of gateways that lost the same broker does not come back
/// at the same instant.
fn jitter(d: Duration) -> Duration {
    let mut byte = [0u8; 1];
    let r = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut byte).map_or(128, |_| byte[0]);
    d.mul_f64(0.5 + f64::from(r) / 255.0)
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_levels_never_carry_wildcards() {
        assert_eq!(topic_safe("device.status_changed"), "device.status_changed");
        assert_eq!(topic_safe("a/b+c#d"), "a_b_c_d");
    }

    #[test]
    fn jitter_stays_within_half_and_one_and_a_half() {
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(10));
            assert!(j >= Duration::from_secs(5) && j <= Duration::from_secs(15), "{j:?}");
        }
    }
}
