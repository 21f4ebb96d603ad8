//! When a message to a channel is tried: retries back off while the receiver is down (a
//! mail server restarting, a chat service unreachable during the very WAN outage that caused the alert), a message
//! is given up once older than its channel allows, and a channel takes at most so many messages an hour so a
//! flapping device cannot flood it. Pure and clock-free; the caller keeps the records.

use std::collections::VecDeque;

/// The first retry waits this long; each next one twice as long, up to [`BACKOFF_MAX_MS`].
pub const BACKOFF_FIRST_MS: i64 = 5_000;
pub const BACKOFF_MAX_MS: i64 = 10 * 60_000;

/// How long to wait before attempt `attempts + 1`, after `attempts` failed ones (1 or more).
pub fn backoff_ms(attempts: u32) -> i64 {
    let doublings = attempts.saturating_sub(1).min(16);
    (BACKOFF_FIRST_MS << doublings).min(BACKOFF_MAX_MS)
}

/// What to do with a message that just failed: try again at a time, or give up because it is too old by then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    At(i64),
    GiveUp,
}

/// After failed attempt number `attempts` at `now` of a message created at `created`, with the channel's
/// `give_up_after_ms`: the next attempt, unless it would come after the message's end.
pub fn after_failure(created: i64, attempts: u32, now: i64, give_up_after_ms: i64) -> Retry {
    let next = now + backoff_ms(attempts);
    if next > created + give_up_after_ms { Retry::GiveUp } else { Retry::At(next) }
}

/// A channel's hourly budget: at most `per_hour` messages in any hour.
#[derive(Debug, Clone)]
pub struct Budget {
    per_hour: usize,
    sent: VecDeque<i64>,
}

const HOUR_MS: i64 = 3_600_000;

impl Budget {
    pub fn new(per_hour: u32) -> Budget {
        Budget { per_hour: per_hour.max(1) as usize, sent: VecDeque::new() }
    }

    /// `Ok` and counted when a message may go at `now`, else when the next one may.
    pub fn take(&mut self, now: i64) -> Result<(), i64> {
        while self.sent.front().is_some_and(|t| now - t >= HOUR_MS) {
            self.sent.pop_front();
        }
        if self.sent.len() >= self.per_hour {
            return Err(self.sent.front().map_or(now, |first| first + HOUR_MS));
        }
        self.sent.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_a_ceiling_and_give_up_when_too_old() {
        let waits: Vec<i64> = (1..=9).map(backoff_ms).collect();
        assert_eq!(waits, [5_000, 10_000, 20_000, 40_000, 80_000, 160_000, 320_000, 600_000, 600_000]);
        assert_eq!(backoff_ms(u32::MAX), BACKOFF_MAX_MS);
        let day = 86_400_000;
        assert_eq!(after_failure(0, 1, 1_000, day), Retry::At(6_000));
        assert_eq!(after_failure(0, 20, day - 600_000, day), Retry::At(day));
        assert_eq!(after_failure(0, 20, day - 599_999, day), Retry::GiveUp);
    }

    #[test]
    fn a_channel_takes_at_most_its_hourly_budget() {
        let mut b = Budget::new(3);
        for t in [0, 10, 20] {
            assert_eq!(b.take(t), Ok(()));
        }
        assert_eq!(b.take(30), Err(HOUR_MS), "the fourth waits until the first is an hour old");
        assert_eq!(b.take(HOUR_MS), Ok(()));
        assert_eq!(b.take(HOUR_MS + 5), Err(HOUR_MS + 10));
        assert_eq!(Budget::new(0).take(0), Ok(()), "at least one an hour");
    }
}
