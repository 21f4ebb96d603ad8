//! The SQLite store: one file in `XYTE_STATE_DIR`, WAL mode, one writer thread that owns the write
//! connection, and a small pool of read-only connections.
//!
//! Writers send closures to the writer thread and await the reply. The thread drains whatever is queued into one
//! `BEGIN IMMEDIATE` transaction (group commit: one fsync for many callers), runs each job inside its own savepoint so
//! a failing job rolls back alone, and replies only after `COMMIT` returned — so an acknowledged write is on disk
//! with the durability the caller asked for. Reads never wait for the writer (WAL readers see the last commit).

pub mod alerts;
pub mod cache;
pub mod context;
pub mod events;
pub mod lock;
pub mod schedules;
pub mod tasks;
pub mod tokens;
pub mod uplink;
pub mod webhooks;

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use crate::systemd::Heartbeat;

pub const DB_FILE: &str = "xyte-edge.db";

/// Schema migrations, applied in order; `PRAGMA user_version` counts how many ran. Append, never edit.
const MIGRATIONS: &[&str] = &[
    include_str!("schema.sql"),
    include_str!("outbox_depth.sql"),
    // 3: a task whose last POST may have reached Xyte unseen was marked by the text 'unknown outcome' in
    // `last_error`, which any error message could have spelt; now a column (the text stays, for people). Only a queued
    // task's mark meant anything: on a task past `queued` it was left over from an attempt already reconciled.
    "ALTER TABLE tasks ADD COLUMN outcome_unknown INTEGER NOT NULL DEFAULT 0;
     UPDATE tasks SET outcome_unknown = 1 WHERE state = 'queued' AND last_error = 'unknown outcome';",
    // 4: the MQTT uplink's own records (store/uplink.rs): its connection counter, how far the event log was
    // delivered to the broker, and which device states it left retained there.
    "CREATE TABLE uplink (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;",
    include_str!("runs.sql"),
    include_str!("schedules.sql"),
    include_str!("alerts.sql"),
];

/// The schema version this release writes (`PRAGMA user_version` once every migration ran).
pub fn schema_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Jobs merged into one transaction at most; bounds the latency a single commit adds to the first caller.
const MAX_BATCH: usize = 256;
/// Read connections kept open while idle.
const READERS: usize = 3;
/// Read connections open at once, at most: a burst of concurrent reads (a thousand SSE clients connecting, each
/// reading the log once) waits for one to come back instead of opening a connection each — every one costs a
/// page cache and a parsed schema, and the benchmark saw 450 of them at once (BENCHMARKS.md).
const MAX_READERS: usize = 8;

/// How long a read waits for a connection at [`MAX_READERS`] before it opens one more.
const READER_WAIT: Duration = Duration::from_secs(2);

/// The read connections: those idle, and how many are open (idle or in use).
struct Readers {
    idle: Vec<Connection>,
    open: usize,
}
/// Below this much free space on the state directory's filesystem, readiness reports the disk as full: the WAL and
/// checkpoints need room to grow, and an operator should hear about it before the first write fails.
pub const MIN_FREE_BYTES: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot prepare {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error(
        "{path} failed its integrity check ({detail}); stop xyte-edge, move the file aside and start again to \
         rebuild the cache from Xyte (queued commands and the event log in that file would be lost)"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "{path} has schema version {found}, newer than this xyte-edge understands ({known}); install the newer \
         version again or restore a backup"
    )]
    TooNew { path: PathBuf, found: i64, known: i64 },
    #[error(
        "cannot upgrade {path} from schema version {from} to {to}: migration {failed} failed ({source}); the upgrade \
         was rolled back, the file is as the previous release left it"
    )]
    Migrate { path: PathBuf, from: i64, to: i64, failed: usize, source: rusqlite::Error },
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("stored data could not be read: {0}")]
    Data(String),
    #[error("commit failed: {0}")]
    Commit(String),
    /// SQLite could not write for lack of space (SQLITE_FULL, or ENOSPC under it). Kept apart from other failures
    /// so callers can say plainly that nothing was stored and that freeing space is the cure.
    #[error("disk full: the filesystem holding {dir} has no space left ({detail})")]
    DiskFull { dir: PathBuf, detail: String },
    #[error("the store is closed")]
    Closed,
    /// A fetch's answer was not stored as fresh: a write through the daemon invalidated the resource after the fetch
    /// began (counted by `crate::cache`), so what Xyte said may predate the write.
    #[error("not stored: the resource was invalidated after this was fetched")]
    Invalidated,
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Data(e.to_string())
    }
}

