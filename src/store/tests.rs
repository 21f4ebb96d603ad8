use super::*;
use serde_json::json;

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state"), StoreOptions::default()).unwrap();
    (dir, store)
}

#[test]
fn creates_private_files_in_wal_mode_at_the_current_schema() {
    let (dir, store) = open();
    let state = dir.path().join("state");
    assert_eq!(std::fs::metadata(&state).unwrap().permissions().mode() & 0o777, 0o700);
    assert_eq!(std::fs::metadata(store.path()).unwrap().permissions().mode() & 0o777, 0o600);
    let (mode, version): (String, i64) = store
        .read_blocking(|c| {
            Ok((
                c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?,
                c.query_row("PRAGMA user_version", [], |r| r.get(0))?,
            ))
        })
        .unwrap();
    assert_eq!((mode.as_str(), version), ("wal", MIGRATIONS.len() as i64));
    store.close();
    // Reopening an existing database keeps its data and migrates nothing twice.
    drop(Store::open(&state, StoreOptions::default()).unwrap());
}

/// An upgrade over several migrations is one transaction: one that fails (here: a table in the way of the last)
/// leaves the database at the version it had, without the tables of the migrations before it.
#[test]
fn pending_migrations_apply_together_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let c = Connection::open(dir.path().join(DB_FILE)).unwrap();
    for sql in &MIGRATIONS[..5] {
        c.execute_batch(sql).unwrap();
    }
    c.pragma_update(None, "user_version", 5).unwrap();
    c.execute_batch("CREATE TABLE alert_silences (x);").unwrap();
    drop(c);
    let err = Store::open(dir.path(), StoreOptions::default()).err().expect("the last migration fails");
    assert!(err.to_string().contains("alert_silences"), "{err}");
    let upgrade = format!("from schema version 5 to {}: migration 7 failed", MIGRATIONS.len());
    assert!(err.to_string().contains(&upgrade), "{err}");
    assert!(err.to_string().contains("rolled back"), "{err}");
    let c = Connection::open(dir.path().join(DB_FILE)).unwrap();
    let version: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    let tables: i64 = c
        .query_row("SELECT COUNT(*) FROM sqlite_master WHERE name IN ('schedules', 'alerts')", [], |r| r.get(0))
        .unwrap();
    assert_eq!((version, tables), (5, 0), "migrations 6 and 7 rolled back together");
    c.execute_batch("DROP TABLE alert_silences;").unwrap();
    drop(c);
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let version: i64 = store.read_blocking(|c| Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?)).unwrap();
    assert_eq!(version, MIGRATIONS.len() as i64);
}

#[test]
fn refuses_a_newer_schema_and_reports_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    let c = Connection::open(&path).unwrap();
    c.pragma_update(None, "user_version", 99).unwrap();
    drop(c);
    let before = std::fs::read(&path).unwrap();
    let err = Store::open(dir.path(), StoreOptions::default()).err().expect("newer schema refused");
    assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
    assert!(err.to_string().contains("schema version 99"), "{err}");
    // Touched nothing: not even switched to WAL.
    assert_eq!(std::fs::read(&path).unwrap(), before, "a newer release's database was changed");
    assert!(!dir.path().join(format!("{DB_FILE}-wal")).exists());

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(DB_FILE), vec![0x42u8; 8192]).unwrap();
    let err = Store::open(dir.path(), StoreOptions::default()).err().expect("garbage refused");
    let text = err.to_string();
    assert!(text.contains(DB_FILE), "{text}");
}

#[test]
fn a_failing_job_rolls_back_alone_within_a_group_commit() {
    let (_d, store) = open();
    // Queue several jobs at once so they share a batch; the middle one fails after writing.
    let rxs: Vec<_> = (0..3)
        .map(|i| {
            store
                .submit(Durability::Full, move |c| {
                    c.execute("INSERT INTO meta (key, value) VALUES (?1, 'v')", [format!("k{i}")])?;
                    if i == 1 { Err(StoreError::Data("job 1 fails on purpose".into())) } else { Ok(i) }
                })
                .unwrap()
        })
        .collect();
    let results: Vec<_> = rxs.into_iter().map(|rx| rx.blocking_recv().unwrap()).collect();
    assert!(matches!(results[0], Ok(0)) && matches!(results[2], Ok(2)));
    assert!(matches!(&results[1], Err(StoreError::Data(m)) if m.contains("on purpose")));
    let keys: Vec<String> = store
        .read_blocking(|c| {
            let mut s = c.prepare("SELECT key FROM meta ORDER BY key")?;
            let keys = s.query_map([], |r| r.get(0))?.collect::<Result<Vec<String>, _>>()?;
            Ok(keys)
        })
        .unwrap();
    assert_eq!(keys, ["k0", "k2"]);
}

