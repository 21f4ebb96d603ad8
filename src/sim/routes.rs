//! The organization API routes of the simulator, answering from [`World`]. Pure request → reply:
//! faults, timing and the wire are handled in `server.rs`.

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::faults::{CommandKey, Faults, Pagination};
use super::world::{SimCommand, SimDevice, World, ts};
pub use crate::http::query::Query;

pub struct Reply {
    pub status: u16,
    pub body: Option<Value>,
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn ok(body: Value) -> Reply {
        Reply { status: 200, body: Some(body), headers: Vec::new() }
    }

    pub fn status(status: u16, body: Value) -> Reply {
        Reply { status, body: Some(body), headers: Vec::new() }
    }

    pub fn error(status: u16, message: impl Into<String>) -> Reply {
        Reply::status(status, json!({"error": message.into()}))
    }

    pub fn no_content() -> Reply {
        Reply { status: 204, body: None, headers: Vec::new() }
    }

    fn success() -> Reply {
        Reply::ok(json!({"success": true}))
    }
}

#[derive(Clone, Copy)]
enum Style {
    NextPage,
    HasNextPage,
    Both,
}

/// One page of `items` in the continuation style of the endpoint; `per_page` above `max` is a 422 as documented.
fn page(items: Vec<Value>, q: &Query, default: usize, max: usize, style: Style) -> Reply {
    let per_page = match q.get("per_page").or(q.get("page_size")).map(str::parse::<usize>) {
        None => default,
        Some(Ok(n)) if (1..=max).contains(&n) => n,
        Some(_) => return Reply::error(422, format!("per_page must be between 1 and {max}")),
    };
    let page = match q.get("page").map(str::parse::<usize>) {
        None => 1,
        Some(Ok(n)) if n >= 1 => n,
        Some(_) => return Reply::error(422, "page must be a positive integer"),
    };
    let start = (page - 1).saturating_mul(per_page).min(items.len());
    let end = (start + per_page).min(items.len());
    let more = end < items.len();
    let slice: Vec<Value> = items[start..end].to_vec();
    let next = if more { json!(page + 1) } else { Value::Null };
    Reply::ok(match style {
        Style::NextPage => json!({"items": slice, "next_page": next}),
        Style::HasNextPage => json!({"items": slice, "has_next_page": more}),
        Style::Both => json!({"items": slice, "next_page": next, "has_next_page": more}),
    })
}

fn list_style(f: &Faults) -> Style {
    match f.pagination {
        Pagination::NextPage => Style::NextPage,
        Pagination::HasNextPage => Style::HasNextPage,
        Pagination::Both => Style::Both,
    }
}

/// Epoch seconds or ISO-8601, as real clients send either.
fn time_param(q: &Query, key: &str) -> Result<Option<i64>, Reply> {
    let Some(v) = q.get(key) else { return Ok(None) };
    if let Ok(n) = v.parse::<i64>() {
        return Ok(Some(n));
    }
    OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
        .map(|t| Some(t.unix_timestamp()))
        .map_err(|_| Reply::error(422, format!("{key} must be epoch seconds or an ISO-8601 time")))
}

fn body_str<'a>(body: &'a Option<Value>, key: &str) -> Option<&'a str> {
    body.as_ref().and_then(|b| b.get(key)).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn created_epoch(v: &Value) -> i64 {
    v["created_at"]
        .as_str()
        .and_then(|s| OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok())
        .map(|t| t.unix_timestamp())
        .unwrap_or(0)
}

