//! When one schedule runs: `at` (`HH:MM`) with `days`, or a five-field `cron` expression, in an IANA time zone (the
//! system's by default), skipping `except` dates and the shared holidays.
//!
//! Both forms compile to one [`Pattern`] of allowed minutes, hours, days of the month, months and days of the week,
//! matched against local wall-clock times. Each matching local time maps to one instant:
//!
//! - a local time that does not exist that day (the spring-forward gap) runs at the first instant after the gap
//!   (02:30 on Berlin's spring-forward day runs at 03:00 CEST), so several gap times collapse into that one run;
//! - a local time that occurs twice (the fall-back fold) runs once, at its first occurrence (02:30 CEST, never again at
//!   02:30 CET). This holds for every local time, also for cron wildcards: `*/15 * * * *` runs at 02:00, 02:15, 02:30
//!   and 02:45 CEST on Berlin's fall-back day and not again until 03:00 CET.
//!
//! The mapping never goes backwards in time, so the first run strictly after an instant is the first matching local
//! time after that instant's own local reading whose instant is later than it.

use std::fmt;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, TimeZone};
use serde::{Deserialize, Serialize};

/// How far [`When::next_after`] looks ahead, in days. A cron that can fire at all fires within about twelve years
/// (a 29 February, or the first of one month on one weekday, across the skipped leap day of 2100), so thirty years
/// only ends the search for a schedule whose remaining dates are all holidays or exceptions.
const SEARCH_DAYS: usize = 366 * 30;

/// A schedule's "when" as written in the presets file, before validation: a schedule entry carries these keys beside
/// its own (`name`, `room`, …), fills one and calls [`When::new`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WhenSpec {
    /// `HH:MM`, 24 hours, local time in `timezone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// With `at`: `mon`…`sun`, `weekdays`, `weekends`. Left out: every day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<Vec<String>>,
    /// Five fields: minute hour day-of-month month day-of-week.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// IANA name, e.g. `Europe/Berlin`. Left out: the system's zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Dates (`YYYY-MM-DD`, in `timezone`) on which the schedule does not run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
}

/// A validated schedule time: build it with [`When::new`] from a [`WhenSpec`].
#[derive(Debug, Clone)]
pub struct When {
    pattern: Pattern,
    tz: TimeZone,
    except: Vec<Date>,
}

/// What is wrong with a schedule's time, as a sentence that names the key and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WhenError(String);

impl WhenError {
    fn new(message: impl Into<String>) -> WhenError {
        WhenError(message.into())
    }
}

/// Allowed values as bit sets. `dom_star`/`dow_star`: the field started with `*` (Vixie cron's rule: when neither
/// day field did, a day matches if either matches; otherwise both must).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pattern {
    minutes: u64, // bits 0..=59
    hours: u32,   // bits 0..=23
    doms: u32,    // bits 1..=31
    months: u16,  // bits 1..=12
    dows: u8,     // bits 0..=6, Sunday = 0
    dom_star: bool,
    dow_star: bool,
}

const ALL_DOWS: u8 = 0b111_1111;

impl Pattern {
    fn day_matches(&self, date: Date) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let dom = self.doms & (1 << date.day()) != 0;
        let dow = self.dows & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        if self.dom_star || self.dow_star { dom && dow } else { dom || dow }
    }

    /// Whether some day of some year matches (only a day-of-month list that no chosen month has can fail: see
    /// [`SEARCH_DAYS`] for why every other combination comes round).
    fn can_fire(&self) -> bool {
        if self.dom_star || !self.dow_star {
            return true;
        }
        const LONGEST: [u32; 13] = [0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        (1..=12).any(|m| self.months & (1 << m) != 0 && (1..=LONGEST[m]).any(|d| self.doms & (1 << d) != 0))
    }
}

impl When {
    /// Validates a spec: exactly one of `at`/`cron`, `days` only with `at`, a known time zone, real dates.
    pub fn new(spec: WhenSpec) -> Result<When, WhenError> {
        let pattern = match (&spec.at, &spec.cron) {
            (Some(_), Some(_)) => return Err(WhenError::new("give either at (with days) or cron, not both")),
            (None, None) => return Err(WhenError::new("give either at (HH:MM, with days) or cron (five fields)")),
            (Some(at), None) => {
                let (hour, minute) = parse_at(at)?;
                let (dows, dow_star) = match &spec.days {
                    None => (ALL_DOWS, true),
                    Some(days) => (parse_days(days)?, false),
                };
                Pattern {
                    minutes: 1 << minute,
                    hours: 1 << hour,
                    doms: u32::MAX,
                    months: u16::MAX,
                    dows,
                    dom_star: true,
                    dow_star,
                }
            }
            (None, Some(cron)) => {
                if spec.days.is_some() {
                    return Err(WhenError::new(
                        "days goes with at, not with cron (the cron's fifth field names the days of the week)",
                    ));
                }
                parse_cron(cron)?
            }
        };
        let tz = match spec.timezone.as_deref() {
            None => TimeZone::system(),
            Some(name) => TimeZone::get(name.trim())
                .ok()
                .filter(|_| !name.trim().is_empty())
                .ok_or_else(|| WhenError::new(format!("unknown time zone {name}{}", tzdb_hint())))?,
        };
        // A short list: searched with `contains`, which costs no sort code in the binary.
        let except = parse_dates("except", &spec.except)?;
        Ok(When { pattern, tz, except })
    }

