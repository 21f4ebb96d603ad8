//! Device reads and admin writes: `list_devices`, `get_device_status`, `list_device_commands`,
//! `search_device_histories`, `claim_device`, `update_device`, `delete_device`, and the per-principal context
//! (`set_context`) that lets tools default `device_id`/`space_id`/`room`.

use std::sync::{Arc, Mutex, PoisonError, Weak};

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::reads::{self, Snapshot};
use super::schema::Id;
use super::{Ctx, page};
use crate::error::{Error, ErrorCode};
use crate::store::{Compact, Durability, context, now_ms};
use crate::xyte::{HistoryQuery, Priority};

const P: Priority = Priority::Interactive;

/// The devices of the organization, from the cache.
pub async fn all_devices(ctx: &Ctx) -> Result<Snapshot, Error> {
    let client = ctx.app.client.clone();
    reads::collection(ctx, "device", || async move {
        let devices = client.list_devices(None, P).await?;
        Ok(reads::keyed(&devices, |d| d.id.clone()))
    })
    .await
}

pub fn summary(d: &Compact) -> Value {
    json!({
        "id": d["id"], "name": d["name"], "status": d["status"], "model": d["model"]["name"],
        "space_id": d["space"]["id"], "space": d["space"]["full_path"], "last_seen_at": d["last_seen_at"], "sn": d["sn"],
    })
}

/// The calling principal's stored context (`set_context`), `{}` when none.
pub async fn stored_context(ctx: &Ctx) -> Result<Value, Error> {
    // A primary-key lookup: on this thread, not through the blocking pool (see `Store::read_blocking`).
    Ok(ctx.app.store.read_blocking(|c| context::get(c, &ctx.principal.id))?.unwrap_or_else(|| json!({})))
}

/// `device_id` from the arguments, else from the principal's context, else a clear error.
pub async fn device_or_context(ctx: &Ctx, given: Option<Id>) -> Result<String, Error> {
    if let Some(id) = given {
        return Ok(id.0);
    }
    match stored_context(ctx).await?.get("device_id").and_then(Value::as_str) {
        Some(id) => Ok(id.to_string()),
        None => Err(Error::invalid_params("device_id is required (or set a default with set_context)")),
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListDevices {
    /// Only devices in this space or below it (defaults to the context's space_id).
    pub space_id: Option<Id>,
    /// Only devices with this status.
    pub status: Option<DeviceStatus>,
    /// Case-insensitive text matched against name, model, serial number and space path.
    pub query: Option<String>,
    /// At most this many devices (default 50, at most 500).
    #[schemars(range(min = 1, max = 500))]
    pub limit: Option<u32>,
    /// Continue after a previous page (its `next_cursor`).
    pub cursor: Option<String>,
}

#[derive(Deserialize, JsonSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DeviceStatus {
    Online,
    Offline,
    Error,
}

impl DeviceStatus {
    const ALL: [DeviceStatus; 3] = [DeviceStatus::Online, DeviceStatus::Offline, DeviceStatus::Error];

    fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Online => "online",
            DeviceStatus::Offline => "offline",
            DeviceStatus::Error => "error",
        }
    }

    fn of(device: &Compact) -> Option<DeviceStatus> {
        let status = device["status"].as_str()?;
        DeviceStatus::ALL.into_iter().find(|s| s.as_str() == status)
    }
}

/// One device of the collection in name order: where it is in the collection, and its status.
type Ordered = (u32, Option<DeviceStatus>);

/// The device collection in name order, kept for the collection it was computed from: looking up and sorting 500
/// names on every `list_devices` call was a fifth of its time (BENCHMARKS.md). The store shares one parsed
/// collection (`Arc`) until the cache is written, so that `Arc` identifies it; the `Weak` kept here also keeps its
/// allocation, so a newer collection cannot have the same address.
#[derive(Default)]
pub struct NameOrder(Mutex<Option<Kept>>);

/// The collection an order was computed from, and the order.
type Kept = (Weak<Vec<Compact>>, Arc<[Ordered]>);

