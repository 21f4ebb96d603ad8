//! `xyte-edge diagnose` as an operator runs it: against a running daemon (the real binary on the simulator) the
//! bundle has every section with real content and none of the secrets — the Xyte key, the webhook secret, the alert
//! channels' secrets, a LAN token that reached the journal; with the daemon stopped it is still written, says the
//! daemon is not running and still has the database's statistics. `journalctl` and `systemctl` are stand-ins on
//! `PATH` (a test machine has no journal for the unit), then absent.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::json;
use xyte_edge::sim::{self, SimOptions};

const WEBHOOK_SECRET: &str = "gateway-webhook-secret-5d1c0a77";
const ALERT_WEBHOOK_SECRET: &str = "itsm-hmac-secret-93be41f2";
const SLACK_URL: &str = "https://hooks.slack.com/services/T0000/B0000/slack-secret-path-6a0f";

/// The daemon's settings, given to `serve` and `diagnose` alike (as the packaged unit and an admin's shell share
/// the configuration file). The loopback listener has a fixed port: `diagnose` must know where to ask.
fn configure(cmd: &mut Command, dir: &Path, base_url: &str, api_key: &str, port: u16) {
    cmd.env("XYTE_STATE_DIR", dir.join("state"))
        .env("XYTE_MCP_SOCKET", dir.join("mcp.sock"))
        .env("XYTE_ALERTS_FILE", dir.join("alerts.json"))
        .env("XYTE_PRESETS_FILE", dir.join("presets.json"))
        .env("XYTE_HTTP_LISTEN", "")
        .env("XYTE_HTTP_LOCAL_LISTEN", format!("127.0.0.1:{port}"))
        .env("XYTE_BASE_URL", base_url)
        .env("XYTE_API_KEY", api_key)
        .env("XYTE_WEBHOOK_SECRET", WEBHOOK_SECRET)
        .env("XYTE_POLL_INTERVAL", "1s")
        .env("XYTE_LOG_FORMAT", "text");
}

/// Runs `diagnose --to FILE` with `path` as `PATH`; returns the exit code, stdout and the file's bytes and mode.
fn diagnose(mut cmd: Command, path: &Path, file: &Path) -> (Option<i32>, String, Vec<u8>, u32) {
    let out = cmd.args(["diagnose", "--to"]).arg(file).env("PATH", path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
    (out.status.code(), stdout, std::fs::read(file).unwrap(), mode)
}

/// The bundle's sections: each heading (a line underlined with `=`) and the text under it.
fn sections(text: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<(String, String)> = vec![];
    let mut i = 0;
    while i < lines.len() {
        let underline = lines.get(i + 1).is_some_and(|u| !u.is_empty() && u.chars().all(|c| c == '='));
        if underline && lines[i].chars().count() == lines[i + 1].chars().count() {
            out.push((lines[i].to_string(), String::new()));
            i += 2;
            continue;
        }
        if let Some((_, body)) = out.last_mut() {
            body.push_str(lines[i]);
            body.push('\n');
        }
        i += 1;
    }
    out
}

fn section<'a>(all: &'a [(String, String)], title: &str) -> &'a str {
    let found = all.iter().find(|(t, _)| t.starts_with(title));
    &found.unwrap_or_else(|| panic!("no section {title:?} in {all:#?}")).1
}