    /// The schedule's time zone (the system's when none was given).
    pub fn timezone(&self) -> &TimeZone {
        &self.tz
    }

    /// The first run strictly after `after`, skipping days (in the schedule's zone) listed in `except` or in
    /// `holidays`. `None` when nothing runs within [`SEARCH_DAYS`] (every remaining date excluded).
    pub fn next_after(&self, after: Timestamp, holidays: &[Date]) -> Option<Timestamp> {
        let start = self.tz.to_datetime(after);
        let mut date = start.date();
        for _ in 0..SEARCH_DAYS {
            if self.pattern.day_matches(date) && !self.except.contains(&date) && !holidays.contains(&date) {
                for hour in bits(u64::from(self.pattern.hours), 24) {
                    for minute in bits(self.pattern.minutes, 60) {
                        let local = date.at(hour as i8, minute as i8, 0, 0);
                        // Local times up to `after`'s own reading map to instants up to `after` (the mapping is
                        // monotonic): only later ones can be the answer, and in a fold not all of those are.
                        if local <= start {
                            continue;
                        }
                        if let Some(instant) = instant_of(&self.tz, local).filter(|i| *i > after) {
                            return Some(instant);
                        }
                    }
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }

    /// The next `n` runs after `after` (fewer if [`When::next_after`] runs out), e.g. the three `check-config` shows.
    pub fn next_runs(&self, after: Timestamp, holidays: &[Date], n: usize) -> Vec<Timestamp> {
        let mut runs = Vec::with_capacity(n.min(64));
        let mut from = after;
        while runs.len() < n {
            let Some(next) = self.next_after(from, holidays) else { break };
            runs.push(next);
            from = next;
        }
        runs
    }
}

/// The instant a local wall-clock time runs at: itself when unambiguous, its first occurrence in a fold, the end of
/// the gap (the transition) when the local time is skipped.
fn instant_of(tz: &TimeZone, local: DateTime) -> Option<Timestamp> {
    match tz.to_ambiguous_timestamp(local).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(local).ok(),
        AmbiguousOffset::Fold { before, .. } => before.to_timestamp(local).ok(),
        AmbiguousOffset::Gap { before, after } => {
            // Read with the later offset, a time in the gap falls just before the transition that made the gap.
            let inside = after.to_timestamp(local).ok()?;
            tz.following(inside)
                .next()
                .map(|transition| transition.timestamp())
                .or_else(|| before.to_timestamp(local).ok())
        }
    }
}

/// Why every zone may be unknown: zones come from the system's tz database (the package depends on Debian's
/// `tzdata`, present on every Debian system; `TZDIR` points elsewhere).
fn tzdb_hint() -> &'static str {
    let dir = std::env::var_os("TZDIR").unwrap_or_else(|| "/usr/share/zoneinfo".into());
    if std::path::Path::new(&dir).is_dir() { "" } else { " (this system has no tz database: install tzdata)" }
}

/// The set bits of `set` below `limit`, ascending.
fn bits(set: u64, limit: u32) -> impl Iterator<Item = u32> {
    (0..limit).filter(move |b| set & (1 << b) != 0)
}

/// `YYYY-MM-DD`, a real date.
pub fn parse_date(text: &str) -> Result<Date, WhenError> {
    let bad = || WhenError::new(format!("'{text}' is not a date (YYYY-MM-DD)"));
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i16, WhenError> {
        let part = &text[r];
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        part.parse().map_err(|_| bad())
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    Date::new(y, m as i8, d as i8).map_err(|_| bad())
}

/// A list of dates (`except`, the shared `holidays`), each error prefixed with the key's name.
pub fn parse_dates(key: &str, list: &[String]) -> Result<Vec<Date>, WhenError> {
    list.iter().map(|s| parse_date(s.trim()).map_err(|e| WhenError::new(format!("{key}: {e}")))).collect()
}

fn parse_at(at: &str) -> Result<(u32, u32), WhenError> {
    let text = at.trim();
    let shape = || WhenError::new(format!("at: '{at}' is not a time of day (HH:MM, 24 hours)"));
    let (h, m) = text.split_once(':').ok_or_else(shape)?;
    let digits = |s: &str, max_len| !s.is_empty() && s.len() <= max_len && s.bytes().all(|c| c.is_ascii_digit());
    if !digits(h, 2) || !digits(m, 2) || m.len() != 2 {
        return Err(shape());
    }
    let (hour, minute): (u32, u32) = (h.parse().map_err(|_| shape())?, m.parse().map_err(|_| shape())?);
    if hour > 23 || minute > 59 {
        return Err(WhenError::new(format!("at: {text} is not a time of day (00:00 to 23:59)")));
    }
    Ok((hour, minute))
}

const DAY_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const MONTH_NAMES: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];

fn parse_days(days: &[String]) -> Result<u8, WhenError> {
    if days.is_empty() {
        return Err(WhenError::new(
            "days: the list is empty, so the schedule would never run (leave days out for every day)",
        ));
    }
    let mut set = 0u8;
    for day in days {
        let name = day.trim().to_ascii_lowercase();
        set |= match name.as_str() {
            "weekdays" => 0b011_1110,
            "weekends" => 0b100_0001,
            _ => match DAY_NAMES.iter().position(|d| *d == name) {
                Some(i) => 1 << i,
                None => {
                    return Err(WhenError::new(format!(
                        "days: unknown day '{day}' (mon, tue, wed, thu, fri, sat, sun, weekdays, weekends)"
                    )));
                }
            },
        };
    }
    Ok(set)
}

/// One cron field: its position, name, range and the names it accepts.
struct Field {
    index: usize,
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    names_from: u32,
}

const FIELDS: [Field; 5] = [
    Field { index: 1, name: "minute", min: 0, max: 59, names: &[], names_from: 0 },
    Field { index: 2, name: "hour", min: 0, max: 23, names: &[], names_from: 0 },
    Field { index: 3, name: "day-of-month", min: 1, max: 31, names: &[], names_from: 0 },
    Field { index: 4, name: "month", min: 1, max: 12, names: &MONTH_NAMES, names_from: 1 },
    Field { index: 5, name: "day-of-week", min: 0, max: 7, names: &DAY_NAMES, names_from: 0 },
];

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cron field {} ({})", self.index, self.name)
    }
}

