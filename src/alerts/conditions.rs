//! What a rule's condition means against the gateway's picture. Two kinds of condition:
//! a *state* holds for some subjects now (a device offline, Xyte unreachable, the outbox deep) and is tracked until it
//! clears ([`holding`], fed to `Tracker::observe`); an *event* tells of something that happened (an incident opened, a
//! command failed) and is told once ([`triggered`], straight to the grouper). The caller gathers the picture.

use serde_json::Value;

use super::{Holding, Subject, Timing};
use crate::config::alerts::{Condition, DeviceFacts, Rule};

/// A device as a rule sees it.
#[derive(Debug, Clone, Copy)]
pub struct Device<'a> {
    pub id: &'a str,
    pub facts: DeviceFacts<'a>,
    /// `online`, `offline` or `error`.
    pub status: &'a str,
    /// Since when it has that status (ms).
    pub since: i64,
}

/// The gateway's own state, for the gateway-wide conditions.
#[derive(Debug, Clone, Default)]
pub struct Gateway {
    /// Since when Xyte has not answered (the first failed poll of the current outage).
    pub xyte_down_since: Option<i64>,
    /// Since when the MQTT uplink is disconnected (only when one is configured).
    pub uplink_down_since: Option<i64>,
    /// When the oldest command still waiting in the outbox was accepted.
    pub oldest_queued_at: Option<i64>,
    pub outbox_depth: u64,
    /// Free bytes on the state directory's file system.
    pub disk_free: Option<u64>,
}

/// The subject of gateway-wide alerts.
fn gateway(label: String) -> Subject {
    Subject { key: "gateway".into(), label, space: None }
}

/// The tracker's timing for a rule: a device or connection state must hold for the rule's `for`; the other states
/// carry their own threshold (an outbox older than, a disk fuller than) and fire when reached.
pub fn timing(rule: &Rule) -> Timing {
    let for_ms = match &rule.condition {
        Condition::Device { for_, .. }
        | Condition::XyteUnreachable { for_ }
        | Condition::UplinkDisconnected { for_ } => for_.as_millis() as i64,
        _ => 0,
    };
    Timing { for_ms, repeat_ms: rule.repeat.map(|r| r.as_millis() as i64), resolve: rule.resolve }
}

