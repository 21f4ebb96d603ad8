//! Admission control of the outbox, counted at the simulator. The real daemon runs with small limits
//! (`XYTE_OUTBOX_MAX_PER_DEVICE=5`, `XYTE_OUTBOX_MAX=12`) and Xyte down, so nothing drains and the counts are exact:
//! a flood of 200 async commands for one device over REST is acknowledged 5 times and refused with 429 + Retry-After
//! after that; over MCP a refusal is a `rate_limited` tool error; the global limit refuses further devices and a room
//! preset (before any step). When Xyte is back, every acknowledged command reaches it exactly once and no refused one
//! ever does; once delivered, the outbox admits again.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use xyte_edge::sim::{self, SimOptions};

mod support;

const PER_DEVICE: usize = 5;
const MAX: usize = 12;
/// `XYTE_RATE_LIMIT`: 120 / 600 rounds up to a Retry-After of 1 s.
const RATE: &str = "600";

/// The daemon's loopback REST API with an operator token.
struct Rest {
    agent: ureq::Agent,
    base: String,
    token: String,
}

impl Rest {
    /// (status, Retry-After, JSON body) of a tool call.
    fn tool(&self, tool: &str, args: &Value) -> (u16, Option<String>, Value) {
        let url = format!("{}/v1/tools/{tool}", self.base);
        let mut resp = self
            .agent
            .post(&url)
            .header("Content-Type", "application/json")
            .header("Authorization", &format!("Bearer {}", self.token))
            .send(args.to_string())
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        let status = resp.status().as_u16();
        let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(String::from);
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (status, retry_after, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

fn command(device: &str, marker: &str) -> Value {
    json!({"device_id": device, "command": "reboot", "extra_params": {"marker": marker}})
}

/// A refusal by the outbox limits, as either front door reports it: the error body names the setting.
fn assert_refused(error: &Value, setting: &str) {
    assert_eq!(error["code"], "rate_limited", "{error}");
    assert_eq!(error["retry_after_s"], 1, "{error}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains(setting) && message.contains("Nothing was queued"), "{error}");
}

/// What the daemon answered to each command: the acknowledged ones (marker -> task id) and the refused ones.
#[derive(Default)]
struct Outcomes {
    acknowledged: BTreeMap<String, String>,
    refused: Vec<String>,
}

impl Outcomes {
    /// Sends one command over REST; a refusal must be a 429 with Retry-After naming `setting`.
    fn send(&mut self, rest: &Rest, device: &str, marker: String, setting: &str) {
        let (status, retry_after, body) = rest.tool("send_command_async", &command(device, &marker));
        if status == 200 {
            self.acknowledged.insert(marker, body["task_id"].as_str().expect("a task_id").to_string());
        } else {
            assert_eq!((status, retry_after.as_deref()), (429, Some("1")), "{marker}: {body}");
            assert_refused(&body["error"], setting);
            self.refused.push(marker);
        }
    }
}

fn start_daemon(dir: &Path, base_url: &str, api_key: &str, presets: &Value) -> support::Daemon {
    let presets_file = dir.join("presets.json");
    std::fs::write(&presets_file, presets.to_string()).unwrap();
    let mut cmd = support::bin();
    cmd.arg("serve")
        .env("XYTE_STATE_DIR", dir.join("state"))
        .env("XYTE_MCP_SOCKET", dir.join("mcp.sock"))
        .env("XYTE_PRESETS_FILE", &presets_file)
        .env("XYTE_HTTP_LISTEN", "")
        .env("XYTE_HTTP_LOCAL_LISTEN", "127.0.0.1:0")
        .env("XYTE_BASE_URL", base_url)
        .env("XYTE_API_KEY", api_key)
        .env("XYTE_RATE_LIMIT", RATE)
        // The poller notices at once when Xyte is back, and the forwarder then retries without waiting out a backoff.
        .env("XYTE_POLL_INTERVAL", "1")
        // Validation reads the cache, so commands are taken (or refused) while Xyte is down.
        .env("XYTE_CACHE_TTL", "1d")
        .env("XYTE_COMMAND_TTL", "1d")
        .env("XYTE_OUTBOX_MAX", MAX.to_string())
        .env("XYTE_OUTBOX_MAX_PER_DEVICE", PER_DEVICE.to_string())
        .env("XYTE_LOG_FORMAT", "text");
    support::Daemon::spawn(cmd)
}

#[test]
fn a_flood_is_refused_past_the_outbox_limits_and_every_acknowledged_command_is_delivered_once() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut sim = rt
        .block_on(sim::spawn(
            "127.0.0.1:0".parse().unwrap(),
            SimOptions { devices: 6, churn: false, ..Default::default() },
        ))
        .expect("simulator starts");
    let devices = sim.sim.device_ids();
    let (a, b, c, d) = (&devices[0], &devices[1], &devices[2], &devices[3]);

    let dir = tempfile::tempdir().unwrap();
    // A room preset with one step on a device that has nothing queued: only the global limit can refuse it.
    let presets = json!({"rooms": {"Flood Room": {"presets": {"start": [{"device_id": d, "command": "reboot"}]}}}});
    let mut daemon = start_daemon(dir.path(), &sim.base_url(), sim.sim.api_key(), &presets);
    daemon.wait_line("Xyte reachable", Duration::from_secs(30));
    let listener = daemon.wait_line("HTTP listener ready", Duration::from_secs(5));
    let addr = listener.split("addr=").nth(1).and_then(|r| r.split_whitespace().next()).expect("addr= in the line");
    let out = support::bin()
        .args(["token", "create", "--name", "flood", "--role", "operator"])
        .env("XYTE_STATE_DIR", dir.path().join("state"))
        .output()
        .unwrap();
    assert!(out.status.success(), "token create: {}", String::from_utf8_lossy(&out.stderr));
    let rest = Rest {
        agent: ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into(),
        base: format!("http://{addr}"),
        token: String::from_utf8(out.stdout).unwrap().trim().to_string(),
    };

    // Warm the cache (devices, their models, the rooms) while Xyte is up; then take it down.
    let mut mcp = support::Mcp::connect(&dir.path().join("mcp.sock"));
    for dev in [a, b, c, d] {
        mcp.call("send_command", json!({"device_id": dev, "command": "reboot", "dry_run": true})).expect("dry run");
    }
    mcp.call("list_rooms", json!({})).expect("list_rooms");
    rt.block_on(sim.stop());

    // The flood: 200 commands for one device over REST; the first PER_DEVICE are acknowledged.
    let mut outcomes = Outcomes::default();
    for i in 0..200 {
        outcomes.send(&rest, a, format!("rest-a-{i}"), "XYTE_OUTBOX_MAX_PER_DEVICE=5");
    }
    // A second device fills up to its own limit (10 in the outbox), a third to the global one (12).
    for i in 0..=PER_DEVICE {
        outcomes.send(&rest, b, format!("rest-b-{i}"), "XYTE_OUTBOX_MAX_PER_DEVICE=5");
    }
    for i in 0..3 {
        outcomes.send(&rest, c, format!("rest-c-{i}"), "XYTE_OUTBOX_MAX=12");
    }
    let Outcomes { acknowledged, refused } = &outcomes;
    assert_eq!(acknowledged.len(), MAX, "{acknowledged:?}");
    assert_eq!(refused.len(), (200 - PER_DEVICE) + 1 + 1, "{refused:?}");
    assert!(acknowledged.contains_key("rest-a-4") && !acknowledged.contains_key("rest-a-5"), "{acknowledged:?}");

    // Over MCP the same refusals are tool errors: per device for `a`, the global limit for `d` and for a preset,
    // which is refused before any step (a failed step would be a result, not an error).
    assert_refused(&mcp.call("send_command_async", command(a, "mcp-a")).unwrap_err(), "XYTE_OUTBOX_MAX_PER_DEVICE=5");
    assert_refused(&mcp.call("send_command_async", command(d, "mcp-d")).unwrap_err(), "XYTE_OUTBOX_MAX=12");
    let preset = json!({"room": "Flood Room"});
    assert_refused(&mcp.call("start_meeting_room_preset", preset.clone()).unwrap_err(), "XYTE_OUTBOX_MAX=12");
    let (status, retry_after, body) = rest.tool("start_meeting_room_preset", &preset);
    assert_eq!((status, retry_after.as_deref()), (429, Some("1")), "{body}");
    assert_refused(&body["error"], "XYTE_OUTBOX_MAX=12");
    // A dry run sends nothing, so it is never refused.
    mcp.call("start_meeting_room_preset", json!({"room": "Flood Room", "dry_run": true})).expect("a dry run");
    assert!(sim.sim.stats().commands.is_empty(), "Xyte is down: nothing can have reached it");

    // Xyte is back: everything acknowledged is delivered; then the outbox admits again.
    rt.block_on(sim.restart()).unwrap();
    wait_delivered(&mut mcp, &outcomes.acknowledged);
    outcomes.send(&rest, a, "rest-a-after".into(), "(none: the outbox has room again)");
    assert_eq!(outcomes.acknowledged.len(), MAX + 1, "refused once the outbox drained: {:?}", outcomes.refused);
    wait_delivered(&mut mcp, &outcomes.acknowledged);

    // Exactly once each at Xyte, and nothing refused ever reached it.
    let mut received: BTreeMap<String, usize> = BTreeMap::new();
    for (_, body) in sim.sim.stats().commands {
        *received.entry(body["extra_params"]["marker"].as_str().unwrap_or("(no marker)").to_string()).or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = outcomes.acknowledged.keys().map(|m| (m.clone(), 1)).collect();
    assert_eq!(received, expected);
}

/// Polls (with a deadline) until every acknowledged task has left the outbox, i.e. was handed to Xyte.
fn wait_delivered(mcp: &mut support::Mcp, acknowledged: &BTreeMap<String, String>) {
    let deadline = Instant::now() + Duration::from_secs(120);
    for (marker, task_id) in acknowledged {
        loop {
            let task = mcp.call("get_task_status", json!({"task_id": task_id})).expect("get_task_status");
            match task["state"].as_str() {
                Some("queued" | "sending") => {}
                Some("sent" | "pending" | "in_progress" | "scheduled" | "done") => break,
                // Handed to Xyte, and the (simulated) device failed it: the simulator fails one command in ten.
                Some("failed" | "aborted") if task["xyte_command_id"].is_string() => break,
                _ => panic!("{marker}: {task}"),
            }
            assert!(Instant::now() < deadline, "{marker} still undelivered after 120 s: {task}");
            // Polling interval, not synchronisation: the loop ends on the task's state.
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
