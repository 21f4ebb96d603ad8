//! Device reads and admin writes: `list_devices`, `get_device_status`, `list_device_commands`,
//! `search_device_histories`, `claim_device`, `update_device`, `delete_device`, and the per-principal context
//! (`set_context`) that lets tools default `device_id`/`space_id`/`room`.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::schema::{Id, TimeArg};
use super::{Answer, Part, page};
use crate::cache::{Body, Cache, Cached, Compact, DeviceStatus, Items, model_id};
use crate::error::{Error, ErrorCode};
use crate::runtime::Ctx;
use crate::store::{Durability, context, now_ms};
use crate::xyte::{HistoryQuery, Priority};

const P: Priority = Priority::Interactive;

/// What `list_devices` and the uplink say about a device.
pub fn summary(d: &Compact) -> Value {
    Summaries::default().of(d)
}

/// Summaries of many devices: built directly from the parsed copies (`json!` would take each field through serde's
/// `Value` serializer), looking each field up where it was in the device before (devices share one shape). Building
/// and looking up were a third of a `list_devices` call in perf.
#[derive(Default)]
struct Summaries {
    at: [usize; 10],
}

impl Summaries {
    fn of(&mut self, d: &Compact) -> Value {
        let [id, name, status, model, model_name, space, space_id, space_path, seen, sn] = &mut self.at;
        let (m, s) = (d.get_near("model", model), d.get_near("space", space));
        Value::Object(Map::from_iter(
            [
                ("id", d.get_near("id", id)),
                ("name", d.get_near("name", name)),
                ("status", d.get_near("status", status)),
                ("model", m.get_near("name", model_name)),
                ("space_id", s.get_near("id", space_id)),
                ("space", s.get_near("full_path", space_path)),
                ("last_seen_at", d.get_near("last_seen_at", seen)),
                ("sn", d.get_near("sn", sn)),
            ]
            .map(|(k, v)| (k.to_string(), v.to_value())),
        ))
    }
}

