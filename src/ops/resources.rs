//! MCP resources: read-only JSON views, each answered by the same operations the tools use, plus the
//! mapping from events to the resource URIs they change (for `resources/subscribe` and `subscriptions/listen`).

use serde_json::{Value, json};

use super::{call, devices};
use crate::config::Role;
use crate::error::{Error, ErrorCode};
use crate::runtime::Ctx;
use crate::store::events::Event;

const STATIC: &[(&str, &str, &str)] = &[
    ("devices://", "Devices", "Every device with status, model and space"),
    ("organization://info", "Organization", "The Xyte organization this gateway serves"),
    ("incidents://", "Active incidents", "Incidents that are still active"),
    ("tickets://", "Open tickets", "Open support tickets"),
    ("spaces://", "Spaces", "Sites, floors and rooms with their device counts"),
    ("fleet://health", "Fleet health", "Online rate, incidents, tickets and the weakest spots, computed locally"),
    ("events://recent", "Recent events", "The latest entries of the gateway's event log"),
    (
        "edge://status",
        "Gateway status",
        "Version, uptime, Xyte reachability, cache age, outbox depth, event log, clients",
    ),
];

const TEMPLATES: &[(&str, &str, &str)] = &[
    ("device://{device_id}/status", "Device status", "One device with state, open incidents and recent commands"),
    ("device://{device_id}/commands", "Device commands", "Commands sent to one device"),
    ("device://{device_id}/histories", "Device history", "Status history of one device over the last 7 days"),
    ("organization://info/{device_id}", "Organization info for a device", "The organization with one device's details"),
    ("ticket://{ticket_id}", "Ticket", "One ticket with its conversation"),
    ("space://{space_id}/devices", "Devices in a space", "Devices in one space and below it"),
    ("user://{principal}/preferences", "Preferences", "The stored context of a principal (`me` for yourself)"),
    ("user://{principal}/devices", "My devices", "Devices in the context of a principal (`me` for yourself)"),
];

pub fn list() -> Vec<Value> {
    STATIC
        .iter()
        .map(|(uri, name, d)| json!({"uri": uri, "name": name, "description": d, "mimeType": "application/json"}))
        .collect()
}

pub fn templates() -> Vec<Value> {
    TEMPLATES
        .iter()
        .map(|(t, name, d)| json!({"uriTemplate": t, "name": name, "description": d, "mimeType": "application/json"}))
        .collect()
}

fn not_found(uri: &str) -> Error {
    Error::new(ErrorCode::NotFound, format!("no resource {uri}"))
}

/// `device://X/status` → ("device", "X", "status"); `ticket://X` → ("ticket", "X", "").
fn split(uri: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = uri.split_once("://")?;
    let (first, tail) = rest.split_once('/').unwrap_or((rest, ""));
    Some((scheme, first, tail))
}