pub fn handle(
    w: &mut World,
    faults: &Faults,
    method: &str,
    segs: &[&str],
    q: &Query,
    body: Option<Value>,
    received: &mut Vec<(String, Value)>,
) -> Reply {
    let now = OffsetDateTime::now_utc();
    match (method, segs) {
        ("GET", ["info"]) => {
            let online = w.devices.iter().filter(|d| d.status == "online").count();
            let mut org = w.org.clone();
            org["statistics"] = json!({"devices": w.devices.len(), "online_devices": online, "users": w.users.len(),
                "groups": w.groups.len(), "spaces": w.spaces.len(),
                "open_tickets": w.tickets.iter().filter(|t| t["status"] == "open").count(),
                "open_incidents": w.incidents.iter().filter(|i| i["status"] == "active").count(), "pending_invoices": 0});
            Reply::ok(org)
        }
        ("GET", ["devices"]) => {
            let space = q.get("space_id").and_then(|s| s.parse::<i64>().ok()).map(|s| w.space_and_below(s));
            let name = q.get("name").map(str::to_lowercase);
            let items = w
                .devices
                .iter()
                .filter(|d| space.as_ref().is_none_or(|ids| ids.contains(&d.space_id)))
                .filter(|d| name.as_ref().is_none_or(|n| d.name.to_lowercase().contains(n)))
                .map(|d| w.device_json(d))
                .collect();
            page(items, q, 100, 100, list_style(faults))
        }
        ("GET", ["devices", "histories"]) => histories(w, q, now),
        ("POST", ["devices", "claim"]) => claim(w, body, now),
        ("GET", ["devices", "notes"]) => notes(w, "device", None, q),
        ("GET", ["spaces", "notes"]) => notes(w, "space", None, q),
        ("GET", ["devices", id]) => match w.device(id) {
            Some(d) => Reply::ok(w.device_json(d)),
            None => Reply::error(404, format!("Unknown device {id}")),
        },
        ("PATCH", ["devices", id]) => patch_device(w, id, body),
        ("DELETE", ["devices", id]) => {
            if w.remove_device(id) {
                Reply::success()
            } else {
                Reply::error(404, format!("Unknown device {id}"))
            }
        }
        ("POST", ["devices", id, "move"]) => {
            let Some(space) = body.as_ref().and_then(|b| b["space_id"].as_i64()) else {
                return Reply::error(422, "space_id is required");
            };
            if w.space(space).is_none() {
                return Reply::error(404, format!("Unknown space {space}"));
            }
            match w.device_index.get(*id).copied() {
                Some(i) => {
                    w.devices[i].space_id = space;
                    Reply::success()
                }
                None => Reply::error(404, format!("Unknown device {id}")),
            }
        }
        ("POST", ["devices", id, "merge" | "split" | "suspend_incidents" | "resume_incidents"]) => {
            if w.device(id).is_some() { Reply::success() } else { Reply::error(404, format!("Unknown device {id}")) }
        }
        ("GET", ["devices", id, "commands"]) => {
            if w.device(id).is_none() {
                return Reply::error(404, format!("Unknown device {id}"));
            }
            let status = q.get("status");
            let items = w
                .commands
                .get(*id)
                .map(|l| l.iter().filter(|c| status.is_none_or(|s| c.status == s)).map(SimCommand::json).collect())
                .unwrap_or_default();
            page(items, q, 100, 1000, Style::HasNextPage)
        }
        ("POST", ["devices", id, "commands"]) => {
            let reply = send_command(w, faults, id, &body, now);
            if reply.status == 200 {
                received.push((id.to_string(), body.unwrap_or(Value::Null)));
            }
            reply
        }
        ("DELETE", ["devices", id, "commands", cid]) => {
            let Some(c) = w.commands.get_mut(*id).and_then(|l| l.iter_mut().find(|c| c.id == *cid)) else {
                return Reply::error(404, format!("Unknown command {cid}"));
            };
            if c.is_terminal() {
                return Reply::error(422, format!("Command is already {}", c.status));
            }
            c.status = "aborted".into();
            c.updated_at = now;
            Reply::ok(c.json())
        }
        ("GET", ["devices" | "spaces", id, "notes"]) => {
            notes(w, if segs[0] == "devices" { "device" } else { "space" }, Some(id), q)
        }
        ("POST", ["devices" | "spaces", id, "notes"]) => match body_str(&body, "content") {
            Some(content) => {
                Reply::ok(w.add_note(if segs[0] == "devices" { "device" } else { "space" }, id, content, now))
            }
            None => Reply::error(422, "content is required"),
        },
        ("DELETE", ["devices" | "spaces", _, "notes", nid]) => {
            let before = w.notes.len();
            w.notes.retain(|n| !id_is(&n["id"], nid));
            if w.notes.len() < before { Reply::success() } else { Reply::error(404, format!("Unknown note {nid}")) }
        }
        ("GET", ["spaces"]) => {
            let parent = q.get("parent_id").and_then(|p| p.parse::<i64>().ok());
            let name = q.get("name").map(str::to_lowercase);
            let kind = q.get("space_type");
            let path = q.get("path_includes").map(str::to_lowercase);
            let items = w
                .spaces
                .iter()
                .filter(|s| parent.is_none_or(|p| s.parent_id == Some(p)))
                .filter(|s| name.as_ref().is_none_or(|n| s.name.to_lowercase().contains(n)))
                .filter(|s| kind.is_none_or(|k| s.space_type == k))
                .filter(|s| path.as_ref().is_none_or(|p| s.full_path.to_lowercase().contains(p)))
                .map(|s| s.json())
                .collect();
            page(items, q, 100, 100, list_style(faults))
        }
        ("POST", ["spaces"]) => create_space(w, body, now),
        ("POST", ["spaces", "find_or_create"]) => find_or_create(w, body, now),
        ("GET", ["spaces", id]) => match id.parse().ok().and_then(|i| w.space(i)) {
            Some(s) => Reply::ok(s.json()),
            None => Reply::error(404, format!("Unknown space {id}")),
        },
        ("PUT" | "PATCH", ["spaces", id]) => {
            let Some(s) = id.parse().ok().and_then(|i| w.space_mut(i)) else {
                return Reply::error(404, format!("Unknown space {id}"));
            };
            if let Some(name) = body_str(&body, "name") {
                s.full_path = format!("{}{name}", s.full_path.strip_suffix(s.name.as_str()).unwrap_or(""));
                s.name = name.to_string();
            }
            if let Some(config) = body.as_ref().and_then(|b| b.get("config")) {
                s.config = config.clone();
            }
            Reply::ok(s.json())
        }
        ("DELETE", ["spaces", id]) => {
            let Ok(sid) = id.parse::<i64>() else { return Reply::error(404, format!("Unknown space {id}")) };
            if w.devices.iter().any(|d| d.space_id == sid) || w.spaces.iter().any(|s| s.parent_id == Some(sid)) {
                return Reply::error(422, "Space is not empty");
            }
            if w.remove_space(sid) { Reply::success() } else { Reply::error(404, format!("Unknown space {id}")) }
        }
        ("GET", ["incidents"]) => incidents(w, q, now),
        ("DELETE", ["incidents", id]) => match w.incidents.iter_mut().find(|i| i["id"] == *id) {
            Some(i) => {
                i["status"] = json!("closed");
                i["updated_at"] = json!(ts(now));
                Reply::success()
            }
            None => Reply::error(404, format!("Unknown incident {id}")),
        },
        ("GET", ["tickets"]) => Reply::ok(Value::Array(
            w.tickets
                .iter()
                .filter(|t| t["status"] == "open")
                .map(|t| {
                    let mut t = t.clone();
                    t.as_object_mut().map(|o| o.remove("comments"));
                    t
                })
                .collect(),
        )),
        ("GET", ["tickets", id]) => match w.tickets.iter().find(|t| t["id"] == *id) {
            Some(t) => Reply::ok(t.clone()),
            None => Reply::error(404, format!("Unknown ticket {id}")),
        },
        ("PUT", ["tickets", id]) => {
            let Some(t) = w.tickets.iter_mut().find(|t| t["id"] == *id) else {
                return Reply::error(404, format!("Unknown ticket {id}"));
            };
            let (title, description) = (body_str(&body, "title"), body_str(&body, "description"));
            if title.is_none() && description.is_none() {
                return Reply::error(422, "title or description is required");
            }
            if let Some(v) = title {
                t["title"] = json!(v);
            }
            if let Some(v) = description {
                t["description"] = json!(v);
            }
            Reply::ok(t.clone())
        }
        ("POST", ["tickets", id, "resolved"]) => match w.tickets.iter_mut().find(|t| t["id"] == *id) {
            Some(t) if t["status"] == "resolved" => Reply::error(403, "Cannot move from resolved to resolved"),
            Some(t) => {
                t["status"] = json!("resolved");
                Reply::success()
            }
            None => Reply::error(404, format!("Unknown ticket {id}")),
        },
        ("POST", ["tickets", id, "message"]) => {
            let Some(message) =
                q.get("message").map(String::from).or_else(|| body_str(&body, "message").map(String::from))
            else {
                return Reply::error(422, "message is required");
            };
            let Some(t) = w.tickets.iter_mut().find(|t| t["id"] == *id) else {
                return Reply::error(404, format!("Unknown ticket {id}"));
            };
            let n = t["comments"].as_array().map(Vec::len).unwrap_or(0);
            let comment = json!({"id": 20_000 + n, "text": message, "created_at": ts(now), "system": false,
                                 "user": "API", "owner": "Northwind Traders", "owner_type": "organization"});
            match t["comments"].as_array_mut() {
                Some(list) => list.push(comment),
                None => t["comments"] = json!([comment]),
            }
            Reply::success()
        }
        ("GET", ["models"]) => {
            let search = q.get("search").map(str::to_lowercase);
            let items = w
                .models
                .iter()
                .filter(|m| search.as_ref().is_none_or(|s| m.spec.name.to_lowercase().contains(s)))
                .map(|m| m.json())
                .collect();
            page(items, q, 100, 100, Style::NextPage)
        }
        ("GET", ["models", id]) => match w.models.iter().find(|m| m.id == *id) {
            Some(m) => Reply::ok(m.json()),
            None => Reply::error(404, format!("Unknown model {id}")),
        },
        ("GET", [coll @ ("users" | "groups" | "licenses" | "edges" | "assets")]) => {
            let items = collection(w, coll).clone();
            let items = if *coll == "licenses" { filter_licenses(items, q) } else { Ok(items) };
            match items {
                Ok(items) => page(items, q, 100, 100, Style::NextPage),
                Err(r) => r,
            }
        }
        ("GET", [coll @ ("users" | "groups" | "assets"), id]) => {
            match collection(w, coll).iter().find(|v| id_is(&v["id"], id)) {
                Some(v) => Reply::ok(v.clone()),
                None => Reply::error(404, format!("Unknown {} {id}", coll.trim_end_matches('s'))),
            }
        }
        ("POST", [coll @ ("users" | "groups" | "assets")]) => {
            let Some(name) = body_str(&body, if *coll == "users" { "email" } else { "name" }).map(String::from) else {
                return Reply::error(422, if *coll == "users" { "email is required" } else { "name is required" });
            };
            let list = collection_mut(w, coll);
            let id = 700 + list.len();
            let mut item = body.unwrap_or(json!({}));
            item["id"] = json!(id);
            if *coll == "users" {
                item["email"] = json!(name);
                item["active"] = json!(true);
            }
            list.push(item.clone());
            Reply::ok(item)
        }
        ("PUT", [coll @ ("groups" | "assets"), id]) => {
            let Some(item) = collection_mut(w, coll).iter_mut().find(|v| id_is(&v["id"], id)) else {
                return Reply::error(404, format!("Unknown {} {id}", coll.trim_end_matches('s')));
            };
            if let Some(Value::Object(changes)) = body {
                for (k, v) in changes {
                    item[k] = v;
                }
            }
            Reply::ok(item.clone())
        }
        ("DELETE", [coll @ ("groups" | "assets"), id]) => {
            let list = collection_mut(w, coll);
            let before = list.len();
            list.retain(|v| !id_is(&v["id"], id));
            if list.len() < before {
                Reply::success()
            } else {
                Reply::error(404, format!("Unknown {} {id}", coll.trim_end_matches('s')))
            }
        }
        ("POST", ["users", id, "deactivate" | "resend_welcome"])
        | ("POST", ["groups", id, "add_users" | "remove_users" | "add_external_user"]) => {
            let coll = segs[0];
            if collection(w, coll).iter().any(|v| id_is(&v["id"], id)) {
                Reply::success()
            } else {
                Reply::error(404, format!("Unknown {} {id}", coll.trim_end_matches('s')))
            }
        }
        ("GET", ["assets", "labels", category]) => match *category {
            "manufacturer" | "device_model" | "device_type" | "status" => {
                Reply::ok(json!({"items": [{"id": 1, "name": "Various"}, {"id": 2, "name": "Accessory"}]}))
            }
            _ => Reply::error(422, "category must be manufacturer, device_model, device_type or status"),
        },
        ("POST", ["edges" | "edge", "devices", "start_claim" | "start_ping"]) => {
            if body_str(&body, "proxy_id").is_none() {
                return Reply::error(400, "Must provide proxy id");
            }
            if body_str(&body, "device_ip").is_none() {
                return Reply::error(422, "device_ip is required");
            }
            Reply::no_content()
        }
        ("GET", ["edges" | "edge", "devices", "get_claim_status"]) => edge_status(q, "result", "success"),
        ("GET", ["edges" | "edge", "devices", "get_ping_status"]) => edge_status(q, "status", "reachable"),
        ("POST", ["edges" | "edge", "devices", id, "update_hostname"]) => {
            if body_str(&body, "device_ip").is_none() {
                return Reply::error(400, "device_ip is required");
            }
            if w.device(id).is_some() {
                Reply::success()
            } else {
                Reply::error(404, "Device not found in the organization")
            }
        }
        _ => Reply::error(404, format!("Unknown route: {method} /{}", segs.join("/"))),
    }
}

