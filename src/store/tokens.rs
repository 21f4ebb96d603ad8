//! LAN bearer tokens: 256-bit random secrets, shown once, stored only as their SHA-256.
//!
//! The database never holds a secret, so a copied state directory (a backup, a support bundle) grants nothing.
//! A SHA-256 without salt or stretching is enough here because the secrets are 256 random bits, not passwords:
//! there is nothing to guess. Lookups go by hash (an index), and the stored hash is then compared to the
//! computed one in constant time as defence in depth. Rows are kept after revocation or expiry so `token list`
//! can show what happened to a token; a new token with the name of a dead one replaces it.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use super::StoreError;
use crate::config::Role;

/// Prefix of every secret, so a token pasted into a chat, a log or a repository is recognisable (and greppable by
/// secret scanners) as a xyte-edge credential.
pub const PREFIX: &str = "xe_";
/// Random bytes per secret: 256 bits, beyond guessing.
const SECRET_BYTES: usize = 32;
/// `last_used_at` is kept to this precision, so a busy client costs at most one write per minute, not one per request.
pub const TOUCH_INTERVAL_MS: i64 = 60_000;
const MAX_NAME: usize = 64;

/// A token as `token list` and the HTTP layer see it: everything except the secret (which is never stored) and its
/// hash (useless to anyone but the verifier, so it is not handed out either).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    pub name: String,
    pub role: Role,
    /// Times in ms since the epoch, like every timestamp column.
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl TokenInfo {
    /// `"revoked"`, `"expired"` or `"active"` at `now`; a revoked token reads as revoked even after its expiry,
    /// because that is the deliberate act an admin wants to see.
    pub fn state(&self, now: i64) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at.is_some_and(|t| t <= now) {
            "expired"
        } else {
            "active"
        }
    }

    pub fn is_active(&self, now: i64) -> bool {
        self.state(now) == "active"
    }
}

const COLUMNS: &str = "name, role, created_at, expires_at, last_used_at, revoked_at";

fn row(r: &Row<'_>) -> rusqlite::Result<(TokenInfo, String)> {
    let role: String = r.get(1)?;
    Ok((
        TokenInfo {
            name: r.get(0)?,
            role: Role::Viewer,
            created_at: r.get(2)?,
            expires_at: r.get(3)?,
            last_used_at: r.get(4)?,
            revoked_at: r.get(5)?,
        },
        role,
    ))
}

fn finish((mut t, role): (TokenInfo, String)) -> Result<TokenInfo, StoreError> {
    t.role = role.parse().map_err(|e| StoreError::Data(format!("token {:?} has role {role:?}: {e}", t.name)))?;
    Ok(t)
}

/// A fresh secret: `xe_` + 256 bits from the OS generator, base64url without padding (43 characters), so it fits
/// in an `Authorization` header, a URL or a shell variable without quoting.
pub fn generate() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    // SystemRandom reads getrandom(2); it only fails if the kernel cannot supply randomness at all, and then no
    // token may be made.
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("the operating system's random number generator failed");
    format!("{PREFIX}{}", base64url(&bytes))
}

/// Base64url (RFC 4648 §5) without padding; written out because it is the only encoding needed.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        // A chunk of k bytes carries 8k bits, i.e. k + 1 six-bit digits.
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 0x3f) as usize] as char);
        }
    }
    out
}

fn hash(secret: &str) -> Vec<u8> {
    digest(secret).to_vec()
}

/// The SHA-256 a secret is stored and looked up by.
pub fn digest(secret: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, secret.as_bytes()).as_ref());
    out
}

/// Whether `presented` is shaped like a secret: anything else cannot match, so it is neither hashed (an attacker
/// chooses its size) nor looked up.
pub fn plausible(presented: &str) -> bool {
    presented.starts_with(PREFIX) && presented.len() <= 128
}

/// The file beside the database that `token create` and `token revoke` touch after their commit. The daemon keeps
/// the tokens it verified in memory and forgets them all when this file's metadata changes, so a revocation made
/// by another process takes effect at the daemon's next request without a database read per request. What the file
/// holds means nothing: each change appends a byte, so even two changes within one tick of the file system's clock
/// leave different sizes.
pub fn changes_file(db: &Path) -> PathBuf {
    db.with_file_name("tokens.changed")
}