#[test]
fn cache_snapshots_write_only_what_changed() {
    let (_d, store) = open();
    let snap =
        |status: &str| vec![("a".to_string(), json!({"id":"a","status":status})), ("b".to_string(), json!({"id":"b"}))];
    let diff =
        store.write_blocking(Durability::Normal, move |c| cache::replace_set(c, "device", &snap("online"), 1)).unwrap();
    assert_eq!((diff.added.len(), diff.changed.len(), diff.removed.len(), diff.first), (2, 0, 0, true));
    // A snapshot that only adds to a known set (one new incident, nothing else) is news, not a first fill.
    let more = |c: &rusqlite::Connection| cache::replace_set(c, "incident", &[("i1".into(), json!({"id": "i1"}))], 1);
    let (empty, added) = store
        .write_blocking(Durability::Normal, move |c| Ok((cache::replace_set(c, "incident", &[], 1)?, more(c)?)))
        .unwrap();
    assert!(empty.first && empty.is_empty());
    assert_eq!((added.added.len(), added.first), (1, false));

    let changes_before: i64 = store.write_blocking(Durability::Normal, |c| Ok(c.total_changes() as i64)).unwrap();
    let diff =
        store.write_blocking(Durability::Normal, move |c| cache::replace_set(c, "device", &snap("online"), 2)).unwrap();
    assert!(diff.is_empty());
    let changes_after: i64 = store.write_blocking(Durability::Normal, |c| Ok(c.total_changes() as i64)).unwrap();
    assert_eq!(changes_before, changes_after, "an identical snapshot must not touch a row");

    let diff = store
        .write_blocking(Durability::Normal, |c| {
            cache::replace_set(c, "device", &[("a".into(), json!({"id":"a","status":"offline"}))], 3)
        })
        .unwrap();
    assert_eq!(
        diff.changed,
        vec![("a".into(), json!({"id":"a","status":"online"}), json!({"id":"a","status":"offline"}))]
    );
    assert_eq!(diff.removed, vec![("b".into(), json!({"id":"b"}))]);
    let a = store.read_blocking(|c| cache::get(c, "device", "a")).unwrap().unwrap();
    assert_eq!((a.body["status"].as_str(), a.fetched_at), (Some("offline"), 3));
    assert!(store.read_blocking(|c| cache::get(c, "device", "b")).unwrap().is_none());
}

#[test]
fn cache_put_and_invalidate_keep_the_body_for_stale_answers() {
    let (_d, store) = open();
    let put = |v: serde_json::Value, at| {
        store.write_blocking(Durability::Normal, move |c| cache::put(c, "ticket", "t1", &v, at)).unwrap()
    };
    assert!(put(json!({"title":"x"}), 10));
    assert!(!put(json!({"title":"x"}), 20), "same body: no write");
    assert_eq!(store.write_blocking(Durability::Normal, |c| cache::invalidate(c, "ticket", Some("t1"))).unwrap(), 1);
    let e = store.read_blocking(|c| cache::get(c, "ticket", "t1")).unwrap().unwrap();
    assert_eq!((e.fetched_at, e.body.clone()), (0, json!({"title":"x"})));
    assert!(put(json!({"title":"x"}), 30), "an invalidated entry is refreshed even when the body is the same");
    assert_eq!(store.read_blocking(|c| cache::list(c, "ticket", |_, body| body)).unwrap()[0].2, 30);
}

