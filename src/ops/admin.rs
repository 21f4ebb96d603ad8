//! Admin tools: claim, update and delete devices. Each validates against what the gateway knows (the
//! space exists, the device exists, the deletion is confirmed) before anything is sent.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::devices::existing_device;
use super::schema::{Id, id_text};
use crate::error::Error;
use crate::runtime::Ctx;
use crate::xyte::Priority;

/// Device entries and the device collection share one cache resource; forget it all.
async fn after_device_write(ctx: &Ctx) {
    ctx.app.cache.invalidate("device", None).await;
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimDevice {
    /// The device's friendly name.
    pub name: String,
    /// The space (room) to put it in.
    pub space_id: Id,
    /// MAC address (with sn, for models that authenticate by MAC and serial).
    pub mac: Option<String>,
    /// Serial number (with mac).
    pub sn: Option<String>,
    /// Cloud id (for models that authenticate by cloud id).
    pub cloud_id: Option<String>,
    pub dry_run: Option<bool>,
}

pub async fn claim_device(ctx: &Ctx, a: ClaimDevice) -> Result<Value, Error> {
    if a.name.trim().is_empty() {
        return Err(Error::invalid_params("name must not be empty"));
    }
    if a.cloud_id.is_none() && (a.mac.is_none() || a.sn.is_none()) {
        return Err(Error::invalid_params("give cloud_id, or both mac and sn (as the device's model authenticates)"));
    }
    let spaces = ctx.app.cache.spaces().await?;
    let Some(space) = spaces.value.iter().find(|s| id_text(&s["id"]) == a.space_id.0) else {
        return Err(Error::invalid_params(format!("no space {}; list_spaces shows the ids", a.space_id)));
    };
    let space_id: Value = a.space_id.0.parse::<i64>().map(Value::from).unwrap_or_else(|_| json!(a.space_id.0));
    let body = json!({"name": a.name.trim(), "space_id": space_id, "mac": a.mac, "sn": a.sn, "cloud_id": a.cloud_id});
    if a.dry_run == Some(true) {
        return Ok(json!({"dry_run": true, "space": space["full_path"].as_str().or(space["name"].as_str()),
                         "would_send": {"method": "POST", "path": "devices/claim", "body": body}}));
    }
    let claimed = ctx.app.client.claim_device(body, Priority::Command).await?;
    after_device_write(ctx).await;
    Ok(json!({"claimed": true, "device": claimed}))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateDevice {
    pub device_id: Id,
    /// New friendly name.
    pub name: Option<String>,
    /// The device configuration object.
    pub configuration: Option<Map<String, Value>>,
    /// Edge devices: the COMPLETE set of custom parameters keyed by label (it replaces the old set).
    pub custom_parameters: Option<Map<String, Value>>,
    pub dry_run: Option<bool>,
}

pub async fn update_device(ctx: &Ctx, a: UpdateDevice) -> Result<Value, Error> {
    if a.name.is_none() && a.configuration.is_none() && a.custom_parameters.is_none() {
        return Err(Error::invalid_params("give at least one of name, configuration, custom_parameters"));
    }
    if let Some(params) = &a.custom_parameters
        && let Some((label, _)) = params.iter().find(|(_, v)| v.as_str().is_some_and(|s| s.starts_with("****")))
    {
        // Xyte masks secret parameters as "*****" when reading; sending the mask back would overwrite the secret.
        return Err(Error::invalid_params(format!(
            "custom_parameters.{label} is the masked placeholder; give the real value or leave the parameter out"
        )));
    }
    if a.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
        return Err(Error::invalid_params("name must not be empty"));
    }
    let id = a.device_id.0;
    let current = existing_device(ctx, &id).await?;
    let mut patch = Map::new();
    if let Some(n) = a.name {
        patch.insert("name".into(), json!(n.trim()));
    }
    if let Some(c) = a.configuration {
        patch.insert("configuration".into(), Value::Object(c));
    }
    if let Some(p) = a.custom_parameters {
        patch.insert("custom_parameters".into(), Value::Object(p));
    }
    if a.dry_run == Some(true) {
        return Ok(json!({"dry_run": true, "device": current["name"],
                         "would_send": {"method": "PATCH", "path": format!("devices/{id}"), "body": patch}}));
    }
    let updated = ctx.app.client.update_device(&id, Value::Object(patch), Priority::Command).await?;
    after_device_write(ctx).await;
    Ok(json!({"updated": true, "device": updated}))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteDevice {
    pub device_id: Id,
    /// Must equal device_id: deleting a device removes it from the organization.
    pub confirm: String,
    pub dry_run: Option<bool>,
}

pub async fn delete_device(ctx: &Ctx, a: DeleteDevice) -> Result<Value, Error> {
    let id = a.device_id.0;
    if a.confirm.trim() != id {
        return Err(Error::invalid_params(format!("confirm must equal the device_id ({id}) to delete it")));
    }
    let current = existing_device(ctx, &id).await?;
    if a.dry_run == Some(true) {
        return Ok(json!({"dry_run": true, "device": current["name"],
                         "would_send": {"method": "DELETE", "path": format!("devices/{id}")}}));
    }
    ctx.app.client.delete_device(&id, Priority::Command).await?;
    after_device_write(ctx).await;
    Ok(json!({"deleted": true, "device_id": id, "name": current["name"]}))
}
