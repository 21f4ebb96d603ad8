//! The MQTT 5 uplink (issue 25) against a real broker and real clients: Debian's `mosquitto` on an ephemeral port
//! (plain, and TLS with a CA made by the test plus a password), `mosquitto_sub` / `mosquitto_pub` speaking MQTT 5,
//! the real daemon as a child process and the Xyte simulator in this process.
//!
//! - birth on connect, the will after SIGKILL, `offline` with `clean: true` after SIGTERM, the session counter;
//! - retained device states equal `GET /v1/devices`, follow a status change, are cleared when a device goes;
//! - every event id of the log arrives on `events/#` across a 30 s broker outage and five SIGKILLs of the daemon,
//!   duplicates only within the in-flight window;
//! - command requests: run once per correlation data, answered on the response topic; role checks; bad input;
//! - `/readyz` and `/metrics` while the broker is down; bad settings are configuration errors.
//!
//! Nothing sleeps to synchronise: every wait is a read or a poll with a deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Broker, BrokerOptions, MqttMsg, Sub, mqtt_pub, poll};
use xyte_edge::sim::{self, SimHandle, SimOptions};

mod support;

const SECRET: &str = "mqtt-test-webhook-secret-0123";
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The in-flight window of the interface: duplicates after a crash or reconnect stay within it.
const WINDOW: usize = 256;

/// The simulator in this process, on its own runtime, for the whole test.
struct Xyte {
    sim: SimHandle,
    _rt: tokio::runtime::Runtime,
}

fn xyte(devices: usize) -> Xyte {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let opts = SimOptions { devices, churn: false, ..Default::default() };
    let sim = rt.block_on(sim::spawn("127.0.0.1:0".parse().unwrap(), opts)).expect("simulator starts");
    Xyte { sim, _rt: rt }
}

/// The daemon (`serve`) pointed at the simulator and a broker, with its loopback HTTP listener.
struct Edge {
    daemon: support::Daemon,
    /// `127.0.0.1:port` of the plain loopback listener.
    local: String,
    state: PathBuf,
    socket: PathBuf,
    agent: ureq::Agent,
    token: Option<String>,
}

