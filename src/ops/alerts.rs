//! Alerts as people and agents see them: `list_alerts` (what fires, what recently resolved, each with its messages
//! and their deliveries; the running silences; the rules and channels without their secrets) and the silences
//! (`silence_alerts`, `end_silence`). The alerter (`alerter/`) decides and sends; these read its records and add
//! silences, which it takes into account at once.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::schema::TimeArg;
use crate::alerts::Silence;
use crate::cache::rfc3339;
use crate::config::alerts::AlertRules;
use crate::config::values::duration_in;
use crate::error::{Error, ErrorCode};
use crate::runtime::Ctx;
use crate::store::alerts::{self as records, AlertRow, Delivery, SilenceRow};
use crate::store::{Durability, now_ms, tasks};

/// Resolved and told alerts are listed this long after they ended.
const RECENT_MS: i64 = 7 * 86_400_000;
/// A silence lasts at most this long: a maintenance window, not a way to switch a rule off (edit the file for that).
const SILENCE_MAX: Duration = Duration::from_secs(30 * 86_400);
/// The messages listed per alert, newest first.
const DELIVERIES_PER_ALERT: usize = 10;

#[derive(Deserialize, JsonSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Which {
    Firing,
    Resolved,
    All,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListAlerts {
    /// `firing`, `resolved` (resolved alerts and told event alerts of the last 7 days) or `all` (default: both).
    pub state: Option<Which>,
    /// Only this rule's alerts.
    pub rule: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

pub async fn list_alerts(ctx: &Ctx, a: ListAlerts) -> Result<Value, Error> {
    let now = now_ms();
    let rules = ctx.app.alert_rules();
    let (rows, silences, counts) = ctx
        .app
        .store
        .read(move |c| Ok((records::recent(c, now - RECENT_MS)?, records::silence_rows(c, now)?, records::counts(c)?)))
        .await?;
    let which = a.state.unwrap_or(Which::All);
    let wanted: Vec<&AlertRow> = rows
        .iter()
        .filter(|r| a.rule.as_deref().is_none_or(|rule| r.rule == rule))
        .filter(|r| match which {
            Which::All => true,
            Which::Firing => r.state == "firing",
            Which::Resolved => r.state != "firing",
        })
        .collect();
    let (page, next_cursor, omitted) = super::page(&wanted, a.limit, a.cursor.as_deref())?;
    let keys: Vec<(String, String)> = page.iter().map(|r| (r.rule.clone(), r.subject.key.clone())).collect();
    let deliveries: Vec<Vec<Delivery>> = ctx
        .app
        .store
        .read(move |c| {
            keys.iter().map(|(rule, subject)| records::of_alert(c, rule, subject, DELIVERIES_PER_ALERT)).collect()
        })
        .await?;
    let running: Vec<Silence> = silences.iter().map(|s| s.silence.clone()).collect();
    let alerts: Vec<Value> =
        page.iter().zip(deliveries).map(|(r, sent)| alert_json(r, &rules, &running, &sent, now)).collect();
    let mut out = json!({
        "alerts": alerts, "total": wanted.len(), "omitted": omitted,
        "silences": silences.iter().map(silence_json).collect::<Vec<_>>(),
        "rules": rules.rules.iter().map(|r| json!({"name": r.name, "condition": r.condition.name(),
            "severity": r.severity.as_str(), "channels": r.channels})).collect::<Vec<_>>(),
        "channels": rules.channels.values().map(|c| json!({"name": c.name, "type": c.kind.type_name(),
            "per_hour": c.per_hour})).collect::<Vec<_>>(),
        "deliveries": {"pending": counts.0, "sent": counts.1, "given_up": counts.2},
        "errors": rules.problems, "file": rules.path.display().to_string(),
    });
    if let Some(n) = next_cursor {
        out["next_cursor"] = json!(n);
    }
    Ok(out)
}

fn alert_json(r: &AlertRow, rules: &AlertRules, silences: &[Silence], sent: &[Delivery], now: i64) -> Value {
    let rule = rules.rules.iter().find(|x| x.name == r.rule);
    let silenced_by = silences.iter().find(|s| s.matches(&r.rule, &r.subject, now)).map(|s| s.id.clone());
    // `resolving` is the alerter's own step (the notice not queued yet): to people it has resolved.
    let state = if r.state == "resolving" { "resolved" } else { r.state.as_str() };
    json!({
        "rule": r.rule, "severity": rule.map(|x| x.severity.as_str()), "condition": rule.map(|x| x.condition.name()),
        "subject": r.subject, "state": state,
        "since": rfc3339(r.since), "fired_at": rfc3339(r.fired_at), "told_at": r.told_at.and_then(rfc3339),
        "resolved_at": r.resolved_at.and_then(rfc3339),
        "silenced_by": if r.state == "firing" { silenced_by } else { None },
        "deliveries": sent.iter().map(delivery_json).collect::<Vec<_>>(),
    })
}

fn delivery_json(d: &Delivery) -> Value {
    json!({
        "id": d.id, "channel": d.channel, "kind": d.notification["kind"], "state": d.state, "attempts": d.attempts,
        "created_at": rfc3339(d.created_at),
        "next_at": if d.state == "pending" { rfc3339(d.next_at) } else { None },
        "done_at": d.done_at.and_then(rfc3339), "last_error": d.last_error,
    })
}

fn silence_json(s: &SilenceRow) -> Value {
    let x = &s.silence;
    json!({"id": x.id, "rule": x.rule, "space": x.space, "device": x.device, "until": rfc3339(x.until), "by": x.by,
           "comment": s.comment, "created_at": rfc3339(s.created_at)})
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SilenceAlerts {
    /// Silence this rule's alerts (a rule name of the alerts file).
    pub rule: Option<String>,
    /// Silence the alerts of devices in this space: a path prefix such as `HQ Berlin/Floor 3` (a site, floor or
    /// room; any case).
    pub space: Option<String>,
    /// Silence this device's alerts (its id).
    pub device: Option<String>,
    /// Until this time (ISO-8601), at most 30 days ahead. Give this or `duration`.
    pub until: Option<TimeArg>,
    /// For this long: `90m`, `2h`, `1d` (1 minute to 30 days). Give this or `until`.
    pub duration: Option<String>,
    /// Why, for the others (a maintenance window, a projector swap).
    pub comment: Option<String>,
    pub dry_run: Option<bool>,
}

pub async fn silence_alerts(ctx: &Ctx, a: SilenceAlerts) -> Result<Value, Error> {
    let now = now_ms();
    let nonempty = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let (rule, space, device) = (nonempty(a.rule), nonempty(a.space), nonempty(a.device));
    if rule.is_none() && space.is_none() && device.is_none() {
        return Err(Error::invalid_params("say what to silence: rule, space or device (or several)"));
    }
    let rules = ctx.app.alert_rules();
    if let Some(r) = &rule
        && !rules.rules.iter().any(|x| &x.name == r)
    {
        let known: Vec<&str> = rules.rules.iter().map(|x| x.name.as_str()).collect();
        return Err(Error::invalid_params(format!(
            "no alert rule {r:?} (rules: {})",
            if known.is_empty() { "none configured".into() } else { known.join(", ") }
        )));
    }
    let until = match (a.until, a.duration.as_deref()) {
        (Some(t), None) => (t.0.unix_timestamp_nanos() / 1_000_000) as i64,
        (None, Some(d)) => {
            let d = duration_in(d, Duration::from_secs(60), SILENCE_MAX)
                .map_err(|e| Error::invalid_params(format!("duration: {e}")))?;
            now + d.as_millis() as i64
        }
        _ => return Err(Error::invalid_params("give either until or duration")),
    };
    if until <= now {
        return Err(Error::invalid_params("until is not in the future"));
    }
    if until > now + SILENCE_MAX.as_millis() as i64 {
        return Err(Error::invalid_params("a silence lasts at most 30 days (to stop a rule, edit the alerts file)"));
    }
    let comment = nonempty(a.comment);
    if comment.as_ref().is_some_and(|c| c.chars().count() > 500) {
        return Err(Error::invalid_params("comment: at most 500 characters"));
    }
    let silence = Silence {
        id: format!("sil_{}", &tasks::new_id()[4..]),
        rule,
        space,
        device,
        until,
        by: ctx.principal.id.clone(),
    };
    let firing = ctx.app.store.read(records::firing).await?;
    let covered: Vec<&str> =
        firing.iter().filter(|r| silence.matches(&r.rule, &r.subject, now)).map(|r| r.subject.key.as_str()).collect();
    let row = SilenceRow { silence: silence.clone(), created_at: now, comment: comment.clone() };
    if a.dry_run == Some(true) {
        return Ok(json!({"dry_run": true, "would_silence": silence_json(&row), "silenced": covered}));
    }
    ctx.app.store.write(Durability::Full, move |c| records::add_silence(c, &silence, now, comment.as_deref())).await?;
    ctx.app.alerts_wake.notify_one();
    Ok(json!({"silence": silence_json(&row), "silenced": covered}))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EndSilence {
    /// The silence's id (`sil_…`, as list_alerts shows it).
    pub id: String,
    pub dry_run: Option<bool>,
}

pub async fn end_silence(ctx: &Ctx, a: EndSilence) -> Result<Value, Error> {
    let now = now_ms();
    let id = a.id.clone();
    let running = ctx.app.store.read(move |c| records::silences(c, now)).await?;
    if !running.iter().any(|s| s.id == id) {
        return Err(Error::new(ErrorCode::NotFound, format!("no running silence {:?} (list_alerts shows them)", a.id)));
    }
    if a.dry_run == Some(true) {
        return Ok(json!({"dry_run": true, "id": a.id, "would_end": true}));
    }
    let ended = ctx.app.store.write(Durability::Full, move |c| records::end_silence(c, &id, now)).await?;
    ctx.app.alerts_wake.notify_one();
    Ok(json!({"id": a.id, "ended": ended}))
}
