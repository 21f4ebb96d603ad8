//! One MCP connection, whatever carries it. Dual-era: `initialize` selects legacy semantics for the
//! connection (2024-11-05 … 2025-11-25); a request whose `_meta` carries `io.modelcontextprotocol/protocolVersion`
//! is served statelessly in the modern era (2026-07-28). Requests run concurrently (at most [`MAX_IN_FLIGHT`]);
//! responses go out through the connection's bounded queue ([`outgoing`]), in completion order; a cancelled request
//! gets no response.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::jsonrpc::{self, Id, Incoming, Request, RpcError};
use super::outgoing::{self, Message};
use super::{Call, Extension, LEGACY_VERSIONS, MAX_IN_FLIGHT, MODERN_VERSION, Outcome, SERVER_NAME, mrtr};
use crate::error::{Error, ErrorCode};
use crate::ops::{self, Answer, prompts, resources};
use crate::runtime::{App, Ctx, Principal, Progress};

const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
const META_SUBSCRIPTION: &str = "io.modelcontextprotocol/subscriptionId";
/// Modern era: the request-scoped log level (there is no `logging/setLevel`).
const META_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
/// RFC 5424 levels accepted by `logging/setLevel`, most verbose first.
const LOG_LEVELS: [&str; 8] = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"];

const INSTRUCTIONS: &str = "xyte-edge is an on-site gateway for a Xyte organization (meeting-room devices, spaces, \
incidents, tickets). Reads answer from the gateway's local cache, kept fresh by polling, so they are fast and keep \
working when the internet link is down; `stale: true` with `fetched_at` marks answers Xyte could not refresh. Use \
set_context to remember a default device or space. Mutating tools accept dry_run=true to validate and preview \
without sending. What you may do depends on your role (viewer, operator, admin).";

#[derive(Default)]
struct State {
    /// The legacy revision negotiated by `initialize`, if any.
    legacy: Option<String>,
    initialized: bool,
    /// Index into [`LOG_LEVELS`] set by `logging/setLevel`; no log notifications until a client asks.
    log_level: Option<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Era {
    Legacy,
    Modern,
}

pub struct Session {
    app: Arc<App>,
    /// What the session serves beside the catalogue ([`Extension`]).
    extension: Arc<dyn Extension>,
    principal: Principal,
    out: outgoing::Sender,
    state: Mutex<State>,
    inflight: Mutex<HashMap<Id, CancellationToken>>,
    permits: Arc<Semaphore>,
    /// Legacy `resources/subscribe` URIs, served by one listener task started on the first subscription.
    subscriptions: Arc<Mutex<HashSet<String>>>,
    listening: AtomicBool,
    /// Cancelled when the session ends, stopping its listener task.
    closed: CancellationToken,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

impl Session {
    /// `out` receives every message to send, serialised; the transport writes it.
    pub fn new(
        app: Arc<App>,
        extension: Arc<dyn Extension>,
        principal: Principal,
        out: outgoing::Sender,
    ) -> Arc<Session> {
        Arc::new(Session {
            app,
            extension,
            principal,
            out,
            state: Mutex::new(State::default()),
            inflight: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            subscriptions: Arc::default(),
            listening: AtomicBool::new(false),
            closed: CancellationToken::new(),
        })
    }

    /// The peer has gone (EOF on its connection). Requests already running still answer, but the streams that only
    /// end when the client leaves — `subscriptions/listen`, legacy subscriptions — end now. Without this a client that
    /// disconnects during `subscriptions/listen` would keep its connection (and its `XYTE_MAX_CONNECTIONS` permit)
    /// forever: the stream holds the session, and the transport's writer only notices a dead peer when it writes.
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// A framing problem found by the transport (e.g. an oversized line): answered without an id.
    pub async fn receive_error(&self, error: RpcError) {
        self.out.send(jsonrpc::error(None, &error)).await;
    }

    /// A notification not tied to a request; dropped if the peer is not reading (see [`outgoing`]).
    fn notify(&self, msg: Value) {
        self.out.notify(&msg, None);
    }

    fn legacy_version(&self) -> Option<String> {
        self.state.lock().ok().and_then(|s| s.legacy.clone())
    }