/// Ids of the smaller collections are numbers; paths carry them as text.
fn id_is(v: &Value, id: &str) -> bool {
    match v {
        Value::Number(n) => n.as_i64().is_some_and(|n| id.parse() == Ok(n)),
        Value::String(s) => s == id,
        _ => false,
    }
}

fn edge_status(q: &Query, key: &str, value: &str) -> Reply {
    if q.get("proxy_id").is_none() || q.get("device_ip").is_none() {
        return Reply::error(422, "proxy_id and device_ip are required");
    }
    Reply::ok(json!({ key: value }))
}

fn collection<'a>(w: &'a World, name: &str) -> &'a Vec<Value> {
    match name {
        "users" => &w.users,
        "groups" => &w.groups,
        "licenses" => &w.licenses,
        "edges" => &w.edges,
        _ => &w.assets,
    }
}

fn collection_mut<'a>(w: &'a mut World, name: &str) -> &'a mut Vec<Value> {
    match name {
        "users" => &mut w.users,
        "groups" => &mut w.groups,
        "licenses" => &mut w.licenses,
        "edges" => &mut w.edges,
        _ => &mut w.assets,
    }
}

fn filter_licenses(items: Vec<Value>, q: &Query) -> Result<Vec<Value>, Reply> {
    let Some(states) = q.get("state").or(q.get("state[]")) else { return Ok(items) };
    let wanted: Vec<&str> = states.split(',').map(str::trim).collect();
    const KNOWN: &[&str] = &["available", "inuse", "remove", "error", "disabled", "renew"];
    if let Some(bad) = wanted.iter().find(|s| !KNOWN.contains(s)) {
        return Err(Reply::error(422, format!("invalid state {bad}")));
    }
    Ok(items.into_iter().filter(|l| wanted.iter().any(|s| l["state"] == *s)).collect())
}

