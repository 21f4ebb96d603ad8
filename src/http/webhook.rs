//! `POST /v1/webhook`: an external system (Xyte, a building system, a script) pushes an event.
//!
//! Authenticated by `X-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>` keyed with `XYTE_WEBHOOK_SECRET`
//! (checked in constant time), or by an `operator` bearer token. The delivery is committed with full durability —
//! its receipt and its `webhook.received` event in one transaction — before `202 Accepted`, so an acknowledged
//! delivery survives a power cut, and a repeated delivery id is stored once.

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use ring::{digest, hmac};
use serde_json::{Map, Value, json};

use super::auth::{Caller, Rejection, authenticate};
use super::body::{BodyLimit, read_limited};
use super::response::{Body, error_response, json_response, unauthenticated};
use super::state::{Http, Peer};
use crate::config::{Role, Secret};
use crate::error::{Error, ErrorCode};
use crate::runtime::App;
use crate::store::events::NewEvent;
use crate::store::{Durability, now_ms, webhooks};

/// Largest webhook body accepted (README, The LAN API: Limits).
const MAX_BODY: usize = 256 * 1024;
/// Longest `type` and `id` accepted: they are labels, not payload.
const MAX_LABEL: usize = 256;
const SIGNATURE_HEADER: &str = "x-signature-256";
const HOW_TO_AUTHENTICATE: &str = "send X-Signature-256: sha256=<hex HMAC-SHA256 of the raw body keyed with \
                                   XYTE_WEBHOOK_SECRET>, or Authorization: Bearer <operator token>";

pub async fn receive(http: &Http, peer: Peer, req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::POST {
        let mut r = error_response(&Error::invalid_params("method not allowed here; use POST"));
        *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let ip = peer.addr.ip();
    if let Err(e) = http.limiter.check(ip) {
        return error_response(&e);
    }
    let authorization = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(String::from);
    // Header bytes that are not text cannot be a valid signature; keep them as "present but wrong".
    let signature = req.headers().get(SIGNATURE_HEADER).map(|v| v.to_str().map(str::to_string).unwrap_or_default());

    // Without a signature a token decides, before the body is read.
    let mut via = None;
    if signature.is_none() {
        match by_token(http, peer, authorization.as_deref()).await {
            Ok(who) => via = Some(who),
            Err(r) => return r,
        }
    }
    let raw = match read_body(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Some(signature) = &signature {
        match check_signature(http.webhook_secret.as_ref(), signature, &raw) {
            Ok(()) => via = Some("signature".to_string()),
            // A wrong signature may still come with a good token.
            Err(reason) if authorization.is_some() => {
                tracing::debug!(peer = %ip, reason, "webhook signature not accepted; trying the bearer token");
                match by_token(http, peer, authorization.as_deref()).await {
                    Ok(who) => via = Some(who),
                    Err(r) => return r,
                }
            }
            Err(reason) => {
                http.limiter.failed(ip).await;
                return unauthenticated(reason);
            }
        }
    }
    accept(&http.app, &raw, &via.unwrap_or_default()).await
}

/// The fuzzing entry point (`tests/fuzz`, target `webhook`): what [`receive`] does with a signed delivery once hyper
/// has read it — the signature check against `secret`, then parsing, event mapping and the durable commit — answering
/// exactly as [`receive`] would. Token authentication and the body limit stay with [`receive`].
pub async fn receive_signed(app: &App, secret: Option<&Secret<String>>, signature: &str, raw: &[u8]) -> Response<Body> {
    match check_signature(secret, signature, raw) {
        Ok(()) => accept(app, raw, "signature").await,
        Err(reason) => unauthenticated(reason),
    }
}

/// An authenticated delivery: parsed, mapped to its event and stored.
async fn accept(app: &App, raw: &[u8], via: &str) -> Response<Body> {
    let delivery = match Delivery::parse(raw) {
        Ok(d) => d,
        Err(reason) => return error_response(&Error::invalid_params(reason)),
    };
    store(app, delivery, raw, via).await
}

/// The caller's principal id when its bearer token has at least the `operator` role.
async fn by_token(http: &Http, peer: Peer, authorization: Option<&str>) -> Result<String, Response<Body>> {
    match authenticate(&http.app, &http.limiter, &http.known_tokens, peer.addr.ip(), authorization).await {
        Ok(Caller::Token(p)) if p.role >= Role::Operator => Ok(p.id),
        Ok(Caller::Token(p)) => Err(error_response(
            &Error::new(
                ErrorCode::PermissionDenied,
                format!("{} has role {}; posting webhooks needs operator or admin", p.id, p.role),
            )
            .with_hint("use an operator token, or sign the body with XYTE_WEBHOOK_SECRET (X-Signature-256)"),
        )),
        Ok(Caller::Anonymous) => Err(unauthenticated(&format!("authentication required: {HOW_TO_AUTHENTICATE}"))),
        Err(Rejection::Unauthenticated(m)) => Err(unauthenticated(&m)),
        Err(Rejection::Refused(e)) => Err(error_response(&e)),
    }
}

/// Verifies `sha256=<hex>` against the HMAC-SHA256 of `body` in constant time.
fn check_signature(secret: Option<&Secret<String>>, header: &str, body: &[u8]) -> Result<(), &'static str> {
    let Some(secret) = secret else {
        return Err("X-Signature-256 cannot be checked: XYTE_WEBHOOK_SECRET is not set on this gateway; use an \
                    operator token");
    };
    let header = header.trim();
    let hex = match header.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("sha256=") => &header[7..],
        _ => return Err("X-Signature-256 must be `sha256=` followed by the hex HMAC-SHA256 of the raw body"),
    };
    let tag = decode_hex(hex)
        .filter(|t| t.len() == digest::SHA256_OUTPUT_LEN)
        .ok_or("X-Signature-256 must be `sha256=` followed by 64 hex digits")?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.expose().as_bytes());
    hmac::verify(&key, body, &tag).map_err(|_| "X-Signature-256 does not match the body (wrong secret or altered body)")
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect()
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The raw body, at most [`MAX_BODY`] bytes (413 beyond).
async fn read_body(req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    const LIMIT: BodyLimit = BodyLimit {
        bytes: MAX_BODY,
        what: "the webhook body",
        hint: Some("send the event's essentials and let the receiver fetch details"),
    };
    read_limited(req.into_body(), &LIMIT).await
}

