//! `serve --demo` as a user runs it: reaches READY=1 on a real notify socket, syncs the simulator's devices into the
//! SQLite cache, and exits 0 within 5 s of SIGTERM after STOPPING=1. And what systemd and `xyte-edge status` say
//! about the cache after a restart while Xyte is unreachable.

mod support;

use std::time::Duration;

use nix::sys::signal::Signal;
use support::{Daemon, NotifySocket, bin};

#[test]
fn demo_reaches_ready_syncs_devices_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let notify = NotifySocket::bind(dir.path());
    let mut cmd = bin();
    cmd.args(["serve", "--demo"])
        .current_dir(dir.path())
        .env("XDG_STATE_HOME", dir.path().join("state"))
        .env("XDG_RUNTIME_DIR", dir.path().join("run"))
        .env("NOTIFY_SOCKET", &notify.path)
        .env("XYTE_LOG_FORMAT", "text");
    let mut daemon = Daemon::spawn(cmd);

    let ready = notify.wait_for("READY=1", Duration::from_secs(20));
    assert!(ready.is_ok(), "no READY=1: {ready:?}\n{}", daemon.output.join("\n"));

    let line = daemon.wait_line("synced ", Duration::from_secs(20));
    let after = &line[line.find("synced ").unwrap() + "synced ".len()..];
    let devices: usize =
        after.split_whitespace().next().and_then(|n| n.parse().ok()).expect("device count in the sync line");
    assert_eq!(devices, 40, "the demo org has 40 devices: {line}");

    daemon.signal(Signal::SIGTERM);
    let (code, took) = daemon.wait_exit(Duration::from_secs(5));
    assert_eq!(code, Some(0), "exit code; output:\n{}", daemon.output.join("\n"));
    assert!(took < Duration::from_secs(5));
    assert!(notify.wait_for("STOPPING=1", Duration::from_secs(1)).is_ok(), "no STOPPING=1");

    // The cache on disk holds every device the daemon reported.
    let state = dir.path().join("state/xyte-edge-demo");
    let store = xyte_edge::store::Store::open(&state, Default::default()).expect("reopen the demo store");
    let cached = store
        .read_blocking(|conn| xyte_edge::store::cache::list(conn, "device", |_, body| body))
        .expect("read the cache");
    assert_eq!(cached.len(), devices);
    assert!(cached.iter().all(|(_, body, _)| body.get("id").is_some() && body.get("status").is_some()));
}

/// Under a systemd watchdog the daemon pings while healthy; JSON logs at debug show every upstream call and never
/// the credential.
#[test]
fn demo_pings_the_watchdog_and_logs_json_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let notify = NotifySocket::bind(dir.path());
    let mut cmd = bin();
    cmd.args(["serve", "--demo"])
        .current_dir(dir.path())
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "400000")
        .env("XYTE_LOG_FORMAT", "json")
        .env("XYTE_LOG_LEVEL", "debug");
    let mut daemon = Daemon::spawn(cmd);
    assert!(notify.wait_for("READY=1", Duration::from_secs(20)).is_ok());
    assert!(notify.wait_for("WATCHDOG=1", Duration::from_secs(5)).is_ok(), "no watchdog ping");
    daemon.wait_line("\"xyte call\"", Duration::from_secs(20));
    daemon.signal(Signal::SIGTERM);
    let (code, _) = daemon.wait_exit(Duration::from_secs(5));
    assert_eq!(code, Some(0));
    let logs: Vec<&String> = daemon.output.iter().filter(|l| l.starts_with('{')).collect();
    assert!(logs.len() > 3, "{:?}", daemon.output);
    for line in &logs {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v.get("level").is_some() && v.get("fields").is_some(), "{line}");
        assert!(!line.contains("demo-key"), "the credential leaked: {line}");
    }
    let call = logs
        .iter()
        .find(|l| l.contains("\"xyte call\"") && l.contains("\"path\":\"devices\""))
        .expect("a logged GET devices call");
    for field in ["\"method\":\"GET\"", "\"status\":200", "\"latency_ms\"", "\"attempt\":1"] {
        assert!(call.contains(field), "{field} missing in {call}");
    }
}

#[test]
fn log_level_filters_and_plain_text_goes_to_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let notify = NotifySocket::bind(dir.path());
    let mut cmd = bin();
    cmd.args(["serve", "--demo"])
        .current_dir(dir.path())
        .env("NOTIFY_SOCKET", &notify.path)
        .env("XYTE_LOG_FORMAT", "text")
        .env("XYTE_LOG_LEVEL", "warn");
    let mut daemon = Daemon::spawn(cmd);
    assert!(notify.wait_for("READY=1", Duration::from_secs(20)).is_ok());
    daemon.wait_line("synced ", Duration::from_secs(20));
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(5)).0, Some(0));
    assert!(!daemon.output.iter().any(|l| l.contains(" INFO ") || l.contains(" DEBUG ")), "{:#?}", daemon.output);
}