/// The calling principal's stored context (`set_context`), `{}` when none.
pub async fn stored_context(ctx: &Ctx) -> Result<Value, Error> {
    Ok(ctx.app.contexts.get(&ctx.app.store, &ctx.principal.id)?)
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

pub async fn list_devices(ctx: &Ctx, a: ListDevices) -> Result<Answer, Error> {
    let snap = ctx.app.cache.devices().await?;
    let space = match &a.space_id {
        Some(s) => Some(s.0.clone()),
        None => stored_context(ctx)
            .await?
            .get("space_id")
            .and_then(|v| v.as_str().map(String::from).or(v.as_i64().map(|i| i.to_string()))),
    };
    match space {
        // Then the answer depends on the spaces too: computed every time.
        Some(space) => {
            let spaces = ctx.app.cache.spaces().await?.value;
            let page = devices_page(&ctx.app.cache, &snap.value, Some((&space, &spaces)), &a)?;
            Ok(Answer::Built(snap.stamp(Value::Object(page))))
        }
        // Else on the collection and the arguments alone: kept per collection (the cache's `FromDevices`) and written
        // from there with this call's freshness.
        None => {
            let key = format!("{:?} {:?} {:?} {:?}", a.status.map(DeviceStatus::as_str), a.query, a.limit, a.cursor);
            let page =
                ctx.app.cache.from_devices(&snap.value, key, || devices_page(&ctx.app.cache, &snap.value, None, &a))?;
            Ok(Answer::kept(page, &snap))
        }
    }
}

/// One `list_devices` answer (without its freshness): the devices of `devices` in `space` (with the spaces) that
/// match `a`'s filters, in name order, a page of their summaries, the counts by status and the next cursor.
fn devices_page(
    cache: &Cache,
    devices: &Items,
    space: Option<(&str, &[Compact])>,
    a: &ListDevices,
) -> Result<Map<String, Value>, Error> {
    let q = a.query.as_deref().map(str::to_lowercase);
    // In name order, with each device's status at hand (see `FromDevices`); only the returned page is summarised.
    let order = cache.device_order(devices);
    let mut matched: Vec<(&Compact, Option<DeviceStatus>)> = order
        .iter()
        .map(|&(i, status)| (&devices[i as usize], status))
        .filter(|(d, _)| space.is_none_or(|(s, spaces)| in_space(d, s, spaces)))
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
    let mut summaries = Summaries::default();
    let items: Vec<Value> = shown.into_iter().map(|(d, _)| summaries.of(d)).collect();
    let mut out = Map::new();
    out.insert("total".into(), json!(matched.len()));
    out.insert("counts".into(), counts);
    out.insert("omitted".into(), json!(omitted));
    out.insert("devices".into(), Value::Array(items));
    if let Some(n) = next {
        out.insert("next_cursor".into(), json!(n));
    }
    Ok(out)
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceRef {
    /// The device (defaults to the context's device_id).
    pub device_id: Option<Id>,
}

/// The device, or `invalid_params` naming the id when Xyte does not know it (a caller's mistake, not a lookup miss).
pub async fn existing_device(ctx: &Ctx, id: &str) -> Result<Value, Error> {
    ctx.app.cache.device(id).await.map(|d| d.value.to_value()).map_err(|e| match e.code {
        ErrorCode::NotFound => Error::invalid_params(format!("no device {id}")),
        _ => e,
    })
}

/// The device with what a caller needs around it. Written from the rows the cache keeps ([`Answer::parts`]):
/// nothing of them is copied.
pub async fn get_device_status(ctx: &Ctx, a: DeviceRef) -> Result<Answer, Error> {
    let id = device_or_context(ctx, a.device_id).await?;
    let cache = &ctx.app.cache;
    let read = cache.device(&id).await?;
    let device = &read.value;
    // Every active incident is looked at; they share one shape, so `device_id` is where it was in the previous one.
    let open = match cache.active_incidents().await {
        Ok(Cached { value: incidents, .. }) => {
            let mut at = 0;
            (0..incidents.len())
                .filter(|&i| *incidents[i].get_near("device_id", &mut at) == id.as_str())
                .map(|i| Body::in_collection(&incidents, i))
                .collect()
        }
        Err(_) => Vec::new(),
    };
    // The five latest of the cached commands (Xyte lists the newest first).
    let recent = match cache.commands(&id).await {
        Ok(Cached { value, .. }) => Part::First(value, 5),
        Err(_) => Part::Value(Value::Array(Vec::new())),
    };
    // What the model accepts, so a caller (the dashboard, an agent) can offer valid commands without another call.
    // Only an extra: while Xyte is known to be unreachable, a model never cached is left out rather than waited for.
    let model = &device["model"];
    let commands = match model_id(model["id"].as_str(), model["id"].as_i64()) {
        Some(m) if cache.known_unreachable() && cache.get("model", &m).await?.is_none() => None,
        Some(m) => cache.model(&m).await.ok(),
        None => None,
    };
    let [fetched_at, stale] = read.freshness().map(|(k, v)| (k, Part::Value(v)));
    Ok(Answer::parts(vec![
        fetched_at,
        stale,
        ("status", Part::Field(device.clone(), "status")),
        ("state", Part::Field(device.clone(), "state")),
        ("last_seen_at", Part::Field(device.clone(), "last_seen_at")),
        ("device", Part::Row(device.clone())),
        ("open_incidents", Part::Rows(open)),
        ("recent_commands", recent),
        ("commands", commands.map_or(Part::Value(Value::Null), |m| Part::Field(m.value, "commands"))),
    ]))
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
    let read = ctx.app.cache.commands(&id).await?;
    // Filtered and paged in place: only the page is serialised, from the kept row.
    let all: Vec<&Compact> = read
        .value
        .as_array()
        .unwrap_or_default()
        .iter()
        .filter(|c| a.status.as_deref().is_none_or(|s| c["status"] == s))
        .collect();
    let (items, _, omitted) = page(&all, a.limit, None)?;
    Ok(read.stamp(json!({"device_id": id, "commands": items, "total": all.len(), "omitted": omitted})))
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
    let written = ctx.app.store.write(Durability::Normal, move |c| context::set(c, &who, &data, now_ms())).await;
    ctx.app.contexts.changed(&ctx.principal.id);
    written?;
    Ok(json!({"principal": ctx.principal.id, "context": current}))
}