impl StoreError {
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::DiskFull { .. })
    }
}

impl From<StoreError> for crate::error::Error {
    fn from(e: StoreError) -> Self {
        use crate::error::{Error, ErrorCode};
        match e {
            // An agent must be able to tell "not stored, retry later" from a bug; the raw SQLite text told it nothing.
            StoreError::DiskFull { dir, .. } => Error::new(
                ErrorCode::StorageFull,
                format!(
                    "disk full: the gateway's state directory {} has no space left, so nothing was stored: a command \
                     sent now was not queued (commands acknowledged earlier are kept and will be delivered)",
                    dir.display()
                ),
            )
            .with_hint("free space on that filesystem and retry; no restart is needed, and GET /readyz turns 200 once writes work again"),
            e => Error::internal(format!("local store: {e}")),
        }
    }
}

/// Whether SQLite failed for lack of space: its unix layer turns ENOSPC from write(2) into SQLITE_FULL.
fn is_full(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
}

/// Free bytes for an unprivileged writer on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let s = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Ok(s.blocks_available() as u64 * s.fragment_size() as u64)
}

/// How hard a commit must be flushed: `Full` for acknowledged commands (never lost), `Normal` for the rest (WAL with
/// `synchronous=NORMAL` survives a process crash; a power loss may drop the last transactions, never corrupt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    Normal,
    Full,
}

/// Why a batch did not commit, told to every job in it.
#[derive(Debug, Clone)]
struct CommitFailure {
    disk_full: bool,
    message: String,
}

impl CommitFailure {
    fn of(e: &rusqlite::Error) -> Self {
        CommitFailure { disk_full: is_full(e), message: e.to_string() }
    }
}

/// Called after the batch commit with its outcome; delivers the job's own result to its caller.
type Deliver = Box<dyn FnOnce(Result<(), CommitFailure>) + Send>;
/// Runs inside the batch transaction (or is skipped with `None` when the transaction could not start); says whether
/// the job succeeded (else its savepoint is rolled back).
type Work = Box<dyn FnOnce(Option<&Connection>) -> (bool, Deliver) + Send>;

struct Job {
    durability: Durability,
    work: Work,
}

struct Inner {
    path: PathBuf,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    readers: Mutex<Readers>,
    /// Signalled when a reader connection comes back (or closes), for readers waiting at [`MAX_READERS`].
    reader_back: Condvar,
    heartbeat: Heartbeat,
    /// Set when a write failed for lack of space, cleared by the next commit that changed rows (see `writer_loop`).
    full: Arc<AtomicBool>,
}

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug, Clone, Default)]
pub struct StoreOptions {}

