//! `/mcp` and `/v1/mcp`: MCP over Streamable HTTP, on the same protocol sessions as the Unix socket.
//!
//! Legacy era (2025-03-26 … 2025-11-25): `initialize` creates a session named by `Mcp-Session-Id`; each POSTed
//! request is answered as JSON, or as an SSE stream when it asked for progress; GET opens the session's stream for
//! server-initiated notifications (resource updates, log messages); DELETE ends it.
//! Modern era (2026-07-28): stateless. Each POST is one request on a throw-away session; the `Mcp-Method` /
//! `Mcp-Name` / `MCP-Protocol-Version` headers must agree with the body; closing the response stream cancels.
//! Every request needs a bearer token, a `Host` on the allow-list and, when present, an allowed `Origin`.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::body::{BodyLimit, Chunk, channel, read_limited, sse_message};
use super::response::{Body, error_with_status, full, json_response, sse_response, wants_sse};
use super::state::{Http, Legacy, Peer, Routes, require_token};
use crate::error::Error;
use crate::mcp::jsonrpc::{self, RpcError};
use crate::mcp::outgoing::{self, Kind, Outgoing, Room};
use crate::mcp::session::Session;
use crate::mcp::{LEGACY_VERSIONS, MAX_MESSAGE, MODERN_VERSION};
use crate::runtime::Principal;

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// Frames an SSE response may have waiting for a slow client (their bytes also count against the session's queue).
const STREAM_BUFFER: usize = 32;

fn key(id: &Value) -> String {
    id.to_string()
}

fn rpc_response(status: StatusCode, id: Option<&Value>, error: RpcError) -> Response<Body> {
    let id = id.and_then(|v| serde_json::from_value::<jsonrpc::Id>(v.clone()).ok());
    json_response(status, &jsonrpc::error(id.as_ref(), &error))
}

fn plain_error(status: StatusCode, message: &str) -> Response<Body> {
    error_with_status(status, &Error::invalid_params(message.to_string()))
}

pub async fn handle(http: &Http, peer: Peer, req: Request<Incoming>) -> (Option<String>, Response<Body>) {
    if let Err(r) = check_host_and_origin(http, req.uri(), req.headers()) {
        return (None, *r);
    }
    let principal = match require_token(http, peer, req.headers()).await {
        Ok(p) => p,
        Err(r) => return (None, *r),
    };
    let who = Some(principal.id.clone());
    let response = match *req.method() {
        Method::POST => post(http, principal, req).await,
        Method::GET => open_stream(http, &principal, req.headers()),
        Method::DELETE => end_session(http, &principal, req.headers()),
        _ => {
            let mut r = plain_error(StatusCode::METHOD_NOT_ALLOWED, "use POST, GET or DELETE");
            r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST, GET, DELETE"));
            r
        }
    };
    (who, response)
}

/// DNS-rebinding defence: the `Host` must be one of this gateway's names (any port), and a browser's `Origin`, when
/// sent, must name one too. HTTP/2 carries the host as the `:authority` pseudo-header, which hyper puts in the URI.
fn check_host_and_origin(http: &Http, uri: &hyper::Uri, headers: &HeaderMap) -> Result<(), Box<Response<Body>>> {
    let allowed = |host: &str| {
        let host = host.trim().to_ascii_lowercase();
        let name = match host.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) && !h.ends_with(':') => h.to_string(),
            _ => host.clone(),
        };
        http.allowed_hosts.iter().any(|a| *a == name || *a == host)
    };
    let host = uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| headers.get(header::HOST).and_then(|v| v.to_str().ok()))
        .unwrap_or("");
    if !allowed(host) {
        return Err(Box::new(plain_error(
            StatusCode::FORBIDDEN,
            &format!("Host {host:?} is not allowed (XYTE_ALLOWED_HOSTS)"),
        )));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let authority = origin.split_once("://").map(|(_, rest)| rest).unwrap_or("");
        if !allowed(authority) {
            return Err(Box::new(plain_error(StatusCode::FORBIDDEN, &format!("Origin {origin:?} is not allowed"))));
        }
    }
    Ok(())
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn post(http: &Http, principal: Principal, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    const LIMIT: BodyLimit = BodyLimit { bytes: MAX_MESSAGE, what: "the message", hint: None };
    let bytes = match read_limited(body, &LIMIT).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let msg: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            let error = RpcError::new(jsonrpc::PARSE_ERROR, format!("parse error: {e}"));
            return rpc_response(StatusCode::BAD_REQUEST, None, error);
        }
    };
    if !msg.is_object() && !msg.is_array() {
        let error = RpcError::new(jsonrpc::INVALID_REQUEST, "invalid request: a message must be a JSON object");
        return rpc_response(StatusCode::BAD_REQUEST, None, error);
    }
    let header_version = header_str(&parts.headers, VERSION_HEADER);
    let body_version = msg.pointer("/params/_meta").and_then(|m| m.get(META_VERSION)).and_then(Value::as_str);
    if header_version == Some(MODERN_VERSION) || body_version.is_some() {
        modern(http, principal, &parts.headers, msg, bytes).await
    } else {
        legacy(http, principal, &parts.headers, msg, bytes).await
    }
}

