//! Tickets and incidents: reads from the cache, writes straight to Xyte (with `dry_run`), cache invalidated after.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::devices::merge;
use super::reads::{self, Snapshot};
use super::schema::{Id, id_text};
use super::{Ctx, page};
use crate::error::{Error, ErrorCode};
use crate::store::{Compact, Keys};
use crate::xyte::{IncidentQuery, Priority};

const P: Priority = Priority::Interactive;

pub async fn active_incidents(ctx: &Ctx) -> Result<Snapshot, Error> {
    let client = ctx.app.client.clone();
    reads::collection(ctx, "incident", || async move {
        let q = IncidentQuery { status: Some("active".into()), ..Default::default() };
        Ok(reads::keyed(&client.list_incidents(q, P).await?, |i| i.id.clone()))
    })
    .await
}

pub async fn open_tickets(ctx: &Ctx) -> Result<Snapshot, Error> {
    let client = ctx.app.client.clone();
    reads::collection(
        ctx,
        "ticket",
        || async move { Ok(reads::keyed(&client.list_tickets(P).await?, |t| t.id.clone())) },
    )
    .await
}

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
    pub from: Option<super::devices::TimeArg>,
    pub to: Option<super::devices::TimeArg>,
    #[schemars(range(min = 1, max = 500))]
    pub limit: Option<u32>,
}

pub async fn list_incidents(ctx: &Ctx, a: ListIncidents) -> Result<Value, Error> {
    let (items, provenance) = if a.status == Some(IncidentStatus::Closed) || a.from.is_some() || a.to.is_some() {
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
        (std::sync::Arc::new(items), json!({"stale": false}))
    } else {
        let snap = active_incidents(ctx).await?;
        let p = snap.provenance();
        (snap.items, p)
    };
    let filtered: Vec<&Compact> = items
        .iter()
        .filter(|i| a.priority.as_deref().is_none_or(|p| i["priority"] == p))
        .filter(|i| a.device_id.as_ref().is_none_or(|d| i["device_id"] == d.0.as_str()))
        .filter(|i| a.space_id.as_ref().is_none_or(|s| id_text(&i["space_id"]) == s.0))
        .collect();
    let (page_items, _, omitted) = page(&filtered, a.limit, None)?;
    let mut out = json!({"incidents": page_items, "total": filtered.len(), "omitted": omitted});
    merge(&mut out, provenance);
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
    let snap = open_tickets(ctx).await?;
    let all: Vec<&Compact> =
        snap.items.iter().filter(|t| a.status.as_deref().is_none_or(|s| t["status"] == s)).collect();
    let (items, _, omitted) = page(&all, a.limit, None)?;
    let mut out = json!({"tickets": items, "total": all.len(), "omitted": omitted});
    merge(&mut out, snap.provenance());
    Ok(out)
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TicketRef {
    pub ticket_id: Id,
}

/// One ticket with its comments (cache first), and its provenance.
async fn ticket(ctx: &Ctx, id: &str) -> Result<(Value, Value), Error> {
    let client = ctx.app.client.clone();
    let key = id.to_string();
    reads::entry(ctx, "ticket_full", id, || async move {
        Ok(serde_json::to_value(client.get_ticket(&key, P).await?).unwrap_or_default())
    })
    .await
}

/// Dry runs check what a real call would find missing: the ticket must exist.
async fn existing_ticket(ctx: &Ctx, id: &str) -> Result<Value, Error> {
    ticket(ctx, id).await.map(|(t, _)| t).map_err(|e| match e.code {
        ErrorCode::NotFound => Error::invalid_params(format!("no ticket {id}")),
        _ => e,
    })
}

pub async fn get_ticket(ctx: &Ctx, a: TicketRef) -> Result<Value, Error> {
    let (ticket, provenance) = ticket(ctx, &a.ticket_id.0).await?;
    let mut out = json!({"ticket": ticket});
    merge(&mut out, provenance);
    Ok(out)
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
    reads::invalidate(ctx, "ticket_full", Some(id)).await;
    reads::invalidate(ctx, "ticket", None).await;
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
        let active = active_incidents(ctx).await?;
        if !active.items.iter().any(|i| id_text(&i["id"]) == a.incident_id.0) {
            return Err(Error::invalid_params(format!("no active incident {}", a.incident_id)));
        }
        return Ok(
            json!({"dry_run": true, "would_send": {"method": "DELETE", "path": format!("incidents/{}", a.incident_id)}}),
        );
    }
    ctx.app.client.close_incident(&a.incident_id.0, Priority::Command).await?;
    reads::invalidate(ctx, "incident", None).await;
    Ok(json!({"closed": true, "incident_id": a.incident_id}))
}