/// Tells a running daemon that the tokens table changed (see [`changes_file`]). Made by root, the file is given to
/// the state directory's owner like everything else there.
pub fn mark_changed(db: &Path) -> std::io::Result<()> {
    let path = changes_file(db);
    let mut file = OpenOptions::new().create(true).append(true).mode(0o644).open(&path)?;
    // Kept small: past 4 KiB it starts again (its size still differs from the one before).
    if file.metadata()?.len() >= 4096 {
        file.set_len(0)?;
    }
    file.write_all(b"\n")?;
    if let Some(dir) = path.parent() {
        super::lock::give_to_owner_of(&path, dir)?;
    }
    Ok(())
}

/// One state of the changes file: inode, size, modification and change times (ns). `None` while there is none.
pub type ChangesStamp = Option<(u64, u64, i128, i128)>;

pub fn changes_stamp(file: &Path) -> std::io::Result<ChangesStamp> {
    match std::fs::metadata(file) {
        Ok(m) => {
            let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
            Ok(Some((m.ino(), m.len(), ns(m.mtime(), m.mtime_nsec()), ns(m.ctime(), m.ctime_nsec()))))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Equality whose running time does not depend on where the inputs differ. ring 0.17 deprecated its public
/// `constant_time` module, so this is the usual xor-fold; `black_box` keeps the optimiser from short-circuiting it.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Names appear in logs, audit records (`token:NAME`) and the command line, so they are kept to a small,
/// unambiguous alphabet: 1 to 64 of `A-Z a-z 0-9 . _ -`.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!("token name must be 1 to {MAX_NAME} characters, got {}", name.chars().count()));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("token name {name:?} contains {c:?}; use only letters, digits, '.', '_' and '-'"));
    }
    Ok(())
}

/// Creates a token and returns its secret — the only time it exists outside the client. Run it on the writer
/// (`Durability::Full`: the admin is about to hand the secret out, so it must survive a power cut).
///
/// Refused input is reported as [`StoreError::Data`] with a message for the admin (and only refused input: the
/// command line maps it to a usage error): an invalid name, an expiry not in the future, or an active token with
/// the same name — replacing that silently would lock out whoever holds it. A revoked or expired token with the
/// name is replaced.
pub fn create(
    conn: &Connection,
    name: &str,
    role: Role,
    expires_at: Option<i64>,
    now: i64,
) -> Result<String, StoreError> {
    validate_name(name).map_err(StoreError::Data)?;
    if let Some(t) = expires_at
        && t <= now
    {
        return Err(StoreError::Data("the expiry must be in the future".into()));
    }
    if let Some(existing) = get(conn, name)? {
        if existing.is_active(now) {
            return Err(StoreError::Data(format!(
                "an active token named {name:?} already exists (role {}); revoke it first or choose another name",
                existing.role
            )));
        }
        conn.execute("DELETE FROM tokens WHERE name = ?1", [name])?;
    }
    let secret = generate();
    conn.execute(
        "INSERT INTO tokens (name, hash, role, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![name, hash(&secret), role.as_str(), now, expires_at],
    )?;
    Ok(secret)
}

/// One token by name, whatever its state.
pub fn get(conn: &Connection, name: &str) -> Result<Option<TokenInfo>, StoreError> {
    conn.query_row(&format!("SELECT {COLUMNS} FROM tokens WHERE name = ?1"), [name], row)
        .optional()?
        .map(finish)
        .transpose()
}

/// Every token, active or not, by name.
pub fn list(conn: &Connection) -> Result<Vec<TokenInfo>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM tokens ORDER BY name"))?;
    let rows = stmt.query_map([], row)?;
    rows.map(|r| finish(r?)).collect()
}

/// Revokes the active token `name`; `false` when there is none (unknown, already revoked, or expired — the last
/// two are refused already). The row stays so `token list` shows when it was revoked.
pub fn revoke(conn: &Connection, name: &str, now: i64) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE tokens SET revoked_at = ?2
         WHERE name = ?1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2)",
        params![name, now],
    )?;
    Ok(n == 1)
}

