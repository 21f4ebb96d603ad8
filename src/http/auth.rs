//! Who is calling over HTTP: a bearer token looked up by its hash, or nobody. Repeated failures from
//! one address are slowed down and then refused for a while, so guessing tokens over the LAN is hopeless.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::copies::Copies;
use crate::error::{Error, ErrorCode};
use crate::runtime::{App, Principal};
use crate::store::tokens::{self, ChangesStamp, TokenInfo};
use crate::store::{Durability, now_ms};

/// Failed attempts per address within a window: after `SLOW_AFTER` each answer is delayed, after `BLOCK_AFTER`
/// the address gets 429 until the window ends.
const WINDOW: Duration = Duration::from_secs(60);
const SLOW_AFTER: u32 = 5;
const BLOCK_AFTER: u32 = 20;
/// The table is bounded so a flood of spoofed sources cannot grow it without limit.
const MAX_TRACKED: usize = 10_000;

#[derive(Default)]
pub struct FailureLimiter {
    by_addr: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailureLimiter {
    /// How many failures this address has in the current window.
    fn failures(&self, addr: IpAddr) -> u32 {
        let map = self.by_addr.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(&addr) {
            Some((since, n)) if since.elapsed() < WINDOW => *n,
            _ => 0,
        }
    }

    fn record(&self, addr: IpAddr) -> u32 {
        let mut map = self.by_addr.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_TRACKED {
            map.retain(|_, (since, _)| since.elapsed() < WINDOW);
        }
        let entry = map.entry(addr).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
        entry.1
    }

    /// Refuses an address that failed too often (before even looking at its token).
    pub fn check(&self, addr: IpAddr) -> Result<(), Error> {
        if self.failures(addr) >= BLOCK_AFTER {
            return Err(Error::new(
                ErrorCode::TooManyRequests,
                "too many failed authentication attempts from this address",
            )
            .with_retry_after(WINDOW.as_secs()));
        }
        Ok(())
    }

    /// Counts a failure and waits a little longer each time past the threshold.
    pub async fn failed(&self, addr: IpAddr) {
        let n = self.record(addr);
        if n > SLOW_AFTER {
            let delay = Duration::from_millis(100 * u64::from((n - SLOW_AFTER).min(10)));
            tokio::time::sleep(delay).await;
        }
    }
}

/// The tokens this daemon verified, by their SHA-256, so that an authenticated request costs a `stat` rather than a
/// database read (a read transaction's locks were a sixth of the daemon's time serving cached REST reads).
///
/// Exact, not eventually right ([`Copies`]): everything that can make a kept token invalid is seen before it is
/// used. Expiry is checked against the clock on every use. Revocation is the only other change (a new token never
/// invalidates an old one: `token create` only replaces a revoked or expired token), and `token revoke` runs in
/// another process, which touches [`tokens::changes_file`] after its commit: when that file's metadata differs from
/// what was seen, every kept token is forgotten before this request is answered.
pub struct KnownTokens {
    changes: PathBuf,
    /// The changes file as last seen.
    seen: Mutex<ChangesStamp>,
    by_digest: Copies<[u8; 32], TokenInfo>,
}

impl KnownTokens {
    pub fn new(db: &Path) -> KnownTokens {
        // Far more tokens than a gateway has.
        KnownTokens { changes: tokens::changes_file(db), seen: Mutex::default(), by_digest: Copies::new(1024) }
    }

    /// The kept token, or the generation a database read starts from; `Err(None)`: read, and keep nothing.
    fn get(&self, digest: &[u8; 32], now: i64) -> Result<TokenInfo, Option<u64>> {
        // A changes file that cannot be examined means nothing kept can be trusted: read the database every time.
        let stamp = tokens::changes_stamp(&self.changes).map_err(|_| None)?;
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if *seen != stamp {
                *seen = stamp;
                self.by_digest.forget_all();
            }
        }
        match self.by_digest.get(digest) {
            Ok(info) if info.is_active(now) => Ok(info),
            Ok(_) => Err(None),
            Err(generation) => Err(Some(generation)),
        }
    }

    /// `last_used_at` as just written, so the next request does not write it again.
    fn touched(&self, digest: &[u8; 32], now: i64) {
        self.by_digest.update(digest, |info| info.last_used_at = Some(now));
    }

