//! A child process writing in a loop is SIGKILLed 20 times at varying moments; after every kill the database opens,
//! passes `integrity_check`, and holds every write the child reported as committed.
//!
//! The child is this test binary run again (`child_writer_loop`, ignored unless `XYTE_STORE_CRASH_CHILD` is set): it
//! mixes FULL commits (as acknowledged commands are), NORMAL event batches and cache snapshots, and prints the id of
//! each FULL write after the store acknowledged it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use xyte_edge::store::{Durability, Store, cache, events};

const ENV: &str = "XYTE_STORE_CRASH_CHILD";

#[test]
#[ignore = "child process of sigkill_20_times_never_corrupts_or_loses_acknowledged_writes"]
fn child_writer_loop() {
    let Ok(dir) = std::env::var(ENV) else { return };
    let store = Store::open(std::path::Path::new(&dir), Default::default()).expect("child opens the store");
    let start: i64 = store.read_blocking(|c| Ok(c.query_row("SELECT COUNT(*) FROM meta", [], |r| r.get(0))?)).unwrap();
    for i in start.. {
        let key = format!("ack-{i:08}");
        let k = key.clone();
        store
            .write_blocking(Durability::Full, move |c| {
                c.execute("INSERT INTO meta (key, value) VALUES (?1, 'acknowledged')", [&k])?;
                Ok(())
            })
            .unwrap();
        println!("{key}");
        let batch: Vec<_> =
            (0..20).map(|j| events::NewEvent::new("device.status_changed", json!({"i": i, "j": j}))).collect();
        store.write_blocking(Durability::Normal, move |c| events::append(c, &batch, i)).unwrap();
        let snapshot: Vec<_> = (0..50).map(|d| (format!("dev-{d}"), json!({"id": d, "round": i % 7}))).collect();
        store.write_blocking(Durability::Normal, move |c| cache::replace_set(c, "device", &snapshot, i)).unwrap();
    }
}

#[test]
fn sigkill_20_times_never_corrupts_or_loses_acknowledged_writes() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acknowledged: Vec<String> = Vec::new();
    for round in 0..20 {
        let mut child = Command::new(&exe)
            .args(["--exact", "child_writer_loop", "--nocapture", "--include-ignored", "--test-threads=1"])
            .env(ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill after a varying number of acknowledged writes (1..=40), so kills land at different points of the loop.
        let wanted = 1 + (round * 7) % 40;
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("ack-") && tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = 0;
        while seen < wanted {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    acknowledged.push(line);
                    seen += 1;
                }
                Err(e) => panic!("round {round}: child produced only {seen} acknowledgements: {e}"),
            }
        }
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        // Lines already written before the kill were acknowledged too.
        acknowledged.extend(rx.try_iter());
        reader.join().unwrap();

        let store = Store::open(dir.path(), Default::default())
            .unwrap_or_else(|e| panic!("round {round}: the database does not open after SIGKILL: {e}"));
        let (check, keys): (String, Vec<String>) = store
            .read_blocking(|c| {
                let check = c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
                let mut s = c.prepare("SELECT key FROM meta WHERE key LIKE 'ack-%'")?;
                let keys = s.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
                Ok((check, keys))
            })
            .unwrap();
        assert_eq!(check, "ok", "round {round}");
        let keys: std::collections::HashSet<String> = keys.into_iter().collect();
        for ack in &acknowledged {
            assert!(keys.contains(ack), "round {round}: acknowledged write {ack} was lost");
        }
        store.close();
    }
    let wanted_total: usize = (0..20).map(|round| 1 + (round * 7) % 40).sum();
    assert!(acknowledged.len() >= wanted_total, "every round waited for its acknowledgements");
}
