//! The typed Xyte Organization API client. Each method runs its HTTP work on a blocking thread through
//! [`Transport`], follows pagination to the end, and returns models or a stable [`Error`].

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::endpoints::segment;
use super::limiter::Priority;
use super::model::*;
use super::transport::{Call, Transport};
use crate::config::{Secret, XyteCredential};
use crate::error::{Error, ErrorCode};

/// The credential kinds Xyte accepts (user token, OAuth token, API key).
pub type Credential = XyteCredential;

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub base_url: String,
    pub credential: Credential,
    pub request_timeout: Duration,
    pub rate_limit_per_min: u32,
}

/// Xyte allows at most 31 days per history request.
pub const HISTORY_WINDOW: Duration = Duration::from_secs(31 * 86_400);
/// A runaway pagination (a server that always says "more") stops here.
const MAX_PAGES: u32 = 1000;

#[derive(Clone)]
pub struct XyteClient {
    transport: Arc<Transport>,
    base_url: Arc<str>,
}

impl std::fmt::Debug for XyteClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XyteClient").field("base_url", &self.base_url).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
    pub device_id: Option<String>,
    pub space_id: Option<String>,
    pub status: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct IncidentQuery {
    pub status: Option<String>,
    pub priority: Option<String>,
    pub space_id: Option<String>,
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
}

/// The body of `POST /devices/:id/commands`, and what the outbox stores of a queued command.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct SendCommand {
    pub command: String,
    pub friendly_name: Option<String>,
    pub extra_params: Option<Value>,
    pub file_id: Option<String>,
}

/// `command` is what current Xyte reads; `name` (the same value) is what older servers read. Keys in sorted order,
/// as serde_json wrote the `Value` this replaced: outbox rows stored before keep the same text.
impl serde::Serialize for SendCommand {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("command", &self.command)?;
        m.serialize_entry("extra_params", self.extra_params.as_ref().unwrap_or(&json!({})))?;
        if let Some(f) = &self.file_id {
            m.serialize_entry("file_id", f)?;
        }
        if let Some(f) = &self.friendly_name {
            m.serialize_entry("friendly_name", f)?;
        }
        m.serialize_entry("name", &self.command)?;
        m.end()
    }
}

fn decode<T: DeserializeOwned>(v: Value) -> Result<T, Error> {
    serde_json::from_value(v).map_err(|e| {
        Error::new(ErrorCode::XyteServerError, format!("Xyte sent a response of an unexpected shape: {e}"))
    })
}

/// Decides whether another page follows (Xyte's list endpoints use either form): `next_page` (number or null) or
/// `has_next_page` (bool), and a short page always ends the walk.
pub fn has_more(body: &Value, got: usize, per_page: usize) -> bool {
    if got < per_page {
        return false;
    }
    match (body.get("next_page"), body.get("has_next_page")) {
        (Some(Value::Null), _) => false,
        (Some(Value::Number(_) | Value::String(_)), _) => true,
        (_, Some(Value::Bool(b))) => *b,
        // Neither field: keep going while pages are full; an empty page ends it.
        _ => got > 0,
    }
}

fn epoch(t: OffsetDateTime) -> String {
    t.unix_timestamp().to_string()
}

/// Splits [from, to] into consecutive windows of at most 31 days.
pub fn history_windows(from: OffsetDateTime, to: OffsetDateTime) -> Vec<(OffsetDateTime, OffsetDateTime)> {
    let mut out = Vec::new();
    let mut start = from;
    while start < to {
        let end = (start + HISTORY_WINDOW).min(to);
        out.push((start, end));
        start = end;
    }
    if out.is_empty() {
        out.push((from, to));
    }
    out
}

