//! Backups: one file an operator can copy off the box, holding a consistent copy of the database and the
//! configuration files; and restoring one.
//!
//! The file is itself an SQLite database: the daemon's tables as SQLite's online backup API copied them (one read
//! transaction while the daemon goes on writing — never a copy of a live WAL file), plus two tables of its own,
//! `backup_manifest` (what made it, when, which schema) and `backup_files` (the configuration files, and the TLS
//! key and certificate when secrets are included). So it can be checked with SQLite's integrity check, opened with
//! `sqlite3` to look inside, and restored by copying it back and dropping those two tables.

pub mod files;
pub mod periodic;

use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::store::{self, lock::StateLock};

pub use files::{FileEntry, FileKind};

/// The layout of `backup_manifest`/`backup_files`; a reader refuses a larger number (a newer format it cannot read).
pub const FORMAT: i64 = 1;
const MANIFEST: &str = "backup_manifest";
const FILES: &str = "backup_files";
/// How long the copy may wait for a lock (the daemon's checkpoint, a restore's rename) before giving up.
const BUSY_FOR: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("there is no database to back up at {0} (the daemon has not run with this state directory)")]
    NoDatabase(PathBuf),
    #[error("{path} is not a xyte-edge backup: {why}")]
    Foreign { path: PathBuf, why: String },
    #[error(
        "{path} is truncated: it has {len} bytes where its header promises {want}; copy it again from where it was made"
    )]
    Truncated { path: PathBuf, len: u64, want: u64 },
    #[error("{path} is damaged ({detail}); it cannot be restored, use another backup")]
    Damaged { path: PathBuf, detail: String },
    #[error(
        "{path} was made by xyte-edge {version} (database schema {found}); this xyte-edge {ours} knows schema {known} \
         at most: install xyte-edge {version} or newer to restore it"
    )]
    TooNew { path: PathBuf, version: String, found: i64, known: i64, ours: &'static str },
    #[error(transparent)]
    Busy(#[from] store::lock::LockError),
    #[error("backup of {path} failed: {source}")]
    Sql { path: PathBuf, source: rusqlite::Error },
}

fn sql(path: &Path) -> impl Fn(rusqlite::Error) -> BackupError + '_ {
    move |source| BackupError::Sql { path: path.into(), source }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io { path: path.into(), source }
}

/// What a backup says about itself (`backup_manifest`) and what it holds.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub format: i64,
    pub version: String,
    pub schema: i64,
    pub created_at: String,
    pub host: String,
    pub with_secrets: bool,
    pub counts: Counts,
    pub files: Vec<FileEntry>,
}

/// Rows worth naming to an operator: what the restored gateway will have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub devices: i64,
    pub tokens: i64,
    pub events: i64,
    pub commands_waiting: i64,
}

impl Counts {
    fn read(conn: &Connection) -> rusqlite::Result<Counts> {
        let one = |q: &str| conn.query_row(q, [], |r| r.get::<_, i64>(0));
        Ok(Counts {
            devices: one("SELECT COUNT(*) FROM cache WHERE resource = 'device'")?,
            tokens: one("SELECT COUNT(*) FROM tokens WHERE revoked_at IS NULL")?,
            events: one("SELECT COUNT(*) FROM events")?,
            commands_waiting: one("SELECT COUNT(*) FROM tasks WHERE state IN ('queued', 'held')")?,
        })
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} devices cached, {} tokens, {} events, {} commands waiting for delivery",
            self.devices, self.tokens, self.events, self.commands_waiting
        )
    }
}

