//! MCP prompts: ready-made workflows that tell an agent which tools to use, filled with what the gateway
//! knows; and `completion/complete` for their arguments and the resource templates.

use serde_json::{Map, Value, json};

use crate::cache::Compact;
use crate::error::{Error, ErrorCode};
use crate::runtime::Ctx;

struct Prompt {
    name: &'static str,
    title: &'static str,
    description: &'static str,
    arguments: &'static [(&'static str, &'static str, bool)],
}

const PROMPTS: &[Prompt] = &[
    Prompt {
        name: "reboot_device_workflow",
        title: "Reboot a device safely",
        description: "Check a device, reboot it, and confirm it came back.",
        arguments: &[("device_id", "The device to reboot", true)],
    },
    Prompt {
        name: "check_projectors_health",
        title: "Check projectors",
        description: "Review every projector: status, incidents and recent command failures.",
        arguments: &[],
    },
    Prompt {
        name: "proactive_projector_maintenance_check",
        title: "Projector maintenance check",
        description: "Find projectors that need attention before they fail (lamp hours, temperature, flapping).",
        arguments: &[],
    },
    Prompt {
        name: "troubleshoot_offline_device_workflow",
        title: "Troubleshoot an offline device",
        description: "Step-by-step diagnosis of a device that is offline, using its history, incidents and room.",
        arguments: &[("device_id", "The offline device", true), ("room_name", "The room it is in", false)],
    },
    Prompt {
        name: "prepare_meeting_room",
        title: "Prepare a meeting room",
        description: "Get a room ready for a meeting: check its devices and power them on.",
        arguments: &[
            ("room", "The room, e.g. Board Room", true),
            ("preset", "The preset to run (default start)", false),
        ],
    },
];

pub fn list() -> Vec<Value> {
    PROMPTS
        .iter()
        .map(|p| {
            let args: Vec<Value> =
                p.arguments.iter().map(|(n, d, r)| json!({"name": n, "description": d, "required": r})).collect();
            json!({"name": p.name, "title": p.title, "description": p.description, "arguments": args})
        })
        .collect()
}

