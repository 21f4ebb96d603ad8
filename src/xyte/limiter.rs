//! One token bucket for every upstream request of the daemon (SPEC §4.4): `rate`/min, burst = max(5, 10 % of rate).
//! Waiters are served by priority (commands, then interactive, then background), and background work only takes a
//! token while the bucket holds more than a reserve, so polling yields before interactive callers feel it.
//!
//! It is synchronous (Mutex + Condvar) because it is used from the blocking threads that run ureq.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Who is asking; higher first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    Background = 0,
    Interactive = 1,
    Command = 2,
}

struct State {
    tokens: f64,
    last: Instant,
    /// How many threads wait at each priority (indexed by `Priority as usize`).
    waiting: [usize; 3],
}

pub struct Limiter {
    state: Mutex<State>,
    wake: Condvar,
    per_sec: f64,
    burst: f64,
    /// Tokens background work must leave in the bucket.
    reserve: f64,
}

impl Limiter {
    pub fn new(per_min: u32) -> Self {
        let burst = (f64::from(per_min) * 0.1).floor().max(5.0);
        Limiter {
            state: Mutex::new(State { tokens: burst, last: Instant::now(), waiting: [0; 3] }),
            wake: Condvar::new(),
            per_sec: f64::from(per_min.max(1)) / 60.0,
            burst,
            reserve: (burst / 2.0).floor(),
        }
    }

    #[cfg(test)]
    fn burst(&self) -> u32 {
        self.burst as u32
    }

    fn refill(&self, s: &mut State, now: Instant) {
        let elapsed = now.saturating_duration_since(s.last).as_secs_f64();
        s.tokens = (s.tokens + elapsed * self.per_sec).min(self.burst);
        s.last = now;
    }

    fn floor(&self, prio: Priority) -> f64 {
        if prio == Priority::Background { self.reserve } else { 0.0 }
    }

    /// Takes a token if one is available to `prio` right now, honouring waiters of higher priority.
    fn take(&self, s: &mut State, prio: Priority, now: Instant) -> Result<(), Duration> {
        self.refill(s, now);
        let outranked = s.waiting[prio as usize + 1..].iter().any(|&n| n > 0);
        let need = self.floor(prio) + 1.0 - s.tokens;
        if !outranked && need <= 0.0 {
            s.tokens -= 1.0;
            return Ok(());
        }
        // When outranked, re-check as soon as any token could appear; otherwise when ours will.
        let wait = if outranked { 1.0 / self.per_sec } else { need / self.per_sec };
        Err(Duration::from_secs_f64(wait.clamp(0.001, 60.0)))
    }

    /// Never waits; `false` means the caller should serve a cached answer or come back later.
    pub fn try_acquire(&self, prio: Priority) -> bool {
        let Ok(mut s) = self.state.lock() else { return false };
        self.take(&mut s, prio, Instant::now()).is_ok()
    }

    /// Waits for a token until `deadline`; `Err` carries how long until one would have been available.
    pub fn acquire(&self, prio: Priority, deadline: Instant) -> Result<(), Duration> {
        let Ok(mut s) = self.state.lock() else { return Err(Duration::from_secs(1)) };
        s.waiting[prio as usize] += 1;
        let outcome = loop {
            let now = Instant::now();
            match self.take(&mut s, prio, now) {
                Ok(()) => break Ok(()),
                Err(wait) if now + wait > deadline => break Err(wait),
                Err(wait) => match self.wake.wait_timeout(s, wait) {
                    Ok((guard, _)) => s = guard,
                    Err(_) => return Err(wait),
                },
            }
        };
        s.waiting[prio as usize] -= 1;
        // A waiter leaving can unblock lower priorities.
        self.wake.notify_all();
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate_and_background_reserve() {
        let l = Limiter::new(60);
        assert_eq!(l.burst(), 6);
        let mut s = l.state.lock().unwrap();
        let t0 = s.last;
        // Background may use only the half above the reserve.
        for _ in 0..3 {
            assert!(l.take(&mut s, Priority::Background, t0).is_ok());
        }
        let wait = l.take(&mut s, Priority::Background, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 1.0).abs() < 0.01, "{wait:?}");
        // Interactive work still finds the reserve.
        for _ in 0..3 {
            assert!(l.take(&mut s, Priority::Interactive, t0).is_ok());
        }
        assert!(l.take(&mut s, Priority::Command, t0).is_err());
        // One token per second at 60/min.
        assert!(l.take(&mut s, Priority::Command, t0 + Duration::from_millis(1001)).is_ok());
        assert!(l.take(&mut s, Priority::Command, t0 + Duration::from_millis(1500)).is_err());
        // Refill never exceeds the burst.
        assert!(l.take(&mut s, Priority::Interactive, t0 + Duration::from_secs(3600)).is_ok());
        assert!((s.tokens - 5.0).abs() < 1e-9);
    }

    #[test]
    fn waiting_higher_priority_blocks_lower() {
        let l = Limiter::new(600);
        let mut s = l.state.lock().unwrap();
        let now = s.last;
        s.waiting[Priority::Command as usize] = 1;
        assert!(l.take(&mut s, Priority::Interactive, now).is_err());
        s.waiting[Priority::Command as usize] = 0;
        assert!(l.take(&mut s, Priority::Interactive, now).is_ok());
    }

    #[test]
    fn acquire_gives_up_at_the_deadline() {
        let l = Limiter::new(60);
        let soon = Instant::now() + Duration::from_millis(50);
        for _ in 0..6 {
            l.acquire(Priority::Interactive, soon).unwrap();
        }
        let started = Instant::now();
        assert!(l.acquire(Priority::Interactive, soon).is_err());
        assert!(started.elapsed() < Duration::from_millis(500), "returns at once when the deadline cannot be met");
    }
}
