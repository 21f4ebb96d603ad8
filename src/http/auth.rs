//! Who is calling over HTTP: a bearer token looked up by its hash, or nobody. Repeated failures from
//! one address are slowed down and then refused for a while, so guessing tokens over the LAN is hopeless.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorCode};
use crate::runtime::{App, Principal};
use crate::store::{Durability, now_ms, tokens};

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
    // A lookup by primary key on every request: on this thread, not through the blocking pool (see `Store::read_blocking`).
    let found = app.store.read_blocking(|c| tokens::verify(c, secret, now));
    let info = match found {
        Ok(Some(info)) => info,
        Ok(None) => {
            limiter.failed(addr).await;
            return Err(Rejection::Unauthenticated("the token is unknown, expired or revoked".into()));
        }
        Err(e) => return Err(Rejection::Refused(Error::internal(format!("cannot check the token: {e}")))),
    };
    // `last_used_at` is kept to the minute; most requests cost no write at all.
    if info.last_used_at.is_none_or(|t| now - t > 60_000) {
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
