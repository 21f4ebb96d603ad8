//! The room presets file (`XYTE_PRESETS_FILE`): named sequences of device commands per meeting room, loaded at
//! start and on SIGHUP, kept whole so a broken reload can leave the previous presets in place.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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
}

/// The loaded presets file, kept whole so a broken reload can leave it in place.
#[derive(Debug, Default)]
pub struct Presets {
    pub rooms: BTreeMap<String, RoomEntry>,
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
        Ok(Presets { rooms: file.rooms, path: path.to_path_buf(), error: None })
    }

    /// Loads at start: a broken file is reported and the daemon runs without presets rather than not at all.
    pub fn load_or_report(path: &Path) -> Presets {
        match Presets::load(path) {
            Ok(p) => {
                tracing::info!(file = %path.display(), rooms = p.rooms.len(), "room presets loaded");
                p
            }
            Err(e) => {
                tracing::error!("room presets not loaded: {e}");
                Presets { path: path.to_path_buf(), error: Some(e), ..Default::default() }
            }
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