/// Writes a backup of the database in `state_dir` and `files` to `dest` (0600; replaced whole, never half-written:
/// the copy goes to `dest.partial` and is renamed when complete and checked).
pub fn create(state_dir: &Path, files: &[FileEntry], with_secrets: bool, dest: &Path) -> Result<Manifest, BackupError> {
    let db = state_dir.join(store::DB_FILE);
    if !db.exists() {
        return Err(BackupError::NoDatabase(db));
    }
    // Read-write but never writing: a read-only connection could not create the -shm file of a stopped daemon's
    // database (SQLite gives files it creates as root the database's owner).
    let source = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(sql(&db))?;
    source.busy_timeout(BUSY_FOR).map_err(sql(&db))?;
    source.execute_batch("PRAGMA query_only=ON").map_err(sql(&db))?;
    store::refuse_newer(&source, &db).map_err(|e| BackupError::Damaged { path: db.clone(), detail: e.to_string() })?;

    let partial = PathBuf::from(format!("{}.partial", dest.display()));
    let _ = std::fs::remove_file(&partial);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&partial)
        .map_err(io(&partial))?;
    let made = (|| {
        let mut copy = Connection::open(&partial).map_err(sql(&partial))?;
        copy_pages(&source, &mut copy).map_err(sql(&db))?;
        drop(source);
        let manifest = annotate(&copy, files, with_secrets).map_err(sql(&partial))?;
        store::check_integrity(&copy, &partial)
            .map_err(|e| BackupError::Damaged { path: partial.clone(), detail: e.to_string() })?;
        drop(copy);
        std::fs::File::open(&partial).and_then(|f| f.sync_all()).map_err(io(&partial))?;
        std::fs::rename(&partial, dest).map_err(io(dest))?;
        sync_dir(dest);
        Ok(manifest)
    })();
    if made.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    made
}

/// The whole database in one step of the backup API: one read transaction, so the copy is one consistent moment
/// however much the daemon writes meanwhile (WAL readers never block the writer, nor it them). A step in pieces
/// would restart whenever the daemon committed.
fn copy_pages(source: &Connection, copy: &mut Connection) -> rusqlite::Result<()> {
    let deadline = Instant::now() + BUSY_FOR;
    {
        let backup = Backup::new(source, copy)?;
        loop {
            match backup.step(-1)? {
                StepResult::Done => break,
                StepResult::More => continue,
                StepResult::Busy | StepResult::Locked if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    return Err(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                        None,
                    ));
                }
            }
        }
    }
    // The copied header still says WAL; a backup is one self-contained file (the daemon switches back on start).
    copy.query_row("PRAGMA journal_mode=DELETE", [], |_| Ok(()))
}