impl Store {
    /// Opens (creating if needed) the database in `state_dir`, checks it, migrates it and starts the writer.
    pub fn open(state_dir: &Path, _opts: StoreOptions) -> Result<Store, StoreError> {
        prepare_dir(state_dir)?;
        let path = state_dir.join(DB_FILE);
        if !path.exists() {
            // SQLite gives the -wal and -shm files the database's mode, so 0600 here keeps all three private.
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|source| StoreError::Io { path: path.clone(), source })?;
        }
        let conn = Connection::open(&path).map_err(|source| StoreError::Open { path: path.clone(), source })?;
        // Before anything may write (even switching the journal mode): a newer release's file is left as it is.
        refuse_newer(&conn, &path)?;
        configure_writer(&conn).map_err(|source| StoreError::Open { path: path.clone(), source })?;
        check_integrity(&conn, &path)?;
        migrate(&conn, &path)?;
        // The integrity check read every page into this connection's cache; the writer needs few of them again.
        conn.release_memory().map_err(|source| StoreError::Open { path: path.clone(), source })?;

        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(open_reader(&path)?);
        }
        let heartbeat = Heartbeat::new("store-writer");
        heartbeat.beat();
        let (tx, rx) = mpsc::channel();
        let beat = heartbeat.clone();
        let full = Arc::new(AtomicBool::new(false));
        let flag = full.clone();
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(conn, rx, beat, flag))
            .map_err(|source| StoreError::Io { path: path.clone(), source })?;
        Ok(Store {
            inner: Arc::new(Inner {
                path,
                jobs: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(writer)),
                readers: Mutex::new(Readers { open: readers.len(), idle: readers }),
                reader_back: Condvar::new(),
                heartbeat,
                full,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn state_dir(&self) -> &Path {
        self.inner.path.parent().unwrap_or(Path::new("."))
    }

    /// Whether the store can write now, for readiness. Cheap while all is well (an empty transaction proves the
    /// writer is alive, and a statfs that there is room); after a write failed for lack of space, a real one-row
    /// write is tried instead, so readiness comes back as soon as space does, without a restart — and costs no
    /// disk writes on a healthy gateway.
    pub async fn check_writable(&self) -> Result<(), StoreError> {
        if self.inner.full.load(Ordering::Relaxed) {
            let now = now_ms();
            self.write(Durability::Normal, move |c| {
                c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('write_probe', ?1)", [now.to_string()])?;
                Ok(())
            })
            .await?;
        } else {
            self.write(Durability::Normal, |c| Ok(c.execute_batch("SELECT 1")?)).await?;
        }
        let dir = self.state_dir().to_path_buf();
        match free_bytes(&dir) {
            Ok(free) if free < MIN_FREE_BYTES => {
                Err(StoreError::DiskFull { dir, detail: format!("{free} bytes free, under {MIN_FREE_BYTES}") })
            }
            _ => Ok(()),
        }
    }

    /// The writer thread's liveness, for the systemd watchdog (it beats at least every second, even when idle).
    pub fn heartbeat(&self) -> Heartbeat {
        self.inner.heartbeat.clone()
    }

    fn submit<T, F>(&self, durability: Durability, f: F) -> Result<oneshot::Receiver<Result<T, StoreError>>, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let dir = self.state_dir().to_path_buf();
        let full = self.inner.full.clone();
        let work: Work = Box::new(move |conn| {
            let outcome = match conn {
                Some(conn) => f(conn),
                None => Err(StoreError::Closed),
            };
            let ok = outcome.is_ok();
            let deliver: Deliver = Box::new(move |commit| {
                let result = match (commit, outcome) {
                    (Err(e), _) if e.disk_full => Err(StoreError::DiskFull { dir, detail: e.message }),
                    (Err(e), _) => Err(StoreError::Commit(e.message)),
                    // A statement can meet the full disk itself (a page cache spilling into the WAL).
                    (Ok(()), Err(StoreError::Sql(e))) if is_full(&e) => {
                        full.store(true, Ordering::Relaxed);
                        Err(StoreError::DiskFull { dir, detail: e.to_string() })
                    }
                    (Ok(()), outcome) => outcome,
                };
                let _ = reply.send(result);
            });
            (ok, deliver)
        });
        let jobs = self.inner.jobs.lock().map_err(|_| StoreError::Closed)?;
        let sender = jobs.as_ref().ok_or(StoreError::Closed)?;
        sender.send(Job { durability, work }).map_err(|_| StoreError::Closed)?;
        Ok(rx)
    }

    /// Runs `f` in a write transaction on the writer thread; resolves after the commit.
    pub async fn write<T, F>(&self, durability: Durability, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(durability, f)?.await.map_err(|_| StoreError::Closed)?
    }

    /// [`Store::write`] for threads outside the runtime.
    pub fn write_blocking<T, F>(&self, durability: Durability, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(durability, f)?.blocking_recv().map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on a read-only connection on a blocking thread.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.read_blocking(f))
            .await
            .map_err(|e| StoreError::Data(e.to_string()))?
    }

    /// A read on the calling thread. Besides the CLI and tests, async code uses it for short reads (a primary-key
    /// lookup, a collection of a few rows): the benchmark (BENCHMARKS.md) found that handing microsecond lookups to
    /// the blocking pool cost more than the lookups (thread wake-ups and context switches on a 2-core gateway, three
    /// per cached tool call). WAL readers never wait for the writer; anything that scans many rows uses
    /// [`Store::read`].
    pub fn read_blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError>,
    {
        let conn = self.take_reader()?;
        let result = f(&conn);
        if let Ok(mut pool) = self.inner.readers.lock() {
            if pool.idle.len() < READERS {
                pool.idle.push(conn);
            } else {
                pool.open -= 1;
            }
        }
        self.inner.reader_back.notify_one();
        result
    }

    /// An idle read connection, else a new one while fewer than [`MAX_READERS`] are open, else the next one to come
    /// back (reads are short: a wait is one read's time). Past [`READER_WAIT`] it opens one anyway, so a read made
    /// while holding another connection can never wait for itself.
    fn take_reader(&self) -> Result<Connection, StoreError> {
        let deadline = Instant::now() + READER_WAIT;
        let mut pool = self.inner.readers.lock().map_err(|_| StoreError::Closed)?;
        loop {
            if let Some(conn) = pool.idle.pop() {
                return Ok(conn);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if pool.open < MAX_READERS || left.is_zero() {
                pool.open += 1;
                drop(pool);
                return open_reader(&self.inner.path).inspect_err(|_| {
                    if let Ok(mut pool) = self.inner.readers.lock() {
                        pool.open -= 1;
                    }
                    self.inner.reader_back.notify_one();
                });
            }
            pool = self.inner.reader_back.wait_timeout(pool, left).map_err(|_| StoreError::Closed)?.0;
        }
    }

    /// Drops the SQLite page caches' clean pages, on the writer and the idle readers: after a sync cycle they hold
    /// the pages it wrote or read (about 1 MiB for 500 devices), which the kernel's page cache also has, so the
    /// next statement that needs one reads it from there in microseconds. Best effort: a failure only means the pages
    /// stay cached (a closed store has nothing to release).
    pub async fn release_page_caches(&self) {
        if let Ok(pool) = self.inner.readers.lock() {
            for conn in pool.idle.iter() {
                let _ = conn.release_memory();
            }
        }
        let _ = self.write(Durability::Normal, |c| Ok(c.release_memory()?)).await;
    }

    /// Stops the writer after it has committed everything queued, and waits for it. Idempotent.
    pub fn close(&self) {
        if let Ok(mut jobs) = self.inner.jobs.lock() {
            jobs.take();
        }
        let handle = self.inner.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

/// Creates the state directory (0700) when it does not exist yet.
pub fn prepare_dir(dir: &Path) -> Result<(), StoreError> {
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io { path: dir.into(), source })?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|source| StoreError::Io { path: dir.into(), source })?;
    }
    Ok(())
}

