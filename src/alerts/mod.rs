//! Alerts, the decisions (`alerter/` gathers the picture, keeps the records and sends). An alert is keyed by (rule,
//! subject) — a device, or the gateway itself for gateway-wide conditions — and moves pending → firing → resolved.
//! [`Tracker`] decides, from what holds now, which alerts fire, repeat or resolve; [`Grouper`] holds what fired
//! (or resolved) for a rule within its grouping window and hands it out as one notification, so a floor going dark
//! is one message, not a hundred; [`Silence`] keeps matching alerts quiet until it ends. Pure and clock-free, like
//! `schedule::plan`: the caller says what time it is, what holds, and what to keep; tests run in microseconds.

pub mod conditions;
pub mod delivery;
pub mod message;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What an alert is about: a device (key = its id) or the gateway (key = `gateway`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    pub key: String,
    /// For people: the device's name, or what the gateway-wide condition is.
    pub label: String,
    /// The device's space (full path), for silences by room and for grouped messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
}

/// A condition that holds for `subject` since `since` (ms): a device offline since its last status change, Xyte
/// unreachable since the first failed poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    pub subject: Subject,
    pub since: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Holds, but not yet for the rule's duration.
    Pending,
    Firing,
}

/// One alert's record; the caller keeps these (in the database) so a restart neither repeats nor forgets one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub rule: String,
    pub subject: Subject,
    pub state: State,
    /// Since when the condition holds.
    pub since: i64,
    /// When it fired, and when people were last told (firing or repeating).
    pub fired_at: Option<i64>,
    pub told_at: Option<i64>,
}

/// A change people are told about (unless silenced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Fire { rule: String, subject: Subject, since: i64 },
    Repeat { rule: String, subject: Subject, since: i64 },
    Resolve { rule: String, subject: Subject, since: i64, at: i64 },
}

impl Change {
    pub fn rule(&self) -> &str {
        match self {
            Change::Fire { rule, .. } | Change::Repeat { rule, .. } | Change::Resolve { rule, .. } => rule,
        }
    }

    pub fn subject(&self) -> &Subject {
        match self {
            Change::Fire { subject, .. } | Change::Repeat { subject, .. } | Change::Resolve { subject, .. } => subject,
        }
    }
}

/// A silence: alerts it matches are neither told nor repeated until `until` (they still fire and resolve in the
/// record, so `list_alerts` shows them, marked silenced).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// A space path prefix (a site, floor or room), case-insensitive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    pub until: i64,
    pub by: String,
}

impl Silence {
    /// Whether it silences `rule`'s alert about `subject` at `now`: every given field must match.
    pub fn matches(&self, rule: &str, subject: &Subject, now: i64) -> bool {
        now < self.until
            && self.rule.as_deref().is_none_or(|r| r == rule)
            && self.device.as_deref().is_none_or(|d| d == subject.key)
            && self.space.as_deref().is_none_or(|prefix| {
                subject.space.as_deref().is_some_and(|s| s.to_lowercase().starts_with(&prefix.to_lowercase()))
            })
    }
}

/// The rule's timing, as the tracker needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Fire once the condition has held this long (0: at once).
    pub for_ms: i64,
    /// Tell again after this long while firing; `None`: once.
    pub repeat_ms: Option<i64>,
    /// Tell when it clears.
    pub resolve: bool,
}

/// Every alert, by (rule, subject key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tracker {
    pub alerts: BTreeMap<(String, String), Alert>,
}

impl Tracker {
    /// A rule whose condition is a state (device offline, Xyte unreachable …): `holding` is every subject for which
    /// it holds now. Alerts of subjects no longer holding resolve; those holding long enough fire; firing ones repeat
    /// on the rule's interval. Silenced alerts change state all the same but produce no change to tell.
    pub fn observe(
        &mut self,
        rule: &str,
        timing: Timing,
        holding: &[Holding],
        now: i64,
        silences: &[Silence],
    ) -> Vec<Change> {
        let mut changes = vec![];
        let quiet = |subject: &Subject| silences.iter().any(|s| s.matches(rule, subject, now));
        // Resolved: what this rule was tracking and no longer holds.
        let gone: Vec<(String, String)> = self
            .alerts
            .keys()
            .filter(|(r, key)| r == rule && !holding.iter().any(|h| &h.subject.key == key))
            .cloned()
            .collect();
        for k in gone {
            let Some(alert) = self.alerts.remove(&k) else { continue };
            if alert.state == State::Firing && timing.resolve && alert.told_at.is_some() && !quiet(&alert.subject) {
                changes.push(Change::Resolve {
                    rule: rule.into(),
                    subject: alert.subject,
                    since: alert.since,
                    at: now,
                });
            }
        }
        for h in holding {
            let key = (rule.to_string(), h.subject.key.clone());
            let alert = self.alerts.entry(key).or_insert_with(|| Alert {
                rule: rule.into(),
                subject: h.subject.clone(),
                state: State::Pending,
                since: h.since,
                fired_at: None,
                told_at: None,
            });
            alert.subject = h.subject.clone();
            let silenced = quiet(&alert.subject);
            match alert.state {
                State::Pending if now - alert.since >= timing.for_ms => {
                    alert.state = State::Firing;
                    alert.fired_at = Some(now);
                    if !silenced {
                        alert.told_at = Some(now);
                        changes.push(Change::Fire {
                            rule: rule.into(),
                            subject: alert.subject.clone(),
                            since: alert.since,
                        });
                    }
                }
                State::Pending => {}
                State::Firing if silenced => {}
                State::Firing => {
                    // Fired while silenced: told once the silence ends. Otherwise repeated on the interval.
                    let due = match (alert.told_at, timing.repeat_ms) {
                        (None, _) => true,
                        (Some(told), Some(every)) => now - told >= every,
                        (Some(_), None) => false,
                    };
                    if due {
                        let first = alert.told_at.is_none();
                        alert.told_at = Some(now);
                        let (rule, subject, since) = (rule.to_string(), alert.subject.clone(), alert.since);
                        changes.push(if first {
                            Change::Fire { rule, subject, since }
                        } else {
                            Change::Repeat { rule, subject, since }
                        });
                    }
                }
            }
        }
        changes
    }