#[test]
fn events_have_monotonic_ids_filters_and_bounded_pruning() {
    let (_d, store) = open();
    let batch: Vec<_> = (0..10)
        .map(|i| {
            events::NewEvent::new(if i % 2 == 0 { "device.status_changed" } else { "ticket.updated" }, json!({"i": i}))
                .device(format!("d{}", i % 3))
        })
        .collect();
    let stored = store.write_blocking(Durability::Normal, move |c| events::append(c, &batch, 1_000)).unwrap();
    assert_eq!(stored.iter().map(|e| e.id).collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>());

    let f = events::EventFilter { kinds: vec!["ticket.updated".into()], device_id: None };
    let got = store.read_blocking(move |c| events::after(c, 2, &f, 100)).unwrap();
    assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), [4, 6, 8, 10]);
    let f = events::EventFilter { kinds: vec![], device_id: Some("d0".into()) };
    assert_eq!(store.read_blocking(move |c| events::after(c, 0, &f, 2)).unwrap().len(), 2);

    // Keep the newest 4 rows, pruning 3 at a time.
    let mut removed = 0;
    loop {
        let n = store.write_blocking(Durability::Normal, |c| events::prune(c, 0, 4, 3)).unwrap();
        if n == 0 {
            break;
        }
        removed += n;
    }
    assert_eq!(removed, 6);
    let more = vec![events::NewEvent::new("audit", json!({}))];
    let next = store.write_blocking(Durability::Normal, move |c| events::append(c, &more, 2_000)).unwrap();
    assert_eq!(next[0].id, 11, "ids are never reused after pruning");
    let json = serde_json::to_value(&next[0]).unwrap();
    assert_eq!(json["ts"], "1970-01-01T00:00:02Z");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_async_writers_and_readers() {
    let (_d, store) = open();
    let mut handles = Vec::new();
    for i in 0..200 {
        let s = store.clone();
        handles.push(tokio::spawn(async move {
            s.write(Durability::Full, move |c| cache::put(c, "device", &format!("d{i}"), &json!({"i": i}), 1)).await
        }));
    }
    for h in handles {
        assert!(h.await.unwrap().unwrap());
    }
    assert_eq!(store.read(|c| cache::list(c, "device", |_, body| body)).await.unwrap().len(), 200);
    store.close();
    assert!(matches!(store.write(Durability::Normal, |_| Ok(())).await, Err(StoreError::Closed)));
}

#[test]
fn a_normal_commit_reaches_the_database_file_within_about_a_second() {
    let (_d, store) = open();
    let db = store.path().to_path_buf();
    let before = std::fs::read(&db).unwrap();
    store
        .write_blocking(Durability::Normal, |c| cache::put(c, "ticket", "t1", &json!({"title": "flushed"}), 1))
        .unwrap();
    // Without the flush rule the page would sit in the WAL until the 1000-page autocheckpoint.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::fs::read(&db).unwrap() == before {
        assert!(std::time::Instant::now() < deadline, "the commit never left the WAL");
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

/// A database file as the first release wrote it (schema version 1), open on its own connection.
fn first_schema() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let c = Connection::open(dir.path().join(DB_FILE)).unwrap();
    c.execute_batch(MIGRATIONS[0]).unwrap();
    c.pragma_update(None, "user_version", 1).unwrap();
    (dir, c)
}

/// The outbox depth kept by triggers (migration 2) starts from what a database of the first schema holds, and
/// follows every insert, state change and delete, whoever writes them.
#[test]
fn the_outbox_depth_is_migrated_and_kept_by_the_database() {
    let (dir, c) = first_schema();
    // Plain SQL, as any writer (or a migration) could: the counts must not depend on going through store::tasks.
    let add = |c: &Connection, device: &str, state: &str| {
        let id = tasks::new_id();
        c.execute(
            "INSERT INTO tasks (task_id, seq, device_id, command, body, state, next_attempt_at, created_at, expires_at,
                                updated_at, principal)
             VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM tasks), ?2, 'reboot', '{}', ?3, 0, 0, 60000, 0, 'test')",
            [&id, device, state],
        )
        .unwrap();
        id
    };
    for (device, state) in [("a", "queued"), ("a", "queued"), ("a", "done"), ("b", "sending"), ("c", "pending")] {
        add(&c, device, state);
    }
    drop(c);

    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let depth = |store: &Store| {
        store
            .read_blocking(|c| {
                let counted: i64 =
                    c.query_row("SELECT COUNT(*) FROM tasks WHERE state IN ('queued', 'sending')", [], |r| r.get(0))?;
                let devices = ["a", "b", "c", "d"].map(|d| tasks::device_outbox_depth(c, d).unwrap());
                Ok((tasks::outbox_depth(c)?, counted, devices))
            })
            .unwrap()
    };
    assert_eq!(depth(&store), (3, 3, [2, 1, 0, 0]), "migrated from the first schema");
    let (sent, queued_d) = store
        .write_blocking(Durability::Normal, move |c| {
            let first: String =
                c.query_row("SELECT task_id FROM tasks WHERE device_id = 'a' AND state = 'queued'", [], |r| r.get(0))?;
            c.execute("UPDATE tasks SET state = 'sent' WHERE task_id = ?1", [&first])?;
            Ok((first, add(c, "d", "queued")))
        })
        .unwrap();
    assert_eq!(depth(&store), (3, 3, [1, 1, 0, 1]), "one left for Xyte, one came");
    store
        .write_blocking(Durability::Normal, move |c| {
            c.execute("UPDATE tasks SET state = 'queued' WHERE task_id = ?1", [&sent])?;
            c.execute("UPDATE tasks SET state = 'sending' WHERE state = 'queued' AND device_id = 'a'", [])?;
            c.execute("DELETE FROM tasks WHERE task_id = ?1", [&queued_d])?;
            Ok(())
        })
        .unwrap();
    assert_eq!(depth(&store), (3, 3, [2, 1, 0, 0]), "requeued, moved between open states, deleted");
}

