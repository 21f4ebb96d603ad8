//! One request: authenticate, route, call the catalogue, answer with the right status and headers, log one line.

use std::convert::Infallible;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::{Body as _, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use super::body::{self, BodyLimit};
use super::response::{Body, error_response, error_with_status, full, json_response, wants_sse};
use super::state::{Http, Peer, require_token};
use super::{openapi, rest};
use crate::error::{Error, ErrorCode};
use crate::ops;
use crate::runtime::{Ctx, Principal};

/// Largest request body accepted (README, The LAN API: Limits).
pub const MAX_BODY: usize = 1024 * 1024;
const BODY_LIMIT: BodyLimit = BodyLimit { bytes: MAX_BODY, what: "the body", hint: None };

fn not_found(path: &str) -> Response<Body> {
    error_response(
        &Error::new(ErrorCode::NotFound, format!("no route {path}")).with_hint("GET /v1/docs lists every route"),
    )
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let e = Error::invalid_params(format!("method not allowed here; use {allow}"));
    let mut r = error_with_status(StatusCode::METHOD_NOT_ALLOWED, &e);
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// Security and caching headers every answer carries.
fn finish(r: &mut Response<Body>, tls: bool) {
    let h = r.headers_mut();
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    if tls {
        h.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
    }
}

pub async fn handle(http: Arc<Http>, peer: Peer, mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let method = req.method().clone();
    // HEAD is answered here, once for every route, as the GET it stands for without its body (RFC 9110, 9.3.2):
    // the routes below match GET only, so before this a HEAD fell through to the token check (401 for the
    // dashboard) and, over HTTP/2, a body went out after a HEAD's headers, which clients treat as a protocol error.
    let head = method == Method::HEAD;
    if head {
        *req.method_mut() = Method::GET;
        // A stream has no headers of its own to preview, and opening one (`/v1/events`, `/mcp`) would hold a
        // subscription (and replace an MCP session's stream) for an answer nobody reads: HEAD gets the headers of
        // the answer a GET that asked for no stream gets.
        if wants_sse(req.headers()) {
            req.headers_mut().remove(header::ACCEPT);
        }
    }
    // Boxed: hyper keeps room for this future in every connection for the connection's whole life, and `route`
    // inlines the state of every handler (about 6 KiB). Boxed, an idle keep-alive or SSE connection holds a
    // pointer, and the handler's state exists only while a request is in flight.
    let (label, principal, mut response) = Box::pin(route(&http, peer, req)).await;
    finish(&mut response, peer.tls);
    if head {
        without_body(&mut response);
    }
    crate::metrics::http_request(label, response.status().as_u16(), started.elapsed().as_secs_f64());
    tracing::info!(
        target: "xyte_edge::http",
        method = %method,
        route = label,
        status = response.status().as_u16(),
        principal = principal.as_deref().unwrap_or("-"),
        peer = %peer.addr.ip(),
        latency_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    Ok(response)
}

/// The answer to a HEAD: GET's status and headers, no body. Content-Length is the GET body's, written here because
/// hyper derives it from the body it is given, which is now empty.
fn without_body(r: &mut Response<Body>) {
    if let Some(len) = r.body().size_hint().exact()
        && !r.headers().contains_key(header::CONTENT_LENGTH)
    {
        r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    *r.body_mut() = Empty::new().boxed();
}

/// (route label for logs and metrics — a pattern, never a raw id —, principal, response)
async fn route(http: &Http, peer: Peer, req: Request<Incoming>) -> (&'static str, Option<String>, Response<Body>) {
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let method = req.method().clone();

    // Routes anyone may call.
    if method == Method::GET
        && let Some((label, page)) = super::dashboard::asset(&path, &http.app.env_label)
    {
        return (label, None, page);
    }
    match segments.as_slice() {
        ["healthz"] | ["v1", "healthz"] => return ("/healthz", None, healthz(http)),
        ["readyz"] | ["v1", "readyz"] => return ("/readyz", None, readyz(http).await),
        ["v1", "openapi.json"] => {
            let doc: &'static [u8] = &OPENAPI;
            return ("/v1/openapi.json", None, full(StatusCode::OK, "application/json", doc));
        }
        ["v1", "docs"] => {
            let page: &'static str = &DOCS_PAGE;
            let mut r = full(StatusCode::OK, "text/html; charset=utf-8", page);
            r.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"),
            );
            return ("/v1/docs", None, r);
        }
        ["v1", "webhook"] => return ("/v1/webhook", None, super::webhook::receive(http, peer, req).await),
        ["v1", "metrics"] if !peer.tls => return ("/v1/metrics", None, super::metrics::render(http).await),
        ["mcp"] | ["v1", "mcp"] => {
            let (who, response) = super::mcp::handle(http, peer, req).await;
            return ("/mcp", who, response);
        }
        _ => {}
    }

    let principal = match require_token(http, peer, req.headers()).await {
        Ok(p) => p,
        Err(r) => return ("(unauthenticated)", None, *r),
    };
    let who = Some(principal.id.clone());
    let ctx = Ctx { app: http.app.clone(), principal, progress: None };

    let (label, response) = match (segments.as_slice(), &method) {
        (["v1", "metrics"], &Method::GET) => ("/v1/metrics", super::metrics::render(http).await),
        (["v1", "events"], &Method::GET) if wants_sse(req.headers()) => {
            ("/v1/events", super::sse::stream(http, &ctx.principal, req).await)
        }
        (["v1", "tools"], &Method::GET) => ("/v1/tools", json_response(StatusCode::OK, &tools_for(&ctx.principal))),
        (["v1", "tools"], _) => ("/v1/tools", method_not_allowed("GET")),
        (["v1", "tools", name], &Method::POST) => {
            let name = name.to_string();
            let response = match read_json(req).await {
                Ok(args) => answer(ops::answer(&ctx, &name, args).await),
                Err(r) => r,
            };
            ("/v1/tools/{name}", response)
        }
        (["v1", "tools", _], _) => ("/v1/tools/{name}", method_not_allowed("POST")),
        (segs, &Method::GET) => match rest::resolve(segs, req.uri().query()) {
            Some((label, Ok((tool, args)))) => (label, answer(ops::answer(&ctx, tool, args).await)),
            Some((label, Err(e))) => (label, error_response(&e)),
            None => ("(unknown)", not_found(&path)),
        },
        (segs, _) => match rest::resolve(segs, None) {
            Some((label, _)) => (label, method_not_allowed("GET")),
            None => ("(unknown)", not_found(&path)),
        },
    };
    (label, who, response)
}

fn answer(outcome: Result<ops::Answer, Error>) -> Response<Body> {
    match outcome {
        Ok(a) => json_response(StatusCode::OK, &a),
        Err(e) => error_response(&e),
    }
}

/// The request body as JSON arguments: empty means `{}`; larger than [`MAX_BODY`] is 413; not an object is 400.
async fn read_json(req: Request<Incoming>) -> Result<Value, Response<Body>> {
    let bytes = body::read_limited(req.into_body(), &BODY_LIMIT).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(error_response(&Error::invalid_params("the body must be a JSON object of tool arguments"))),
        Err(e) => Err(error_response(&Error::invalid_params(format!("the body is not valid JSON: {e}")))),
    }
}

/// The OpenAPI document and its HTML page, built from the catalogue once: neither changes while the daemon runs.
static OPENAPI: LazyLock<Vec<u8>> =
    LazyLock::new(|| serde_json::to_vec(&openapi::document(env!("CARGO_PKG_VERSION"))).unwrap_or_default());
static DOCS_PAGE: LazyLock<String> = LazyLock::new(|| super::docs::docs_page(env!("CARGO_PKG_VERSION")));

/// The catalogue as REST clients see it, with what the caller's role allows.
fn tools_for(principal: &Principal) -> Value {
    let tools: Vec<Value> = ops::CATALOGUE
        .iter()
        .map(|op| {
            json!({"name": op.name, "title": op.title, "description": op.description, "role": op.role.to_string(),
                   "allowed": principal.role >= op.least.role,
                   "inputSchema": op.input, "outputSchema": op.output, "annotations": op.annotations})
        })
        .collect();
    json!({"tools": tools, "role": principal.role.to_string()})
}

const HEARTBEAT_MAX_AGE: Duration = Duration::from_secs(30);

fn healthz(http: &Http) -> Response<Body> {
    let stale: Vec<Value> = http
        .heartbeats
        .iter()
        .filter(|h| h.age() > HEARTBEAT_MAX_AGE)
        .map(|h| json!({"component": h.name(), "age_s": h.age().as_secs()}))
        .collect();
    if stale.is_empty() {
        json_response(StatusCode::OK, &json!({"status": "ok"}))
    } else {
        json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({"status": "unhealthy", "stale": stale}))
    }
}

/// Ready when the store accepts a write and either Xyte answered in the last 5 minutes or the cache is warm. A
/// configured MQTT uplink that is not connected is listed among the reasons without making the gateway unready.
/// A full disk makes it not ready: reads still answer, but commands and webhooks are refused, and the operator who
/// watches readiness is the one who can free space.
async fn readyz(http: &Http) -> Response<Body> {
    let mut reasons = vec![];
    match http.app.store.check_writable().await {
        Ok(()) => {}
        Err(e) if e.is_disk_full() => reasons.push(format!(
            "{e}; reads are served from the cache, but commands and webhooks are refused until space is freed"
        )),
        Err(e) => reasons.push(format!("the store does not accept writes: {e}")),
    }
    let sync = http.app.sync.get();
    let recent = sync.last_ok_ms > 0 && crate::store::now_ms() - sync.last_ok_ms < 5 * 60 * 1000;
    let warm = http.app.store.read(|c| crate::store::cache::has_set(c, "device")).await.unwrap_or(false);
    if !recent && !warm {
        reasons.push("Xyte has not answered in the last 5 minutes and the cache is empty".to_string());
    }
    let ready = reasons.is_empty();
    // The uplink serves a remote broker, not the local clients readiness is for: its loss is named, never fatal.
    let uplink = http.app.uplink();
    if uplink.as_ref().is_some_and(|u| !u.connected) {
        reasons.push("uplink: disconnected".to_string());
    }
    let mut body = json!({"ready": ready, "reasons": reasons, "xyte_reachable": sync.reachable, "cache_warm": warm});
    if let Some(u) = uplink {
        body["uplink_connected"] = json!(u.connected);
    }
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    json_response(status, &body)
}