fn notes(w: &World, kind: &str, owner: Option<&str>, q: &Query) -> Reply {
    let items =
        w.notes.iter().filter(|n| n["kind"] == kind && owner.is_none_or(|o| n["owner_id"] == o)).cloned().collect();
    page(items, q, 100, 100, Style::NextPage)
}

fn histories(w: &World, q: &Query, now: OffsetDateTime) -> Reply {
    let (from, to) = match (time_param(q, "from"), time_param(q, "to")) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let to = to.unwrap_or(now.unix_timestamp());
    let from = from.unwrap_or(to - 7 * 86_400);
    if from > to {
        return Reply::error(422, "from must be before to");
    }
    if to - from > 31 * 86_400 {
        return Reply::error(422, "The time window may be at most 31 days");
    }
    let device = q.get("device_id");
    let space = q.get("space_id").and_then(|s| s.parse::<i64>().ok());
    let name = q.get("name").map(str::to_lowercase);
    let status = q.get("status");
    let lo = w.histories.partition_point(|(t, _)| *t < from);
    let hi = w.histories.partition_point(|(t, _)| *t <= to);
    let items = w.histories[lo..hi]
        .iter()
        .map(|(_, row)| row)
        .filter(|r| device.is_none_or(|d| r["device_id"] == d))
        .filter(|r| space.is_none_or(|s| r["space_id"] == s))
        .filter(|r| name.as_ref().is_none_or(|n| r["name"].as_str().is_some_and(|x| x.to_lowercase().contains(n))))
        // `status` filters on the device's current status, not the row's, as Xyte does.
        .filter(|r| {
            status.is_none_or(|s| r["device_id"].as_str().and_then(|d| w.device(d)).is_some_and(|d| d.status == s))
        })
        .cloned()
        .collect();
    page(items, q, 100, 1000, Style::HasNextPage)
}

