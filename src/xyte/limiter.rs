//! One token bucket for every upstream request of the daemon: `rate`/min, burst = max(5, 10 % of rate).
//! Waiters are served by priority (commands, then interactive, then background), and background work only takes a
//! token while the bucket holds more than a reserve, so polling yields before interactive callers feel it.
//!
//! It is synchronous (Mutex + Condvar) because it is used from the blocking threads that run ureq.
//!
//! The bucket alone does not keep the promise of `XYTE_RATE_LIMIT` (at most `rate` requests per minute): a full
//! bucket plus a minute of refill lets `burst + rate` requests through in one minute (35 at 30/min). So every grant
//! is also logged, and no grant is made while `rate` grants fall within the last [`WINDOW`].

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// The sliding window of the per-minute promise, with a second of margin: a request reaches Xyte a little after it
/// takes its token (thread wake-up, connect), and two grants exactly 60 s apart must not land in one of Xyte's minutes.
const WINDOW: Duration = Duration::from_secs(61);
/// Background work that has waited this long is served as interactive: "polling yields" must not become "polling
/// starves" while agents keep the bucket empty, or the cache would never be refreshed.
const PROMOTE_AFTER: Duration = Duration::from_secs(10);

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
    /// When the grants of the last [`WINDOW`] were made, oldest first.
    granted: VecDeque<Instant>,
}

pub struct Limiter {
    state: Mutex<State>,
    wake: Condvar,
    per_sec: f64,
    per_window: usize,
    burst: f64,
    /// Tokens background work must leave in the bucket.
    reserve: f64,
    promote_after: Duration,
}

impl Limiter {
    pub fn new(per_min: u32) -> Self {
        let burst = (f64::from(per_min) * 0.1).floor().max(5.0);
        Limiter {
            state: Mutex::new(State { tokens: burst, last: Instant::now(), waiting: [0; 3], granted: VecDeque::new() }),
            wake: Condvar::new(),
            per_sec: f64::from(per_min.max(1)) / 60.0,
            per_window: per_min.max(1) as usize,
            burst,
            reserve: (burst / 2.0).floor(),
            promote_after: PROMOTE_AFTER,
        }
    }

    #[cfg(test)]
    fn burst(&self) -> u32 {
        self.burst as u32
    }

    /// Grants made within the window (tests wait on it instead of sleeping).
    #[cfg(test)]
    pub(super) fn grants(&self) -> usize {
        self.state.lock().map(|s| s.granted.len()).unwrap_or(0)
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
        while s.granted.front().is_some_and(|&t| now.saturating_duration_since(t) >= WINDOW) {
            s.granted.pop_front();
        }
        // The window is full until its oldest grant leaves it.
        let window_full = match s.granted.front() {
            Some(&oldest) if s.granted.len() >= self.per_window => Some(WINDOW - now.saturating_duration_since(oldest)),
            _ => None,
        };
        let outranked = s.waiting[prio as usize + 1..].iter().any(|&n| n > 0);
        let need = self.floor(prio) + 1.0 - s.tokens;
        if !outranked && need <= 0.0 && window_full.is_none() {
            s.tokens -= 1.0;
            s.granted.push_back(now);
            return Ok(());
        }
        // When outranked, re-check as soon as any token could appear; otherwise when ours will.
        let wait = if outranked { 1.0 / self.per_sec } else { need / self.per_sec };
        let wait = Duration::from_secs_f64(wait.clamp(0.001, 60.0));
        Err(window_full.map_or(wait, |w| w.max(wait).max(Duration::from_millis(1))))
    }

    /// Never waits; `false` means the caller should serve a cached answer or come back later.
    pub fn try_acquire(&self, prio: Priority) -> bool {
        let Ok(mut s) = self.state.lock() else { return false };
        self.take(&mut s, prio, Instant::now()).is_ok()
    }

    /// Gives back a token that was not used (its grant, as [`Limiter::acquire`] returned it, leaves the window).
    pub fn refund(&self, granted: Instant) {
        let Ok(mut s) = self.state.lock() else { return };
        if let Some(i) = s.granted.iter().rposition(|&t| t == granted) {
            s.granted.remove(i);
            s.tokens = (s.tokens + 1.0).min(self.burst);
        }
        drop(s);
        self.wake.notify_all();
    }