/// For a state condition, every subject it holds for now, and since when; `None` for an event condition.
pub fn holding(condition: &Condition, devices: &[Device<'_>], gw: &Gateway, now: i64) -> Option<Vec<Holding>> {
    let one = |since: Option<i64>, label: String| since.map(|since| Holding { subject: gateway(label), since });
    let held = match condition {
        Condition::Device { error, filter, .. } => {
            let wanted = if *error { "error" } else { "offline" };
            return Some(
                devices
                    .iter()
                    .filter(|d| d.status == wanted && filter.matches(d.facts))
                    .map(|d| Holding {
                        subject: Subject {
                            key: d.id.to_string(),
                            label: d.facts.name.to_string(),
                            space: (!d.facts.space.is_empty()).then(|| d.facts.space.to_string()),
                        },
                        since: d.since,
                    })
                    .collect(),
            );
        }
        Condition::XyteUnreachable { .. } => one(gw.xyte_down_since, "Xyte unreachable".into()),
        Condition::UplinkDisconnected { .. } => one(gw.uplink_down_since, "MQTT uplink disconnected".into()),
        Condition::OutboxOlderThan(age) => {
            let age = age.as_millis() as i64;
            let since = gw.oldest_queued_at.map(|at| at + age).filter(|t| *t <= now);
            one(since, format!("a command has waited in the outbox for more than {}", human(age)))
        }
        Condition::OutboxDeeperThan(n) => {
            one((gw.outbox_depth > *n).then_some(now), format!("more than {n} commands wait in the outbox"))
        }
        Condition::DiskFreeBelow(bytes) => one(
            gw.disk_free.filter(|free| free < bytes).map(|_| now),
            format!("less than {} MB free for the gateway's state", bytes / 1_000_000),
        ),
        _ => return None,
    };
    Some(held.into_iter().collect())
}

/// For an event condition, the subject an event fires it for (`kind` and `data` as in the event log); `None` when
/// the event does not match or the condition is a state.
pub fn triggered(condition: &Condition, kind: &str, data: &Value, device: Option<&str>) -> Option<Subject> {
    let text = |k: &str| data[k].as_str().map(String::from);
    let key = |prefix: &str, k: &str| {
        let id = data[k].as_str().map(String::from).or_else(|| data[k].as_i64().map(|n| n.to_string()))?;
        Some(format!("{prefix}:{id}"))
    };
    match condition {
        Condition::IncidentOpened { severities } if kind == "incident.opened" => {
            let priority = text("priority").unwrap_or_default();
            if !severities.is_empty() && !severities.iter().any(|s| s.eq_ignore_ascii_case(&priority)) {
                return None;
            }
            let title = text("title").unwrap_or_else(|| "incident".into());
            Some(Subject { key: key("incident", "incident_id")?, label: title, space: None })
        }
        Condition::TicketOpened if kind == "ticket.updated" && data["change"] == "opened" => {
            let title = text("title").unwrap_or_else(|| "ticket".into());
            Some(Subject { key: key("ticket", "ticket_id")?, label: title, space: None })
        }
        Condition::CommandFailed => {
            let failed = match kind {
                "command.failed" | "command.expired" => true,
                "command.status_changed" => matches!(data["to"].as_str(), Some("failed" | "rejected" | "aborted")),
                _ => false,
            };
            if !failed {
                return None;
            }
            let command = text("command").unwrap_or_else(|| "a command".into());
            let label = match device {
                Some(d) => format!("{command} on device {d}"),
                None => command,
            };
            Some(Subject { key: key("task", "task_id")?, label, space: None })
        }
        Condition::PresetFailed if kind == "preset.finished" && data["ok"] == false => {
            let (room, preset) = (text("room").unwrap_or_default(), text("preset").unwrap_or_default());
            Some(Subject { key: format!("preset:{room}/{preset}"), label: format!("{room}: {preset}"), space: None })
        }
        Condition::ScheduleFailed if kind == "schedule.finished" && data["ok"] == false => {
            let schedule = text("schedule").unwrap_or_default();
            let label = format!(
                "{}: {} (schedule {schedule})",
                text("room").unwrap_or_default(),
                text("preset").unwrap_or_default()
            );
            Some(Subject { key: key("run", "run_id")?, label, space: None })
        }
        Condition::EventGap if kind == "edge.gap" => Some(Subject {
            key: format!("gap:{}", data["first_id"]),
            label: format!("{} events deleted by retention before the uplink delivered them", data["count"]),
            space: None,
        }),
        _ => None,
    }
}

fn human(ms: i64) -> String {
    crate::config::values::human(std::time::Duration::from_millis(ms.max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::alerts::DeviceFilter;
    use serde_json::json;
    use std::time::Duration;

    fn device<'a>(id: &'a str, name: &'a str, space: &'a str, status: &'a str, since: i64) -> Device<'a> {
        Device { id, facts: DeviceFacts { name, model: "M", vendor: None, space }, status, since }
    }

    #[test]
    fn device_conditions_hold_for_matching_devices_in_that_status() {
        let devices = [
            device("p1", "Board Room Projector", "HQ/Floor 3/Board Room", "offline", 100),
            device("p2", "Huddle Projector", "HQ/Floor 4/Huddle", "offline", 200),
            device("d1", "Board Room Display", "HQ/Floor 3/Board Room", "error", 300),
            device("p3", "Training Projector", "HQ/Floor 3/Training", "online", 0),
        ];
        let floor3 = DeviceFilter { space: Some("HQ/Floor 3".into()), ..Default::default() };
        let offline = Condition::Device { error: false, for_: Duration::from_secs(600), filter: floor3.clone() };
        let held = holding(&offline, &devices, &Gateway::default(), 1_000).unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!((held[0].subject.key.as_str(), held[0].since), ("p1", 100));
        assert_eq!(held[0].subject.space.as_deref(), Some("HQ/Floor 3/Board Room"));
        let error = Condition::Device { error: true, for_: Duration::ZERO, filter: DeviceFilter::default() };
        assert_eq!(holding(&error, &devices, &Gateway::default(), 1_000).unwrap()[0].subject.key, "d1");
    }

    #[test]
    fn gateway_conditions_hold_once_their_threshold_is_reached() {
        let gw = Gateway {
            xyte_down_since: Some(5_000),
            uplink_down_since: None,
            oldest_queued_at: Some(1_000),
            outbox_depth: 150,
            disk_free: Some(400_000_000),
        };
        let wan = holding(&Condition::XyteUnreachable { for_: Duration::from_secs(900) }, &[], &gw, 10_000).unwrap();
        assert_eq!((wan[0].subject.key.as_str(), wan[0].since), ("gateway", 5_000));
        assert!(holding(&Condition::UplinkDisconnected { for_: Duration::ZERO }, &[], &gw, 10_000).unwrap().is_empty());
        let old = Condition::OutboxOlderThan(Duration::from_secs(300));
        assert!(holding(&old, &[], &gw, 300_999).unwrap().is_empty(), "not yet 5 minutes old");
        assert_eq!(holding(&old, &[], &gw, 301_000).unwrap()[0].since, 301_000);
        assert_eq!(holding(&Condition::OutboxDeeperThan(100), &[], &gw, 7).unwrap()[0].since, 7);
        assert!(holding(&Condition::OutboxDeeperThan(150), &[], &gw, 7).unwrap().is_empty());
        assert_eq!(holding(&Condition::DiskFreeBelow(500_000_000), &[], &gw, 7).unwrap().len(), 1);
        assert!(holding(&Condition::TicketOpened, &[], &gw, 7).is_none(), "an event condition");
        for c in
            [Condition::TicketOpened, Condition::EventGap, Condition::OutboxDeeperThan(1), Condition::DiskFreeBelow(1)]
        {
            assert_eq!(c.is_event(), holding(&c, &[], &gw, 7).is_none(), "{c:?}: is_event and holding agree");
        }
    }

    #[test]
    fn events_fire_their_conditions() {
        let critical = Condition::IncidentOpened { severities: vec!["critical".into()] };
        let data = json!({"incident_id": "i1", "title": "Display failure", "priority": "Critical"});
        assert_eq!(triggered(&critical, "incident.opened", &data, None).unwrap().key, "incident:i1");
        assert!(
            triggered(&critical, "incident.opened", &json!({"incident_id": "i2", "priority": "low"}), None).is_none()
        );
        assert!(triggered(&critical, "incident.closed", &data, None).is_none());
        let opened = json!({"ticket_id": 7, "title": "Mic broken", "change": "opened"});
        assert_eq!(triggered(&Condition::TicketOpened, "ticket.updated", &opened, None).unwrap().key, "ticket:7");
        let updated = json!({"ticket_id": 7, "change": "updated"});
        assert!(triggered(&Condition::TicketOpened, "ticket.updated", &updated, None).is_none());
        for (kind, data) in [
            ("command.failed", json!({"task_id": "tsk_1", "command": "reboot"})),
            ("command.expired", json!({"task_id": "tsk_1", "command": "reboot"})),
            ("command.status_changed", json!({"task_id": "tsk_1", "to": "rejected"})),
        ] {
            let s = triggered(&Condition::CommandFailed, kind, &data, Some("d1")).unwrap_or_else(|| panic!("{kind}"));
            assert_eq!(s.key, "task:tsk_1");
        }
        assert!(
            triggered(
                &Condition::CommandFailed,
                "command.status_changed",
                &json!({"task_id": "t", "to": "done"}),
                None
            )
            .is_none()
        );
        let preset = json!({"room": "Board Room", "preset": "start", "ok": false});
        assert_eq!(
            triggered(&Condition::PresetFailed, "preset.finished", &preset, None).unwrap().label,
            "Board Room: start"
        );
        let run =
            json!({"schedule": "morning", "room": "Board Room", "preset": "start", "run_id": "run_1", "ok": false});
        assert_eq!(triggered(&Condition::ScheduleFailed, "schedule.finished", &run, None).unwrap().key, "run:run_1");
        assert!(
            triggered(&Condition::ScheduleFailed, "schedule.finished", &json!({"run_id": "r", "ok": true}), None)
                .is_none()
        );
        let gap = json!({"first_id": 10, "last_id": 19, "count": 10});
        assert_eq!(triggered(&Condition::EventGap, "edge.gap", &gap, None).unwrap().key, "gap:10");
    }
}