    /// Handles one received message. Returns once request work is started (or the message fully handled), so the
    /// transport can read the next line; waits while [`MAX_IN_FLIGHT`] requests are running.
    pub async fn receive(self: &Arc<Self>, bytes: &[u8]) {
        match jsonrpc::decode(bytes) {
            Err(e) => {
                self.out.send(jsonrpc::error(e.id.as_ref(), &e.error)).await;
            }
            Ok(Incoming::Response) => {}
            Ok(Incoming::Notification(n)) => self.notification(&n.method, &n.params),
            Ok(Incoming::Batch(items)) => self.batch(items).await,
            Ok(Incoming::Request(req)) => {
                let Ok(permit) = self.permits.clone().acquire_owned().await else { return };
                // Most requests (cached reads, lists, pings) finish without waiting for anything: answered here, they
                // cost no task of their own and no hand-over between tasks. One that would wait continues as a task
                // of its own, so the next line is read meanwhile and the request can be cancelled.
                let (session, id) = (self.clone(), req.id.clone());
                let mut request = Box::pin(async move { session.request(req).await });
                let first = std::future::poll_fn(|cx| std::task::Poll::Ready(request.as_mut().poll(cx))).await;
                if let std::task::Poll::Ready(r) = first {
                    self.out.send(r).await;
                    return;
                }
                let token = CancellationToken::new();
                if let Ok(mut map) = self.inflight.lock() {
                    map.insert(id.clone(), token.clone());
                }
                let session = self.clone();
                tokio::spawn(async move {
                    let response = tokio::select! {
                        _ = token.cancelled() => None,
                        r = request => Some(r),
                    };
                    if let Ok(mut map) = session.inflight.lock() {
                        map.remove(&id);
                    }
                    if let Some(r) = response
                        && !token.is_cancelled()
                    {
                        // Waits for room in the connection's queue, still counted as in flight: a peer that does
                        // not read stops being read once MAX_IN_FLIGHT answers wait for it.
                        session.out.send(r).await;
                    }
                    drop(permit);
                });
            }
        }
    }

    /// Batches existed only in 2025-03-26; elsewhere they are an invalid request.
    async fn batch(self: &Arc<Self>, items: Vec<Value>) {
        if self.legacy_version().as_deref() != Some("2025-03-26") {
            let e = RpcError::new(
                jsonrpc::INVALID_REQUEST,
                "invalid request: batches are only allowed in protocol 2025-03-26",
            );
            self.out.send(jsonrpc::error(None, &e)).await;
            return;
        }
        let mut responses = Vec::new();
        for item in items {
            match jsonrpc::decode_value(item) {
                Err(e) => responses.push(jsonrpc::error(e.id.as_ref(), &e.error)),
                Ok(Incoming::Request(req)) => responses.push(self.request(req).await.into_value()),
                Ok(Incoming::Notification(n)) => self.notification(&n.method, &n.params),
                Ok(_) => {}
            }
        }
        if !responses.is_empty() {
            self.out.send(Value::Array(responses)).await;
        }
    }

    fn notification(&self, method: &str, params: &Map<String, Value>) {
        match method {
            "notifications/initialized" => {
                if let Ok(mut s) = self.state.lock() {
                    s.initialized = true;
                }
            }
            "notifications/cancelled" => {
                let id = params.get("requestId").cloned().and_then(|v| serde_json::from_value::<Id>(v).ok());
                if let Some(id) = id
                    && let Some(token) = self.inflight.lock().ok().and_then(|m| m.get(&id).cloned())
                {
                    token.cancel();
                }
            }
            // Other notifications (progress from the client, roots changes) need nothing from us.
            _ => {}
        }
    }