fn configure_writer(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::InvalidQuery);
    }
    // Bound the WAL file on small flash: checkpoints truncate it back to this size.
    conn.execute_batch(
        "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON; PRAGMA journal_size_limit=67108864; \
         PRAGMA wal_autocheckpoint=1000;",
    )
}

fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn =
        Connection::open_with_flags(path, flags).map_err(|source| StoreError::Open { path: path.into(), source })?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // Each connection's page cache would otherwise grow to 2 MiB (SQLite's default), 6 MiB for the three readers of
    // a large organization; a page not cached here is a read from the kernel's page cache. Hot reads are served
    // from parsed copies (`crate::cache`) anyway.
    conn.execute_batch("PRAGMA query_only=ON; PRAGMA cache_size=-512;")?;
    Ok(conn)
}

pub(crate) fn check_integrity(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let mut stmt = conn.prepare("PRAGMA integrity_check")?;
    let rows: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    if rows.len() == 1 && rows[0] == "ok" {
        Ok(())
    } else {
        Err(StoreError::Corrupt { path: path.into(), detail: rows.into_iter().take(3).collect::<Vec<_>>().join("; ") })
    }
}

/// A database written by a newer release (a downgrade, or a restored backup from a newer gateway) is not ours to
/// change: refused with what to do, touching nothing.
pub(crate) fn refuse_newer(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let known = MIGRATIONS.len() as i64;
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|source| StoreError::Open { path: path.into(), source })?;
    if found > known {
        return Err(StoreError::TooNew { path: path.into(), found, known });
    }
    Ok(())
}

