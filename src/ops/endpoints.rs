//! The Xyte endpoint catalogue as tools: list and describe entries, and `xyte_api_call` to run any of
//! them with arguments validated against the entry first. Reads need `viewer`; writes need `admin`; DELETEs also
//! need `confirm` equal to the entry's key.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::Access;
use crate::config::Role;
use crate::error::{Error, ErrorCode};
use crate::runtime::Ctx;
use crate::xyte::Priority;
use crate::xyte::endpoints::{self, Endpoint};

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListEndpoints {
    /// Only this group: organization, devices, commands, spaces, incidents, tickets, assets, edges, groups, users,
    /// licenses, models, notes.
    pub group: Option<String>,
    /// Only this HTTP method (GET, POST, PUT, PATCH, DELETE).
    pub method: Option<String>,
    /// Words that must all appear in the key, path or summary.
    pub search: Option<String>,
    /// true: only reads (GET); false: only writes.
    pub read_only: Option<bool>,
}

fn summary(ctx: &Ctx, e: &Endpoint) -> Value {
    json!({"key": e.key, "group": e.group, "method": e.method, "path": e.path, "summary": e.summary,
           "read_only": e.is_read(), "experimental": e.experimental, "enabled": enabled(ctx, e)})
}

fn enabled(ctx: &Ctx, e: &Endpoint) -> bool {
    !e.experimental || ctx.app.experimental_apis
}

pub async fn xyte_endpoints_list(ctx: &Ctx, a: ListEndpoints) -> Result<Value, Error> {
    let words: Vec<String> = a.search.as_deref().unwrap_or("").split_whitespace().map(str::to_lowercase).collect();
    let matches: Vec<Value> = endpoints::all()
        .iter()
        .filter(|e| a.group.as_deref().is_none_or(|g| e.group.eq_ignore_ascii_case(g)))
        .filter(|e| a.method.as_deref().is_none_or(|m| e.method.eq_ignore_ascii_case(m)))
        .filter(|e| a.read_only.is_none_or(|r| e.is_read() == r))
        .filter(|e| {
            let text = format!("{} {} {}", e.key, e.path, e.summary).to_lowercase();
            words.iter().all(|w| text.contains(w))
        })
        .map(|e| summary(ctx, e))
        .collect();
    let mut groups: Vec<&str> = endpoints::all().iter().map(|e| e.group.as_str()).collect();
    groups.dedup();
    Ok(json!({"total": matches.len(), "endpoints": matches, "groups": groups}))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DescribeEndpoint {
    /// The entry's key, e.g. `devices.move` (see xyte_endpoints_list).
    pub key: String,
}

/// The entry for `key`, or an error that suggests the nearest keys (by spelling, then by shared group or verb).
fn lookup(key: &str) -> Result<&'static Endpoint, Error> {
    endpoints::find(key).ok_or_else(|| {
        let wanted = key.trim().to_lowercase();
        let mut near: Vec<(usize, &str)> = endpoints::all()
            .iter()
            .map(|e| (crate::config::values::distance(&wanted, &e.key), e.key.as_str()))
            .filter(|(d, _)| *d <= 3)
            .collect();
        near.sort();
        let mut names: Vec<&str> = near.into_iter().map(|(_, k)| k).take(5).collect();
        if names.is_empty() {
            names = endpoints::all()
                .iter()
                .filter(|e| wanted.split(['.', '_', ' ']).any(|w| w.len() > 2 && e.key.contains(w)))
                .map(|e| e.key.as_str())
                .take(8)
                .collect();
        }
        let hint = if names.is_empty() { "xyte_endpoints_list shows every key".to_string() } else { names.join(", ") };
        Error::invalid_params(format!("no catalogue entry {key:?}; did you mean: {hint}"))
    })
}

pub async fn xyte_endpoint_describe(ctx: &Ctx, a: DescribeEndpoint) -> Result<Value, Error> {
    let e = lookup(&a.key)?;
    let mut out = e.describe();
    out["enabled"] = json!(enabled(ctx, e));
    out["required_role"] = json!(if e.is_read() { Role::Viewer } else { Role::Admin }.to_string());
    out["needs_confirm"] = json!(e.method == "DELETE");
    Ok(json!({"endpoint": out}))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiCall {
    /// The catalogue key, e.g. `devices.move` (see xyte_endpoints_list / xyte_endpoint_describe).
    pub key: String,
    /// Values for the `:name` segments of the path, e.g. `{"device_id": "…"}`.
    pub path_params: Option<Map<String, Value>>,
    /// Query parameters (scalars), e.g. `{"status": "active"}`.
    pub query: Option<Map<String, Value>>,
    /// JSON body fields for POST, PUT and PATCH.
    pub body: Option<Map<String, Value>>,
    /// For DELETE entries: must equal `key`, to show the deletion is meant.
    pub confirm: Option<String>,
    /// Validate and show the request that would be sent, without sending.
    pub dry_run: Option<bool>,
}

/// Role and mutation depend on the entry: GETs are reads any viewer may make; everything else is an admin write.
/// An unknown key is treated as a read here so the handler can answer with its "did you mean" error.
pub fn access(a: &ApiCall) -> Access {
    match endpoints::find(&a.key) {
        Some(e) if !e.is_read() => Access { role: Role::Admin, mutating: true },
        _ => Access { role: Role::Viewer, mutating: false },
    }
}

pub async fn xyte_api_call(ctx: &Ctx, a: ApiCall) -> Result<Value, Error> {
    let e = lookup(&a.key)?;
    if !enabled(ctx, e) {
        return Err(Error::invalid_params(format!(
            "{} is experimental (not in Xyte's published docs); set XYTE_EXPERIMENTAL_APIS=true to use it",
            e.key
        )));
    }
    let empty = Map::new();
    let request =
        e.build(a.path_params.as_ref().unwrap_or(&empty), a.query.as_ref().unwrap_or(&empty), a.body.as_ref())?;
    if e.method == "DELETE" && a.confirm.as_deref() != Some(e.key.as_str()) {
        return Err(Error::new(
            ErrorCode::InvalidParams,
            format!("{} deletes at Xyte; pass confirm={:?} to show it is meant", e.key, e.key),
        ));
    }
    if a.dry_run == Some(true) {
        return Ok(json!({"dry_run": true, "key": e.key, "would_send": request.describe()}));
    }
    let prio = if e.is_read() { Priority::Interactive } else { Priority::Command };
    let result = ctx.app.client.request(&request.method, &request.path, &request.query, request.body, prio).await?;
    if !e.is_read() {
        forget_cached(ctx, e, a.path_params.as_ref().unwrap_or(&empty)).await;
    }
    Ok(json!({"key": e.key, "method": e.method, "path": request.path, "result": result}))
}

/// A write through the raw API may change anything the cache holds for its group; the next read asks Xyte.
async fn forget_cached(ctx: &Ctx, e: &Endpoint, path_params: &Map<String, Value>) {
    let device = path_params.get("device_id").map(|v| v.as_str().map(String::from).unwrap_or(v.to_string()));
    match e.group.as_str() {
        "devices" | "edges" => ctx.app.cache.invalidate("device", None).await,
        "commands" => ctx.app.cache.invalidate("commands", device.as_deref()).await,
        "spaces" => ctx.app.cache.invalidate("space", None).await,
        "incidents" => ctx.app.cache.invalidate("incident", None).await,
        "tickets" => {
            ctx.app.cache.invalidate("ticket", None).await;
            ctx.app.cache.invalidate("ticket_full", None).await;
        }
        _ => {}
    }
}
