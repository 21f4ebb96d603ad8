//! Disk full (issue #5): the daemon's state directory lives on a small size-limited tmpfs, and a filler file takes
//! every free byte — while a command is on its way to Xyte — and agents keep submitting `send_command_async` over
//! loopback REST. Every refusal must say plainly that the disk is full, every acknowledged task must be stored and
//! delivered exactly once (counted at a separate `xyte-edge sim` process), cached reads keep answering, `/readyz`
//! says why it is not ready, the webhook answers 507 instead of 202, and the daemon neither crashes nor spins.
//! Deleting the filler brings writes back without a restart. Then the disk fills again (a little room left, so some
//! commands are acknowledged on the edge) and the daemon is SIGKILLed: it restarts even before space is back, and
//! once space returns everything acknowledged is delivered once and `integrity_check` is ok.
//!
//! Needs root (or CAP_SYS_ADMIN) to mount the tmpfs; without it the test fails and says so.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod support;
use support::Daemon;

/// Room for the database (a few hundred KiB here) and its WAL, small enough to fill in an instant.
const FS_SIZE: &str = "16m";
/// What the second fill leaves free: room for some commands to be acknowledged before the disk is full.
const LEFT_FREE: u64 = 256 * 1024;

/// A tmpfs of [`FS_SIZE`] on a fresh temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount() -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={FS_SIZE},mode=0700"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap_or_else(|e| {
                panic!("disk_full needs `mount` (root or CAP_SYS_ADMIN) for a size-limited tmpfs: {e}")
            });
        assert!(
            out.status.success(),
            "disk_full needs root (or CAP_SYS_ADMIN) to mount a size-limited tmpfs on {}: mount said {:?}",
            dir.path().display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn free_bytes(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(self.path()).unwrap();
        s.blocks_available() as u64 * s.fragment_size() as u64
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // A daemon killed a moment ago may still hold its files; a lazy unmount detaches the tmpfs regardless.
        let ok = Command::new("umount").arg(self.path()).output().is_ok_and(|o| o.status.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(self.path()).status();
        }
    }
}

/// Takes every free byte of the filesystem (1 MiB writes, then 4 KiB, then single bytes, each until ENOSPC), then
/// gives back `leave` bytes (truncating a tmpfs file frees its pages at once).
fn fill(path: &Path, leave: u64) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0u64;
    for size in [1 << 20, 4096, 1] {
        loop {
            match f.write(&chunk[..size]) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
    }
    f.set_len(written - leave).unwrap();
    written - leave
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn respond(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>, what: &str) -> (u16, Value) {
    let mut resp = r.unwrap_or_else(|e| panic!("{what}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// The daemon under test, reached over its loopback HTTP listener with an operator token.
struct Edge {
    daemon: Daemon,
    base: String,
    token: String,
    http: ureq::Agent,
}

impl Edge {
    fn get(&self, path: &str) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        respond(self.http.get(&url).header("Authorization", &format!("Bearer {}", self.token)).call(), &url)
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let req = self
            .http
            .post(&url)
            .header("Authorization", &format!("Bearer {}", self.token))
            .header("Content-Type", "application/json");
        respond(req.send(body.to_string()), &url)
    }

    fn submit(&self, device: &str, name: &str) -> (u16, Value) {
        self.post(
            "/v1/tools/send_command_async",
            &json!({"device_id": device, "command": "reboot", "friendly_name": name}),
        )
    }

    /// Polls `/readyz` until its status is `want`; returns the body.
    fn wait_ready(&self, want: u16, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, body) = self.get("/readyz");
            if status == want {
                return body;
            }
            assert!(Instant::now() < deadline, "/readyz still {status} after {timeout:?}, wanted {want}: {body}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// User plus system CPU time the daemon has used.
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.daemon.pid)).unwrap();
        // Fields after the parenthesised command name; utime and stime are the 14th and 15th fields overall.
        let rest: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
        let ticks: u64 = rest[11].parse::<u64>().unwrap() + rest[12].parse::<u64>().unwrap();
        Duration::from_millis(ticks * 1000 / clock_ticks())
    }
}

fn clock_ticks() -> u64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().expect("getconf CLK_TCK");
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("CLK_TCK is a number")
}