    /// The earliest time a pending alert of `rule` fires or a firing one repeats, if nothing changes before: when the
    /// caller should look again.
    pub fn next_due(&self, rule: &str, timing: Timing) -> Option<i64> {
        self.alerts
            .values()
            .filter(|a| a.rule == rule)
            .filter_map(|a| match (a.state, a.told_at, timing.repeat_ms) {
                (State::Pending, _, _) => Some(a.since + timing.for_ms),
                (State::Firing, Some(told), Some(every)) => Some(told + every),
                _ => None,
            })
            .min()
    }
}

/// A message to send: one rule's changes of one kind, gathered over its grouping window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub rule: String,
    /// `firing` (fired or repeated) or `resolved`.
    pub kind: &'static str,
    pub subjects: Vec<Subject>,
    /// When the first of them changed.
    pub first_at: i64,
}

/// Holds changes until their rule's grouping window, counted from the first change of the group, has passed.
#[derive(Debug, Clone, Default)]
pub struct Grouper {
    open: BTreeMap<(String, &'static str), Notification>,
}

impl Grouper {
    pub fn add(&mut self, change: &Change, now: i64) {
        let kind = if matches!(change, Change::Resolve { .. }) { "resolved" } else { "firing" };
        let n = self.open.entry((change.rule().to_string(), kind)).or_insert_with(|| Notification {
            rule: change.rule().to_string(),
            kind,
            subjects: vec![],
            first_at: now,
        });
        if !n.subjects.iter().any(|s| s.key == change.subject().key) {
            n.subjects.push(change.subject().clone());
        }
    }