/// A database of the release before `outcome_unknown` (schema version 1, the sentinel text in `last_error`) opens
/// migrated: every column as it was, the mark moved into the column for the queued task it meant something for,
/// and each body read back as the command it was queued as, still the same stored text.
#[test]
fn the_unknown_outcome_migration_keeps_every_task_intact() {
    let (dir, c) = first_schema();
    let reboot = r#"{"command":"reboot","extra_params":{},"name":"reboot"}"#;
    let full = r#"{"command":"set_input","extra_params":{"input":"hdmi2","level":3},"file_id":"f1","friendly_name":"Set input","name":"set_input"}"#;
    let rows = [
        ("tsk_unknown", "queued", "reboot", reboot, Some("unknown outcome")),
        ("tsk_queued", "queued", "set_input", full, None),
        ("tsk_reconciled", "in_progress", "reboot", reboot, Some("unknown outcome")),
        ("tsk_refused", "queued", "reboot", reboot, Some("connection refused")),
        ("tsk_done", "done", "set_input", full, None),
    ];
    for (seq, (id, state, command, body, err)) in rows.into_iter().enumerate() {
        let sent = (state != "queued").then_some(format!("cmd_{seq}"));
        c.execute(
            "INSERT INTO tasks VALUES (?1, ?2, 'd1', ?3, ?4, ?5, ?6, 1, 10, 20, 30, 40, ?7, 'admin')",
            rusqlite::params![id, seq as i64, command, body, state, sent, err],
        )
        .unwrap();
    }
    let all = |c: &Connection| -> Vec<Vec<rusqlite::types::Value>> {
        let mut s = c.prepare("SELECT * FROM tasks ORDER BY seq").unwrap();
        let n = s.column_count();
        s.query_map([], |r| (0..n).map(|i| r.get(i)).collect()).unwrap().map(Result::unwrap).collect()
    };
    let before = all(&c);
    drop(c);

    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let (mut after, tasks) = store
        .read_blocking(|c| Ok((all(c), rows.iter().map(|r| tasks::get(c, r.0).unwrap().unwrap()).collect::<Vec<_>>())))
        .unwrap();
    after.iter_mut().for_each(|r| r.truncate(before[0].len()));
    assert_eq!(after, before, "every old column as it was");
    let typed: Vec<_> = tasks.iter().map(|t| (t.state.as_str(), t.outcome_unknown)).collect();
    assert_eq!(
        typed,
        [("queued", true), ("queued", false), ("in_progress", false), ("queued", false), ("done", false)]
    );
    assert_eq!(tasks[0].last_error.as_deref(), Some("unknown outcome"), "still shown to people");
    let b = &tasks[1].body;
    assert_eq!(
        (b.command.as_str(), b.friendly_name.as_deref(), b.file_id.as_deref(), b.extra_params.clone()),
        ("set_input", Some("Set input"), Some("f1"), Some(json!({"input": "hdmi2", "level": 3})))
    );
    for (t, (.., stored, _)) in tasks.iter().zip(rows) {
        assert_eq!(serde_json::to_string(&t.body).unwrap(), stored, "{} is stored as it was", t.task_id);
    }
}