    /// Answers one request with a full JSON-RPC response message.
    async fn request(self: &Arc<Self>, req: Request) -> Message {
        let meta = req.params.get("_meta").and_then(Value::as_object).cloned().unwrap_or_default();
        let era = match meta.get(META_VERSION) {
            Some(v) => {
                let requested = v.as_str().unwrap_or_default();
                if requested != MODERN_VERSION {
                    // The versions a request may name in `_meta`, as `server/discover` lists them; the legacy ones
                    // are reached through `initialize`, not here.
                    let supported = [MODERN_VERSION];
                    let e = RpcError::new(
                        jsonrpc::UNSUPPORTED_PROTOCOL_VERSION,
                        format!("unsupported protocol version {requested:?}"),
                    )
                    .with_data(json!({"supported": supported, "requested": v}));
                    return jsonrpc::error(Some(&req.id), &e).into();
                }
                if !meta.contains_key(META_CAPABILITIES) {
                    let e = RpcError::new(jsonrpc::INVALID_PARAMS, format!("_meta lacks {META_CAPABILITIES}"));
                    return jsonrpc::error(Some(&req.id), &e).into();
                }
                Era::Modern
            }
            None => Era::Legacy,
        };
        let progress = meta.get("progressToken").cloned().map(|token| self.progress_sink(token));
        match self.method(era, &req, &meta, progress).await {
            Ok((mut result, answer)) => {
                if era == Era::Modern {
                    finish_modern(&req.method, &mut result);
                }
                Message { json: jsonrpc::result(&req.id, result), answer }
            }
            Err(e) => jsonrpc::error(Some(&req.id), &e).into(),
        }
    }

    fn progress_sink(self: &Arc<Self>, token: Value) -> Progress {
        let out = self.out.clone();
        Arc::new(move |progress: f64, total: Option<f64>, message: String| {
            let mut params = json!({"progressToken": token, "progress": progress, "message": message});
            if let Some(t) = total {
                params["total"] = json!(t);
            }
            out.notify(&jsonrpc::notification("notifications/progress", params), None);
        })
    }

