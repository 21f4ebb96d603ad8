//! Room schedules as operations (`list_schedules`, `pause_schedule`, `resume_schedule`, `run_schedule_now`) and
//! the durable effects the scheduler (`scheduler.rs`) asks for: firing a run through the outbox, recording a skipped
//! due time, and recording a run's result once every step is final. Each effect is one transaction with its event,
//! and the schedule's record in it ("this due time was handled") is what keeps a due time from running twice.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::commands::{command_for, validate};
use super::devices::existing_device;
use super::schema::TimeArg;
use crate::cache::rfc3339;
use crate::config::presets::{Presets, Schedule};
use crate::error::{Error, ErrorCode};
use crate::runtime::{App, Ctx};
use crate::schedule::plan::Reason;
use crate::store::events::NewEvent;
use crate::store::schedules::{self, Run};
use crate::store::tasks::{self, Step};
use crate::store::{Durability, now_ms};

/// Next run times listed per schedule.
const NEXT_RUNS: usize = 3;

/// What a schedule's due times were computed from: its when-text as written, and whether it is enabled. When this
/// changes, the schedule starts afresh from that moment: an edited or re-enabled schedule does not catch up on (or
/// report as skipped) times it never had.
pub fn spec_text(s: &Schedule) -> String {
    let when = serde_json::to_string(&s.spec).unwrap_or_default();
    if s.enabled { when } else { format!("{when} disabled") }
}

fn find(app: &App, name: &str) -> Result<(Arc<Presets>, Schedule), Error> {
    let presets = app.presets();
    let found = presets.schedules.iter().find(|s| s.name == name).cloned();
    match found {
        Some(s) => Ok((presets, s)),
        None => {
            let names: Vec<&str> = presets.schedules.iter().map(|s| s.name.as_str()).collect();
            Err(Error::new(ErrorCode::NotFound, format!("no schedule {name:?}; there are: {}", names.join(", ")))
                .with_hint("list_schedules shows every schedule"))
        }
    }
}

/// A local time with the zone's offset (`2026-03-29T03:00:00+02:00`), as people in that room read it.
pub fn local_time(ms: i64, tz: &TimeZone) -> Option<String> {
    let ts = Timestamp::from_millisecond(ms).ok()?;
    let (dt, offset) = (tz.to_datetime(ts), tz.to_offset(ts).seconds());
    let (sign, off) = (if offset < 0 { '-' } else { '+' }, offset.abs() / 60);
    Some(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{sign}{:02}:{:02}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        off / 60,
        off % 60
    ))
}

/// The schedule's due times after `after_ms`, at most `n`.
pub fn next_runs(s: &Schedule, holidays: &[jiff::civil::Date], after_ms: i64, n: usize) -> Vec<i64> {
    let Ok(after) = Timestamp::from_millisecond(after_ms) else { return vec![] };
    s.when.next_runs(after, holidays, n).into_iter().map(|t| t.as_millisecond()).collect()
}

/// The first due time strictly after `t`, for `schedule::plan::due`.
pub fn next_after(s: &Schedule, holidays: &[jiff::civil::Date], t: i64) -> Option<i64> {
    let after = Timestamp::from_millisecond(t).ok()?;
    s.when.next_after(after, holidays).map(|t| t.as_millisecond())
}

fn space_of(presets: &Presets, s: &Schedule) -> Option<String> {
    presets.rooms.get(&s.room).and_then(|r| r.space_id.as_ref()).map(|id| id.0.clone())
}

/// The preset's steps made into the commands the outbox sends, each checked against the cached device and its
/// model as `send_command_async` checks one. A device or model that cannot be looked up because Xyte is
/// unreachable and nothing is cached does not stop the run: Xyte checks the command when it arrives.
async fn prepare(ctx: &Ctx, presets: &Presets, s: &Schedule) -> Result<Vec<Step>, Error> {
    let steps = presets
        .rooms
        .get(&s.room)
        .and_then(|r| r.presets.get(&s.preset))
        .ok_or_else(|| Error::invalid_params(format!("room {:?} has no preset {:?} any more", s.room, s.preset)))?;
    let mut out = Vec::with_capacity(steps.len());
    for (i, step) in steps.iter().enumerate() {
        let params = step.extra_params.clone().unwrap_or_default();
        let fail = |e: Error| {
            Error::new(e.code, format!("step {} ({} on {}): {}", i + 1, step.command, step.device_id, e.message))
        };
        let spec = match existing_device(ctx, &step.device_id.0).await {
            Ok(dev) => validate(ctx, &dev, &step.command, &params, None).await.map_err(fail)?,
            Err(e) if e.code.is_unreachable() => None,
            Err(e) => return Err(fail(e)),
        };
        let cmd = command_for(spec.as_ref(), &step.command, step.friendly_name.clone(), params, None);
        out.push(Step { device_id: step.device_id.0.clone(), cmd, continue_on_error: step.continue_on_error });
    }
    Ok(out)
}