    /// The active token whose secret is `presented`, from memory or from the database.
    fn verify(&self, app: &App, presented: &str, now: i64) -> Result<Option<TokenInfo>, crate::store::StoreError> {
        if !tokens::plausible(presented) {
            return Ok(None);
        }
        let digest = tokens::digest(presented);
        let generation = match self.get(&digest, now) {
            Ok(info) => return Ok(Some(info)),
            Err(generation) => generation,
        };
        // A lookup by primary key: on this thread, not through the blocking pool (see `Store::read_blocking`).
        let found = app.store.read_blocking(|c| tokens::verify(c, presented, now))?;
        if let (Some(info), Some(generation)) = (&found, generation) {
            self.by_digest.keep(generation, digest, info.clone());
        }
        Ok(found)
    }
}

/// Who a request comes from.
pub enum Caller {
    Anonymous,
    Token(Principal),
}

/// Why a request's credentials were not accepted.
pub enum Rejection {
    /// 401 with `WWW-Authenticate`: no valid token.
    Unauthenticated(String),
    /// Answered with this error's own status: 429 when the address failed too often, 500 if the store failed.
    Refused(Error),
}

/// The bearer token's principal, or `Anonymous` without an `Authorization` header.
pub async fn authenticate(
    app: &App,
    limiter: &FailureLimiter,
    known: &KnownTokens,
    addr: IpAddr,
    header: Option<&str>,
) -> Result<Caller, Rejection> {
    let Some(header) = header else { return Ok(Caller::Anonymous) };
    limiter.check(addr).map_err(Rejection::Refused)?;
    let secret = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let Some(secret) = secret else {
        limiter.failed(addr).await;
        return Err(Rejection::Unauthenticated("the Authorization header must be `Bearer <token>`".into()));
    };
    let now = now_ms();
    let info = match known.verify(app, secret, now) {
        Ok(Some(info)) => info,
        Ok(None) => {
            limiter.failed(addr).await;
            return Err(Rejection::Unauthenticated("the token is unknown, expired or revoked".into()));
        }
        Err(e) => return Err(Rejection::Refused(Error::internal(format!("cannot check the token: {e}")))),
    };
    // `last_used_at` is kept to the minute; most requests cost no write at all.
    if info.last_used_at.is_none_or(|t| now - t > tokens::TOUCH_INTERVAL_MS) {
        known.touched(&tokens::digest(secret), now);
        let name = info.name.clone();
        let store = app.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.write(Durability::Normal, move |c| tokens::touch(c, &name, now)).await {
                tracing::warn!(error = %e, "could not record token use");
            }
        });
    }
    Ok(Caller::Token(Principal { id: format!("token:{}", info.name), role: info.role }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Role;

    fn info(name: &str) -> TokenInfo {
        TokenInfo {
            name: name.into(),
            role: Role::Viewer,
            created_at: 0,
            expires_at: Some(2_000),
            last_used_at: None,
            revoked_at: None,
        }
    }

    #[test]
    fn a_change_forgets_everything_and_a_read_from_before_it_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("xyte-edge.db");
        let known = KnownTokens::new(&db);
        let (a, b) = ([1u8; 32], [2u8; 32]);

        let keep = |generation, digest, name: &str| known.by_digest.keep(generation, digest, info(name));

        let Err(Some(before)) = known.get(&a, 1_000) else { panic!("nothing is kept yet") };
        keep(before, a, "a");
        assert!(matches!(known.get(&a, 1_000), Ok(i) if i.name == "a"));
        assert!(known.get(&a, 2_000).is_err(), "expired at 2000: read again");

        // A read of `b` starts, then `token revoke` marks a change before the read is kept.
        let Err(Some(started)) = known.get(&b, 1_000) else { panic!() };
        tokens::mark_changed(&db).unwrap();
        assert!(matches!(known.get(&a, 1_000), Err(Some(g)) if g > started), "forgotten after the change");
        keep(started, b, "b");
        assert!(known.get(&b, 1_000).is_err(), "a read from before the change is not kept");

        // Two changes within one tick of the file system's clock still differ (the file grows by a byte each).
        let Err(Some(now)) = known.get(&a, 1_000) else { panic!() };
        keep(now, a, "a");
        tokens::mark_changed(&db).unwrap();
        assert!(known.get(&a, 1_000).is_err());
        let Err(Some(now)) = known.get(&a, 1_000) else { panic!() };
        keep(now, a, "a");
        tokens::mark_changed(&db).unwrap();
        assert!(known.get(&a, 1_000).is_err());
    }
}