/// A delivery (README, The LAN API: Webhook): `{ "type": "...", "data": {...}, "id"?: "..." }`.
#[derive(Debug, PartialEq)]
struct Delivery {
    kind: String,
    id: Option<String>,
    data: Value,
    /// Other top-level fields, kept rather than dropped.
    extra: Map<String, Value>,
}

const SHAPE: &str = "expected a JSON object {\"type\": \"...\", \"data\": {...}, \"id\"?: \"...\"}";

impl Delivery {
    fn parse(raw: &[u8]) -> Result<Delivery, String> {
        let mut body = match serde_json::from_slice::<Value>(raw) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err(format!("the body is JSON but not an object; {SHAPE}")),
            Err(e) => return Err(format!("the body is not valid JSON ({e}); {SHAPE}")),
        };
        let kind = match body.remove("type") {
            Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= MAX_LABEL => s,
            Some(Value::String(s)) if s.len() > MAX_LABEL => {
                return Err(format!("`type` is longer than {MAX_LABEL} characters"));
            }
            Some(Value::String(_)) => return Err("`type` must not be empty".into()),
            None | Some(Value::Null) => return Err(format!("`type` is missing; {SHAPE}")),
            Some(_) => return Err("`type` must be a string".into()),
        };
        let data = match body.remove("data") {
            None | Some(Value::Null) => json!({}),
            Some(v @ Value::Object(_)) => v,
            Some(_) => return Err("`data` must be a JSON object".into()),
        };
        let id = match body.remove("id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= MAX_LABEL => Some(s),
            Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Some(n.to_string()),
            Some(Value::String(s)) if s.len() > MAX_LABEL => {
                return Err(format!("`id` is longer than {MAX_LABEL} characters"));
            }
            Some(_) => return Err("`id` must be a non-empty string (the delivery id)".into()),
        };
        Ok(Delivery { kind, id, data, extra: body })
    }

    /// The `webhook.received` event: `{type, id, data}`; `device_id`/`space_id` from `data` so stream filters work.
    fn event(&self, id: &str) -> NewEvent {
        let mut data = json!({"type": self.kind, "id": id, "data": self.data});
        if !self.extra.is_empty() {
            data["extra"] = Value::Object(self.extra.clone());
        }
        let text = |k: &str| self.data.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(String::from);
        let mut event = NewEvent::new("webhook.received", data).space(text("space_id"));
        if let Some(device) = text("device_id") {
            event = event.device(device);
        }
        event
    }
}