fn new_run_id() -> String {
    format!("run_{}", &tasks::new_id()[4..])
}

fn head(s: &Schedule) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("schedule".into(), json!(s.name));
    m.insert("room".into(), json!(s.room));
    m.insert("preset".into(), json!(s.preset));
    m
}

/// Fires a run of `s`: its steps become tasks of the outbox (the first queued, the rest held until the step before
/// them ends), in one FULL transaction with the `schedule.fired` event and, for a due run, the record that `due`
/// was handled (`late_ms` after it). `None` when that due time was already handled (a second scheduler pass, or a
/// crash after firing).
/// A run that cannot be queued (a step names an unknown device or command, the outbox is full, read-only mode) is
/// recorded as fired and at once finished with the error, so whoever watches the events sees why nothing ran;
/// fired by hand (`due` = `None`), the error goes to the caller instead.
pub async fn fire(ctx: &Ctx, s: &Schedule, due: Option<i64>, late_ms: i64) -> Result<Option<Value>, Error> {
    let app = &ctx.app;
    let presets = app.presets();
    let prepared = if app.read_only {
        Err(Error::new(ErrorCode::ReadOnly, "not run: XYTE_READ_ONLY=true on this gateway"))
    } else {
        prepare(ctx, &presets, s).await
    };
    if let (Err(e), None) = (&prepared, due) {
        return Err(e.clone());
    }
    let (name, principal, ttl, limits) =
        (s.name.clone(), ctx.principal.id.clone(), app.command_ttl.as_millis() as i64, app.outbox_limits);
    let mut data = head(s);
    data.insert("due_at".into(), json!(due.and_then(rfc3339)));
    data.insert("principal".into(), json!(principal));
    let space = space_of(&presets, s);
    let stored = app
        .store
        .write(Durability::Full, move |c| {
            let now = now_ms();
            if let Some(due) = due
                && !schedules::handle(c, &name, due)?
            {
                return Ok(Ok(None));
            }
            let run_id = new_run_id();
            data.insert("run_id".into(), json!(run_id));
            data.insert("late_s".into(), json!(late_ms / 1000));
            let queued = match prepared {
                Ok(steps) => {
                    let mut wanted: BTreeMap<String, u64> = BTreeMap::new();
                    for step in &steps {
                        *wanted.entry(step.device_id.clone()).or_default() += 1;
                    }
                    match limits.admit(c, &wanted.into_iter().collect::<Vec<_>>())? {
                        Ok(()) => Ok(tasks::insert_run(c, &run_id, &steps, &principal, now, ttl)?),
                        Err(refused) => Err(refused),
                    }
                }
                Err(e) => Err(e),
            };
            let mut run = Run {
                run_id: run_id.clone(),
                schedule: name.clone(),
                due,
                fired_at: now,
                principal: principal.clone(),
                finished_at: None,
                result: None,
            };
            let mut events = vec![];
            match queued {
                Ok(ts) => {
                    let steps: Vec<Value> = ts
                        .iter()
                        .map(|t| {
                            json!({"step": t.run.as_ref().map(|r| r.1), "task_id": t.task_id,
                                        "device_id": t.device_id, "command": t.command})
                        })
                        .collect();
                    data.insert("steps".into(), Value::Array(steps));
                    events.push(NewEvent::new("schedule.fired", Value::Object(data.clone())).space(space.clone()));
                }
                Err(e) if due.is_none() => return Ok(Err(e)),
                Err(e) => {
                    data.insert("steps".into(), json!([]));
                    data.insert("error".into(), e.to_body()["error"].clone());
                    events.push(NewEvent::new("schedule.fired", Value::Object(data.clone())).space(space.clone()));
                    let mut finished = data.clone();
                    finished.retain(|k, _| ["schedule", "room", "preset", "run_id", "error"].contains(&k.as_str()));
                    finished.insert("ok".into(), json!(false));
                    finished.insert("steps".into(), json!([]));
                    run.finished_at = Some(now);
                    run.result = Some(json!({"ok": false, "steps": [], "error": finished["error"]}));
                    events.push(NewEvent::new("schedule.finished", Value::Object(finished)).space(space.clone()));
                }
            }
            schedules::insert_run(c, &run)?;
            let stored = crate::store::events::append(c, &events, now)?;
            Ok(Ok(Some((Value::Object(data), stored))))
        })
        .await??;
    let Some((data, stored)) = stored else { return Ok(None) };
    app.outbox_wake.notify_one();
    app.bus.broadcast(&stored);
    tracing::info!(schedule = %s.name, run_id = %data["run_id"].as_str().unwrap_or_default(),
                   late_s = %data["late_s"], ok = %data.get("error").is_none(), "schedule fired");
    Ok(Some(data))
}