impl NameOrder {
    fn of(&self, devices: &Arc<Vec<Compact>>) -> Arc<[Ordered]> {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((of, order)) = kept.as_ref()
            && std::ptr::eq(of.as_ptr(), Arc::as_ptr(devices))
        {
            return order.clone();
        }
        let mut by_name: Vec<(u32, Option<&str>)> =
            devices.iter().enumerate().map(|(i, d)| (i as u32, d["name"].as_str())).collect();
        // Stable: devices with the same name (or none) stay in the collection's order.
        by_name.sort_by(|a, b| a.1.cmp(&b.1));
        let order: Arc<[Ordered]> =
            by_name.into_iter().map(|(i, _)| (i, DeviceStatus::of(&devices[i as usize]))).collect();
        *kept = Some((Arc::downgrade(devices), order.clone()));
        order
    }
}

fn in_space(d: &Compact, space_id: &str, spaces: &[Compact]) -> bool {
    let Some(own) =
        d["space"]["id"].as_i64().map(|i| i.to_string()).or_else(|| d["space"]["id"].as_str().map(String::from))
    else {
        return false;
    };
    // Walk up the parent chain of the device's space.
    let mut current = Some(own);
    let mut hops = 0;
    while let Some(id) = current {
        if id == space_id {
            return true;
        }
        hops += 1;
        if hops > 32 {
            return false;
        }
        current = spaces.iter().find(|s| s["id"].to_string().trim_matches('"') == id).and_then(|s| {
            s["parent_id"].as_i64().map(|p| p.to_string()).or_else(|| s["parent_id"].as_str().map(String::from))
        });
    }
    false
}

pub async fn list_devices(ctx: &Ctx, a: ListDevices) -> Result<Value, Error> {
    let snap = all_devices(ctx).await?;
    let space = match a.space_id {
        Some(s) => Some(s.0),
        None => stored_context(ctx)
            .await?
            .get("space_id")
            .and_then(|v| v.as_str().map(String::from).or(v.as_i64().map(|i| i.to_string()))),
    };
    let spaces = if space.is_some() { super::fleet::all_spaces(ctx).await?.items } else { Default::default() };
    let q = a.query.as_deref().map(str::to_lowercase);
    // In name order, with each device's status at hand (see `NameOrder`); only the returned page is summarised.
    let order = ctx.app.device_order.of(&snap.items);
    let mut matched: Vec<(&Compact, Option<DeviceStatus>)> = order
        .iter()
        .map(|&(i, status)| (&snap.items[i as usize], status))
        .filter(|(d, _)| space.as_deref().is_none_or(|s| in_space(d, s, &spaces)))
        .filter(|(d, _)| {
            q.as_deref().is_none_or(|q| {
                ["name", "sn", "mac", "cloud_id"]
                    .iter()
                    .any(|k| d[*k].as_str().is_some_and(|v| v.to_lowercase().contains(q)))
                    || d["model"]["name"].as_str().is_some_and(|v| v.to_lowercase().contains(q))
                    || d["space"]["full_path"].as_str().is_some_and(|v| v.to_lowercase().contains(q))
            })
        })
        .collect();
    let (mut online, mut offline, mut error) = (0, 0, 0);
    for (_, status) in &matched {
        match status {
            Some(DeviceStatus::Online) => online += 1,
            Some(DeviceStatus::Offline) => offline += 1,
            Some(DeviceStatus::Error) => error += 1,
            None => {}
        }
    }
    let counts = json!({"online": online, "offline": offline, "error": error});
    if let Some(wanted) = a.status {
        matched.retain(|(_, s)| *s == Some(wanted));
    }
    let (shown, next, omitted) = page(&matched, a.limit, a.cursor.as_deref())?;
    let items: Vec<Value> = shown.into_iter().map(|(d, _)| summary(d)).collect();
    let mut out = json!({"total": matched.len(), "counts": counts, "omitted": omitted});
    out["devices"] = Value::Array(items); // moved, not copied by `json!`
    if let Some(n) = next {
        out["next_cursor"] = json!(n);
    }
    merge(&mut out, snap.provenance());
    Ok(out)
}

