//! `get_device_analytics_report`: availability, offline episodes, command success and incidents for one device over
//! a period, computed on the gateway (Xyte has no analytics endpoint). The status timeline comes
//! from Xyte's history rows merged with the status changes the poller logged locally, so the report still works
//! (from local data, and says so) while Xyte is unreachable.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::devices::{device_or_context, existing_device};
use super::schema::Id;
use crate::cache::{Compact, rfc3339};
use crate::error::Error;
use crate::runtime::Ctx;
use crate::store::events::{self, EventFilter};
use crate::xyte::{HistoryQuery, IncidentQuery, Priority};

#[derive(Deserialize, JsonSchema, Clone, Copy, Default)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    #[serde(rename = "last_24_hours")]
    Last24Hours,
    #[default]
    #[serde(rename = "last_7_days")]
    Last7Days,
    #[serde(rename = "last_30_days")]
    Last30Days,
}

impl Period {
    fn duration(self) -> time::Duration {
        match self {
            Period::Last24Hours => time::Duration::hours(24),
            Period::Last7Days => time::Duration::days(7),
            Period::Last30Days => time::Duration::days(30),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Period::Last24Hours => "last_24_hours",
            Period::Last7Days => "last_7_days",
            Period::Last30Days => "last_30_days",
        }
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsArgs {
    /// The device (defaults to the context's device_id).
    pub device_id: Option<Id>,
    /// last_24_hours, last_7_days (default) or last_30_days.
    pub period: Option<Period>,
}

fn parse_ts(s: Option<&str>) -> Option<i64> {
    OffsetDateTime::parse(s?, &Rfc3339).ok().map(|t| t.unix_timestamp())
}

/// Status over time: `(epoch seconds, status)` sorted, each status holding until the next point.
type Timeline = Vec<(i64, String)>;

/// Availability and offline episodes over `[start, end]` from a timeline. Time before the first point is not
/// observed and left out of the percentage rather than guessed.
pub fn availability(timeline: &Timeline, start: i64, end: i64) -> Value {
    let (mut online, mut observed) = (0i64, 0i64);
    let mut episodes: Vec<(i64, i64, String)> = Vec::new();
    for (i, (at, status)) in timeline.iter().enumerate() {
        let from = (*at).max(start);
        let to = timeline.get(i + 1).map(|(t, _)| *t).unwrap_or(end).min(end);
        if to <= from {
            continue;
        }
        observed += to - from;
        if status == "online" {
            online += to - from;
        } else {
            match episodes.last_mut() {
                Some(last) if last.1 == from => last.1 = to,
                _ => episodes.push((from, to, status.clone())),
            }
        }
    }
    let longest = episodes.iter().map(|(f, t, _)| t - f).max().unwrap_or(0);
    let iso = |s: i64| OffsetDateTime::from_unix_timestamp(s).ok().and_then(|t| t.format(&Rfc3339).ok());
    let recent: Vec<Value> = episodes
        .iter()
        .rev()
        .take(10)
        .map(
            |(f, t, s)| json!({"from": iso(*f), "to": iso(*t), "status": s, "duration_s": t - f, "ongoing": *t == end}),
        )
        .collect();
    json!({
        "availability_pct": (observed > 0).then(|| (online as f64 * 1000.0 / observed as f64).round() / 10.0),
        "observed_s": observed,
        "offline_episodes": episodes.len(),
        "longest_offline_s": longest,
        "recent_offline_episodes": recent,
    })
}

pub async fn get_device_analytics_report(ctx: &Ctx, a: AnalyticsArgs) -> Result<Value, Error> {
    let id = device_or_context(ctx, a.device_id).await?;
    let period = a.period.unwrap_or_default();
    let dev = existing_device(ctx, &id).await?;
    let now = OffsetDateTime::now_utc();
    let start = now - period.duration();
    let (start_s, end_s) = (start.unix_timestamp(), now.unix_timestamp());
    let mut sources = vec![];
    let mut warnings = vec![];

    // Status timeline: Xyte's history rows plus the changes the poller saw.
    let mut timeline: Timeline = Vec::new();
    let q = HistoryQuery { from: Some(start), to: Some(now), device_id: Some(id.clone()), ..Default::default() };
    match ctx.app.client.list_histories(q, Priority::Interactive).await {
        Ok(rows) => {
            sources.push("xyte_histories");
            timeline.extend(rows.iter().filter_map(|r| {
                let status = r.state.as_ref()?.get("status")?.as_str()?.to_string();
                Some((parse_ts(r.created_at.as_deref())?, status))
            }));
        }
        Err(e) if e.code.is_unreachable() => warnings.push(format!("Xyte histories unavailable ({})", e.code)),
        Err(e) => return Err(e),
    }
    let filter = EventFilter {
        kinds: vec!["device.status_changed".into(), "incident.opened".into(), "incident.closed".into()],
        device_id: Some(id.clone()),
    };
    let since_ms = start_s * 1000;
    let local = ctx
        .app
        .store
        .read(move |c| {
            let all = events::after(c, 0, &filter, 100_000)?;
            Ok(all.into_iter().filter(|e| e.ts >= since_ms).collect::<Vec<_>>())
        })
        .await?;
    let changes: Vec<(i64, String)> = local
        .iter()
        .filter(|e| e.kind == "device.status_changed")
        .filter_map(|e| Some((e.ts / 1000, e.data["to"].as_str()?.to_string())))
        .collect();
    if !changes.is_empty() {
        sources.push("local_events");
    }
    timeline.extend(changes);
    timeline.sort_by_key(|(t, _)| *t);
    if timeline.is_empty()
        && let Some(status) = dev["status"].as_str()
    {
        // Nothing changed that anyone recorded: the current status is the only evidence, and it is labelled so.
        sources.push("current_status");
        timeline.push((start_s, status.to_string()));
    }

    // Commands sent in the period.
    let commands = ctx.app.cache.commands(&id).await.map(|c| c.value).ok();
    let mut by_status = serde_json::Map::new();
    for c in commands.as_ref().and_then(|c| c.as_array()).into_iter().flatten() {
        if parse_ts(c["created_at"].as_str()).is_some_and(|t| t >= start_s) {
            let s = c["status"].as_str().unwrap_or("unknown").to_string();
            let n = by_status.get(&s).and_then(Value::as_u64).unwrap_or(0);
            by_status.insert(s, json!(n + 1));
        }
    }
    let count = |s: &str| by_status.get(s).and_then(Value::as_u64).unwrap_or(0);
    let finished = count("done") + count("failed") + count("aborted");
    let success = (finished > 0).then(|| (count("done") as f64 * 1000.0 / finished as f64).round() / 10.0);

    // Incidents of this device in the period.
    let iq = IncidentQuery { from: Some(start), to: Some(now), ..Default::default() };
    let incidents: Vec<Value> = match ctx.app.client.list_incidents(iq, Priority::Interactive).await {
        Ok(list) => list
            .into_iter()
            .filter(|i| i.device_id.as_deref() == Some(id.as_str()))
            .map(|i| serde_json::to_value(i).unwrap_or_default())
            .collect(),
        Err(e) if e.code.is_unreachable() => {
            warnings.push(format!("Xyte incidents unavailable ({}); counting cached active ones", e.code));
            ctx.app
                .cache
                .active_incidents()
                .await?
                .value
                .iter()
                .filter(|i| i["device_id"].as_str() == Some(&id))
                .map(Compact::to_value)
                .collect()
        }
        Err(e) => return Err(e),
    };
    let active = incidents.iter().filter(|i| i["status"] == "active").count();

    let mut report = json!({
        "device_id": id,
        "name": dev["name"],
        "status": dev["status"],
        "period": period.name(),
        "from": start.format(&Rfc3339).ok(),
        "to": now.format(&Rfc3339).ok(),
        "commands": {"total": by_status.values().filter_map(Value::as_u64).sum::<u64>(), "by_status": by_status,
                     "success_rate_pct": success},
        "incidents": {"total": incidents.len(), "active": active,
                      "recent": incidents.iter().rev().take(10).cloned().collect::<Vec<_>>()},
        "sources": sources,
        "warnings": warnings,
        "generated_at": rfc3339(crate::store::now_ms()),
    });
    if let (Value::Object(r), Value::Object(avail)) = (&mut report, availability(&timeline, start_s, end_s)) {
        r.extend(avail);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn availability_weights_time_and_merges_episodes() {
        let t = |s: i64, st: &str| (s, st.to_string());
        // 0..100 online, 100..150 offline, 150..160 error (same episode), 160..200 online.
        let tl = vec![t(-50, "online"), t(100, "offline"), t(150, "error"), t(160, "online")];
        let r = availability(&tl, 0, 200);
        assert_eq!(r["availability_pct"], json!(70.0));
        assert_eq!(r["observed_s"], json!(200));
        assert_eq!(r["offline_episodes"], json!(1));
        assert_eq!(r["longest_offline_s"], json!(60));
        // Before the first point nothing is known; an open episode is ongoing.
        let r = availability(&vec![t(50, "online"), t(150, "offline")], 0, 200);
        assert_eq!((r["observed_s"].as_i64(), r["availability_pct"].as_f64()), (Some(150), Some(66.7)));
        assert_eq!(r["recent_offline_episodes"][0]["ongoing"], json!(true));
        assert_eq!(availability(&vec![], 0, 10)["availability_pct"], Value::Null);
    }
}
