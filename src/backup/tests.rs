use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::files::ConfigOutcome;
use super::*;
use crate::config::{Config, Role};
use crate::store::events::{self, NewEvent};
use crate::store::{Durability, Store, StoreOptions, tokens};

fn state_with_data() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state"), StoreOptions::default()).unwrap();
    store
        .write_blocking(Durability::Full, |c| {
            tokens::create(c, "wall-panel", Role::Viewer, None, 1)?;
            c.execute(
                "INSERT INTO tasks (task_id, seq, device_id, command, body, state, next_attempt_at, created_at,
                                    expires_at, updated_at, principal)
                 VALUES ('tsk_1', 1, 'dev-1', 'reboot', '{}', 'queued', 1, 1, 9999999999999, 1, 'token:ops')",
                [],
            )?;
            c.execute(
                "INSERT INTO cache (resource, key, body, hash, fetched_at) VALUES ('device', 'dev-1', '{}', x'00', 1)",
                [],
            )?;
            events::append(c, &[NewEvent::new("device.status_changed", serde_json::json!({"status": "online"}))], 1)?;
            Ok(())
        })
        .unwrap();
    (dir, store)
}

fn rows(db: &Path, query: &str) -> Vec<String> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut stmt = conn.prepare(query).unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0)).unwrap().map(Result::unwrap).collect()
}

/// Backups taken while another thread commits as fast as it can are each one consistent moment: every one passes
/// the integrity check, restores, and holds a prefix of the events without a gap.
#[test]
fn backups_under_write_load_are_consistent() {
    let (dir, store) = state_with_data();
    let state = dir.path().join("state");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<NewEvent> =
                    (0..20).map(|i| NewEvent::new("test.load", serde_json::json!({"n": n * 20 + i}))).collect();
                store.write_blocking(Durability::Normal, move |c| events::append(c, &batch, 2)).unwrap();
                n += 1;
            }
            n
        })
    };
    let mut seen = vec![];
    for i in 0..5 {
        let dest = dir.path().join(format!("b{i}.backup"));
        let m = create(&state, &[], false, &dest).unwrap();
        assert_eq!(std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777, 0o600);
        let checked = inspect(&dest).unwrap();
        assert_eq!(checked.counts, m.counts);
        let (count, max): (i64, i64) = Connection::open(&dest)
            .unwrap()
            .query_row("SELECT COUNT(*), MAX(id) FROM events", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        // AUTOINCREMENT ids from 1 and nothing pruned: a consistent copy has exactly ids 1..=max.
        assert_eq!(count, max, "backup {i} has a gap in the event log");
        seen.push(count);
    }
    stop.store(true, Ordering::Relaxed);
    let batches = writer.join().unwrap();
    // The writer went on between the copies (each later copy has more), and no copy went backwards.
    assert!(seen.windows(2).all(|w| w[0] <= w[1]) && seen[0] < seen[4], "{seen:?} after {batches} batches");
    assert!(!dir.path().join("b0.backup.partial").exists());
    store.close();
}

#[test]
fn restore_into_a_fresh_directory_keeps_tokens_outbox_and_events() {
    let (dir, store) = state_with_data();
    let dest = dir.path().join("x.backup");
    let made = create(&dir.path().join("state"), &[], false, &dest).unwrap();
    store.close();
    assert_eq!(made.counts, Counts { devices: 1, tokens: 1, events: 1, commands_waiting: 1 });

    let fresh = dir.path().join("fresh");
    let r = restore(&dest, &fresh, "20261206T000000Z").unwrap();
    assert!(r.set_aside.is_none());
    let db = fresh.join(store::DB_FILE);
    assert_eq!(rows(&db, "SELECT name || ':' || role FROM tokens"), ["wall-panel:viewer"]);
    assert_eq!(rows(&db, "SELECT task_id || ':' || state FROM tasks"), ["tsk_1:queued"]);
    assert_eq!(rows(&db, "SELECT kind FROM events"), ["device.status_changed"]);
    assert!(rows(&db, "SELECT name FROM sqlite_schema WHERE name LIKE 'backup_%'").is_empty());
    // The daemon's store opens it (WAL again, integrity, schema current).
    let reopened = Store::open(&fresh, StoreOptions::default()).unwrap();
    reopened.close();

    // Restoring again keeps the database it replaces aside, with its WAL beside it.
    let r = restore(&dest, &fresh, "20261206T000001Z").unwrap();
    let aside = r.set_aside.unwrap();
    assert_eq!(aside, fresh.join("xyte-edge.db.before-restore-20261206T000001Z"));
    assert_eq!(rows(&aside, "SELECT name FROM tokens"), ["wall-panel"]);
}

