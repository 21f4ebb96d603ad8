//! What a schedule does when its time has come, or came while nobody was looking: fire the run that is due, or
//! record why a run was skipped. Pure and clock-free (the caller says what time it is), so restarts, downtime and
//! clocks that jump are decided in one place and tested in milliseconds.
//!
//! The rules:
//! - Every due time is handled once: fired or skipped. The caller keeps the last handled due time of each schedule
//!   (in the database, written in the transaction that fires or skips), and only due times after it are considered,
//!   so a crash right after firing, or a clock set back, never runs a due time again.
//! - Of the due times that passed since then, only the latest may fire, and only within the grace period
//!   (`XYTE_SCHEDULE_GRACE`) of its time: a daemon that was down, or a clock that jumped forward (an NTP correction,
//!   a box without a real-time clock that booted in 1970), never fires a burst of old runs. The others are skipped,
//!   with the reason.
//! - A paused schedule skips what falls due while it is paused.

/// Due times skipped one by one at most; a longer downtime is summed up in one skip (a cron every minute over a
/// week away would otherwise record ten thousand events).
pub const SKIPS_LISTED: usize = 10;

/// What to do about one due time (milliseconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run it now; `late_ms` after its time (0 when on time).
    Fire { due: i64, late_ms: i64 },
    /// Record it as not run, and why.
    Skip { due: i64, reason: Reason },
    /// Record that `count` due times from `first` to `last` were not run (a long downtime, summed up).
    SkipMany { first: i64, last: i64, count: usize, reason: Reason },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Its time passed more than the grace period ago (the daemon was stopped, the box off, or the clock jumped).
    Missed { late_ms: i64 },
    /// A later due time of the same schedule came before it could run.
    Superseded,
    /// The schedule was paused at its time.
    Paused,
}

impl Reason {
    /// The reason as `schedule.skipped` events and `list_schedules` show it.
    pub fn text(&self) -> String {
        match self {
            Reason::Missed { late_ms } => format!(
                "missed: its time passed {} ago, more than XYTE_SCHEDULE_GRACE allows (the gateway was stopped, or its \
                 clock jumped)",
                human(*late_ms)
            ),
            Reason::Superseded => {
                "superseded: a later run of the same schedule was due before this one could run".to_string()
            }
            Reason::Paused => "paused at its time".to_string(),
        }
    }
}

/// The actions for one schedule at `now`, oldest first: every due time after `handled` (the last one already fired
/// or skipped) up to `now`. `next_after(t)` is the schedule's first due time strictly after `t`. A schedule that has
/// never run has `handled` = the moment it was first seen, so it does not catch up on times before it existed.
/// `paused_until`: paused up to then (`Some(i64::MAX)`: until resumed).
pub fn due(
    handled: i64,
    now: i64,
    grace_ms: i64,
    paused_until: Option<i64>,
    next_after: impl Fn(i64) -> Option<i64>,
) -> Vec<Action> {
    let mut passed = Vec::new();
    let mut t = handled;
    // The listed skips, the latest due time and a count of the rest are all that is kept, however long the gap.
    let mut summed: Option<(i64, i64, usize)> = None;
    while let Some(d) = next_after(t).filter(|d| *d <= now && *d > t) {
        passed.push(d);
        if passed.len() > SKIPS_LISTED + 1 {
            let old = passed.remove(0);
            summed = Some(match summed {
                None => (old, old, 1),
                Some((first, _, n)) => (first, old, n + 1),
            });
        }
        t = d;
    }
    let Some(&latest) = passed.last() else { return Vec::new() };
    let paused = |d: i64| paused_until.is_some_and(|until| d < until);
    let mut actions = Vec::new();
    if let Some((first, last, count)) = summed {
        // The summed-up ones are all older than the listed ones, so all were superseded or missed.
        let reason = missed_or_superseded(last, now, grace_ms);
        actions.push(Action::SkipMany { first, last, count, reason });
    }
    for &d in &passed[..passed.len() - 1] {
        let reason = if paused(d) { Reason::Paused } else { missed_or_superseded(d, now, grace_ms) };
        actions.push(Action::Skip { due: d, reason });
    }
    let late_ms = now - latest;
    actions.push(if paused(latest) {
        Action::Skip { due: latest, reason: Reason::Paused }
    } else if late_ms > grace_ms {
        Action::Skip { due: latest, reason: Reason::Missed { late_ms } }
    } else {
        Action::Fire { due: latest, late_ms }
    });
    actions
}

