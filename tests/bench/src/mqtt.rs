//! The MQTT uplink (issue 25): Debian's `mosquitto` on an ephemeral loopback port, a daemon with `XYTE_MQTT_URL`
//! pointing at it, and an MQTT 5 subscriber (rumqttc's `v5` client, QoS 1) on `<prefix>/events/#`.
//!
//! - Throughput: a backlog of webhook events is built while the broker is stopped, then the broker is started and
//!   the rate is taken between the subscriber's receipt of the first and of the last of those events. The
//!   subscriber's session (clean start off, a session expiry, its QoS 1 subscription) is kept by the broker across
//!   its restarts (`persistence true`), and its queue is unbounded (`max_queued_messages 0`), so no event is lost
//!   to the subscriber whichever of the two clients reconnects first.
//! - Live: the same webhook load with the broker up; rate from the first webhook sent to the last event received.
//! - Latency: one signed webhook every 10 ms on one connection; latency from sending the webhook request to the
//!   subscriber's receipt of its event (so it includes the webhook's durable commit, like `sse.delivery`), and from
//!   the `202` answer.
//! - Also: the daemon's CPU per event (`/proc/PID/stat`) while the backlog is built, drained and live, mosquitto's
//!   per drained event, the broker's acknowledgement rate seen from the daemon (`xyte_edge_mqtt_acked_total`), and
//!   the idle RSS of a daemon with a connected uplink against the same daemon without one.
//!
//! Without `mosquitto` (Debian's package; `XYTE_BENCH_MOSQUITTO=PATH` names another) the phase fails saying so.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::Value;

use crate::load::{self, pct};
use crate::procs::{self, Layout, Proc, Res, Sim};
use crate::{Report, Target, phase, sse};

/// `XYTE_MQTT_TOPIC_PREFIX` of the daemon under test.
pub const PREFIX: &str = "bench/site";
const DAEMON_CLIENT_ID: &str = "xyte-bench-edge";
const SUBSCRIBER_ID: &str = "xyte-bench-sub";
/// Devices of the phase's own simulator: few, so the retained device states are no noticeable part of the traffic.
const DEVICES: usize = 20;
/// Concurrent webhook clients that build a backlog (as in the durable-writes phase).
const CLIENTS: usize = 64;

/// Sizes of the phase.
pub struct MqttPlan {
    pub rounds: usize,
    /// Events queued while the broker is down, then drained (`mqtt.events_per_s`).
    pub backlog: usize,
    /// Events posted as fast as the webhook takes them with the broker up (`mqtt.live.*`).
    pub live: usize,
    /// Seconds of one event every 10 ms (`mqtt.event_latency.*`).
    pub latency_secs: f64,
}

/// The mosquitto binary: `XYTE_BENCH_MOSQUITTO`, else `mosquitto` in PATH or an sbin directory.
fn mosquitto_binary() -> Res<PathBuf> {
    if let Some(p) = std::env::var_os("XYTE_BENCH_MOSQUITTO").map(PathBuf::from) {
        if !p.is_file() {
            return Err(format!("XYTE_BENCH_MOSQUITTO={}: no such file (it names the mosquitto broker)", p.display()));
        }
        return Ok(p);
    }
    let path = std::env::var("PATH").unwrap_or_default();
    let dirs = path.split(':').filter(|d| !d.is_empty()).chain(["/usr/sbin", "/usr/local/sbin", "/sbin"]);
    dirs.map(|d| Path::new(d).join("mosquitto")).find(|p| p.is_file()).ok_or_else(|| {
        "the MQTT uplink phase needs Debian's mosquitto broker, and no `mosquitto` was found in PATH, /usr/sbin or \
         /usr/local/sbin: install it (apt-get install mosquitto; tests/run-all.sh does) or set \
         XYTE_BENCH_MOSQUITTO=/path/to/mosquitto"
            .to_string()
    })
}

