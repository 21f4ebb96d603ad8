//! Upgrades proven from the released schema (issue 28): `tests/fixtures/db-0.1.0/xyte-edge.db` was written by
//! xyte-edge 0.1.0 (schema version 1; `tests/fixtures/make-db-0.1.0.sh`). The current `serve` opens a copy of it,
//! migrates it in one transaction and serves what 0.1.0 left: its tokens with their roles, its queued commands
//! (delivered once, in order), its finished tasks, its event log (new events numbered after it) and its agents'
//! context. A migration that fails half-way leaves the file exactly at version 1, and the fixture itself is checked
//! against its manifest, so a regenerated fixture that lost what the tests rely on fails here, loudly.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use rusqlite::{Connection, OpenFlags};
use serde_json::{Value, json};
use support::{Daemon, Gateway, poll};
use xyte_edge::sim::{self, SimOptions};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/db-0.1.0");
const DB: &str = xyte_edge::store::DB_FILE;

fn manifest() -> Value {
    let text = std::fs::read_to_string(Path::new(FIXTURE).join("manifest.json")).expect("the fixture's manifest");
    serde_json::from_str(&text).expect("manifest.json is JSON")
}

/// The schema version the current code migrates to: that of a database it creates.
fn current_version() -> i64 {
    let dir = tempfile::tempdir().unwrap();
    let store = xyte_edge::store::Store::open(dir.path(), Default::default()).unwrap();
    let version = store.read_blocking(|c| Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?)).unwrap();
    store.close();
    version
}

/// A copy of the fixture database as `state/xyte-edge.db` under `dir`, as an installation of 0.1.0 has it.
fn install_fixture(dir: &Path) -> PathBuf {
    let state = dir.join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::copy(Path::new(FIXTURE).join(DB), state.join(DB)).expect("copy the fixture database");
    state
}

fn read_only(db: &Path) -> Connection {
    Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
}

fn user_version(c: &Connection) -> i64 {
    c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap()
}

/// Every schema object (type, name) with its SQL: what a rolled-back upgrade must leave exactly as it was.
fn schema(c: &Connection) -> BTreeSet<(String, String, Option<String>)> {
    let mut stmt = c.prepare("SELECT type, name, sql FROM sqlite_master").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect()
}

fn columns(c: &Connection, table: &str) -> Vec<String> {
    let mut stmt = c.prepare(&format!("SELECT name FROM pragma_table_info('{table}')")).unwrap();
    stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
}

/// `serve` on `state` against `base_url`, with both listeners on ephemeral loopback ports (the TLS one when `tls`).
fn serve(dir: &Path, state: &Path, base_url: &str, tls: bool) -> Daemon {
    let mut cmd = support::bin();
    cmd.arg("serve")
        .env("XYTE_STATE_DIR", state)
        .env("XYTE_MCP_SOCKET", dir.join("mcp.sock"))
        .env("XYTE_PRESETS_FILE", dir.join("presets.json"))
        .env("XYTE_HTTP_LISTEN", if tls { "127.0.0.1:0" } else { "" })
        .env("XYTE_HTTP_LOCAL_LISTEN", "127.0.0.1:0")
        .env("XYTE_BASE_URL", base_url)
        .env("XYTE_API_KEY", "demo-key")
        // The poller notices at once when Xyte is back, and the forwarder then retries without waiting out a backoff.
        .env("XYTE_POLL_INTERVAL", "1")
        // The fixture's events are as old as the fixture: kept, not pruned at the first start.
        .env("XYTE_EVENT_RETENTION_DAYS", "3650")
        .env("XYTE_LOG_FORMAT", "text");
    Daemon::spawn(cmd)
}

/// A bearer-token client of the daemon's LAN HTTPS listener, trusting its generated certificate.
struct Lan {
    agent: ureq::Agent,
    base: String,
}