fn edge_command(dir: &Path, xyte: &Xyte, broker: &Broker, env: &[(&str, &str)]) -> std::process::Command {
    let mut cmd = support::bin();
    cmd.arg("serve")
        .env("XYTE_STATE_DIR", dir.join("state"))
        .env("XYTE_MCP_SOCKET", dir.join("mcp.sock"))
        .env("XYTE_PRESETS_FILE", dir.join("presets.json"))
        .env("XYTE_HTTP_LISTEN", "")
        .env("XYTE_HTTP_LOCAL_LISTEN", "127.0.0.1:0")
        .env("XYTE_BASE_URL", xyte.sim.base_url())
        .env("XYTE_API_KEY", xyte.sim.sim.api_key())
        .env("XYTE_POLL_INTERVAL", "1")
        .env("XYTE_RATE_LIMIT", "6000")
        .env("XYTE_WEBHOOK_SECRET", SECRET)
        .env("XYTE_LOG_FORMAT", "text")
        .env("XYTE_MQTT_URL", broker.url())
        .env("XYTE_SITE", "test-site");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

impl Edge {
    /// Starts the daemon with state in `dir` (reused across restarts) and waits until it serves.
    fn start(dir: &Path, xyte: &Xyte, broker: &Broker, env: &[(&str, &str)]) -> Edge {
        let mut daemon = support::Daemon::spawn(edge_command(dir, xyte, broker, env));
        let line = daemon.wait_line("tls=false", Duration::from_secs(30));
        let local = line.split("addr=").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
        daemon.wait_line("ready:", Duration::from_secs(30));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Edge { daemon, local, state: dir.join("state"), socket: dir.join("mcp.sock"), agent, token: None }
    }

    /// An admin LAN token (made once with `xyte-edge token create`).
    fn token(&mut self) -> String {
        if self.token.is_none() {
            let out = support::bin()
                .args(["token", "create", "--name", &format!("mqtt-test-{}", self.daemon.pid), "--role", "admin"])
                .env("XYTE_STATE_DIR", &self.state)
                .output()
                .unwrap();
            assert!(out.status.success(), "token create: {}", String::from_utf8_lossy(&out.stderr));
            self.token = Some(String::from_utf8(out.stdout).unwrap().trim().to_string());
        }
        self.token.clone().unwrap()
    }

    /// GET on the loopback listener: (status, JSON body or Null).
    fn get(&mut self, path: &str) -> (u16, Value) {
        let token = self.token();
        let mut r = self
            .agent
            .get(format!("http://{}{path}", self.local))
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let body = r.body_mut().read_to_string().unwrap_or_default();
        (r.status().as_u16(), serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    fn get_ok(&mut self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// `edge://status` read over the MCP socket (what `xyte-edge status` shows).
    fn status(&mut self) -> Value {
        let mut mcp = support::Mcp::connect(&self.socket);
        let r = mcp.request("resources/read", json!({"uri": "edge://status"}));
        let text = r["result"]["contents"][0]["text"].as_str().unwrap_or_else(|| panic!("edge://status: {r}"));
        serde_json::from_str(text).unwrap()
    }

    /// `xyte-edge status` as an administrator runs it.
    fn status_cli(&self) -> String {
        let out = support::bin().arg("status").env("XYTE_MCP_SOCKET", &self.socket).output().unwrap();
        assert!(out.status.success(), "xyte-edge status: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every event of the log, paging through `GET /v1/events?after_id=…&limit=500`.
    fn all_events(&mut self) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        let mut after = 0;
        loop {
            let page = self.get_ok(&format!("/v1/events?after_id={after}&limit=500"));
            let events = page["events"].as_array().unwrap().clone();
            if events.is_empty() {
                return out;
            }
            after = events.last().unwrap()["id"].as_i64().unwrap();
            out.extend(events);
        }
    }

    /// The value of an unlabelled metric on the loopback listener (None when not exposed).
    fn metric(&mut self, name: &str) -> Option<f64> {
        let mut r = self.agent.get(format!("http://{}/v1/metrics", self.local)).call().unwrap();
        let text = r.body_mut().read_to_string().unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .map(|v| v.trim().parse().unwrap())
    }

    fn metrics_text(&mut self) -> String {
        let mut r = self.agent.get(format!("http://{}/v1/metrics", self.local)).call().unwrap();
        r.body_mut().read_to_string().unwrap()
    }

    fn readyz(&mut self) -> (u16, Value) {
        let mut r = self.agent.get(format!("http://{}/readyz", self.local)).call().unwrap();
        let body = r.body_mut().read_to_string().unwrap_or_default();
        (r.status().as_u16(), serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    fn stop(&mut self) -> Option<i32> {
        self.daemon.signal(nix::sys::signal::Signal::SIGTERM);
        self.daemon.wait_exit(Duration::from_secs(15)).0
    }

    fn kill(&mut self) {
        self.daemon.signal(nix::sys::signal::Signal::SIGKILL);
        self.daemon.wait_exit(Duration::from_secs(10));
    }
}

fn signature(body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    format!("sha256={}", tag.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// A signed webhook to the daemon's loopback listener: the event id, or why not (no daemon there, not accepted).
fn post_webhook(agent: &ureq::Agent, local: &str, id: &str) -> Result<i64, String> {
    let body = json!({"type": "uplink.test", "id": id, "data": {"n": id}}).to_string();
    let mut r = agent
        .post(format!("http://{local}/v1/webhook"))
        .header("Content-Type", "application/json")
        .header("X-Signature-256", &signature(body.as_bytes()))
        .send(body.as_bytes())
        .map_err(|e| e.to_string())?;
    let text = r.body_mut().read_to_string().map_err(|e| e.to_string())?;
    if r.status().as_u16() != 202 {
        return Err(format!("{}: {text}", r.status()));
    }
    serde_json::from_str::<Value>(&text).ok().and_then(|v| v["event_id"].as_i64()).ok_or(text)
}

fn state_topic(prefix: &str) -> String {
    format!("{prefix}/gateway/state")
}

/// The birth: online, a positive session, the version, an RFC 3339 start time and the site.
fn assert_birth(msg: &MqttMsg, site: &str) -> i64 {
    let birth = msg.json();
    assert_eq!(birth["state"], "online", "{msg:?}");
    assert_eq!(birth["version"], VERSION, "{msg:?}");
    assert_eq!(birth["site"], site, "{msg:?}");
    let started = birth["started_at"].as_str().unwrap_or_else(|| panic!("no started_at: {msg:?}"));
    time::OffsetDateTime::parse(started, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("started_at is not RFC 3339 ({e}): {msg:?}"));
    let session = birth["session"].as_i64().unwrap_or_else(|| panic!("no session number: {msg:?}"));
    assert!(session >= 1, "{msg:?}");
    assert_eq!(msg.qos, 1, "published QoS 1: {msg:?}");
    session
}

/// What a new subscriber gets as the retained message of `topic` (waits for it).
fn retained(broker: &Broker, topic: &str) -> MqttMsg {
    let mut sub = Sub::start(broker, &[topic]);
    let msg = sub.wait_msg(&format!("the retained message of {topic}"), Duration::from_secs(10), |m| m.topic == topic);
    assert!(msg.retain, "a new subscriber gets it as retained: {msg:?}");
    msg
}

fn is_state(msg: &MqttMsg, topic: &str, state: &str) -> bool {
    msg.topic == topic && msg.payload.as_deref().is_some_and(|p| p.contains(&format!("\"state\":\"{state}\"")))
}

/// Birth, the will after SIGKILL (same session), a new birth with the next session after a restart, and `offline`
/// with `clean: true` on SIGTERM that stays the retained state (no will after a clean stop). Default prefix.
#[test]
fn birth_will_and_clean_stop() {
    let started = Instant::now();
    let xyte = xyte(4);
    let broker = Broker::start(BrokerOptions::default());
    let topic = state_topic("xyte-edge/v1/test-site");
    let mut sub = Sub::start(&broker, &[&topic]);
    let dir = tempfile::tempdir().unwrap();

    let mut edge = Edge::start(dir.path(), &xyte, &broker, &[]);
    let birth = sub.wait_msg("the birth", Duration::from_secs(20), |m| is_state(m, &topic, "online"));
    let first = assert_birth(&birth, "test-site");
    let kept = retained(&broker, &topic);
    assert_eq!(kept.json(), birth.json(), "the birth is the retained state");

    // SIGKILL: the broker publishes the will, retained, with the birth's session.
    edge.kill();
    let will = sub.wait_msg("the will", Duration::from_secs(20), |m| is_state(m, &topic, "offline"));
    assert_eq!(will.json(), json!({"state": "offline", "session": first}), "{will:?}");
    assert_eq!(retained(&broker, &topic).json(), will.json(), "the will is retained");

    // Restarted on the same database: the session counter went up.
    let mut edge = Edge::start(dir.path(), &xyte, &broker, &[]);
    let again = sub.wait_msg("the second birth", Duration::from_secs(20), |m| {
        is_state(m, &topic, "online") && m.json()["session"] != json!(first)
    });
    let second = assert_birth(&again, "test-site");
    assert!(second > first, "the session increases over a restart: {first} then {second}");
    assert_ne!(again.json()["started_at"], birth.json()["started_at"], "a new start time");

    // SIGTERM: offline with clean:true, published by the daemon itself, then a normal DISCONNECT.
    assert_eq!(edge.stop(), Some(0), "clean exit:\n{}", edge.daemon.output.join("\n"));
    let clean = sub.wait_msg("the clean offline", Duration::from_secs(10), |m| {
        is_state(m, &topic, "offline") && m.json()["session"] == json!(second)
    });
    assert_eq!(clean.json(), json!({"state": "offline", "session": second, "clean": true}), "{clean:?}");
    // No will after a clean stop: a new subscriber still sees the clean offline as the retained state.
    assert_eq!(retained(&broker, &topic).json(), clean.json());
    sub.drain();
    let after: Vec<&MqttMsg> = sub.on(&topic).into_iter().filter(|m| m.json()["session"] == json!(second)).collect();
    assert_eq!(after.len(), 2, "birth and clean offline only, no will after it: {after:?}");
    eprintln!("birth/will/clean: sessions {first}, {second}; {:?}", started.elapsed());
}

/// The same over TLS (a CA generated here, `mqtts://localhost`, `XYTE_MQTT_CA_FILE`) with a username and password,
/// and a custom topic prefix.
#[test]
fn birth_over_tls_with_a_password() {
    let started = Instant::now();
    let xyte = xyte(4);
    let certs = tempfile::tempdir().unwrap();
    let tls = support::make_tls(certs.path(), &["localhost", "127.0.0.1"]);
    let broker = Broker::start(BrokerOptions {
        tls: Some(tls.clone()),
        user: Some(("edge".into(), "s3cret-pass".into())),
        ..Default::default()
    });
    let topic = state_topic("fleet/acme/hq");
    let mut sub = Sub::start(&broker, &[&topic]);
    let dir = tempfile::tempdir().unwrap();
    let ca = tls.ca.to_str().unwrap();
    let env = [
        ("XYTE_MQTT_CA_FILE", ca),
        ("XYTE_MQTT_USERNAME", "edge"),
        ("XYTE_MQTT_PASSWORD", "s3cret-pass"),
        ("XYTE_MQTT_TOPIC_PREFIX", "fleet/acme/hq"),
        ("XYTE_SITE", "hq"),
    ];
    let mut edge = Edge::start(dir.path(), &xyte, &broker, &env);
    let birth = sub.wait_msg("the birth over TLS", Duration::from_secs(20), |m| is_state(m, &topic, "online"));
    let session = assert_birth(&birth, "hq");
    poll("xyte_edge_mqtt_connected 1", Duration::from_secs(10), || {
        (edge.metric("xyte_edge_mqtt_connected") == Some(1.0)).then_some(())
    });
    let status = edge.status();
    assert_eq!(status["uplink"]["connected"], true, "{status}");
    assert_eq!(status["uplink"]["session"], session, "{status}");
    assert!(!status.to_string().contains("s3cret-pass"), "the password is not shown: {status}");
    assert_eq!(edge.stop(), Some(0));
    let clean = sub.wait_msg("the clean offline", Duration::from_secs(10), |m| is_state(m, &topic, "offline"));
    assert_eq!(clean.json(), json!({"state": "offline", "session": session, "clean": true}));
    assert!(!edge.daemon.output.iter().any(|l| l.contains("s3cret-pass")), "the password is never logged");

    // A wrong password never connects, and the daemon keeps serving (ready, uplink disconnected).
    let dir = tempfile::tempdir().unwrap();
    let wrong = [env[0], env[1], ("XYTE_MQTT_PASSWORD", "wrong-pass"), env[3], env[4]];
    let mut edge = Edge::start(dir.path(), &xyte, &broker, &wrong);
    // The broker saw the attempt and refused it.
    poll("the broker refusing the daemon's connection", Duration::from_secs(30), || {
        broker.log_text().contains("not authorised").then_some(())
    });
    let (status, ready) = edge.readyz();
    assert_eq!(status, 200, "{ready}");
    assert!(ready["reasons"].to_string().contains("uplink: disconnected"), "{ready}");
    assert_eq!(edge.metric("xyte_edge_mqtt_connected"), Some(0.0));
    assert_eq!(edge.stop(), Some(0));

    // The password from a file (XYTE_MQTT_PASSWORD_FILE, a trailing newline as editors leave it).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mqtt-password");
    std::fs::write(&file, "s3cret-pass\n").unwrap();
    let from_file = [env[0], env[1], ("XYTE_MQTT_PASSWORD_FILE", file.to_str().unwrap()), env[3], env[4]];
    let _edge = Edge::start(dir.path(), &xyte, &broker, &from_file);
    sub.wait_msg("a birth with the password from a file", Duration::from_secs(20), |m| {
        is_state(m, &topic, "online")
            && m.json()["session"] == 1
            && m.json()["started_at"] != birth.json()["started_at"]
    });
    eprintln!("tls: {:?}", started.elapsed());
}

/// The retained `device/<id>/state` of every device by id, from `msgs` (the last one per topic wins).
fn device_states(msgs: &[MqttMsg], prefix: &str) -> BTreeMap<String, Option<Value>> {
    let mut out = BTreeMap::new();
    for m in msgs {
        let Some(id) = m.topic.strip_prefix(&format!("{prefix}/device/")).and_then(|t| t.strip_suffix("/state")) else {
            continue;
        };
        out.insert(id.to_string(), m.payload.as_ref().map(|_| m.json()));
    }
    out
}

fn devices_by_id(list: &Value) -> BTreeMap<String, Option<Value>> {
    list["devices"].as_array().unwrap().iter().map(|d| (id_text(&d["id"]), Some(d.clone()))).collect()
}

fn id_text(v: &Value) -> String {
    v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())
}

/// Retained device states equal the items of `GET /v1/devices` after the first sync, follow a status change, and
/// a device that disappears gets an empty retained message. The health topic is retained with its fields.
#[test]
fn retained_device_states_follow_the_fleet() {
    let started = Instant::now();
    let xyte = xyte(12);
    let broker = Broker::start(BrokerOptions::default());
    let prefix = "xyte-edge/v1/test-site";
    let wildcard = format!("{prefix}/device/+/state");
    let mut sub = Sub::start(&broker, &[&wildcard]);
    let dir = tempfile::tempdir().unwrap();
    let mut edge = Edge::start(dir.path(), &xyte, &broker, &[]);
    edge.daemon.wait_line("Xyte reachable", Duration::from_secs(30));
    let list = edge.get_ok("/v1/devices?limit=500");
    assert_eq!(list["devices"].as_array().unwrap().len(), 12, "{list}");
    let want = devices_by_id(&list);

    // After the first sync, every device's state, equal to the list's item; retained for a later subscriber.
    sub.wait_until("a state for all 12 devices", Duration::from_secs(20), |msgs| {
        device_states(msgs, prefix).len() >= 12
    });
    assert_eq!(device_states(&sub.msgs, prefix), want, "device states = GET /v1/devices items");
    assert!(sub.msgs.iter().all(|m| m.qos == 1), "QoS 1: {:?}", sub.msgs);
    let mut late = Sub::start(&broker, &[&wildcard]);
    late.wait_until("a retained state for all 12 devices", Duration::from_secs(10), |msgs| {
        device_states(msgs, prefix).len() >= 12
    });
    assert!(late.msgs.iter().all(|m| m.retain), "retained: {:?}", late.msgs);
    assert_eq!(device_states(&late.msgs, prefix), want, "retained device states = GET /v1/devices items");
    drop(late);
    let published = sub.msgs.len();

    // A device goes offline at Xyte (or online, if it was offline): its retained state follows.
    let device = want.keys().next().unwrap().clone();
    let before = want[&device].as_ref().unwrap()["status"].as_str().unwrap().to_string();
    let after = if before == "offline" { "online" } else { "offline" };
    assert!(xyte.sim.sim.set_device_status(&device, after));
    let topic = format!("{prefix}/device/{device}/state");
    let changed = sub.wait_msg(&format!("{device} {after}"), Duration::from_secs(30), |m| {
        m.topic == topic && m.payload.is_some() && m.json()["status"] == after
    });
    let listed = edge.get_ok("/v1/devices?limit=500");
    let item = listed["devices"].as_array().unwrap().iter().find(|d| id_text(&d["id"]) == device).unwrap().clone();
    assert_eq!(changed.json(), item, "the new state is the list's item");
    assert_eq!(retained(&broker, &topic).json(), item, "and it is the retained one");
    // Only the changed device was re-published.
    let others: Vec<&MqttMsg> = sub.msgs[published..].iter().filter(|m| m.topic != topic).collect();
    assert!(others.is_empty(), "unchanged devices are not re-published: {others:?}");

    // The device is deleted at Xyte: an empty retained message clears its topic.
    let gone = want.keys().nth(1).unwrap().clone();
    let mut r = edge
        .agent
        .delete(format!("{}/devices/{gone}", xyte.sim.base_url()))
        .header("Authorization", xyte.sim.sim.api_key())
        .call()
        .unwrap();
    assert!(r.status().is_success(), "simulator DELETE: {}", r.body_mut().read_to_string().unwrap_or_default());
    let gone_topic = format!("{prefix}/device/{gone}/state");
    sub.wait_msg(&format!("an empty message for deleted {gone}"), Duration::from_secs(30), |m| {
        m.topic == gone_topic && m.payload.is_none()
    });
    let mut fresh = Sub::start(&broker, &[&wildcard]);
    let list = edge.get_ok("/v1/devices?limit=500");
    let want = devices_by_id(&list);
    assert_eq!(want.len(), 11, "{list}");
    fresh.wait_until("the 11 remaining retained states", Duration::from_secs(10), |msgs| {
        device_states(msgs, prefix).len() >= 11
    });
    assert_eq!(device_states(&fresh.msgs, prefix), want, "no retained state left for {gone}");

    // Health: retained, with its fields, following the sync (published on change, at most every 5 s).
    let health_topic = format!("{prefix}/gateway/health");
    let mut health = Sub::start(&broker, &[&health_topic]);
    // The log's head now (the status change and the deletion are events); nothing changes after this.
    let head = edge.all_events().last().map(|e| e["id"].as_i64().unwrap()).unwrap_or(0);
    assert!(head > 0, "the status change and the deletion are in the event log");
    let synced =
        health.wait_msg(&format!("a health message with event_log_head {head}"), Duration::from_secs(20), |m| {
            m.payload.is_some() && m.json()["event_log_head"] == head
        });
    let h = synced.json();
    for key in ["xyte_reachable", "last_sync_at", "outbox_depth", "event_log_head", "uplink_backlog"] {
        assert!(h.get(key).is_some(), "{key} in {h}");
    }
    assert_eq!(h["xyte_reachable"], true, "{h}");
    assert!(h["last_sync_at"].is_string(), "{h}");
    assert_eq!(h["outbox_depth"], 0, "{h}");
    let latest = retained(&broker, &health_topic);
    assert_eq!(latest.json()["event_log_head"], head, "the latest health is the retained one: {latest:?}");
    eprintln!("device states: {:?}", started.elapsed());
}

/// Webhooks (two threads, about 200 a second in all) to whichever daemon is current, and a device status flip at
/// the simulator every half second, until stopped. Posts that find no daemon (killed, restarting) are skipped: the
/// test compares with the event log, not with what it posted.
struct Load {
    stop: Arc<AtomicBool>,
    posted: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(local: &Arc<Mutex<String>>, sim: &Arc<xyte_edge::sim::Simulator>, tag: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let posted = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        for t in 0..2 {
            let (stop, posted, local, tag) = (stop.clone(), posted.clone(), local.clone(), tag.to_string());
            threads.push(std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(5)))
                    .build()
                    .into();
                let started = Instant::now();
                for i in 0u32.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let addr = local.lock().unwrap().clone();
                    if post_webhook(&agent, &addr, &format!("{tag}-{t}-{i}")).is_ok() {
                        posted.fetch_add(1, Ordering::SeqCst);
                    }
                    // Pacing the load (about 100 a second per thread), not waiting for anything.
                    let next = started + Duration::from_millis(10) * (i + 1);
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
            }));
        }
        let (stop2, sim) = (stop.clone(), sim.clone());
        threads.push(std::thread::spawn(move || {
            let ids = sim.device_ids();
            let started = Instant::now();
            for i in 0u32.. {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let id = &ids[i as usize % ids.len()];
                let status = if (i as usize / ids.len()).is_multiple_of(2) { "offline" } else { "online" };
                sim.set_device_status(id, status);
                let next = started + Duration::from_millis(500) * (i + 1);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        }));
        Load { stop, posted, threads }
    }

    /// Stops the load; how many webhooks were accepted.
    fn finish(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        self.posted.load(Ordering::SeqCst)
    }
}

/// Event messages by id: how often each arrived, and the first copy.
struct Tally {
    count: BTreeMap<i64, usize>,
    first: BTreeMap<i64, MqttMsg>,
    /// Ids whose first copy arrived after a higher id's first copy.
    out_of_order: Vec<(i64, i64)>,
}

fn tally(msgs: &[MqttMsg]) -> Tally {
    let mut t = Tally { count: BTreeMap::new(), first: BTreeMap::new(), out_of_order: Vec::new() };
    let mut highest = 0;
    for m in msgs {
        let id = m.json()["id"].as_i64().unwrap_or_else(|| panic!("an event without an id: {m:?}"));
        *t.count.entry(id).or_default() += 1;
        if let std::collections::btree_map::Entry::Vacant(e) = t.first.entry(id) {
            e.insert(m.clone());
            if id < highest {
                t.out_of_order.push((id, highest));
            }
            highest = highest.max(id);
        }
    }
    t
}

fn duplicates(msgs: &[MqttMsg]) -> usize {
    tally(msgs).count.values().map(|n| n - 1).sum()
}

/// Waits until the subscriber has every event of the log; checks each first copy is the log's envelope exactly,
/// on `events/<kind>`, not retained. Returns the number of events in the log.
fn expect_every_event(edge: &mut Edge, sub: &mut Sub, prefix: &str, phase: &str) -> usize {
    let log = edge.all_events();
    let ids: BTreeSet<i64> = log.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(!ids.is_empty());
    let started = Instant::now();
    let deadline = Duration::from_secs(90);
    let mut missing = ids.clone();
    while !missing.is_empty() {
        if started.elapsed() > deadline {
            let show: Vec<&i64> = missing.iter().take(30).collect();
            panic!(
                "{phase}: {} of {} events never arrived on events/# within {deadline:?} (first: {show:?}); \
                 {} messages received; daemon output:\n{}",
                missing.len(),
                ids.len(),
                sub.msgs.len(),
                edge.daemon.output.join("\n")
            );
        }
        sub.read_for(Duration::from_millis(500));
        let t = tally(&sub.msgs);
        missing.retain(|id| !t.count.contains_key(id));
    }
    let t = tally(&sub.msgs);
    for e in &log {
        let id = e["id"].as_i64().unwrap();
        let m = &t.first[&id];
        assert_eq!(m.topic, format!("{prefix}/events/{}", e["kind"].as_str().unwrap()), "{phase}: {m:?}");
        assert!(!m.retain && m.qos == 1, "{phase}: not retained, QoS 1: {m:?}");
        assert_eq!(&m.json(), e, "{phase}: the message is the log's event exactly");
    }
    assert!(t.out_of_order.is_empty(), "{phase}: events arrive in id order; (id, after) = {:?}", t.out_of_order);
    eprintln!("{phase}: all {} events arrived after {:?} of waiting", ids.len(), started.elapsed());
    ids.len()
}

/// The broker is stopped for 30 s while webhooks and device changes keep coming, then restarted on the same port:
/// every event id of the log arrives on `events/#`. Then the daemon is SIGKILLed five times mid-stream and
/// restarted: every id still arrives, duplicates only within the in-flight window. The subscriber has a persistent
/// session (and the broker persistence), so it loses nothing itself while the broker is away.
#[test]
fn every_event_arrives_across_a_broker_outage_and_five_sigkills() {
    let started = Instant::now();
    let seed: u64 = std::env::var("MQTT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("events: seed {seed} (MQTT_SEED={seed} replays the kill moments)");
    let mut rng = xyte_edge::sim::rng::Rng::new(seed);
    let xyte = xyte(8);
    let mut broker = Broker::start(BrokerOptions { persistence: true, ..Default::default() });
    let prefix = "xyte-edge/v1/test-site";
    let mut sub = Sub::persistent(&broker, &[&format!("{prefix}/events/#")], "event-counter");
    let dir = tempfile::tempdir().unwrap();
    let mut edge = Edge::start(dir.path(), &xyte, &broker, &[]);
    edge.daemon.wait_line("Xyte reachable", Duration::from_secs(30));
    poll("the uplink connected", Duration::from_secs(20), || {
        (edge.metric("xyte_edge_mqtt_connected") == Some(1.0)).then_some(())
    });
    let local = Arc::new(Mutex::new(edge.local.clone()));

    // Phase 1: a broker outage of 30 s under load.
    let load = Load::start(&local, &xyte.sim.sim, "outage");
    sub.wait_until("events flowing", Duration::from_secs(20), |msgs| msgs.len() >= 50);
    broker.stop();
    let outage = Instant::now();
    poll("the uplink noticing the outage", Duration::from_secs(20), || {
        (edge.metric("xyte_edge_mqtt_connected") == Some(0.0)).then_some(())
    });
    let (status, ready) = edge.readyz();
    assert_eq!(status, 200, "the gateway stays ready for local clients while the broker is down: {ready}");
    assert!(ready["reasons"].to_string().contains("uplink: disconnected"), "{ready}");
    // The outage lasts 30 s: the scenario's length, not a wait for anything.
    std::thread::sleep(Duration::from_secs(30).saturating_sub(outage.elapsed()));
    // Checked at the end, so that a wrong figure here does not hide whether every event arrives.
    let mut deferred = Vec::new();
    let backlog = edge.metric("xyte_edge_mqtt_backlog");
    let health = edge.status();
    if !backlog.is_some_and(|b| b > 0.0) {
        deferred.push(format!(
            "xyte_edge_mqtt_backlog is {backlog:?} after {:?} of broker outage under load (edge://status uplink: {}); \
             the events waiting for the broker are the backlog",
            outage.elapsed(),
            health["uplink"]
        ));
    }
    broker.restart();
    poll("the uplink reconnecting", Duration::from_secs(90), || {
        (edge.metric("xyte_edge_mqtt_connected") == Some(1.0)).then_some(())
    });
    let reconnected = outage.elapsed();
    let posted = load.finish();
    let in_log = expect_every_event(&mut edge, &mut sub, prefix, "after the broker outage");
    let phase1 = sub.msgs.len();
    let dup1 = duplicates(&sub.msgs);
    eprintln!("outage: {posted} webhooks, {in_log} events, {dup1} duplicates; reconnected {reconnected:?} after stop");
    assert!(dup1 <= WINDOW, "duplicates after one reconnect stay within the in-flight window: {dup1}");
    let (status, ready) = edge.readyz();
    assert!(status == 200 && !ready["reasons"].to_string().contains("uplink"), "{ready}");

    // Phase 2: five SIGKILLs mid-stream, each followed by a restart on the same database.
    let load = Load::start(&local, &xyte.sim.sim, "kills");
    for round in 0..5 {
        let at = Duration::from_millis(300 + rng.below(1500) as u64);
        // Let the stream run (the load keeps posting) until the kill moment.
        let before = sub.msgs.len();
        std::thread::sleep(at);
        sub.drain();
        assert!(sub.msgs.len() > before, "round {round}: events were flowing when the daemon was killed");
        edge.kill();
        edge = Edge::start(dir.path(), &xyte, &broker, &[]);
        *local.lock().unwrap() = edge.local.clone();
    }
    // A little more load on the last daemon, then everything must arrive.
    sub.wait_until("events from the last daemon", Duration::from_secs(20), |msgs| msgs.len() > phase1 + 100);
    let posted = load.finish();
    let in_log = expect_every_event(&mut edge, &mut sub, prefix, "after five SIGKILLs");
    let dup2 = duplicates(&sub.msgs) - dup1;
    eprintln!("kills: {posted} webhooks, {in_log} events in the log, {dup2} duplicates over 5 kills");
    assert!(dup2 <= 5 * 2 * WINDOW, "duplicates only within the window per kill: {dup2} > {}", 5 * 2 * WINDOW);
    let t = tally(&sub.msgs);
    let worst = t.count.iter().max_by_key(|(_, n)| **n).unwrap();
    assert!(
        *worst.1 <= 6,
        "no id repeats more than once per kill or reconnect: id {} arrived {} times",
        worst.0,
        worst.1
    );
    assert!(deferred.is_empty(), "{}", deferred.join("\n"));
    eprintln!("events: {:?}", started.elapsed());
}

/// Command requests on `P/cmd/req/<tool>` with MQTT 5 response topic and correlation data, answers collected by
/// a subscriber on `answers/#`.
struct Requester<'a> {
    broker: &'a Broker,
    prefix: String,
    answers: Sub,
}

impl<'a> Requester<'a> {
    fn new(broker: &'a Broker, prefix: &str) -> Requester<'a> {
        Requester { broker, prefix: prefix.to_string(), answers: Sub::start(broker, &["answers/#"]) }
    }

    /// Publishes a request; `reply_to` None: without a response topic.
    fn publish(&self, tool: &str, payload: Option<&[u8]>, corr: &str, reply_to: Option<&str>) {
        let mut props = vec![("correlation-data", corr)];
        if let Some(r) = reply_to {
            props.push(("response-topic", r));
        }
        mqtt_pub(self.broker, &format!("{}/cmd/req/{tool}", self.prefix), payload, &props);
    }

    /// The answer on `reply_to` that carries `corr`.
    fn answer(&mut self, reply_to: &str, corr: &str) -> Value {
        let m = self.answers.wait_msg(&format!("the answer to {corr} on {reply_to}"), Duration::from_secs(30), |m| {
            m.topic == reply_to && m.correlation() == Some(corr)
        });
        assert_eq!(m.qos, 1, "answers are QoS 1: {m:?}");
        let v = m.json();
        assert!(matches!(v["status"].as_str(), Some("ok" | "error")), "{v}");
        v
    }

    /// A request with `args` as its payload, answered on `answers/<corr>`.
    fn ask(&mut self, tool: &str, args: &Value, corr: &str) -> Value {
        let reply_to = format!("answers/{corr}");
        self.publish(tool, Some(args.to_string().as_bytes()), corr, Some(&reply_to));
        self.answer(&reply_to, corr)
    }

    fn ask_raw(&mut self, tool: &str, payload: Option<&[u8]>, corr: &str) -> Value {
        let reply_to = format!("answers/{corr}");
        self.publish(tool, payload, corr, Some(&reply_to));
        self.answer(&reply_to, corr)
    }

    /// Until the daemon has subscribed, requests go nowhere: probe with a read until one is answered.
    fn wait_until_subscribed(&mut self, device: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for i in 0.. {
            assert!(Instant::now() < deadline, "no answer to a command request within 30 s");
            let corr = format!("probe-{i}");
            let reply_to = format!("answers/{corr}");
            let args = json!({"device_id": device}).to_string();
            self.publish("get_device_status", Some(args.as_bytes()), &corr, Some(&reply_to));
            // The probe is repeated every half second until the subscription exists.
            self.answers.read_for(Duration::from_millis(500));
            if self.answers.msgs.iter().any(|m| m.correlation().is_some_and(|c| c.starts_with("probe-"))) {
                return;
            }
        }
    }
}

fn error_code(answer: &Value) -> &str {
    assert_eq!(answer["status"], "error", "{answer}");
    assert!(answer["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{answer}");
    answer["error"]["code"].as_str().unwrap_or_default()
}

/// Commands the simulator received whose body has `friendly_name` = `name`.
fn received(xyte: &Xyte, name: &str) -> usize {
    xyte.sim.sim.stats().commands.iter().filter(|(_, body)| body["friendly_name"] == name).count()
}

/// With `XYTE_MQTT_COMMANDS=on` (operator): a command request reaches the simulator exactly once, also when it is
/// repeated with the same correlation data (the first answer comes again, on the repeat's response topic); a
/// dry run answers without reaching it; bad input gets its error answer; a request without a response topic gets
/// none, is logged, and the daemon keeps answering. Requests are audited as principal `mqtt`.
#[test]
fn command_requests_run_once_and_are_answered() {
    let started = Instant::now();
    let xyte = xyte(4);
    let broker = Broker::start(BrokerOptions::default());
    let prefix = "fleet/cmd-test";
    let mut everything = Sub::start(&broker, &["#"]);
    let mut req = Requester::new(&broker, prefix);
    let dir = tempfile::tempdir().unwrap();
    let env = [("XYTE_MQTT_COMMANDS", "on"), ("XYTE_MQTT_TOPIC_PREFIX", prefix)];
    let mut edge = Edge::start(dir.path(), &xyte, &broker, &env);
    edge.daemon.wait_line("Xyte reachable", Duration::from_secs(30));
    let device = xyte.sim.sim.device_ids()[0].clone();
    req.wait_until_subscribed(&device);

    // A read, and an empty payload meaning {}.
    let status = req.ask("get_device_status", &json!({"device_id": device}), "read-1");
    assert_eq!(status["status"], "ok", "{status}");
    assert_eq!(id_text(&status["result"]["device"]["id"]), device, "{status}");
    let listed = req.ask_raw("list_devices", None, "empty-1");
    assert_eq!((listed["status"].as_str(), listed["result"]["total"].as_u64()), (Some("ok"), Some(4)), "{listed}");

    // send_command: once at Xyte, also when the same request comes again.
    let args = json!({"device_id": device, "command": "reboot", "friendly_name": "mqtt-once"});
    let first = req.ask("send_command", &args, "c-once");
    assert_eq!(first["status"], "ok", "{first}");
    assert!(first["result"]["xyte_command_id"].as_str().is_some(), "{first}");
    assert_eq!(received(&xyte, "mqtt-once"), 1, "the command reached Xyte once");
    // The same request again (same correlation data, same response topic).
    req.publish("send_command", Some(args.to_string().as_bytes()), "c-once", Some("answers/c-once"));
    req.answers.wait_until("the second answer to c-once", Duration::from_secs(30), |msgs| {
        msgs.iter().filter(|m| m.topic == "answers/c-once" && m.correlation() == Some("c-once")).count() >= 2
    });
    let again = req.answers.on("answers/c-once")[1].json();
    assert_eq!(again, first, "the same correlation data gets the first answer again");
    assert_eq!(received(&xyte, "mqtt-once"), 1, "and no second command");
    // send_command_async: one task, delivered once.
    let args = json!({"device_id": device, "command": "reboot", "friendly_name": "mqtt-async"});
    let queued = req.ask("send_command_async", &args, "c-async");
    assert_eq!(queued["status"], "ok", "{queued}");
    let task = queued["result"]["task_id"].as_str().unwrap_or_else(|| panic!("no task_id: {queued}")).to_string();
    req.publish("send_command_async", Some(args.to_string().as_bytes()), "c-async", Some("answers/c-async"));
    req.answers.wait_until("the second answer to c-async", Duration::from_secs(30), |msgs| {
        msgs.iter().filter(|m| m.topic == "answers/c-async" && m.correlation() == Some("c-async")).count() >= 2
    });
    let again = req.answers.on("answers/c-async")[1].json();
    assert_eq!(again, queued, "the repeat gets the first answer (the same task)");
    poll("the queued command delivered", Duration::from_secs(30), || (received(&xyte, "mqtt-async") > 0).then_some(()));
    poll("the outbox empty", Duration::from_secs(30), || {
        (edge.metric("xyte_edge_outbox_depth") == Some(0.0)).then_some(())
    });
    assert_eq!(received(&xyte, "mqtt-async"), 1, "task {task} reached Xyte exactly once");

    // A dry run answers without reaching Xyte.
    let args = json!({"device_id": device, "command": "reboot", "friendly_name": "mqtt-dry", "dry_run": true});
    let dry = req.ask("send_command", &args, "c-dry");
    assert_eq!((dry["status"].as_str(), dry["result"]["dry_run"].as_bool()), (Some("ok"), Some(true)), "{dry}");
    assert_eq!(received(&xyte, "mqtt-dry"), 0, "a dry run sends nothing");

    // Bad input, each with its error answer.
    assert_eq!(error_code(&req.ask_raw("send_command", Some(b"{not json"), "bad-json")), "invalid_params");
    assert_eq!(error_code(&req.ask_raw("send_command", Some(b"[1, 2]"), "bad-array")), "invalid_params");
    assert_eq!(error_code(&req.ask("no_such_tool", &json!({}), "bad-tool")), "invalid_params");
    let big =
        json!({"device_id": device, "command": "reboot", "friendly_name": "mqtt-big", "pad": "x".repeat(300 * 1024)});
    assert_eq!(error_code(&req.ask("send_command", &big, "bad-big")), "invalid_params");
    assert_eq!(received(&xyte, "mqtt-big"), 0);
    let unknown_device =
        req.ask("send_command", &json!({"device_id": "no-such-device", "command": "reboot"}), "bad-dev");
    assert_eq!(unknown_device["status"], "error", "{unknown_device}");

    // No response topic: nothing answered anywhere, a warning logged, and the daemon keeps answering.
    let args = json!({"device_id": device, "command": "reboot", "friendly_name": "mqtt-no-reply"});
    req.publish("send_command", Some(args.to_string().as_bytes()), "c-no-reply", None);
    edge.daemon.wait_line_where("a warning about the missing response topic", Duration::from_secs(15), |l| {
        l.contains("WARN") && l.to_lowercase().contains("response")
    });
    let after = req.ask("get_device_status", &json!({"device_id": device}), "read-after");
    assert_eq!(after["status"], "ok", "{after}");
    everything.drain();
    let stray: Vec<&MqttMsg> = everything
        .msgs
        .iter()
        .filter(|m| m.correlation() == Some("c-no-reply") && !m.topic.contains("/cmd/req/"))
        .collect();
    assert!(stray.is_empty(), "a request without a response topic is not answered: {stray:?}");
    // Every answer carried its request's correlation data; none went to the request topics.
    assert!(everything.msgs.iter().all(|m| !m.topic.starts_with("answers/") || m.correlation().is_some()));

    // Audited as principal `mqtt`: the sent command once, the dry run.
    let db = dir.path().join("state").join(xyte_edge::store::DB_FILE);
    let c = rusqlite::Connection::open(&db).unwrap();
    let audit: Vec<(String, String, String)> = c
        .prepare("SELECT principal, tool, outcome FROM audit WHERE arguments LIKE '%mqtt-%' ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let rows: Vec<(&str, &str, &str)> = audit.iter().map(|(p, t, o)| (p.as_str(), t.as_str(), o.as_str())).collect();
    for row in
        [("mqtt", "send_command", "ok"), ("mqtt", "send_command_async", "ok"), ("mqtt", "send_command", "dry_run")]
    {
        assert_eq!(rows.iter().filter(|r| **r == row).count(), 1, "{row:?} audited once: {rows:?}");
    }
    let metrics = edge.metrics_text();
    assert!(metrics.contains("xyte_edge_mqtt_requests_total{"), "requests counted by outcome:\n{metrics}");

    // Last (so a failure here hides none of the above): the same request again from a requester that restarted
    // with another response topic. The correlation data and the tool decide, not where the answer goes.
    let once = json!({"device_id": device, "command": "reboot", "friendly_name": "mqtt-once"});
    req.publish("send_command", Some(once.to_string().as_bytes()), "c-once", Some("answers/c-once/again"));
    let again = req.answer("answers/c-once/again", "c-once");
    assert_eq!(
        again, first,
        "the same correlation data and tool get the first answer again, also on another response topic \
         (the interface: \"Same correlation data (and tool) again within 10 min: the first answer again, nothing \
         re-run\")"
    );
    assert_eq!(received(&xyte, "mqtt-once"), 1, "and no second command");
    eprintln!("commands: {:?}", started.elapsed());
}

/// A bridge with `XYTE_MQTT_ROLE=viewer` answers reads and refuses mutating tools with `permission_denied`
/// (nothing reaches Xyte); with `XYTE_MQTT_COMMANDS` off (the default) requests are not answered at all.
#[test]
fn a_viewer_bridge_reads_but_may_not_command() {
    let started = Instant::now();
    let xyte = xyte(4);
    let broker = Broker::start(BrokerOptions::default());
    let prefix = "xyte-edge/v1/viewer-site";
    let mut req = Requester::new(&broker, prefix);
    let dir = tempfile::tempdir().unwrap();
    let env = [("XYTE_MQTT_COMMANDS", "on"), ("XYTE_MQTT_ROLE", "viewer"), ("XYTE_SITE", "viewer-site")];
    let mut edge = Edge::start(dir.path(), &xyte, &broker, &env);
    edge.daemon.wait_line("Xyte reachable", Duration::from_secs(30));
    let device = xyte.sim.sim.device_ids()[0].clone();
    req.wait_until_subscribed(&device);
    let read = req.ask("get_device_status", &json!({"device_id": device}), "v-read");
    assert_eq!(read["status"], "ok", "{read}");
    for tool in ["send_command", "send_command_async"] {
        let args = json!({"device_id": device, "command": "reboot", "friendly_name": "viewer-try"});
        let refused = req.ask(tool, &args, &format!("v-{tool}"));
        assert_eq!(error_code(&refused), "permission_denied", "{tool}: {refused}");
    }
    assert_eq!(received(&xyte, "viewer-try"), 0, "nothing reached Xyte");
    assert_eq!(edge.stop(), Some(0));

    // Commands off: the same broker, a daemon without XYTE_MQTT_COMMANDS; a request gets no answer while the
    // bridge is otherwise up (its birth is there).
    let mut state = Sub::start(&broker, &[&state_topic("xyte-edge/v1/quiet-site")]);
    let dir = tempfile::tempdir().unwrap();
    let _edge = Edge::start(dir.path(), &xyte, &broker, &[("XYTE_SITE", "quiet-site")]);
    state
        .wait_msg("the birth", Duration::from_secs(20), |m| m.payload.as_deref().is_some_and(|p| p.contains("online")));
    let mut quiet = Requester::new(&broker, "xyte-edge/v1/quiet-site");
    quiet.publish(
        "get_device_status",
        Some(json!({"device_id": device}).to_string().as_bytes()),
        "q-1",
        Some("answers/q-1"),
    );
    // A read through the same broker after it: by then an answer to q-1 would have been published.
    mqtt_pub(&broker, "answers/marker", Some(b"{}"), &[("correlation-data", "marker")]);
    quiet.answers.wait_msg("the marker", Duration::from_secs(10), |m| m.topic == "answers/marker");
    assert!(quiet.answers.msgs.iter().all(|m| m.correlation() != Some("q-1")), "commands are off by default");
    let log = broker.log_text();
    let subscribed = log.lines().any(|l| l.contains("quiet-site/cmd/req") && l.contains("(QoS"));
    assert!(!subscribed, "no subscription to command requests when they are off:\n{log}");
    eprintln!("viewer: {:?}", started.elapsed());
}

/// Mutual TLS: a broker that requires a client certificate accepts the gateway with `XYTE_MQTT_CLIENT_CERT` and
/// `XYTE_MQTT_CLIENT_KEY` (signed by its CA), and refuses it without them while the gateway keeps serving.
#[test]
fn mutual_tls_with_a_client_certificate() {
    let xyte = xyte(2);
    let certs = tempfile::tempdir().unwrap();
    let tls = support::make_tls(certs.path(), &["localhost", "127.0.0.1"]);
    let broker =
        Broker::start(BrokerOptions { tls: Some(tls.clone()), require_client_cert: true, ..Default::default() });
    let topic = state_topic("fleet/mtls");
    let mut sub = Sub::start(&broker, &[&topic]);
    let (ca, cert, key) =
        (tls.ca.to_str().unwrap(), tls.client_cert.to_str().unwrap(), tls.client_key.to_str().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("XYTE_MQTT_CA_FILE", ca),
        ("XYTE_MQTT_CLIENT_CERT", cert),
        ("XYTE_MQTT_CLIENT_KEY", key),
        ("XYTE_MQTT_TOPIC_PREFIX", "fleet/mtls"),
        ("XYTE_SITE", "mtls"),
    ];
    let mut edge = Edge::start(dir.path(), &xyte, &broker, &env);
    let birth = sub.wait_msg("the birth over mutual TLS", Duration::from_secs(20), |m| is_state(m, &topic, "online"));
    assert_birth(&birth, "mtls");
    assert_eq!(edge.stop(), Some(0));

    // Without the client certificate the broker refuses the handshake; the gateway stays ready.
    let dir = tempfile::tempdir().unwrap();
    let mut edge = Edge::start(dir.path(), &xyte, &broker, &[env[0], env[3], env[4]]);
    let why = poll("the uplink failing without a client certificate", Duration::from_secs(30), || {
        edge.status()["uplink"]["last_error"].as_str().map(str::to_string)
    });
    assert!(why.contains("CertificateRequired"), "refused for the missing certificate: {why}");
    let (status, ready) = edge.readyz();
    assert_eq!(status, 200, "{ready}");
    assert!(ready["reasons"].to_string().contains("uplink: disconnected"), "{ready}");
    assert_eq!(edge.metric("xyte_edge_mqtt_connected"), Some(0.0));
    assert_eq!(edge.stop(), Some(0));
}

/// While the broker is down the gateway stays ready for its local clients: `/readyz` 200 with "uplink:
/// disconnected" among its reasons, `xyte_edge_mqtt_connected` 0; then 1 again (and a
/// reconnect counted) once the broker is back.
#[test]
fn readiness_and_metrics_follow_the_broker() {
    let started = Instant::now();
    let xyte = xyte(4);
    let mut broker = Broker::start(BrokerOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let mut edge = Edge::start(dir.path(), &xyte, &broker, &[]);
    edge.daemon.wait_line("Xyte reachable", Duration::from_secs(30));
    poll("xyte_edge_mqtt_connected 1", Duration::from_secs(20), || {
        (edge.metric("xyte_edge_mqtt_connected") == Some(1.0)).then_some(())
    });
    let (status, ready) = edge.readyz();
    assert_eq!(status, 200, "{ready}");
    assert!(!ready["reasons"].to_string().contains("uplink"), "connected: no uplink reason: {ready}");
    let up = edge.status();
    assert_eq!(up["uplink"]["connected"], true, "{up}");
    assert_eq!(up["uplink"]["broker"].as_str().map(|b| b.contains(&broker.port.to_string())), Some(true), "{up}");
    let cli = edge.status_cli();
    let url = broker.url();
    let shown = |cli: &str, state: &str| {
        cli.lines().any(|l| l.contains("MQTT") && l.to_lowercase().contains(state) && l.contains(&url))
    };
    assert!(shown(&cli, "connected"), "xyte-edge status shows the uplink connected:\n{cli}");
    let metrics = edge.metrics_text();
    for name in [
        "xyte_edge_mqtt_published_total",
        "xyte_edge_mqtt_acked_total",
        "xyte_edge_mqtt_backlog",
        "xyte_edge_mqtt_reconnects_total",
    ] {
        assert!(metrics.lines().any(|l| l.starts_with(name)), "{name} in /metrics:\n{metrics}");
    }
    let published = edge.metric("xyte_edge_mqtt_published_total").unwrap_or(0.0);
    assert!(published >= 1.0, "the birth and device states were published: {published}");
    let reconnects = edge.metric("xyte_edge_mqtt_reconnects_total").unwrap_or(0.0);

    broker.stop();
    poll("xyte_edge_mqtt_connected 0", Duration::from_secs(20), || {
        (edge.metric("xyte_edge_mqtt_connected") == Some(0.0)).then_some(())
    });
    let (status, ready) = edge.readyz();
    assert_eq!(status, 200, "the broker's absence does not make the gateway unready: {ready}");
    assert!(ready["reasons"].as_array().is_some_and(|r| r.iter().any(|x| x == "uplink: disconnected")), "{ready}");
    let down = edge.status();
    assert_eq!(down["uplink"]["connected"], false, "{down}");
    let cli = edge.status_cli();
    assert!(shown(&cli, "disconnected"), "xyte-edge status shows the uplink disconnected:\n{cli}");
    // Local reads keep working.
    assert_eq!(edge.get_ok("/v1/devices")["total"], 4);

    broker.restart();
    poll("xyte_edge_mqtt_connected 1 again", Duration::from_secs(60), || {
        (edge.metric("xyte_edge_mqtt_connected") == Some(1.0)).then_some(())
    });
    let (status, ready) = edge.readyz();
    assert!(status == 200 && !ready["reasons"].to_string().contains("uplink"), "{ready}");
    let after = edge.metric("xyte_edge_mqtt_reconnects_total").unwrap_or(0.0);
    assert!(after > reconnects, "the reconnect is counted: {reconnects} then {after}");
    eprintln!("readiness: {:?}", started.elapsed());
}

fn check_config(env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = support::bin();
    cmd.args(["check-config", "--config", "/dev/null"]).env("XYTE_API_KEY", "k");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Bad MQTT settings are configuration errors (exit 78) naming each key, for `check-config` and `serve`; good
/// ones are listed with the password masked.
#[test]
fn bad_mqtt_settings_are_configuration_errors() {
    let bad = [("XYTE_MQTT_URL", "http://x"), ("XYTE_MQTT_COMMANDS", "maybe"), ("XYTE_MQTT_ROLE", "root")];
    let (code, stdout, stderr) = check_config(&bad);
    assert_eq!(code, Some(78), "stdout: {stdout}\nstderr: {stderr}");
    for (key, value) in bad {
        assert!(stderr.lines().any(|l| l.contains(key) && l.contains(value)), "{key}={value} is named in:\n{stderr}");
    }
    // Each alone, too (one problem does not hide behind another).
    for (key, value) in bad {
        let (code, _, stderr) = check_config(&[("XYTE_MQTT_URL", "mqtt://127.0.0.1:1883"), (key, value)]);
        assert_eq!(code, Some(78), "{key}={value}: {stderr}");
        assert!(stderr.contains(key), "{key}: {stderr}");
    }
    // `serve` refuses to start with them.
    let dir = tempfile::tempdir().unwrap();
    let out = support::bin()
        .arg("serve")
        .env("XYTE_API_KEY", "k")
        .env("XYTE_STATE_DIR", dir.path().join("state"))
        .env("XYTE_MQTT_URL", "mqtt://127.0.0.1:1883")
        .env("XYTE_MQTT_ROLE", "root")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("XYTE_MQTT_ROLE"), "{stderr}");

    // Good settings: accepted and listed, the password masked.
    let good = [
        ("XYTE_MQTT_URL", "mqtts://broker.example:8883"),
        ("XYTE_MQTT_USERNAME", "edge"),
        ("XYTE_MQTT_PASSWORD", "very-secret-mqtt-pass"),
        ("XYTE_MQTT_COMMANDS", "on"),
        ("XYTE_MQTT_ROLE", "viewer"),
        ("XYTE_SITE", "hq"),
    ];
    let (code, stdout, stderr) = check_config(&good);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(!stdout.contains("very-secret-mqtt-pass") && !stderr.contains("very-secret-mqtt-pass"), "{stdout}");
    let line = |key: &str| stdout.lines().find(|l| l.starts_with(&format!("{key} "))).unwrap_or_default().to_string();
    assert!(line("XYTE_MQTT_URL").contains("mqtts://broker.example:8883"), "{stdout}");
    assert!(line("XYTE_MQTT_PASSWORD").contains("***"), "{stdout}");
    assert!(line("XYTE_MQTT_ROLE").contains("viewer"), "{stdout}");
    for key in ["XYTE_MQTT_CLIENT_ID", "XYTE_MQTT_CA_FILE", "XYTE_MQTT_TOPIC_PREFIX", "XYTE_MQTT_COMMANDS"] {
        assert!(!line(key).is_empty(), "{key} listed by check-config:\n{stdout}");
    }
}

/// Retention deletes events the bridge has not delivered yet (the broker was never reachable): once it is, an
/// `edge.gap` event says which ids were lost (`first_id`, `last_id`, `count`), is itself in the log, and every event
/// still in the log arrives.
#[test]
fn events_deleted_before_delivery_are_reported_as_a_gap() {
    let started = Instant::now();
    let xyte = xyte(4);
    let mut broker = Broker::start(BrokerOptions { persistence: true, ..Default::default() });
    let prefix = "xyte-edge/v1/test-site";
    // The subscriber's session exists before the broker goes away, so what is published for it is kept.
    let mut sub = Sub::persistent(&broker, &[&format!("{prefix}/events/#")], "gap-counter");
    broker.stop();
    let dir = tempfile::tempdir().unwrap();
    let env = [("XYTE_EVENT_RETENTION_ROWS", "1000")];
    let mut edge = Edge::start(dir.path(), &xyte, &broker, &env);
    // The first connection attempt fixes where delivery starts (the head of the log then): wait for it to fail.
    edge.daemon.wait_line("MQTT uplink:", Duration::from_secs(20));
    let agent = edge.agent.clone();
    let (mut first, mut last) = (0, 0);
    for i in 0..1500 {
        last = post_webhook(&agent, &edge.local, &format!("gap-{i}")).unwrap_or_else(|e| panic!("webhook {i}: {e}"));
        if i == 0 {
            first = last;
        }
    }
    // Retention runs at start: a restart trims the log to 1000 rows, none of which was delivered.
    assert_eq!(edge.stop(), Some(0));
    let mut edge = Edge::start(dir.path(), &xyte, &broker, &env);
    let log = poll("retention trimming the log", Duration::from_secs(30), || {
        let log = edge.all_events();
        (log.len() <= 1001).then_some(log)
    });
    let first_kept = log[0]["id"].as_i64().unwrap();
    assert!(first_kept > 1 && last >= first_kept, "retention deleted the oldest: first kept {first_kept}, last {last}");

    broker.restart();
    let gap = sub.wait_msg("the edge.gap event", Duration::from_secs(60), |m| m.topic.ends_with("/events/edge.gap"));
    let g = gap.json();
    assert_eq!(g["kind"], "edge.gap", "{g}");
    // Delivery starts where the log was when the uplink was first configured (before the first webhook).
    let from = g["data"]["first_id"].as_i64().unwrap_or_else(|| panic!("{g}"));
    assert!((1..=first).contains(&from), "the lost ids start at or before the first webhook's ({first}): {g}");
    assert_eq!(g["data"]["last_id"], first_kept - 1, "up to the first event retention kept: {g}");
    assert_eq!(g["data"]["count"], first_kept - from, "{g}");
    // The gap is an event of the log like any other, and everything still in the log arrives.
    let n = expect_every_event(&mut edge, &mut sub, prefix, "after the gap");
    let ids: BTreeSet<i64> = tally(&sub.msgs).count.keys().copied().collect();
    assert!(ids.iter().all(|id| *id >= first_kept), "no deleted event was published: {:?}", ids.first());
    eprintln!("gap: {g}; {n} events; {:?}", started.elapsed());
}

/// A request whose MQTT message expiry passes while it waits for one of the bridge's running places is not run:
/// no answer, nothing at Xyte, counted as expired. (Xyte answers slowly, so sixteen commands hold every place.)
#[test]
fn an_expired_command_request_is_not_run() {
    let started = Instant::now();
    let xyte = xyte(4);
    let broker = Broker::start(BrokerOptions::default());
    let prefix = "xyte-edge/v1/test-site";
    let mut req = Requester::new(&broker, prefix);
    let dir = tempfile::tempdir().unwrap();
    let mut edge = Edge::start(dir.path(), &xyte, &broker, &[("XYTE_MQTT_COMMANDS", "on")]);
    edge.daemon.wait_line("Xyte reachable", Duration::from_secs(30));
    let devices = xyte.sim.sim.device_ids();
    req.wait_until_subscribed(&devices[0]);
    // Warm the model cache, so the slow part of each command is its POST.
    for (i, d) in devices.iter().enumerate() {
        let dry =
            req.ask("send_command", &json!({"device_id": d, "command": "reboot", "dry_run": true}), &format!("w-{i}"));
        assert_eq!(dry["status"], "ok", "{dry}");
    }

    xyte.sim.sim.set_faults(xyte_edge::sim::Faults { latency: Duration::from_secs(3), ..Default::default() });
    const BUSY: usize = 16;
    for i in 0..BUSY {
        let args =
            json!({"device_id": devices[i % devices.len()], "command": "reboot", "friendly_name": format!("busy-{i}")});
        let corr = format!("busy-{i}");
        req.publish("send_command", Some(args.to_string().as_bytes()), &corr, Some(&format!("answers/{corr}")));
    }
    let args = json!({"device_id": devices[0], "command": "reboot", "friendly_name": "mqtt-expired"});
    mqtt_pub(
        &broker,
        &format!("{prefix}/cmd/req/send_command"),
        Some(args.to_string().as_bytes()),
        &[("response-topic", "answers/c-expired"), ("correlation-data", "c-expired"), ("message-expiry-interval", "1")],
    );
    for i in 0..BUSY {
        let corr = format!("busy-{i}");
        let answer = req.answer(&format!("answers/{corr}"), &corr);
        assert_eq!(answer["status"], "ok", "{answer}");
    }
    xyte.sim.sim.set_faults(Default::default());
    // Requests after it are answered (so an answer to it, had it run, would be there by now).
    let after = req.ask("get_device_status", &json!({"device_id": devices[0]}), "after-expired");
    assert_eq!(after["status"], "ok", "{after}");
    req.answers.drain();
    let answered: Vec<&MqttMsg> = req.answers.msgs.iter().filter(|m| m.correlation() == Some("c-expired")).collect();
    assert!(answered.is_empty(), "an expired request is not run, so not answered: {answered:?}");
    assert_eq!(received(&xyte, "mqtt-expired"), 0, "an expired request never reaches Xyte");
    assert_eq!(xyte.sim.sim.stats().commands.len(), BUSY, "the sixteen commands reached Xyte");
    let metrics = edge.metrics_text();
    assert!(
        metrics.lines().any(|l| l.starts_with("xyte_edge_mqtt_requests_total{") && l.contains("expired")),
        "counted as expired:\n{}",
        metrics.lines().filter(|l| l.contains("mqtt_requests")).collect::<Vec<_>>().join("\n")
    );
    eprintln!("expiry: {:?}", started.elapsed());
}
