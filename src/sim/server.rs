//! The simulator's wire: hyper HTTP/1.1 on loopback, auth, faults (latency, drops, hangs, 429s, 5xx, slow bodies),
//! request accounting for tests, and the `/_sim/` control routes.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response};
use serde_json::{Value, json};

use super::routes::{self, Query, Reply};
use super::{RequestRecord, Simulator};

pub const API_PREFIX: &str = "/core/v1/organization";
const MAX_BODY: usize = 1024 * 1024;

pub type SimBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Why a request gets no response at all.
#[derive(Debug)]
pub struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Dropped {}

pub async fn handle(sim: Arc<Simulator>, req: Request<Incoming>) -> Result<Response<SimBody>, Dropped> {
    let path = req.uri().path().to_string();
    if let Some(control) = path.strip_prefix("/_sim/") {
        let control = control.to_string();
        let method = req.method().as_str().to_string();
        let body = read_json(req).await.unwrap_or(None);
        return Ok(respond(control_route(&sim, &method, &control, body), std::time::Duration::ZERO));
    }
    let arrived = sim.started.elapsed();
    let method = req.method().as_str().to_string();
    let faults = sim.faults();
    let record = |status: u16| RequestRecord {
        method: method.clone(),
        path: path.clone(),
        at: arrived,
        answered: sim.started.elapsed(),
        status,
    };

    let delay = faults.latency + faults.jitter.mul_f64(sim.roll());
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if sim.roll() < faults.hang_rate {
        sim.record(record(0));
        // Accept and never answer; the client's timeout must end it. Ends with the simulator.
        sim.shutdown_signal().cancelled().await;
        return Err(Dropped);
    }
    if sim.roll() < faults.drop_rate {
        sim.record(record(0));
        return Err(Dropped);
    }
    if sim.take_burst_429() || sim.roll() < faults.rate_429 {
        let mut reply = Reply::error(429, "Too many requests");
        if let Some(secs) = faults.retry_after {
            reply.headers.push(("retry-after", secs.to_string()));
        }
        sim.record(record(429));
        return Ok(respond(reply, faults.slow_body));
    }
    if sim.roll() < faults.error_rate {
        let status = [500u16, 502, 503][sim.roll_below(3)];
        sim.record(record(status));
        return Ok(respond(Reply::error(status, "Internal server error"), faults.slow_body));
    }
    let reply = match api_route(&sim, &method, &path, req).await {
        Ok(r) => r,
        Err(r) => r,
    };
    sim.record(record(reply.status));
    Ok(respond(reply, faults.slow_body))
}

async fn api_route(sim: &Simulator, method: &str, path: &str, req: Request<Incoming>) -> Result<Reply, Reply> {
    let Some(rest) = path.strip_prefix(API_PREFIX) else {
        return Err(Reply::error(404, format!("Unknown route: {method} {path}")));
    };
    authorize(sim, req.headers().get("authorization").and_then(|v| v.to_str().ok()))?;
    let query = Query::parse(req.uri().query());
    let body = read_json(req).await?;
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let mut world = sim.world.lock().map_err(|_| Reply::error(500, "simulator state poisoned"))?;
    let faults = sim.faults();
    let mut received = Vec::new();
    let reply = routes::handle(&mut world, &faults, method, &segs, &query, body, &mut received);
    drop(world);
    sim.record_commands(received);
    Ok(reply)
}

/// Raw org key, or `Bearer xoat_…` for an OAuth access token, as Xyte accepts them.
fn authorize(sim: &Simulator, header: Option<&str>) -> Result<(), Reply> {
    match header.map(str::trim) {
        Some(h) if h == sim.opts.api_key => Ok(()),
        Some(h) if h.starts_with("Bearer ") => {
            if sim.opts.oauth_tokens.iter().any(|t| h["Bearer ".len()..].trim() == t) {
                Ok(())
            } else {
                let mut r = Reply::error(401, "Not authorized");
                r.headers.push(("www-authenticate", "Bearer error=\"invalid_token\"".into()));
                Err(r)
            }
        }
        _ => Err(Reply::error(401, "Not authorized")),
    }
}