    /// Waits for a token until `deadline` and says when it was granted; `Err` carries how long until one would have
    /// been available.
    pub fn acquire(&self, prio: Priority, deadline: Instant) -> Result<Instant, Duration> {
        let Ok(mut s) = self.state.lock() else { return Err(Duration::from_secs(1)) };
        let mut prio = prio;
        let promote_at = Instant::now() + self.promote_after;
        s.waiting[prio as usize] += 1;
        let outcome = loop {
            let now = Instant::now();
            if prio == Priority::Background && now >= promote_at {
                s.waiting[prio as usize] -= 1;
                prio = Priority::Interactive;
                s.waiting[prio as usize] += 1;
            }
            match self.take(&mut s, prio, now) {
                Ok(()) => break Ok(now),
                Err(wait) if now + wait > deadline => break Err(wait),
                Err(wait) => {
                    let wait = if prio == Priority::Background { wait.min(promote_at - now) } else { wait };
                    match self.wake.wait_timeout(s, wait.max(Duration::from_millis(1))) {
                        Ok((guard, _)) => s = guard,
                        Err(_) => return Err(wait),
                    }
                }
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
    fn background_work_is_promoted_after_waiting_so_polling_never_starves() {
        let mut l = Limiter::new(600);
        l.promote_after = Duration::from_millis(300);
        let l = std::sync::Arc::new(l);
        while l.try_acquire(Priority::Interactive) {}
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Interactive callers keep the bucket empty and always have a waiter queued.
        let hogs: Vec<_> = (0..4)
            .map(|_| {
                let (l, stop) = (l.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let _ = l.acquire(Priority::Interactive, Instant::now() + Duration::from_secs(1));
                    }
                })
            })
            .collect();
        while l.state.lock().unwrap().waiting[Priority::Interactive as usize] == 0 {
            std::thread::yield_now();
        }
        let got = l.acquire(Priority::Background, Instant::now() + Duration::from_secs(3));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for h in hogs {
            h.join().unwrap();
        }
        assert!(got.is_ok(), "background work starved: {got:?}");
    }

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

    /// Counted like Xyte would: the most grants in any 60 s, taking greedily for five simulated minutes.
    fn busiest_minute(l: &Limiter, prio: Priority) -> usize {
        let mut s = l.state.lock().unwrap();
        let t0 = s.last;
        let mut grants = Vec::new();
        for ms in (0..300_000).step_by(10) {
            let now = t0 + Duration::from_millis(ms);
            while l.take(&mut s, prio, now).is_ok() {
                grants.push(now);
            }
        }
        (0..grants.len())
            .map(|i| grants[i..].iter().take_while(|&&t| t - grants[i] < Duration::from_secs(60)).count())
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn never_more_than_the_rate_in_any_minute_even_from_a_full_bucket() {
        for per_min in [6, 30, 60, 600] {
            let l = Limiter::new(per_min);
            assert_eq!(busiest_minute(&l, Priority::Command), per_min as usize, "{per_min}/min");
        }
    }

    #[test]
    fn a_full_window_says_how_long_until_its_oldest_grant_leaves() {
        let l = Limiter::new(6);
        let mut s = l.state.lock().unwrap();
        let t0 = s.last;
        // Six grants, one every 10 s (burst 5 plus refill), then the bucket has tokens but the window is full.
        let mut t = t0;
        let mut n = 0;
        while n < 6 {
            if l.take(&mut s, Priority::Command, t).is_ok() {
                n += 1;
            }
            t += Duration::from_millis(100);
        }
        let later = t0 + Duration::from_secs(59);
        s.tokens = 5.0;
        let wait = l.take(&mut s, Priority::Command, later).unwrap_err();
        assert_eq!(wait, WINDOW - Duration::from_secs(59), "until the first grant (at t0) is 61 s old");
        assert!(l.take(&mut s, Priority::Command, t0 + WINDOW).is_ok());
    }

    #[test]
    fn a_refunded_grant_leaves_the_window_and_the_bucket() {
        let l = Limiter::new(6);
        let soon = Instant::now() + Duration::from_millis(50);
        let first = l.acquire(Priority::Command, soon).unwrap();
        for _ in 0..4 {
            l.acquire(Priority::Command, soon).unwrap();
        }
        assert!(!l.try_acquire(Priority::Command), "the burst of 5 is spent");
        l.refund(first);
        assert_eq!(l.state.lock().unwrap().granted.len(), 4);
        assert!(l.try_acquire(Priority::Command), "the refunded token can be taken again");
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