    async fn method(
        &self,
        era: Era,
        req: &Request,
        meta: &Map<String, Value>,
        progress: Option<Progress>,
    ) -> Result<(Value, Option<Answer>), RpcError> {
        let p = &req.params;
        let (ext, modern) = (&self.extension, era == Era::Modern);
        let listed = |list: Vec<Value>| {
            p.get("name").and_then(Value::as_str).is_some_and(|n| list.iter().any(|e| e["name"] == n))
        };
        // A result, and for one of the catalogue's tools its answer apart (see `call_tool`).
        let result = match (era, req.method.as_str()) {
            (Era::Legacy, "initialize") => Ok(self.initialize(p)),
            (Era::Legacy, "ping") => Ok(json!({})),
            (Era::Modern, "server/discover") => Ok(json!({
                "supportedVersions": [MODERN_VERSION],
                "capabilities": capabilities(Era::Modern),
                "instructions": INSTRUCTIONS,
            })),
            (_, "tools/list") => {
                let mut tools = tool_list();
                tools.extend(ext.list("tools", modern));
                Ok(json!({"tools": tools}))
            }
            (_, "tools/call") if listed(ext.list("tools", modern)) => self.extension(era, req, meta, progress).await,
            (_, "tools/call") => return self.call_tool(p, progress).await,
            (_, "resources/list") => {
                let mut list = resources::list();
                list.extend(ext.list("resources", modern));
                Ok(json!({"resources": list}))
            }
            (_, "resources/templates/list") => {
                let mut list = resources::templates();
                list.extend(ext.list("resourceTemplates", modern));
                Ok(json!({"resourceTemplates": list}))
            }
            (_, "resources/read") => {
                let uri = string_param(p, "uri")?;
                if let Some(contents) = ext.read(&uri) {
                    return Ok((json!({"contents": contents}), None));
                }
                let ctx = self.ctx(progress);
                let value = resources::read(&ctx, &uri).await.map_err(|e| resource_error(era, &uri, e))?;
                let mut contents = json!({"uri": uri, "mimeType": "application/json"});
                contents["text"] = json_text(&value);
                let mut result = json!({});
                result["contents"] = Value::Array(vec![contents]);
                Ok(result)
            }
            (Era::Legacy, "resources/subscribe") => {
                let uri = string_param(p, "uri")?;
                if let Ok(mut subs) = self.subscriptions.lock() {
                    subs.insert(uri);
                }
                self.start_listener();
                Ok(json!({}))
            }
            (Era::Legacy, "resources/unsubscribe") => {
                let uri = string_param(p, "uri")?;
                if let Ok(mut subs) = self.subscriptions.lock() {
                    subs.remove(&uri);
                }
                Ok(json!({}))
            }
            (Era::Modern, "subscriptions/listen") => self.listen(&req.id, p).await,
            (_, "prompts/list") => {
                let mut list = prompts::list();
                list.extend(ext.list("prompts", modern));
                Ok(json!({"prompts": list}))
            }
            (_, "prompts/get") if listed(ext.list("prompts", modern)) => self.extension(era, req, meta, None).await,
            (_, "prompts/get") => {
                let name = string_param(p, "name")?;
                let args = p.get("arguments").and_then(Value::as_object).cloned().unwrap_or_default();
                prompts::get(&self.ctx(None), &name, &args).await.map_err(rpc_error)
            }
            (_, "completion/complete") => {
                let reference = p.get("ref").cloned().unwrap_or(Value::Null);
                let argument = p.get("argument").cloned().unwrap_or(Value::Null);
                let name = argument.get("name").and_then(Value::as_str).unwrap_or_default();
                let value = argument.get("value").and_then(Value::as_str).unwrap_or_default();
                prompts::complete(&self.ctx(None), &reference, name, value).await.map_err(rpc_error)
            }
            (Era::Legacy, "logging/setLevel") => {
                let level = string_param(p, "level")?;
                let idx = LOG_LEVELS.iter().position(|l| *l == level).ok_or_else(|| {
                    RpcError::new(
                        jsonrpc::INVALID_PARAMS,
                        format!("unknown log level {level:?}; use one of {}", LOG_LEVELS.join(", ")),
                    )
                })?;
                if let Ok(mut s) = self.state.lock() {
                    s.log_level = Some(idx);
                }
                Ok(json!({}))
            }
            (
                Era::Modern,
                "initialize" | "ping" | "logging/setLevel" | "resources/subscribe" | "resources/unsubscribe",
            ) => Err(RpcError::new(
                jsonrpc::METHOD_NOT_FOUND,
                format!("{} does not exist in protocol {MODERN_VERSION}", req.method),
            )),
            (Era::Legacy, "server/discover") => Err(RpcError::new(
                jsonrpc::INVALID_PARAMS,
                format!("server/discover needs _meta[\"{META_VERSION}\"] = \"{MODERN_VERSION}\""),
            )),
            (_, m) => Err(RpcError::new(jsonrpc::METHOD_NOT_FOUND, format!("method not found: {m}"))),
        };
        result.map(|r| (r, None))
    }

    fn initialize(&self, p: &Map<String, Value>) -> Value {
        let asked = p.get("protocolVersion").and_then(Value::as_str).unwrap_or_default();
        // Answer with the client's version when we speak it, else our latest legacy one (the client decides).
        let version = LEGACY_VERSIONS.iter().find(|v| **v == asked).copied().unwrap_or(LEGACY_VERSIONS[3]);
        if let Ok(mut s) = self.state.lock() {
            s.legacy = Some(version.to_string());
        }
        tracing::debug!(principal = %self.principal.id, asked, version, "MCP initialize");
        json!({
            "protocolVersion": version,
            "capabilities": capabilities(Era::Legacy),
            "serverInfo": server_info(),
            "instructions": INSTRUCTIONS,
        })
    }

    fn ctx(&self, progress: Option<Progress>) -> Ctx {
        Ctx { app: self.app.clone(), principal: self.principal.clone(), progress }
    }

    /// A legacy `notifications/message`, only when the client asked for this level or more.
    fn log(&self, level: &str, data: Value) {
        let wanted = self.state.lock().ok().and_then(|s| s.log_level);
        let this = LOG_LEVELS.iter().position(|l| *l == level).unwrap_or(0);
        if wanted.is_some_and(|w| this >= w) {
            self.notify(jsonrpc::notification(
                "notifications/message",
                json!({"level": level, "logger": SERVER_NAME, "data": data}),
            ));
        }
    }

