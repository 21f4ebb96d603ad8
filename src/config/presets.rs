//! The room presets file (`XYTE_PRESETS_FILE`): named sequences of device commands per meeting room, and the
//! schedules that run them, loaded at start and on SIGHUP, kept whole so a broken reload can leave the previous
//! presets and schedules in place. A bad schedule entry is dropped with an error naming it; the rest of the file
//! still loads, because one typo must not stop every other room's schedules.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use jiff::civil::Date;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::schedule::{When, WhenSpec};

/// An id argument: Xyte uses strings for devices and integers for spaces; accept either, keep text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Id(pub String);

impl<'de> serde::Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) if !s.trim().is_empty() => Ok(Id(s.trim().to_string())),
            Value::Number(n) => Ok(Id(n.to_string())),
            _ => Err(serde::de::Error::custom("expected a non-empty id (string or integer)")),
        }
    }
}

impl JsonSchema for Id {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Id".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // Advertised as a string for portability (no type lists); integer ids are accepted all the same.
        schemars::json_schema!({"type": "string", "minLength": 1})
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One step of a preset: a command for a device.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub device_id: Id,
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_params: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub friendly_name: Option<String>,
    /// Go on with the next step when this one fails (default: stop the preset).
    #[serde(default)]
    pub continue_on_error: bool,
    /// How long to wait for the device to finish this step (default 60 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoomEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space_id: Option<Id>,
    pub presets: BTreeMap<String, Vec<Step>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PresetsFile {
    rooms: BTreeMap<String, RoomEntry>,
    /// Read one by one, so a bad entry costs only itself.
    #[serde(default)]
    schedules: Vec<Value>,
    #[serde(default)]
    holidays: Vec<Value>,
}

/// A schedule entry as written: which preset of which room, and when ([`WhenSpec`]'s keys, inline).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleEntry {
    name: String,
    room: String,
    preset: String,
    #[serde(default = "enabled_by_default")]
    enabled: bool,
    at: Option<String>,
    days: Option<Vec<String>>,
    cron: Option<String>,
    timezone: Option<String>,
    #[serde(default)]
    except: Vec<String>,
}

fn enabled_by_default() -> bool {
    true
}

/// A room preset that runs by itself at the times `when` names.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    pub room: String,
    pub preset: String,
    pub enabled: bool,
    /// When, as written (shown by `list_schedules`; a changed text means an edited schedule).
    pub spec: WhenSpec,
    pub when: When,
}

impl Schedule {
    /// One line for people: `07:45 weekdays (Europe/Berlin)` or `cron 0 19 * * 1-5 (UTC)`.
    pub fn describe(&self) -> String {
        let zone = self.when.timezone().iana_name().unwrap_or("system time zone");
        let mut text = match (&self.spec.at, &self.spec.cron, &self.spec.days) {
            (Some(at), _, Some(days)) => format!("{at} {}", days.join(",")),
            (Some(at), _, None) => format!("{at} every day"),
            (None, Some(cron), _) => format!("cron {cron}"),
            (None, None, _) => String::new(),
        };
        text.push_str(&format!(" ({zone})"));
        if !self.spec.except.is_empty() {
            text.push_str(&format!(" except {}", self.spec.except.join(", ")));
        }
        text
    }
}

/// The loaded presets file, kept whole so a broken reload can leave it in place.
#[derive(Debug, Default, Clone)]
pub struct Presets {
    pub rooms: BTreeMap<String, RoomEntry>,
    /// The schedules that loaded, in file order.
    pub schedules: Vec<Schedule>,
    /// Dates on which no schedule runs.
    pub holidays: Vec<Date>,
    /// Schedule entries (and holiday dates) that were dropped, each naming itself and why.
    pub problems: Vec<String>,
    pub path: PathBuf,
    /// The last load problem (missing file is not one), for `edge://status`.
    pub error: Option<String>,
}

