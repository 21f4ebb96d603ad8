//! The files a backup carries besides the database: the configuration (the config file, room presets, alert rules
//! and whatever else lies in the configuration directory) and, with secrets, the generated TLS key and certificate.
//!
//! Without `--with-secrets` no secret leaves the box: secret values in a file are replaced by a marker, and a file
//! that *is* a secret (an API key file, a channel's password file, a private key) is recorded without content.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::{BackupError, FILES, io};
use crate::config::Config;
use crate::config::alerts::AlertRules;

/// Files larger than this are not configuration: recorded without content.
const MAX_FILE: u64 = 1024 * 1024;
/// What replaces a secret value in a file backed up without secrets.
pub const SECRET_MARK: &str = "<secret left out of the backup>";
/// The generated certificate's directory inside the state directory (`http::tls`).
const TLS_DIR: &str = "tls";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// Under the configuration directory (or named by a setting): restored with `restore --with-config`.
    Config,
    /// Under the state directory, by its path relative to it: restored with the database.
    State,
}

impl FileKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Config => "config",
            FileKind::State => "state",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Absolute for configuration files; relative to the state directory for state files.
    pub path: PathBuf,
    pub kind: FileKind,
    pub mode: u32,
    /// `None`: left out (see `note`).
    pub content: Option<Vec<u8>>,
    /// Why it was left out, or what was changed; empty when copied as it is.
    pub note: String,
    pub secrets_removed: bool,
}

/// The configuration files and state files to back up, as `Config` names them.
pub fn collect(config: &Config, with_secrets: bool) -> Vec<FileEntry> {
    let alerts = AlertRules::load(&config.alerts_file).ok();
    let secrets = config.secret_values(alerts.as_ref());
    let mut paths: Vec<PathBuf> = vec![config.presets_file.clone(), config.alerts_file.clone()];
    if let Some(file) = &config.config_file {
        paths.push(file.clone());
        if let Some(dir) = file.parent() {
            paths.extend(regular_files(dir).into_iter().filter(|p| !is_leftover(p)));
        }
    }
    paths.sort();
    paths.dedup();
    let mut entries: Vec<FileEntry> =
        paths.into_iter().filter(|p| p.is_file()).map(|p| entry(p, FileKind::Config, with_secrets, &secrets)).collect();
    // The generated TLS key: a restored gateway keeps its certificate (clients that trust it keep working) only when
    // the backup may carry secrets; otherwise it makes a new one on start.
    let tls = config.state_dir.join(TLS_DIR);
    for path in regular_files(&tls) {
        let mut e = entry(path.clone(), FileKind::State, true, &[]);
        e.path = path.strip_prefix(&config.state_dir).map(Path::to_path_buf).unwrap_or(path);
        if !with_secrets {
            e.content = None;
            e.note = "left out: the TLS key is a secret (a restored gateway makes a new certificate)".into();
        }
        entries.push(e);
    }
    entries
}

fn regular_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(read) = std::fs::read_dir(dir) else { return vec![] };
    let mut files: Vec<PathBuf> =
        read.filter_map(Result::ok).filter(|e| e.file_type().is_ok_and(|t| t.is_file())).map(|e| e.path()).collect();
    files.sort();
    files
}

/// What restores and package upgrades leave beside configuration files; not configuration themselves.
fn is_leftover(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    name.contains(".before-restore-")
        || name.ends_with(".from-backup")
        || name.contains(".dpkg-")
        || name.ends_with('~')
}

fn entry(path: PathBuf, kind: FileKind, with_secrets: bool, secrets: &[String]) -> FileEntry {
    let mut e = FileEntry { path, kind, mode: 0o600, content: None, note: String::new(), secrets_removed: false };
    let meta = match std::fs::metadata(&e.path) {
        Ok(m) => m,
        Err(err) => {
            e.note = format!("left out: cannot read it ({err})");
            return e;
        }
    };
    e.mode = meta.permissions().mode() & 0o7777;
    if meta.len() > MAX_FILE {
        e.note = format!("left out: {} bytes is more than a configuration file ({MAX_FILE} at most)", meta.len());
        return e;
    }
    let bytes = match std::fs::read(&e.path) {
        Ok(b) => b,
        Err(err) => {
            e.note = format!("left out: cannot read it ({err})");
            return e;
        }
    };
    if with_secrets {
        e.content = Some(bytes);
        return e;
    }
    let text = String::from_utf8_lossy(&bytes);
    let trimmed = text.trim();
    if secrets.iter().any(|s| s == trimmed) || text.contains("PRIVATE KEY") {
        e.note = "left out: it holds a secret (back up with --with-secrets to include it)".into();
        return e;
    }
    let mut out = text.to_string();
    for s in secrets {
        out = out.replace(s.as_str(), SECRET_MARK);
    }
    if out != text {
        e.secrets_removed = true;
        e.note = format!("secret values replaced by {SECRET_MARK}");
    }
    e.content = Some(if e.secrets_removed { out.into_bytes() } else { bytes });
    e
}