/// An older due time was missed if it was already past the grace period, else superseded by the latest.
fn missed_or_superseded(d: i64, now: i64, grace_ms: i64) -> Reason {
    if now - d > grace_ms { Reason::Missed { late_ms: now - d } } else { Reason::Superseded }
}

fn human(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 2 * 86_400 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    const GRACE: i64 = 15 * MIN;

    /// Every `period` from 0.
    fn every(period: i64) -> impl Fn(i64) -> Option<i64> {
        move |t| Some((t.div_euclid(period) + 1) * period)
    }

    #[test]
    fn on_time_fires_once_and_never_again() {
        let daily = every(1440 * MIN);
        let due_at = 1440 * MIN;
        assert_eq!(due(0, due_at - 1, GRACE, None, &daily), vec![]);
        assert_eq!(due(0, due_at, GRACE, None, &daily), vec![Action::Fire { due: due_at, late_ms: 0 }]);
        // Handled (the fired record is written with it): the same time never comes again, also after a crash.
        assert_eq!(due(due_at, due_at + 5 * MIN, GRACE, None, &daily), vec![]);
    }

    #[test]
    fn a_restart_within_grace_fires_late_beyond_it_skips() {
        let daily = every(1440 * MIN);
        let d = 1440 * MIN;
        assert_eq!(due(0, d + 10 * MIN, GRACE, None, &daily), vec![Action::Fire { due: d, late_ms: 10 * MIN }]);
        assert_eq!(
            due(0, d + 16 * MIN, GRACE, None, &daily),
            vec![Action::Skip { due: d, reason: Reason::Missed { late_ms: 16 * MIN } }]
        );
    }

    #[test]
    fn a_downtime_fires_only_the_latest_and_sums_up_a_long_one() {
        let five = every(5 * MIN);
        // Down from 0 to 12 min: 5 and 10 passed; only 10 runs (2 min late), 5 was superseded.
        assert_eq!(
            due(0, 12 * MIN, GRACE, None, &five),
            vec![
                Action::Skip { due: 5 * MIN, reason: Reason::Superseded },
                Action::Fire { due: 10 * MIN, late_ms: 2 * MIN }
            ]
        );
        // A clock that jumps a day forward (RTC-less boot, then NTP): one summary, the listed ones, no burst.
        let actions = due(0, 1440 * MIN + 2 * MIN, GRACE, None, &five);
        let fired: Vec<_> = actions.iter().filter(|a| matches!(a, Action::Fire { .. })).collect();
        assert_eq!(fired, vec![&Action::Fire { due: 1440 * MIN, late_ms: 2 * MIN }]);
        let Action::SkipMany { first, count, .. } = actions[0] else { panic!("{actions:?}") };
        assert_eq!((first, count + SKIPS_LISTED + 1), (5 * MIN, 288));
        assert_eq!(actions.len(), SKIPS_LISTED + 2);
    }

    #[test]
    fn a_clock_set_back_neither_repeats_nor_skips_the_next_run() {
        let hourly = every(60 * MIN);
        // 10:00 was handled; the clock goes back to 09:30: nothing is due (10:00 is not run again)…
        assert_eq!(due(600 * MIN, 570 * MIN, GRACE, None, &hourly), vec![]);
        // …and when it reaches 11:00 that run fires, on time.
        assert_eq!(due(600 * MIN, 660 * MIN, GRACE, None, &hourly), vec![Action::Fire { due: 660 * MIN, late_ms: 0 }]);
    }

    #[test]
    fn a_paused_schedule_skips_what_falls_due_while_paused() {
        let hourly = every(60 * MIN);
        assert_eq!(
            due(0, 60 * MIN, GRACE, Some(i64::MAX), &hourly),
            vec![Action::Skip { due: 60 * MIN, reason: Reason::Paused }]
        );
        // Paused until 01:30: 01:00 skipped as paused, 02:00 fires.
        assert_eq!(
            due(60 * MIN, 120 * MIN, GRACE, Some(90 * MIN), &hourly),
            vec![Action::Fire { due: 120 * MIN, late_ms: 0 }]
        );
        assert_eq!(
            due(0, 120 * MIN, GRACE, Some(90 * MIN), &hourly),
            vec![Action::Skip { due: 60 * MIN, reason: Reason::Paused }, Action::Fire { due: 120 * MIN, late_ms: 0 }]
        );
    }

    #[test]
    fn a_schedule_that_never_comes_does_nothing() {
        assert_eq!(due(0, i64::MAX / 2, GRACE, None, |_| None), vec![]);
        assert!(Reason::Missed { late_ms: 3 * 86_400_000 }.text().contains("3 days"));
    }
}
