//! `xyte-edge backup` and `restore` as an operator runs them, against the real binary: a backup taken while agents
//! queue commands is one consistent moment and restores on a fresh state directory with its tokens, outbox, event
//! log and TLS certificate; restore refuses while the daemon runs and refuses bad files with the reason, changing
//! nothing; secrets stay out unless asked for; configuration files come back without losing what is there; periodic
//! backups are skipped while nothing changed and only the newest are kept.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::signal::Signal;
use rusqlite::{Connection, OpenFlags};
use serde_json::json;
use support::{Gateway, Mcp, bin};

const WEBHOOK_SECRET: &str = "backup-test-webhook-secret-0c4e7d19";
/// The outbox may hold everything the load queues (the limits are not what this test is about).
const ROOMY_OUTBOX: [(&str, &str); 2] = [("XYTE_OUTBOX_MAX", "100000"), ("XYTE_OUTBOX_MAX_PER_DEVICE", "100000")];

/// A configuration directory as an admin keeps it: the config file (naming the state directory and a secret), and
/// room presets beside it.
fn etc(dir: &Path, state: &Path) -> PathBuf {
    let etc = dir.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    let conf = etc.join("xyte-edge.conf");
    std::fs::write(
        &conf,
        format!(
            "XYTE_STATE_DIR={}\nXYTE_WEBHOOK_SECRET={WEBHOOK_SECRET}\nXYTE_PRESETS_FILE={}\nXYTE_ALERTS_FILE={}\n",
            state.display(),
            etc.join("presets.json").display(),
            etc.join("alerts.json").display()
        ),
    )
    .unwrap();
    std::fs::write(etc.join("presets.json"), "{\"rooms\": {}}\n").unwrap();
    conf
}

fn run(args: &[&str], conf: &Path) -> Output {
    bin().args(args).arg("--config").arg(conf).output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn ids(db: &Path, query: &str) -> Vec<String> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut stmt = conn.prepare(query).unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0)).unwrap().map(Result::unwrap).collect()
}

fn mcp_socket(gw: &Gateway) -> PathBuf {
    gw.state.parent().unwrap().join("mcp.sock")
}