/// Brings the schema up to date in one transaction: an upgrade that fails half-way (a crash, a full disk) leaves
/// the database as the previous release wrote it, and that release can still open it.
fn migrate(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let known = MIGRATIONS.len() as i64;
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found >= known {
        return Ok(());
    }
    let tx = conn.unchecked_transaction()?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        // Dropping `tx` on the way out rolls back every migration of this upgrade.
        tx.execute_batch(sql).map_err(|source| StoreError::Migrate {
            path: path.into(),
            from: found,
            to: known,
            failed: i + 1,
            source,
        })?;
    }
    tx.pragma_update(None, "user_version", known)?;
    tx.commit()?;
    Ok(())
}

/// The longest a `Normal` commit stays unflushed: after a power loss at most this much is missing (README, Guarantees).
const FLUSH_WITHIN: Duration = Duration::from_secs(1);

fn writer_loop(conn: Connection, jobs: mpsc::Receiver<Job>, heartbeat: Heartbeat, full: Arc<AtomicBool>) {
    let mut sync_full = false;
    // When the oldest `Normal` commit not yet flushed to disk was made.
    let mut unflushed: Option<Instant> = None;
    loop {
        heartbeat.beat();
        if unflushed.is_some_and(|t| t.elapsed() >= FLUSH_WITHIN) {
            // With synchronous=NORMAL the WAL is only fsynced at checkpoints; a passive one flushes it (and never
            // waits for readers). An idle store has nothing unflushed and writes nothing here.
            let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            unflushed = None;
        }
        let wait = unflushed.map_or(FLUSH_WITHIN, |t| FLUSH_WITHIN.saturating_sub(t.elapsed()));
        let first = match jobs.recv_timeout(wait) {
            Ok(job) => job,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let want_full = batch.iter().any(|j| j.durability == Durability::Full);
        if want_full != sync_full {
            let level = if want_full { "FULL" } else { "NORMAL" };
            if conn.pragma_update(None, "synchronous", level).is_ok() {
                sync_full = want_full;
            }
        }
        let changes = conn.total_changes();
        match run_batch(&conn, batch) {
            // Logged once per episode: every caller is told anyway, and a full disk must not flood the journal.
            Err(e) if e.disk_full && !full.swap(true, Ordering::Relaxed) => {
                tracing::error!("disk full: writes to the store fail ({}); free space on its filesystem", e.message);
            }
            // Only a commit that wrote something proves there is room again.
            Ok(()) if conn.total_changes() != changes && full.swap(false, Ordering::Relaxed) => {
                tracing::warn!("the store accepts writes again: space is back");
            }
            _ => {}
        }
        if sync_full {
            // A FULL commit fsyncs the whole WAL, earlier `Normal` commits included.
            unflushed = None;
        } else {
            unflushed.get_or_insert_with(Instant::now);
        }
    }
    // Leave a small WAL behind for the next start; failure here only costs start-up time.
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
}

/// Runs the jobs in one transaction and tells each its outcome; returns the commit's.
fn run_batch(conn: &Connection, batch: Vec<Job>) -> Result<(), CommitFailure> {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let failure = CommitFailure::of(&e);
        for job in batch {
            // The job never ran; tell its caller why.
            let (_, deliver) = (job.work)(None);
            deliver(Err(failure.clone()));
        }
        return Err(failure);
    }
    let mut delivers = Vec::with_capacity(batch.len());
    for job in batch {
        let savepoint = conn.execute_batch("SAVEPOINT job");
        let (ok, deliver) = (job.work)(Some(conn));
        let rollback = !ok || savepoint.is_err();
        let end = if rollback { "ROLLBACK TO job; RELEASE job" } else { "RELEASE job" };
        let _ = conn.execute_batch(end);
        delivers.push(deliver);
    }
    let commit = conn.execute_batch("COMMIT").map_err(|e| CommitFailure::of(&e));
    if commit.is_err() {
        // SQLite may or may not have rolled back already after SQLITE_FULL; make sure no transaction is left open.
        let _ = conn.execute_batch("ROLLBACK");
    }
    for deliver in delivers {
        deliver(commit.clone());
    }
    commit
}

/// Milliseconds since the epoch, the unit of every timestamp column.
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

#[cfg(test)]
mod tests;