pub async fn read(ctx: &Ctx, uri: &str) -> Result<Value, Error> {
    let (scheme, first, tail) = split(uri).ok_or_else(|| not_found(uri))?;
    match (scheme, first, tail) {
        ("devices", "", "") => call(ctx, "list_devices", json!({"limit": 500})).await,
        ("device", id, "status") if !id.is_empty() => call(ctx, "get_device_status", json!({"device_id": id})).await,
        ("device", id, "commands") if !id.is_empty() => {
            call(ctx, "list_device_commands", json!({"device_id": id})).await
        }
        ("device", id, "histories") if !id.is_empty() => {
            call(ctx, "search_device_histories", json!({"device_id": id, "limit": 500})).await
        }
        ("organization", "info", "") => call(ctx, "get_organization_info", json!({})).await,
        ("organization", "info", device) if !device.is_empty() => {
            let mut org = call(ctx, "get_organization_info", json!({})).await?;
            org["device"] = call(ctx, "get_device_status", json!({"device_id": device})).await?["device"].take();
            Ok(org)
        }
        ("incidents", "", "") => call(ctx, "list_incidents", json!({"limit": 500})).await,
        ("tickets", "", "") => call(ctx, "list_tickets", json!({"limit": 500})).await,
        ("ticket", id, "") if !id.is_empty() => call(ctx, "get_ticket", json!({"ticket_id": id})).await,
        ("spaces", "", "") => call(ctx, "list_spaces", json!({"limit": 500})).await,
        ("space", id, "devices") if !id.is_empty() => {
            call(ctx, "list_devices", json!({"space_id": id, "limit": 500})).await
        }
        ("fleet", "health", "") => call(ctx, "get_fleet_health", json!({})).await,
        ("events", "recent", "") => call(ctx, "list_events", json!({"limit": 100})).await,
        ("edge", "status", "") => edge_status(ctx).await,
        ("user", who, what @ ("preferences" | "devices")) => {
            let who = if who == "me" { ctx.principal.id.as_str() } else { who };
            if who != ctx.principal.id && ctx.principal.role < Role::Admin {
                return Err(Error::new(
                    ErrorCode::PermissionDenied,
                    "reading another principal's context needs the admin role",
                ));
            }
            let stored = {
                let (store, who) = (ctx.app.store.clone(), who.to_string());
                store.read(move |c| crate::store::context::get(c, &who)).await?.unwrap_or_else(|| json!({}))
            };
            if what == "preferences" {
                return Ok(json!({"principal": who, "context": stored}));
            }
            let mut ids: Vec<String> =
                stored.get("device_id").and_then(Value::as_str).map(String::from).into_iter().collect();
            if let Some(space) = stored.get("space_id") {
                let listed = call(ctx, "list_devices", json!({"space_id": space, "limit": 500})).await?;
                ids.extend(
                    listed["devices"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|d| d["id"].as_str().map(String::from)),
                );
            }
            ids.dedup();
            let all = ctx.app.cache.devices().await?;
            let list: Vec<Value> =
                all.value.iter().filter(|d| ids.iter().any(|i| d["id"] == i.as_str())).map(devices::summary).collect();
            Ok(json!({"principal": who, "devices": list}))
        }
        _ => Err(not_found(uri)),
    }
}

/// What `xyte-edge status` shows.
pub async fn edge_status(ctx: &Ctx) -> Result<Value, Error> {
    let app = &ctx.app;
    let sync = app.sync.get();
    let (events_rows, latest, outbox, devices_cached) = app
        .store
        .read(|c| {
            let rows: i64 = c.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))?;
            let latest = crate::store::events::latest_id(c)?;
            let outbox = crate::store::tasks::outbox_depth(c)?;
            let devices: i64 = c.query_row("SELECT COUNT(*) FROM cache WHERE resource = 'device'", [], |r| r.get(0))?;
            Ok((rows, latest, outbox, devices))
        })
        .await?;
    let cache_age_s = (sync.last_ok_ms > 0).then(|| (crate::store::now_ms() - sync.last_ok_ms) / 1000);
    Ok(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "env": app.env_label,
        "uptime_s": app.started.elapsed().as_secs(),
        "xyte": {"base_url": app.client.base_url(), "reachable": sync.reachable, "last_sync_at": crate::cache::rfc3339(sync.last_ok_ms),
                 "last_error": sync.last_error},
        "cache": {"devices": devices_cached, "age_s": cache_age_s},
        "outbox_depth": outbox,
        "event_log": {"rows": events_rows, "latest_id": latest},
        "clients": {"mcp_socket": app.mcp_clients.load(std::sync::atomic::Ordering::Relaxed)},
        "read_only": app.read_only,
        "uplink": app.uplink(),
    }))
}

/// The resource URIs whose content an event changes.
pub fn affected(e: &Event) -> Vec<String> {
    let mut uris = vec!["events://recent".to_string(), "edge://status".to_string()];
    if e.kind.starts_with("device.") || e.kind.starts_with("incident.") {
        uris.extend(["devices://".into(), "fleet://health".into(), "incidents://".into()]);
        if let Some(d) = &e.device_id {
            uris.push(format!("device://{d}/status"));
            uris.push(format!("device://{d}/histories"));
        }
        if let Some(s) = &e.space_id {
            uris.push(format!("space://{s}/devices"));
        }
    }
    if e.kind.starts_with("command.")
        && let Some(d) = &e.device_id
    {
        uris.push(format!("device://{d}/commands"));
    }
    if e.kind.starts_with("ticket.") {
        uris.push("tickets://".into());
        uris.push("fleet://health".into());
        if let Some(t) = e.data.get("ticket_id").and_then(Value::as_str) {
            uris.push(format!("ticket://{t}"));
        }
    }
    uris
}