impl Lan {
    fn call(&self, token: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {token}");
        let resp = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            (_, body) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .send(body.unwrap_or(&json!({})).to_string()),
        };
        let mut resp = resp.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    fn get(&self, token: &str, path: &str) -> (u16, Value) {
        self.call(token, "GET", path, None)
    }

    fn tool(&self, token: &str, tool: &str, args: Value) -> (u16, Value) {
        self.call(token, "POST", &format!("/v1/tools/{tool}"), Some(&args))
    }

    /// A task as `GET /v1/tasks/{id}` shows it.
    fn task(&self, token: &str, id: &str) -> Value {
        let (status, task) = self.get(token, &format!("/v1/tasks/{id}"));
        assert_eq!(status, 200, "task {id}: {task}");
        task
    }

    /// The whole event log, oldest first, page by page.
    fn events(&self, token: &str) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        loop {
            let after = out.last().map(|e| e["id"].as_i64().unwrap()).unwrap_or(0);
            let (status, page) = self.get(token, &format!("/v1/events?after_id={after}&limit=500"));
            assert_eq!(status, 200, "{page}");
            let list = page["events"].as_array().cloned().unwrap_or_default();
            let full = list.len() == 500;
            out.extend(list);
            if !full {
                return out;
            }
        }
    }
}

/// `xyte_edge_outbox_depth` as the loopback listener's metrics say (no token needed there).
fn metric_outbox_depth(local: &str) -> i64 {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let text = agent.get(format!("http://{local}/v1/metrics")).call().unwrap().body_mut().read_to_string().unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("xyte_edge_outbox_depth"))
        .unwrap_or_else(|| panic!("no xyte_edge_outbox_depth in the metrics:\n{text}"));
    line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as i64
}

/// `(device, n)` rows of `outbox_depth` (migration 2; '' is the total), zero rows left out.
fn depth_rows(c: &Connection) -> BTreeMap<String, i64> {
    let mut stmt = c.prepare("SELECT device_id, n FROM outbox_depth WHERE n <> 0").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}

fn token_of<'a>(m: &'a Value, name: &str) -> &'a str {
    m["tokens"].as_array().unwrap().iter().find(|t| t["name"] == name).expect("a token in the manifest")["token"]
        .as_str()
        .unwrap()
}

