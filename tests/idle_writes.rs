//! Idle writes (issue: edge resilience): a gateway's flash wears with every byte written, so a fleet where nothing
//! changes must cost next to no writes. 500 simulated devices, all held online (their `last_seen_at` still moves
//! every second, as real telemetry does), polled every 30 s for 10 minutes; the daemon's block-layer writes
//! (`write_bytes` in /proc/PID/io: the state dir is the only place it writes to) are counted over that window.
//!
//! The MQTT uplink is on (a local mosquitto), as on a gateway of a fleet: its delivery cursor, connection counter and
//! retained-device records must not add writes while nothing happens. So are alert rules over every kind of state
//! (devices, Xyte, the outbox, the disk) that hold for nothing: the alerter looks every 15 s and must write nothing.
//!
//! Ten minutes is the measurement the issue asks for, so the test is `#[ignore]`d in the plain `cargo test` run and
//! `tests/run-all.sh` runs it explicitly in the background while the rest of the suite runs. `XYTE_IDLE_MINUTES`
//! and `XYTE_IDLE_POLL_SECS` shorten it for local experiments.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod support;

const DEVICES: usize = 500;
/// The goal stated in the issue: at most 1 MiB an hour while idle.
const GOAL_BYTES_PER_HOUR: f64 = 1024.0 * 1024.0;

fn env_or(key: &str, default: u64) -> u64 {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn write_bytes(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("read /proc/PID/io (needs task IO accounting)");
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("write_bytes in /proc/PID/io")
}

fn sim_get(agent: &ureq::Agent, base: &str, path: &str) -> Value {
    let text = agent.get(format!("{base}{path}")).call().unwrap().body_mut().read_to_string().unwrap();
    serde_json::from_str(&text).unwrap()
}

/// How many poll cycles the simulator has answered (the ticket list is one request per cycle; the device list is
/// five pages of 100).
fn polls(agent: &ureq::Agent, base: &str) -> u64 {
    sim_get(agent, base, "/_sim/stats")["by_route"]["GET /core/v1/organization/tickets"].as_u64().unwrap_or(0)
}

#[test]
#[ignore = "a 10-minute measurement; tests/run-all.sh runs it explicitly (cargo test --test idle_writes -- --ignored)"]
fn an_idle_fleet_of_500_devices_costs_almost_no_disk_writes() {
    let minutes = env_or("XYTE_IDLE_MINUTES", 10);
    let poll_secs = env_or("XYTE_IDLE_POLL_SECS", 30);
    let dir = tempfile::tempdir().unwrap();

    let mut sim = support::Daemon::spawn({
        let mut c = support::bin();
        c.args(["sim", "--listen", "127.0.0.1:0", "--devices", &DEVICES.to_string(), "--seed", "7"]);
        c
    });
    let line = sim.wait_line("sim listening on", Duration::from_secs(20));
    let api = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap().to_string();
    let control = api.trim_end_matches("/core/v1/organization").to_string();
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();

    // Hold every device online: statuses stop changing, while `last_seen_at` keeps moving like live telemetry.
    let devices = sim_get(&agent, &control, "/_sim/devices");
    let devices = devices.as_array().unwrap();
    assert_eq!(devices.len(), DEVICES);
    for d in devices {
        let id = d["id"].as_str().unwrap();
        let r = agent.post(format!("{control}/_sim/devices/{id}/status")).send(json!({"status": "online"}).to_string());
        assert_eq!(r.unwrap().status().as_u16(), 200, "hold {id} online");
    }

    let broker = support::Broker::start(support::BrokerOptions::default());
    let state = dir.path().join("state");
    let alerts = dir.path().join("alerts.json");
    let rules = json!({
        "channels": {"hook": {"type": "webhook", "url": "http://127.0.0.1:9/alerts"}},
        "rules": [
            {"name": "offline", "condition": "device_offline", "for": "1m", "channels": ["hook"]},
            {"name": "wan", "condition": "xyte_unreachable", "for": "5m", "channels": ["hook"]},
            {"name": "outbox", "condition": "outbox_older_than", "older_than": "5m", "channels": ["hook"]},
            {"name": "disk", "condition": "disk_free_below", "below": "1MB", "channels": ["hook"]},
            {"name": "commands", "condition": "command_failed", "channels": ["hook"]},
        ]
    });
    std::fs::write(&alerts, rules.to_string()).unwrap();
    let mut daemon = support::Daemon::spawn({
        let mut c = support::bin();
        c.arg("serve")
            .env("XYTE_BASE_URL", &api)
            .env("XYTE_API_KEY", "demo-key")
            .env("XYTE_STATE_DIR", &state)
            .env("XYTE_MCP_SOCKET", dir.path().join("mcp.sock"))
            .env("XYTE_HTTP_LISTEN", "127.0.0.1:0")
            .env("XYTE_HTTP_LOCAL_LISTEN", "127.0.0.1:0")
            .env("XYTE_POLL_INTERVAL", poll_secs.to_string())
            .env("XYTE_MQTT_URL", broker.url())
            .env("XYTE_ALERTS_FILE", &alerts)
            .env("XYTE_LOG_FORMAT", "text");
        c
    });
    daemon.wait_line("Xyte reachable", Duration::from_secs(60));
    // The first two cycles fill the cache (the second also brings the slower collections); idling starts after.
    let deadline = Instant::now() + Duration::from_secs(3 * poll_secs + 60);
    while polls(&agent, &control) < 2 {
        assert!(Instant::now() < deadline, "the daemon did not poll twice");
        std::thread::park_timeout(Duration::from_millis(200));
    }

    let polls_before = polls(&agent, &control);
    let bytes_before = write_bytes(daemon.pid);
    let window = Duration::from_secs(minutes * 60);
    let started = Instant::now();
    // Waiting, not synchronising: the window's length is the measurement itself.
    while started.elapsed() < window {
        std::thread::park_timeout(window - started.elapsed());
    }
    let written = write_bytes(daemon.pid) - bytes_before;
    let polls = polls(&agent, &control) - polls_before;

    let per_hour = written as f64 * 3600.0 / window.as_secs_f64();
    let db_size: u64 =
        std::fs::read_dir(&state).unwrap().filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum();
    eprintln!(
        "idle writes: {DEVICES} devices polled every {poll_secs} s for {minutes} min ({polls} polls, MQTT uplink and 5 alert rules on): \
         {written} bytes written ({:.1} KiB/hour; goal ≤ 1024 KiB/hour); state dir now {db_size} bytes",
        per_hour / 1024.0
    );
    let expected_polls = window.as_secs() / poll_secs;
    assert!(polls + 1 >= expected_polls, "only {polls} polls in {window:?} (expected about {expected_polls})");
    assert!(per_hour <= GOAL_BYTES_PER_HOUR, "{written} bytes in {window:?} is over 1 MiB/hour");
    assert!(broker.is_running(), "the broker ran throughout");

    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    // Connected to the end: a clean stop publishes `offline` over the live connection.
    daemon.wait_line("MQTT uplink: offline published", Duration::from_secs(20));
    assert_eq!(daemon.wait_exit(Duration::from_secs(20)).0, Some(0));
}