/// Adds the backup's own tables to the copy and reads back what an operator is told.
fn annotate(copy: &Connection, files: &[FileEntry], with_secrets: bool) -> rusqlite::Result<Manifest> {
    let schema: i64 = copy.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let manifest = Manifest {
        format: FORMAT,
        version: env!("CARGO_PKG_VERSION").to_string(),
        schema,
        created_at: crate::cache::rfc3339(store::now_ms()).unwrap_or_default(),
        host: crate::config::host_name(),
        with_secrets,
        counts: Counts::read(copy)?,
        files: files.to_vec(),
    };
    let tx = copy.unchecked_transaction()?;
    tx.execute_batch(&format!(
        "CREATE TABLE {MANIFEST} (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
         CREATE TABLE {FILES} (path TEXT NOT NULL, kind TEXT NOT NULL, mode INTEGER NOT NULL, content BLOB,
                               note TEXT NOT NULL, secrets_removed INTEGER NOT NULL, PRIMARY KEY (kind, path));"
    ))?;
    for (key, value) in [
        ("format", FORMAT.to_string()),
        ("version", manifest.version.clone()),
        ("schema", schema.to_string()),
        ("created_at", manifest.created_at.clone()),
        ("host", manifest.host.clone()),
        ("with_secrets", u8::from(with_secrets).to_string()),
    ] {
        tx.execute(&format!("INSERT INTO {MANIFEST} (key, value) VALUES (?1, ?2)"), params![key, value])?;
    }
    for f in files {
        tx.execute(
            &format!(
                "INSERT INTO {FILES} (path, kind, mode, content, note, secrets_removed) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            ),
            params![f.path.to_string_lossy(), f.kind.as_str(), f.mode, f.content, f.note, f.secrets_removed],
        )?;
    }
    tx.commit()?;
    Ok(manifest)
}

/// Checks `path` as `restore` needs it: an SQLite file, whole, undamaged, made by xyte-edge, with a schema this
/// release can migrate. Reads it only.
pub fn inspect(path: &Path) -> Result<Manifest, BackupError> {
    check_header(path)?;
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| BackupError::Foreign { path: path.into(), why: format!("SQLite cannot open it ({e})") })?;
    let damaged = |e: rusqlite::Error| BackupError::Damaged { path: path.into(), detail: e.to_string() };
    let has_manifest: Option<String> = conn
        .query_row("SELECT name FROM sqlite_schema WHERE type = 'table' AND name = ?1", [MANIFEST], |r| r.get(0))
        .optional()
        .map_err(damaged)?;
    if has_manifest.is_none() {
        return Err(BackupError::Foreign {
            path: path.into(),
            why: format!("an SQLite database without a {MANIFEST} table (not made by `xyte-edge backup`)"),
        });
    }
    store::check_integrity(&conn, path).map_err(|e| match e {
        store::StoreError::Corrupt { detail, .. } => BackupError::Damaged { path: path.into(), detail },
        other => BackupError::Damaged { path: path.into(), detail: other.to_string() },
    })?;
    let get = |key: &str| -> Result<String, BackupError> {
        conn.query_row(&format!("SELECT value FROM {MANIFEST} WHERE key = ?1"), [key], |r| r.get(0))
            .optional()
            .map_err(damaged)?
            .ok_or_else(|| BackupError::Foreign { path: path.into(), why: format!("its manifest has no {key:?}") })
    };
    let number = |key: &str| -> Result<i64, BackupError> {
        let raw = get(key)?;
        raw.parse().map_err(|_| BackupError::Foreign { path: path.into(), why: format!("{key} is {raw:?}") })
    };
    let format = number("format")?;
    let version = get("version")?;
    if format > FORMAT {
        return Err(BackupError::TooNew {
            path: path.into(),
            version,
            found: number("schema")?,
            known: store::schema_version(),
            ours: env!("CARGO_PKG_VERSION"),
        });
    }
    let schema: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(damaged)?;
    if schema > store::schema_version() {
        return Err(BackupError::TooNew {
            path: path.into(),
            version,
            found: schema,
            known: store::schema_version(),
            ours: env!("CARGO_PKG_VERSION"),
        });
    }
    Ok(Manifest {
        format,
        version,
        schema,
        created_at: get("created_at")?,
        host: get("host")?,
        with_secrets: get("with_secrets")? == "1",
        counts: Counts::read(&conn).map_err(damaged)?,
        files: files::read_rows(&conn).map_err(damaged)?,
    })
}

/// SQLite's file header: the magic string, and a length that covers every page the header counts (a copy cut short
/// by a full disk or an interrupted transfer would otherwise show up only as a confusing error later).
fn check_header(path: &Path) -> Result<(), BackupError> {
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let len = file.metadata().map_err(io(path))?.len();
    let mut header = [0u8; 100];
    let read = file.read(&mut header).map_err(io(path))?;
    if read < 16 || &header[..16] != b"SQLite format 3\0" {
        let why = if len == 0 { "it is empty".to_string() } else { "it is not an SQLite database".to_string() };
        return Err(BackupError::Foreign { path: path.into(), why });
    }
    if read < 100 {
        return Err(BackupError::Truncated { path: path.into(), len, want: 100 });
    }
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536,
        n => u64::from(n),
    };
    let pages = u64::from(u32::from_be_bytes([header[28], header[29], header[30], header[31]]));
    // The page count is valid when the change counter matches "version-valid-for" (true for every file SQLite
    // 3.7.0 or later wrote, so for every backup).
    let valid = header[24..28] == header[92..96];
    if valid && len < pages * page_size {
        return Err(BackupError::Truncated { path: path.into(), len, want: pages * page_size });
    }
    Ok(())
}