/// The active token whose secret is `presented`, or `None` (unknown, revoked or expired — the caller does not learn
/// which, and neither does an attacker). Read-only, so it runs on a reader connection for every request.
pub fn verify(conn: &Connection, presented: &str, now: i64) -> Result<Option<TokenInfo>, StoreError> {
    if !plausible(presented) {
        return Ok(None);
    }
    let computed = hash(presented);
    // Cached: it runs for every authenticated request.
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS}, hash FROM tokens WHERE hash = ?1"))?;
    let found = stmt.query_row([&computed], |r| Ok((row(r)?, r.get::<_, Vec<u8>>(6)?))).optional()?;
    let Some((info, stored)) = found else { return Ok(None) };
    if !constant_time_eq(&stored, &computed) {
        return Ok(None);
    }
    let info = finish(info)?;
    Ok(info.is_active(now).then_some(info))
}

/// Records that `name` was used at `now`, but only when the stored time is over a minute old: `last_used_at` is
/// for "is this token still in use?", and a write per request would cost flash wear and writer time for nothing.
pub fn touch(conn: &Connection, name: &str, now: i64) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE tokens SET last_used_at = ?2 WHERE name = ?1 AND (last_used_at IS NULL OR last_used_at < ?2 - ?3)",
        params![name, now, TOUCH_INTERVAL_MS],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Durability, Store, StoreOptions};

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        (dir, store)
    }

    fn create_in(store: &Store, name: &str, role: Role, expires: Option<i64>, now: i64) -> Result<String, StoreError> {
        let name = name.to_string();
        store.write_blocking(Durability::Full, move |c| create(c, &name, role, expires, now))
    }

    fn verify_in(store: &Store, secret: &str, now: i64) -> Option<TokenInfo> {
        let secret = secret.to_string();
        store.read_blocking(move |c| verify(c, &secret, now)).unwrap()
    }

    #[test]
    fn secrets_are_prefixed_256_bit_base64url() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        for s in [&a, &b] {
            let body = s.strip_prefix(PREFIX).expect("prefix");
            assert_eq!(body.len(), 43, "{s}");
            assert!(body.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'), "{s}");
        }
        // RFC 4648 test vectors, unpadded, and the two characters that differ from standard base64.
        for (input, want) in
            [("", ""), ("f", "Zg"), ("fo", "Zm8"), ("foo", "Zm9v"), ("foob", "Zm9vYg"), ("fooba", "Zm9vYmE")]
        {
            assert_eq!(base64url(input.as_bytes()), want);
        }
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn create_then_verify_and_wrong_secrets() {
        let (_d, store) = open();
        let secret = create_in(&store, "ops-laptop", Role::Operator, None, 1_000).unwrap();
        let info = verify_in(&store, &secret, 2_000).expect("valid token");
        assert_eq!((info.name.as_str(), info.role, info.created_at), ("ops-laptop", Role::Operator, 1_000));
        assert_eq!(info.state(2_000), "active");

        let mut wrong = secret.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == 'A' { 'B' } else { 'A' });
        for bad in [wrong.as_str(), "", "xe_", "Bearer", &secret[PREFIX.len()..], &format!("{secret} ")] {
            assert!(verify_in(&store, bad, 2_000).is_none(), "{bad:?} accepted");
        }
        assert!(constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd") && !constant_time_eq(b"a", b""));
    }

    #[test]
    fn expired_and_revoked_tokens_are_refused() {
        let (_d, store) = open();
        let short = create_in(&store, "short", Role::Viewer, Some(5_000), 1_000).unwrap();
        assert!(verify_in(&store, &short, 4_999).is_some());
        assert!(verify_in(&store, &short, 5_000).is_none(), "refused from the expiry instant on");

        let secret = create_in(&store, "gone", Role::Admin, None, 1_000).unwrap();
        assert!(store.write_blocking(Durability::Full, |c| revoke(c, "gone", 3_000)).unwrap());
        assert!(verify_in(&store, &secret, 3_001).is_none());
        assert!(!store.write_blocking(Durability::Full, |c| revoke(c, "gone", 4_000)).unwrap(), "already revoked");
        assert!(!store.write_blocking(Durability::Full, |c| revoke(c, "nobody", 4_000)).unwrap());
        assert!(!store.write_blocking(Durability::Full, |c| revoke(c, "short", 6_000)).unwrap(), "already expired");

        let listed = store.read_blocking(list).unwrap();
        let states: Vec<_> = listed.iter().map(|t| (t.name.as_str(), t.state(6_000), t.revoked_at)).collect();
        assert_eq!(states, [("gone", "revoked", Some(3_000)), ("short", "expired", None)]);
        assert!(create_in(&store, "past", Role::Viewer, Some(1_000), 1_000).is_err(), "expiry must be ahead");
    }

    #[test]
    fn names_are_unique_among_active_tokens_and_validated() {
        let (_d, store) = open();
        let first = create_in(&store, "kiosk", Role::Viewer, None, 1_000).unwrap();
        let err = create_in(&store, "kiosk", Role::Admin, None, 2_000).unwrap_err();
        assert!(matches!(&err, StoreError::Data(m) if m.contains("already exists")), "{err}");
        assert!(verify_in(&store, &first, 2_000).is_some(), "the refused create changed nothing");

        // A revoked name can be reused; the old secret stays dead.
        assert!(store.write_blocking(Durability::Full, |c| revoke(c, "kiosk", 3_000)).unwrap());
        let second = create_in(&store, "kiosk", Role::Operator, None, 4_000).unwrap();
        assert!(verify_in(&store, &first, 4_000).is_none());
        assert_eq!(verify_in(&store, &second, 4_000).unwrap().role, Role::Operator);
        // So can an expired one.
        create_in(&store, "temp", Role::Viewer, Some(5_000), 4_000).unwrap();
        assert!(create_in(&store, "temp", Role::Viewer, None, 4_500).is_err());
        create_in(&store, "temp", Role::Admin, None, 6_000).unwrap();
        assert_eq!(store.read_blocking(list).unwrap().len(), 2);

        for good in ["a", "ops.laptop_2-b", &"x".repeat(64)] {
            assert!(validate_name(good).is_ok(), "{good:?}");
        }
        for bad in ["", &"x".repeat(65), "has space", "slash/", "ümlaut", "semi;colon", "new\nline"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
            assert!(matches!(create_in(&store, bad, Role::Viewer, None, 1), Err(StoreError::Data(_))), "{bad:?}");
        }
    }

    #[test]
    fn touch_writes_at_most_once_a_minute_and_verify_never_writes() {
        let (_d, store) = open();
        let secret = create_in(&store, "busy", Role::Viewer, None, 0).unwrap();
        let last_used = || store.read_blocking(|c| get(c, "busy")).unwrap().unwrap().last_used_at;
        // verify runs on read-only connections; it must not need to write anything.
        assert!(verify_in(&store, &secret, 10).is_some());
        assert_eq!(last_used(), None);

        let touch_at = |now: i64| {
            store
                .write_blocking(Durability::Normal, move |c| {
                    let before = c.total_changes();
                    touch(c, "busy", now)?;
                    Ok(c.total_changes() - before)
                })
                .unwrap()
        };
        assert_eq!(touch_at(100_000), 1, "first use is recorded");
        assert_eq!(touch_at(130_000), 0, "30 s later: no write");
        assert_eq!(touch_at(160_000), 0, "exactly 60 s later: still no write");
        assert_eq!(last_used(), Some(100_000));
        assert_eq!(touch_at(160_001), 1);
        assert_eq!(last_used(), Some(160_001));
        assert_eq!(touch_at(200_000), 0);
    }

    #[test]
    fn the_secret_never_reaches_the_database_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let secret = create_in(&store, "leak-check", Role::Admin, None, 1).unwrap();
        let files = |dir: &std::path::Path| -> Vec<u8> {
            let mut all = Vec::new();
            for entry in std::fs::read_dir(dir).unwrap() {
                all.extend(std::fs::read(entry.unwrap().path()).unwrap());
            }
            all
        };
        let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
        // While the daemon would be running (data still in the WAL) and after a clean close (checkpointed).
        for phase in ["open", "closed"] {
            let bytes = files(dir.path());
            assert!(!contains(&bytes, secret.as_bytes()), "secret found in the database files ({phase})");
            assert!(!contains(&bytes, &secret.as_bytes()[PREFIX.len()..]), "secret body found ({phase})");
            // Positive control: the search does see what is stored.
            assert!(contains(&bytes, &hash(&secret)), "hash not found ({phase}): the search is broken");
            store.close();
        }
    }
}