/// Records due times of `s` that will not run (`first`..=`last`, `count` of them) with the reason, and that they
/// were handled, in one transaction with the `schedule.skipped` event.
pub async fn skip(app: &App, s: &Schedule, first: i64, last: i64, count: usize, reason: Reason) -> Result<(), Error> {
    let code = match reason {
        Reason::Missed { .. } => "missed",
        Reason::Superseded => "superseded",
        Reason::Paused => "paused",
    };
    let mut data = head(s);
    data.insert("due_at".into(), json!(rfc3339(last)));
    data.insert("reason".into(), json!(reason.text()));
    data.insert("reason_code".into(), json!(code));
    data.insert("count".into(), json!(count));
    data.insert("first_due_at".into(), json!(rfc3339(first)));
    data.insert("last_due_at".into(), json!(rfc3339(last)));
    let event = NewEvent::new("schedule.skipped", Value::Object(data)).space(space_of(&app.presets(), s));
    let name = s.name.clone();
    let last_skip = json!({"due_at": rfc3339(last), "reason": reason.text(), "reason_code": code});
    let stored = app
        .store
        .write(Durability::Full, move |c| {
            if !schedules::handle(c, &name, last)? {
                return Ok(vec![]);
            }
            schedules::set_last_skip(c, &name, &last_skip)?;
            crate::store::events::append(c, &[event], now_ms())
        })
        .await?;
    if !stored.is_empty() {
        tracing::info!(schedule = %s.name, count, reason = code, "schedule skipped");
    }
    app.bus.broadcast(&stored);
    Ok(())
}