#[test]
fn a_backup_under_load_restores_on_a_fresh_state_directory() {
    let gw = Gateway::start(&ROOMY_OUTBOX);
    let viewer = gw.token("wall-panel", "viewer");
    let work = tempfile::tempdir().unwrap();
    let conf = etc(work.path(), &gw.state);

    // Load: an agent queues commands as fast as the daemon acknowledges them (each a FULL commit) while the
    // backups are taken.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (socket, stop) = (mcp_socket(&gw), stop.clone());
        std::thread::spawn(move || {
            let mut mcp = Mcp::connect(&socket);
            let devices = mcp.call("list_devices", json!({"limit": 8})).unwrap();
            let devices: Vec<String> =
                devices["devices"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_string()).collect();
            let mut acknowledged = vec![];
            while !stop.load(Ordering::Relaxed) && acknowledged.len() < 5000 {
                let device = &devices[acknowledged.len() % devices.len()];
                let task = mcp
                    .call("send_command_async", json!({"device_id": device, "command": "reboot"}))
                    .unwrap_or_else(|e| panic!("send_command_async: {e}"));
                acknowledged.push(task["task_id"].as_str().unwrap().to_string());
            }
            acknowledged
        })
    };
    support::poll("the load to start", Duration::from_secs(20), || {
        (ids(&gw.state.join("xyte-edge.db"), "SELECT task_id FROM tasks").len() >= 20).then_some(())
    });
    let plain = work.path().join("plain.backup");
    let secret = work.path().join("secret.backup");
    let out = run(&["backup", "--to", plain.to_str().unwrap()], &conf);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), plain.display().to_string());
    let out = run(&["backup", "--with-secrets", "--to", secret.to_str().unwrap()], &conf);
    assert!(out.status.success(), "{}", text(&out));

    // While the daemon runs, restore refuses (75) and names it; nothing is set aside.
    let out = run(&["restore", secret.to_str().unwrap()], &conf);
    assert_eq!(out.status.code(), Some(75), "{}", text(&out));
    assert!(text(&out).contains(&format!("another xyte-edge (pid {})", gw.daemon.pid)), "{}", text(&out));
    assert!(text(&out).contains("stop it first") && text(&out).contains("nothing was changed"), "{}", text(&out));

    // A second daemon on the same state directory stops at once (75), naming the first.
    let second = bin()
        .args(["serve", "--demo"])
        .env("XYTE_STATE_DIR", &gw.state)
        .env("XYTE_MCP_SOCKET", work.path().join("second.sock"))
        .env("XYTE_HTTP_LISTEN", "127.0.0.1:0")
        .env("XYTE_HTTP_LOCAL_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(75), "{}", text(&second));
    assert!(text(&second).contains(&format!("pid {}", gw.daemon.pid)), "{}", text(&second));

    stop.store(true, Ordering::Relaxed);
    let acknowledged = load.join().unwrap();
    gw.daemon.signal(Signal::SIGTERM);
    let mut gw = gw;
    assert_eq!(gw.daemon.wait_exit(Duration::from_secs(20)).0, Some(0));
    assert!(
        !std::fs::read_dir(&gw.state).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("before-restore"))
    );

    // Both copies are one moment of the outbox: every task in them was acknowledged, and more were acknowledged
    // after (the load went on while they were taken).
    for backup in [&plain, &secret] {
        let tasks = ids(backup, "SELECT task_id FROM tasks ORDER BY seq");
        assert!(!tasks.is_empty() && tasks.len() < acknowledged.len(), "{} of {}", tasks.len(), acknowledged.len());
        assert_eq!(tasks[..], acknowledged[..tasks.len()], "the copy is not a prefix of what was acknowledged");
        assert_eq!(std::fs::metadata(backup).unwrap().len() % 4096, 0);
    }
    // Secrets: in the one made with --with-secrets (and the TLS key with it), in no byte of the other.
    let bytes = |p: &Path| std::fs::read(p).unwrap();
    let has = |hay: &[u8], needle: &str| hay.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(!has(&bytes(&plain), WEBHOOK_SECRET) && !has(&bytes(&plain), "PRIVATE KEY"));
    assert!(has(&bytes(&secret), WEBHOOK_SECRET) && has(&bytes(&secret), "PRIVATE KEY"));

    // A fresh gateway: restore, then serve it.
    let fresh = tempfile::tempdir().unwrap();
    let fresh_state = fresh.path().join("state");
    let fresh_conf = etc(fresh.path(), &fresh_state);
    let out = run(&["restore", secret.to_str().unwrap()], &fresh_conf);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("there was no database before") && said.contains("tokens"), "{said}");
    assert!(said.contains("holds 2 configuration files; `--with-config` restores them"), "{said}");
    assert_eq!(
        std::fs::read(fresh_state.join("tls/key.pem")).unwrap(),
        std::fs::read(gw.state.join("tls/key.pem")).unwrap(),
        "the TLS key came back"
    );
    let restored_tasks = ids(&secret, "SELECT task_id FROM tasks ORDER BY seq");
    let restored_events: i64 =
        Connection::open(&secret).unwrap().query_row("SELECT MAX(id) FROM events", [], |r| r.get(0)).unwrap();

    let state_env = fresh_state.display().to_string();
    let mut env = ROOMY_OUTBOX.to_vec();
    env.push(("XYTE_STATE_DIR", &state_env));
    let gw2 = Gateway::start(&env);
    // The same certificate, so LAN clients that trust it go on trusting it; the same tokens.
    assert_eq!(std::fs::read(&gw2.cert).unwrap(), std::fs::read(&gw.cert).unwrap());
    let agent = Gateway::agent(&gw2.cert);
    let resp = agent.get(&gw2.url("/v1/devices")).header("Authorization", &format!("Bearer {viewer}")).call().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut mcp = Mcp::connect(&mcp_socket(&gw2));
    for task in [restored_tasks.first().unwrap(), restored_tasks.last().unwrap()] {
        let status = mcp.call("get_task_status", json!({"task_id": task})).unwrap();
        assert_eq!(status["task_id"], json!(task), "{status}");
    }
    let page = mcp.call("list_events", json!({"after_id": 0, "limit": 1})).unwrap();
    assert_eq!(page["events"][0]["id"], 1, "the event log starts where it started: {page}");
    let newest = mcp.call("list_events", json!({"after_id": restored_events - 1, "limit": 5})).unwrap();
    assert_eq!(newest["events"][0]["id"], restored_events, "{newest}");
    drop(gw2);

    // Bad files: the reason, exit 65, nothing changed.
    let db = fresh_state.join("xyte-edge.db");
    let before = std::fs::read(&db).unwrap();
    let truncated = work.path().join("truncated.backup");
    std::fs::write(&truncated, &bytes(&plain)[..bytes(&plain).len() / 3]).unwrap();
    let out = run(&["restore", truncated.to_str().unwrap()], &fresh_conf);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
    assert!(text(&out).contains("is truncated") && text(&out).contains("nothing was changed"), "{}", text(&out));
    let out = run(&["restore", conf.to_str().unwrap()], &fresh_conf);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
    assert!(text(&out).contains("not a xyte-edge backup: it is not an SQLite database"), "{}", text(&out));
    assert_eq!(std::fs::read(&db).unwrap(), before);

    // --with-config: the first gateway's configuration file was edited since; restoring the backup with secrets
    // puts it back and keeps the edit aside; the one without secrets never replaces it.
    std::fs::write(&conf, format!("XYTE_STATE_DIR={}\nXYTE_ENV=edited\n", gw.state.display())).unwrap();
    let out = run(&["restore", plain.to_str().unwrap(), "--with-config"], &conf);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("lacks its secrets"), "{}", text(&out));
    assert!(std::fs::read_to_string(&conf).unwrap().contains("XYTE_ENV=edited"));
    let out = run(&["restore", secret.to_str().unwrap(), "--with-config"], &conf);
    assert!(out.status.success(), "{}", text(&out));
    assert!(std::fs::read_to_string(&conf).unwrap().contains(WEBHOOK_SECRET), "{}", text(&out));
    let aside = std::fs::read_dir(conf.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("xyte-edge.conf.before-restore-"))
        .count();
    assert_eq!(aside, 1, "{}", text(&out));
    // The database the restores replaced are kept, each under its own name.
    let kept = std::fs::read_dir(&gw.state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("xyte-edge.db.before-restore-") && !n.ends_with("-wal") && !n.ends_with("-shm"))
        .count();
    assert!(kept >= 1, "no database kept aside");
}

