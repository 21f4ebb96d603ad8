//! Rooms and room presets: the presets file, room-name matching (exact, unique prefix, fuzzy with a
//! "did you mean" list), `list_rooms`, and running a preset's steps in order with per-step progress and results.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::commands::{command_for, follow, validate};
use super::devices::stored_context;
use super::schema::id_text;
use crate::cache::{Compact, model_id};
use crate::config::presets::{Presets, RoomEntry, Step};
use crate::error::{Error, ErrorCode};
use crate::runtime::{App, Ctx};
use crate::xyte::Priority;

/// SIGHUP: re-reads the presets file; a broken file is reported and the old presets and schedules kept.
pub fn reload(app: &App) {
    let path = app.presets().path.clone();
    match Presets::load(&path) {
        Ok(p) => {
            tracing::info!(file = %path.display(), rooms = p.rooms.len(), schedules = p.schedules.len(),
                           "room presets reloaded");
            p.report_problems();
            app.set_presets(p);
        }
        Err(e) => {
            tracing::error!("room presets not reloaded, keeping the previous presets and schedules: {e}");
            app.set_presets(Presets { error: Some(e), ..(*app.presets()).clone() });
        }
    }
}

/// A room as the tools know it: from the presets file, from Xyte's spaces, or both.
#[derive(Debug, Clone)]
struct Room {
    name: String,
    space: Option<Compact>,
    entry: Option<RoomEntry>,
}

/// Every known room: preset rooms first, then spaces of type `room` not already named by a preset room.
async fn rooms(ctx: &Ctx) -> Result<Vec<Room>, Error> {
    let presets = ctx.app.presets();
    let spaces = ctx.app.cache.spaces().await.map(|s| s.value).unwrap_or_default();
    let space_of = |entry: &RoomEntry, name: &str| {
        spaces
            .iter()
            .find(|s| match &entry.space_id {
                Some(id) => id_text(&s["id"]) == id.0,
                None => s["name"].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)),
            })
            .cloned()
    };
    let mut out: Vec<Room> = presets
        .rooms
        .iter()
        .map(|(name, entry)| Room { name: name.clone(), space: space_of(entry, name), entry: Some(entry.clone()) })
        .collect();
    for s in spaces.iter().filter(|s| s["space_type"] == "room") {
        let name = s["name"].as_str().unwrap_or_default();
        let known = out
            .iter()
            .any(|r| r.name.eq_ignore_ascii_case(name) || r.space.as_ref().is_some_and(|rs| rs["id"] == s["id"]));
        if !known && !name.is_empty() {
            out.push(Room { name: name.to_string(), space: Some(s.clone()), entry: None });
        }
    }
    Ok(out)
}

/// Finds `wanted` among `names`: case-insensitive equality, then a unique prefix, then a unique fuzzy match
/// (every word contained, or a small edit distance). Otherwise an error with a "did you mean" list.
pub fn match_name<'a>(wanted: &str, names: &[&'a str]) -> Result<&'a str, Error> {
    let w = wanted.trim().to_lowercase();
    if w.is_empty() {
        return Err(Error::invalid_params("room must not be empty"));
    }
    if let Some(n) = names.iter().find(|n| n.to_lowercase() == w) {
        return Ok(n);
    }
    let prefixed: Vec<&str> = names.iter().copied().filter(|n| n.to_lowercase().starts_with(&w)).collect();
    if prefixed.len() == 1 {
        return Ok(prefixed[0]);
    }
    let mut scored: Vec<(usize, &str)> = names
        .iter()
        .map(|n| {
            let l = n.to_lowercase();
            let words = w.split_whitespace().all(|word| l.contains(word));
            (if words { 0 } else { crate::config::values::distance(&w, &l) }, *n)
        })
        .collect();
    scored.sort();
    let close = (w.chars().count() / 3).clamp(1, 3);
    let near: Vec<&str> = scored.iter().filter(|(d, _)| *d <= close).map(|(_, n)| *n).collect();
    if near.len() == 1 && prefixed.is_empty() {
        return Ok(near[0]);
    }
    let suggestions: Vec<&str> = if !prefixed.is_empty() {
        prefixed.into_iter().take(8).collect()
    } else {
        scored.iter().take(5).map(|(_, n)| *n).collect()
    };
    Err(Error::new(
        ErrorCode::NotFound,
        format!("no room matches {wanted:?}; did you mean: {}", suggestions.join(", ")),
    )
    .with_hint("list_rooms shows every room"))
}