/// Starts `xyte-edge serve` on `state` against the simulator and waits for its loopback listener.
fn serve(state: &Path, aux: &Path, sim_url: &str) -> (Daemon, String) {
    let mut cmd = support::bin();
    cmd.arg("serve")
        .env("XYTE_API_KEY", "demo-key")
        .env("XYTE_BASE_URL", sim_url)
        .env("XYTE_STATE_DIR", state)
        .env("XYTE_MCP_SOCKET", aux.join("mcp.sock"))
        .env("XYTE_PRESETS_FILE", aux.join("presets.json"))
        .env("XYTE_HTTP_LISTEN", "")
        .env("XYTE_HTTP_LOCAL_LISTEN", "127.0.0.1:0")
        .env("XYTE_POLL_INTERVAL", "2")
        // Reads past a second go to Xyte and store the answer: that store fails while the disk is full.
        .env("XYTE_CACHE_TTL", "1")
        .env("XYTE_RATE_LIMIT", "6000")
        .env("XYTE_LOG_FORMAT", "text");
    let mut daemon = Daemon::spawn(cmd);
    let line = daemon.wait_line("HTTP listener ready", Duration::from_secs(20));
    let addr = line.split("addr=").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    (daemon, format!("http://{addr}"))
}

/// The simulator's record of commands it received: friendly name → how many times.
fn delivered(sim: &str) -> HashMap<String, usize> {
    let (status, stats) = respond(agent().get(&format!("{sim}/_sim/stats")).call(), "sim stats");
    assert_eq!(status, 200, "{stats}");
    let mut counts = HashMap::new();
    for c in stats["commands"].as_array().unwrap() {
        *counts.entry(c["body"]["friendly_name"].as_str().unwrap_or("").to_string()).or_insert(0) += 1;
    }
    counts
}

fn set_faults(sim: &str, spec: &str) {
    let req = agent().post(&format!("{sim}/_sim/faults")).header("Content-Type", "application/json");
    let (status, body) = respond(req.send(json!({ "spec": spec }).to_string()), "sim faults");
    assert_eq!(status, 200, "{body}");
}

/// Polls `done` every 50 ms until it holds; panics with `what` after `timeout`.
fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn device_polls(sim: &str) -> u64 {
    let (_, stats) = respond(agent().get(&format!("{sim}/_sim/stats")).call(), "sim stats");
    stats["by_route"]["GET /core/v1/organization/devices"].as_u64().unwrap_or(0)
}

/// What submitting while the disk is full produced.
#[derive(Default)]
struct Outcome {
    accepted: Vec<(String, String)>,
    refused: Vec<(String, u16, Value)>,
}

/// Submits commands named `{prefix}-{i}` round-robin to `devices` until 10 in a row are refused.
fn submit_until_refused(edge: &Edge, devices: &[String], prefix: &str) -> Outcome {
    let mut out = Outcome::default();
    let mut in_a_row = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0.. {
        assert!(
            i < 5000 && Instant::now() < deadline,
            "the disk is full, yet {} of {i} commands were still accepted",
            out.accepted.len()
        );
        let name = format!("{prefix}-{i}");
        let (status, body) = edge.submit(&devices[i % devices.len()], &name);
        if status == 200 {
            out.accepted.push((body["task_id"].as_str().expect("a task id").to_string(), name));
            in_a_row = 0;
        } else {
            out.refused.push((name, status, body));
            in_a_row += 1;
            if in_a_row == 10 {
                return out;
            }
        }
    }
    unreachable!()
}

/// Every refusal is a 507 whose message says the disk is full: no SQLite jargon, no panic.
fn check_refusals(out: &Outcome) {
    for (name, status, body) in &out.refused {
        let message = body["error"]["message"].as_str().unwrap_or("");
        assert_eq!(status, &507, "{name}: {body}");
        assert_eq!(body["error"]["code"], "storage_full", "{name}: {body}");
        assert!(message.starts_with("disk full"), "{name}: {body}");
        assert!(message.contains("not queued"), "the agent must know nothing was stored: {body}");
    }
}