fn incidents(w: &World, q: &Query, now: OffsetDateTime) -> Reply {
    let (from, to) = match (time_param(q, "from"), time_param(q, "to")) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    // Both omitted: the last week, as documented; from=0 means unbounded.
    let (from, to) = match (from, to) {
        (None, None) => (now.unix_timestamp() - 7 * 86_400, now.unix_timestamp()),
        (f, t) => (f.unwrap_or(0), t.unwrap_or(i64::MAX)),
    };
    let space = q.get("space_id").and_then(|s| s.parse::<i64>().ok()).map(|s| w.space_and_below(s));
    let items = w
        .incidents
        .iter()
        .filter(|i| (from..=to).contains(&created_epoch(i)))
        .filter(|i| {
            ["status", "priority", "device_id", "title", "issue", "device_model", "partner_name"]
                .iter()
                .all(|k| q.get(k).is_none_or(|v| i[*k] == v))
        })
        .filter(|i| space.as_ref().is_none_or(|ids| i["space_id"].as_i64().is_some_and(|s| ids.contains(&s))))
        .rev()
        .cloned()
        .collect();
    page(items, q, 100, 500, Style::HasNextPage)
}

fn send_command(w: &mut World, faults: &Faults, id: &str, body: &Option<Value>, now: OffsetDateTime) -> Reply {
    let Some(device) = w.device(id) else { return Reply::error(404, format!("Unknown device {id}")) };
    let commands = (w.models[device.model].spec.commands)();
    let list = commands.as_array().cloned().unwrap_or_default();
    let by_command = body_str(body, "command");
    let by_name = body_str(body, "name");
    let key = match faults.command_key {
        CommandKey::Command => by_command,
        CommandKey::Name => by_name,
        CommandKey::Both => by_command.or(by_name),
    };
    let friendly = body_str(body, "friendly_name");
    let found = list
        .iter()
        .find(|c| key.is_some_and(|k| c["name"] == k))
        .or_else(|| list.iter().find(|c| friendly.is_some_and(|f| c["friendly_name"] == f)));
    let Some(spec) = found else { return Reply::error(422, "Either a valid command or friendly_name is required") };
    let params = body.as_ref().and_then(|b| b.get("extra_params")).cloned().unwrap_or(json!({}));
    if !params.is_object() {
        return Reply::error(422, "extra_params must be an object");
    }
    for field in spec["custom_fields"].as_array().into_iter().flatten() {
        let name = field["name"].as_str().unwrap_or("");
        let value = params.get(name);
        if field["required"] == true && value.is_none() {
            return Reply::error(422, format!("extra_params.{name} is required"));
        }
        if let (Some(v), Some(options)) = (value, field["options"].as_array())
            && !options.contains(v)
        {
            return Reply::error(422, format!("extra_params.{name} must be one of {}", Value::Array(options.clone())));
        }
    }
    let file_id = body_str(body, "file_id").map(String::from);
    if spec["with_file"] == true && file_id.is_none() {
        return Reply::error(422, format!("{} requires a file_id", spec["name"].as_str().unwrap_or("this command")));
    }
    let cmd = SimCommand {
        id: w.rng.uuid(),
        name: spec["name"].as_str().unwrap_or_default().to_string(),
        friendly_name: spec["friendly_name"].as_str().unwrap_or_default().to_string(),
        status: "pending".into(),
        params,
        message: None,
        file_id,
        created_at: now,
        updated_at: now,
        next_step: w.tick + 1,
    };
    let reply = cmd.json();
    w.commands.entry(id.to_string()).or_default().insert(0, cmd);
    Reply::ok(reply)
}