#[test]
fn the_released_database_is_migrated_and_served() {
    let m = manifest();
    let current = current_version();
    let dir = tempfile::tempdir().unwrap();
    let state = install_fixture(dir.path());
    let db = state.join(DB);
    {
        let c = Connection::open(&db).unwrap();
        assert_eq!(user_version(&c), 1, "the fixture is 0.1.0's schema");
        // 0.1.0 gave queued commands at most 7 days (XYTE_COMMAND_TTL); the fixture's have long expired by now. An
        // upgrade restarts the daemon seconds after the old one stopped: move their deadline to an hour from now,
        // as it would be then. Nothing else in the file is touched.
        let in_an_hour = xyte_edge::store::now_ms() + 3_600_000;
        let moved = c.execute("UPDATE tasks SET expires_at = ?1 WHERE state = 'queued'", [in_an_hour]).unwrap();
        assert_eq!(moved, m["open_tasks"].as_array().unwrap().len());
    }

    // The simulator the fixture was made against (same devices and seed), down at first: what the migration made of
    // the queued commands is seen before any of them can be delivered.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let options = SimOptions {
        devices: m["sim"]["devices"].as_u64().unwrap() as usize,
        seed: m["sim"]["seed"].as_u64().unwrap(),
        churn: false,
        ..Default::default()
    };
    let mut sim = rt.block_on(sim::spawn("127.0.0.1:0".parse().unwrap(), options)).unwrap();
    let ids: Vec<String> = m["sim"]["device_ids"].as_array().unwrap().iter().map(|v| v.to_string()).collect();
    let sim_ids: Vec<String> = sim.sim.device_ids().iter().map(|d| json!(d).to_string()).collect();
    assert_eq!(sim_ids, ids, "the simulator generates the fixture's devices");
    rt.block_on(sim.stop());

    let mut daemon = serve(dir.path(), &state, &sim.base_url(), true);
    let lan_addr = daemon.listener(true, Duration::from_secs(30));
    let local = daemon.listener(false, Duration::from_secs(5));
    daemon.wait_line("TLS certificate", Duration::from_secs(5));
    let lan = Lan {
        agent: Gateway::agent(&state.join("tls/cert.pem")),
        base: format!("https://localhost:{}", lan_addr.rsplit(':').next().unwrap()),
    };

    // Migrated: the current version; migration 2 counted the queued tasks (the total and per device), migration 3
    // marked the one whose delivery had an unknown outcome, and the metrics read the same count.
    let open: Vec<&Value> = m["open_tasks"].as_array().unwrap().iter().collect();
    let unknown = m["unknown_outcome_task"].as_str().unwrap();
    {
        let c = read_only(&db);
        assert_eq!(user_version(&c), current, "migrated from 1 to {current}");
        let mut want = BTreeMap::from([(String::new(), open.len() as i64)]);
        for t in &open {
            *want.entry(t["device_id"].as_str().unwrap().to_string()).or_default() += 1;
        }
        assert_eq!(depth_rows(&c), want, "outbox_depth backfilled from the queued tasks");
        let mut stmt = c.prepare("SELECT task_id FROM tasks WHERE outcome_unknown = 1").unwrap();
        let marked: Vec<String> = stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
        assert_eq!(marked, [unknown], "outcome_unknown set for the task 0.1.0 marked 'unknown outcome' only");
    }
    assert_eq!(metric_outbox_depth(&local), open.len() as i64);

    // Every token of 0.1.0 authenticates with its role; the revoked one does not.
    let devices = &m["sim"]["device_ids"];
    let (d0, d4) = (devices[0].as_str().unwrap(), devices[4].as_str().unwrap());
    let delete_dry = json!({"device_id": d0, "confirm": d0, "dry_run": true});
    for t in m["tokens"].as_array().unwrap() {
        let (name, token, role) =
            (t["name"].as_str().unwrap(), t["token"].as_str().unwrap(), t["role"].as_str().unwrap());
        let (status, body) = lan.get(token, "/v1/devices");
        if t["revoked"] == true {
            assert_eq!(status, 401, "{name} was revoked by 0.1.0: {body}");
            continue;
        }
        assert_eq!(status, 200, "{name} reads: {body}");
        // A token whose 0.1.0 context names a space lists that space's devices by default (the context is used).
        let total = body["total"].as_u64().unwrap();
        match m["context"][format!("token:{name}")]["space_id"].as_str() {
            None => assert_eq!(total, m["sim"]["devices"].as_u64().unwrap(), "{name}: {body}"),
            Some(space) => {
                assert!(total > 0 && total < m["sim"]["devices"].as_u64().unwrap(), "{name}: {body}");
                let spaces: Vec<&Value> = body["devices"].as_array().unwrap().iter().map(|d| &d["space_id"]).collect();
                assert!(!spaces.is_empty() && spaces.iter().all(|s| s.as_str() == Some(space)), "{name}: {body}");
            }
        }
        let (status, body) = lan.tool(token, "delete_device", delete_dry.clone());
        assert_eq!(status, if role == "admin" { 200 } else { 403 }, "{name} ({role}) deletes (dry run): {body}");
        if role == "viewer" {
            let (status, body) = lan.tool(token, "send_command_async", json!({"device_id": d0, "command": "reboot"}));
            assert_eq!(status, 403, "{name} ({role}) cannot send a command: {body}");
        }
    }
    // An operator can; the command queues behind the fixture's two for the same device.
    let operator = token_of(&m, "fx-operator");
    let args = json!({"device_id": d4, "command": "reboot", "friendly_name": "after-upgrade"});
    let (status, sent) = lan.tool(operator, "send_command_async", args);
    assert_eq!((status, sent["state"].as_str()), (200, Some("queued")), "{sent}");
    let new_task = sent["task_id"].as_str().unwrap().to_string();
    assert_eq!(metric_outbox_depth(&local), open.len() as i64 + 1);

    // The agents' context, as 0.1.0 stored it: each token's own, and any principal's for an admin over MCP.
    for (principal, want) in m["context"].as_object().unwrap() {
        let name = principal.strip_prefix("token:").unwrap();
        let (status, got) = lan.tool(token_of(&m, name), "set_context", json!({}));
        assert_eq!((status, &got["context"]), (200, want), "{principal}: {got}");
    }
    let mut mcp = support::Mcp::connect(&dir.path().join("mcp.sock"));
    let read = mcp.request("resources/read", json!({"uri": "user://token:fx-admin/preferences"}));
    let text = read["result"]["contents"][0]["text"].as_str().unwrap_or_else(|| panic!("{read}"));
    let prefs: Value = serde_json::from_str(text).unwrap();
    assert_eq!(prefs["context"], m["context"]["token:fx-admin"], "{prefs}");

    // The old event log, in order and complete; everything new is numbered after it.
    let viewer = token_of(&m, "fx-viewer");
    let events = lan.events(viewer);
    let max_id = m["events"]["max_id"].as_i64().unwrap();
    let old: Vec<&Value> = events.iter().filter(|e| e["id"].as_i64().unwrap() <= max_id).collect();
    assert_eq!(old.len() as u64, m["events"]["count"].as_u64().unwrap(), "every event of 0.1.0 is listed");
    assert!(events.windows(2).all(|w| w[0]["id"].as_i64() < w[1]["id"].as_i64()), "oldest first");
    let mut kinds = BTreeMap::<String, u64>::new();
    for e in &old {
        *kinds.entry(e["kind"].as_str().unwrap().to_string()).or_default() += 1;
    }
    let want_kinds: BTreeMap<String, u64> =
        m["events"]["kinds"].as_object().unwrap().iter().map(|(k, n)| (k.clone(), n.as_u64().unwrap())).collect();
    assert_eq!(kinds, want_kinds);
    let accepted = events
        .iter()
        .find(|e| e["kind"] == "command.accepted" && e["data"]["task_id"] == new_task.as_str())
        .expect("the new command's event");
    assert!(accepted["id"].as_i64().unwrap() > max_id, "a new event after the old log: {accepted}");

    // The finished tasks, with their results.
    for t in m["finished_tasks"].as_array().unwrap() {
        let got = lan.task(viewer, t["task_id"].as_str().unwrap());
        for field in ["device_id", "command", "state", "xyte_command_id", "last_error"] {
            assert_eq!(got[field], t[field], "{field} of {t}: {got}");
        }
        assert_eq!(got["final"], true, "{got}");
    }
    // The webhook 0.1.0 received is still known by its id.
    let (status, again) = lan.call(
        operator,
        "POST",
        "/v1/webhook",
        Some(&json!({"id": "fx-webhook-1", "type": "device.updated", "data": {}})),
    );
    assert_eq!((status, &again["duplicate"]), (202, &json!(true)), "{again}");

    // Xyte is back: the queued tasks (and the unknown one, reconciled with a Xyte that never saw it) are delivered
    // once each, the fixture's two for one device in order and before the new one, and all reach a final state.
    rt.block_on(sim.restart()).unwrap();
    let mut waiting: Vec<String> = open.iter().map(|t| t["task_id"].as_str().unwrap().to_string()).collect();
    waiting.push(new_task.clone());
    let finals: Vec<Value> = poll("every queued task final", Duration::from_secs(45), || {
        let all: Vec<Value> = waiting.iter().map(|id| lan.task(viewer, id)).collect();
        all.iter().all(|t| t["final"] == true).then_some(all)
    });
    for t in &finals {
        assert!(matches!(t["state"].as_str(), Some("done" | "failed")), "a verdict of Xyte's, not an expiry: {t}");
        assert!(t["xyte_command_id"].is_string(), "{t}");
    }
    let delivered: Vec<(String, String)> = sim
        .sim
        .stats()
        .commands
        .into_iter()
        .map(|(d, body)| (d, body["friendly_name"].as_str().unwrap_or("").to_string()))
        .collect();
    let mut names: Vec<&str> = delivered.iter().map(|(_, n)| n.as_str()).collect();
    names.sort();
    let mut want: Vec<&str> = open.iter().map(|t| t["friendly_name"].as_str().unwrap()).collect();
    want.push("after-upgrade");
    want.sort();
    assert_eq!(names, want, "each queued command delivered exactly once: {delivered:?}");
    let on_d4: Vec<&str> = delivered.iter().filter(|(d, _)| d == d4).map(|(_, n)| n.as_str()).collect();
    assert_eq!(on_d4, ["fx-queued-1", "fx-queued-2", "after-upgrade"], "in order per device");
    poll("the outbox depth back to 0", Duration::from_secs(10), || (metric_outbox_depth(&local) == 0).then_some(()));

    daemon.signal(Signal::SIGTERM);
    let (code, _) = daemon.wait_exit(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{}", daemon.output.join("\n"));
    let c = read_only(&db);
    assert_eq!(user_version(&c), current);
    assert_eq!(depth_rows(&c), BTreeMap::new(), "the counts of migration 2 drained to 0 with the outbox");
    let unknown_left: i64 =
        c.query_row("SELECT COUNT(*) FROM tasks WHERE outcome_unknown = 1", [], |r| r.get(0)).unwrap();
    assert_eq!(unknown_left, 0, "the unknown outcome was resolved");
    let integrity: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(integrity, "ok");
}