pub fn merge(target: &mut Value, extra: Value) {
    if let (Value::Object(t), Value::Object(e)) = (target, extra) {
        t.extend(e);
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceRef {
    /// The device (defaults to the context's device_id).
    pub device_id: Option<Id>,
}

pub async fn device(ctx: &Ctx, id: &str) -> Result<(Value, Value), Error> {
    let client = ctx.app.client.clone();
    let key = id.to_string();
    reads::entry(ctx, "device", id, || async move {
        Ok(serde_json::to_value(client.get_device(&key, P).await?).unwrap_or_default())
    })
    .await
}

/// The device, or `invalid_params` naming the id when Xyte does not know it (a caller's mistake, not a lookup miss).
pub async fn existing_device(ctx: &Ctx, id: &str) -> Result<Value, Error> {
    device(ctx, id).await.map(|(d, _)| d).map_err(|e| match e.code {
        ErrorCode::NotFound => Error::invalid_params(format!("no device {id}")),
        _ => e,
    })
}

pub async fn commands_of(ctx: &Ctx, id: &str) -> Result<(Value, Value), Error> {
    let client = ctx.app.client.clone();
    let key = id.to_string();
    reads::entry(ctx, "commands", id, || async move {
        Ok(serde_json::to_value(client.list_commands(&key, None, 100, P).await?).unwrap_or_default())
    })
    .await
}

pub async fn get_device_status(ctx: &Ctx, a: DeviceRef) -> Result<Value, Error> {
    let id = device_or_context(ctx, a.device_id).await?;
    let (device, provenance) = device(ctx, &id).await?;
    let incidents = super::tickets::active_incidents(ctx).await.map(|s| s.items).unwrap_or_default();
    let open: Vec<Value> = incidents.iter().filter(|i| i["device_id"] == id.as_str()).map(Compact::to_value).collect();
    let recent = match commands_of(ctx, &id).await {
        Ok((Value::Array(list), _)) => list.into_iter().take(5).collect(),
        _ => Vec::new(),
    };
    // What the model accepts, so a caller (the dashboard, an agent) can offer valid commands without another call.
    // Only an extra: while Xyte is known to be unreachable, a model never cached is left out rather than waited for.
    let uncached = match super::commands::model_id(&device["model"]) {
        Some(m) if reads::known_unreachable(ctx) => ctx.app.store.cache_get("model", &m).await?.is_none(),
        _ => false,
    };
    let commands = if !uncached {
        super::commands::device_model(ctx, &device["model"]).await.ok().flatten().map(|mut m| m["commands"].take())
    } else {
        None
    };
    // Built by moving the parts in: `json!` would copy each of them (it serialises what it interpolates).
    let mut out = Value::Object(Map::from_iter([
        ("status".to_string(), device["status"].clone()),
        ("state".to_string(), device["state"].clone()),
        ("last_seen_at".to_string(), device["last_seen_at"].clone()),
        ("device".to_string(), device),
        ("open_incidents".to_string(), Value::Array(open)),
        ("recent_commands".to_string(), Value::Array(recent)),
        ("commands".to_string(), commands.unwrap_or(Value::Null)),
    ]));
    merge(&mut out, provenance);
    Ok(out)
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListCommands {
    /// The device (defaults to the context's device_id).
    pub device_id: Option<Id>,
    /// Only commands in this state (pending, in_progress, done, failed, aborted, scheduled).
    pub status: Option<String>,
    /// At most this many (default 50, at most 500).
    #[schemars(range(min = 1, max = 500))]
    pub limit: Option<u32>,
}

pub async fn list_device_commands(ctx: &Ctx, a: ListCommands) -> Result<Value, Error> {
    let id = device_or_context(ctx, a.device_id).await?;
    let (list, provenance) = commands_of(ctx, &id).await?;
    let all: Vec<Value> = list
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| a.status.as_deref().is_none_or(|s| c["status"] == s))
        .collect();
    let (items, _, omitted) = page(&all, a.limit, None)?;
    let mut out = json!({"device_id": id, "commands": items, "total": all.len(), "omitted": omitted});
    merge(&mut out, provenance);
    Ok(out)
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchHistories {
    pub device_id: Option<Id>,
    pub space_id: Option<Id>,
    /// Devices whose current status is this (Xyte filters on the current status).
    pub status: Option<DeviceStatus>,
    /// Device name contains this text.
    pub name: Option<String>,
    /// Start: ISO-8601 or epoch seconds (default: 7 days before `to`).
    pub from: Option<TimeArg>,
    /// End: ISO-8601 or epoch seconds (default: now).
    pub to: Option<TimeArg>,
    #[schemars(range(min = 1, max = 500))]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// A time given as ISO-8601 text or epoch seconds.
#[derive(Debug, Clone)]
pub struct TimeArg(pub time::OffsetDateTime);

impl<'de> Deserialize<'de> for TimeArg {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let parsed = match &v {
            Value::Number(n) => n.as_i64().and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok()),
            Value::String(s) => time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .ok()
                .or_else(|| s.parse::<i64>().ok().and_then(|n| time::OffsetDateTime::from_unix_timestamp(n).ok())),
            _ => None,
        };
        parsed
            .map(TimeArg)
            .ok_or_else(|| serde::de::Error::custom(format!("{v} is not an ISO-8601 time or epoch seconds")))
    }
}

impl JsonSchema for TimeArg {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Time".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // One plain type keeps the schema portable (clients that map schemas for other models reject type lists);
        // epoch seconds given as a number are accepted all the same.
        schemars::json_schema!({"type": "string", "description": "ISO-8601 (e.g. 2026-11-01T00:00:00Z) or epoch seconds"})
    }
}

pub async fn search_device_histories(ctx: &Ctx, a: SearchHistories) -> Result<Value, Error> {
    let to = a.to.map(|t| t.0).unwrap_or_else(time::OffsetDateTime::now_utc);
    let from = a.from.map(|t| t.0).unwrap_or(to - time::Duration::days(7));
    if from > to {
        return Err(Error::invalid_params("`from` must be before `to`"));
    }
    let windows = crate::xyte::history_windows(from, to).len();
    if windows > 1 {
        ctx.report(0.0, Some(windows as f64), format!("reading {windows} windows of at most 31 days"));
    }
    let q = HistoryQuery {
        from: Some(from),
        to: Some(to),
        device_id: a.device_id.map(|i| i.0),
        space_id: a.space_id.map(|i| i.0),
        status: a.status.map(|s| s.as_str().to_string()),
        name: a.name,
    };
    let rows = ctx.app.client.list_histories(q, P).await?;
    let rows: Vec<Value> = rows.iter().map(|r| serde_json::to_value(r).unwrap_or_default()).collect();
    if windows > 1 {
        ctx.report(windows as f64, Some(windows as f64), "done");
    }
    let (items, next, omitted) = page(&rows, a.limit, a.cursor.as_deref())?;
    let mut out = json!({"rows": items, "total": rows.len(), "omitted": omitted, "windows": windows, "stale": false});
    if let Some(n) = next {
        out["next_cursor"] = json!(n);
    }
    Ok(out)
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetContext {
    /// Default device for tools that take device_id.
    pub device_id: Option<Id>,
    /// Default space for tools that take space_id.
    pub space_id: Option<Id>,
    /// Default room for the room tools.
    pub room: Option<String>,
}

pub async fn set_context(ctx: &Ctx, a: SetContext) -> Result<Value, Error> {
    let mut current = stored_context(ctx).await?;
    if let Some(d) = a.device_id {
        existing_device(ctx, &d.0).await?;
        current["device_id"] = json!(d.0);
    }
    if let Some(s) = a.space_id {
        current["space_id"] = json!(s.0);
    }
    if let Some(r) = a.room {
        current["room"] = json!(r);
    }
    let (who, data) = (ctx.principal.id.clone(), current.clone());
    ctx.app.store.write(Durability::Normal, move |c| context::set(c, &who, &data, now_ms())).await?;
    Ok(json!({"principal": ctx.principal.id, "context": current}))
}