pub async fn get(ctx: &Ctx, name: &str, args: &Map<String, Value>) -> Result<Value, Error> {
    let p = PROMPTS
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| Error::invalid_params(format!("unknown prompt {name:?}")))?;
    let arg = |k: &str| args.get(k).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty()).map(String::from);
    for (n, _, required) in p.arguments {
        if *required && arg(n).is_none() {
            return Err(Error::invalid_params(format!("prompt {name} needs the argument {n}")));
        }
    }
    let device_line = |id: &str, devices: &[Compact]| match devices.iter().find(|d| d["id"] == id) {
        Some(d) => format!(
            "Device {id} is \"{}\", a {} in {}, currently {}.",
            d["name"].as_str().unwrap_or("?"),
            d["model"]["name"].as_str().unwrap_or("device"),
            d["space"]["full_path"].as_str().unwrap_or("an unknown space"),
            d["status"].as_str().unwrap_or("unknown")
        ),
        None => format!("The gateway has no device {id} in its cache; check the id with list_devices first."),
    };
    let devices = ctx.app.cache.devices().await.map(|s| s.value).unwrap_or_default();
    let text = match name {
        "reboot_device_workflow" => {
            let id = arg("device_id").unwrap_or_default();
            format!(
                "{}\n\n1. Call get_device_status for device_id {id} and note open incidents and recent commands.\n\
                 2. If a reboot is already pending or in progress, do not send another one.\n\
                 3. Call send_command with command \"reboot\" and dry_run=true to check it is allowed, then without \
                 dry_run and with wait=true.\n4. When it finishes, call get_device_status again and report whether the \
                 device is back online.",
                device_line(&id, &devices)
            )
        }
        "check_projectors_health" | "proactive_projector_maintenance_check" => {
            let projectors: Vec<String> = devices
                .iter()
                .filter(|d| {
                    d["model"]["name"]
                        .as_str()
                        .is_some_and(|m| m.to_lowercase().contains("projector") || m.contains("EB-"))
                })
                .map(|d| {
                    format!(
                        "- {} ({}) in {}: {}",
                        d["name"].as_str().unwrap_or("?"),
                        d["id"].as_str().unwrap_or("?"),
                        d["space"]["full_path"].as_str().unwrap_or("?"),
                        d["status"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            let goal = if name == "check_projectors_health" {
                "For each projector, call get_device_status; list the ones offline or in error with their open incidents and \
                 any failed recent commands, then summarise the fleet's projector health."
            } else {
                "For each projector, call get_device_status and look at its state (lamp_hours, temp) and at \
                 search_device_histories for the last 30 days; flag lamps over 3000 hours, temperatures over 45 °C and \
                 devices that went offline more than twice, and suggest maintenance before they fail."
            };
            format!("Projectors known to the gateway ({}):\n{}\n\n{goal}", projectors.len(), projectors.join("\n"))
        }
        "troubleshoot_offline_device_workflow" => {
            let id = arg("device_id").unwrap_or_default();
            let room = arg("room_name").map(|r| format!(" in {r}")).unwrap_or_default();
            format!(
                "{}\n\nTroubleshoot this device{room}:\n1. get_device_status: when was it last seen, which incidents are open?\n\
                 2. search_device_histories for the last 7 days: is it flapping or did it drop once?\n\
                 3. list_devices for its space: are the other devices in the room online (power or network problem)?\n\
                 4. list_device_commands: did a recent command (reboot, firmware) fail?\n\
                 5. Propose the next step (power cycle on site, check the network port, open a ticket) and say why.",
                device_line(&id, &devices)
            )
        }
        _ => {
            let room = arg("room").unwrap_or_default();
            let preset = arg("preset").unwrap_or_else(|| "start".into());
            format!(
                "Prepare the meeting room \"{room}\":\n1. list_rooms: find the room, its devices and its presets.\n\
                 2. list_devices with the room's space_id: if a device is offline or in error, report it before the meeting.\n\
                 3. If the room has the preset \"{preset}\", run start_meeting_room_preset (room \"{room}\", preset \"{preset}\") \
                 and report each step's result. Without presets, power on displays and projectors with send_command \
                 (power_on, wait=true) and select the right input where the model supports select_input.\n\
                 4. Confirm the final state of every device in the room."
            )
        }
    };
    Ok(json!({"description": p.description, "messages": [{"role": "user", "content": {"type": "text", "text": text}}]}))
}

/// Suggestions for an argument: device ids (by id or name prefix), room names, ticket and space ids.
pub async fn complete(ctx: &Ctx, reference: &Value, argument: &str, value: &str) -> Result<Value, Error> {
    let (v, cache) = (value.to_lowercase(), &ctx.app.cache);
    let mut values: Vec<String> = match argument {
        "device_id" => cache
            .devices()
            .await?
            .value
            .iter()
            .filter(|d| {
                d["id"].as_str().is_some_and(|i| i.starts_with(value))
                    || d["name"].as_str().is_some_and(|n| n.to_lowercase().contains(&v))
            })
            .filter_map(|d| d["id"].as_str().map(String::from))
            .collect(),
        "room" | "room_name" => {
            let (mut rooms, _) = super::rooms::preset_names(&ctx.app);
            let spaces = cache.spaces().await?.value;
            rooms.extend(
                spaces
                    .iter()
                    .filter(|s| s["space_type"] == "room")
                    .filter_map(|s| s["name"].as_str().map(String::from)),
            );
            rooms.retain(|n| n.to_lowercase().contains(&v));
            rooms
        }
        "preset" => {
            let (_, mut presets) = super::rooms::preset_names(&ctx.app);
            presets.retain(|n| n.to_lowercase().starts_with(&v));
            presets
        }
        "space_id" => cache
            .spaces()
            .await?
            .value
            .iter()
            .filter(|s| {
                s["name"].as_str().is_some_and(|n| n.to_lowercase().contains(&v))
                    || s["id"].to_string().starts_with(value)
            })
            .map(|s| s["id"].to_string().trim_matches('"').to_string())
            .collect(),
        "ticket_id" => cache
            .open_tickets()
            .await?
            .value
            .iter()
            .filter(|t| {
                t["id"].as_str().is_some_and(|i| i.starts_with(value))
                    || t["title"].as_str().is_some_and(|n| n.to_lowercase().contains(&v))
            })
            .filter_map(|t| t["id"].as_str().map(String::from))
            .collect(),
        "principal" => vec!["me".to_string()],
        _ => Vec::new(),
    };
    if reference.get("type").and_then(Value::as_str).is_none() {
        return Err(Error::new(ErrorCode::InvalidParams, "completion needs ref.type (ref/prompt or ref/resource)"));
    }
    values.sort();
    values.dedup();
    let total = values.len();
    values.truncate(100);
    Ok(json!({"completion": {"values": values, "total": total, "hasMore": total > 100}}))
}
