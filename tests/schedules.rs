//! Room schedules end to end: the real binary against the in-process simulator, on the wall clock (the daemon has no
//! fake clock). Every schedule is due at a whole minute in UTC at least `LEAD` ahead, so tests of this file that run at
//! the same time (threads) share the same wait. What is checked, counted at the simulator and read from the event log:
//! a due time during a WAN outage fires and is delivered once, in step order, when Xyte returns; a SIGKILL right
//! after firing neither repeats nor loses the run; a due time missed while the daemon was down fires on start within
//! `XYTE_SCHEDULE_GRACE` and is skipped as "missed" beyond it; pause / resume / run now (MCP, and a REST viewer that
//! may not) with the pause surviving a restart; a presets file with broken schedules (check-config, the daemon, and a
//! SIGHUP with a file that is not JSON).
//!
//! The simulator fails about one command in ten, drawn from its seeded generator. With seed 1 and one command at a
//! time (a run's steps are strictly sequential, and each test has its own simulator) the first six commands it
//! receives succeed, so `ok: true` is deterministic here; a failure message shows every step's state if it is not.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use xyte_edge::sim::{self, SimHandle, SimOptions};

mod support;

const ROOM: &str = "Sched Room";
/// A due time is at least this far ahead when a test writes its presets file (start, warm-up and pause fit in it).
const LEAD: i64 = 12;
/// How long after a due time its event may take to show (the scheduler, the store, our polling).
const AFTER_DUE: Duration = Duration::from_secs(45);

// ------------------------------------------------------------------------------------------------------------------
// Time
// ------------------------------------------------------------------------------------------------------------------

/// The next whole UTC minute at least `LEAD` seconds away.
fn next_due() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    let minute = now.replace_second(0).unwrap().replace_nanosecond(0).unwrap();
    let mut due = minute + time::Duration::minutes(1);
    if due - now < time::Duration::seconds(LEAD) {
        due += time::Duration::minutes(1);
    }
    due
}

/// `at` of a schedule due at `t` (UTC).
fn hhmm(t: OffsetDateTime) -> String {
    format!("{:02}:{:02}", t.hour(), t.minute())
}

/// A five-field `cron` due at `t` (UTC) once a day.
fn daily_cron(t: OffsetDateTime) -> String {
    format!("{} {} * * *", t.minute(), t.hour())
}

/// Unix seconds of an RFC 3339 text (any offset), or a panic naming what it was.
fn secs(v: &Value) -> i64 {
    let text = v.as_str().unwrap_or_else(|| panic!("expected an RFC 3339 time, got {v}"));
    OffsetDateTime::parse(text, &Rfc3339).unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}")).unix_timestamp()
}

/// How long until `t` from now (zero if it has passed).
fn until(t: OffsetDateTime) -> Duration {
    let left = t - OffsetDateTime::now_utc();
    if left.is_negative() { Duration::ZERO } else { left.try_into().unwrap() }
}

/// Waits (polling the wall clock) until `t` has passed.
fn wait_past(t: OffsetDateTime) {
    support::poll(&format!("the wall clock to pass {t}"), until(t) + Duration::from_secs(5), || {
        (OffsetDateTime::now_utc() > t).then_some(())
    });
}

/// Polls `check` every 200 ms (each try is a request to the daemon) until it returns Some, or panics after `timeout`.
fn poll_slow<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::park_timeout(Duration::from_millis(200));
    }
}

// ------------------------------------------------------------------------------------------------------------------
// Simulator, presets, daemon
// ------------------------------------------------------------------------------------------------------------------

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn simulator(rt: &tokio::runtime::Runtime) -> SimHandle {
    rt.block_on(sim::spawn(
        "127.0.0.1:0".parse().unwrap(),
        SimOptions { devices: 6, churn: false, seed: 1, ..Default::default() },
    ))
    .expect("simulator starts")
}

/// The preset's steps: a reboot per device, in order, each with a marker `<tag>-<step>` to count at the simulator.
fn steps(devices: &[String], tag: &str) -> Value {
    devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            json!({"device_id": d, "command": "reboot", "extra_params": {"marker": format!("{tag}-{}", i + 1)},
                   "continue_on_error": true})
        })
        .collect()
}

/// A presets file: the room with its `start` preset over `devices`, and `schedules`.
fn write_presets(dir: &Path, devices: &[String], tag: &str, schedules: Value) -> PathBuf {
    let file = dir.join("presets.json");
    let body = json!({"rooms": {ROOM: {"presets": {"start": steps(devices, tag)}}}, "schedules": schedules});
    std::fs::write(&file, serde_json::to_string_pretty(&body).unwrap()).unwrap();
    file
}