async fn find_room(ctx: &Ctx, wanted: Option<String>) -> Result<Room, Error> {
    let wanted = match wanted {
        Some(r) => r,
        None => stored_context(ctx).await?["room"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| Error::invalid_params("room is required (or set a default with set_context)"))?,
    };
    let all = rooms(ctx).await?;
    let names: Vec<&str> = all.iter().map(|r| r.name.as_str()).collect();
    let name = match_name(&wanted, &names)?;
    Ok(all.iter().find(|r| r.name == name).cloned().expect("matched among these rooms"))
}

/// The devices in a space (and below), each with the commands its model accepts, for rooms without presets.
async fn devices_with_commands(ctx: &Ctx, space: &Compact) -> Vec<Value> {
    let Ok(devices) = ctx.app.cache.devices().await else { return vec![] };
    let path = space["full_path"].as_str().unwrap_or_default().to_string();
    let mut out = vec![];
    for d in devices.value.iter().filter(|d| {
        d["space"]["id"] == space["id"] || (!path.is_empty() && d["space"]["full_path"].as_str() == Some(&path))
    }) {
        let commands = model_commands(ctx, &d["model"]).await;
        out.push(json!({"device_id": d["id"], "name": d["name"], "status": d["status"], "commands": commands}));
    }
    out
}