impl Presets {
    /// Reads and checks the file. A missing file means "no presets"; anything else wrong is an error naming it.
    pub fn load(path: &Path) -> Result<Presets, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Presets { path: path.to_path_buf(), ..Default::default() });
            }
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let file: PresetsFile =
            serde_json::from_str(&text).map_err(|e| format!("{} is not a valid presets file: {e}", path.display()))?;
        let mut problems = vec![];
        for (room, entry) in &file.rooms {
            if room.trim().is_empty() {
                problems.push("a room has an empty name".to_string());
            }
            if entry.presets.is_empty() {
                problems.push(format!("room {room:?} has no presets"));
            }
            for (name, steps) in &entry.presets {
                if steps.is_empty() {
                    problems.push(format!("{room:?} preset {name:?} has no steps"));
                }
                for (i, s) in steps.iter().enumerate() {
                    if s.command.trim().is_empty() {
                        problems.push(format!("{room:?} preset {name:?} step {} has an empty command", i + 1));
                    }
                }
            }
        }
        if !problems.is_empty() {
            return Err(format!("{}: {}", path.display(), problems.join("; ")));
        }
        let mut problems = vec![];
        let mut holidays = vec![];
        for (i, day) in file.holidays.iter().enumerate() {
            match day.as_str().map(crate::schedule::parse_date) {
                Some(Ok(date)) => holidays.push(date),
                Some(Err(e)) => problems.push(format!("holidays[{i}]: {e}")),
                None => problems.push(format!("holidays[{i}]: {day} is not a date (YYYY-MM-DD)")),
            }
        }
        let mut schedules: Vec<Schedule> = vec![];
        for (i, raw) in file.schedules.iter().enumerate() {
            let label = match raw["name"].as_str() {
                Some(name) if !name.trim().is_empty() => format!("schedule {name:?}"),
                _ => format!("schedules[{i}]"),
            };
            match schedule_entry(raw, &file.rooms) {
                Ok(s) if schedules.iter().any(|o| o.name == s.name) => {
                    problems.push(format!("{label}: the name is used by an earlier schedule"))
                }
                Ok(s) => schedules.push(s),
                Err(e) => problems.push(format!("{label}: {e}")),
            }
        }
        Ok(Presets { rooms: file.rooms, schedules, holidays, problems, path: path.to_path_buf(), error: None })
    }

    /// Loads at start: a broken file is reported and the daemon runs without presets rather than not at all.
    pub fn load_or_report(path: &Path) -> Presets {
        match Presets::load(path) {
            Ok(p) => {
                let (rooms, schedules) = (p.rooms.len(), p.schedules.len());
                tracing::info!(file = %path.display(), rooms, schedules, "room presets loaded");
                p.report_problems();
                p
            }
            Err(e) => {
                tracing::error!("room presets not loaded: {e}");
                Presets { path: path.to_path_buf(), error: Some(e), ..Default::default() }
            }
        }
    }
}

/// Checks one schedule entry against the rooms of its file.
fn schedule_entry(raw: &Value, rooms: &BTreeMap<String, RoomEntry>) -> Result<Schedule, String> {
    let e = ScheduleEntry::deserialize(raw).map_err(|e| e.to_string())?;
    if e.name.trim().is_empty() || e.name.len() > 64 || e.name.chars().any(char::is_control) {
        return Err("name: 1 to 64 printable characters".into());
    }
    let Some(room) = rooms.get(&e.room) else {
        let known: Vec<&str> = rooms.keys().map(String::as_str).collect();
        return Err(format!("unknown room {:?} (rooms in this file: {})", e.room, known.join(", ")));
    };
    if !room.presets.contains_key(&e.preset) {
        let known: Vec<&str> = room.presets.keys().map(String::as_str).collect();
        return Err(format!("room {:?} has no preset {:?} (it has: {})", e.room, e.preset, known.join(", ")));
    }
    let spec = WhenSpec { at: e.at, days: e.days, cron: e.cron, timezone: e.timezone, except: e.except };
    let when = When::new(spec.clone()).map_err(|e| e.to_string())?;
    Ok(Schedule { name: e.name, room: e.room, preset: e.preset, enabled: e.enabled, spec, when })
}