/// The markers the simulator received, in arrival order, with the device each went to.
fn received(sim: &SimHandle) -> Vec<(String, String)> {
    sim.sim
        .stats()
        .commands
        .into_iter()
        .map(|(device, body)| (device, body["extra_params"]["marker"].as_str().unwrap_or("<none>").to_string()))
        .collect()
}

/// What the simulator should have received for one run of `steps(devices, tag)`.
fn expected(devices: &[String], tag: &str) -> Vec<(String, String)> {
    devices.iter().enumerate().map(|(i, d)| (d.clone(), format!("{tag}-{}", i + 1))).collect()
}

/// The real daemon on a state directory that outlives it (restarts use the same one and the same settings).
struct Edge {
    dir: PathBuf,
    base_url: String,
    api_key: String,
    env: Vec<(String, String)>,
    daemon: support::Daemon,
    /// `127.0.0.1:port` of the loopback REST listener, when `XYTE_HTTP_LOCAL_LISTEN` is set.
    http: Option<String>,
}

impl Edge {
    fn start(dir: &Path, sim: &SimHandle, env: &[(&str, &str)]) -> Edge {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let daemon = Edge::spawn(dir, &sim.base_url(), sim.sim.api_key(), &env);
        let mut edge = Edge {
            dir: dir.to_path_buf(),
            base_url: sim.base_url(),
            api_key: sim.sim.api_key().into(),
            env,
            daemon,
            http: None,
        };
        edge.ready();
        edge
    }

    fn spawn(dir: &Path, base_url: &str, api_key: &str, env: &[(String, String)]) -> support::Daemon {
        let mut cmd = support::bin();
        cmd.arg("serve")
            .env("XYTE_STATE_DIR", dir.join("state"))
            .env("XYTE_MCP_SOCKET", dir.join("mcp.sock"))
            .env("XYTE_PRESETS_FILE", dir.join("presets.json"))
            .env("XYTE_HTTP_LISTEN", "")
            .env("XYTE_HTTP_LOCAL_LISTEN", "")
            .env("XYTE_BASE_URL", base_url)
            .env("XYTE_API_KEY", api_key)
            // The poller notices at once when Xyte is back, and the forwarder then retries without a long backoff.
            .env("XYTE_POLL_INTERVAL", "1")
            // Validation reads the cache, so a run can be queued while Xyte is down; nothing expires by accident.
            .env("XYTE_CACHE_TTL", "1d")
            .env("XYTE_COMMAND_TTL", "1d")
            .env("XYTE_RATE_LIMIT", "6000")
            .env("XYTE_REQUEST_TIMEOUT", "5s")
            .env("XYTE_LOG_FORMAT", "text");
        for (k, v) in env {
            cmd.env(k, v);
        }
        support::Daemon::spawn(cmd)
    }

    fn ready(&mut self) {
        self.daemon.wait_line("ready: ", Duration::from_secs(30));
        if self.env.iter().any(|(k, v)| k == "XYTE_HTTP_LOCAL_LISTEN" && !v.is_empty()) {
            let line = self.daemon.wait_line("HTTP listener ready", Duration::from_secs(5));
            let addr = line.split("addr=").nth(1).and_then(|r| r.split_whitespace().next()).expect("addr= in the line");
            self.http = Some(addr.to_string());
        }
    }

    /// Starts the daemon again on the same state directory (the previous process must have exited).
    fn restart(&mut self) {
        assert!(self.daemon.exit_code.is_some(), "restart while the previous daemon still runs");
        self.daemon = Edge::spawn(&self.dir, &self.base_url, &self.api_key, &self.env);
        self.ready();
    }

    /// SIGTERM, and the exit.
    fn stop(&mut self) {
        self.daemon.signal(nix::sys::signal::Signal::SIGTERM);
        let (code, _) = self.daemon.wait_exit(Duration::from_secs(30));
        assert_eq!(code, Some(0), "a clean stop:\n{}", self.daemon.output.join("\n"));
    }

    /// SIGKILL, and the exit.
    fn kill(&mut self) {
        self.daemon.signal(nix::sys::signal::Signal::SIGKILL);
        self.daemon.wait_exit(Duration::from_secs(10));
    }

    fn mcp(&self) -> support::Mcp {
        support::Mcp::connect(&self.dir.join("mcp.sock"))
    }

