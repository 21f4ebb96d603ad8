//! Durable asynchronous commands: `send_command_async` (queued in the outbox, acknowledged after a FULL commit),
//! `get_task_status`, and `cancel_command` (withdraws a queued task, or cancels at Xyte).

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::commands::{command_for, validate};
use super::devices::{device_or_context, existing_device};
use super::schema::Id;
use crate::cache::rfc3339;
use crate::error::{Error, ErrorCode};
use crate::runtime::Ctx;
use crate::store::events::NewEvent;
use crate::store::tasks::{self, Patch, Task, TaskState};
use crate::store::{Durability, now_ms};
use crate::xyte::Priority;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendAsync {
    /// The device (defaults to the context's device_id).
    pub device_id: Option<Id>,
    /// The command name from the device model's command list.
    pub command: String,
    pub friendly_name: Option<String>,
    /// Parameters keyed by the command's custom field names.
    pub extra_params: Option<Map<String, Value>>,
    pub file_id: Option<String>,
    /// Validate and show what would be queued, without queuing.
    pub dry_run: Option<bool>,
}

pub fn task_json(t: &Task) -> Value {
    json!({
        "task_id": t.task_id, "device_id": t.device_id, "command": t.command, "state": t.state,
        "xyte_command_id": t.xyte_command_id, "attempts": t.attempts, "created_at": rfc3339(t.created_at),
        "expires_at": rfc3339(t.expires_at), "updated_at": rfc3339(t.updated_at), "last_error": t.last_error,
        "final": !t.state.is_open(),
    })
}

pub async fn send_command_async(ctx: &Ctx, a: SendAsync) -> Result<Value, Error> {
    let id = device_or_context(ctx, a.device_id).await?;
    // Validation uses the cache, so commands can be queued while Xyte is unreachable.
    let dev = existing_device(ctx, &id).await?;
    let params = a.extra_params.unwrap_or_default();
    let spec = validate(ctx, &dev, &a.command, &params, a.file_id.as_deref()).await?;
    let cmd = command_for(spec.as_ref(), &a.command, a.friendly_name, params, a.file_id);
    if a.dry_run == Some(true) {
        return Ok(json!({"dry_run": true, "device_id": id, "validated": spec.is_some(), "would_queue": cmd,
                         "expires_in_s": ctx.app.command_ttl.as_secs()}));
    }
    let (who, ttl) = (ctx.principal.id.clone(), ctx.app.command_ttl.as_millis() as i64);
    let (dev_id, limits) = (id.clone(), ctx.app.outbox_limits);
    // FULL: once this returns, the command survives a crash or power loss (README). Its `command.accepted` event
    // goes in the same transaction (as a webhook's receipt and event do): one commit per command instead of two,
    // which the benchmark (BENCHMARKS.md) showed halving acceptance under concurrent load, and the event is now
    // exactly as durable as the task it announces. The admission check shares the transaction (see OutboxLimits).
    let (task, stored) = ctx
        .app
        .store
        .write(Durability::Full, move |c| {
            if let Err(refused) = limits.admit(c, &[(dev_id.clone(), 1)])? {
                return Ok(Err(refused));
            }
            let now = now_ms();
            let task = tasks::insert(c, &dev_id, &cmd, &who, now, ttl)?;
            let accepted = NewEvent::new("command.accepted", json!({"task_id": task.task_id, "command": task.command}))
                .device(&dev_id);
            let stored = crate::store::events::append(c, &[accepted], now)?;
            Ok(Ok((task, stored)))
        })
        .await??;
    ctx.app.outbox_wake.notify_one();
    ctx.app.bus.broadcast(&stored);
    Ok(task_json(&task))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskRef {
    /// The task_id returned by send_command_async.
    pub task_id: String,
}

pub async fn get_task_status(ctx: &Ctx, a: TaskRef) -> Result<Value, Error> {
    let id = a.task_id.clone();
    match ctx.app.store.read(move |c| tasks::get(c, &id)).await? {
        Some(t) => Ok(task_json(&t)),
        None => Err(Error::new(ErrorCode::NotFound, format!("no task {}", a.task_id))),
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cancel {
    pub device_id: Id,
    /// A Xyte command id, or a task_id from send_command_async.
    pub command_id: String,
    pub dry_run: Option<bool>,
}

pub async fn cancel_command(ctx: &Ctx, a: Cancel) -> Result<Value, Error> {
    let device_id = a.device_id.0.clone();
    let mut xyte_id = a.command_id.clone();
    if a.command_id.starts_with("tsk_") {
        let tid = a.command_id.clone();
        let task = ctx
            .app
            .store
            .read(move |c| tasks::get(c, &tid))
            .await?
            .ok_or_else(|| Error::new(ErrorCode::NotFound, format!("no task {}", a.command_id)))?;
        if task.device_id != device_id {
            return Err(Error::invalid_params(format!("task {} belongs to device {}", task.task_id, task.device_id)));
        }
        if task.state == TaskState::Queued {
            if a.dry_run == Some(true) {
                return Ok(json!({"dry_run": true, "would": "withdraw the queued task", "task": task_json(&task)}));
            }
            let tid = task.task_id.clone();
            let patch = Patch { last_error: Some(format!("cancelled by {}", ctx.principal.id)), ..Default::default() };
            // A queued task whose last POST has an unknown outcome may already be at Xyte: withdrawing it would
            // report "cancelled" for a command the device runs. Checked in the writer's transaction, so the
            // forwarder cannot make the outcome unknown between the check and the withdrawal.
            let moved = ctx
                .app
                .store
                .write(Durability::Full, move |c| {
                    if tasks::get(c, &tid)?.is_some_and(|t| t.outcome_unknown) {
                        return Ok(None);
                    }
                    Ok(Some(tasks::transition(c, &tid, &[TaskState::Queued], TaskState::Cancelled, &patch, now_ms())?))
                })
                .await?;
            let Some(moved) = moved else {
                return Err(Error::invalid_params(format!(
                    "task {}'s last delivery attempt may have reached Xyte; the gateway is checking Xyte's command \
                     list before anything else happens. Try again shortly (get_task_status shows the outcome)",
                    task.task_id
                )));
            };
            if moved {
                let _ = ctx
                    .app
                    .bus
                    .publish(vec![
                        NewEvent::new(
                            "command.status_changed",
                            json!({"task_id": task.task_id, "from": TaskState::Queued, "to": TaskState::Cancelled}),
                        )
                        .device(&device_id),
                    ])
                    .await;
                return Ok(json!({"cancelled": true, "withdrawn": true, "task_id": task.task_id}));
            }
        }
        let tid = task.task_id.clone();
        let task = ctx.app.store.read(move |c| tasks::get(c, &tid)).await?.unwrap_or(task);
        match task.xyte_command_id {
            Some(x) if tasks::AT_XYTE.contains(&task.state) => xyte_id = x,
            _ => {
                return Err(Error::invalid_params(format!(
                    "task {} is {}; it cannot be cancelled now",
                    task.task_id,
                    task.state.as_str()
                )));
            }
        }
    }
    if a.dry_run == Some(true) {
        return Ok(
            json!({"dry_run": true, "would_send": {"method": "DELETE", "path": format!("devices/{device_id}/commands/{xyte_id}")}}),
        );
    }
    ctx.app.client.cancel_command(&device_id, &xyte_id, Priority::Command).await?;
    ctx.app.cache.invalidate("commands", Some(&device_id)).await;
    Ok(json!({"cancelled": true, "device_id": device_id, "xyte_command_id": xyte_id}))
}