fn executable(path: &Path, script: &str) {
    std::fs::write(path, script).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn the_bundle_has_every_section_and_no_secret_with_the_daemon_running_or_stopped() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let opts = SimOptions { devices: 12, churn: false, ..Default::default() };
    let xyte = rt.block_on(sim::spawn("127.0.0.1:0".parse().unwrap(), opts)).expect("simulator starts");
    let api_key = xyte.sim.api_key().to_string();
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let alerts = json!({
        "channels": {
            "itsm": {"type": "webhook", "url": "https://itsm.example.com/hooks/av", "secret": ALERT_WEBHOOK_SECRET},
            "chat": {"type": "slack", "url": SLACK_URL}
        },
        "rules": [{"name": "room device offline", "condition": "device_offline", "for": "10m", "channels": ["itsm", "chat"]}]
    });
    std::fs::write(dir.path().join("alerts.json"), alerts.to_string()).unwrap();
    let edge = || {
        let mut cmd = support::bin();
        configure(&mut cmd, dir.path(), &xyte.base_url(), &api_key, port);
        cmd
    };

    let mut daemon = support::Daemon::spawn({
        let mut cmd = edge();
        cmd.arg("serve");
        cmd
    });
    daemon.wait_line("HTTP listener ready", Duration::from_secs(30));
    daemon.wait_line("Xyte reachable", Duration::from_secs(30));
    let token = support::create_token(&dir.path().join("state"), "diag-viewer", "viewer");
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let used = agent
        .get(&format!("http://127.0.0.1:{port}/v1/devices"))
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap();
    assert_eq!(used.status().as_u16(), 200, "the token works");

    // Stand-ins for the journal and systemd: the journal holds the daemon's own log lines and one where the token
    // leaked (a client that logged its request); the unit is active.
    let tools = dir.path().join("tools");
    std::fs::create_dir(&tools).unwrap();
    let mut journal = daemon.output.join("\n");
    journal.push_str(&format!(
        "\n2025-01-01T00:00:00+0000 gw xyte-edge[42]: WARN curl -H 'Authorization: Bearer {token}'\n"
    ));
    std::fs::write(tools.join("journal.txt"), journal).unwrap();
    let journal_file = tools.join("journal.txt").display().to_string();
    executable(&tools.join("journalctl"), &format!("#!/bin/sh\necho \"args: $*\"\nexec /bin/cat '{journal_file}'\n"));
    executable(
        &tools.join("systemctl"),
        "#!/bin/sh\nprintf 'ActiveState=active\\nSubState=running\\nNRestarts=0\\n'\n",
    );

    let file = dir.path().join("bundle.txt");
    let (_, stdout, bytes, mode) = diagnose(edge(), &tools, &file);
    assert!(stdout.contains("bundle.txt"), "says where the bundle went: {stdout}");
    assert_eq!(mode, 0o600, "the bundle is private");
    let text = String::from_utf8(bytes.clone()).unwrap();
    let all = sections(&text);
    let version = section(&all, "Version and host");
    assert!(version.contains(&format!("xyte-edge {}", env!("CARGO_PKG_VERSION"))), "{version}");
    assert!(version.contains("host uptime:") && version.contains("time:"), "{version}");
    let config = section(&all, "Configuration");
    assert!(config.contains("XYTE_STATE_DIR") && config.contains(&dir.path().join("state").display().to_string()));
    assert!(config.contains("XYTE_API_KEY") && config.contains("Xyte credential: api key"), "{config}");
    let files = section(&all, "Room presets and alert rules files");
    assert!(files.contains("alerts.json: ") && files.contains("2 channels, 1 rules"), "{files}");
    let status = section(&all, "Daemon status");
    assert!(status.contains("\"devices\": 12") && status.contains("\"reachable\": true"), "{status}");
    let ready = section(&all, "Readiness");
    assert!(ready.contains("/readyz -> 200 OK") && ready.contains("\"ready\": true"), "{ready}");
    let metrics = section(&all, "Metrics");
    assert!(metrics.contains("/v1/metrics -> 200 OK") && metrics.contains("xyte_edge_outbox_depth"), "{metrics}");
    let db = section(&all, "Database");
    for expected in ["xyte-edge.db: ", "layout: schema version ", "cache rows by resource: ", "device 12", "events: "] {
        assert!(db.contains(expected), "{expected:?} missing:\n{db}");
    }
    assert!(db.contains("tokens: 1 (1 active, 0 revoked, 0 expired): diag-viewer (viewer, active)"), "{db}");
    assert!(db.contains("quick_check: ok"), "{db}");
    let journal = section(&all, "Journal");
    assert!(journal.contains("args: -u xyte-edge -p warning --since -24h --no-pager -o short-iso -n 300"));
    assert!(journal.contains("Bearer xe_***") && journal.contains("Xyte reachable"), "{journal}");
    assert!(section(&all, "systemd unit").contains("ActiveState=active"));
    for secret in [api_key.as_str(), WEBHOOK_SECRET, ALERT_WEBHOOK_SECRET, SLACK_URL, "slack-secret-path", &token] {
        let leaked = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
        assert!(!leaked, "the bundle holds the secret {secret:?}:\n{text}");
    }

    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)).0, Some(0));
    let nothing = dir.path().join("empty-path");
    std::fs::create_dir(&nothing).unwrap();
    let file = dir.path().join("stopped.txt");
    let (_, _, bytes, mode) = diagnose(edge(), &nothing, &file);
    assert_eq!(mode, 0o600);
    let text = String::from_utf8(bytes).unwrap();
    let all = sections(&text);
    assert!(section(&all, "Daemon status").contains("is the daemon running?"), "{text}");
    assert!(section(&all, "Readiness").contains("the daemon is not running"), "{text}");
    assert!(section(&all, "Metrics").contains("the daemon is not running"), "{text}");
    let db = section(&all, "Database");
    assert!(db.contains("device 12") && db.contains("quick_check: ok"), "{db}");
    assert!(section(&all, "Journal").contains("journalctl is not installed here"), "{text}");
    assert!(section(&all, "systemd unit").contains("systemctl is not installed here"), "{text}");

    // `--to -`: the bundle on stdout, nothing else.
    let out = edge().args(["diagnose", "--to", "-"]).env("PATH", &nothing).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("xyte-edge support bundle"));
}
