//! What the organization has, as reads see it through the cache: the collections the poller keeps (devices,
//! spaces, active incidents, open tickets) and single entries (a device, its recent commands, a model, a ticket with
//! its comments, the organization's info), with what is derived from them and kept (the devices in name order, and
//! `list_devices` pages).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Body, Cache, Cached, Compact, Items};
use crate::error::Error;
use crate::xyte::{IncidentQuery, Priority};

const P: Priority = Priority::Interactive;

pub(super) fn keyed<T: serde::Serialize>(items: &[T], id: impl Fn(&T) -> String) -> super::Keyed {
    items.iter().map(|i| (id(i), serde_json::to_value(i).unwrap_or(Value::Null))).collect()
}

fn to_json<T: serde::Serialize>(value: T) -> Value {
    serde_json::to_value(value).unwrap_or_default()
}

/// The id in a device's `model` field, which Xyte sends as a string or a number: given as `model["id"]`'s text and
/// number (a device read from the cache or one Xyte just sent).
pub fn model_id(text: Option<&str>, number: Option<i64>) -> Option<String> {
    text.map(String::from).or_else(|| number.map(|i| i.to_string()))
}

impl Cache {
    pub async fn devices(&self) -> Result<Cached<Items>, Error> {
        self.collection("device", |c| {
            Box::pin(async move { Ok(keyed(&c.list_devices(None, P).await?, |d| d.id.clone())) })
        })
        .await
    }

    pub async fn spaces(&self) -> Result<Cached<Items>, Error> {
        self.collection("space", |c| Box::pin(async move { Ok(keyed(&c.list_spaces(P).await?, |s| s.id.clone())) }))
            .await
    }

    pub async fn active_incidents(&self) -> Result<Cached<Items>, Error> {
        self.collection("incident", |c| {
            Box::pin(async move {
                let q = IncidentQuery { status: Some("active".into()), ..Default::default() };
                Ok(keyed(&c.list_incidents(q, P).await?, |i| i.id.clone()))
            })
        })
        .await
    }

    pub async fn open_tickets(&self) -> Result<Cached<Items>, Error> {
        self.collection("ticket", |c| Box::pin(async move { Ok(keyed(&c.list_tickets(P).await?, |t| t.id.clone())) }))
            .await
    }

    pub async fn device(&self, id: &str) -> Result<Cached<Body>, Error> {
        self.entry("device", id, |c, id| Box::pin(async move { Ok(to_json(c.get_device(&id, P).await?)) })).await
    }

    /// The device's recent commands.
    pub async fn commands(&self, device_id: &str) -> Result<Cached<Body>, Error> {
        self.entry("commands", device_id, |c, id| {
            Box::pin(async move { Ok(to_json(c.list_commands(&id, None, 100, P).await?)) })
        })
        .await
    }

    /// One ticket with its comments.
    pub async fn ticket(&self, id: &str) -> Result<Cached<Body>, Error> {
        self.entry("ticket_full", id, |c, id| Box::pin(async move { Ok(to_json(c.get_ticket(&id, P).await?)) })).await
    }

    pub async fn organization(&self) -> Result<Cached<Body>, Error> {
        self.entry("organization", "info", |c, _| Box::pin(async move { Ok(to_json(c.info(P).await?)) })).await
    }

    /// The definition (with its command list) of the model with this id ([`model_id`]).
    pub async fn model(&self, id: &str) -> Result<Cached<Body>, Error> {
        self.entry("model", id, |c, id| Box::pin(async move { Ok(to_json(c.get_model(&id, P).await?)) })).await
    }

    /// The device collection `devices` (as [`Cache::devices`] answered it) in name order.
    pub fn device_order(&self, devices: &Items) -> Arc<[Ordered]> {
        self.state.from_devices.order(devices)
    }