impl Field {
    fn value(&self, text: &str) -> Result<u32, WhenError> {
        if !text.is_empty() && text.bytes().all(|c| c.is_ascii_digit()) {
            let n: u32 = text.parse().unwrap_or(u32::MAX);
            if n < self.min || n > self.max {
                return Err(WhenError::new(format!("{self} has {text}, which is out of {}-{}", self.min, self.max)));
            }
            return Ok(n);
        }
        let lower = text.to_ascii_lowercase();
        match self.names.iter().position(|n| *n == lower) {
            Some(i) => Ok(i as u32 + self.names_from),
            None if self.names.is_empty() => Err(WhenError::new(format!("{self} has '{text}', which is not a number"))),
            None => Err(WhenError::new(format!(
                "{self} has '{text}', which is neither a number nor one of {}",
                self.names.join(", ")
            ))),
        }
    }

    /// `*`, `n`, `a-b`, `*/s`, `a-b/s`, and lists of them, as a bit set (day-of-week 7 folded onto 0).
    fn parse(&self, text: &str) -> Result<u64, WhenError> {
        let mut set = 0u64;
        for item in text.split(',') {
            let (range, step) = match item.split_once('/') {
                None => (item, 1),
                Some((range, step)) => {
                    let step: u32 = match step.parse() {
                        Ok(s) if s > 0 && step.bytes().all(|c| c.is_ascii_digit()) => s,
                        _ => {
                            return Err(WhenError::new(format!(
                                "{self} has step '{step}', which is not a number above 0"
                            )));
                        }
                    };
                    if range != "*" && !range.contains('-') {
                        return Err(WhenError::new(format!(
                            "{self} has '{item}': a step needs a range (write {range}-{}/{step} or */{step})",
                            self.max
                        )));
                    }
                    (range, step)
                }
            };
            let (lo, hi) = if range == "*" {
                (self.min, if self.index == 5 { 6 } else { self.max })
            } else if let Some((a, b)) = range.split_once('-') {
                let (lo, hi) = (self.value(a)?, self.value(b)?);
                if lo > hi {
                    return Err(WhenError::new(format!("{self} has the range {range}, which runs backwards")));
                }
                (lo, hi)
            } else if range.is_empty() {
                return Err(WhenError::new(format!("{self} has an empty item in '{text}'")));
            } else {
                let n = self.value(range)?;
                (n, n)
            };
            for v in (lo..=hi).step_by(step as usize) {
                set |= 1 << v;
            }
        }
        if self.index == 5 && set & (1 << 7) != 0 {
            set = (set | 1) & !(1 << 7);
        }
        Ok(set)
    }
}