#[test]
fn a_failing_upgrade_of_the_released_database_leaves_it_as_0_1_0_wrote_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = install_fixture(dir.path());
    let db = state.join(DB);
    // An obstacle for migration 4 (which creates `uplink`): migrations 2 and 3 have run by the time it fails.
    let c = Connection::open(&db).unwrap();
    c.execute_batch("CREATE TABLE uplink (obstacle INTEGER);").unwrap();
    let before = schema(&c);
    drop(c);

    // Nothing listens at the Xyte address: the store is opened (and fails) before Xyte matters.
    let nowhere = format!("http://127.0.0.1:{}/core/v1/organization", support::free_port());
    let mut daemon = serve(dir.path(), &state, &nowhere, false);
    let (code, _) = daemon.wait_exit(Duration::from_secs(30));
    let output = daemon.output.join("\n");
    assert!(code.is_some_and(|c| c != 0), "serve must fail: {code:?}\n{output}");
    assert!(
        output.contains("cannot upgrade")
            && output.contains("from schema version 1 to")
            && output.contains("migration 4 failed")
            && output.contains("uplink already exists")
            && output.contains("rolled back"),
        "a clear message:\n{output}"
    );

    // Rolled back as a whole: version 1, and nothing of migrations 2 and 3 (table, triggers, column).
    let c = read_only(&db);
    assert_eq!(user_version(&c), 1);
    assert_eq!(schema(&c), before, "the schema is as before the attempt");
    assert!(!columns(&c, "tasks").contains(&"outcome_unknown".to_string()), "migration 3's column rolled back");
    let later: i64 = c
        .query_row("SELECT COUNT(*) FROM sqlite_master WHERE name = 'outbox_depth' OR type = 'trigger'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(later, 0, "migration 2's table and triggers rolled back");
    drop(c);

    // Without the obstacle the next start upgrades it.
    Connection::open(&db).unwrap().execute_batch("DROP TABLE uplink;").unwrap();
    let mut daemon = serve(dir.path(), &state, &nowhere, false);
    daemon.listener(false, Duration::from_secs(30));
    daemon.signal(Signal::SIGTERM);
    let (code, _) = daemon.wait_exit(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{}", daemon.output.join("\n"));
    let c = read_only(&db);
    assert_eq!(user_version(&c), current_version());
    assert!(columns(&c, "tasks").contains(&"outcome_unknown".to_string()));
}

#[test]
fn the_fixture_holds_what_its_manifest_says() {
    let m = manifest();
    let fixture = Path::new(FIXTURE);
    for leftover in [format!("{DB}-wal"), format!("{DB}-shm")] {
        assert!(!fixture.join(&leftover).exists(), "{leftover} next to the fixture: it was not checkpointed");
    }
    let size = std::fs::metadata(fixture.join(DB)).unwrap().len();
    assert!(size < 1024 * 1024, "the fixture stays small: {size} bytes");
    assert!(m["made_by"].as_str().unwrap().starts_with("xyte-edge 0.1.0 "), "made by 0.1.0: {}", m["made_by"]);
    // Read from a copy: even a read-only open of a WAL database may create files next to it.
    let dir = tempfile::tempdir().unwrap();
    let c = read_only(&install_fixture(dir.path()).join(DB));
    let integrity: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(integrity, "ok");
    assert_eq!(user_version(&c), m["schema_version"].as_i64().unwrap());
    assert_eq!(user_version(&c), 1);
    let tables: BTreeSet<String> = schema(&c).into_iter().filter(|(t, _, _)| t == "table").map(|(_, n, _)| n).collect();
    let v1 = ["audit", "cache", "context", "events", "meta", "sqlite_sequence", "tasks", "tokens", "webhook_receipts"];
    assert_eq!(tables, v1.iter().map(|s| s.to_string()).collect(), "the tables of schema version 1, no later one");

    let query = |sql: &str| -> Vec<Value> {
        let mut stmt = c.prepare(sql).unwrap();
        let n = stmt.column_count();
        let names: Vec<String> = (0..n).map(|i| stmt.column_name(i).unwrap().to_string()).collect();
        stmt.query_map([], |r| {
            let mut row = serde_json::Map::new();
            for (i, name) in names.iter().enumerate() {
                let v = match r.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => Value::Null,
                    rusqlite::types::ValueRef::Integer(x) => json!(x),
                    rusqlite::types::ValueRef::Real(x) => json!(x),
                    rusqlite::types::ValueRef::Text(t) => json!(String::from_utf8_lossy(t)),
                    rusqlite::types::ValueRef::Blob(b) => json!(b),
                };
                row.insert(name.clone(), v);
            }
            Ok(Value::Object(row))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    };

    // Tokens: names, roles, expiry and revocation; each secret is the one whose SHA-256 is stored.
    let tokens = query(
        "SELECT name, role, expires_at IS NOT NULL AS expires, revoked_at IS NOT NULL AS revoked, hash FROM tokens
         ORDER BY name",
    );
    let listed = m["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), listed.len(), "{tokens:?}");
    for (row, t) in tokens.iter().zip(listed) {
        assert_eq!((&row["name"], &row["role"]), (&t["name"], &t["role"]));
        assert_eq!(row["expires"] == 1, t["expires"] == true, "{row} {t}");
        assert_eq!(row["revoked"] == 1, t["revoked"] == true, "{row} {t}");
        let secret = t["token"].as_str().unwrap();
        let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
        assert_eq!(row["hash"], json!(digest.as_ref()), "the secret of {} in the manifest", t["name"]);
    }
    let roles: BTreeSet<&str> =
        listed.iter().filter(|t| t["revoked"] == false).map(|t| t["role"].as_str().unwrap()).collect();
    assert_eq!(roles, BTreeSet::from(["admin", "operator", "viewer"]), "an active token of every role");
    let sidecar: Value = serde_json::from_str(&std::fs::read_to_string(fixture.join("tokens.json")).unwrap()).unwrap();
    for t in sidecar["tokens"].as_array().unwrap() {
        assert_eq!(token_of(&m, t["name"].as_str().unwrap()), t["token"], "tokens.json agrees with the manifest");
    }

    // Tasks: the open ones are all queued (at least two plus the unknown outcome), the finished ones are final.
    let open = query(
        "SELECT task_id, device_id, command, state, json_extract(body, '$.friendly_name') AS friendly_name, last_error
         FROM tasks WHERE state IN ('queued', 'sending') ORDER BY seq",
    );
    assert_eq!(Value::Array(open.clone()), m["open_tasks"], "the open tasks");
    let queued: BTreeSet<&str> = m["queued_task_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let unknown = m["unknown_outcome_task"].as_str().unwrap();
    assert!(queued.len() >= 2, "queued tasks in the fixture: {queued:?}");
    let open_ids: BTreeSet<&str> = open.iter().map(|t| t["task_id"].as_str().unwrap()).collect();
    assert_eq!(open_ids, queued.iter().copied().chain([unknown]).collect(), "queued plus the unknown outcome");
    let marked = open.iter().find(|t| t["task_id"] == unknown).unwrap();
    assert_eq!(marked["last_error"], "unknown outcome", "{marked}");
    let d4 = &m["sim"]["device_ids"][4];
    let on_d4: Vec<&Value> = open.iter().filter(|t| &t["device_id"] == d4).map(|t| &t["friendly_name"]).collect();
    assert_eq!(on_d4, [&json!("fx-queued-1"), &json!("fx-queued-2")], "two queued for one device, in order");
    let finished = m["finished_tasks"].as_array().unwrap();
    assert!(!finished.is_empty());
    for t in finished {
        let id = t["task_id"].as_str().unwrap();
        let row = query(&format!(
            "SELECT task_id, device_id, command, state, xyte_command_id, last_error FROM tasks WHERE task_id = '{id}'"
        ));
        assert_eq!(row, std::slice::from_ref(t), "finished task {id}");
        assert!(matches!(t["state"].as_str(), Some("done" | "failed")) && t["xyte_command_id"].is_string(), "{t}");
    }

    // Events, context, webhook receipts, and the cached devices.
    let events = &query("SELECT COUNT(*) AS count, MAX(id) AS max_id, MIN(id) AS min_id FROM events")[0];
    for field in ["count", "max_id", "min_id"] {
        assert_eq!(events[field], m["events"][field], "events {field}");
    }
    let mut kinds = serde_json::Map::new();
    for row in query("SELECT kind, COUNT(*) AS n FROM events GROUP BY kind") {
        kinds.insert(row["kind"].as_str().unwrap().to_string(), row["n"].clone());
    }
    assert_eq!(Value::Object(kinds.clone()), m["events"]["kinds"]);
    for kind in ["device.status_changed", "command.accepted", "command.status_changed", "webhook.received"] {
        assert!(kinds.contains_key(kind), "a {kind} event in the fixture");
    }
    let mut context = serde_json::Map::new();
    for row in query("SELECT principal, data FROM context") {
        let data: Value = serde_json::from_str(row["data"].as_str().unwrap()).unwrap();
        context.insert(row["principal"].as_str().unwrap().to_string(), data);
    }
    assert_eq!(Value::Object(context), m["context"]);
    assert!(m["context"].as_object().unwrap().len() >= 2);
    let receipts: Vec<Value> = query("SELECT id FROM webhook_receipts").into_iter().map(|r| r["id"].clone()).collect();
    assert_eq!(Value::Array(receipts), m["webhook_receipts"]);
    let cached = query("SELECT key FROM cache WHERE resource = 'device' ORDER BY key");
    let mut want: Vec<&str> = m["sim"]["device_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    want.sort();
    let got: Vec<&str> = cached.iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(got, want, "the cache holds the fixture's devices");
}