#[test]
fn periodic_backups_are_skipped_while_nothing_changes_and_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let backups_env = backups.display().to_string();
    let mut gw = Gateway::start(&[
        ("XYTE_BACKUP_DIR", &backups_env),
        ("XYTE_BACKUP_INTERVAL", "1s"),
        ("XYTE_BACKUP_KEEP", "2"),
        // One sync at start, then nothing changes unless the test changes it.
        ("XYTE_POLL_INTERVAL", "1d"),
    ]);
    let files = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&backups)
            .map(|r| r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        names.sort();
        names
    };
    let written = |gw: &Gateway| gw.daemon.output.iter().filter(|l| l.contains("backup written")).count();
    let skipped = |gw: &Gateway| gw.daemon.output.iter().filter(|l| l.contains("periodic backup skipped")).count();
    gw.daemon.wait_lines("periodic backup skipped", 2, Duration::from_secs(30));
    let first = written(&gw);
    assert!((1..=2).contains(&first), "{:?}", gw.daemon.output);
    assert_eq!(files().len(), first, "{:?}", files());

    // A change by another process (a token created from the command line) is seen and backed up, once.
    for (n, name) in ["one", "two"].into_iter().enumerate() {
        let skips = skipped(&gw);
        gw.token(name, "viewer");
        gw.daemon.wait_lines("backup written", first + n + 1, Duration::from_secs(30));
        gw.daemon.wait_lines("periodic backup skipped", skips + 1, Duration::from_secs(30));
        assert_eq!(written(&gw), first + n + 1, "{:?}", gw.daemon.output);
    }
    // KEEP=2: the newest two, each a valid backup with the second token.
    let kept = files();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(kept.iter().all(|n| n.starts_with("xyte-edge-") && n.ends_with(".backup")), "{kept:?}");
    let newest = backups.join(kept.last().unwrap());
    assert_eq!(ids(&newest, "SELECT name FROM tokens WHERE name = 'two'"), ["two"]);
    let out =
        bin().args(["restore", newest.to_str().unwrap()]).env("XYTE_STATE_DIR", dir.path().join("x")).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // The metrics say when the last one was written, and that none failed.
    let metrics = Gateway::agent(&gw.cert)
        .get(&format!("http://{}/v1/metrics", gw.local))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let value = |name: &str| -> f64 {
        let line = metrics.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name}:\n{metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((now - value("xyte_edge_backup_last_success_seconds ")).abs() < 60.0, "{metrics}");
    assert_eq!(value("xyte_edge_backup_failures_total "), 0.0);
}
