//! Responses: the body type every handler answers with, and the plain, JSON, error and SSE answers they share.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::json;

use crate::error::Error;

pub type Body = BoxBody<Bytes, Infallible>;

pub fn full(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

pub fn json_response(status: StatusCode, v: &impl serde::Serialize) -> Response<Body> {
    let body = crate::heap::build_bytes(|out, _| {
        if serde_json::to_writer(&mut *out, v).is_err() {
            out.clear();
        }
    });
    full(status, "application/json", body)
}

pub fn error_response(e: &Error) -> Response<Body> {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = json_response(status, &e.to_body());
    if let Some(secs) = e.retry_after_s {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

/// An error answered with a status of the HTTP layer's (408, 413, 405…) rather than its code's.
pub fn error_with_status(status: StatusCode, e: &Error) -> Response<Body> {
    json_response(status, &e.to_body())
}

/// Whether the client asked for a stream (`Accept: text/event-stream`) rather than one JSON answer.
pub fn wants_sse(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/event-stream"))
}

/// The head of an SSE stream (`/mcp` and `/v1/events`); proxies are told not to buffer it.
pub fn sse_response(body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

pub fn unauthenticated(message: &str) -> Response<Body> {
    let body = json!({"error": {"code": "permission_denied", "message": message,
                                "hint": "send Authorization: Bearer <token> (create one with `xyte-edge token create`)"}});
    let mut r = json_response(StatusCode::UNAUTHORIZED, &body);
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"xyte-edge\""));
    r
}