/// The uplink's records (migration 4) on a database that already has events: delivery starts at the head of the
/// log, the connection counter only grows, and both survive a reopen.
#[test]
fn uplink_records_start_at_the_head_of_the_log_and_survive_a_reopen() {
    let (dir, c) = first_schema();
    events::append(&c, &vec![events::NewEvent::new("device.updated", json!({})); 3], 1).unwrap();
    drop(c);
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let first = store
        .write_blocking(Durability::Full, |c| {
            Ok((uplink::next_session(c)?, uplink::next_session(c)?, uplink::cursor(c)?, uplink::retained_devices(c)?))
        })
        .unwrap();
    assert_eq!(first, (1, 2, 3, Vec::<String>::new()));
    store
        .write_blocking(Durability::Full, |c| {
            events::append(c, &[events::NewEvent::new("device.updated", json!({}))], 2)?;
            uplink::set_cursor(c, 4)?;
            uplink::set_retained_devices(c, &["d1".to_string(), "d2".to_string()])
        })
        .unwrap();
    store.close();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let again = store
        .write_blocking(Durability::Full, |c| {
            Ok((uplink::next_session(c)?, uplink::cursor(c)?, uplink::retained_devices(c)?))
        })
        .unwrap();
    assert_eq!(again, (3, 4, vec!["d1".to_string(), "d2".to_string()]));
}

/// A run (migration 5) moves on in the database: each step is queued when the one before it ends well (or may fail),
/// and everything after a step that failed without `continue_on_error` is skipped, in the same transaction.
#[test]
fn a_run_releases_its_steps_in_order_and_skips_after_a_failure() {
    use tasks::{Patch, Step, TaskState, TaskState::*};
    let (_dir, store) = open();
    let step = |device: &str, command: &str, continue_on_error: bool| Step {
        device_id: device.into(),
        cmd: crate::xyte::SendCommand {
            command: command.into(),
            friendly_name: None,
            extra_params: None,
            file_id: None,
        },
        continue_on_error,
    };
    let steps = vec![
        step("d1", "power_on", false),
        step("d2", "power_on", true),
        step("d1", "set_input", false),
        step("d3", "mute", false),
    ];
    fn states(c: &Connection, run: &str) -> Result<Vec<TaskState>, StoreError> {
        Ok(tasks::run(c, run)?.iter().map(|t| t.state).collect())
    }
    let first = steps[0].cmd.clone();
    let (run, depth) = store
        .write_blocking(Durability::Full, move |c| {
            let run = tasks::insert_run(c, "run-1", &steps, "schedule:test", 1_000, 600_000)?;
            Ok((run, tasks::outbox_depth(c)?))
        })
        .unwrap();
    let shape: Vec<_> = run.iter().map(|t| (t.state, t.run.clone(), t.expires_at)).collect();
    assert_eq!(
        shape,
        (1..=4)
            .map(|n| (if n == 1 { Queued } else { Held }, Some(("run-1".to_string(), n)), 601_000))
            .collect::<Vec<_>>()
    );
    assert_eq!(depth, 1, "held steps are not in the outbox yet");
    let id = |n: usize| run[n].task_id.clone();
    let (a, b, c3) = (id(0), id(1), id(2));
    let moved = store
        .write_blocking(Durability::Full, move |c| {
            // Step 1 delivered and done: step 2 is queued (and counted), step 3 still held.
            tasks::transition(c, &a, &[Queued], Sent, &Patch::default(), 2_000)?;
            tasks::transition(c, &a, &[Sent], Done, &Patch::default(), 3_000)?;
            let after_1 = (states(c, "run-1")?, tasks::outbox_depth(c)?, tasks::get(c, &b)?.unwrap().next_attempt_at);
            // Step 2 fails but may: step 3 goes on.
            tasks::transition(c, &b, &[Queued], Rejected, &Patch::default(), 4_000)?;
            let after_2 = states(c, "run-1")?;
            // Step 3 fails and may not: step 4 is skipped, saying why.
            tasks::transition(c, &c3, &[Queued], Expired, &Patch::default(), 5_000)?;
            Ok((after_1, after_2, tasks::run(c, "run-1")?, tasks::outbox_depth(c)?))
        })
        .unwrap();
    assert_eq!(moved.0, (vec![Done, Queued, Held, Held], 1, 3_000));
    assert_eq!(moved.1, vec![Done, Rejected, Queued, Held]);
    let last: Vec<_> = moved.2.iter().map(|t| t.state).collect();
    assert_eq!(last, vec![Done, Rejected, Expired, Skipped]);
    assert_eq!(moved.2[3].last_error.as_deref(), Some("not sent: step 3 of the run ended expired"));
    assert_eq!(moved.3, 0, "nothing left in the outbox");
    // A task outside any run is untouched by all this.
    let single = store
        .write_blocking(Durability::Full, move |c| {
            let t = tasks::insert(c, "d1", &first, "uid:0", 6_000, 600_000)?;
            tasks::transition(c, &t.task_id, &[Queued], Done, &Patch::default(), 7_000)?;
            Ok((tasks::get(c, &t.task_id)?.unwrap().run, states(c, "run-1")?))
        })
        .unwrap();
    assert_eq!(single, (None, vec![Done, Rejected, Expired, Skipped]));
}