/// systemd sees a useful `STATUS=` line, and the watchdog ping is withheld while the store writer is stuck (here: a
/// second process holds the database's write lock), then resumes once it is free again.
#[test]
fn status_summarises_and_the_watchdog_waits_for_a_stuck_store_writer() {
    let notify_dir = tempfile::tempdir().unwrap();
    let notify = NotifySocket::bind(notify_dir.path());
    let socket = notify.path.to_str().unwrap().to_string();
    let mut gw = support::Gateway::start(&[("NOTIFY_SOCKET", &socket), ("WATCHDOG_USEC", "2000000")]);
    let status = notify.wait_until(|l| l.starts_with("STATUS=Xyte reachable, 40 devices ("), Duration::from_secs(15));
    let status = status.unwrap_or_else(|seen| panic!("no fleet summary in STATUS=: {seen:?}"));
    assert!(status.last().unwrap().contains("; 0 commands queued"), "{status:?}");
    assert!(notify.wait_for("WATCHDOG=1", Duration::from_secs(5)).is_ok(), "no watchdog ping while healthy");
    let operator = gw.token("watchdog-test", "operator");

    // Hold the write lock, then make the daemon write: its writer waits on the lock (up to its 5 s busy timeout).
    let db = rusqlite::Connection::open(gw.state.join("xyte-edge.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    let url = format!("http://{}/v1/webhook", gw.local);
    let writer = std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut r = agent
            .post(&url)
            .header("Authorization", &format!("Bearer {operator}"))
            .send(r#"{"type":"watchdog.test","id":"w1"}"#.as_bytes())
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    });
    let stale = "heartbeat stale; withholding the watchdog ping";
    let first = gw.daemon.wait_line(stale, Duration::from_secs(10));
    assert!(first.contains("store-writer"), "{first}");
    // Between two consecutive withholding ticks the loop sent no ping.
    notify.drain();
    let seen = gw.daemon.output.iter().filter(|l| l.contains(stale)).count();
    gw.daemon.wait_lines(stale, seen + 1, Duration::from_secs(5));
    let pings: Vec<String> = notify.drain().into_iter().filter(|m| m.lines().any(|l| l == "WATCHDOG=1")).collect();
    assert!(pings.is_empty(), "pinged while the store writer was stuck: {pings:?}");

    db.execute_batch("ROLLBACK").unwrap();
    let (status, body) = writer.join().unwrap();
    eprintln!("webhook while the database was locked: {status} {body}");
    assert!(notify.wait_for("WATCHDOG=1", Duration::from_secs(10)).is_ok(), "the watchdog ping did not resume");
}

/// After a restart while Xyte is unreachable (a reboot during a WAN outage), systemd's `STATUS=` and `xyte-edge
/// status` tell what the database holds — the cached devices and when they came — not "nothing cached yet" / "never".
#[test]
fn a_restart_while_xyte_is_unreachable_reports_the_cache_it_serves() {
    use xyte_edge::sim::{self, SimOptions};
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let opts = SimOptions { devices: 12, churn: false, seed: 1, ..Default::default() };
    let xyte = rt.block_on(sim::spawn("127.0.0.1:0".parse().unwrap(), opts)).expect("simulator starts");
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("mcp.sock");
    let serve = |notify: &NotifySocket| {
        let mut cmd = bin();
        cmd.arg("serve")
            .env("XYTE_STATE_DIR", dir.path().join("state"))
            .env("XYTE_MCP_SOCKET", &socket)
            .env("XYTE_HTTP_LISTEN", "")
            .env("XYTE_HTTP_LOCAL_LISTEN", "127.0.0.1:0")
            .env("XYTE_BASE_URL", xyte.base_url())
            .env("XYTE_API_KEY", xyte.sim.api_key())
            .env("XYTE_POLL_INTERVAL", "1s")
            .env("XYTE_REQUEST_TIMEOUT", "2s")
            .env("XYTE_LOG_FORMAT", "text")
            .env("NOTIFY_SOCKET", &notify.path);
        Daemon::spawn(cmd)
    };
    let notify = NotifySocket::bind(dir.path());
    let mut first = serve(&notify);
    first.wait_line("Xyte reachable", Duration::from_secs(30));
    first.signal(Signal::SIGTERM);
    assert_eq!(first.wait_exit(Duration::from_secs(10)).0, Some(0));

    xyte.sim.set_faults("error_rate=1".parse().unwrap());
    notify.drain();
    let mut second = serve(&notify);
    let seen = notify
        .wait_until(|l| l.starts_with("STATUS=Xyte UNREACHABLE, serving the cache from 20"), Duration::from_secs(60));
    let seen = seen.unwrap_or_else(|seen| panic!("no STATUS= about the cache: {seen:?}"));
    // The cached devices too, not only when they came.
    let status = seen.iter().flat_map(|m| m.lines()).rfind(|l| l.starts_with("STATUS=Xyte UNREACHABLE")).unwrap();
    assert!(status.contains(" (12 devices); "), "{status}");
    assert!(!seen.iter().any(|l| l.contains("nothing cached yet")), "{seen:?}");
    let out = bin().args(["status", "--socket"]).arg(&socket).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("UNREACHABLE") && text.contains("cache:      12 devices, last sync "), "{text}");
    assert!(!text.contains("never"), "{text}");
    second.signal(Signal::SIGTERM);
    assert_eq!(second.wait_exit(Duration::from_secs(10)).0, Some(0));
}

/// A database written by a newer release (after a downgrade): `serve` refuses to start with exit 78 and says what to
/// do, and the file is left exactly as it was.
#[test]
fn a_database_from_a_newer_release_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let db = state.join("xyte-edge.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE from_the_future (x); PRAGMA user_version=99;").unwrap();
    drop(c);
    let before = std::fs::read(&db).unwrap();
    let out = bin()
        .arg("serve")
        .env("XYTE_STATE_DIR", &state)
        .env("XYTE_API_KEY", "k")
        .env("XYTE_BASE_URL", "http://127.0.0.1:9/core/v1/organization")
        .env("XYTE_MCP_SOCKET", dir.path().join("mcp.sock"))
        .env("XYTE_HTTP_LISTEN", "")
        .env("XYTE_HTTP_LOCAL_LISTEN", "127.0.0.1:0")
        .env("XYTE_LOG_FORMAT", "text")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("schema version 99, newer than this xyte-edge understands")
            && stderr.contains("install the newer version again or restore a backup"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&db).unwrap(), before, "the newer release's database was changed");
    assert!(!dir.path().join("mcp.sock").exists(), "nothing else was started");
}