#[test]
fn a_bad_file_is_refused_with_the_reason_and_nothing_changes() {
    let (dir, store) = state_with_data();
    let good = dir.path().join("good.backup");
    create(&dir.path().join("state"), &[], false, &good).unwrap();
    store.close();
    let target = dir.path().join("target");
    let before = std::fs::read(dir.path().join("state").join(store::DB_FILE)).unwrap();
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join(store::DB_FILE), &before).unwrap();

    let bytes = std::fs::read(&good).unwrap();
    let case = |name: &str, content: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        let e = restore(&p, &target, "T").unwrap_err();
        assert_eq!(std::fs::read(target.join(store::DB_FILE)).unwrap(), before, "{name} changed the database");
        e.to_string()
    };
    let truncated = case("truncated.backup", &bytes[..bytes.len() / 2]);
    assert!(truncated.contains("is truncated") && truncated.contains("bytes"), "{truncated}");
    let empty = case("empty.backup", b"");
    assert!(empty.contains("not a xyte-edge backup: it is empty"), "{empty}");
    let text = case("notes.txt", b"XYTE_API_KEY=abc\n");
    assert!(text.contains("not a xyte-edge backup: it is not an SQLite database"), "{text}");
    // An SQLite database that is not one of ours: the daemon's own database file, for instance.
    let foreign = case("db.backup", &before);
    assert!(foreign.contains("without a backup_manifest table"), "{foreign}");
    // Damage inside: a page of the copy overwritten (the header still promises the right length).
    let mut damaged = bytes.clone();
    let page = u16::from_be_bytes([bytes[16], bytes[17]]) as usize;
    for b in &mut damaged[page + 8..page * 2] {
        *b = 0x5a;
    }
    let damaged = case("damaged.backup", &damaged);
    assert!(damaged.contains("is damaged"), "{damaged}");

    // A newer schema: refused naming both versions.
    let newer = dir.path().join("newer.backup");
    std::fs::copy(&good, &newer).unwrap();
    Connection::open(&newer).unwrap().pragma_update(None, "user_version", store::schema_version() + 1).unwrap();
    let e = restore(&newer, &target, "T").unwrap_err();
    assert!(matches!(e, BackupError::TooNew { .. }), "{e}");
    assert!(e.to_string().contains(&format!("knows schema {} at most", store::schema_version())), "{e}");
    assert_eq!(std::fs::read(target.join(store::DB_FILE)).unwrap(), before);
}

#[test]
fn restore_refuses_while_a_daemon_holds_the_state_directory() {
    let (dir, store) = state_with_data();
    let state = dir.path().join("state");
    let good = dir.path().join("good.backup");
    create(&state, &[], false, &good).unwrap();
    let lock = StateLock::acquire(&state, true).unwrap();
    let e = restore(&good, &state, "T").unwrap_err();
    assert!(matches!(e, BackupError::Busy(_)), "{e}");
    assert!(e.to_string().contains(&format!("pid {}", std::process::id())), "{e}");
    assert!(!state.join("xyte-edge.db.before-restore-T").exists());
    drop(lock);
    store.close();
}