/// Alerts' records (migration 7) on a database of the previous schema with a schedule in it: the schedule is kept;
/// an alert fires, resolves once and is pruned after; a silence ends; a message is written before it is tried, backs
/// off, is sent once and is found by the alert it tells of.
#[test]
fn alert_records_follow_an_alert_and_its_messages() {
    use crate::alerts::{Silence, Subject};
    use crate::store::alerts::{self as a, AlertRow};
    let dir = tempfile::tempdir().unwrap();
    let c = Connection::open(dir.path().join(DB_FILE)).unwrap();
    for sql in &MIGRATIONS[..6] {
        c.execute_batch(sql).unwrap();
    }
    c.pragma_update(None, "user_version", 6).unwrap();
    crate::store::schedules::ensure(&c, "morning", "{}", 5).unwrap();
    drop(c);
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let projector = Subject { key: "p1".into(), label: "Projector".into(), space: Some("HQ/Floor 3".into()) };
    let row = AlertRow {
        rule: "offline".into(),
        subject: projector.clone(),
        state: "firing".into(),
        since: 100,
        fired_at: 700,
        told_at: Some(700),
        resolved_at: None,
    };
    let notification = json!({"rule": "offline", "kind": "firing", "subjects": [{"key": "p1", "label": "Projector"}]});
    let (kept, firing, resolved_twice, recent, delivery) = store
        .write_blocking(Durability::Full, move |c| {
            let kept = crate::store::schedules::state(c, "morning")?.map(|s| s.handled);
            a::put(c, &row)?;
            let firing = a::firing(c)?;
            let resolved = (a::resolve(c, "offline", "p1", 900, false)?, a::resolve(c, "offline", "p1", 950, false)?);
            let recent = a::recent(c, 800)?;
            let id = a::enqueue(c, "mail", "offline", &notification, 1_000)?;
            a::enqueue(c, "mail", "other", &json!({"subjects": [{"key": "p1"}]}), 1_001)?;
            Ok((kept, firing, resolved, recent, id))
        })
        .unwrap();
    assert_eq!(kept, Some(5), "the schedule of the older schema is still there");
    assert_eq!((firing.len(), firing[0].subject.clone()), (1, projector));
    assert_eq!(resolved_twice, (true, false), "resolved once");
    assert_eq!((recent.len(), recent[0].state.as_str(), recent[0].resolved_at), (1, "resolved", Some(900)));

    let timeline = store
        .write_blocking(Durability::Full, move |c| {
            let first = a::due(c, 1_001, 10)?.len();
            a::failed(c, delivery, "connect: refused", Some(6_000), 1_000)?;
            let later = (a::due(c, 5_999, 10)?.len(), a::next_due(c)?);
            let sent = (a::sent(c, delivery, 6_000)?, a::sent(c, delivery, 6_001)?);
            let mine = a::of_alert(c, "offline", "p1", 10)?;
            Ok((first, later, sent, mine, a::counts(c)?))
        })
        .unwrap();
    let (first, later, sent, mine, counts) = timeline;
    assert_eq!(first, 2);
    assert_eq!(later, (1, Some(1_001)), "the failed one waits for its retry; the other is due");
    assert_eq!(sent, (true, false), "sent once");
    assert_eq!(mine.len(), 1, "a message is found by its rule and subject");
    assert_eq!((mine[0].attempts, mine[0].state.as_str(), mine[0].last_error.clone()), (2, "sent", None));
    assert_eq!(counts, (1, 1, 0));

    let silence = Silence {
        id: "s1".into(),
        rule: None,
        space: Some("HQ/Floor 3".into()),
        device: None,
        until: 10_000,
        by: "op".into(),
    };
    let silences = store
        .write_blocking(Durability::Full, move |c| {
            a::add_silence(c, &silence, 1_000, Some("maintenance"))?;
            let active = a::silences(c, 2_000)?;
            let ended = (a::end_silence(c, "s1", 3_000)?, a::end_silence(c, "s1", 3_001)?);
            let gave_up = a::failed(c, 2, "HTTP 500", None, 4_000)?;
            Ok((active, ended, a::silences(c, 3_000)?.len(), gave_up, a::counts(c)?, a::prune(c, 7_000)?))
        })
        .unwrap();
    let (active, ended, after, gave_up, counts, pruned) = silences;
    assert_eq!((active.len(), active[0].space.as_deref()), (1, Some("HQ/Floor 3")));
    assert_eq!((ended, after), ((true, false), 0));
    assert!(gave_up);
    assert_eq!(counts, (0, 1, 1));
    assert_eq!(pruned, 4, "the resolved alert, both finished messages and the ended silence");
}