/// Records the result of every run whose steps are all final, with its `schedule.finished` event. Returns how many
/// runs are still open.
pub async fn finish_runs(app: &App) -> Result<usize, Error> {
    let open = app
        .store
        .read(|c| {
            let mut out = vec![];
            for run in schedules::open_runs(c)? {
                let steps = tasks::run(c, &run.run_id)?;
                out.push((run, steps));
            }
            Ok(out)
        })
        .await?;
    let mut still_open = 0;
    let presets = app.presets();
    for (run, steps) in open {
        if steps.iter().any(|t| t.state.is_open()) {
            still_open += 1;
            continue;
        }
        let ok = steps.iter().all(|t| t.state == tasks::TaskState::Done);
        let steps: Vec<Value> = steps
            .iter()
            .map(|t| {
                json!({"step": t.run.as_ref().map(|r| r.1), "task_id": t.task_id, "device_id": t.device_id,
                            "command": t.command, "state": t.state, "last_error": t.last_error})
            })
            .collect();
        let found = presets.schedules.iter().find(|s| s.name == run.schedule);
        let mut data = serde_json::Map::new();
        data.insert("schedule".into(), json!(run.schedule));
        data.insert("room".into(), json!(found.map(|s| &s.room)));
        data.insert("preset".into(), json!(found.map(|s| &s.preset)));
        data.insert("run_id".into(), json!(run.run_id));
        data.insert("ok".into(), json!(ok));
        data.insert("steps".into(), json!(steps));
        let result = json!({"ok": ok, "steps": steps});
        let space = found.and_then(|s| space_of(&presets, s));
        let event = NewEvent::new("schedule.finished", Value::Object(data)).space(space);
        let run_id = run.run_id.clone();
        let stored = app
            .store
            .write(Durability::Normal, move |c| {
                let now = now_ms();
                if !schedules::finish_run(c, &run_id, now, &result)? {
                    return Ok(vec![]);
                }
                crate::store::events::append(c, &[event], now)
            })
            .await?;
        if !stored.is_empty() {
            tracing::info!(schedule = %run.schedule, run_id = %run.run_id, ok, "schedule finished");
        }
        app.bus.broadcast(&stored);
    }
    Ok(still_open)
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListSchedules {
    /// Only the schedules of this room (its name as in the presets file, any case).
    pub room: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

pub async fn list_schedules(ctx: &Ctx, a: ListSchedules) -> Result<Value, Error> {
    let presets = ctx.app.presets();
    let (states, last) = ctx.app.store.read(|c| Ok((schedules::states(c)?, schedules::last_runs(c)?))).await?;
    let now = now_ms();
    let wanted = a.room.as_deref().map(str::to_lowercase);
    let all: Vec<Value> = presets
        .schedules
        .iter()
        .filter(|s| wanted.as_ref().is_none_or(|r| s.room.to_lowercase() == *r))
        .map(|s| {
            let state = states.get(&s.name).filter(|st| st.spec == spec_text(s));
            let tz = s.when.timezone();
            let from = state.map_or(now, |st| st.handled.max(now));
            let next: Vec<Option<String>> =
                next_runs(s, &presets.holidays, from, NEXT_RUNS).into_iter().map(|t| local_time(t, tz)).collect();
            let paused = state.and_then(|st| st.paused.as_ref()).filter(|(until, _)| until.is_none_or(|u| u > now));
            json!({
                "name": s.name, "room": s.room, "preset": s.preset, "enabled": s.enabled, "when": s.spec,
                "describe": s.describe(), "timezone": tz.iana_name(),
                "paused": paused.map(|(until, by)| json!({"until": until.and_then(rfc3339), "by": by})),
                "next_runs": if s.enabled { next } else { vec![] },
                "last_run": last.get(&s.name).map(run_json),
                "last_skip": state.and_then(|st| st.last_skip.clone()),
            })
        })
        .collect();
    let (items, next_cursor, omitted) = super::page(&all, a.limit, a.cursor.as_deref())?;
    let mut out = json!({
        "schedules": items, "total": all.len(), "omitted": omitted,
        "errors": presets.problems, "grace_s": ctx.app.schedule_grace.as_secs(),
    });
    if let Some(n) = next_cursor {
        out["next_cursor"] = json!(n);
    }
    Ok(out)
}

fn run_json(r: &Run) -> Value {
    let result = r.result.clone().unwrap_or(Value::Null);
    json!({"run_id": r.run_id, "due_at": r.due.and_then(rfc3339), "fired_at": rfc3339(r.fired_at),
           "finished_at": r.finished_at.and_then(rfc3339), "principal": r.principal,
           "ok": result.get("ok"), "steps": result.get("steps"), "error": result.get("error")})
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pause {
    /// The schedule's name (list_schedules shows them).
    pub name: String,
    /// Paused up to this time; left out: until resume_schedule.
    pub until: Option<TimeArg>,
    pub dry_run: Option<bool>,
}

pub async fn pause_schedule(ctx: &Ctx, a: Pause) -> Result<Value, Error> {
    let (_, s) = find(&ctx.app, &a.name)?;
    let now = now_ms();
    let until = a.until.map(|t| (t.0.unix_timestamp_nanos() / 1_000_000) as i64);
    if until.is_some_and(|u| u <= now) {
        return Err(Error::invalid_params("until is not in the future"));
    }
    let paused = json!({"until": until.and_then(rfc3339), "by": ctx.principal.id});
    if a.dry_run == Some(true) {
        return Ok(json!({"dry_run": true, "name": s.name, "would_pause": paused}));
    }
    set_pause(ctx, &s, Some((until, ctx.principal.id.clone()))).await?;
    Ok(json!({"name": s.name, "paused": paused}))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NameArg {
    /// The schedule's name (list_schedules shows them).
    pub name: String,
    pub dry_run: Option<bool>,
}

pub async fn resume_schedule(ctx: &Ctx, a: NameArg) -> Result<Value, Error> {
    let (presets, s) = find(&ctx.app, &a.name)?;
    let next: Vec<Option<String>> = next_runs(&s, &presets.holidays, now_ms(), NEXT_RUNS)
        .into_iter()
        .map(|t| local_time(t, s.when.timezone()))
        .collect();
    if a.dry_run == Some(true) {
        return Ok(json!({"dry_run": true, "name": s.name, "would_resume": true, "next_runs": next}));
    }
    set_pause(ctx, &s, None).await?;
    Ok(json!({"name": s.name, "paused": null, "next_runs": next}))
}

async fn set_pause(ctx: &Ctx, s: &Schedule, pause: Option<(Option<i64>, String)>) -> Result<(), Error> {
    let (name, spec) = (s.name.clone(), spec_text(s));
    ctx.app
        .store
        .write(Durability::Full, move |c| {
            schedules::ensure(c, &name, &spec, now_ms())?;
            schedules::set_pause(c, &name, pause.as_ref().map(|(until, by)| (*until, by.as_str())))
        })
        .await?;
    // The scheduler plans again: a due time from now on is skipped (or fires) as the pause now says.
    ctx.app.schedule_wake.notify_one();
    Ok(())
}

pub async fn run_schedule_now(ctx: &Ctx, a: NameArg) -> Result<Value, Error> {
    let (presets, s) = find(&ctx.app, &a.name)?;
    if a.dry_run == Some(true) {
        let steps = prepare(ctx, &presets, &s).await?;
        let steps: Vec<Value> = steps
            .iter()
            .enumerate()
            .map(|(i, st)| {
                json!({"step": i + 1, "device_id": st.device_id, "command": st.cmd.command,
                                  "would_queue": st.cmd, "continue_on_error": st.continue_on_error})
            })
            .collect();
        return Ok(json!({"dry_run": true, "schedule": s.name, "room": s.room, "preset": s.preset, "steps": steps}));
    }
    let fired = fire(ctx, &s, None, 0).await?;
    fired.ok_or_else(|| Error::internal("a run started by hand was not recorded"))
}