/// Commits the receipt and (for a new id) its event with full durability, broadcasts the event, answers 202.
async fn store(app: &App, delivery: Delivery, raw: &[u8], via: &str) -> Response<Body> {
    let id = delivery.id.clone().unwrap_or_else(|| to_hex(digest::digest(&digest::SHA256, raw).as_ref()));
    let event = delivery.event(&id);
    let key = id.clone();
    let receipt = match app.store.write(Durability::Full, move |c| webhooks::receive(c, &key, now_ms(), event)).await {
        Ok(r) => r,
        // 507, not 202: the sender keeps the delivery and retries; the store already logged the full disk.
        Err(e) if e.is_disk_full() => {
            tracing::warn!(error = %e, "webhook refused: disk full");
            return error_response(
                &Error::new(ErrorCode::StorageFull, format!("{e}; the delivery was not stored"))
                    .with_hint("retry the delivery later; it is accepted again once space is freed"),
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "webhook not stored");
            return error_response(
                &Error::internal(format!("the webhook could not be stored: {e}"))
                    .with_hint("retry the delivery; nothing was recorded"),
            );
        }
    };
    if let Some(event) = &receipt.event {
        app.bus.broadcast(std::slice::from_ref(event));
    }
    let duplicate = receipt.duplicate();
    tracing::debug!(r#type = %delivery.kind, id = %id, duplicate, event_id = ?receipt.event_id, via, "webhook received");
    json_response(
        StatusCode::ACCEPTED,
        &json!({"accepted": true, "id": id, "duplicate": duplicate, "event_id": receipt.event_id,
                "received_at": rfc3339(receipt.received_at)}),
    )
}

fn rfc3339(ms: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    t.format(&time::format_description::well_known::Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, body: &[u8]) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        format!("sha256={}", to_hex(hmac::sign(&key, body).as_ref()))
    }

    #[test]
    fn signatures_are_checked_against_the_raw_body() {
        let secret = Secret::new("a-long-test-secret-123".to_string());
        let body = br#"{"type":"t"}"#;
        let good = sign("a-long-test-secret-123", body);
        assert_eq!(check_signature(Some(&secret), &good, body), Ok(()));
        assert_eq!(check_signature(Some(&secret), &good.to_uppercase().replace("SHA256=", "sha256="), body), Ok(()));
        assert!(check_signature(Some(&secret), &good, br#"{"type":"u"}"#).unwrap_err().contains("does not match"));
        assert!(check_signature(Some(&secret), &sign("other-secret-0000", body), body).is_err());
        assert!(check_signature(Some(&secret), "sha256=abc", body).unwrap_err().contains("64 hex"));
        assert!(check_signature(Some(&secret), "sha1=00", body).unwrap_err().contains("sha256="));
        assert!(check_signature(Some(&secret), "sha256=zz", body).is_err());
        assert!(check_signature(None, &good, body).unwrap_err().contains("XYTE_WEBHOOK_SECRET"));
    }

    #[test]
    fn deliveries_must_have_the_documented_shape() {
        let d = Delivery::parse(br#"{"type":"device.offline","data":{"device_id":"d1"},"id":"x-1","ts":5}"#).unwrap();
        assert_eq!((d.kind.as_str(), d.id.as_deref()), ("device.offline", Some("x-1")));
        assert_eq!(d.extra, json!({"ts": 5}).as_object().unwrap().clone());
        let ev = d.event("x-1");
        assert_eq!(ev.device_id.as_deref(), Some("d1"));
        assert_eq!(
            ev.data,
            json!({"type": "device.offline", "id": "x-1", "data": {"device_id": "d1"}, "extra": {"ts": 5}})
        );
        assert_eq!(Delivery::parse(br#"{"type":"t"}"#).unwrap().data, json!({}));
        assert_eq!(Delivery::parse(br#"{"type":"t","id":42}"#).unwrap().id.as_deref(), Some("42"));
        for (body, reason) in [
            (&br#"{"type":"#[..], "not valid JSON"),
            (br#"[1]"#, "not an object"),
            (br#"{"data":{}}"#, "`type` is missing"),
            (br#"{"type":""}"#, "must not be empty"),
            (br#"{"type":7}"#, "`type` must be a string"),
            (br#"{"type":"t","data":[]}"#, "`data` must be a JSON object"),
            (br#"{"type":"t","id":""}"#, "`id` must be"),
        ] {
            let e = Delivery::parse(body).unwrap_err();
            assert!(e.contains(reason), "{}: {e}", String::from_utf8_lossy(body));
        }
        assert_eq!(to_hex(&decode_hex("00ff7a").unwrap()), "00ff7a");
        assert!(decode_hex("0").is_none());
    }

    /// The inputs the fuzz target `webhook` keeps (tests/fuzz: `regressions/` once failed it, `corpus/` are its
    /// seeds), read as the target reads them (first byte: bit 0 sign the rest, else header line then body; bit 1 no
    /// secret): the signature check and, for a signed body, parsing and event mapping must not panic.
    #[test]
    fn fuzz_inputs_are_answered() {
        const SECRET: &str = "fuzzing-webhook-secret-0123456789";
        let fuzz = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz");
        let mut seen = 0;
        for kind in ["regressions", "corpus"] {
            // An empty `regressions/<target>` is not in git, hence not there at all.
            for entry in std::fs::read_dir(fuzz.join(kind).join("webhook")).into_iter().flatten() {
                let input = std::fs::read(entry.unwrap().path()).unwrap();
                let Some((&options, rest)) = input.split_first() else { continue };
                let (header, body) = if options & 1 != 0 {
                    (sign(SECRET, rest), rest)
                } else {
                    let split = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
                    let header = std::str::from_utf8(&rest[..split]).unwrap_or_default().to_string();
                    (header, rest.get(split + 1..).unwrap_or_default())
                };
                let secret = (options & 2 == 0).then(|| Secret::new(SECRET.to_string()));
                if check_signature(secret.as_ref(), &header, body).is_ok()
                    && let Ok(delivery) = Delivery::parse(body)
                {
                    let event = delivery.event(delivery.id.as_deref().unwrap_or("sha"));
                    assert_eq!(event.data["type"], delivery.kind);
                }
                seen += 1;
            }
        }
        assert!(seen >= 4, "only {seen} fuzz inputs for webhook found under {}", fuzz.display());
    }
}