impl Presets {
    /// Logs each dropped schedule entry or holiday (at start and after a reload).
    pub fn report_problems(&self) {
        for p in &self.problems {
            tracing::error!(file = %self.path.display(), "not loaded: {p}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packaged_example_presets_file_loads() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/presets.example.json");
        let presets = Presets::load(&example).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(presets.rooms.len(), 2);
        assert_eq!((presets.schedules.len(), presets.holidays.len()), (3, 4), "{:?}", presets.problems);
        assert!(presets.problems.is_empty(), "{:?}", presets.problems);
    }

    #[test]
    fn a_bad_schedule_entry_is_dropped_with_its_name_and_the_rest_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("presets.json");
        let file = serde_json::json!({
            "rooms": {"Board Room": {"presets": {"start": [{"device_id": "d1", "command": "power_on"}]}}},
            "holidays": ["2026-12-25", "25.12.2026"],
            "schedules": [
                {"name": "good", "room": "Board Room", "preset": "start", "at": "07:45", "days": ["weekdays"]},
                {"name": "no-room", "room": "Nope", "preset": "start", "at": "07:45"},
                {"name": "no-preset", "room": "Board Room", "preset": "warmup", "at": "07:45"},
                {"name": "bad-cron", "room": "Board Room", "preset": "start", "cron": "0 25 * * *"},
                {"name": "bad-zone", "room": "Board Room", "preset": "start", "at": "07:45",
                 "timezone": "Mars/Olympus"},
                {"name": "good", "room": "Board Room", "preset": "start", "at": "08:00"},
                {"name": "typo", "room": "Board Room", "preset": "start", "at": "07:45", "dayz": ["mon"]},
                {"room": "Board Room", "preset": "start", "at": "07:45"},
            ]
        });
        std::fs::write(&path, file.to_string()).unwrap();
        let p = Presets::load(&path).unwrap();
        assert_eq!(p.rooms.len(), 1, "the rooms are not lost");
        let names: Vec<&str> = p.schedules.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["good"]);
        assert_eq!(p.schedules[0].spec.at.as_deref(), Some("07:45"), "the first of two with one name is kept");
        assert_eq!(p.holidays.len(), 1);
        let expected = [
            "holidays[1]: '25.12.2026' is not a date",
            "schedule \"no-room\": unknown room \"Nope\" (rooms in this file: Board Room)",
            "schedule \"no-preset\": room \"Board Room\" has no preset \"warmup\" (it has: start)",
            "schedule \"bad-cron\": cron field 2 (hour)",
            "schedule \"bad-zone\": unknown time zone Mars/Olympus",
            "schedule \"good\": the name is used by an earlier schedule",
            "schedule \"typo\": unknown field `dayz`",
            "schedules[7]: missing field `name`",
        ];
        assert_eq!(p.problems.len(), expected.len(), "{:#?}", p.problems);
        for (problem, want) in p.problems.iter().zip(expected) {
            assert!(problem.starts_with(want), "{problem:?} should start with {want:?}");
        }
    }

    #[test]
    fn presets_file_is_checked() {
        let dir = std::env::temp_dir().join(format!("xyte-presets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("presets.json");
        assert!(Presets::load(&path).unwrap().rooms.is_empty(), "a missing file means no presets");
        std::fs::write(
            &path,
            r#"{"rooms": {"Board Room": {"space_id": 16138, "presets": {
            "start": [{"device_id": "d1", "command": "power_on"}, {"device_id": "d2", "command": "select_input",
                       "extra_params": {"input": "hdmi1"}, "continue_on_error": true}],
            "shutdown": [{"device_id": "d1", "command": "power_off"}]}}}}"#,
        )
        .unwrap();
        let p = Presets::load(&path).unwrap();
        assert_eq!(p.rooms["Board Room"].presets["start"].len(), 2);
        assert!(p.rooms["Board Room"].presets["start"][1].continue_on_error);
        std::fs::write(&path, r#"{"rooms": {"X": {"presets": {"start": [{"device_id": "d", "comand": "a"}]}}}}"#)
            .unwrap();
        let e = Presets::load(&path).unwrap_err();
        assert!(e.contains("comand"), "{e}");
        std::fs::write(&path, r#"{"rooms": {"X": {"presets": {"start": []}}}}"#).unwrap();
        assert!(Presets::load(&path).unwrap_err().contains("has no steps"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