fn patch_device(w: &mut World, id: &str, body: Option<Value>) -> Reply {
    let Some(&idx) = w.device_index.get(id) else { return Reply::error(404, format!("Unknown device {id}")) };
    let Some(Value::Object(changes)) = body else { return Reply::error(422, "a JSON object body is required") };
    const ALLOWED: &[&str] = &[
        "configuration",
        "custom_parameters",
        "name",
        "device_host_address",
        "sub_model",
        "sn",
        "mac",
        "custom_model_name",
        "custom_vendor_name",
        "skip_connectivity_check",
    ];
    if let Some(bad) = changes.keys().find(|k| !ALLOWED.contains(&k.as_str())) {
        return Reply::error(422, format!("{bad} cannot be updated"));
    }
    let d = &mut w.devices[idx];
    for (k, v) in changes {
        match (k.as_str(), v.as_str()) {
            ("name", Some(s)) if !s.trim().is_empty() => d.name = s.to_string(),
            ("name", _) => return Reply::error(422, "name can't be blank"),
            ("sn", Some(s)) => d.sn = s.to_string(),
            ("mac", Some(s)) => d.mac = Some(s.to_string()),
            ("skip_connectivity_check", _) => {}
            _ => {
                d.extra.insert(k, v);
            }
        }
    }
    Reply::ok(w.device_json(&w.devices[idx]))
}

