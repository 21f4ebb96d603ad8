//! Tickets and incidents: reads from the cache, writes straight to Xyte (with `dry_run`), cache invalidated after.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::page;
use super::schema::{Id, TimeArg, id_text};
use crate::cache::{Compact, Keys};
use crate::error::{Error, ErrorCode};
use crate::runtime::Ctx;
use crate::xyte::{IncidentQuery, Priority};

const P: Priority = Priority::Interactive;

#[derive(Deserialize, JsonSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IncidentStatus {
    Active,
    Closed,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListIncidents {
    /// `active` (default, from the cache) or `closed` (asks Xyte).
    pub status: Option<IncidentStatus>,
    /// critical, high, moderate, low or planning.
    pub priority: Option<String>,
    pub space_id: Option<Id>,
    pub device_id: Option<Id>,
    pub from: Option<TimeArg>,
    pub to: Option<TimeArg>,
    #[schemars(range(min = 1, max = 500))]
    pub limit: Option<u32>,
}

pub async fn list_incidents(ctx: &Ctx, a: ListIncidents) -> Result<Value, Error> {
    let (items, cached) = if a.status == Some(IncidentStatus::Closed) || a.from.is_some() || a.to.is_some() {
        let q = IncidentQuery {
            status: a.status.map(|s| if s == IncidentStatus::Active { "active".into() } else { "closed".into() }),
            priority: a.priority.clone(),
            space_id: a.space_id.as_ref().map(|s| s.0.clone()),
            from: a.from.map(|t| t.0),
            to: a.to.map(|t| t.0),
        };
        let list = ctx.app.client.list_incidents(q, P).await?;
        let mut keys = Keys::default();
        let items: Vec<Compact> =
            list.iter().map(|i| Compact::of(&serde_json::to_value(i).unwrap_or_default(), &mut keys)).collect();
        (std::sync::Arc::new(items), None)
    } else {
        let snap = ctx.app.cache.active_incidents().await?;
        (snap.value.clone(), Some(snap))
    };
    let filtered: Vec<&Compact> = items
        .iter()
        .filter(|i| a.priority.as_deref().is_none_or(|p| i["priority"] == p))
        .filter(|i| a.device_id.as_ref().is_none_or(|d| i["device_id"] == d.0.as_str()))
        .filter(|i| a.space_id.as_ref().is_none_or(|s| id_text(&i["space_id"]) == s.0))
        .collect();
    let (page_items, _, omitted) = page(&filtered, a.limit, None)?;
    let mut out = json!({"incidents": page_items, "total": filtered.len(), "omitted": omitted});
    // Closed incidents come from Xyte now, and have no `fetched_at`.
    match cached {
        Some(snap) => out = snap.stamp(out),
        None => out["stale"] = json!(false),
    }
    Ok(out)
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListTickets {
    /// Xyte lists open tickets; `open` is the only status it returns in bulk.
    pub status: Option<String>,
    #[schemars(range(min = 1, max = 500))]
    pub limit: Option<u32>,
}

pub async fn list_tickets(ctx: &Ctx, a: ListTickets) -> Result<Value, Error> {
    let snap = ctx.app.cache.open_tickets().await?;
    let all: Vec<&Compact> =
        snap.value.iter().filter(|t| a.status.as_deref().is_none_or(|s| t["status"] == s)).collect();
    let (items, _, omitted) = page(&all, a.limit, None)?;
    Ok(snap.stamp(json!({"tickets": items, "total": all.len(), "omitted": omitted})))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TicketRef {
    pub ticket_id: Id,
}

/// Dry runs check what a real call would find missing: the ticket must exist.
async fn existing_ticket(ctx: &Ctx, id: &str) -> Result<Value, Error> {
    ctx.app.cache.ticket(id).await.map(|t| t.value.to_value()).map_err(|e| match e.code {
        ErrorCode::NotFound => Error::invalid_params(format!("no ticket {id}")),
        _ => e,
    })
}

pub async fn get_ticket(ctx: &Ctx, a: TicketRef) -> Result<Value, Error> {
    let ticket = ctx.app.cache.ticket(&a.ticket_id.0).await?;
    Ok(ticket.stamp(json!({"ticket": ticket.value})))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTicket {
    pub ticket_id: Id,
    pub title: Option<String>,
    pub description: Option<String>,
    /// Validate and show what would be sent, without sending.
    pub dry_run: Option<bool>,
}

async fn after_ticket_write(ctx: &Ctx, id: &str) {
    ctx.app.cache.invalidate("ticket_full", Some(id)).await;
    ctx.app.cache.invalidate("ticket", None).await;
}

pub async fn update_ticket(ctx: &Ctx, a: UpdateTicket) -> Result<Value, Error> {
    if a.title.is_none() && a.description.is_none() {
        return Err(Error::invalid_params("give a title, a description, or both"));
    }
    let body = json!({"title": a.title, "description": a.description});
    if a.dry_run == Some(true) {
        existing_ticket(ctx, &a.ticket_id.0).await?;
        return Ok(
            json!({"dry_run": true, "would_send": {"method": "PUT", "path": format!("tickets/{}", a.ticket_id), "body": body}}),
        );
    }
    let result = ctx
        .app
        .client
        .update_ticket(&a.ticket_id.0, a.title.as_deref(), a.description.as_deref(), Priority::Command)
        .await?;
    after_ticket_write(ctx, &a.ticket_id.0).await;
    Ok(json!({"updated": true, "ticket": result}))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TicketAction {
    pub ticket_id: Id,
    pub dry_run: Option<bool>,
}

pub async fn mark_ticket_resolved(ctx: &Ctx, a: TicketAction) -> Result<Value, Error> {
    if a.dry_run == Some(true) {
        let t = existing_ticket(ctx, &a.ticket_id.0).await?;
        if t["status"] == "resolved" {
            return Err(Error::invalid_params(format!("ticket {} is already resolved", a.ticket_id)));
        }
        return Ok(
            json!({"dry_run": true, "would_send": {"method": "POST", "path": format!("tickets/{}/resolved", a.ticket_id)}}),
        );
    }
    ctx.app.client.resolve_ticket(&a.ticket_id.0, Priority::Command).await?;
    after_ticket_write(ctx, &a.ticket_id.0).await;
    Ok(json!({"resolved": true, "ticket_id": a.ticket_id}))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TicketMessage {
    pub ticket_id: Id,
    /// The message to add to the ticket's conversation.
    pub message: String,
    pub dry_run: Option<bool>,
}

pub async fn send_ticket_message(ctx: &Ctx, a: TicketMessage) -> Result<Value, Error> {
    if a.message.trim().is_empty() {
        return Err(Error::invalid_params("message must not be empty"));
    }
    if a.dry_run == Some(true) {
        existing_ticket(ctx, &a.ticket_id.0).await?;
        return Ok(
            json!({"dry_run": true, "would_send": {"method": "POST", "path": format!("tickets/{}/message", a.ticket_id), "body": {"message": a.message}}}),
        );
    }
    ctx.app.client.ticket_message(&a.ticket_id.0, &a.message, Priority::Command).await?;
    after_ticket_write(ctx, &a.ticket_id.0).await;
    Ok(json!({"sent": true, "ticket_id": a.ticket_id}))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseIncident {
    pub incident_id: Id,
    pub dry_run: Option<bool>,
}

pub async fn close_incident(ctx: &Ctx, a: CloseIncident) -> Result<Value, Error> {
    if a.dry_run == Some(true) {
        let active = ctx.app.cache.active_incidents().await?;
        if !active.value.iter().any(|i| id_text(&i["id"]) == a.incident_id.0) {
            return Err(Error::invalid_params(format!("no active incident {}", a.incident_id)));
        }
        return Ok(
            json!({"dry_run": true, "would_send": {"method": "DELETE", "path": format!("incidents/{}", a.incident_id)}}),
        );
    }
    ctx.app.client.close_incident(&a.incident_id.0, Priority::Command).await?;
    ctx.app.cache.invalidate("incident", None).await;
    Ok(json!({"closed": true, "incident_id": a.incident_id}))
}