fn parse_cron(cron: &str) -> Result<Pattern, WhenError> {
    let fields: Vec<&str> = cron.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(WhenError::new(format!(
            "cron '{cron}' has {} fields; it needs five: minute hour day-of-month month day-of-week",
            fields.len()
        )));
    }
    let mut sets = [0u64; 5];
    for (field, (text, set)) in FIELDS.iter().zip(fields.iter().zip(sets.iter_mut())) {
        *set = field.parse(text)?;
    }
    let pattern = Pattern {
        minutes: sets[0],
        hours: sets[1] as u32,
        doms: sets[2] as u32,
        months: sets[3] as u16,
        dows: sets[4] as u8,
        dom_star: fields[2].starts_with('*'),
        dow_star: fields[4].starts_with('*'),
    };
    if !pattern.can_fire() {
        return Err(WhenError::new(format!("cron '{cron}' never fires: no month it names has the days it names")));
    }
    Ok(pattern)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn date(s: &str) -> Date {
        parse_date(s).unwrap()
    }

    fn at(time: &str, days: Option<&[&str]>, tz: &str) -> When {
        When::new(WhenSpec {
            at: Some(time.into()),
            days: days.map(|d| d.iter().map(|s| s.to_string()).collect()),
            timezone: Some(tz.into()),
            ..WhenSpec::default()
        })
        .unwrap()
    }

    fn cron(expr: &str, tz: &str) -> When {
        When::new(WhenSpec { cron: Some(expr.into()), timezone: Some(tz.into()), ..WhenSpec::default() })
            .unwrap_or_else(|e| panic!("{expr}: {e}"))
    }

    fn runs(when: &When, after: &str, holidays: &[Date], n: usize) -> Vec<Timestamp> {
        when.next_runs(ts(after), holidays, n)
    }

    fn all(list: &[&str]) -> Vec<Timestamp> {
        list.iter().map(|s| ts(s)).collect()
    }

    /// A `When` from the presets file's shape, as `config::presets` builds it.
    fn parse(json: &str) -> Result<When, String> {
        When::new(serde_json::from_str::<WhenSpec>(json).map_err(|e| e.to_string())?).map_err(|e| e.to_string())
    }

    fn error(json: &str) -> String {
        match parse(json) {
            Ok(_) => panic!("{json} was accepted"),
            Err(e) => e,
        }
    }

    // --- daylight saving, Europe/Berlin (2026-03-29 02:00 CET -> 03:00 CEST; 2026-10-25 03:00 CEST -> 02:00 CET)

    #[test]
    fn berlin_spring_forward_time_in_the_gap_runs_when_the_gap_ends() {
        let w = at("02:30", None, "Europe/Berlin");
        assert_eq!(
            runs(&w, "2026-03-27T12:00:00Z", &[], 4),
            all(&[
                "2026-03-28T02:30:00+01:00",
                "2026-03-29T03:00:00+02:00", // 02:30 does not exist that day: the first instant after the gap
                "2026-03-30T02:30:00+02:00",
                "2026-03-31T02:30:00+02:00",
            ])
        );
        // Just before the transition, the gap run is next; at the transition it has happened.
        assert_eq!(w.next_after(ts("2026-03-29T00:59:59Z"), &[]), Some(ts("2026-03-29T01:00:00Z")));
        assert_eq!(w.next_after(ts("2026-03-29T01:00:00Z"), &[]), Some(ts("2026-03-30T00:30:00Z")));
    }

    #[test]
    fn berlin_fall_back_time_in_the_fold_runs_once_at_its_first_occurrence() {
        let w = at("02:30", None, "Europe/Berlin");
        assert_eq!(
            runs(&w, "2026-10-23T12:00:00Z", &[], 3),
            all(&["2026-10-24T02:30:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"])
        );
        // From the first occurrence, between the two, at and after the second: never 02:30 CET that day.
        for after in ["2026-10-25T00:30:00Z", "2026-10-25T01:00:00Z", "2026-10-25T01:30:00Z", "2026-10-25T01:45:00Z"] {
            assert_eq!(w.next_after(ts(after), &[]), Some(ts("2026-10-26T02:30:00+01:00")), "after {after}");
        }
        assert_eq!(w.next_after(ts("2026-10-25T00:29:59Z"), &[]), Some(ts("2026-10-25T00:30:00Z")));
    }

    #[test]
    fn berlin_weekday_schedule_keeps_local_time_across_both_changes() {
        let w = at("07:45", Some(&["weekdays"]), "Europe/Berlin");
        assert_eq!(
            runs(&w, "2026-03-26T12:00:00Z", &[], 3),
            all(&["2026-03-27T07:45:00+01:00", "2026-03-30T07:45:00+02:00", "2026-03-31T07:45:00+02:00"])
        );
        assert_eq!(
            runs(&w, "2026-10-22T12:00:00Z", &[], 3),
            all(&["2026-10-23T07:45:00+02:00", "2026-10-26T07:45:00+01:00", "2026-10-27T07:45:00+01:00"])
        );
    }

    #[test]
    fn berlin_cron_across_the_gap_and_the_fold() {
        let w = cron("*/30 * * * *", "Europe/Berlin");
        // 02:00 and 02:30 do not exist: both are the one run at 03:00 CEST, then 03:30 as usual.
        assert_eq!(
            runs(&w, "2026-03-29T00:00:00Z", &[], 4),
            all(&[
                "2026-03-29T01:30:00+01:00",
                "2026-03-29T03:00:00+02:00",
                "2026-03-29T03:30:00+02:00",
                "2026-03-29T04:00:00+02:00",
            ])
        );
        // 02:00 and 02:30 occur twice: they run in CEST only; the next run is 03:00 CET.
        assert_eq!(
            runs(&w, "2026-10-24T23:15:00Z", &[], 5),
            all(&[
                "2026-10-25T01:30:00+02:00",
                "2026-10-25T02:00:00+02:00",
                "2026-10-25T02:30:00+02:00",
                "2026-10-25T03:00:00+01:00",
                "2026-10-25T03:30:00+01:00",
            ])
        );
        let w = cron("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            runs(&w, "2026-03-28T12:00:00Z", &[], 1),
            all(&["2026-03-29T03:00:00+02:00"]),
            "the gap, through cron"
        );
        assert_eq!(
            runs(&w, "2026-10-24T12:00:00Z", &[], 2),
            all(&["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]),
            "the fold, through cron: once"
        );
    }

    // --- daylight saving, America/New_York (2026-03-08 02:00 EST -> 03:00 EDT; 2026-11-01 02:00 EDT -> 01:00 EST)

    #[test]
    fn new_york_spring_forward_time_in_the_gap_runs_when_the_gap_ends() {
        let w = at("02:30", None, "America/New_York");
        assert_eq!(
            runs(&w, "2026-03-06T12:00:00Z", &[], 3),
            all(&["2026-03-07T02:30:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"])
        );
        let w = cron("15 2 * * sun", "America/New_York");
        assert_eq!(
            runs(&w, "2026-03-01T12:00:00Z", &[], 2),
            all(&["2026-03-08T03:00:00-04:00", "2026-03-15T02:15:00-04:00"])
        );
    }

    #[test]
    fn new_york_fall_back_time_in_the_fold_runs_once() {
        let w = at("01:30", None, "America/New_York");
        assert_eq!(
            runs(&w, "2026-10-31T12:00:00Z", &[], 3),
            all(&["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00", "2026-11-03T01:30:00-05:00"])
        );
        for after in ["2026-11-01T05:30:00Z", "2026-11-01T06:00:00Z", "2026-11-01T06:30:00Z", "2026-11-01T06:45:00Z"] {
            assert_eq!(w.next_after(ts(after), &[]), Some(ts("2026-11-02T01:30:00-05:00")), "after {after}");
        }
        let w = cron("0 * * * *", "America/New_York");
        // 01:00 occurs at 05:00Z (EDT) and 06:00Z (EST): once, then 02:00 EST.
        assert_eq!(
            runs(&w, "2026-11-01T04:30:00Z", &[], 3),
            all(&["2026-11-01T01:00:00-04:00", "2026-11-01T02:00:00-05:00", "2026-11-01T03:00:00-05:00"])
        );
    }

    #[test]
    fn new_york_weekday_schedule_across_both_changes() {
        let w = at("19:00", Some(&["mon", "fri"]), "America/New_York");
        assert_eq!(
            runs(&w, "2026-03-05T12:00:00Z", &[], 2),
            all(&["2026-03-06T19:00:00-05:00", "2026-03-09T19:00:00-04:00"])
        );
        assert_eq!(
            runs(&w, "2026-10-29T12:00:00Z", &[], 2),
            all(&["2026-10-30T19:00:00-04:00", "2026-11-02T19:00:00-05:00"])
        );
    }

    // --- days, holidays, except

    #[test]
    fn holidays_and_except_skip_their_days() {
        let w = When::new(WhenSpec {
            at: Some("07:45".into()),
            days: Some(vec!["weekdays".into()]),
            timezone: Some("Europe/Berlin".into()),
            except: vec!["2026-03-30".into()],
            ..WhenSpec::default()
        })
        .unwrap();
        let holidays = [date("2026-03-31"), date("2026-04-03")];
        assert_eq!(
            runs(&w, "2026-03-27T12:00:00Z", &holidays, 3),
            all(&["2026-04-01T07:45:00+02:00", "2026-04-02T07:45:00+02:00", "2026-04-06T07:45:00+02:00"])
        );
        assert_eq!(
            runs(&w, "2026-03-27T12:00:00Z", &[], 2),
            all(&["2026-03-31T07:45:00+02:00", "2026-04-01T07:45:00+02:00"]),
            "except alone"
        );
    }

    #[test]
    fn holidays_are_dates_in_the_schedules_zone() {
        // 23:30 on 24 December in New York is already the 25th in UTC.
        let w = at("23:30", None, "America/New_York");
        let after = "2026-12-24T12:00:00Z";
        assert_eq!(runs(&w, after, &[date("2026-12-25")], 1), all(&["2026-12-24T23:30:00-05:00"]));
        assert_eq!(runs(&w, after, &[date("2026-12-24")], 1), all(&["2026-12-25T23:30:00-05:00"]));
        let w = cron("30 23 * * *", "America/New_York");
        assert_eq!(runs(&w, after, &[date("2026-12-24")], 1), all(&["2026-12-25T23:30:00-05:00"]));
    }

    #[test]
    fn weekdays_weekends_and_day_lists() {
        // 2026-04-06 is a Monday.
        let from = "2026-04-05T22:00:00Z";
        let days = |w: &When| -> Vec<String> {
            runs(w, from, &[], 7).iter().map(|t| w.timezone().to_datetime(*t).date().to_string()).collect()
        };
        assert_eq!(
            days(&at("12:00", Some(&["weekdays"]), "UTC")),
            ["2026-04-06", "2026-04-07", "2026-04-08", "2026-04-09", "2026-04-10", "2026-04-13", "2026-04-14"]
        );
        assert_eq!(
            days(&at("12:00", Some(&["weekends"]), "UTC")),
            ["2026-04-11", "2026-04-12", "2026-04-18", "2026-04-19", "2026-04-25", "2026-04-26", "2026-05-02"]
        );
        assert_eq!(
            days(&at("12:00", Some(&["Mon", "sun", "wed", "mon"]), "UTC")),
            ["2026-04-06", "2026-04-08", "2026-04-12", "2026-04-13", "2026-04-15", "2026-04-19", "2026-04-20"]
        );
        assert_eq!(days(&at("12:00", None, "UTC")).len(), 7);
        assert_eq!(days(&at("12:00", None, "UTC"))[6], "2026-04-12", "no days: every day");
    }

    #[test]
    fn runs_are_strictly_after() {
        let w = at("07:00", None, "UTC");
        assert_eq!(w.next_after(ts("2026-05-01T07:00:00Z"), &[]), Some(ts("2026-05-02T07:00:00Z")));
        assert_eq!(w.next_after(ts("2026-05-01T06:59:59.999Z"), &[]), Some(ts("2026-05-01T07:00:00Z")));
        assert_eq!(w.next_after(ts("2026-05-01T07:00:00.001Z"), &[]), Some(ts("2026-05-02T07:00:00Z")));
    }

    // --- cron

    #[test]
    fn cron_fields_lists_ranges_steps_and_names() {
        let p = |e: &str| parse_cron(e).unwrap_or_else(|err| panic!("{e}: {err}"));
        let mask = |v: &[u32]| v.iter().fold(0u64, |m, b| m | 1 << b);
        let x = p("0,30 9-17/4 1-10/3,20 jan,MAR-may */2");
        assert_eq!(x.minutes, mask(&[0, 30]));
        assert_eq!(u64::from(x.hours), mask(&[9, 13, 17]));
        assert_eq!(u64::from(x.doms), mask(&[1, 4, 7, 10, 20]));
        assert_eq!(u64::from(x.months), mask(&[1, 3, 4, 5]));
        assert_eq!(u64::from(x.dows), mask(&[0, 2, 4, 6]));
        assert!(!x.dom_star && x.dow_star);
        assert_eq!(p("*/15 * * * *").minutes, mask(&[0, 15, 30, 45]));
        assert_eq!(u64::from(p("* * * * *").hours), (1 << 24) - 1);
        assert_eq!(u64::from(p("* * * */5 *").months), mask(&[1, 6, 11]));
        // Sunday is 0, 7 and sun; ranges may end at 7.
        for sunday in ["0", "7", "sun", "SUN"] {
            assert_eq!(p(&format!("0 0 * * {sunday}")).dows, 1, "{sunday}");
        }
        assert_eq!(u64::from(p("0 0 * * 5-7").dows), mask(&[0, 5, 6]));
        assert_eq!(u64::from(p("0 0 * * mon-fri").dows), mask(&[1, 2, 3, 4, 5]));
        assert_eq!(u64::from(p("0 0 * * *").dows), mask(&[0, 1, 2, 3, 4, 5, 6]));

        // And they fire: 09:00 and 09:30, 13:00 …, on the listed days.
        let w = cron("0,30 9-13/4 * * mon-wed", "Europe/Berlin");
        assert_eq!(
            runs(&w, "2026-04-05T12:00:00Z", &[], 5), // Sunday
            all(&[
                "2026-04-06T09:00:00+02:00",
                "2026-04-06T09:30:00+02:00",
                "2026-04-06T13:00:00+02:00",
                "2026-04-06T13:30:00+02:00",
                "2026-04-07T09:00:00+02:00",
            ])
        );
        let w = cron("0 8 1 jan,jul *", "UTC");
        assert_eq!(runs(&w, "2026-04-05T12:00:00Z", &[], 2), all(&["2026-07-01T08:00:00Z", "2027-01-01T08:00:00Z"]));
    }

    #[test]
    fn cron_days_follow_vixie() {
        // Both day fields restricted: either matches. April 2026: Fridays 3, 10, 17, 24; the 15th is a Wednesday.
        let w = cron("0 12 15 * fri", "UTC");
        assert_eq!(
            runs(&w, "2026-04-01T00:00:00Z", &[], 5),
            all(&[
                "2026-04-03T12:00:00Z",
                "2026-04-10T12:00:00Z",
                "2026-04-15T12:00:00Z",
                "2026-04-17T12:00:00Z",
                "2026-04-24T12:00:00Z",
            ])
        );
        // One of them `*`: only the other restricts.
        assert_eq!(runs(&cron("0 12 15 * *", "UTC"), "2026-04-01T00:00:00Z", &[], 1), all(&["2026-04-15T12:00:00Z"]));
        assert_eq!(runs(&cron("0 12 * * fri", "UTC"), "2026-04-11T00:00:00Z", &[], 1), all(&["2026-04-17T12:00:00Z"]));
        // A day-of-month starting with `*` counts as unrestricted (Vixie's rule): both must match.
        // Days 1, 11, 21, 31 that are Fridays: 1 May 2026 is the first after April began.
        assert_eq!(
            runs(&cron("0 12 */10 * fri", "UTC"), "2026-04-01T00:00:00Z", &[], 1),
            all(&["2026-05-01T12:00:00Z"])
        );
    }

    #[test]
    fn leap_day_cron_fires_every_four_years_and_ends_when_every_date_is_a_holiday() {
        let w = cron("0 0 29 2 *", "UTC");
        assert_eq!(runs(&w, "2026-01-01T00:00:00Z", &[], 2), all(&["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"]));
        let holidays: Vec<Date> = (2028..2070).step_by(4).map(|y| Date::new(y, 2, 29).unwrap()).collect();
        assert_eq!(w.next_after(ts("2026-01-01T00:00:00Z"), &holidays), None);
        assert!(w.next_runs(ts("2026-01-01T00:00:00Z"), &holidays, 3).is_empty());
    }

    #[test]
    fn a_cron_that_never_fires_is_refused() {
        for expr in ["0 0 31 2 *", "0 0 30 feb *", "0 0 31 4,6,9,11 *", "0 0 30-31 2 *"] {
            let e =
                When::new(WhenSpec { cron: Some(expr.into()), timezone: Some("UTC".into()), ..WhenSpec::default() })
                    .unwrap_err();
            assert_eq!(e.to_string(), format!("cron '{expr}' never fires: no month it names has the days it names"));
        }
        // Restricting the weekday too makes it fire (either field is enough).
        assert!(parse_cron("0 0 31 2 mon").is_ok());
        assert!(parse_cron("0 0 31 2,3 *").is_ok());
    }

    // --- parsing and errors

    #[test]
    fn deserialises_from_the_presets_file_shape() {
        let w = parse(r#"{"at": "7:05", "days": ["weekdays"], "timezone": "Europe/Berlin", "except": ["2026-04-06"]}"#)
            .unwrap();
        assert_eq!(w.timezone().iana_name(), Some("Europe/Berlin"));
        assert_eq!(w.next_after(ts("2026-04-05T00:00:00Z"), &[]), Some(ts("2026-04-07T07:05:00+02:00")));
        let w = parse(r#"{"cron": " 0  19 * * * ", "timezone": "America/New_York"}"#).unwrap();
        assert_eq!(w.next_after(ts("2026-04-05T00:00:00Z"), &[]), Some(ts("2026-04-05T19:00:00-04:00")));
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let cases = [
            (r#"{"cron": "0 24 * * *"}"#, "cron field 2 (hour) has 24, which is out of 0-23"),
            (r#"{"cron": "60 * * * *"}"#, "cron field 1 (minute) has 60, which is out of 0-59"),
            (r#"{"cron": "0 0 0 * *"}"#, "cron field 3 (day-of-month) has 0, which is out of 1-31"),
            (r#"{"cron": "0 0 * 13 *"}"#, "cron field 4 (month) has 13, which is out of 1-12"),
            (r#"{"cron": "0 0 * * 8"}"#, "cron field 5 (day-of-week) has 8, which is out of 0-7"),
            (
                r#"{"cron": "0 0 * * mond"}"#,
                concat!(
                    "cron field 5 (day-of-week) has 'mond', which is neither a number nor one of ",
                    "sun, mon, tue, wed, thu, fri, sat"
                ),
            ),
            (
                r#"{"cron": "0 0 * foo *"}"#,
                concat!(
                    "cron field 4 (month) has 'foo', which is neither a number nor one of ",
                    "jan, feb, mar, apr, may, jun, jul, aug, sep, oct, nov, dec"
                ),
            ),
            (r#"{"cron": "x * * * *"}"#, "cron field 1 (minute) has 'x', which is not a number"),
            (r#"{"cron": "*/0 * * * *"}"#, "cron field 1 (minute) has step '0', which is not a number above 0"),
            (
                r#"{"cron": "5/15 * * * *"}"#,
                "cron field 1 (minute) has '5/15': a step needs a range (write 5-59/15 or */15)",
            ),
            (r#"{"cron": "0 17-9 * * *"}"#, "cron field 2 (hour) has the range 17-9, which runs backwards"),
            (r#"{"cron": "0,,5 * * * *"}"#, "cron field 1 (minute) has an empty item in '0,,5'"),
            (
                r#"{"cron": "0 0 * *"}"#,
                "cron '0 0 * *' has 4 fields; it needs five: minute hour day-of-month month day-of-week",
            ),
            (
                r#"{"cron": "@daily"}"#,
                "cron '@daily' has 1 fields; it needs five: minute hour day-of-month month day-of-week",
            ),
            (r#"{"at": "25:00"}"#, "at: 25:00 is not a time of day (00:00 to 23:59)"),
            (r#"{"at": "12:60"}"#, "at: 12:60 is not a time of day (00:00 to 23:59)"),
            (r#"{"at": "7.45"}"#, "at: '7.45' is not a time of day (HH:MM, 24 hours)"),
            (r#"{"at": "7:5"}"#, "at: '7:5' is not a time of day (HH:MM, 24 hours)"),
            (r#"{"at": "7:45 pm"}"#, "at: '7:45 pm' is not a time of day (HH:MM, 24 hours)"),
            (
                r#"{"at": "07:45", "days": ["mond"]}"#,
                "days: unknown day 'mond' (mon, tue, wed, thu, fri, sat, sun, weekdays, weekends)",
            ),
            (
                r#"{"at": "07:45", "days": []}"#,
                "days: the list is empty, so the schedule would never run (leave days out for every day)",
            ),
            (r#"{"at": "07:45", "timezone": "Europe/Berln"}"#, "unknown time zone Europe/Berln"),
            (r#"{"at": "07:45", "timezone": ""}"#, "unknown time zone "),
            (r#"{"at": "07:45", "except": ["2026-02-30"]}"#, "except: '2026-02-30' is not a date (YYYY-MM-DD)"),
            (r#"{"at": "07:45", "except": ["2026-2-3"]}"#, "except: '2026-2-3' is not a date (YYYY-MM-DD)"),
            (r#"{"at": "07:45", "cron": "0 7 * * *"}"#, "give either at (with days) or cron, not both"),
            (r#"{"timezone": "UTC"}"#, "give either at (HH:MM, with days) or cron (five fields)"),
            (
                r#"{"cron": "0 7 * * *", "days": ["mon"]}"#,
                "days goes with at, not with cron (the cron's fifth field names the days of the week)",
            ),
        ];
        for (json, message) in cases {
            assert_eq!(error(json), message, "{json}");
        }
        assert!(error(r#"{"at": "07:45", "when": "now"}"#).starts_with("unknown field `when`"));
        assert_eq!(
            parse_dates("holidays", &["2026-12-25".into(), "25.12.2026".into()]).unwrap_err().to_string(),
            "holidays: '25.12.2026' is not a date (YYYY-MM-DD)"
        );
        assert_eq!(parse_dates("holidays", &["2026-12-25".into()]).unwrap(), [date("2026-12-25")]);
    }

    #[test]
    fn the_default_zone_is_the_systems() {
        let w = parse(r#"{"at": "06:15"}"#).unwrap();
        assert_eq!(w.timezone(), &TimeZone::system());
        let next = w.next_after(ts("2026-06-01T00:00:00Z"), &[]).unwrap();
        let local = TimeZone::system().to_datetime(next);
        assert_eq!((local.hour(), local.minute(), local.second()), (6, 15, 0));
        assert!(next > ts("2026-06-01T00:00:00Z") && next <= ts("2026-06-02T23:59:59Z"));
    }
}
