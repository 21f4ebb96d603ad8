//! `send_command`: validated against the device model, sent at command priority, optionally followed to a terminal
//! status with progress notifications.

use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::devices::{device_or_context, existing_device};
use super::schema::Id;
use crate::cache::model_id;
use crate::error::{Error, ErrorCode};
use crate::runtime::Ctx;
use crate::xyte::{Priority, SendCommand};

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendCommandArgs {
    /// The device (defaults to the context's device_id).
    pub device_id: Option<Id>,
    /// The command name from the device model's command list, e.g. `reboot`, `power_on`.
    pub command: String,
    /// Display name sent along (defaults to the model's).
    pub friendly_name: Option<String>,
    /// Parameters keyed by the command's custom field names, e.g. `{"input": "hdmi2"}`.
    pub extra_params: Option<Map<String, Value>>,
    /// File for commands that need one (e.g. firmware updates).
    pub file_id: Option<String>,
    /// Wait for the device to finish (done, failed or aborted), reporting progress.
    pub wait: Option<bool>,
    /// How long to wait, in seconds (default 60, at most 600).
    pub timeout_s: Option<u32>,
    /// Validate and show what would be sent, without sending.
    pub dry_run: Option<bool>,
}

/// The device model's definition of `command`, when the model is known; validates the arguments against it.
pub async fn validate(
    ctx: &Ctx,
    device: &Value,
    command: &str,
    params: &Map<String, Value>,
    file_id: Option<&str>,
) -> Result<Option<Value>, Error> {
    let model = &device["model"];
    let Some(model_id) = model_id(model["id"].as_str(), model["id"].as_i64()) else { return Ok(None) };
    let model = match ctx.app.cache.model(&model_id).await {
        Ok(m) => m.value.to_value(),
        // Unknown model definition (Xyte unreachable, nothing cached): send unvalidated; Xyte still checks it.
        Err(e) if e.code.is_unreachable() || e.code == ErrorCode::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let commands = model["commands"].as_array().cloned().unwrap_or_default();
    let Some(spec) = commands.iter().find(|c| c["name"] == command || c["friendly_name"] == command).cloned() else {
        let names: Vec<&str> = commands.iter().filter_map(|c| c["name"].as_str()).collect();
        return Err(Error::invalid_params(format!(
            "{} ({}) has no command {command:?}; it accepts: {}",
            device["name"].as_str().unwrap_or("the device"),
            model["name"].as_str().unwrap_or("unknown model"),
            names.join(", ")
        )));
    };
    for field in spec["custom_fields"].as_array().into_iter().flatten() {
        let name = field["name"].as_str().unwrap_or_default();
        match params.get(name) {
            None if field["required"] == true => {
                return Err(Error::invalid_params(format!(
                    "{command} needs extra_params.{name}{}",
                    options_hint(field)
                )));
            }
            Some(v) if field["options"].as_array().is_some_and(|o| !o.contains(v)) => {
                return Err(Error::invalid_params(format!(
                    "extra_params.{name}={v} is not allowed{}",
                    options_hint(field)
                )));
            }
            _ => {}
        }
    }
    if spec["with_file"] == true && file_id.is_none() {
        return Err(Error::invalid_params(format!("{command} needs a file_id")));
    }
    Ok(Some(spec))
}

/// The command to send: named, and described unless the caller did, as the model's definition `spec` says.
pub fn command_for(
    spec: Option<&Value>,
    name: &str,
    friendly_name: Option<String>,
    params: Map<String, Value>,
    file_id: Option<String>,
) -> SendCommand {
    SendCommand {
        command: spec.and_then(|s| s["name"].as_str()).unwrap_or(name).to_string(),
        friendly_name: friendly_name.or_else(|| spec.and_then(|s| s["friendly_name"].as_str().map(String::from))),
        extra_params: Some(Value::Object(params)),
        file_id,
    }
}

fn options_hint(field: &Value) -> String {
    field["options"].as_array().map(|o| format!(" (one of {})", Value::Array(o.clone()))).unwrap_or_default()
}

pub async fn send_command(ctx: &Ctx, a: SendCommandArgs) -> Result<Value, Error> {
    let id = device_or_context(ctx, a.device_id).await?;
    let dev = existing_device(ctx, &id).await?;
    let params = a.extra_params.unwrap_or_default();
    let spec = validate(ctx, &dev, &a.command, &params, a.file_id.as_deref()).await?;
    let cmd = command_for(spec.as_ref(), &a.command, a.friendly_name, params, a.file_id);
    if a.dry_run == Some(true) {
        return Ok(json!({"dry_run": true, "device_id": id, "device": dev["name"], "validated": spec.is_some(),
                         "would_send": {"method": "POST", "path": format!("devices/{id}/commands"), "body": cmd}}));
    }
    let sent = ctx.app.client.send_command(&id, cmd.clone(), Priority::Command).await.map_err(|e| {
        if e.code.is_unreachable() {
            let mut e = e;
            e.hint = Some("Xyte could not be reached; send_command_async queues the command durably and delivers it when Xyte is back".into());
            e
        } else {
            e
        }
    })?;
    ctx.app.cache.invalidate("commands", Some(&id)).await;
    let mut out = json!({"device_id": id, "command": cmd.command, "xyte_command_id": sent.id, "status": sent.status});
    if a.wait == Some(true) {
        let timeout = Duration::from_secs(u64::from(a.timeout_s.unwrap_or(60).clamp(1, 600)));
        let (status, message, timed_out) = follow(ctx, &id, &sent.id, timeout).await?;
        out["status"] = json!(status);
        out["message"] = message;
        out["timed_out"] = json!(timed_out);
    }
    Ok(out)
}

/// Polls the device's command list until the command is done/failed/aborted or `timeout` passes.
pub async fn follow(
    ctx: &Ctx,
    device_id: &str,
    command_id: &str,
    timeout: Duration,
) -> Result<(String, Value, bool), Error> {
    let started = Instant::now();
    let mut last = "pending".to_string();
    let mut step = 0.0;
    ctx.report(step, None, format!("command {command_id} sent; waiting for the device"));
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let list = ctx.app.client.list_commands(device_id, None, 100, Priority::Command).await;
        if let Ok(list) = list
            && let Some(row) = list.iter().find(|c| c.id == command_id)
        {
            let status = row.status.clone().unwrap_or_else(|| "unknown".into());
            if status != last {
                step += 1.0;
                ctx.report(step, None, format!("status: {status}"));
                last = status;
            }
            if row.is_terminal() {
                ctx.app.cache.invalidate("commands", Some(device_id)).await;
                return Ok((last, row.message.clone().unwrap_or(Value::Null), false));
            }
        }
        if started.elapsed() >= timeout {
            return Ok((last, Value::Null, true));
        }
    }
}