/// Polls until every task is final; returns the states.
fn wait_final(edge: &Edge, tasks: &[(String, String)]) -> HashMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut finals = HashMap::new();
    while finals.len() < tasks.len() {
        let mut open = Vec::new();
        for (id, name) in tasks {
            if finals.contains_key(id) {
                continue;
            }
            let (status, t) = edge.get(&format!("/v1/tasks/{id}"));
            assert_eq!(status, 200, "acknowledged task {id} ({name}) must be found: {t}");
            if t["final"] == true {
                finals.insert(id.clone(), t["state"].as_str().unwrap_or("").to_string());
            } else {
                open.push(t);
            }
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {} acknowledged tasks final after 60 s (a task left `sending` is one whose delivery could not \
             be recorded while the disk was full: it must be reconciled, without a restart); still open: {open:?}",
            finals.len(),
            tasks.len()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    finals
}

fn integrity(db: &Path) -> String {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap()
}

#[test]
fn a_full_disk_refuses_commands_clearly_loses_nothing_and_recovers() {
    let started = Instant::now();
    let fs = Tmpfs::mount();
    let aux = tempfile::tempdir().unwrap();
    let state: PathBuf = fs.path().join("state");
    let filler = fs.path().join("filler");
    let db = state.join("xyte-edge.db");

    let mut sim = Daemon::spawn({
        let mut c = support::bin();
        c.args(["sim", "--listen", "127.0.0.1:0", "--devices", "12", "--seed", "5"]);
        c
    });
    let line = sim.wait_line("listening on", Duration::from_secs(20));
    let sim_api = line.split("listening on ").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    let sim_root = sim_api.split("/core/").next().unwrap().to_string();

    let (daemon, base) = serve(&state, aux.path(), &sim_api);
    let token = {
        let out = support::bin()
            .args(["token", "create", "--name", "agent", "--role", "operator"])
            .env("XYTE_STATE_DIR", &state)
            .output()
            .unwrap();
        assert!(out.status.success(), "token create: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let mut edge = Edge { daemon, base, token, http: agent() };
    edge.wait_ready(200, Duration::from_secs(30));

    // A warm cache: the fleet, and each device's model (a dry run validates against it).
    let (_, sim_devices) = respond(agent().get(&format!("{sim_root}/_sim/devices")).call(), "sim devices");
    let devices: Vec<String> =
        sim_devices.as_array().unwrap().iter().take(3).map(|d| d["id"].as_str().unwrap().to_string()).collect();
    let (status, listed) = edge.get("/v1/devices");
    assert_eq!((status, listed["total"].as_u64()), (200, Some(12)), "{listed}");
    for d in &devices {
        let (status, body) =
            edge.post("/v1/tools/send_command_async", &json!({"device_id": d, "command": "reboot", "dry_run": true}));
        assert_eq!(status, 200, "{body}");
    }
    let mut acknowledged: Vec<(String, String)> = Vec::new();
    let mut refused_names: Vec<String> = Vec::new();
    for (i, device) in devices.iter().enumerate() {
        let name = format!("before-{i}");
        let (status, body) = edge.submit(device, &name);
        assert_eq!(status, 200, "{body}");
        acknowledged.push((body["task_id"].as_str().unwrap().to_string(), name));
    }

    // ---- The disk fills up under a running daemon, while a command is on its way to Xyte (slowed down by the
    // simulator): its delivery cannot be recorded, and must neither be lost nor sent twice.
    set_faults(&sim_root, "latency=1500ms");
    let (status, body) = edge.submit(&devices[0], "in-flight");
    assert_eq!(status, 200, "{body}");
    let in_flight = body["task_id"].as_str().unwrap().to_string();
    acknowledged.push((in_flight.clone(), "in-flight".into()));
    wait_until(Duration::from_secs(10), "the in-flight task is being sent", || {
        edge.get(&format!("/v1/tasks/{in_flight}")).1["state"] == "sending"
    });
    let filled = fill(&filler, 0);
    eprintln!("disk_full: filler took {filled} bytes; {} bytes free on the state filesystem", fs.free_bytes());
    wait_until(Duration::from_secs(10), "the in-flight command reaches the simulator", || {
        delivered(&sim_root).contains_key("in-flight")
    });
    set_faults(&sim_root, "");
    let (cpu_before, wall_before) = (edge.cpu(), Instant::now());
    let out = submit_until_refused(&edge, &devices, "full");
    eprintln!(
        "disk_full: while full, {} commands accepted and {} refused before 10 refusals in a row",
        out.accepted.len(),
        out.refused.len()
    );
    eprintln!("disk_full: an agent sees (HTTP {}): {}", out.refused[0].1, out.refused[0].2);
    check_refusals(&out);
    acknowledged.extend(out.accepted.iter().cloned());
    refused_names.extend(out.refused.iter().map(|r| r.0.clone()));

    // Reads keep answering from the cache; acknowledged tasks can be looked up.
    for _ in 0..3 {
        let (status, listed) = edge.get("/v1/devices");
        assert_eq!(
            (status, listed["total"].as_u64()),
            (200, Some(12)),
            "reads answer while the disk is full: {listed}"
        );
        let (status, one) = edge.get(&format!("/v1/devices/{}", devices[0]));
        assert_eq!(status, 200, "{one}");
    }
    for (id, _) in acknowledged.iter().rev().take(3) {
        let (status, t) = edge.get(&format!("/v1/tasks/{id}"));
        assert_eq!(status, 200, "{t}");
    }
    let (status, ready) = edge.get("/readyz");
    eprintln!("disk_full: /readyz while full: {status} {ready}");
    assert_eq!(status, 503, "an operator must see the full disk in readiness: {ready}");
    assert!(ready["reasons"].to_string().contains("disk full"), "{ready}");
    let (status, health) = edge.get("/healthz");
    assert_eq!(status, 200, "alive all the same: {health}");
    let (status, hook) = edge.post("/v1/webhook", &json!({"type": "test.disk_full", "id": "wh-full-1", "data": {}}));
    eprintln!("disk_full: webhook while full: {status} {hook}");
    assert_eq!(status, 507, "the webhook must not answer 202 when it cannot store: {hook}");
    assert!(hook["error"]["message"].as_str().unwrap_or("").starts_with("disk full"), "{hook}");

    // Background work goes on at its own pace: two more polls reach the simulator, and the daemon does not spin.
    let polls = device_polls(&sim_root);
    wait_until(Duration::from_secs(20), "two more polls while the disk is full", || {
        device_polls(&sim_root) >= polls + 2
    });
    let (cpu, wall) = (edge.cpu() - cpu_before, wall_before.elapsed());
    eprintln!(
        "disk_full: daemon CPU while full: {:.2} s in {:.2} s of wall time",
        cpu.as_secs_f64(),
        wall.as_secs_f64()
    );
    assert!(cpu < wall, "the daemon spins while the disk is full: {cpu:?} of CPU in {wall:?}");
    assert_eq!(integrity(&db), "ok", "integrity while full");

    // ---- Space comes back: no restart needed.
    std::fs::remove_file(&filler).unwrap();
    let recovered = Instant::now();
    edge.wait_ready(200, Duration::from_secs(30));
    eprintln!("disk_full: ready again {:.2} s after the filler was deleted", recovered.elapsed().as_secs_f64());
    for i in 0..5 {
        let name = format!("after-{i}");
        let (status, body) = edge.submit(&devices[i % 3], &name);
        assert_eq!(status, 200, "accepted again without a restart: {body}");
        acknowledged.push((body["task_id"].as_str().unwrap().to_string(), name));
    }
    let (status, hook) = edge.post("/v1/webhook", &json!({"type": "test.disk_full", "id": "wh-after-1", "data": {}}));
    assert_eq!(status, 202, "{hook}");
    let finals = wait_final(&edge, &acknowledged);
    eprintln!("disk_full: final states after recovery: {:?}", count_states(&finals));

    // ---- Full again, and the daemon is SIGKILLed while it is. A little room is left this time, as when a log grows
    // next to the daemon: commands are accepted until it is gone.
    let filled = fill(&filler, LEFT_FREE);
    let out = submit_until_refused(&edge, &devices, "kill");
    check_refusals(&out);
    eprintln!(
        "disk_full: second fill ({filled} bytes): {} accepted, {} refused; SIGKILL now",
        out.accepted.len(),
        out.refused.len()
    );
    acknowledged.extend(out.accepted.iter().cloned());
    refused_names.extend(out.refused.iter().map(|r| r.0.clone()));
    edge.daemon.signal(nix::sys::signal::Signal::SIGKILL);
    edge.daemon.wait_exit(Duration::from_secs(10));
    let log = &edge.daemon.output;
    let errors = log.iter().filter(|l| l.contains("ERROR")).count();
    eprintln!("disk_full: the first daemon logged {} lines, {errors} of them errors", log.len());
    assert!(!log.iter().any(|l| l.contains("panicked")), "no panic in the daemon's output");

    // It starts again while the disk is still full: reads answer, readiness explains, commands are refused.
    let (daemon, base) = serve(&state, aux.path(), &sim_api);
    edge.daemon = daemon;
    edge.base = base;
    let ready = edge.wait_ready(503, Duration::from_secs(30));
    eprintln!("disk_full: restarted while full; /readyz: {ready}");
    let (status, listed) = edge.get("/v1/devices");
    assert_eq!((status, listed["total"].as_u64()), (200, Some(12)), "{listed}");
    let (status, body) = edge.submit(&devices[0], "restarted-full");
    assert_eq!(status, 507, "{body}");
    refused_names.push("restarted-full".into());

    std::fs::remove_file(&filler).unwrap();
    edge.wait_ready(200, Duration::from_secs(30));
    let (status, body) = edge.submit(&devices[1], "restarted-after");
    assert_eq!(status, 200, "{body}");
    acknowledged.push((body["task_id"].as_str().unwrap().to_string(), "restarted-after".into()));
    let finals = wait_final(&edge, &acknowledged);
    eprintln!("disk_full: final states at the end: {:?}", count_states(&finals));
    for state in finals.values() {
        assert!(matches!(state.as_str(), "done" | "failed"), "a Xyte verdict, not an expiry: {finals:?}");
    }

    // Counted at the simulator: each acknowledged command exactly once, no refused one at all.
    let counts = delivered(&sim_root);
    for (id, name) in &acknowledged {
        assert_eq!(counts.get(name), Some(&1), "{name} ({id}) must reach Xyte exactly once");
    }
    for name in &refused_names {
        assert_eq!(counts.get(name), None, "refused {name} must never reach Xyte");
    }
    let ids: HashSet<&String> = acknowledged.iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), acknowledged.len(), "task ids are unique");

    edge.daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let (code, _) = edge.daemon.wait_exit(Duration::from_secs(15));
    assert_eq!(code, Some(0), "clean stop");
    assert_eq!(integrity(&db), "ok", "integrity at the end");
    let panics = edge.daemon.output.iter().filter(|l| l.contains("panicked")).count();
    assert_eq!(panics, 0, "no panic in the daemon's output");
    eprintln!(
        "disk_full: {} commands acknowledged and delivered exactly once, {} refused and never delivered; {:.1} s",
        acknowledged.len(),
        refused_names.len(),
        started.elapsed().as_secs_f64()
    );
    drop(sim);
}

fn count_states(finals: &HashMap<String, String>) -> HashMap<&str, usize> {
    let mut by = HashMap::new();
    for s in finals.values() {
        *by.entry(s.as_str()).or_insert(0) += 1;
    }
    by
}