    /// `compute`'s answer, computed once per device collection and `key` (see [`FromDevices`]): `compute` must read
    /// nothing but `devices`, and `key` must name everything else its answer depends on (the arguments). An error is
    /// not kept. The answer is shared, not copied ([`crate::ops::Answer`] writes it with the call's freshness).
    pub fn from_devices(
        &self,
        devices: &Items,
        key: String,
        compute: impl FnOnce() -> Result<Map<String, Value>, Error>,
    ) -> Result<Arc<Map<String, Value>>, Error> {
        if let Some(answer) = self.state.from_devices.answer(devices, &key) {
            return Ok(answer);
        }
        let answer = Arc::new(compute()?);
        self.state.from_devices.keep(devices, key, answer.clone());
        Ok(answer)
    }
}

#[derive(Deserialize, JsonSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DeviceStatus {
    Online,
    Offline,
    Error,
}

impl DeviceStatus {
    const ALL: [DeviceStatus; 3] = [DeviceStatus::Online, DeviceStatus::Offline, DeviceStatus::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Online => "online",
            DeviceStatus::Offline => "offline",
            DeviceStatus::Error => "error",
        }
    }

    fn of(device: &Compact) -> Option<DeviceStatus> {
        let status = device["status"].as_str()?;
        DeviceStatus::ALL.into_iter().find(|s| s.as_str() == status)
    }
}

/// One device of the collection in name order: where it is in the collection, and its status.
pub type Ordered = (u32, Option<DeviceStatus>);

/// What is derived from one device collection and kept while it is current: the devices in name order (looking up
/// and sorting 500 names on every `list_devices` call was a fifth of its time, BENCHMARKS.md), and answers computed
/// from the collection alone (a `list_devices` page: building its fifty summaries was most of a call; a copy of the
/// kept page costs a fraction of that). The cache shares one parsed collection (`Arc`) until its rows are written
/// (volatile fields included: they change only with a write, which drops the collection), so that `Arc` identifies
/// it; the `Weak` kept here also keeps its allocation, so a newer collection cannot have the same address.
#[derive(Default)]
pub(super) struct FromDevices(Mutex<Option<Derived>>);

struct Derived {
    of: Weak<Vec<Compact>>,
    order: Arc<[Ordered]>,
    /// By a key naming every other input of the answer; bounded by [`MAX_ANSWERS`] (all dropped when full).
    answers: HashMap<String, Arc<Map<String, Value>>>,
}

/// Different `list_devices` arguments kept per collection (filters, pages, page sizes). A page of the largest size
/// (500 devices) is under half a megabyte as a `Value`: at most ~7 MB however callers vary their arguments, and all
/// of it goes with the collection.
const MAX_ANSWERS: usize = 16;

impl FromDevices {
    /// What is kept for `devices`, computing its name order first when the collection is not the one kept.
    fn derived(&self, devices: &Items) -> MutexGuard<'_, Option<Derived>> {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.as_ref().is_none_or(|d| !std::ptr::eq(d.of.as_ptr(), Arc::as_ptr(devices))) {
            let mut by_name: Vec<(u32, Option<&str>)> =
                devices.iter().enumerate().map(|(i, d)| (i as u32, d["name"].as_str())).collect();
            // Stable: devices with the same name (or none) stay in the collection's order.
            by_name.sort_by(|a, b| a.1.cmp(&b.1));
            let order = by_name.into_iter().map(|(i, _)| (i, DeviceStatus::of(&devices[i as usize]))).collect();
            *kept = Some(Derived { of: Arc::downgrade(devices), order, answers: HashMap::new() });
        }
        kept
    }

    fn order(&self, devices: &Items) -> Arc<[Ordered]> {
        self.derived(devices).as_ref().map(|d| d.order.clone()).unwrap_or_default()
    }

    fn answer(&self, devices: &Items, key: &str) -> Option<Arc<Map<String, Value>>> {
        self.derived(devices).as_ref()?.answers.get(key).cloned()
    }

    #[cfg(test)]
    pub(super) fn answers_kept(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).as_ref().map_or(0, |d| d.answers.len())
    }

    fn keep(&self, devices: &Items, key: String, answer: Arc<Map<String, Value>>) {
        if let Some(d) = self.derived(devices).as_mut() {
            if d.answers.len() >= MAX_ANSWERS {
                d.answers.clear();
            }
            d.answers.insert(key, answer);
        }
    }
}
