//! `serve --demo` as a user runs it: reaches READY=1 on a real notify socket, syncs the simulator's devices into the
//! SQLite cache, and exits 0 within 5 s of SIGTERM after STOPPING=1.

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
    let cached = store.read_blocking(|conn| xyte_edge::store::cache::list(conn, "device")).expect("read the cache");
    assert_eq!(cached.len(), devices);
    assert!(cached.iter().all(|e| e.body.get("id").is_some() && e.body.get("status").is_some()));
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