async fn read_json(req: Request<Incoming>) -> Result<Option<Value>, Reply> {
    let bytes = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => return Err(Reply::error(413, "Request body too large (1 MiB at most)")),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&bytes).map(Some).map_err(|e| Reply::error(400, format!("Malformed JSON body: {e}")))
}

fn control_route(sim: &Simulator, method: &str, path: &str, body: Option<Value>) -> Reply {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match (method, segs.as_slice()) {
        ("GET", ["stats"]) => {
            let s = sim.stats();
            let mut by_route = std::collections::BTreeMap::<String, u64>::new();
            for r in &s.requests {
                *by_route.entry(format!("{} {}", r.method, r.path)).or_default() += 1;
            }
            let commands: Vec<Value> = s.commands.iter().map(|(d, b)| json!({"device_id": d, "body": b})).collect();
            Reply::ok(json!({"total": s.total, "by_route": by_route, "commands": commands}))
        }
        ("POST", ["reset_stats"]) => {
            sim.reset_stats();
            Reply::ok(json!({"ok": true}))
        }
        ("GET", ["devices"]) => {
            let w = match sim.world.lock() {
                Ok(w) => w,
                Err(_) => return Reply::error(500, "poisoned"),
            };
            Reply::ok(Value::Array(
                w.devices.iter().map(|d| json!({"id": d.id, "name": d.name, "status": d.status})).collect(),
            ))
        }
        ("POST", ["devices", id, "status"]) => {
            let status = body.as_ref().and_then(|b| b["status"].as_str()).unwrap_or("");
            if sim.set_device_status(id, status) {
                Reply::ok(json!({"ok": true}))
            } else {
                Reply::error(422, "unknown device or status (online, offline, error)")
            }
        }
        // The presets file `serve --demo` writes (four rooms): tests that run the
        // simulator as a process of its own get presets whose devices and commands exist.
        ("GET", ["presets"]) => Reply::ok(sim.demo_presets(4)),
        ("POST", ["faults"]) => match body.as_ref().and_then(|b| b["spec"].as_str()).unwrap_or("").parse() {
            Ok(f) => {
                sim.set_faults(f);
                Reply::ok(json!({"ok": true}))
            }
            Err(e) => Reply::error(422, e),
        },
        ("POST", ["step"]) => {
            sim.step();
            Reply::ok(json!({"ok": true}))
        }
        _ => Reply::error(404, format!("Unknown control route: {method} /_sim/{path}")),
    }
}

fn respond(reply: Reply, slow: Duration) -> Response<SimBody> {
    let bytes = reply.body.map(|b| Bytes::from(serde_json::to_vec(&b).unwrap_or_default())).unwrap_or_default();
    let mut builder = Response::builder().status(reply.status);
    if reply.status != 204 {
        builder = builder.header("content-type", "application/json; charset=utf-8");
    }
    for (k, v) in reply.headers {
        builder = builder.header(k, v);
    }
    let body: SimBody = if slow.is_zero() { Full::new(bytes).boxed() } else { SlowBody::new(bytes, slow).boxed() };
    builder.body(body).unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

/// Dribbles a body in 64-byte chunks with a pause before each, to exercise clients' body timeouts.
struct SlowBody {
    rest: Bytes,
    pause: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl SlowBody {
    fn new(rest: Bytes, pause: Duration) -> Self {
        SlowBody { rest, pause, sleep: None }
    }
}

impl Body for SlowBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.rest.is_empty() {
            return Poll::Ready(None);
        }
        let pause = self.pause;
        let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(pause)));
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.sleep = None;
        let n = self.rest.len().min(64);
        let chunk = self.rest.split_to(n);
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }
}