    /// Tasks in the outbox's table, whatever their state (the store is read directly: it is what was queued).
    fn tasks(&self) -> i64 {
        let db = self.dir.join("state").join(xyte_edge::store::DB_FILE);
        let c = rusqlite::Connection::open(&db).unwrap_or_else(|e| panic!("open {db:?}: {e}"));
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        c.query_row("SELECT COUNT(*) FROM tasks", [], |r| r.get(0)).unwrap()
    }

    /// A LAN token, made with `xyte-edge token create` as an admin would.
    fn token(&self, name: &str, role: &str) -> String {
        support::create_token(&self.dir.join("state"), name, role)
    }

    /// (status, JSON body) of a REST request on the loopback listener with `token`.
    fn rest(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let url = format!("http://{}{path}", self.http.as_deref().expect("a loopback listener"));
        let auth = format!("Bearer {token}");
        let resp = match (method, body) {
            ("GET", _) => agent.get(&url).header("Authorization", &auth).call(),
            (_, body) => agent
                .post(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .send(body.unwrap_or(json!({})).to_string()),
        };
        let mut resp = resp.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

// ------------------------------------------------------------------------------------------------------------------
// The event log and the schedule tools
// ------------------------------------------------------------------------------------------------------------------

/// The data of every event of `kind` about schedule `name`, oldest first.
fn events(mcp: &mut support::Mcp, kind: &str, name: &str) -> Vec<Value> {
    mcp.events(kind).into_iter().filter(|d| d["schedule"] == name).collect()
}

/// Waits for an event of `kind` about schedule `name` that satisfies `hit`; returns its data.
fn wait_event(
    mcp: &mut support::Mcp,
    kind: &str,
    name: &str,
    timeout: Duration,
    hit: impl Fn(&Value) -> bool,
) -> Value {
    poll_slow(&format!("a {kind} event of schedule {name:?}"), timeout, || {
        events(mcp, kind, name).into_iter().find(|d| hit(d))
    })
}

/// The `list_schedules` answer.
fn list(mcp: &mut support::Mcp) -> Value {
    mcp.call("list_schedules", json!({})).unwrap_or_else(|e| panic!("list_schedules: {e}"))
}

/// One schedule as `list_schedules` shows it.
fn schedule(mcp: &mut support::Mcp, name: &str) -> Value {
    let all = list(mcp);
    all["schedules"]
        .as_array()
        .and_then(|l| l.iter().find(|s| s["name"] == name).cloned())
        .unwrap_or_else(|| panic!("list_schedules has no {name:?}: {all}"))
}

/// Checks a `schedule.fired` event of a due run against the preset `steps(devices, _)`; returns the run id.
fn check_fired(fired: &Value, name: &str, due: OffsetDateTime, devices: &[String]) -> String {
    assert_eq!((&fired["room"], &fired["preset"]), (&json!(ROOM), &json!("start")), "{fired}");
    assert_eq!(secs(&fired["due_at"]), due.unix_timestamp(), "the due time it fired for: {fired}");
    assert_eq!(fired["principal"], format!("schedule:{name}"), "{fired}");
    let steps = fired["steps"].as_array().unwrap_or_else(|| panic!("steps: {fired}"));
    assert_eq!(steps.len(), devices.len(), "one task per step: {fired}");
    for (i, (s, d)) in steps.iter().zip(devices).enumerate() {
        assert_eq!(
            (&s["step"], &s["device_id"], &s["command"]),
            (&json!(i + 1), &json!(d), &json!("reboot")),
            "{fired}"
        );
        assert!(s["task_id"].as_str().is_some_and(|t| !t.is_empty()), "a task id: {fired}");
    }
    fired["run_id"].as_str().unwrap_or_else(|| panic!("a run id: {fired}")).to_string()
}

/// Checks that a `schedule.finished` event says every step was done.
fn check_finished_ok(finished: &Value, steps: usize) {
    let states: Vec<&Value> =
        finished["steps"].as_array().map(|s| s.iter().map(|s| &s["state"]).collect()).unwrap_or_default();
    assert_eq!(states.len(), steps, "{finished}");
    assert!(states.iter().all(|s| *s == "done"), "every step done at Xyte: {finished}");
    assert_eq!(finished["ok"], true, "{finished}");
}

// ------------------------------------------------------------------------------------------------------------------
// 1. WAN outage
// ------------------------------------------------------------------------------------------------------------------

#[test]
fn a_schedule_due_during_a_wan_outage_fires_and_is_delivered_once_in_step_order_when_xyte_returns() {
    let rt = runtime();
    let mut sim = simulator(&rt);
    let devices: Vec<String> = sim.sim.device_ids().into_iter().take(3).collect();
    let dir = tempfile::tempdir().unwrap();
    let due = next_due();
    let name = "wan";
    write_presets(
        dir.path(),
        &devices,
        name,
        json!([{"name": name, "room": ROOM, "preset": "start", "at": hhmm(due), "timezone": "UTC"}]),
    );
    let edge = Edge::start(dir.path(), &sim, &[]);
    let mut mcp = edge.mcp();
    // Warm the cache while Xyte is up (the devices and their models: a dry run validates against the model).
    mcp.call("list_rooms", json!({})).expect("list_rooms");
    for d in &devices {
        mcp.call("send_command", json!({"device_id": d, "command": "reboot", "dry_run": true})).expect("a dry run");
    }
    let listed = schedule(&mut mcp, name);
    assert_eq!(secs(&listed["next_runs"][0]), due.unix_timestamp(), "{listed}");

    rt.block_on(sim.stop());
    assert!(OffsetDateTime::now_utc() < due, "setup took longer than the lead time ({LEAD} s): rerun");
    let fired = wait_event(&mut mcp, "schedule.fired", name, until(due) + AFTER_DUE, |_| true);
    let run_id = check_fired(&fired, name, due, &devices);
    // Xyte is down: nothing reached it; step 1 waits in the outbox, the others are held behind it.
    assert!(sim.sim.stats().commands.is_empty(), "Xyte is down");
    let task = |mcp: &mut support::Mcp, step: usize| {
        let id = &fired["steps"][step]["task_id"];
        mcp.call("get_task_status", json!({"task_id": id})).unwrap_or_else(|e| panic!("get_task_status {id}: {e}"))
    };
    let first = task(&mut mcp, 0);
    assert!(matches!(first["state"].as_str(), Some("queued" | "sending")), "step 1 waits for Xyte: {first}");
    for step in 1..devices.len() {
        let t = task(&mut mcp, step);
        assert_eq!(t["state"], "held", "step {} waits for the step before it: {t}", step + 1);
    }

    rt.block_on(sim.restart()).unwrap();
    let finished =
        wait_event(&mut mcp, "schedule.finished", name, Duration::from_secs(90), |d| d["run_id"] == run_id.as_str());
    check_finished_ok(&finished, devices.len());
    // Counted at the simulator: each step once, in step order.
    assert_eq!(received(&sim), expected(&devices, name), "delivered exactly once each, in step order");
    assert_eq!(events(&mut mcp, "schedule.fired", name).len(), 1, "one run for one due time");
    assert_eq!(events(&mut mcp, "schedule.finished", name).len(), 1, "one finish for one run");
}

// ------------------------------------------------------------------------------------------------------------------
// 2. SIGKILL right after firing
// ------------------------------------------------------------------------------------------------------------------

#[test]
fn sigkill_right_after_a_schedule_fires_neither_repeats_nor_loses_the_run() {
    let rt = runtime();
    let sim = simulator(&rt);
    let devices: Vec<String> = sim.sim.device_ids().into_iter().take(3).collect();
    let dir = tempfile::tempdir().unwrap();
    let due = next_due();
    let name = "killed-run";
    write_presets(
        dir.path(),
        &devices,
        name,
        json!([{"name": name, "room": ROOM, "preset": "start", "cron": daily_cron(due), "timezone": "UTC"}]),
    );
    let mut edge = Edge::start(dir.path(), &sim, &[]);
    let listed = schedule(&mut edge.mcp(), name);
    assert_eq!(secs(&listed["next_runs"][0]), due.unix_timestamp(), "{listed}");

    edge.daemon.wait_line_where("the schedule fired log line", until(due) + AFTER_DUE, |l| {
        l.contains("schedule fired") && l.contains(name)
    });
    edge.kill();
    edge.restart();

    let mut mcp = edge.mcp();
    let fired = events(&mut mcp, "schedule.fired", name);
    assert_eq!(fired.len(), 1, "exactly one run for the due time after the restart: {fired:?}");
    let run_id = check_fired(&fired[0], name, due, &devices);
    let finished =
        wait_event(&mut mcp, "schedule.finished", name, Duration::from_secs(90), |d| d["run_id"] == run_id.as_str());
    check_finished_ok(&finished, devices.len());
    assert_eq!(received(&sim), expected(&devices, name), "each step reached Xyte once, in step order");
    assert_eq!(events(&mut mcp, "schedule.fired", name).len(), 1, "still one run");
    assert_eq!(events(&mut mcp, "schedule.finished", name).len(), 1, "one finish");
}

// ------------------------------------------------------------------------------------------------------------------
// 3. Down across a due time
// ------------------------------------------------------------------------------------------------------------------

#[test]
fn a_due_time_missed_while_down_fires_on_start_within_the_grace_and_is_skipped_beyond_it() {
    let rt = runtime();
    let sim = simulator(&rt);
    let devices: Vec<String> = sim.sim.device_ids().into_iter().take(2).collect();
    let due = next_due();
    // Two daemons on their own state directories: the default grace (15 min), and 1 s.
    let late_dir = tempfile::tempdir().unwrap();
    write_presets(
        late_dir.path(),
        &devices,
        "late",
        json!([{"name": "late", "room": ROOM, "preset": "start", "cron": daily_cron(due), "timezone": "UTC"}]),
    );
    let missed_dir = tempfile::tempdir().unwrap();
    write_presets(
        missed_dir.path(),
        &devices,
        "missed",
        json!([{"name": "missed", "room": ROOM, "preset": "start", "at": hhmm(due), "days": ["mon", "tue", "wed",
                "thu", "fri", "sat", "sun"], "timezone": "UTC"}]),
    );
    let mut late = Edge::start(late_dir.path(), &sim, &[]);
    let mut missed = Edge::start(missed_dir.path(), &sim, &[("XYTE_SCHEDULE_GRACE", "1s")]);
    // Both have seen their schedule (a schedule seen for the first time does not catch up on earlier due times).
    for (edge, name) in [(&late, "late"), (&missed, "missed")] {
        let s = schedule(&mut edge.mcp(), name);
        assert_eq!(secs(&s["next_runs"][0]), due.unix_timestamp(), "{s}");
        assert_eq!(s["last_run"], Value::Null, "{s}");
    }
    assert_eq!(list(&mut missed.mcp())["grace_s"], 1, "XYTE_SCHEDULE_GRACE=1s");
    assert_eq!(list(&mut late.mcp())["grace_s"], 900, "the default grace, 15 min");
    late.stop();
    missed.stop();
    assert!(OffsetDateTime::now_utc() < due, "setup took longer than the lead time ({LEAD} s): rerun");

    // Down across the due time, and more than the 1 s grace past it.
    wait_past(due + time::Duration::seconds(3));
    late.restart();
    missed.restart();

    // Handled before `ready:`: no waiting here.
    let mut mcp = late.mcp();
    let fired = events(&mut mcp, "schedule.fired", "late");
    assert_eq!(fired.len(), 1, "the missed due time fired on start: {fired:?}");
    check_fired(&fired[0], "late", due, &devices);
    let late_s = fired[0]["late_s"].as_f64().unwrap_or_else(|| panic!("late_s: {}", fired[0]));
    assert!(late_s > 0.0 && late_s <= 900.0, "late, within the grace: {}", fired[0]);
    assert!(events(&mut mcp, "schedule.skipped", "late").is_empty(), "nothing skipped within the grace");

    let mut mcp = missed.mcp();
    let skipped = events(&mut mcp, "schedule.skipped", "missed");
    assert_eq!(skipped.len(), 1, "the missed due time is recorded as skipped: {skipped:?}");
    let s = &skipped[0];
    assert_eq!((&s["reason_code"], &s["room"], &s["preset"]), (&json!("missed"), &json!(ROOM), &json!("start")), "{s}");
    assert_eq!(secs(&s["due_at"]), due.unix_timestamp(), "{s}");
    assert_eq!(s["count"], 1, "{s}");
    assert!(s["reason"].as_str().is_some_and(|r| !r.is_empty()), "a reason: {s}");
    assert!(events(&mut mcp, "schedule.fired", "missed").is_empty(), "beyond the grace: not fired");
    let listed = schedule(&mut mcp, "missed");
    assert_eq!(listed["last_run"], Value::Null, "{listed}");
    assert_eq!(secs(&listed["last_skip"]["due_at"]), due.unix_timestamp(), "{listed}");
    assert!(secs(&listed["next_runs"][0]) > due.unix_timestamp(), "{listed}");
}

// ------------------------------------------------------------------------------------------------------------------
// 4. Pause, resume, run now
// ------------------------------------------------------------------------------------------------------------------

#[test]
fn pause_survives_a_restart_and_skips_resume_fires_run_now_and_its_dry_run_and_a_viewer_may_not_pause() {
    let rt = runtime();
    let sim = simulator(&rt);
    let devices: Vec<String> = sim.sim.device_ids().into_iter().take(2).collect();
    let dir = tempfile::tempdir().unwrap();
    // `paused` is due twice, a minute apart: the first time while paused, the second after the resume.
    let d1 = next_due();
    let d2 = d1 + time::Duration::minutes(1);
    let cron = format!("{},{} * * * *", d1.minute(), d2.minute());
    // `manual` is due far from now; it is only run on demand.
    let far = d1 + time::Duration::hours(6);
    write_presets(
        dir.path(),
        &devices,
        "pr",
        json!([
            {"name": "paused", "room": ROOM, "preset": "start", "cron": cron, "timezone": "UTC"},
            {"name": "manual", "room": ROOM, "preset": "start", "at": hhmm(far), "timezone": "UTC"},
        ]),
    );
    let mut edge = Edge::start(dir.path(), &sim, &[("XYTE_HTTP_LOCAL_LISTEN", "127.0.0.1:0")]);
    let me = format!("uid:{}", nix::unistd::getuid());
    let mut mcp = edge.mcp();

    let paused = mcp.call("pause_schedule", json!({"name": "paused"})).expect("pause_schedule");
    assert!(OffsetDateTime::now_utc() < d1, "setup took longer than the lead time ({LEAD} s): rerun");
    let s = schedule(&mut mcp, "paused");
    assert!(s["paused"].is_object(), "paused after pause_schedule ({paused}): {s}");
    assert_eq!(s["paused"]["until"], Value::Null, "until resumed: {s}");
    assert_eq!(s["paused"]["by"], me, "{s}");
    assert_eq!(secs(&s["next_runs"][0]), d1.unix_timestamp(), "{s}");
    assert_eq!(
        mcp.call("pause_schedule", json!({"name": "no-such-schedule"})).expect_err("an unknown name")["code"],
        "not_found"
    );

    // A viewer reads the schedules but may neither pause nor resume.
    let viewer = edge.token("sched-viewer", "viewer");
    let (status, body) = edge.rest(&viewer, "GET", "/v1/schedules", None);
    assert_eq!(status, 200, "{body}");
    assert!(body["schedules"].as_array().is_some_and(|l| l.iter().any(|s| s["name"] == "paused")), "{body}");
    for tool in ["pause_schedule", "resume_schedule"] {
        let (status, body) = edge.rest(&viewer, "POST", &format!("/v1/tools/{tool}"), Some(json!({"name": "paused"})));
        assert_eq!((status, &body["error"]["code"]), (403, &json!("permission_denied")), "{tool} as a viewer: {body}");
    }
    assert!(schedule(&mut mcp, "paused")["paused"].is_object(), "still paused after the viewer's attempts");

    // Run now, dry: the steps, and nothing queued.
    let before = edge.tasks();
    let dry = mcp.call("run_schedule_now", json!({"name": "manual", "dry_run": true})).expect("a dry run");
    assert_eq!(dry["dry_run"], true, "{dry}");
    let listed: Vec<(Value, Value, Value)> = dry["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("steps: {dry}"))
        .iter()
        .map(|s| (s["step"].clone(), s["device_id"].clone(), s["command"].clone()))
        .collect();
    let want: Vec<(Value, Value, Value)> =
        devices.iter().enumerate().map(|(i, d)| (json!(i + 1), json!(d), json!("reboot"))).collect();
    assert_eq!(listed, want, "{dry}");
    assert_eq!(edge.tasks(), before, "a dry run queues nothing");
    assert!(events(&mut mcp, "schedule.fired", "manual").is_empty(), "a dry run fires nothing");

    // Run now: fires (no due time, the caller as principal) and finishes.
    let now = mcp.call("run_schedule_now", json!({"name": "manual"})).expect("run_schedule_now");
    let fired = wait_event(&mut mcp, "schedule.fired", "manual", Duration::from_secs(10), |_| true);
    assert_eq!((&fired["due_at"], &fired["principal"]), (&Value::Null, &json!(me)), "{fired}");
    assert_eq!(fired["steps"].as_array().map(Vec::len), Some(devices.len()), "{fired}");
    if let Some(id) = now["run_id"].as_str() {
        assert_eq!(fired["run_id"], id, "the answer names the run: {now}");
    }
    let run_id = fired["run_id"].as_str().unwrap().to_string();
    assert_eq!(edge.tasks(), before + devices.len() as i64, "one task per step");
    let finished = wait_event(&mut mcp, "schedule.finished", "manual", Duration::from_secs(60), |d| {
        d["run_id"] == run_id.as_str()
    });
    check_finished_ok(&finished, devices.len());
    let s = schedule(&mut mcp, "manual");
    assert_eq!((&s["last_run"]["run_id"], &s["last_run"]["due_at"]), (&json!(run_id), &Value::Null), "{s}");
    assert_eq!(s["last_run"]["ok"], true, "{s}");
    assert!(s["last_run"]["finished_at"].is_string(), "{s}");
    assert_eq!(received(&sim), expected(&devices, "pr"), "the run now, once");

    // The first due time passes while paused: skipped, nothing queued.
    let tasks = edge.tasks();
    let skip = wait_event(&mut mcp, "schedule.skipped", "paused", until(d1) + AFTER_DUE, |_| true);
    assert_eq!(skip["reason_code"], "paused", "{skip}");
    assert_eq!(secs(&skip["due_at"]), d1.unix_timestamp(), "{skip}");
    assert!(events(&mut mcp, "schedule.fired", "paused").is_empty(), "a paused schedule does not fire");
    assert_eq!(edge.tasks(), tasks, "nothing queued for a paused schedule");

    // The pause survives a restart.
    edge.stop();
    edge.restart();
    let mut mcp = edge.mcp();
    let s = schedule(&mut mcp, "paused");
    assert!(s["paused"].is_object(), "still paused after a restart: {s}");
    assert_eq!(secs(&s["last_skip"]["due_at"]), d1.unix_timestamp(), "{s}");
    assert_eq!(s["last_run"], Value::Null, "{s}");

    // Resumed: the next due time fires.
    assert!(OffsetDateTime::now_utc() < d2 - time::Duration::seconds(2), "the restart took too long: rerun");
    mcp.call("resume_schedule", json!({"name": "paused"})).expect("resume_schedule");
    let s = schedule(&mut mcp, "paused");
    assert_eq!(s["paused"], Value::Null, "{s}");
    assert_eq!(secs(&s["next_runs"][0]), d2.unix_timestamp(), "{s}");
    assert_eq!(s["next_runs"].as_array().map(Vec::len), Some(3), "{s}");
    let fired = wait_event(&mut mcp, "schedule.fired", "paused", until(d2) + AFTER_DUE, |_| true);
    let run_id = check_fired(&fired, "paused", d2, &devices);
    let finished = wait_event(&mut mcp, "schedule.finished", "paused", Duration::from_secs(60), |d| {
        d["run_id"] == run_id.as_str()
    });
    check_finished_ok(&finished, devices.len());
    let s = schedule(&mut mcp, "paused");
    assert_eq!(s["last_run"]["run_id"], run_id, "{s}");
    assert_eq!(secs(&s["last_run"]["due_at"]), d2.unix_timestamp(), "{s}");
    assert_eq!(s["last_run"]["ok"], true, "{s}");
    assert!(s["last_run"]["fired_at"].is_string() && s["last_run"]["finished_at"].is_string(), "{s}");
    assert_eq!(events(&mut mcp, "schedule.fired", "paused").len(), 1, "one run: the due time after the resume");
    let mut want = expected(&devices, "pr");
    want.extend(expected(&devices, "pr"));
    assert_eq!(received(&sim), want, "the run now, then the resumed schedule's run, each once");
}

// ------------------------------------------------------------------------------------------------------------------
// 5. Bad input
// ------------------------------------------------------------------------------------------------------------------

#[test]
fn broken_schedule_entries_are_named_and_dropped_and_a_broken_reload_keeps_the_schedules() {
    let rt = runtime();
    let sim = simulator(&rt);
    let devices: Vec<String> = sim.sim.device_ids().into_iter().take(2).collect();
    let dir = tempfile::tempdir().unwrap();
    let entry = |name: &str| json!({"name": name, "room": ROOM, "preset": "start", "at": "07:45", "timezone": "UTC"});
    let mut bad_room = entry("bad-room");
    bad_room["room"] = json!("Nope");
    let mut bad_preset = entry("bad-preset");
    bad_preset["preset"] = json!("nope");
    let mut bad_cron = entry("bad-cron");
    bad_cron.as_object_mut().unwrap().remove("at");
    bad_cron["cron"] = json!("61 25 * * *");
    let mut bad_tz = entry("bad-tz");
    bad_tz["timezone"] = json!("Mars/Olympus");
    let mut duplicate = entry("good");
    duplicate["at"] = json!("08:00");
    let file = write_presets(
        dir.path(),
        &devices,
        "bad",
        json!([entry("good"), bad_room, bad_preset, bad_cron, bad_tz, duplicate]),
    );
    let problems: Vec<(&str, String)> = vec![
        ("bad-room", "schedule \"bad-room\": unknown room \"Nope\"".into()),
        ("bad-preset", format!("schedule \"bad-preset\": room \"{ROOM}\" has no preset \"nope\"")),
        ("bad-cron", "schedule \"bad-cron\": ".into()),
        ("bad-tz", "schedule \"bad-tz\": unknown time zone Mars/Olympus".into()),
        ("good", "schedule \"good\": the name is used by an earlier schedule".into()),
    ];

    // check-config names each entry on stderr and exits 78; the good schedule is listed with its next runs.
    let out = support::bin()
        .arg("check-config")
        .env("XYTE_API_KEY", "k")
        .env("XYTE_STATE_DIR", dir.path().join("state"))
        .env("XYTE_PRESETS_FILE", &file)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(78), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for (name, text) in &problems {
        let line =
            stderr.lines().find(|l| l.contains(text.as_str())).unwrap_or_else(|| panic!("no {text:?} in:\n{stderr}"));
        assert!(line.trim_start().starts_with("error: "), "{line}");
        if *name == "bad-cron" {
            assert!(line.contains("cron"), "an invalid-cron message: {line}");
        }
    }
    // A schedule's line, e.g. `#   schedule good: Sched Room / start, 07:45 every day (UTC); next …`.
    let entry = |name: &str| {
        let prefix = format!("{name}:");
        stdout.lines().find(|l| l.trim_start_matches(['#', ' ']).trim_start_matches("schedule ").starts_with(&prefix))
    };
    let good = entry("good").unwrap_or_else(|| panic!("no line for the schedule \"good\":\n{stdout}"));
    assert!(good.contains(ROOM) && good.contains("next"), "{good}");
    assert_eq!(good.matches("T07:45:00").count(), 3, "its next three runs: {good}");
    for bad in ["bad-room", "bad-preset", "bad-cron", "bad-tz"] {
        assert!(entry(bad).is_none(), "{bad} is not a schedule:\n{stdout}");
    }

    // The daemon starts all the same: the good schedule (the first of the two named "good"), and the five errors.
    let mut edge = Edge::start(dir.path(), &sim, &[]);
    let mut mcp = edge.mcp();
    let all = list(&mut mcp);
    let names: Vec<&Value> =
        all["schedules"].as_array().map(|l| l.iter().map(|s| &s["name"]).collect()).unwrap_or_default();
    assert_eq!(names, [&json!("good")], "{all}");
    assert_eq!(all["schedules"][0]["when"]["at"], "07:45", "the first of the duplicates is kept: {all}");
    assert_eq!(all["schedules"][0]["next_runs"].as_array().map(Vec::len), Some(3), "{all}");
    let errors: Vec<&str> =
        all["errors"].as_array().map(|l| l.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    assert_eq!(errors.len(), 5, "{all}");
    for (_, text) in &problems {
        assert!(errors.iter().any(|e| e.contains(text.as_str())), "no {text:?} among {errors:?}");
    }
    // The room's presets work.
    let rooms = mcp.call("list_rooms", json!({})).expect("list_rooms");
    let room = rooms["rooms"]
        .as_array()
        .and_then(|l| l.iter().find(|r| r["name"] == ROOM))
        .unwrap_or_else(|| panic!("{rooms}"));
    assert_eq!(room["presets"], json!(["start"]), "{room}");
    mcp.call("start_meeting_room_preset", json!({"room": ROOM, "preset": "start", "dry_run": true}))
        .expect("the room's preset validates");

    // Replaced by something that is not JSON: SIGHUP keeps the previous schedules (and says so as an error).
    std::fs::write(&file, "{\"rooms\": {\"Sched Room\": ").unwrap();
    edge.daemon.drain_output();
    edge.daemon.output.clear();
    edge.daemon.signal(nix::sys::signal::Signal::SIGHUP);
    edge.daemon.wait_line("SIGHUP received", Duration::from_secs(10));
    edge.daemon.wait_line_where("an error about the reload", Duration::from_secs(10), |l| l.contains("ERROR"));
    let all = list(&mut mcp);
    let names: Vec<&Value> =
        all["schedules"].as_array().map(|l| l.iter().map(|s| &s["name"]).collect()).unwrap_or_default();
    assert_eq!(names, [&json!("good")], "the previous schedules are kept: {all}");
    let rooms = mcp.call("list_rooms", json!({})).expect("list_rooms");
    assert!(rooms["rooms"].as_array().is_some_and(|l| l.iter().any(|r| r["name"] == ROOM)), "{rooms}");
}