// ---- modern (stateless) ----------------------------------------------------------------------------------------

/// Decodes the `=?base64?…?=` form of a header value (RFC 2047 style, as the modern transport uses for non-ASCII).
fn header_value(raw: &str) -> Option<String> {
    match raw.strip_prefix("=?base64?").and_then(|r| r.strip_suffix("?=")) {
        Some(b64) => base64_decode(b64).and_then(|b| String::from_utf8(b).ok()),
        None => Some(raw.to_string()),
    }
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// The headers a modern request must carry, checked against its body.
fn check_modern_headers(headers: &HeaderMap, msg: &Value) -> Result<(), (StatusCode, RpcError)> {
    let mismatch = |what: String| Err((StatusCode::BAD_REQUEST, RpcError::new(jsonrpc::HEADER_MISMATCH, what)));
    let body_version = msg.pointer("/params/_meta").and_then(|m| m.get(META_VERSION)).and_then(Value::as_str);
    let Some(version) = header_str(headers, VERSION_HEADER) else {
        return mismatch(format!("the {VERSION_HEADER} header is required"));
    };
    if version != MODERN_VERSION && !LEGACY_VERSIONS.contains(&version) {
        // As `server/discover` says: `_meta` may name only the modern version (legacy ones go through initialize).
        let supported = [MODERN_VERSION];
        let e =
            RpcError::new(jsonrpc::UNSUPPORTED_PROTOCOL_VERSION, format!("unsupported protocol version {version:?}"))
                .with_data(json!({"supported": supported, "requested": version}));
        return Err((StatusCode::BAD_REQUEST, e));
    }
    match body_version {
        None if msg.get("id").is_some() => {
            let e = RpcError::new(jsonrpc::INVALID_PARAMS, format!("params._meta[\"{META_VERSION}\"] is required"));
            return Err((StatusCode::BAD_REQUEST, e));
        }
        Some(v) if v != version => return mismatch(format!("{VERSION_HEADER} {version:?} differs from _meta {v:?}")),
        _ => {}
    }
    let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
    match header_str(headers, "mcp-method").and_then(header_value) {
        None => return mismatch("the Mcp-Method header is required".into()),
        Some(m) if m != method => return mismatch(format!("Mcp-Method {m:?} differs from the body's {method:?}")),
        _ => {}
    }
    let named = match method {
        "tools/call" | "prompts/get" => msg.pointer("/params/name"),
        "resources/read" => msg.pointer("/params/uri"),
        _ => None,
    };
    if let Some(name) = named.and_then(Value::as_str) {
        match header_str(headers, "mcp-name").and_then(header_value) {
            None => return mismatch("the Mcp-Name header is required for this method".into()),
            Some(n) if n != name => return mismatch(format!("Mcp-Name {n:?} differs from the body's {name:?}")),
            _ => {}
        }
    }
    Ok(())
}

/// The HTTP status a modern response with this error code travels with.
fn modern_status(error_code: Option<i64>) -> StatusCode {
    match error_code {
        Some(jsonrpc::METHOD_NOT_FOUND) => StatusCode::NOT_FOUND,
        Some(
            jsonrpc::INVALID_PARAMS
            | jsonrpc::HEADER_MISMATCH
            | jsonrpc::MISSING_CLIENT_CAPABILITY
            | jsonrpc::UNSUPPORTED_PROTOCOL_VERSION
            | jsonrpc::INVALID_REQUEST
            | jsonrpc::PARSE_ERROR,
        ) => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    }
}

async fn modern(http: &Http, principal: Principal, headers: &HeaderMap, msg: Value, bytes: Bytes) -> Response<Body> {
    if let Err((status, e)) = check_modern_headers(headers, &msg) {
        return rpc_response(status, msg.get("id"), e);
    }
    let Some(id) = msg.get("id").cloned() else {
        // A notification (cancellation has no meaning across stateless requests): accepted.
        return full(StatusCode::ACCEPTED, "application/json", Bytes::new());
    };
    let (tx, mut rx) = outgoing::queue();
    let session = Session::new(http.app.clone(), http.mcp_extension.clone(), principal, tx);
    session.receive(&bytes).await;
    let streaming = wants_sse(headers)
        && (msg.pointer("/params/_meta/progressToken").is_some()
            || msg.get("method").and_then(Value::as_str) == Some("subscriptions/listen"));
    if !streaming {
        // As in the legacy era, the first message decides between JSON and an SSE stream.
        while let Some(out) = rx.recv().await {
            if let Kind::Response { error_code, .. } = out.kind {
                return full(modern_status(error_code), "application/json", out.json());
            }
            if wants_sse(headers) {
                return stream_request(http, session, id, Some(out), rx, || {});
            }
        }
        return plain_error(StatusCode::INTERNAL_SERVER_ERROR, "the request ended without a response");
    }
    stream_request(http, session, id, None, rx, || {})
}

/// Streams what a request produces as SSE (`first`, if already received, then the rest) until its response has gone
/// out. If the client leaves (or the daemon stops) first, the request is cancelled: in Streamable HTTP, closing the
/// stream is cancellation.
fn stream_request(
    http: &Http,
    session: Arc<Session>,
    id: Value,
    first: Option<Outgoing>,
    mut rx: outgoing::Receiver,
    finished: impl FnOnce() + Send + 'static,
) -> Response<Body> {
    let (frames, body) = channel(STREAM_BUFFER);
    let shutdown = http.shutdown.clone();
    tokio::spawn(async move {
        let mut answered = false;
        let mut pending = first;
        loop {
            let out = match pending.take() {
                Some(m) => Some(m),
                None => tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = frames.closed() => break,
                    m = rx.recv() => m,
                },
            };
            let Some(out) = out else { break };
            answered = out.is_response();
            // Waits while the client reads nothing; a client that stops reading altogether is disconnected by the
            // connection's stall guard, which drops the body and ends this wait.
            if frames.send(sse_message(out)).await.is_err() || answered {
                break;
            }
        }
        finished();
        if !answered {
            let cancel = jsonrpc::notification("notifications/cancelled", json!({"requestId": id}));
            session.receive(cancel.to_string().as_bytes()).await;
        }
    });
    sse_response(body)
}