impl XyteClient {
    pub fn new(config: ClientConfig) -> Result<Self, Error> {
        let authorization = match &config.credential {
            XyteCredential::ApiKey(k) | XyteCredential::UserToken(k) => k.expose().clone(),
            XyteCredential::OAuth(t) => format!("Bearer {}", t.expose()),
        };
        if authorization.is_empty() || authorization.chars().any(|c| c.is_control()) {
            return Err(Error::new(
                ErrorCode::InvalidParams,
                "the Xyte credential is empty or contains control characters",
            ));
        }
        let transport = Transport::new(
            &config.base_url,
            Secret::new(authorization),
            config.request_timeout,
            config.rate_limit_per_min,
        );
        Ok(XyteClient { transport: Arc::new(transport), base_url: config.base_url.into() })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The longest one call to Xyte may take, retries included.
    pub fn call_budget(&self) -> std::time::Duration {
        self.transport.budget()
    }

    /// Takes an upstream token only if one is free now, for a caller that can answer from the cache instead.
    pub fn try_reserve(&self, prio: Priority) -> bool {
        self.transport.limiter.try_acquire(prio)
    }

    /// Any call, by method and path relative to the base URL (used by the endpoint catalogue).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        query: &[(String, String)],
        body: Option<Value>,
        prio: Priority,
    ) -> Result<Value, Error> {
        let transport = self.transport.clone();
        let (method, path, query) = (method.to_ascii_uppercase(), path.to_string(), query.to_vec());
        tokio::task::spawn_blocking(move || {
            transport.call(&Call { method: &method, path: &path, query: &query, body: body.as_ref(), prio })
        })
        .await
        .map_err(|e| Error::internal(format!("upstream worker failed: {e}")))?
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(String, String)],
        prio: Priority,
    ) -> Result<T, Error> {
        decode(self.request("GET", path, query, None, prio).await?)
    }

    /// Walks `items` pages to the end.
    async fn paginate<T: DeserializeOwned>(
        &self,
        path: &str,
        mut query: Vec<(String, String)>,
        per_page: usize,
        prio: Priority,
    ) -> Result<Vec<T>, Error> {
        let mut out = Vec::new();
        query.push(("per_page".into(), per_page.to_string()));
        for page in 1..=MAX_PAGES {
            let mut q = query.clone();
            q.push(("page".into(), page.to_string()));
            let body = self.request("GET", path, &q, None, prio).await?;
            let items = match body.get("items").or_else(|| body.get("data")) {
                Some(Value::Array(items)) => items.clone(),
                _ if body.is_array() => body.as_array().cloned().unwrap_or_default(),
                _ => {
                    return Err(Error::new(
                        ErrorCode::XyteServerError,
                        format!("Xyte's {path} answer has no items list"),
                    ));
                }
            };
            let got = items.len();
            for item in items {
                out.push(decode(item)?);
            }
            if !has_more(&body, got, per_page) {
                return Ok(out);
            }
        }
        tracing::warn!(path, "pagination stopped after {MAX_PAGES} pages");
        Ok(out)
    }

    pub async fn info(&self, prio: Priority) -> Result<OrgInfo, Error> {
        self.get("info", &[], prio).await
    }

    pub async fn list_devices(&self, space_id: Option<i64>, prio: Priority) -> Result<Vec<Device>, Error> {
        let query = space_id.map(|s| vec![("space_id".to_string(), s.to_string())]).unwrap_or_default();
        self.paginate("devices", query, 100, prio).await
    }

    pub async fn get_device(&self, id: &str, prio: Priority) -> Result<Device, Error> {
        self.get(&format!("devices/{}", segment(id)), &[], prio).await
    }

    pub async fn update_device(&self, id: &str, patch: Value, prio: Priority) -> Result<Device, Error> {
        let v = self.request("PATCH", &format!("devices/{}", segment(id)), &[], Some(patch), prio).await?;
        decode(v)
    }

    pub async fn delete_device(&self, id: &str, prio: Priority) -> Result<Value, Error> {
        self.request("DELETE", &format!("devices/{}", segment(id)), &[], None, prio).await
    }

    pub async fn claim_device(&self, body: Value, prio: Priority) -> Result<Device, Error> {
        decode(self.request("POST", "devices/claim", &[], Some(body), prio).await?)
    }

    /// History rows over any range: split into ≤ 31-day windows, each paginated, merged oldest first, de-duplicated.
    pub async fn list_histories(&self, q: HistoryQuery, prio: Priority) -> Result<Vec<HistoryRow>, Error> {
        let to = q.to.unwrap_or_else(OffsetDateTime::now_utc);
        let from = q.from.unwrap_or(to - time::Duration::days(7));
        if from > to {
            return Err(Error::invalid_params("`from` is after `to`"));
        }
        let mut filters = Vec::new();
        for (k, v) in [("device_id", &q.device_id), ("space_id", &q.space_id), ("status", &q.status), ("name", &q.name)]
        {
            if let Some(v) = v {
                filters.push((k.to_string(), v.clone()));
            }
        }
        let mut rows: Vec<HistoryRow> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (a, b) in history_windows(from, to) {
            let mut query = filters.clone();
            query.push(("from".into(), epoch(a)));
            query.push(("to".into(), epoch(b)));
            for row in self.paginate::<HistoryRow>("devices/histories", query, 1000, prio).await? {
                // Windows share their boundary second; the same row may come twice.
                if seen.insert(serde_json::to_string(&row).unwrap_or_default()) {
                    rows.push(row);
                }
            }
        }
        rows.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        Ok(rows)
    }

    /// The newest commands of a device (one page of `per_page`, newest first as Xyte returns them).
    pub async fn list_commands(
        &self,
        device_id: &str,
        status: Option<&str>,
        per_page: usize,
        prio: Priority,
    ) -> Result<Vec<Command>, Error> {
        let mut query = vec![("page".to_string(), "1".to_string()), ("per_page".to_string(), per_page.to_string())];
        if let Some(s) = status {
            query.push(("status".into(), s.into()));
        }
        let body = self.request("GET", &format!("devices/{}/commands", segment(device_id)), &query, None, prio).await?;
        match body.get("items").or(Some(&body)) {
            Some(Value::Array(items)) => items.iter().cloned().map(decode).collect(),
            _ => Err(Error::new(ErrorCode::XyteServerError, "Xyte's command list has no items")),
        }
    }

    pub async fn send_command(&self, device_id: &str, cmd: SendCommand, prio: Priority) -> Result<Command, Error> {
        let v = self
            .request("POST", &format!("devices/{}/commands", segment(device_id)), &[], Some(json!(cmd)), prio)
            .await?;
        let sent: Command = decode(v)?;
        if sent.id.is_empty() {
            return Err(Error::new(ErrorCode::XyteServerError, "Xyte accepted the command but returned no command id"));
        }
        Ok(sent)
    }

    pub async fn cancel_command(&self, device_id: &str, command_id: &str, prio: Priority) -> Result<Value, Error> {
        let path = format!("devices/{}/commands/{}", segment(device_id), segment(command_id));
        self.request("DELETE", &path, &[], None, prio).await
    }

    pub async fn list_spaces(&self, prio: Priority) -> Result<Vec<Space>, Error> {
        self.paginate("spaces", Vec::new(), 100, prio).await
    }

    pub async fn get_space(&self, id: &str, prio: Priority) -> Result<Space, Error> {
        self.get(&format!("spaces/{}", segment(id)), &[], prio).await
    }

    pub async fn list_incidents(&self, q: IncidentQuery, prio: Priority) -> Result<Vec<Incident>, Error> {
        // Explicit bounds: some Xyte environments return nothing when they are omitted.
        let to = q.to.unwrap_or_else(OffsetDateTime::now_utc);
        let mut query =
            vec![("from".to_string(), q.from.map(epoch).unwrap_or_else(|| "0".into())), ("to".to_string(), epoch(to))];
        for (k, v) in [("status", &q.status), ("priority", &q.priority), ("space_id", &q.space_id)] {
            if let Some(v) = v {
                query.push((k.to_string(), v.clone()));
            }
        }
        self.paginate("incidents", query, 100, prio).await
    }

    pub async fn close_incident(&self, id: &str, prio: Priority) -> Result<Value, Error> {
        self.request("DELETE", &format!("incidents/{}", segment(id)), &[], None, prio).await
    }

    /// Open tickets (Xyte returns a bare array).
    pub async fn list_tickets(&self, prio: Priority) -> Result<Vec<Ticket>, Error> {
        let body = self.request("GET", "tickets", &[], None, prio).await?;
        match body {
            Value::Array(items) => items.into_iter().map(decode).collect(),
            Value::Object(ref o) if o.get("items").is_some_and(Value::is_array) => decode(o["items"].clone()),
            _ => Err(Error::new(ErrorCode::XyteServerError, "Xyte's ticket list is not a list")),
        }
    }

    pub async fn get_ticket(&self, id: &str, prio: Priority) -> Result<Ticket, Error> {
        self.get(&format!("tickets/{}", segment(id)), &[], prio).await
    }

    pub async fn update_ticket(
        &self,
        id: &str,
        title: Option<&str>,
        description: Option<&str>,
        prio: Priority,
    ) -> Result<Value, Error> {
        let mut body = json!({});
        if let Some(t) = title {
            body["title"] = json!(t);
        }
        if let Some(d) = description {
            body["description"] = json!(d);
        }
        self.request("PUT", &format!("tickets/{}", segment(id)), &[], Some(body), prio).await
    }

    pub async fn resolve_ticket(&self, id: &str, prio: Priority) -> Result<Value, Error> {
        self.request("POST", &format!("tickets/{}/resolved", segment(id)), &[], None, prio).await
    }

    /// Sends the message both ways Xyte has documented: as `?message=` and as a JSON body.
    pub async fn ticket_message(&self, id: &str, message: &str, prio: Priority) -> Result<Value, Error> {
        let query = [("message".to_string(), message.to_string())];
        self.request(
            "POST",
            &format!("tickets/{}/message", segment(id)),
            &query,
            Some(json!({"message": message})),
            prio,
        )
        .await
    }

    pub async fn get_model(&self, id: &str, prio: Priority) -> Result<DeviceModel, Error> {
        self.get(&format!("models/{}", segment(id)), &[], prio).await
    }

    pub async fn list_models(&self, prio: Priority) -> Result<Vec<DeviceModel>, Error> {
        self.paginate("models", Vec::new(), 100, prio).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagination_termination() {
        assert!(has_more(&json!({"next_page": 2}), 100, 100));
        assert!(!has_more(&json!({"next_page": null}), 100, 100));
        assert!(has_more(&json!({"has_next_page": true}), 100, 100));
        assert!(!has_more(&json!({"has_next_page": false}), 100, 100));
        assert!(!has_more(&json!({"has_next_page": true}), 50, 100), "a short page ends the walk");
        assert!(has_more(&json!({}), 100, 100));
        assert!(!has_more(&json!({}), 0, 0));
    }

    #[test]
    fn seventy_days_make_three_contiguous_windows() {
        let to = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let from = to - time::Duration::days(70);
        let w = history_windows(from, to);
        assert_eq!(w.len(), 3);
        assert_eq!((w[0].0, w[2].1), (from, to));
        for pair in w.windows(2) {
            assert_eq!(pair[0].1, pair[1].0, "no gaps");
        }
        assert!(w.iter().all(|(a, b)| (*b - *a).whole_seconds() <= 31 * 86_400));
        assert_eq!(history_windows(to, to).len(), 1);
    }

    #[test]
    fn command_body_carries_both_keys() {
        let body = json!(SendCommand { command: "reboot".into(), ..Default::default() });
        assert_eq!(body, json!({"command":"reboot","name":"reboot","extra_params":{}}));
    }
}
