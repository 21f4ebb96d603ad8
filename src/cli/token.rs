//! `xyte-edge token create|list|revoke`: manage LAN bearer tokens directly in the store.
//!
//! The commands open the same SQLite file as the daemon. WAL mode and the store's busy timeout let them run while
//! the daemon does; the daemon looks tokens up on every request, so a new or revoked token counts at once, with no
//! reload. They need only `XYTE_STATE_DIR`, never a Xyte credential ([`Config::load_local`]).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use clap::builder::PossibleValue;

use crate::config::{Config, LoadOptions, Role, values};
use crate::exit;
use crate::store::{self, Durability, Store, StoreError, StoreOptions, tokens};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print its secret once on stdout (details on stderr). Only its SHA-256 is stored.
    Create {
        /// Who or what the token is for, unique among active tokens (1-64 of A-Z a-z 0-9 . _ -); shown in logs
        /// and audit records as token:NAME.
        #[arg(long, value_name = "NAME", value_parser = token_name)]
        name: String,
        /// What the token may do.
        #[arg(long, value_name = "ROLE", value_enum, ignore_case = true)]
        role: Role,
        /// Lifetime: seconds, or a number with s, m, h or d (e.g. 90d, 12h, 30m). Without it the token never
        /// expires.
        #[arg(long, value_name = "DURATION", value_parser = lifetime)]
        expires: Option<Duration>,
        /// Configuration file (default /etc/xyte-edge/xyte-edge.conf); tokens live in its XYTE_STATE_DIR.
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// List every token with its role, state and times. Secrets are never stored, so never shown.
    List {
        /// Configuration file (default /etc/xyte-edge/xyte-edge.conf); tokens live in its XYTE_STATE_DIR.
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Revoke a token: requests using it are refused from now on. It stays listed as revoked.
    Revoke {
        /// The token's name, as shown by `xyte-edge token list`.
        #[arg(value_name = "NAME")]
        name: String,
        /// Configuration file (default /etc/xyte-edge/xyte-edge.conf); tokens live in its XYTE_STATE_DIR.
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
}

/// Lets clap list the roles (with what each may do) in `--help` and in the error for an unknown role.
impl clap::ValueEnum for Role {
    fn value_variants<'a>() -> &'a [Self] {
        &[Role::Viewer, Role::Operator, Role::Admin]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        let help = match self {
            Role::Viewer => "read devices, spaces, incidents, tickets, events",
            Role::Operator => "viewer, plus commands, room presets, tickets and incidents",
            Role::Admin => "everything, including claiming, changing and deleting devices",
        };
        Some(PossibleValue::new(self.as_str()).help(help))
    }
}

fn token_name(raw: &str) -> Result<String, String> {
    tokens::validate_name(raw).map(|()| raw.to_string())
}

/// The configuration's duration syntax (`3600`, `90s`, `30m`, `12h`, `90d`), from a second to ten years.
fn lifetime(raw: &str) -> Result<Duration, String> {
    values::duration_in(raw, Duration::from_secs(1), Duration::from_secs(3650 * 86_400))
}

/// A failure with the sysexits code it maps to.
struct Failure(u8, String);

pub fn run(command: TokenCommand) -> ExitCode {
    let (config, action) = match &command {
        TokenCommand::Create { config, .. } => (config, "create"),
        TokenCommand::List { config } => (config, "list"),
        TokenCommand::Revoke { config, .. } => (config, "revoke"),
    };
    let opts = LoadOptions { path: config.clone(), demo: false };
    let config = match Config::load_local(&opts) {
        Ok(c) => c,
        Err(e) => return super::config_failed(&opts, &e),
    };
    for w in &config.warnings {
        eprintln!("warning: {w}");
    }
    let result = open(&config.state_dir).and_then(|store| {
        let outcome = match command {
            TokenCommand::Create { name, role, expires, .. } => create(&store, &name, role, expires),
            TokenCommand::List { .. } => list(&store),
            TokenCommand::Revoke { name, .. } => revoke(&store, &name),
        };
        store.close();
        outcome
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(Failure(code, message)) => {
            eprintln!("xyte-edge token {action}: {message}");
            ExitCode::from(code)
        }
    }
}

/// Opens the daemon's store. Run as root against a state directory owned by another user (the daemon's), the
/// command first becomes that user, so any file it creates (the database itself on a fresh install) stays usable
/// by the daemon instead of becoming root-owned and unwritable for it.
fn open(state_dir: &Path) -> Result<Store, Failure> {
    if nix::unistd::geteuid().is_root()
        && let Ok(meta) = std::fs::metadata(state_dir)
        && meta.uid() != 0
    {
        become_owner(state_dir, meta.uid(), meta.gid())?;
    }
    check_access(state_dir)?;
    Store::open(state_dir, StoreOptions::default()).map_err(|e| store_failure(&e, &state_dir.join(store::DB_FILE)))
}

fn become_owner(dir: &Path, uid: u32, gid: u32) -> Result<(), Failure> {
    use nix::unistd::{Gid, Uid, setgid, setgroups, setuid};
    let gid = Gid::from_raw(gid);
    setgroups(&[gid]).and_then(|()| setgid(gid)).and_then(|()| setuid(Uid::from_raw(uid))).map_err(|e| {
        Failure(exit::NO_PERMISSION, format!("cannot switch to the owner (uid {uid}) of {}: {e}", dir.display()))
    })
}

/// Turns "cannot open" into the admin's real problem (EX_NOPERM with what to do) before SQLite words it vaguely.
fn check_access(state_dir: &Path) -> Result<(), Failure> {
    use nix::unistd::{AccessFlags, access};
    let db = state_dir.join(store::DB_FILE);
    let checks =
        [(state_dir.to_path_buf(), AccessFlags::W_OK | AccessFlags::X_OK), (db, AccessFlags::R_OK | AccessFlags::W_OK)];
    for (path, mode) in checks {
        if let Err(nix::errno::Errno::EACCES | nix::errno::Errno::EPERM | nix::errno::Errno::EROFS) =
            access(&path, mode)
        {
            return Err(no_permission(&path));
        }
    }
    Ok(())
}

fn no_permission(path: &Path) -> Failure {
    Failure(
        exit::NO_PERMISSION,
        format!(
            "permission denied on {} (running as uid {}); run the command as root (sudo xyte-edge token …) or as \
             the daemon's user, and check that the state directory and its files belong to that user",
            path.display(),
            nix::unistd::geteuid()
        ),
    )
}

/// EX_NOPERM for permission problems (naming the file, `db` when the error does not), EX_SOFTWARE otherwise.
fn store_failure(e: &StoreError, db: &Path) -> Failure {
    let denied = match e {
        StoreError::Io { source, .. } => source.kind() == std::io::ErrorKind::PermissionDenied,
        StoreError::Open { source, .. } | StoreError::Sql(source) => matches!(
            source.sqlite_error_code(),
            Some(rusqlite::ErrorCode::PermissionDenied | rusqlite::ErrorCode::ReadOnly)
        ),
        _ => false,
    };
    if denied {
        no_permission(&match e {
            StoreError::Io { path, .. } | StoreError::Open { path, .. } => path.clone(),
            _ => db.to_path_buf(),
        })
    } else {
        Failure(exit::SOFTWARE, e.to_string())
    }
}

fn create(store: &Store, name: &str, role: Role, expires: Option<Duration>) -> Result<u8, Failure> {
    let now = store::now_ms();
    let expires_at = expires.map(|d| now + d.as_millis() as i64);
    let owned = name.to_string();
    let secret = store
        .write_blocking(Durability::Full, move |c| tokens::create(c, &owned, role, expires_at, now))
        .map_err(|e| match e {
            // `tokens::create` reports refused input (and only that) as `Data`.
            StoreError::Data(m) => Failure(exit::USAGE, m),
            other => store_failure(&other, store.path()),
        })?;
    // The secret alone on stdout, so `TOKEN=$(xyte-edge token create …)` captures exactly it.
    println!("{secret}");
    let expiry = match (expires, expires_at) {
        (Some(d), Some(at)) => format!("expires {} (in {})", rfc3339(at), values::human(d)),
        _ => "never expires".to_string(),
    };
    eprintln!(
        "Created token {name:?} with role {role}; it {expiry}.\n\
         The secret above is shown only this once: only its SHA-256 is kept (in {}).\n\
         Clients send it as `Authorization: Bearer <token>`.",
        store.path().display()
    );
    Ok(exit::OK)
}

fn list(store: &Store) -> Result<u8, Failure> {
    let all = store.read_blocking(tokens::list).map_err(|e| store_failure(&e, store.path()))?;
    if all.is_empty() {
        eprintln!("no tokens yet; create one with `xyte-edge token create --name NAME --role viewer`");
        return Ok(exit::OK);
    }
    let now = store::now_ms();
    let never = |t: Option<i64>| t.map(rfc3339).unwrap_or_else(|| "never".into());
    let mut rows = vec![["NAME", "ROLE", "STATE", "CREATED", "EXPIRES", "LAST USED"].map(String::from)];
    for t in &all {
        rows.push([
            t.name.clone(),
            t.role.to_string(),
            t.state(now).to_string(),
            rfc3339(t.created_at),
            never(t.expires_at),
            never(t.last_used_at),
        ]);
    }
    let widths: Vec<usize> = (0..6).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    super::print_lines(rows.iter().map(|r| {
        let cells: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:w$}")).collect();
        cells.join("  ").trim_end().to_string()
    }));
    Ok(exit::OK)
}

fn revoke(store: &Store, name: &str) -> Result<u8, Failure> {
    let now = store::now_ms();
    let owned = name.to_string();
    let revoked = store
        .write_blocking(Durability::Full, move |c| tokens::revoke(c, &owned, now))
        .map_err(|e| store_failure(&e, store.path()))?;
    if revoked {
        // A running daemon keeps verified tokens in memory until this file changes (see `tokens::changes_file`).
        tokens::mark_changed(store.path()).map_err(|e| {
            Failure(
                exit::IO_ERROR,
                format!(
                    "revoked token {name:?} in {}, but could not tell a running daemon ({}: {e}); restart it \
                     (systemctl restart xyte-edge) so that requests using the token are refused",
                    store.path().display(),
                    tokens::changes_file(store.path()).display()
                ),
            )
        })?;
        println!("revoked token {name:?}; requests using it are refused from now on");
        return Ok(exit::OK);
    }
    // Nothing active by that name: say why. Revoking twice is not an error, so scripts can be re-run.
    let owned = name.to_string();
    let found = store.read_blocking(move |c| tokens::get(c, &owned)).map_err(|e| store_failure(&e, store.path()))?;
    match found {
        None => Err(Failure(exit::USAGE, format!("no token named {name:?}; see `xyte-edge token list`"))),
        Some(t) => {
            let (what, at) = match t.revoked_at {
                Some(at) => ("was already revoked", at),
                None => ("has already expired", t.expires_at.unwrap_or(now)),
            };
            println!("token {name:?} {what} at {} and is refused; nothing changed", rfc3339(at));
            Ok(exit::OK)
        }
    }
}

/// ms since the epoch as RFC 3339 in UTC, to the second.
fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}
