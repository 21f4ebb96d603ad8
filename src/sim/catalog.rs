//! The static material the simulated organization is built from: device models with their command lists (shaped as
//! `GET /models/:id` returns them) and names for buildings and rooms.

use serde_json::{Value, json};

pub struct ModelSpec {
    pub name: &'static str,
    pub vendor: &'static str,
    /// Short word used in device names ("Board Room Projector").
    pub kind: &'static str,
    /// Priority of the incident opened when such a device goes offline.
    pub offline_priority: &'static str,
    pub initial_state: fn() -> Value,
    pub commands: fn() -> Value,
}

fn cmd(name: &str, friendly: &str) -> Value {
    json!({"name": name, "friendly_name": friendly, "with_file": false, "custom_fields": []})
}

fn select(name: &str, friendly: &str, field: &str, options: &[&str]) -> Value {
    json!({"name": name, "friendly_name": friendly, "with_file": false, "custom_fields": [
        {"name": field, "type": "select", "typeName": "staticListSingle", "required": true, "options": options, "path": field}
    ]})
}

fn number(name: &str, friendly: &str, field: &str) -> Value {
    json!({"name": name, "friendly_name": friendly, "with_file": false, "custom_fields": [
        {"name": field, "type": "integer", "typeName": null, "required": true, "options": null, "path": field}
    ]})
}

fn firmware() -> Value {
    json!({"name": "update_firmware", "friendly_name": "Update Firmware", "with_file": true, "custom_fields": [
        {"name": "version", "type": "string", "typeName": null, "required": false, "options": null, "path": "version"}
    ]})
}

pub const MODELS: &[ModelSpec] = &[
    ModelSpec {
        name: "Epson EB-L1070U",
        vendor: "Epson",
        kind: "Projector",
        offline_priority: "high",
        initial_state: || json!({"power": "on", "input": "hdmi1", "lamp_hours": 1520, "temp": 38}),
        commands: || {
            json!([
                cmd("power_on", "Power On"),
                cmd("power_off", "Power Off"),
                select("select_input", "Select Input", "input", &["hdmi1", "hdmi2", "hdbaset"]),
                cmd("reboot", "Reboot"),
                firmware()
            ])
        },
    },
    ModelSpec {
        name: "Samsung QM85R",
        vendor: "Samsung",
        kind: "Display",
        offline_priority: "high",
        initial_state: || json!({"power": "on", "input": "hdmi1", "volume": 20, "temp": 41}),
        commands: || {
            json!([
                cmd("power_on", "Power On"),
                cmd("power_off", "Power Off"),
                select("select_input", "Select Input", "input", &["hdmi1", "hdmi2", "usb-c"]),
                number("set_volume", "Set Volume", "level"),
                cmd("reboot", "Reboot")
            ])
        },
    },
    ModelSpec {
        name: "Poly Studio X50",
        vendor: "Poly",
        kind: "Video Bar",
        offline_priority: "critical",
        initial_state: || json!({"power": "on", "in_call": false, "camera": "tracking", "temp": 45}),
        commands: || json!([cmd("wake", "Wake"), cmd("sleep", "Sleep"), cmd("reboot", "Reboot"), firmware()]),
    },
    ModelSpec {
        name: "Biamp TesiraFORTE AI",
        vendor: "Biamp",
        kind: "DSP",
        offline_priority: "moderate",
        initial_state: || json!({"power": "on", "muted": false, "preset": "default", "temp": 36}),
        commands: || {
            json!([
                cmd("mute_all", "Mute All"),
                cmd("unmute_all", "Unmute All"),
                select("recall_preset", "Recall Preset", "preset", &["default", "presentation", "video_call"]),
                cmd("reboot", "Reboot")
            ])
        },
    },
    ModelSpec {
        name: "Shure MXA920",
        vendor: "Shure",
        kind: "Ceiling Mic",
        offline_priority: "moderate",
        initial_state: || json!({"power": "on", "muted": false, "temp": 33}),
        commands: || json!([cmd("mute", "Mute"), cmd("unmute", "Unmute"), cmd("reboot", "Reboot")]),
    },
    ModelSpec {
        name: "Crestron CP4",
        vendor: "Crestron",
        kind: "Control Processor",
        offline_priority: "critical",
        initial_state: || json!({"power": "on", "program": "room_v3", "temp": 40}),
        commands: || {
            json!([cmd("reboot", "Reboot"),
                   {"name": "run_macro", "friendly_name": "Run Macro", "with_file": false, "custom_fields": [
                       {"name": "macro", "type": "string", "typeName": null, "required": true, "options": null, "path": "macro"}]}])
        },
    },
    ModelSpec {
        name: "Logitech Rally Camera",
        vendor: "Logitech",
        kind: "Camera",
        offline_priority: "low",
        initial_state: || json!({"power": "on", "preset": 1, "temp": 35}),
        commands: || {
            json!([
                cmd("power_on", "Power On"),
                cmd("power_off", "Power Off"),
                number("set_preset", "Go To Preset", "preset"),
                cmd("reboot", "Reboot")
            ])
        },
    },
];

/// Which models a room gets, in order; rooms cycle through these fittings.
pub const ROOM_FITTINGS: &[&[usize]] = &[&[0, 3, 4, 5], &[1, 2, 5], &[1, 6, 4, 3], &[0, 2, 3, 5], &[1, 2]];

pub const BUILDINGS: &[(&str, &str, f64, f64, i64)] = &[
    ("HQ Berlin", "Europe/Berlin", 52.52, 13.405, 60),
    ("London Office", "Europe/London", 51.5072, -0.1276, 0),
    ("New York Studio", "America/New_York", 40.7128, -74.006, -300),
];

pub const ROOM_NAMES: &[&str] = &[
    "Board Room",
    "Huddle 2.14",
    "Training Room",
    "Executive Suite",
    "Focus 1.03",
    "Auditorium",
    "Studio A",
    "Innovation Lab",
    "Town Hall",
    "Meeting 3.01",
    "Meeting 3.02",
    "Lounge",
    "War Room",
    "Quiet Room",
    "Design Review",
];

pub const PEOPLE: &[(&str, &str)] = &[
    ("Sam James", "sam.james@northwind.example"),
    ("Priya Natarajan", "priya.n@northwind.example"),
    ("Jonas Weber", "jonas.weber@northwind.example"),
    ("Ana Ruiz", "ana.ruiz@northwind.example"),
    ("Tom Okafor", "tom.okafor@northwind.example"),
];

pub const TICKETS: &[(&str, &str)] = &[
    ("Projector flickers during presentations", "The image flickers every few minutes when presenting from HDMI 1."),
    ("No audio from ceiling speakers", "Remote participants cannot hear the room since this morning."),
    ("Display stuck on input selection", "The display does not switch to HDMI 2 from the touch panel."),
    ("Camera does not follow speaker", "Speaker tracking stopped working after the last update."),
    ("Room panel shows wrong meeting", "The panel outside the room shows yesterday's bookings."),
];