pub(super) fn read_rows(conn: &Connection) -> rusqlite::Result<Vec<FileEntry>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT path, kind, mode, content, note, secrets_removed FROM {FILES} ORDER BY kind, path"
    ))?;
    let rows = stmt.query_map([], |r| {
        let kind: String = r.get(1)?;
        Ok(FileEntry {
            path: PathBuf::from(r.get::<_, String>(0)?),
            kind: if kind == "state" { FileKind::State } else { FileKind::Config },
            mode: r.get(2)?,
            content: r.get(3)?,
            note: r.get(4)?,
            secrets_removed: r.get(5)?,
        })
    })?;
    rows.collect()
}

/// Writes the backup's state files (the TLS key and certificate) into `state_dir`; an existing `tls` directory is
/// set aside first, so the key and certificate never come from two different gateways.
pub(super) fn restore_state(
    files: &[FileEntry],
    state_dir: &Path,
    stamp: &str,
) -> Result<(Vec<PathBuf>, Option<PathBuf>), BackupError> {
    let carried: Vec<&FileEntry> = files.iter().filter(|f| f.kind == FileKind::State && f.content.is_some()).collect();
    if carried.is_empty() {
        return Ok((vec![], None));
    }
    let tls = state_dir.join(TLS_DIR);
    let mut set_aside = None;
    if tls.exists() {
        let to = state_dir.join(format!("{TLS_DIR}.before-restore-{stamp}"));
        std::fs::rename(&tls, &to).map_err(io(&tls))?;
        set_aside = Some(to);
    }
    let mut written = vec![];
    for f in carried {
        // Only plain relative names under the state directory: a crafted backup must not write elsewhere.
        if f.path.is_absolute() || f.path.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
            continue;
        }
        let path = state_dir.join(&f.path);
        if let Some(parent) = path.parent()
            && !parent.exists()
        {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700)).map_err(io(parent))?;
            crate::store::lock::give_to_owner_of(parent, state_dir).map_err(io(parent))?;
        }
        write_file(&path, f.mode & 0o700, f.content.as_deref().unwrap_or_default())?;
        crate::store::lock::give_to_owner_of(&path, state_dir).map_err(io(&path))?;
        written.push(path);
    }
    Ok((written, set_aside))
}

/// What `restore --with-config` did with one configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOutcome {
    Unchanged,
    /// Written; the file it replaced (if any) was kept at the path given.
    Restored {
        set_aside: Option<PathBuf>,
    },
    /// The backup's copy lacks secrets the current file has: written beside it, to merge by hand.
    Beside(PathBuf),
    /// The backup has no content for it (see the note).
    LeftOut,
}

/// Writes the backup's configuration files back where they were. A file whose secrets were left out never replaces
/// a file that exists (it would drop the secrets the operator has already filled in); a file that is replaced is
/// kept as `NAME.before-restore-STAMP`. Each gets its directory's owner and group and its recorded mode.
pub fn restore_config(files: &[FileEntry], stamp: &str) -> Result<Vec<(FileEntry, ConfigOutcome)>, BackupError> {
    let mut done = vec![];
    for f in files.iter().filter(|f| f.kind == FileKind::Config) {
        let Some(content) = f.content.as_deref() else {
            done.push((f.clone(), ConfigOutcome::LeftOut));
            continue;
        };
        if !f.path.is_absolute() {
            done.push((f.clone(), ConfigOutcome::LeftOut));
            continue;
        }
        let current = std::fs::read(&f.path).ok();
        let outcome = match current {
            Some(now) if now == content => ConfigOutcome::Unchanged,
            Some(_) if f.secrets_removed => {
                let beside = PathBuf::from(format!("{}.from-backup", f.path.display()));
                write_file(&beside, f.mode, content)?;
                give_to_parent_owner(&beside)?;
                ConfigOutcome::Beside(beside)
            }
            Some(_) => {
                let aside = PathBuf::from(format!("{}.before-restore-{stamp}", f.path.display()));
                std::fs::rename(&f.path, &aside).map_err(io(&f.path))?;
                write_file(&f.path, f.mode, content)?;
                give_to_parent_owner(&f.path)?;
                ConfigOutcome::Restored { set_aside: Some(aside) }
            }
            None => {
                if let Some(parent) = f.path.parent() {
                    std::fs::create_dir_all(parent).map_err(io(parent))?;
                }
                write_file(&f.path, f.mode, content)?;
                give_to_parent_owner(&f.path)?;
                ConfigOutcome::Restored { set_aside: None }
            }
        };
        done.push((f.clone(), outcome));
    }
    Ok(done)
}

fn give_to_parent_owner(path: &Path) -> Result<(), BackupError> {
    match path.parent() {
        Some(dir) => crate::store::lock::give_to_owner_of(path, dir).map_err(io(path)),
        None => Ok(()),
    }
}

/// Creates `path` (not through a symlink) with `mode` and `content`, flushed.
fn write_file(path: &Path, mode: u32, content: &[u8]) -> Result<(), BackupError> {
    use std::io::Write;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode & 0o7777)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io(path))?;
    // The umask may have narrowed the mode; the recorded one is what the file had.
    file.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777)).map_err(io(path))?;
    file.write_all(content).and_then(|()| file.sync_all()).map_err(io(path))
}
