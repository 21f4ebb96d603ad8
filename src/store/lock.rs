//! The state directory's lock: `serve` holds it for its whole life, so `restore` can tell that a daemon is using the
//! database (replacing the file under a running writer would lose its next commits) and a second daemon started on
//! the same directory stops with a clear message instead of sharing the writer's role.
//!
//! An advisory `flock` on `xyte-edge.lock`: the kernel releases it when the holder dies, even by SIGKILL, so a
//! crashed daemon never leaves a stale lock behind. The file holds the holder's PID, for messages only.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

pub const LOCK_FILE: &str = "xyte-edge.lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another xyte-edge (pid {pid}) is using the state directory {dir}; stop it first (systemctl stop xyte-edge)",
        pid = .pid.map_or_else(|| "unknown".to_string(), |p| p.to_string()), dir = .dir.display()
    )]
    Held { dir: PathBuf, pid: Option<u32> },
    #[error("cannot lock {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Held while alive; dropping it (or the process ending) releases the lock.
#[derive(Debug)]
pub struct StateLock {
    _file: Flock<File>,
}

impl StateLock {
    /// Takes the lock without waiting. `write_pid`: the daemon records its PID; `restore` leaves the file as it is.
    pub fn acquire(dir: &Path, write_pid: bool) -> Result<StateLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| LockError::Io { path: path.clone(), source };
        let existed = path.exists();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io)?;
        if !existed {
            // Made by root (restore), the file must still be the service account's, or the daemon could not open it.
            give_to_owner_of(&path, dir).map_err(io)?;
        }
        let mut locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::Held { dir: dir.into(), pid: text.trim().parse().ok() });
            }
            Err((_, errno)) => return Err(io(std::io::Error::from(errno))),
        };
        if write_pid {
            let pid = std::process::id().to_string();
            locked
                .set_len(0)
                .and_then(|()| locked.rewind())
                .and_then(|()| locked.write_all(pid.as_bytes()))
                .map_err(io)?;
        }
        Ok(StateLock { _file: locked })
    }
}

/// Gives `path` the owner and group of `dir` when they differ: files made by root in the service's state directory
/// (by `restore`, or `backup` opening a stopped daemon's database) must stay usable by the service account. A no-op
/// for anyone but root (nobody else can give files away, and their files already belong to the right user).
pub fn give_to_owner_of(path: &Path, dir: &Path) -> std::io::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let want = std::fs::metadata(dir)?;
    let have = std::fs::symlink_metadata(path)?;
    if (have.uid(), have.gid()) != (want.uid(), want.gid()) {
        std::os::unix::fs::lchown(path, Some(want.uid()), Some(want.gid()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path(), true).unwrap();
        match StateLock::acquire(dir.path(), false) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        StateLock::acquire(dir.path(), false).unwrap();
    }
}