/// What `restore` did, for the operator.
#[derive(Debug)]
pub struct Restored {
    pub manifest: Manifest,
    /// Where the database that was replaced went (with its -wal/-shm beside it), if there was one.
    pub set_aside: Option<PathBuf>,
    /// State files (the TLS key and certificate) written, and the directory they replaced.
    pub state_files: Vec<PathBuf>,
    pub state_set_aside: Option<PathBuf>,
}

/// Replaces the database in `state_dir` with the one in `backup` (after [`inspect`]), keeping the current one aside
/// as `xyte-edge.db.before-restore-STAMP`. Refuses while a daemon holds the state directory. Files are given the
/// state directory's owner (run as root, the service account must still own them).
pub fn restore(backup: &Path, state_dir: &Path, stamp: &str) -> Result<Restored, BackupError> {
    let manifest = inspect(backup)?;
    store::prepare_dir(state_dir)
        .map_err(|e| BackupError::Io { path: state_dir.into(), source: std::io::Error::other(e.to_string()) })?;
    let _lock = StateLock::acquire(state_dir, false)?;

    let db = state_dir.join(store::DB_FILE);
    let incoming = state_dir.join(format!("{}.restoring", store::DB_FILE));
    let _ = std::fs::remove_file(&incoming);
    std::fs::copy(backup, &incoming).map_err(io(&incoming))?;
    std::fs::set_permissions(&incoming, std::fs::Permissions::from_mode(0o600)).map_err(io(&incoming))?;
    {
        let conn = Connection::open(&incoming).map_err(sql(&incoming))?;
        // No VACUUM: the pages the two tables free (a few configuration files) are reused by the daemon, and it would
        // rewrite the whole database a second time.
        conn.execute_batch(&format!("DROP TABLE {MANIFEST}; DROP TABLE {FILES};")).map_err(sql(&incoming))?;
    }
    std::fs::File::open(&incoming).and_then(|f| f.sync_all()).map_err(io(&incoming))?;
    store::lock::give_to_owner_of(&incoming, state_dir).map_err(io(&incoming))?;

    let aside = PathBuf::from(format!("{}.before-restore-{stamp}", db.display()));
    let mut set_aside = None;
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", db.display()));
        if from.exists() {
            let to = PathBuf::from(format!("{}{suffix}", aside.display()));
            std::fs::rename(&from, &to).map_err(io(&from))?;
            if suffix.is_empty() {
                set_aside = Some(to);
            }
        }
    }
    std::fs::rename(&incoming, &db).map_err(io(&db))?;
    sync_dir(&db);

    let (state_files, state_set_aside) = files::restore_state(&manifest.files, state_dir, stamp)?;
    Ok(Restored { manifest, set_aside, state_files, state_set_aside })
}

/// Makes a rename in `path`'s directory durable (best effort: a failure leaves it to the next sync of the disk).
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
}

/// `YYYYMMDDTHHMMSSZ` in UTC: in the names of backups, support bundles and what a restore sets aside, sorting by
/// time.
pub fn stamp(t: time::OffsetDateTime) -> String {
    t.format(time::macros::format_description!("[year][month][day]T[hour][minute][second]Z")).unwrap_or_default()
}

pub fn stamp_now() -> String {
    stamp(time::OffsetDateTime::now_utc())
}

/// `PREFIX-HOST-STAMP.EXT`, the host name reduced to characters every filesystem and shell takes as they are.
pub fn stamped_name(prefix: &str, host: &str, stamp: &str, ext: &str) -> String {
    let host: String = host.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    format!("{prefix}-{host}-{stamp}.{ext}")
}

#[cfg(test)]
mod tests;