async fn model_commands(ctx: &Ctx, model: &Compact) -> Vec<Value> {
    let Some(id) = model_id(model["id"].as_str(), model["id"].as_i64()) else { return Vec::new() };
    let Ok(model) = ctx.app.cache.model(&id).await else { return Vec::new() };
    model.value["commands"].as_array().into_iter().flatten().map(|c| c["name"].to_value()).collect()
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListRooms {}

pub async fn list_rooms(ctx: &Ctx, _: ListRooms) -> Result<Value, Error> {
    let devices = ctx.app.cache.devices().await.map(|s| s.value).unwrap_or_default();
    let presets = ctx.app.presets();
    let list: Vec<Value> = rooms(ctx)
        .await?
        .into_iter()
        .map(|r| {
            let count = r.space.as_ref().map(|s| devices.iter().filter(|d| d["space"]["id"] == s["id"]).count());
            json!({
                "name": r.name,
                "space_id": r.space.as_ref().map(|s| &s["id"]),
                "path": r.space.as_ref().and_then(|s| s["full_path"].as_str().map(String::from)),
                "devices": count,
                "presets": r.entry.as_ref().map(|e| e.presets.keys().cloned().collect::<Vec<_>>()).unwrap_or_default(),
                "source": match (&r.entry, &r.space) { (Some(_), Some(_)) => "presets+space", (Some(_), None) => "presets", _ => "space" },
            })
        })
        .collect();
    Ok(json!({"rooms": list, "total": list.len(), "presets_file": presets.path, "presets_error": presets.error}))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunPreset {
    /// Room name (case-insensitive; a unique prefix or a close spelling is enough). Defaults to the context's room.
    pub room: Option<String>,
    /// Preset name (default `start`).
    pub preset: Option<String>,
    /// Validate every step and show what would be sent, without sending.
    pub dry_run: Option<bool>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShutdownRoom {
    /// Room name (case-insensitive; a unique prefix or a close spelling is enough). Defaults to the context's room.
    pub room: Option<String>,
    pub dry_run: Option<bool>,
}

pub async fn start_meeting_room_preset(ctx: &Ctx, a: RunPreset) -> Result<Value, Error> {
    run_preset(ctx, a.room, a.preset.unwrap_or_else(|| "start".into()), a.dry_run == Some(true)).await
}

pub async fn shutdown_meeting_room(ctx: &Ctx, a: ShutdownRoom) -> Result<Value, Error> {
    run_preset(ctx, a.room, "shutdown".into(), a.dry_run == Some(true)).await
}

async fn run_preset(ctx: &Ctx, room: Option<String>, preset: String, dry_run: bool) -> Result<Value, Error> {
    let room = find_room(ctx, room).await?;
    let Some(entry) = &room.entry else {
        // No implicit presets: give the agent what it needs to act step by step itself.
        let devices = match &room.space {
            Some(s) => devices_with_commands(ctx, s).await,
            None => vec![],
        };
        return Err(Error::new(
            ErrorCode::NotFound,
            format!(
                "room {:?} has no presets (none in the presets file); its devices and their commands: {}",
                room.name,
                Value::Array(devices)
            ),
        )
        .with_hint("run the commands with send_command, or add the room to the presets file and reload (SIGHUP)"));
    };
    let Some(steps) = entry.presets.get(&preset) else {
        let names: Vec<&String> = entry.presets.keys().collect();
        return Err(Error::invalid_params(format!(
            "room {:?} has no preset {preset:?}; it has: {}",
            room.name,
            names.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        )));
    };
    let total = steps.len();
    let space = room.space.as_ref().map(|s| id_text(&s["id"]));
    if !dry_run {
        admit(ctx, steps).await?;
        let data = json!({"room": room.name, "preset": preset, "steps": total, "principal": ctx.principal.id});
        preset_event(ctx, "preset.started", data, space.clone()).await;
    }
    let mut results = Vec::with_capacity(total);
    let mut stopped = false;
    let mut all_ok = true;
    for (i, step) in steps.iter().enumerate() {
        let n = i + 1;
        if stopped {
            results.push(json!({"step": n, "device_id": step.device_id, "command": step.command, "status": "skipped", "ok": false}));
            continue;
        }
        ctx.report(i as f64, Some(total as f64), format!("step {n}/{total}: {} on {}", step.command, step.device_id));
        let outcome = run_step(ctx, step, dry_run).await;
        let ok = outcome["ok"] == true;
        let mut r = json!({"step": n});
        if let (Value::Object(r), Value::Object(o)) = (&mut r, outcome) {
            r.extend(o);
        }
        ctx.report(n as f64, Some(total as f64), format!("step {n}/{total}: {}", r["status"].as_str().unwrap_or("?")));
        results.push(r);
        if !ok {
            all_ok = false;
            stopped = !step.continue_on_error;
        }
    }
    if !dry_run {
        let summary: Vec<Value> = results
            .iter()
            .map(|r| json!({"step": r["step"], "device_id": r["device_id"], "command": r["command"], "status": r["status"]}))
            .collect();
        let data = json!({"room": room.name, "preset": preset, "ok": all_ok, "steps": summary});
        preset_event(ctx, "preset.finished", data, space).await;
    }
    Ok(json!({"room": room.name, "preset": preset, "dry_run": dry_run, "ok": all_ok, "steps": results}))
}

/// A preset runs only if the outbox has room for its steps, as if they were queued there: they are sent at once at
/// command priority, so they take the same upstream budget the queued commands wait for, and a preset started
/// into a full outbox would delay those towards expiry. The check is all or nothing, before any step is sent: a
/// half-run preset (the projector on, the display not) is worse than a refusal. Nothing is stored, so there is no
/// write to share a transaction with; a concurrent `send_command_async` may take the room it saw, by at most the
/// preset's few steps, which are never stored either.
async fn admit(ctx: &Ctx, steps: &[Step]) -> Result<(), Error> {
    let mut wanted: BTreeMap<String, u64> = BTreeMap::new();
    for step in steps {
        *wanted.entry(step.device_id.0.clone()).or_default() += 1;
    }
    let wanted: Vec<(String, u64)> = wanted.into_iter().collect();
    let limits = ctx.app.outbox_limits;
    ctx.app.store.read(move |c| limits.admit(c, &wanted)).await?
}

/// `preset.started` / `preset.finished` events, so every dashboard and event consumer sees a room being operated.
/// Best effort: the preset's own result is what the caller relies on, and a full disk must not fail a running preset.
async fn preset_event(ctx: &Ctx, kind: &str, data: Value, space: Option<String>) {
    if let Err(e) = ctx.app.bus.publish(vec![crate::store::events::NewEvent::new(kind, data).space(space)]).await {
        tracing::warn!("could not record {kind}: {e}");
    }
}

/// One step: validated against the device and its model; sent and followed to a final status unless a dry run.
/// Never an `Err`: a failed step is a result the caller sees next to the others.
async fn run_step(ctx: &Ctx, step: &Step, dry_run: bool) -> Value {
    let id = step.device_id.0.clone();
    let base = json!({"device_id": id, "command": step.command});
    let fail = |status: &str, message: String| {
        let mut v = base.clone();
        v["status"] = json!(status);
        v["message"] = json!(message);
        v["ok"] = json!(false);
        v
    };
    let dev = match ctx.app.cache.device(&id).await {
        Ok(d) => d.value.to_value(),
        Err(e) if e.code == ErrorCode::NotFound => return fail("invalid", format!("no device {id}")),
        Err(e) => return fail("error", e.to_string()),
    };
    let params = step.extra_params.clone().unwrap_or_default();
    let spec = match validate(ctx, &dev, &step.command, &params, None).await {
        Ok(s) => s,
        Err(e) => return fail("invalid", e.message),
    };
    let cmd = command_for(spec.as_ref(), &step.command, step.friendly_name.clone(), params, None);
    let mut out = base.clone();
    out["device"] = dev["name"].clone();
    if dry_run {
        out["status"] = json!("validated");
        out["ok"] = json!(true);
        out["would_send"] = json!({"method": "POST", "path": format!("devices/{id}/commands"), "body": cmd});
        return out;
    }
    let sent = match ctx.app.client.send_command(&id, cmd, Priority::Command).await {
        Ok(s) => s,
        Err(e) => return fail("error", e.to_string()),
    };
    ctx.app.cache.invalidate("commands", Some(&id)).await;
    out["xyte_command_id"] = json!(sent.id);
    let timeout = Duration::from_secs(u64::from(step.timeout_s.unwrap_or(60).clamp(1, 600)));
    // `follow` reports its own progress lines; a preset reports per step instead.
    let quiet = Ctx { app: ctx.app.clone(), principal: ctx.principal.clone(), progress: None };
    match follow(&quiet, &id, &sent.id, timeout).await {
        Ok((status, message, timed_out)) => {
            out["ok"] = json!(status == "done");
            out["status"] = json!(if timed_out { "timed_out".to_string() } else { status });
            out["message"] = message;
        }
        Err(e) => return fail("error", e.to_string()),
    }
    out
}

/// The presets as served to `completion/complete`: room names and, per room, preset names.
pub fn preset_names(app: &Arc<App>) -> (Vec<String>, Vec<String>) {
    let p = app.presets();
    let rooms = p.rooms.keys().cloned().collect();
    let mut presets: Vec<String> = p.rooms.values().flat_map(|e| e.presets.keys().cloned()).collect();
    presets.sort();
    presets.dedup();
    (rooms, presets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_match_exactly_then_by_prefix_then_fuzzily() {
        let names = ["Board Room", "Boardwalk Lounge", "Huddle 2", "Huddle 3", "Training Room"];
        assert_eq!(match_name("board room", &names).unwrap(), "Board Room");
        assert_eq!(match_name("train", &names).unwrap(), "Training Room");
        assert_eq!(match_name("Bord Room", &names).unwrap(), "Board Room");
        assert_eq!(match_name("room training", &names).unwrap(), "Training Room");
        let e = match_name("Huddle", &names).unwrap_err();
        assert!(e.message.contains("did you mean: Huddle 2, Huddle 3"), "{}", e.message);
        let e = match_name("Cafeteria", &names).unwrap_err();
        assert!(e.message.contains("did you mean"), "{}", e.message);
    }
}