#[test]
fn secrets_stay_out_unless_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    let conf = etc.join("xyte-edge.conf");
    std::fs::write(&conf, "XYTE_API_KEY=key-6d2f91\nXYTE_WEBHOOK_SECRET=hook-77aa01-5e0c9b2d4f\nXYTE_ENV=test\n")
        .unwrap();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::write(etc.join("smtp-password"), "hook-77aa01-5e0c9b2d4f\n").unwrap();
    std::fs::write(etc.join("client.key"), "-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n").unwrap();
    std::fs::write(etc.join("presets.json"), "{\"rooms\": {}}").unwrap();
    std::fs::write(etc.join("xyte-edge.conf.dpkg-old"), "XYTE_API_KEY=old-key\n").unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(state.join("tls")).unwrap();
    std::fs::write(state.join("tls").join("key.pem"), "-----BEGIN PRIVATE KEY-----\n").unwrap();

    let env: std::collections::HashMap<String, String> = [
        ("XYTE_STATE_DIR", state.display().to_string()),
        ("XYTE_PRESETS_FILE", etc.join("presets.json").display().to_string()),
        ("XYTE_ALERTS_FILE", etc.join("alerts.json").display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let config =
        Config::load_from(&crate::config::LoadOptions { path: Some(conf.clone()), demo: false }, &env).unwrap();

    let by_name = |entries: &[FileEntry], name: &str| entries.iter().find(|e| e.path.ends_with(name)).cloned();
    let without = files::collect(&config, false);
    assert!(by_name(&without, "xyte-edge.conf.dpkg-old").is_none(), "{without:?}");
    let c = by_name(&without, "xyte-edge.conf").unwrap();
    let text = String::from_utf8(c.content.clone().unwrap()).unwrap();
    assert!(c.secrets_removed && c.mode == 0o640, "{c:?}");
    assert!(
        !text.contains("key-6d2f91") && !text.contains("hook-77aa01-5e0c9b2d4f") && text.contains("XYTE_ENV=test"),
        "{text}"
    );
    assert!(text.contains(&format!("XYTE_API_KEY={}", files::SECRET_MARK)), "{text}");
    for secret in ["smtp-password", "client.key", "key.pem"] {
        let e = by_name(&without, secret).unwrap();
        assert!(e.content.is_none() && e.note.starts_with("left out"), "{e:?}");
    }
    assert_eq!(by_name(&without, "presets.json").unwrap().content.unwrap(), b"{\"rooms\": {}}");

    let with = files::collect(&config, true);
    assert!(
        String::from_utf8(by_name(&with, "xyte-edge.conf").unwrap().content.unwrap()).unwrap().contains("key-6d2f91")
    );
    assert_eq!(by_name(&with, "key.pem").unwrap().path, Path::new("tls/key.pem"));
    assert!(by_name(&with, "smtp-password").unwrap().content.is_some());
}

#[test]
fn configuration_files_come_back_without_losing_what_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, content: Option<&str>, secrets_removed: bool| FileEntry {
        path: dir.path().join(name),
        kind: FileKind::Config,
        mode: 0o640,
        content: content.map(|c| c.as_bytes().to_vec()),
        note: String::new(),
        secrets_removed,
    };
    std::fs::write(dir.path().join("same.json"), "same").unwrap();
    std::fs::write(dir.path().join("changed.json"), "local edit").unwrap();
    std::fs::write(dir.path().join("xyte-edge.conf"), "XYTE_API_KEY=filled-in").unwrap();
    let entries = [
        file("same.json", Some("same"), false),
        file("changed.json", Some("from backup"), false),
        file("xyte-edge.conf", Some("XYTE_API_KEY=<secret left out of the backup>"), true),
        file("new.json", Some("new"), false),
        file("secret", None, false),
    ];
    let done = files::restore_config(&entries, "S").unwrap();
    let outcome: Vec<ConfigOutcome> = done.into_iter().map(|(_, o)| o).collect();
    let path = |n: &str| dir.path().join(n);
    assert_eq!(
        outcome,
        [
            ConfigOutcome::Unchanged,
            ConfigOutcome::Restored { set_aside: Some(path("changed.json.before-restore-S")) },
            ConfigOutcome::Beside(path("xyte-edge.conf.from-backup")),
            ConfigOutcome::Restored { set_aside: None },
            ConfigOutcome::LeftOut,
        ]
    );
    let read = |n: &str| std::fs::read_to_string(path(n)).unwrap();
    assert_eq!(read("changed.json"), "from backup");
    assert_eq!(read("changed.json.before-restore-S"), "local edit");
    assert_eq!(read("xyte-edge.conf"), "XYTE_API_KEY=filled-in");
    assert_eq!(std::fs::metadata(path("new.json")).unwrap().permissions().mode() & 0o777, 0o640);
    assert!(!path("secret").exists());
}