// ---- legacy (sessions) -----------------------------------------------------------------------------------------

/// Reads what a legacy session sends and delivers each message where it belongs: a response or a message tied to a
/// request (a tool's log line, its progress) to that request's POST while it waits, anything else to the GET stream.
fn dispatch(mut rx: outgoing::Receiver, routes: Arc<Mutex<Routes>>) {
    tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            let Ok(mut r) = routes.lock() else { return };
            let target = match &out.kind {
                Kind::Response { id, .. } => r.waiters.remove(id.as_deref().unwrap_or("null")),
                Kind::Batch => r.waiters.remove("[batch]"),
                Kind::Notification { related: Some(id), .. } => r.waiters.get(id).cloned(),
                Kind::Notification { progress, .. } => {
                    progress.as_ref().and_then(|t| r.progress.get(t)).and_then(|k| r.waiters.get(k)).cloned()
                }
            };
            match target {
                Some(w) => {
                    let _ = w.send(out);
                }
                None if !out.is_response() => {
                    if let Some(stream) = &r.stream
                        && stream.try_send(sse_message(out)).is_err()
                    {
                        // A GET stream that does not drain (or went away) is dropped; the client reopens it.
                        r.stream = None;
                    }
                }
                None => {}
            }
        }
    });
}

fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The session named by the request, or the response that says why there is none.
/// (Boxed: a response is large, and this is the uncommon path.)
fn session_of(
    http: &Http,
    principal: &Principal,
    headers: &HeaderMap,
) -> Result<(String, Arc<Legacy>), Box<Response<Body>>> {
    let Some(id) = header_str(headers, SESSION_HEADER) else {
        return Err(Box::new(plain_error(StatusCode::BAD_REQUEST, "Mcp-Session-Id is required after initialize")));
    };
    match http.mcp_sessions.get(id) {
        // Another token's session is reported as unknown: ids are not to be probed.
        Some(s) if s.principal == principal.id => Ok((id.to_string(), s)),
        _ => Err(Box::new(plain_error(StatusCode::NOT_FOUND, "unknown or expired MCP session; initialize again"))),
    }
}