/// A burst of concurrent reads (a thousand SSE clients connecting) shares at most MAX_READERS connections: the
/// others wait for one to come back instead of each opening its own.
#[test]
fn concurrent_reads_share_a_bounded_number_of_connections() {
    use std::sync::atomic::AtomicUsize;
    let (_dir, store) = open();
    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let readers: Vec<_> = (0..32)
        .map(|_| {
            let (store, now, most) = (store.clone(), now.clone(), most.clone());
            std::thread::spawn(move || {
                store
                    .read_blocking(|c| {
                        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(n, Ordering::SeqCst);
                        // Hold the connection so the others must wait (this is what is measured, not a sync).
                        std::thread::sleep(Duration::from_millis(20));
                        now.fetch_sub(1, Ordering::SeqCst);
                        Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?)
                    })
                    .unwrap()
            })
        })
        .collect();
    assert!(readers.into_iter().all(|r| r.join().unwrap() == 1));
    let most = most.load(Ordering::SeqCst);
    assert!((2..=MAX_READERS).contains(&most), "{most} reads ran at once");
    let pool = store.inner.readers.lock().unwrap();
    assert_eq!((pool.idle.len(), pool.open), (READERS, READERS), "the extra connections were closed");
}

/// The forwarder reads expired tasks in batches and open tasks one device at a time, so a deep outbox is never held
/// in memory whole; what it reads is exactly what it used to filter out of the whole table.
#[test]
fn expired_tasks_come_in_batches_and_open_tasks_per_device() {
    use tasks::{Patch, TaskState::*};
    let (_dir, store) = open();
    let cmd =
        crate::xyte::SendCommand { command: "reboot".into(), friendly_name: None, extra_params: None, file_id: None };
    let (expired, first, open, devices) = store
        .write_blocking(Durability::Full, move |c| {
            // Created at 1,000 with a TTL of 1,000: expired at 2,000. d3's is still young.
            let mut ids = vec![];
            for device in ["d1", "d2", "d1", "d2", "d1"] {
                ids.push(tasks::insert(c, device, &cmd, "uid:0", 1_000, 1_000)?.task_id);
            }
            tasks::insert(c, "d3", &cmd, "uid:0", 1_000, 10_000)?;
            // One whose last POST had an unknown outcome, one already sent (at Xyte), one done.
            c.execute("UPDATE tasks SET outcome_unknown = 1 WHERE task_id = ?1", [&ids[0]])?;
            tasks::transition(c, &ids[1], &[Queued], Sent, &Patch::default(), 1_500)?;
            tasks::transition(c, &ids[2], &[Queued], Done, &Patch::default(), 1_500)?;
            let expired: Vec<String> = tasks::expired(c, 2_000, 10)?.into_iter().map(|t| t.task_id).collect();
            let first = tasks::expired(c, 2_000, 1)?.len();
            let open: Vec<String> = tasks::in_states(c, "d2", &[Sent])?.into_iter().map(|t| t.task_id).collect();
            let devices = tasks::devices_in_states(c, &[Queued, Sent])?;
            Ok((expired, first, open == vec![ids[1].clone()], devices))
        })
        .unwrap();
    assert_eq!(expired.len(), 2, "the queued ones past their expiry, not the unknown outcome: {expired:?}");
    assert_eq!((first, open), (1, true));
    assert_eq!(devices, ["d1", "d2", "d3"]);
}