/// A throwaway mosquitto: anonymous, one listener on loopback, stopped and started again on the same port.
struct Broker {
    bin: PathBuf,
    dir: PathBuf,
    conf: PathBuf,
    port: u16,
    starts: usize,
    proc: Option<Proc>,
    /// Where the current start's lines begin in mosquitto.log.
    log_from: usize,
}

impl Broker {
    fn new(dir: &Path) -> Res<Broker> {
        let bin = mosquitto_binary()?;
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let port = procs::free_port()?;
        let conf = dir.join("mosquitto.conf");
        let text = format!(
            "# Written by xyte-bench for the MQTT uplink phase: a broker on loopback only, for this run.\n\
             listener {port} 127.0.0.1\n\
             allow_anonymous true\n\
             # The subscriber's session (and its QoS 1 subscription) survives the broker's restarts.\n\
             persistence true\n\
             persistence_location {dir}/\n\
             # Nothing queued for the subscriber is dropped (the default keeps 1000 per client).\n\
             max_queued_messages 0\n\
             # A file, not stdout: mosquitto flushes it line by line, so the connection order can be read at once.\n\
             log_dest file {dir}/mosquitto.log\n\
             log_type error\nlog_type warning\nlog_type notice\nlog_type information\n\
             connection_messages true\n\
             # Started as root, mosquitto would switch to the user `mosquitto`, who cannot write the persistence\n\
             # file here; as any other user this line is ignored.\n\
             user root\n",
            dir = dir.display()
        );
        // For experiments (e.g. XYTE_BENCH_MOSQUITTO_CONF='max_inflight_messages 256'): more lines, `;`-separated.
        let extra = std::env::var("XYTE_BENCH_MOSQUITTO_CONF").unwrap_or_default();
        let text = extra.split(';').map(str::trim).filter(|l| !l.is_empty()).fold(text, |t, l| t + l + "\n");
        std::fs::write(&conf, text).map_err(|e| e.to_string())?;
        Ok(Broker { bin, dir: dir.to_path_buf(), conf, port, starts: 0, proc: None, log_from: 0 })
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Starts mosquitto and waits until its port accepts connections.
    fn start(&mut self) -> Res<()> {
        self.starts += 1;
        self.log_from = self.log_all().len();
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-c").arg(&self.conf);
        let mut proc = Proc::spawn(&format!("mosquitto-{}", self.starts), cmd, &self.dir)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&self.addr(), Duration::from_millis(100)).is_err() {
            proc.alive().map_err(|e| format!("{e}\n{}", self.log()))?;
            if Instant::now() > deadline {
                return Err(format!(
                    "mosquitto did not listen on {} within 10 s:\n{}{}",
                    self.addr(),
                    proc.log(),
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.proc = Some(proc);
        Ok(())
    }

    /// SIGTERM, a clean exit, and the port closed.
    fn stop(&mut self) -> Res<()> {
        if let Some(mut p) = self.proc.take() {
            p.stop(Duration::from_secs(10))?;
        }
        Ok(())
    }

    fn pid(&self) -> u32 {
        self.proc.as_ref().map_or(0, Proc::pid)
    }

    fn log_all(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }

    /// The log of the current start.
    fn log(&self) -> String {
        self.log_all().get(self.log_from..).unwrap_or_default().to_string()
    }
}

/// What the subscriber has received.
#[derive(Default)]
struct Seen {
    /// Event id -> when it first arrived.
    first: HashMap<u64, Instant>,
    duplicates: u64,
    /// Messages under `<prefix>/events/` without a numeric `id`.
    unparsed: u64,
    connacks: u64,
}

/// The benchmark's MQTT 5 client: subscribed QoS 1 to `<prefix>/events/#`, reconnecting every 2 ms while the
/// broker is down, with a session the broker keeps (clean start off, one-hour expiry).
struct Subscriber {
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    async fn connect(port: u16) -> Res<Subscriber> {
        let mut opts = MqttOptions::new(SUBSCRIBER_ID, "127.0.0.1", port);
        opts.set_clean_start(false)
            .set_session_expiry_interval(Some(3600))
            .set_keep_alive(Duration::from_secs(60))
            .set_connection_timeout(2)
            .set_max_packet_size(Some(1 << 20));
        let (client, mut events) = AsyncClient::new(opts, 16);
        client
            .subscribe(format!("{PREFIX}/events/#"), QoS::AtLeastOnce)
            .await
            .map_err(|e| format!("subscribe: {e}"))?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let subscribed = Arc::new(AtomicBool::new(false));
        let (s, sub) = (seen.clone(), subscribed.clone());
        let topic_start = format!("{PREFIX}/events/");
        let task = tokio::spawn(async move {
            let _client = client;
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let now = Instant::now();
                        if !p.topic.starts_with(topic_start.as_bytes()) {
                            continue;
                        }
                        let id = serde_json::from_slice::<Value>(&p.payload).ok().and_then(|v| v["id"].as_u64());
                        let mut seen = s.lock().unwrap();
                        match id {
                            Some(id) => match seen.first.entry(id) {
                                Entry::Vacant(e) => {
                                    e.insert(now);
                                }
                                Entry::Occupied(_) => seen.duplicates += 1,
                            },
                            None => seen.unparsed += 1,
                        }
                    }
                    Ok(Event::Incoming(Packet::ConnAck(c))) => {
                        let mut seen = s.lock().unwrap();
                        seen.connacks += 1;
                        if seen.connacks == 1 {
                            let max = c.properties.as_ref().and_then(|p| p.receive_max);
                            eprintln!("  subscriber connected (broker's receive maximum: {max:?})");
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => sub.store(true, Ordering::Relaxed),
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(2)).await,
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while !subscribed.load(Ordering::Relaxed) {
            if Instant::now() > deadline || task.is_finished() {
                task.abort();
                return Err(format!("the MQTT subscriber got no SUBACK from the broker on port {port} within 10 s"));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(Subscriber { seen, task })
    }

    /// Waits until every id in `ids` (sorted) has arrived, at most until `deadline`; returns how many did. Events
    /// arrive in id order, so the check moves forward over `ids` and costs little per poll.
    async fn wait_all(&self, ids: &[u64], deadline: Instant) -> usize {
        let mut k = 0;
        loop {
            {
                let seen = self.seen.lock().unwrap();
                while k < ids.len() && seen.first.contains_key(&ids[k]) {
                    k += 1;
                }
                if k == ids.len() {
                    return k;
                }
                if Instant::now() > deadline {
                    return ids.iter().filter(|id| seen.first.contains_key(id)).count();
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// When each of `ids` first arrived (None: not yet).
    fn receipts(&self, ids: &[u64]) -> Vec<Option<Instant>> {
        let seen = self.seen.lock().unwrap();
        ids.iter().map(|id| seen.first.get(id).copied()).collect()
    }

    fn counts(&self) -> (usize, u64, u64) {
        let seen = self.seen.lock().unwrap();
        (seen.first.len(), seen.duplicates, seen.unparsed)
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a batch of webhooks produced.
struct Batch {
    /// The event ids the daemon answered with (`event_id` of each `202`), sorted.
    ids: Vec<u64>,
    first_sent: Instant,
    last_answer: Instant,
}

fn webhook(secret: &str, delivery: &str, n: usize) -> hyper::Request<http_body_util::Full<Bytes>> {
    let body = format!(r#"{{"type":"bench.mqtt","id":"{delivery}","data":{{"n":{n}}}}}"#);
    let sig = sse::sign(secret, body.as_bytes());
    load::request(
        "POST",
        "/v1/webhook",
        &[("content-type", "application/json".into()), ("x-signature-256", sig)],
        Bytes::from(body),
    )
}

/// The event id of a webhook's `202` answer.
fn event_id(status: u16, body: &[u8]) -> Res<u64> {
    let v: Value = serde_json::from_slice(body).unwrap_or_default();
    match (status, v["event_id"].as_u64()) {
        (202, Some(id)) => Ok(id),
        _ => Err(format!("webhook: {status} {}", String::from_utf8_lossy(&body[..body.len().min(300)]))),
    }
}

/// `n` signed webhooks with unique delivery ids over `CLIENTS` keep-alive TLS connections.
async fn post_batch(lan: SocketAddr, tls: &Arc<rustls::ClientConfig>, secret: &str, n: usize, tag: &str) -> Res<Batch> {
    let conns = CLIENTS.min(n.max(1));
    let mut senders = Vec::new();
    for _ in 0..conns {
        senders.push(load::h1_tls(lan, tls).await?);
    }
    let first_sent = Instant::now();
    let mut handles = Vec::new();
    for (c, mut s) in senders.into_iter().enumerate() {
        let (secret, tag) = (secret.to_string(), tag.to_string());
        handles.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(n / conns + 1);
            for i in (c..n).step_by(conns) {
                let (status, _, body) = load::send(&mut s, webhook(&secret, &format!("{tag}-{i}"), i)).await?;
                ids.push(event_id(status, &body)?);
            }
            Ok::<_, String>((ids, Instant::now()))
        }));
    }
    let mut ids = Vec::with_capacity(n);
    let mut last_answer = first_sent;
    for h in handles {
        let (mut part, done) = h.await.map_err(|e| e.to_string())??;
        ids.append(&mut part);
        last_answer = last_answer.max(done);
    }
    ids.sort_unstable();
    Ok(Batch { ids, first_sent, last_answer })
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The daemon's `xyte_edge_mqtt_acked_total`, sampled every 10 ms on its plain local listener by a thread of its
/// own: the rate at which the broker acknowledged the drain, seen from the daemon (the subscriber's figure adds the
/// broker's forwarding to it).
struct AckSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(Instant, u64)>>,
}

impl AckSampler {
    fn start(local: SocketAddr) -> AckSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let done = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !done.load(Ordering::Relaxed) {
                if let Ok((200, body)) = procs::http(local, "GET", "/v1/metrics", &[], "") {
                    let acked = body
                        .lines()
                        .find_map(|l| l.strip_prefix("xyte_edge_mqtt_acked_total "))
                        .and_then(|v| v.trim().parse::<f64>().ok());
                    if let Some(a) = acked {
                        samples.push((Instant::now(), a as u64));
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            samples
        });
        AckSampler { stop, thread }
    }

    fn finish(self) -> Vec<(Instant, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// The rate of a counter over its ramp: from the first sample above its starting value to the last sample below
/// its final one (None when the ramp spans fewer than two samples).
fn ramp_rate(samples: &[(Instant, u64)]) -> Option<f64> {
    let (start, end) = (samples.first()?.1, samples.last()?.1);
    let first = samples.iter().find(|s| s.1 > start)?;
    let last = samples.iter().rev().find(|s| s.1 < end)?;
    let span = secs(last.0.checked_duration_since(first.0)?);
    (span > 0.0 && last.1 > first.1).then(|| (last.1 - first.1) as f64 / span)
}

/// The `xyte_edge_mqtt_*` lines of the daemon's metrics (for the log).
fn uplink_metrics(layout: &Layout) -> String {
    match procs::http(layout.local, "GET", "/v1/metrics", &[], "") {
        Ok((200, body)) => body.lines().filter(|l| l.starts_with("xyte_edge_mqtt")).collect::<Vec<_>>().join("\n    "),
        Ok((status, _)) => format!("GET /v1/metrics: {status}"),
        Err(e) => format!("GET /v1/metrics: {e}"),
    }
}

/// A daemon for `layout` with the uplink to the broker on `port`.
fn uplink_command(layout: &Layout, bin: &Path, port: u16, client_id: &str) -> Command {
    let mut cmd = layout.command(bin, None);
    cmd.env("XYTE_MQTT_URL", format!("mqtt://127.0.0.1:{port}"))
        .env("XYTE_MQTT_TOPIC_PREFIX", PREFIX)
        .env("XYTE_MQTT_CLIENT_ID", client_id)
        .env("XYTE_SITE", "bench");
    cmd
}

/// `mqtt.rss.idle_connected`: the settled RSS of a daemon (the phase's 20 devices, synced) whose uplink is connected
/// to the running broker; its floor is the same daemon without the uplink. Each on a fresh state directory.
fn idle_rss(bin: &Path, dir: &Path, sim: &Sim, port: u16, report: &mut Report) -> Res<()> {
    let mut rss = Vec::new();
    for with_uplink in [false, true] {
        let name = if with_uplink { "mqtt-idle-on" } else { "mqtt-idle-off" };
        let layout = Layout::write(dir, name, sim, 6000)?;
        let cmd =
            if with_uplink { uplink_command(&layout, bin, port, "xyte-bench-idle") } else { layout.command(bin, None) };
        let mut daemon = Proc::spawn(name, cmd, &layout.dir)?;
        procs::wait_ready(&mut daemon, layout.local, Duration::from_secs(60))?;
        if let Some(l) = daemon.log().lines().find(|l| l.contains("XYTE_MQTT_URL") && l.contains("not a xyte-edge")) {
            return Err(format!("this xyte-edge has no MQTT uplink (issue 25): {}", l.trim()));
        }
        let token = layout.token(bin, "bench-mqtt", "viewer")?;
        crate::wait_synced(&mut daemon, &layout, &token, DEVICES)?;
        if with_uplink {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !uplink_metrics(&layout).contains("xyte_edge_mqtt_connected 1") {
                daemon.alive()?;
                if Instant::now() > deadline {
                    return Err(format!("the uplink did not connect within 30 s: {}", tail(&daemon.log())));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        rss.push(procs::settled_rss_kib(daemon.pid())? as f64 / 1024.0);
        daemon.stop(Duration::from_secs(30))?;
    }
    report.add("mqtt.rss.idle_connected", "MiB", None, rss[1], Some(rss[0]));
    Ok(())
}

/// The phase: its own simulator, broker, daemon and subscriber, all stopped again at the end.
pub fn run(bin: &Path, dir: &Path, rt: &tokio::runtime::Runtime, plan: &MqttPlan, report: &mut Report) -> Res<()> {
    phase("MQTT uplink: mosquitto on loopback, a daemon with XYTE_MQTT_URL, an MQTT 5 subscriber (QoS 1)");
    let mut broker = Broker::new(&dir.join("mosquitto"))?;
    let sim = Sim::start(bin, dir, DEVICES)?;
    let layout = Layout::write(dir, "mqtt", &sim, 6000)?;
    broker.start()?;
    idle_rss(bin, dir, &sim, broker.port, report)?;
    // The subscriber's session next, so the broker holds it (and queues for it) from its restart on.
    let sub = rt.block_on(Subscriber::connect(broker.port))?;
    broker.stop()?;

    let cmd = uplink_command(&layout, bin, broker.port, DAEMON_CLIENT_ID);
    let mut daemon = Proc::spawn("mqtt-daemon", cmd, &layout.dir)?;
    procs::wait_ready(&mut daemon, layout.local, Duration::from_secs(60))?;
    let token = layout.token(bin, "bench-mqtt", "viewer")?;
    crate::wait_synced(&mut daemon, &layout, &token, DEVICES)?;
    let tls = load::client_tls(&layout.cert())?;
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;

    rt.block_on(async {
        for round in 0..plan.rounds {
            let (r, rounds) = (round + 1, plan.rounds);
            phase(&format!("MQTT uplink round {r}/{rounds}: a backlog of {} events, broker stopped", plan.backlog));
            let cpu = procs::cpu_secs(daemon.pid())?;
            let batch =
                post_batch(layout.lan, &tls, &layout.secret, plan.backlog, &format!("mqtt-{nonce}-{r}-b")).await?;
            let n = batch.ids.len() as f64;
            let took = secs(batch.last_answer - batch.first_sent);
            report.add("mqtt.backlog.webhook_accepted_per_s", "1/s", None, n / took, None);
            let per_event = (procs::cpu_secs(daemon.pid())? - cpu) / n * 1e6;
            report.add("mqtt.backlog.daemon_cpu_per_event", "us", None, per_event, None);
            daemon.alive()?;
            let up = Instant::now();
            let cpu = procs::cpu_secs(daemon.pid())?;
            broker.start()?;
            let broker_pid = broker.pid();
            let acks = AckSampler::start(layout.local);
            // The daemon's reconnect delay (backoff with jitter, up to 90 s) plus the drain.
            let deadline = Instant::now() + Duration::from_secs(240);
            let got = sub.wait_all(&batch.ids, deadline).await;
            let acked = acks.finish();
            let times: Vec<Instant> = sub.receipts(&batch.ids).into_iter().flatten().collect();
            let log = broker.log();
            let at = |id: &str| log.find(&format!(" as {id} "));
            match (at(SUBSCRIBER_ID), at(DAEMON_CLIENT_ID)) {
                (Some(s), Some(d)) if d < s => eprintln!(
                    "  note: the daemon reconnected before the subscriber; what the broker queued meanwhile \
                     arrived at once, so this rate is slightly overstated"
                ),
                (_, None) => eprintln!("  note: the broker's log shows no connection from {DAEMON_CLIENT_ID}"),
                _ => {}
            }
            let (Some(first), Some(last)) = (times.iter().min(), times.iter().max()) else {
                return Err(format!(
                    "no event of the backlog reached the subscriber within {:.0} s of the broker's start; \
                     uplink metrics: {}\ndaemon log ends with:\n{}",
                    secs(deadline - up),
                    uplink_metrics(&layout),
                    tail(&daemon.log())
                ));
            };
            let span = secs(*last - *first);
            let rate = if span > 0.0 { (times.len() - 1) as f64 / span } else { 0.0 };
            eprintln!(
                "  first event {:.0} ms after the broker started (the daemon's reconnect delay), {got} of {} \
                 in {span:.2} s",
                secs(*first - up) * 1000.0,
                batch.ids.len()
            );
            report.add("mqtt.events_per_s", "1/s", Some(Target::Min(5_000.0)), rate, None);
            // From the broker's start to the last event: the reconnect wait costs (next to) nothing.
            let per_event = (procs::cpu_secs(daemon.pid())? - cpu) / n * 1e6;
            report.add("mqtt.drain.daemon_cpu_per_event", "us", None, per_event, None);
            let per_event = procs::cpu_secs(broker_pid)? / n * 1e6;
            report.add("mqtt.drain.broker_cpu_per_event", "us", None, per_event, None);
            if let Some(rate) = ramp_rate(&acked) {
                report.add("mqtt.drain.puback_per_s", "1/s", None, rate, None);
            }
            if got < batch.ids.len() {
                return Err(format!(
                    "only {got} of {} backlog events reached the subscriber within {:.0} s; uplink metrics: {}",
                    batch.ids.len(),
                    secs(deadline - up),
                    uplink_metrics(&layout)
                ));
            }

            phase(&format!("MQTT uplink round {r}/{rounds}: {} events live, {CLIENTS} webhook clients", plan.live));
            let cpu = procs::cpu_secs(daemon.pid())?;
            let batch = post_batch(layout.lan, &tls, &layout.secret, plan.live, &format!("mqtt-{nonce}-{r}-l")).await?;
            let got = sub.wait_all(&batch.ids, Instant::now() + Duration::from_secs(120)).await;
            let per_event = (procs::cpu_secs(daemon.pid())? - cpu) / batch.ids.len() as f64 * 1e6;
            report.add("mqtt.live.daemon_cpu_per_event", "us", None, per_event, None);
            let last = sub.receipts(&batch.ids).into_iter().flatten().max();
            match last {
                Some(last) if got == batch.ids.len() => {
                    let accepted = batch.ids.len() as f64 / secs(batch.last_answer - batch.first_sent);
                    report.add("mqtt.live.webhook_accepted_per_s", "1/s", None, accepted, None);
                    let delivered = batch.ids.len() as f64 / secs(last - batch.first_sent);
                    report.add("mqtt.live.events_per_s", "1/s", None, delivered, None);
                }
                _ => return Err(format!("only {got} of {} live events reached the subscriber", batch.ids.len())),
            }

            phase(&format!("MQTT uplink round {r}/{rounds}: one event every 10 ms for {} s", plan.latency_secs));
            let (mut from_sent, mut from_answer) =
                latency(layout.lan, &tls, &layout.secret, plan.latency_secs, &format!("mqtt-{nonce}-{r}-t"), &sub)
                    .await?;
            from_sent.sort_unstable();
            from_answer.sort_unstable();
            let ms = |v: &[u32], p: f64| pct(v, p) as f64 / 1000.0;
            report.add("mqtt.event_latency.p50", "ms", None, ms(&from_sent, 50.0), None);
            report.add("mqtt.event_latency.p99", "ms", Some(Target::Max(50.0)), ms(&from_sent, 99.0), None);
            report.add("mqtt.event_latency_after_202.p50", "ms", None, ms(&from_answer, 50.0), None);
            report.add("mqtt.event_latency_after_202.p99", "ms", None, ms(&from_answer, 99.0), None);
            daemon.alive()?;
            if round + 1 < plan.rounds {
                broker.stop()?;
            }
        }
        Ok::<(), String>(())
    })?;
    // The last PUBACKs may still be on their way when the subscriber has everything.
    std::thread::sleep(Duration::from_millis(500));
    let (distinct, duplicates, unparsed) = sub.counts();
    eprintln!("  subscriber: {distinct} distinct events, {duplicates} duplicates, {unparsed} without an id");
    eprintln!("  uplink metrics:\n    {}", uplink_metrics(&layout));
    let log = daemon.log();
    let mut lines: Vec<&str> = log.lines().filter(|l| l.contains("MQTT") || l.contains("uplink")).collect();
    // Without the time stamp (28 characters), a repeated line is shown once.
    lines.dedup_by(|a, b| a.get(28..) == b.get(28..));
    eprintln!("  the daemon's log about the uplink (repeats removed):\n    {}", lines.join("\n    "));
    phase("stopping the MQTT daemon, the broker and the simulator");
    daemon.stop(Duration::from_secs(30))?;
    drop(sub);
    broker.stop()?;
    drop(sim);
    Ok(())
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// One webhook every 10 ms on one connection for `secs`; per event, microseconds from sending its request and from
/// its `202` answer to the subscriber's receipt (0 when it arrived before the answer was read).
async fn latency(
    lan: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    secret: &str,
    secs: f64,
    tag: &str,
    sub: &Subscriber,
) -> Res<(Vec<u32>, Vec<u32>)> {
    let mut conn = load::h1_tls(lan, tls).await?;
    let n = ((secs * 100.0).round() as usize).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent = Vec::with_capacity(n);
    for i in 0..n {
        tick.tick().await;
        let t = Instant::now();
        let (status, _, body) = load::send(&mut conn, webhook(secret, &format!("{tag}-{i}"), i)).await?;
        sent.push((event_id(status, &body)?, t, Instant::now()));
    }
    let mut ids: Vec<u64> = sent.iter().map(|s| s.0).collect();
    ids.sort_unstable();
    let got = sub.wait_all(&ids, Instant::now() + Duration::from_secs(10)).await;
    if got == 0 {
        return Err(format!("none of the {n} events sent at 100/s reached the subscriber within 10 s"));
    }
    if got < n {
        eprintln!("  note: {} of {n} events sent at 100/s did not arrive within 10 s", n - got);
    }
    let ids: Vec<u64> = sent.iter().map(|s| s.0).collect();
    let us = |from: Instant, to: Instant| to.saturating_duration_since(from).as_micros().min(u32::MAX as u128) as u32;
    let (mut from_sent, mut from_answer) = (Vec::new(), Vec::new());
    for ((_, t, answered), seen) in sent.iter().zip(sub.receipts(&ids)) {
        if let Some(seen) = seen {
            from_sent.push(us(*t, seen));
            from_answer.push(us(*answered, seen));
        }
    }
    Ok((from_sent, from_answer))
}
