//! Periodic backups (`XYTE_BACKUP_DIR`, `XYTE_BACKUP_INTERVAL`, `XYTE_BACKUP_KEEP`): the daemon writes the file
//! `xyte-edge backup` would (without secrets) every interval, and keeps the newest few.
//!
//! An idle gateway writes nothing (README, the idle disk-write budget): a backup is skipped when no commit happened
//! since the last one, which SQLite tells by `PRAGMA data_version` on a connection of our own (it changes whenever
//! another connection — the daemon's writer — commits).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OpenFlags};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{BackupSchedule, Config};
use crate::store;

/// `xyte-edge-HOST-STAMP.backup`: the name of every backup file (the CLI's default too), so pruning touches only ours.
pub fn file_name(host: &str, stamp: &str) -> String {
    super::stamped_name("xyte-edge", host, stamp, "backup")
}

fn is_ours(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("xyte-edge-") && n.ends_with(".backup"))
}

pub fn start(config: &Config, tasks: &TaskTracker, shutdown: &CancellationToken) {
    let Some(schedule) = config.backup.clone() else { return };
    tracing::info!(
        dir = %schedule.dir.display(),
        "periodic backups every {}, keeping {}",
        crate::config::values::human(schedule.interval),
        schedule.keep
    );
    tasks.spawn(run(config.clone(), schedule, shutdown.clone()));
}

async fn run(config: Config, schedule: BackupSchedule, shutdown: CancellationToken) {
    let db = config.state_dir.join(store::DB_FILE);
    let watcher =
        match Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("periodic backups are off: cannot open {}: {e}", db.display());
                return;
            }
        };
    let watcher = std::sync::Mutex::new(watcher);
    let data_version =
        || -> Option<i64> { watcher.lock().ok()?.query_row("PRAGMA data_version", [], |r| r.get(0)).ok() };
    // The first backup is due one interval after the newest one already there (a restart does not add one).
    let mut wait = newest(&schedule.dir)
        .and_then(|t| t.elapsed().ok())
        .map_or(Duration::ZERO, |age| schedule.interval.saturating_sub(age));
    let mut backed_up_at: Option<i64> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = schedule.interval;
        let version = data_version();
        if version.is_some() && version == backed_up_at {
            tracing::info!("periodic backup skipped: nothing changed since the last one");
            continue;
        }
        let (cfg, sched) = (config.clone(), schedule.clone());
        match tokio::task::spawn_blocking(move || write_one(&cfg, &sched)).await {
            Ok(Ok((path, manifest))) => {
                backed_up_at = version;
                crate::metrics::backup(Some(store::now_ms() / 1000));
                tracing::info!(file = %path.display(), "backup written: {}", manifest.counts);
            }
            Ok(Err(e)) => {
                crate::metrics::backup(None);
                tracing::warn!(dir = %schedule.dir.display(), "periodic backup failed: {e}");
            }
            Err(e) => {
                crate::metrics::backup(None);
                tracing::warn!("periodic backup panicked: {e}");
            }
        }
    }
}

fn write_one(config: &Config, schedule: &BackupSchedule) -> Result<(PathBuf, super::Manifest), String> {
    let hint = |e: std::io::Error| {
        let mut text = format!("cannot use {}: {e}", schedule.dir.display());
        if e.kind() == std::io::ErrorKind::ReadOnlyFilesystem || e.kind() == std::io::ErrorKind::PermissionDenied {
            text.push_str(
                " (the packaged unit lets the daemon write only under /var/lib/xyte-edge; add the directory with \
                 ReadWritePaths= in `systemctl edit xyte-edge`, owned by the xyte-edge user)",
            );
        }
        text
    };
    if !schedule.dir.exists() {
        std::fs::create_dir_all(&schedule.dir).map_err(hint)?;
    }
    let dest = schedule.dir.join(file_name(&crate::config::host_name(), &super::stamp_now()));
    let files = super::files::collect(config, false);
    let manifest = super::create(&config.state_dir, &files, false, &dest).map_err(|e| match e {
        super::BackupError::Io { source, .. } => hint(source),
        other => other.to_string(),
    })?;
    prune(&schedule.dir, schedule.keep);
    Ok((dest, manifest))
}

/// The modification time of the newest backup in `dir`.
fn newest(dir: &Path) -> Option<SystemTime> {
    ours_by_age(dir).last().map(|(t, _)| *t)
}

fn ours_by_age(dir: &Path) -> Vec<(SystemTime, PathBuf)> {
    let Ok(read) = std::fs::read_dir(dir) else { return vec![] };
    let mut found: Vec<(SystemTime, PathBuf)> = read
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| is_ours(p))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    found.sort();
    found
}

/// Deletes all but the newest `keep` backups in `dir` (only files named like ours).
fn prune(dir: &Path, keep: usize) {
    let found = ours_by_age(dir);
    for (_, path) in found.iter().take(found.len().saturating_sub(keep)) {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!("cannot delete the old backup {}: {e}", path.display());
        }
    }
}
