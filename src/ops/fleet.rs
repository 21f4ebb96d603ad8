//! Organization-wide reads computed from the local store: spaces and rooms, org info, fleet health, the event log,
//! and the `search`/`fetch` connector pair.

use std::collections::HashMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::devices::summary;
use super::page;
use super::schema::{Id, id_text, parse};
use crate::cache::{Cached, Compact};
use crate::error::{Error, ErrorCode};
use crate::runtime::Ctx;
use crate::store::events;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListSpaces {
    /// Name or path contains this text (case-insensitive).
    pub query: Option<String>,
    /// Only direct children of this space.
    pub parent_id: Option<Id>,
    #[schemars(range(min = 1, max = 500))]
    pub limit: Option<u32>,
}

pub async fn list_spaces(ctx: &Ctx, a: ListSpaces) -> Result<Value, Error> {
    let spaces = ctx.app.cache.spaces().await?;
    let devices = ctx.app.cache.devices().await?;
    let mut per_space: HashMap<String, usize> = HashMap::new();
    for d in devices.value.iter() {
        *per_space.entry(id_text(&d["space"]["id"])).or_default() += 1;
    }
    let q = a.query.as_deref().map(str::to_lowercase);
    let list: Vec<Value> = spaces
        .value
        .iter()
        .filter(|s| a.parent_id.as_ref().is_none_or(|p| id_text(&s["parent_id"]) == p.0))
        .filter(|s| {
            q.as_deref().is_none_or(|q| {
                ["name", "full_path"].iter().any(|k| s[*k].as_str().is_some_and(|v| v.to_lowercase().contains(q)))
            })
        })
        .map(|s| {
            json!({"id": s["id"], "name": s["name"], "parent_id": s["parent_id"], "space_type": s["space_type"],
                   "full_path": s["full_path"], "device_count": per_space.get(&id_text(&s["id"])).copied().unwrap_or(0)})
        })
        .collect();
    let (items, _, omitted) = page(&list, a.limit, None)?;
    Ok(spaces.stamp(json!({"spaces": items, "total": list.len(), "omitted": omitted})))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

pub async fn get_organization_info(ctx: &Ctx, _: NoArgs) -> Result<Value, Error> {
    let info = ctx.app.cache.organization().await?;
    Ok(info.stamp(json!({"organization": info.value})))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FleetHealth {
    /// Only this space and below.
    pub space_id: Option<Id>,
}

fn age_hours(created: &Compact, now: time::OffsetDateTime) -> Option<f64> {
    let t = time::OffsetDateTime::parse(created.as_str()?, &time::format_description::well_known::Rfc3339).ok()?;
    Some(((now - t).whole_minutes() as f64 / 60.0 * 10.0).round() / 10.0)
}

/// Fleet health from the local store only, so it answers during a WAN outage.
pub async fn get_fleet_health(ctx: &Ctx, a: FleetHealth) -> Result<Value, Error> {
    let cache = &ctx.app.cache;
    let devices = cache.devices().await?;
    let incidents = cache.active_incidents().await?;
    let tickets = cache.open_tickets().await?;
    let scope: Option<Vec<String>> = match &a.space_id {
        Some(s) => {
            let spaces = cache.spaces().await?.value;
            let mut ids = vec![s.0.clone()];
            let mut i = 0;
            while i < ids.len() {
                let parent = ids[i].clone();
                ids.extend(spaces.iter().filter(|x| id_text(&x["parent_id"]) == parent).map(|x| id_text(&x["id"])));
                i += 1;
            }
            Some(ids)
        }
        None => None,
    };
    let in_scope = |space: &Compact| scope.as_ref().is_none_or(|ids| ids.contains(&id_text(space)));
    let devs: Vec<&Compact> = devices.value.iter().filter(|d| in_scope(&d["space"]["id"])).collect();
    let incs: Vec<&Compact> = incidents.value.iter().filter(|i| in_scope(&i["space_id"])).collect();
    let total = devs.len();
    let online = devs.iter().filter(|d| d["status"] == "online").count();
    let offline = devs.iter().filter(|d| d["status"] == "offline").count();
    let errored = devs.iter().filter(|d| d["status"] == "error").count();
    let pct = |n: usize| if total == 0 { 0.0 } else { (n as f64 * 1000.0 / total as f64).round() / 10.0 };
    let now = time::OffsetDateTime::now_utc();
    let ages: Vec<f64> = incs.iter().filter_map(|i| age_hours(&i["created_at"], now)).collect();
    let mut by_priority: HashMap<String, usize> = HashMap::new();
    for i in &incs {
        *by_priority.entry(i["priority"].as_str().unwrap_or("unknown").to_string()).or_default() += 1;
    }
    let mut offline_spaces: HashMap<String, usize> = HashMap::new();
    for d in devs.iter().filter(|d| d["status"] != "online") {
        *offline_spaces.entry(d["space"]["full_path"].as_str().unwrap_or("(no space)").to_string()).or_default() += 1;
    }
    let mut top_offline: Vec<(String, usize)> = offline_spaces.into_iter().collect();
    top_offline.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut per_device: HashMap<String, (usize, &Compact)> = HashMap::new();
    for i in &incs {
        let e = per_device.entry(id_text(&i["device_id"])).or_insert((0, &i["device_name"]));
        e.0 += 1;
    }
    let mut prone: Vec<(String, (usize, &Compact))> = per_device.into_iter().collect();
    prone.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(&b.0)));
    let offline_pct = pct(offline + errored);
    let out = json!({
        "devices": {"total": total, "online": online, "offline": offline, "error": errored,
                    "online_rate": pct(online), "offline_percent": offline_pct},
        "active_incidents": {"count": incs.len(), "by_priority": by_priority,
                             "oldest_hours": ages.iter().cloned().fold(None, |m: Option<f64>, a| Some(m.map_or(a, |m| m.max(a)))),
                             "average_age_hours": if ages.is_empty() { None } else { Some((ages.iter().sum::<f64>() / ages.len() as f64 * 10.0).round() / 10.0) }},
        "open_tickets": tickets.value.len(),
        "top_offline_spaces": top_offline.iter().take(5).map(|(s, n)| json!({"space": s, "offline": n})).collect::<Vec<_>>(),
        "most_incident_prone_devices": prone.iter().take(5).map(|(id, (n, name))| json!({"device_id": id, "name": name, "active_incidents": n})).collect::<Vec<_>>(),
        "healthy": incs.is_empty() && offline_pct < 5.0,
    });
    let stale = devices.stale || incidents.stale || tickets.stale;
    Ok(Cached { value: (), stale, fetched_at: devices.fetched_at.min(incidents.fetched_at) }.stamp(out))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListEvents {
    /// Only events after this id (to continue a previous listing).
    pub after_id: Option<i64>,
    /// Only this kind, e.g. device.status_changed, command.status_changed, audit.
    pub kind: Option<String>,
    pub device_id: Option<Id>,
    #[schemars(range(min = 1, max = 500))]
    pub limit: Option<u32>,
}

pub async fn list_events(ctx: &Ctx, a: ListEvents) -> Result<Value, Error> {
    let limit = a.limit.unwrap_or(50).clamp(1, 500) as usize;
    let filter = events::EventFilter { kinds: a.kind.into_iter().collect(), device_id: a.device_id.map(|d| d.0) };
    let after = a.after_id.unwrap_or(0);
    let list = if a.after_id.is_some() {
        ctx.app.store.read(move |c| events::after(c, after, &filter, limit)).await?
    } else {
        // Without a starting point, the most recent events.
        ctx.app
            .store
            .read(move |c| {
                let latest = events::latest_id(c)?;
                let mut recent = events::after(c, (latest - 5000).max(0), &filter, 5000)?;
                let skip = recent.len().saturating_sub(limit);
                Ok(recent.split_off(skip))
            })
            .await?
    };
    let last = list.last().map(|e| e.id);
    Ok(json!({"events": list, "last_id": last}))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Search {
    /// Words to look for in devices, tickets, incidents and spaces.
    pub query: String,
}

fn matches(words: &[String], fields: &[&Compact]) -> bool {
    let text: String = fields.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(" ").to_lowercase();
    words.iter().all(|w| text.contains(w.as_str()))
}

pub async fn search(ctx: &Ctx, a: Search) -> Result<Value, Error> {
    let words: Vec<String> = a.query.to_lowercase().split_whitespace().map(String::from).collect();
    if words.is_empty() {
        return Err(Error::invalid_params("query must contain a word"));
    }
    let mut results = Vec::new();
    let cache = &ctx.app.cache;
    for d in cache.devices().await?.value.iter() {
        if matches(&words, &[&d["name"], &d["model"]["name"], &d["sn"], &d["space"]["full_path"], &d["status"]]) {
            let text = format!(
                "{} {} in {} — {}",
                d["model"]["name"].as_str().unwrap_or(""),
                d["name"].as_str().unwrap_or(""),
                d["space"]["full_path"].as_str().unwrap_or("?"),
                d["status"].as_str().unwrap_or("unknown")
            );
            results.push(json!({"id": format!("device:{}", id_text(&d["id"])), "title": d["name"], "text": text,
                                "url": format!("device://{}/status", id_text(&d["id"]))}));
        }
    }
    for t in cache.open_tickets().await?.value.iter() {
        if matches(&words, &[&t["title"], &t["description"]]) {
            results.push(
                json!({"id": format!("ticket:{}", id_text(&t["id"])), "title": t["title"], "text": t["description"],
                                "url": format!("ticket://{}", id_text(&t["id"]))}),
            );
        }
    }
    for i in cache.active_incidents().await?.value.iter() {
        if matches(&words, &[&i["title"], &i["device_name"], &i["space_tree_path_name"]]) {
            results.push(json!({"id": format!("incident:{}", id_text(&i["id"])), "title": i["title"],
                                "text": format!("{} incident, {}", i["priority"].as_str().unwrap_or(""), i["status"].as_str().unwrap_or("")),
                                "url": "incidents://"}));
        }
    }
    for s in cache.spaces().await?.value.iter() {
        if matches(&words, &[&s["name"], &s["full_path"]]) {
            results
                .push(json!({"id": format!("space:{}", id_text(&s["id"])), "title": s["name"], "text": s["full_path"],
                                "url": format!("space://{}/devices", id_text(&s["id"]))}));
        }
    }
    let total = results.len();
    results.truncate(50);
    Ok(json!({"results": results, "total": total}))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fetch {
    /// An id returned by `search`, e.g. `device:…`, `ticket:…`, `incident:…`, `space:…`.
    pub id: String,
}

pub async fn fetch(ctx: &Ctx, a: Fetch) -> Result<Value, Error> {
    let (kind, id) = a.id.split_once(':').ok_or_else(|| {
        Error::invalid_params("id must look like device:<id>, ticket:<id>, incident:<id> or space:<id>")
    })?;
    let not_found = || Error::new(ErrorCode::NotFound, format!("nothing known as {}", a.id));
    let cache = &ctx.app.cache;
    let found = match kind {
        "device" => super::devices::get_device_status(ctx, parse(json!({"device_id": id}))?).await?.into_value(),
        "ticket" => super::tickets::get_ticket(ctx, parse(json!({"ticket_id": id}))?).await?,
        "incident" => {
            let item = cache
                .active_incidents()
                .await?
                .value
                .iter()
                .find(|i| id_text(&i["id"]) == id)
                .cloned()
                .ok_or_else(not_found)?;
            json!({"incident": item})
        }
        "space" => {
            let space =
                cache.spaces().await?.value.iter().find(|s| id_text(&s["id"]) == id).cloned().ok_or_else(not_found)?;
            let devices: Vec<Value> =
                cache.devices().await?.value.iter().filter(|d| id_text(&d["space"]["id"]) == id).map(summary).collect();
            json!({"space": space, "devices": devices})
        }
        _ => return Err(not_found()),
    };
    let title = found
        .pointer("/device/name")
        .or(found.pointer("/ticket/title"))
        .or(found.pointer("/incident/title"))
        .or(found.pointer("/space/name"))
        .cloned();
    Ok(
        json!({"id": a.id, "title": title, "text": serde_json::to_string(&found).unwrap_or_default(), "metadata": found}),
    )
}