fn claim(w: &mut World, body: Option<Value>, now: OffsetDateTime) -> Reply {
    let Some(space_id) = body.as_ref().and_then(|b| b["space_id"].as_i64()) else {
        return Reply::error(422, "space_id is required");
    };
    if w.space(space_id).is_none() {
        return Reply::error(422, format!("Unknown space {space_id}"));
    }
    let Some(name) = body_str(&body, "name").map(String::from) else { return Reply::error(422, "name is required") };
    let cloud_id = body_str(&body, "cloud_id").map(String::from);
    let (mac, sn) = (body_str(&body, "mac").map(String::from), body_str(&body, "sn").map(String::from));
    if cloud_id.is_none() && (mac.is_none() || sn.is_none()) {
        return Reply::error(422, "Provide either cloud_id, or mac and sn");
    }
    if w.devices.iter().any(|d| {
        (cloud_id.is_some() && d.cloud_id == cloud_id) || (sn.is_some() && Some(&d.sn) == sn.as_ref() && d.mac == mac)
    }) {
        return Reply::error(422, "Device is already claimed");
    }
    let model = w.rng.below(w.models.len());
    let device = SimDevice {
        id: w.rng.uuid(),
        name,
        sn: sn.unwrap_or_else(|| format!("CLM-{:05}", w.rng.below(100_000))),
        mac,
        cloud_id,
        status: "offline".into(),
        last_seen_at: now,
        state: serde_json::Map::new(),
        model,
        space_id,
        firmware: "1.0.0".into(),
        details: Value::Null,
        held: false,
        extra: serde_json::Map::new(),
    };
    let reply = w.device_json(&device);
    w.add_device(device);
    Reply::ok(reply)
}

fn create_space(w: &mut World, body: Option<Value>, now: OffsetDateTime) -> Reply {
    let Some(name) = body_str(&body, "name").map(String::from) else { return Reply::error(422, "name is required") };
    let parent = body.as_ref().and_then(|b| b["parent_id"].as_i64()).unwrap_or(w.root_space);
    if w.space(parent).is_none() {
        return Reply::error(422, format!("Unknown parent space {parent}"));
    }
    if w.spaces.iter().any(|s| s.parent_id == Some(parent) && s.name == name) {
        return Reply::error(422, "Name has already been taken");
    }
    let config = body.as_ref().and_then(|b| b.get("config")).cloned().unwrap_or(json!({}));
    let id = w.add_space(name, parent, "room", now, config);
    Reply::ok(w.space(id).map(|s| s.json()).unwrap_or(Value::Null))
}

fn find_or_create(w: &mut World, body: Option<Value>, now: OffsetDateTime) -> Reply {
    let Some(path) = body_str(&body, "name").map(String::from) else { return Reply::error(422, "name is required") };
    let mut parent = body.as_ref().and_then(|b| b["parent_id"].as_i64()).unwrap_or(w.root_space);
    for part in path.split('/').map(str::trim).filter(|p| !p.is_empty()) {
        parent = match w.spaces.iter().find(|s| s.parent_id == Some(parent) && s.name == part) {
            Some(s) => s.id,
            None => w.add_space(part.to_string(), parent, "room", now, json!({})),
        };
    }
    Reply::ok(w.space(parent).map(|s| s.json()).unwrap_or(Value::Null))
}