async fn legacy(http: &Http, principal: Principal, headers: &HeaderMap, msg: Value, bytes: Bytes) -> Response<Body> {
    let is_initialize = msg.get("method").and_then(Value::as_str) == Some("initialize");
    let (session_id, legacy) = if is_initialize {
        let (tx, rx) = outgoing::queue();
        let routes = Arc::new(Mutex::new(Routes::default()));
        dispatch(rx, routes.clone());
        let session = Session::new(http.app.clone(), http.mcp_extension.clone(), principal.clone(), tx);
        let legacy = Arc::new(Legacy {
            session,
            principal: principal.id.clone(),
            version: Mutex::new(None),
            routes,
            last_used: Mutex::new(Instant::now()),
            _gauge: crate::metrics::mcp_connection("http"),
        });
        (new_session_id(), legacy)
    } else {
        match session_of(http, &principal, headers) {
            Ok(found) => found,
            Err(r) => return *r,
        }
    };
    if !is_initialize {
        let negotiated = legacy.version.lock().ok().and_then(|v| v.clone());
        if let (Some(sent), Some(agreed)) = (header_str(headers, VERSION_HEADER), negotiated)
            && sent != agreed
        {
            return plain_error(
                StatusCode::BAD_REQUEST,
                &format!("MCP-Protocol-Version {sent:?} differs from the session's {agreed:?}"),
            );
        }
    }
    let waiter_key = match (&msg, msg.get("id")) {
        (Value::Array(_), _) => Some("[batch]".to_string()),
        (_, Some(id)) if msg.get("method").is_some() => Some(key(id)),
        _ => None,
    };
    let Some(waiter_key) = waiter_key else {
        // Notifications and responses: accepted, nothing to answer.
        legacy.session.receive(&bytes).await;
        return full(StatusCode::ACCEPTED, "application/json", Bytes::new());
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let progress = msg.pointer("/params/_meta/progressToken").map(key);
    if let Ok(mut r) = legacy.routes.lock() {
        r.waiters.insert(waiter_key.clone(), tx);
        if let Some(p) = &progress {
            r.progress.insert(p.clone(), waiter_key.clone());
        }
    }
    legacy.session.receive(&bytes).await;
    let stream_progress = progress.is_some() && wants_sse(headers) && !is_initialize;
    let forget = {
        let routes = legacy.routes.clone();
        move || {
            if let Ok(mut r) = routes.lock() {
                r.waiters.remove(&waiter_key);
                if let Some(p) = &progress {
                    r.progress.remove(p);
                }
            }
        }
    };
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    if stream_progress {
        return stream_request(http, legacy.session.clone(), id, None, rx, forget);
    }
    // Otherwise the first message decides: the response goes back as JSON, while a notification tied to the request
    // (a tool's log line) turns the answer into an SSE stream that starts with it.
    let may_stream = wants_sse(headers) && !is_initialize;
    let response = loop {
        match rx.recv().await {
            Some(m) if m.is_response() => break Some(m),
            Some(n) if may_stream => return stream_request(http, legacy.session.clone(), id, Some(n), rx, forget),
            Some(_) => continue,
            None => break None,
        }
    };
    forget();
    let Some(response) = response else {
        return plain_error(StatusCode::INTERNAL_SERVER_ERROR, "the request ended without a response");
    };
    let mut r = full(StatusCode::OK, "application/json", response.json());
    if is_initialize {
        let agreed = response.to_value().pointer("/result/protocolVersion").and_then(Value::as_str).map(String::from);
        if agreed.is_some() {
            if let Ok(mut v) = legacy.version.lock() {
                *v = agreed;
            }
            if let Ok(value) = HeaderValue::from_str(&session_id) {
                r.headers_mut().insert(SESSION_HEADER, value);
            }
            http.mcp_sessions.insert(session_id, legacy);
        }
    }
    r
}

/// GET: the session's stream of server-initiated notifications (a newer GET replaces an older one).
fn open_stream(http: &Http, principal: &Principal, headers: &HeaderMap) -> Response<Body> {
    if header_str(headers, VERSION_HEADER) == Some(MODERN_VERSION) || header_str(headers, SESSION_HEADER).is_none() {
        let mut r = plain_error(StatusCode::METHOD_NOT_ALLOWED, "no stream without a legacy session");
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    if !wants_sse(headers) {
        return plain_error(StatusCode::NOT_ACCEPTABLE, "GET /mcp needs Accept: text/event-stream");
    }
    let (_, legacy) = match session_of(http, principal, headers) {
        Ok(found) => found,
        Err(r) => return *r,
    };
    let (frames, body) = channel(STREAM_BUFFER);
    // A priming event, so the client knows the stream is live.
    let _ = frames.try_send(Chunk::new(Bytes::from_static(b"id: 0\ndata: \n\n"), Room::none()));
    if let Ok(mut r) = legacy.routes.lock() {
        r.stream = Some(frames.clone());
    }
    let shutdown = http.shutdown.clone();
    tokio::spawn(async move {
        // Holds the stream open until shutdown (or the client leaves); messages arrive through `dispatch`.
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = frames.closed() => {}
        }
    });
    sse_response(body)
}

/// DELETE: ends the session.
fn end_session(http: &Http, principal: &Principal, headers: &HeaderMap) -> Response<Body> {
    match session_of(http, principal, headers) {
        Ok((id, _)) => {
            http.mcp_sessions.remove(&id);
            full(StatusCode::NO_CONTENT, "application/json", Bytes::new())
        }
        Err(r) => *r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_header_values_decode() {
        assert_eq!(header_value("tools/call").as_deref(), Some("tools/call"));
        assert_eq!(header_value("=?base64?w6lsw6lWZQ==?=").as_deref(), Some("éléVe"));
        assert_eq!(header_value("=?base64?!!?="), None);
    }

    #[test]
    fn modern_headers_must_agree_with_the_body() {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                          "params": {"name": "list_devices", "_meta": {META_VERSION: MODERN_VERSION}}});
        let mut h = HeaderMap::new();
        h.insert(VERSION_HEADER, HeaderValue::from_static(MODERN_VERSION));
        h.insert("mcp-method", HeaderValue::from_static("tools/call"));
        let (status, e) = check_modern_headers(&h, &body).unwrap_err();
        assert_eq!((status, e.code), (StatusCode::BAD_REQUEST, jsonrpc::HEADER_MISMATCH));
        h.insert("mcp-name", HeaderValue::from_static("list_devices"));
        assert!(check_modern_headers(&h, &body).is_ok());
        h.insert("mcp-name", HeaderValue::from_static("get_ticket"));
        assert!(check_modern_headers(&h, &body).is_err());
        h.insert(VERSION_HEADER, HeaderValue::from_static("2099-01-01"));
        let (_, e) = check_modern_headers(&h, &body).unwrap_err();
        assert_eq!(e.code, jsonrpc::UNSUPPORTED_PROTOCOL_VERSION);
    }
}