    /// The groups whose window (per rule, `window_ms`) has passed at `now`, oldest first.
    pub fn take_due(&mut self, now: i64, window_ms: impl Fn(&str) -> i64) -> Vec<Notification> {
        let due: Vec<(String, &'static str)> =
            self.open.iter().filter(|(_, n)| now - n.first_at >= window_ms(&n.rule)).map(|(k, _)| k.clone()).collect();
        let mut out: Vec<Notification> = due.into_iter().filter_map(|k| self.open.remove(&k)).collect();
        out.sort_by_key(|n| n.first_at);
        out
    }

    /// When the next group is due, for the caller's timer.
    pub fn next_due(&self, window_ms: impl Fn(&str) -> i64) -> Option<i64> {
        self.open.values().map(|n| n.first_at + window_ms(&n.rule)).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn device(id: &str, space: &str) -> Subject {
        Subject { key: id.into(), label: format!("Device {id}"), space: Some(space.into()) }
    }

    fn holding(ids: &[&str], since: i64) -> Vec<Holding> {
        ids.iter().map(|id| Holding { subject: device(id, "HQ Berlin/Floor 3/Board Room"), since }).collect()
    }

    const OFFLINE_10M: Timing = Timing { for_ms: 10 * MIN, repeat_ms: None, resolve: true };

    #[test]
    fn fires_once_after_the_duration_and_resolves_once() {
        let mut t = Tracker::default();
        let h = holding(&["p1"], 0);
        assert!(t.observe("offline", OFFLINE_10M, &h, 5 * MIN, &[]).is_empty(), "pending, not yet 10 min");
        assert_eq!(t.next_due("offline", OFFLINE_10M), Some(10 * MIN));
        let fired = t.observe("offline", OFFLINE_10M, &h, 10 * MIN, &[]);
        assert!(matches!(&fired[..], [Change::Fire { subject, since: 0, .. }] if subject.key == "p1"));
        assert!(t.observe("offline", OFFLINE_10M, &h, 11 * MIN, &[]).is_empty(), "no repeat interval: once");
        assert_eq!(t.next_due("offline", OFFLINE_10M), None);
        let resolved = t.observe("offline", OFFLINE_10M, &[], 20 * MIN, &[]);
        assert!(matches!(&resolved[..], [Change::Resolve { at, .. }] if *at == 20 * MIN));
        assert!(t.observe("offline", OFFLINE_10M, &[], 21 * MIN, &[]).is_empty(), "resolved once");
        assert!(t.alerts.is_empty());
    }

    #[test]
    fn a_blip_shorter_than_the_duration_tells_nobody() {
        let mut t = Tracker::default();
        t.observe("offline", OFFLINE_10M, &holding(&["p1"], 0), MIN, &[]);
        assert!(t.observe("offline", OFFLINE_10M, &[], 2 * MIN, &[]).is_empty(), "no resolve for what never fired");
    }

    #[test]
    fn repeats_on_the_interval_while_firing() {
        let timing = Timing { for_ms: 0, repeat_ms: Some(60 * MIN), resolve: false };
        let mut t = Tracker::default();
        let h = holding(&["x"], 0);
        assert_eq!(t.observe("wan", timing, &h, 0, &[]).len(), 1);
        assert!(t.observe("wan", timing, &h, 59 * MIN, &[]).is_empty());
        assert!(matches!(&t.observe("wan", timing, &h, 60 * MIN, &[])[..], [Change::Repeat { .. }]));
        assert_eq!(t.next_due("wan", timing), Some(120 * MIN));
        assert!(t.observe("wan", timing, &[], 61 * MIN, &[]).is_empty(), "resolve: false");
    }

    #[test]
    fn a_silence_keeps_alerts_quiet_until_it_ends_then_tells_what_still_fires() {
        let mut t = Tracker::default();
        let floor = Silence {
            id: "s1".into(),
            rule: None,
            space: Some("hq berlin/floor 3".into()),
            device: None,
            until: 30 * MIN,
            by: "op".into(),
        };
        let h = holding(&["p1", "p2"], 0);
        assert!(t.observe("offline", OFFLINE_10M, &h, 10 * MIN, std::slice::from_ref(&floor)).is_empty());
        assert!(t.alerts.values().all(|a| a.state == State::Firing), "fired in the record, silenced");
        // p2 comes back while silenced: nobody was told it fired, so nobody is told it resolved.
        assert!(t.observe("offline", OFFLINE_10M, &h[..1], 20 * MIN, std::slice::from_ref(&floor)).is_empty());
        let after = t.observe("offline", OFFLINE_10M, &h[..1], 30 * MIN, std::slice::from_ref(&floor));
        assert!(matches!(&after[..], [Change::Fire { subject, .. }] if subject.key == "p1"), "{after:?}");
        let other_floor = Subject { space: Some("HQ Berlin/Floor 4/Huddle".into()), ..device("q", "") };
        assert!(!floor.matches("offline", &other_floor, 0));
        assert!(Silence { rule: Some("offline".into()), ..floor.clone() }.matches("offline", &h[0].subject, 0));
        assert!(!Silence { rule: Some("wan".into()), ..floor.clone() }.matches("offline", &h[0].subject, 0));
        assert!(!Silence { device: Some("p9".into()), ..floor }.matches("offline", &h[0].subject, 0));
    }

    #[test]
    fn a_floor_going_dark_is_one_message_per_group_window() {
        let mut t = Tracker::default();
        let mut g = Grouper::default();
        let ids: Vec<String> = (0..200).map(|i| format!("d{i}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        // 150 devices go offline together, 50 more ten seconds later: they reach 10 minutes ten seconds apart, both
        // within the 30 s window of the first, so all 200 go out in one message.
        for c in t.observe("offline", OFFLINE_10M, &holding(&refs[..150], 0), 10 * MIN, &[]) {
            g.add(&c, 10 * MIN);
        }
        let mut all = holding(&refs[..150], 0);
        all.extend(holding(&refs[150..], 10_000));
        for c in t.observe("offline", OFFLINE_10M, &all, 10 * MIN + 10_000, &[]) {
            g.add(&c, 10 * MIN + 10_000);
        }
        let window = |_: &str| 30_000;
        assert!(g.take_due(10 * MIN + 29_999, window).is_empty());
        assert_eq!(g.next_due(window), Some(10 * MIN + 30_000));
        let sent = g.take_due(10 * MIN + 30_000, window);
        assert_eq!(sent.len(), 1);
        assert_eq!((sent[0].kind, sent[0].subjects.len()), ("firing", 200));
        // They come back together: one resolve message.
        for c in t.observe("offline", OFFLINE_10M, &[], 40 * MIN, &[]) {
            g.add(&c, 40 * MIN);
        }
        let back = g.take_due(41 * MIN, window);
        assert_eq!((back.len(), back[0].kind, back[0].subjects.len()), (1, "resolved", 200));
    }
}
