//! Plugins (edge resilience): one plugin that crashes at start, one that hangs, one that answers
//! the hello with garbage, one that speaks another plugin API, one that reads slowly, and one that works. The
//! daemon keeps serving throughout, the working plugin gets every event and the warn+ log records, the slow one's
//! drops and the others' restarts show in the metrics, and shutdown stops them all.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Gateway;

mod support;

const WEBHOOKS: usize = 3000;

fn plugin(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Polls `check` every 100 ms until it returns Some, or panics with `what` after `timeout`.
fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

/// One sample of a metric from the loopback listener (0 when not exposed yet).
fn metric(agent: &ureq::Agent, gw: &Gateway, name: &str, plugin: &str) -> f64 {
    let mut resp = agent.get(format!("http://{}/v1/metrics", gw.local)).call().unwrap();
    let text = resp.body_mut().read_to_string().unwrap();
    let prefix = format!("{name}{{plugin=\"{plugin}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map(|v| v.trim().parse().unwrap()).unwrap_or(0.0)
}

fn good_lines(out: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    // Only complete lines: the plugin may be mid-write.
    let complete = text.rsplit_once('\n').map(|(done, _)| done).unwrap_or("");
    complete.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
}

#[test]
fn misbehaving_plugins_never_stop_the_daemon_and_a_good_one_gets_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("good.out");
    let plugins = [
        plugin(
            dir.path(),
            "good",
            &format!(
                "#!/usr/bin/env python3\nimport sys\nsys.stdin.readline()\nprint('{{\"plugin_api_version\":\"1\"}}', \
                 flush=True)\nwith open({out:?}, 'a') as out:\n    for line in sys.stdin:\n        out.write(line)\n        \
                 out.flush()\n",
                out = out.display().to_string()
            ),
        ),
        plugin(
            dir.path(),
            "slow",
            "#!/bin/sh\nread hello\necho '{\"plugin_api_version\":\"1\"}'\nwhile read line; do sleep 0.05; done\n",
        ),
        plugin(dir.path(), "crash", "#!/bin/sh\necho 'crashing on purpose' >&2\nexit 3\n"),
        plugin(dir.path(), "hang", "#!/bin/sh\nexec sleep 601.4242\n"),
        plugin(dir.path(), "garbage", "#!/bin/sh\nhead -c 300 /dev/urandom\necho\nexec sleep 601.4242\n"),
        plugin(
            dir.path(),
            "future",
            "#!/bin/sh\nread hello\necho '{\"plugin_api_version\":\"99\"}'\nexec sleep 601.4242\n",
        ),
    ];
    let list = plugins.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(",");
    let presets = dir.path().join("presets.json");
    let mut gw = Gateway::start(&[("XYTE_PLUGINS", list.as_str()), ("XYTE_PRESETS_FILE", presets.to_str().unwrap())]);
    let agent = Gateway::agent(&gw.cert);
    let operator = gw.token("plugin-test", "operator");

    // Each failure is named in the log, and failing plugins are restarted with backoff.
    gw.daemon.wait_line("plugin: crashing on purpose", Duration::from_secs(10));
    gw.daemon.wait_line("exited (exit status: 3) before the handshake; restarting in 1s", Duration::from_secs(10));
    gw.daemon.wait_line("its answer to the hello is not {\"plugin_api_version\":\"1\"}", Duration::from_secs(10));
    gw.daemon.wait_line("it speaks plugin API \"99\" but this daemon speaks 1", Duration::from_secs(10));
    gw.daemon.wait_line("no answer to the hello within 5s", Duration::from_secs(15));
    wait_for("both working plugins ready", Duration::from_secs(10), || {
        let ready = |name: &str| gw.daemon.output.iter().any(|l| l.contains("plugin ready") && l.contains(name));
        (ready("plugin=\"good\"") && ready("plugin=\"slow\"")).then_some(())
    });

    // A burst of events, more than the slow plugin's queue holds, while the daemon keeps answering reads.
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut last_id = 0;
    for i in 0..WEBHOOKS {
        let body = format!(r#"{{"type":"device.telemetry","id":"plugin-burst-{i}","data":{{"n":{i}}}}}"#);
        let mut resp = agent
            .post(format!("http://{}/v1/webhook", gw.local))
            .header("Authorization", &format!("Bearer {operator}"))
            .header("Content-Type", "application/json")
            .send(body.as_bytes())
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202, "{}", resp.body_mut().read_to_string().unwrap());
        let accepted: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
        last_id = accepted["event_id"].as_i64().unwrap_or_else(|| panic!("no event_id in {accepted}"));
        if i % 100 == 0 {
            let t = Instant::now();
            let mut resp = agent
                .get(format!("http://{}/v1/devices", gw.local))
                .header("Authorization", &format!("Bearer {operator}"))
                .call()
                .unwrap();
            assert_eq!(resp.status().as_u16(), 200, "{}", resp.body_mut().read_to_string().unwrap());
            slowest = slowest.max(t.elapsed());
        }
    }
    eprintln!(
        "plugins: {WEBHOOKS} webhook events in {:?}; slowest device list meanwhile {slowest:?}",
        started.elapsed()
    );

    // The good plugin sees every one of them, in order, as event lines.
    let lines = wait_for("the good plugin to receive the last event", Duration::from_secs(30), || {
        let lines = good_lines(&out);
        lines.iter().any(|l| l["id"].as_i64() == Some(last_id)).then_some(lines)
    });
    let burst: Vec<i64> = lines
        .iter()
        .filter(|l| l["type"] == "event" && l["kind"] == "webhook.received")
        .filter(|l| l["data"]["id"].as_str().is_some_and(|id| id.starts_with("plugin-burst-")))
        .map(|l| l["id"].as_i64().unwrap())
        .collect();
    assert_eq!(burst.len(), WEBHOOKS, "the good plugin must get every event");
    assert!(burst.windows(2).all(|w| w[0] < w[1]), "events arrive in order");

    // A log record at warn or worse reaches it too: a broken presets file on reload is logged as an error.
    std::fs::write(&presets, "{ broken").unwrap();
    gw.daemon.signal(nix::sys::signal::Signal::SIGHUP);
    let log = wait_for("the reload error as a log line", Duration::from_secs(10), || {
        good_lines(&out).into_iter().find(|l| l["type"] == "log" && l["message"].as_str().unwrap().contains("presets"))
    });
    assert_eq!(log["level"], "ERROR", "{log}");
    assert!(log["ts"].is_string() && log["target"].is_string(), "{log}");

    // The metrics tell the story: drops for the slow one, none for the good one, restarts for the failing ones.
    let dropped = wait_for("drops counted for the slow plugin", Duration::from_secs(20), || {
        let d = metric(&agent, &gw, "xyte_edge_plugin_dropped_total", "slow");
        (d > 0.0).then_some(d)
    });
    assert_eq!(metric(&agent, &gw, "xyte_edge_plugin_dropped_total", "good"), 0.0);
    assert_eq!(metric(&agent, &gw, "xyte_edge_plugin_up", "good"), 1.0);
    for name in ["crash", "hang", "garbage", "future"] {
        assert!(metric(&agent, &gw, "xyte_edge_plugin_restarts_total", name) >= 1.0, "{name} restarted");
        assert_eq!(metric(&agent, &gw, "xyte_edge_plugin_up", name), 0.0, "{name} is not up");
    }
    let crash_restarts = metric(&agent, &gw, "xyte_edge_plugin_restarts_total", "crash");
    eprintln!("plugins: slow plugin dropped {dropped} lines; crashing plugin restarted {crash_restarts} times");
    assert!(crash_restarts <= 6.0, "backoff: {crash_restarts} restarts is too many for this short a run");

    // Shutdown stops every plugin process with the daemon.
    gw.daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(gw.daemon.wait_exit(Duration::from_secs(15)).0, Some(0));
    let needle = dir.path().to_string_lossy().into_owned();
    wait_for("no plugin process left", Duration::from_secs(5), || {
        let left: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains(&needle) || c.contains("sleep 601.4242"))
            .collect();
        left.is_empty().then_some(())
    });
}