    /// Legacy subscriptions: one task per session turns bus events into `notifications/resources/updated`.
    fn start_listener(&self) {
        if self.listening.swap(true, Ordering::SeqCst) {
            return;
        }
        let (subs, out, closed) = (self.subscriptions.clone(), self.out.clone(), self.closed.clone());
        let mut events = self.app.bus.subscribe();
        let (watched, mut tick) = watch_ticker(self.extension.as_ref());
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    _ = closed.cancelled() => return,
                    _ = tick.tick(), if watched.is_some() => {
                        let wanted = subs.lock().is_ok_and(|s| watched.is_some_and(|u| s.contains(u)));
                        let msg = json!({"uri": watched});
                        if wanted && !out.notify(&jsonrpc::notification("notifications/resources/updated", msg), None) {
                            return;
                        }
                        continue;
                    }
                    e = events.recv() => e,
                };
                match event {
                    Ok(e) => {
                        let wanted: Vec<String> = match subs.lock() {
                            Ok(s) => resources::affected(&e).into_iter().filter(|u| s.contains(u)).collect(),
                            Err(_) => return,
                        };
                        for uri in wanted {
                            let msg = jsonrpc::notification("notifications/resources/updated", json!({"uri": uri}));
                            if !out.notify(&msg, None) {
                                return;
                            }
                        }
                    }
                    // Missed events: the resource may have changed; a subscriber rereads on any update anyway.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// Modern `subscriptions/listen`: acknowledge, then stream updates tagged with the request id until the client
    /// cancels or goes away. Only resource subscriptions are honoured (our lists never change at run time).
    async fn listen(&self, id: &Id, p: &Map<String, Value>) -> Result<Value, RpcError> {
        let filter = p.get("notifications").and_then(Value::as_object).cloned().unwrap_or_default();
        let uris: HashSet<String> = filter
            .get("resourceSubscriptions")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|u| u.as_str().map(String::from)).collect())
            .unwrap_or_default();
        let sub_id = serde_json::to_value(id).unwrap_or(Value::Null);
        let mut honored = json!({});
        if !uris.is_empty() {
            honored["resourceSubscriptions"] = json!(uris.iter().collect::<Vec<_>>());
        }
        let mut events = self.app.bus.subscribe();
        self.notify(jsonrpc::notification(
            "notifications/subscriptions/acknowledged",
            json!({"notifications": honored, "_meta": {META_SUBSCRIPTION: sub_id}}),
        ));
        let (watched, mut tick) = watch_ticker(self.extension.as_ref());
        let watched = watched.filter(|u| uris.contains(*u));
        loop {
            let event = tokio::select! {
                _ = self.closed.cancelled() => break,
                _ = self.out.closed() => break,
                _ = tick.tick(), if watched.is_some() => {
                    self.notify(jsonrpc::notification(
                        "notifications/resources/updated",
                        json!({"uri": watched, "_meta": {META_SUBSCRIPTION: sub_id}}),
                    ));
                    continue;
                }
                e = events.recv() => e,
            };
            match event {
                Ok(e) => {
                    for uri in resources::affected(&e).into_iter().filter(|u| uris.contains(u)) {
                        self.notify(jsonrpc::notification(
                            "notifications/resources/updated",
                            json!({"uri": uri, "_meta": {META_SUBSCRIPTION: sub_id}}),
                        ));
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
        Ok(json!({}))
    }

    /// A tool or prompt of the app's extension: runs it with what it may use from the request (log level, progress,
    /// and in the modern era MRTR input), then turns an MRTR outcome into the wire result:
    /// `resultType: "input_required"`, the input requests, and a sealed `requestState`.
    async fn extension(
        &self,
        era: Era,
        req: &Request,
        meta: &Map<String, Value>,
        progress: Option<Progress>,
    ) -> Result<Value, RpcError> {
        let p = &req.params;
        let name = string_param(p, "name")?;
        let modern = era == Era::Modern;
        let binding = mrtr::Binding { principal: &self.principal.id, method: &req.method, name: &name };
        let (responses, state) = if modern { mrtr_input(p, &binding)? } else { (Map::new(), None) };
        let caps = meta.get(META_CAPABILITIES).filter(|c| c.is_object()).cloned().unwrap_or_else(|| json!({}));
        let wanted = self.wanted_log_level(era, meta);
        let log = |level: &str, data: Value| {
            let this = LOG_LEVELS.iter().position(|l| *l == level).unwrap_or(0);
            if wanted.is_some_and(|w| this >= w) {
                let params = json!({"level": level, "logger": SERVER_NAME, "data": data});
                self.out.notify(&jsonrpc::notification("notifications/message", params), Some(&req.id));
            }
        };
        let args = p.get("arguments").and_then(Value::as_object).cloned().unwrap_or_default();
        let call = Call { args: &args, responses: &responses, state: state.as_ref(), caps: &caps, progress, log: &log };
        let (requests, state) = match self.extension.run(&req.method, &name, &call).await? {
            Outcome::Complete(v) => return Ok(v),
            Outcome::InputRequired { .. } if !modern => {
                return Err(RpcError::new(jsonrpc::INTERNAL_ERROR, "input requests exist only in the modern era"));
            }
            Outcome::InputRequired { requests, state } => (requests, state),
        };
        // Only ask for what the client declared it can answer; a request that needs more is refused (-32021).
        let mut missing = Map::new();
        for r in requests.values() {
            let needed = match r.get("method").and_then(Value::as_str) {
                Some("elicitation/create") => "elicitation",
                Some("sampling/createMessage") => "sampling",
                Some("roots/list") => "roots",
                _ => continue,
            };
            if !caps.get(needed).is_some_and(Value::is_object) {
                missing.insert(needed.into(), json!({}));
            }
        }
        if !missing.is_empty() {
            let names: Vec<&str> = missing.keys().map(String::as_str).collect();
            let message = format!("{name} needs the client capabilities {}", names.join(", "));
            return Err(RpcError::new(jsonrpc::MISSING_CLIENT_CAPABILITY, message)
                .with_data(json!({"requiredCapabilities": missing})));
        }
        let mut result = json!({"resultType": "input_required", "inputRequests": requests});
        if let Some(s) = state {
            result["requestState"] = json!(mrtr::seal(&binding, &s, crate::store::now_ms()));
        }
        Ok(result)
    }

    /// The least severe level a request's log lines may have: legacy from `logging/setLevel`, modern from the
    /// request's own `_meta`; `None` means no log lines at all.
    fn wanted_log_level(&self, era: Era, meta: &Map<String, Value>) -> Option<usize> {
        match era {
            Era::Legacy => self.state.lock().ok().and_then(|s| s.log_level),
            Era::Modern => {
                let level = meta.get(META_LOG_LEVEL).and_then(Value::as_str)?;
                LOG_LEVELS.iter().position(|l| *l == level)
            }
        }
    }

    /// The result of one of the catalogue's tools, and its answer: the result holds `"structuredContent": null` in
    /// its place ([`Message`]).
    async fn call_tool(
        &self,
        p: &Map<String, Value>,
        progress: Option<Progress>,
    ) -> Result<(Value, Option<Answer>), RpcError> {
        let name = p
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| RpcError::new(jsonrpc::INVALID_PARAMS, "tools/call needs a name"))?;
        if ops::find(name).is_none() {
            return Err(RpcError::new(jsonrpc::INVALID_PARAMS, format!("unknown tool: {name}")));
        }
        let args = p.get("arguments").cloned().unwrap_or(json!({}));
        let ctx = self.ctx(progress);
        let started = std::time::Instant::now();
        let outcome = ops::answer(&ctx, name, args).await;
        let ms = started.elapsed().as_millis() as u64;
        let (answer, is_error) = match outcome {
            Ok(answer) => {
                tracing::info!(principal = %self.principal.id, tool = name, ms, "tool call ok");
                (answer, false)
            }
            Err(e) => {
                tracing::info!(principal = %self.principal.id, tool = name, ms, code = %e.code, "tool call failed");
                self.log("warning", json!({"tool": name, "error": e}));
                (Answer::Built(e.to_body()), true)
            }
        };
        // The text block's `text` is the structured content's JSON: both are written by `outgoing` from the answer when
        // the message is serialised, from the same bytes.
        let result = json!({"isError": is_error, "content": [{"type": "text"}], "structuredContent": null});
        Ok((result, Some(answer)))
    }
}

/// `value` as JSON text, for a client-facing `text` field (a tool's text content, a resource's contents). Through
/// `serde_json::to_string`, not `Value`'s `Display`: that writes through `fmt::Write` token by token, a twentieth of
/// a cached `get_device_status` in perf (BENCHMARKS.md).
fn json_text(value: &Value) -> Value {
    Value::String(serde_json::to_string(value).unwrap_or_default())
}

/// The MRTR retry fields of a modern request: `inputResponses` (each an object: the client's result for one input
/// request) and `requestState`, opened and checked against its binding. Malformed or tampered input is refused.
fn mrtr_input(
    p: &Map<String, Value>,
    binding: &mrtr::Binding,
) -> Result<(Map<String, Value>, Option<Value>), RpcError> {
    let invalid = |m: String| RpcError::new(jsonrpc::INVALID_PARAMS, m);
    let responses = match p.get("inputResponses") {
        None => Map::new(),
        Some(Value::Object(m)) => {
            if let Some((k, _)) = m.iter().find(|(_, v)| !v.is_object()) {
                return Err(invalid(format!("inputResponses.{k} must be an object (the client's result for it)")));
            }
            m.clone()
        }
        Some(_) => return Err(invalid("inputResponses must be an object keyed by input request".into())),
    };
    let state = match p.get("requestState") {
        None => None,
        Some(Value::String(token)) => Some(mrtr::open(binding, token, crate::store::now_ms()).map_err(|why| {
            tracing::warn!(principal = binding.principal, name = binding.name, "refused requestState: {why}");
            invalid(why.into())
        })?),
        Some(_) => return Err(invalid("requestState must be the string this server sent".into())),
    };
    Ok((responses, state))
}

fn server_info() -> Value {
    json!({"name": SERVER_NAME, "title": "Xyte Edge gateway", "version": env!("CARGO_PKG_VERSION")})
}

/// The extension's resource that changes by itself, if any, and a ticker for its changes (polled only if there is one).
fn watch_ticker(extension: &dyn Extension) -> (Option<&'static str>, tokio::time::Interval) {
    let (uri, period) = extension.watched().unzip();
    let period = period.unwrap_or(std::time::Duration::from_secs(3600));
    (uri, tokio::time::interval_at(tokio::time::Instant::now() + period, period))
}

fn capabilities(era: Era) -> Value {
    let mut caps = json!({
        "tools": {"listChanged": false},
        "resources": {"subscribe": true, "listChanged": false},
        "prompts": {"listChanged": false},
        "completions": {},
    });
    if era == Era::Legacy {
        caps["logging"] = json!({});
    }
    caps
}

fn string_param(p: &Map<String, Value>, key: &str) -> Result<String, RpcError> {
    p.get(key)
        .and_then(Value::as_str)
        .map(String::from)
        .ok_or_else(|| RpcError::new(jsonrpc::INVALID_PARAMS, format!("missing string parameter {key:?}")))
}

fn rpc_error(e: Error) -> RpcError {
    let code = match e.code {
        ErrorCode::InvalidParams | ErrorCode::NotFound => jsonrpc::INVALID_PARAMS,
        _ => jsonrpc::INTERNAL_ERROR,
    };
    RpcError::new(code, e.message.clone()).with_data(e.to_body())
}

/// "Resource not found" is -32002 in the legacy era and -32602 in the modern one.
fn resource_error(era: Era, uri: &str, e: Error) -> RpcError {
    if e.code == ErrorCode::NotFound {
        let code = if era == Era::Legacy { jsonrpc::RESOURCE_NOT_FOUND } else { jsonrpc::INVALID_PARAMS };
        return RpcError::new(code, format!("resource not found: {uri}")).with_data(json!({"uri": uri}));
    }
    rpc_error(e)
}

pub fn tool_list() -> Vec<Value> {
    ops::CATALOGUE
        .iter()
        .map(|op| {
            json!({"name": op.name, "title": op.title, "description": op.description, "inputSchema": op.input,
                   "outputSchema": op.output, "annotations": op.annotations})
        })
        .collect()
}

/// Modern results carry `resultType`, the server's identity, and caching hints on discover, lists and reads.
fn finish_modern(method: &str, result: &mut Value) {
    let Value::Object(map) = result else { return };
    map.entry("resultType").or_insert(json!("complete"));
    // Caching hints belong on complete results only.
    let cacheable = map.get("resultType") == Some(&json!("complete"))
        && matches!(
            method,
            "server/discover"
                | "tools/list"
                | "resources/list"
                | "resources/templates/list"
                | "prompts/list"
                | "resources/read"
        );
    if cacheable {
        // Lists are static per build; reads are live data, never cached by the client.
        let ttl = if method == "resources/read" { 0 } else { 300_000 };
        map.insert("ttlMs".into(), json!(ttl));
        map.insert("cacheScope".into(), json!("private"));
    }
    let meta = map.entry("_meta").or_insert(json!({}));
    if let Value::Object(m) = meta {
        m.insert(META_SERVER_INFO.into(), server_info());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::config::{Role, Secret, XyteCredential};
    use crate::xyte::{ClientConfig, XyteClient};

    /// As the fuzz target `mcp` builds it: read-only, Xyte a closed loopback port.
    fn app(dir: &std::path::Path) -> Arc<App> {
        let store = crate::store::Store::open(dir, Default::default()).unwrap();
        let client = XyteClient::new(ClientConfig {
            base_url: "http://127.0.0.1:1".into(),
            credential: XyteCredential::ApiKey(Secret::new("fuzz-key".into())),
            request_timeout: Duration::from_millis(20),
            rate_limit_per_min: 6000,
        })
        .unwrap();
        Arc::new(App { read_only: true, env_label: "fuzz".into(), experimental_apis: true, ..App::new(store, client) })
    }

    /// The inputs the fuzz target `mcp` keeps (tests/fuzz: `regressions/` once failed it, `corpus/` are its seeds),
    /// fed as the target feeds them: the first byte picks the role (bits 0-1) and the fixtures (bit 2), the rest goes
    /// line by line through `receive`, then the peer leaves. The session must then finish, having sent only JSON-RPC.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fuzz_inputs_finish_after_the_peer_leaves() {
        let fuzz = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz");
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path());
        let extensions = [crate::mcp::extension(false), crate::mcp::extension(true)];
        let mut seen = 0;
        for kind in ["regressions", "corpus"] {
            // An empty `regressions/<target>` is not in git, hence not there at all.
            for entry in std::fs::read_dir(fuzz.join(kind).join("mcp")).into_iter().flatten() {
                let path = entry.unwrap().path();
                let input = std::fs::read(&path).unwrap();
                let Some((&options, stream)) = input.split_first() else { continue };
                let role = [Role::Viewer, Role::Operator, Role::Admin, Role::Admin][usize::from(options & 3)];
                let (tx, mut rx) = outgoing::queue();
                let extension = extensions[usize::from(options & 4 != 0)].clone();
                let session = Session::new(app.clone(), extension, Principal { id: "uid:fuzz".into(), role }, tx);
                for line in stream.split(|b| *b == b'\n') {
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    if !line.iter().all(u8::is_ascii_whitespace) {
                        session.receive(line).await;
                    }
                }
                session.close();
                drop(session);
                let mut sent = Vec::new();
                let drained = tokio::time::timeout(Duration::from_secs(10), async {
                    while let Some(out) = rx.recv().await {
                        let msg = out.to_value();
                        let items = msg.as_array().cloned().unwrap_or_else(|| vec![msg.clone()]);
                        assert!(items.iter().all(|m| m["jsonrpc"] == "2.0"), "{}: {msg}", path.display());
                        sent.push(msg);
                    }
                })
                .await;
                assert!(
                    drained.is_ok(),
                    "{}: the session kept running after the peer left; sent {sent:?}",
                    path.display()
                );
                seen += 1;
            }
        }
        assert!(seen >= 5, "only {seen} fuzz inputs for mcp found under {}", fuzz.display());
    }
}
