//! The peers (issue 29): what a user would pick instead of the daemon for the same answers, doing the protocol work
//! and nothing else. Their answers are taken from the daemon in the same run and held in memory.
//!
//! - MCP: a server built with the official Rust SDK (`rmcp`), one session per accepted Unix-socket connection over
//!   rmcp's async-rw transport (newline-delimited JSON, like the daemon), serving `get_device_status` and
//!   `list_devices` with the daemon's own result documents.
//! - REST: axum 0.8 on hyper (HTTP/1.1 and HTTP/2 by ALPN) over rustls with ring and the daemon's certificate and
//!   key, routing `GET /v1/devices/{id}`, checking the bearer token against its SHA-256 in constant time, answering
//!   the daemon's bytes (headers and body) for that device.
//!
//! Each runs in a process of its own (`servers.rs`) on a runtime with as many workers as the daemon (2), like the
//! floors.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, InitializeResult, ListToolsResult, PaginatedRequestParams,
    ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::load;
use crate::procs::Res;

// ---------------------------------------------------------------------------------------------------------------
// MCP: what the daemon answered, and the rmcp server answering it.

/// The daemon's `result` documents: one `get_device_status` per device, and `list_devices` with default arguments.
pub struct McpAnswers {
    pub status: HashMap<String, Value>,
    pub list: Value,
}

/// Calls the daemon's tools over its socket once per device (and `list_devices` once) and keeps each `result`.
pub async fn capture_mcp(socket: &Path, devices: &[String]) -> Res<McpAnswers> {
    let mut conn = load::LineConn::mcp(socket).await?;
    let result = |answer: &str, req: &str| -> Res<Value> {
        let mut v: Value = serde_json::from_str(answer).map_err(|e| format!("{req}: {e}"))?;
        if !load::tool_ok(answer) {
            return Err(format!("{req}: {answer:.400}"));
        }
        Ok(v["result"].take())
    };
    let mut status = HashMap::with_capacity(devices.len());
    for (i, d) in devices.iter().enumerate() {
        let req = load::tool_call(i as u64, "get_device_status", &format!(r#"{{"device_id":"{d}"}}"#));
        let answer = conn.call(req.as_bytes()).await?.to_string();
        status.insert(d.clone(), result(&answer, &req)?);
    }
    let req = load::tool_call(0, "list_devices", "{}");
    let answer = conn.call(req.as_bytes()).await?.to_string();
    let list = result(&answer, &req)?;
    Ok(McpAnswers { status, list })
}

#[derive(Clone)]
struct McpPeer {
    status: Arc<HashMap<String, CallToolResult>>,
    list: Arc<CallToolResult>,
    tools: Arc<Vec<Tool>>,
}

impl ServerHandler for McpPeer {
    fn get_info(&self) -> ServerConfig {
        InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(self.tools.to_vec()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let result = match &*request.name {
            "get_device_status" => {
                let id = request.arguments.as_ref().and_then(|a| a.get("device_id")).and_then(Value::as_str);
                match id.and_then(|id| self.status.get(id)) {
                    Some(r) => r.clone(),
                    None => return Err(McpError::invalid_params("unknown device_id", None)),
                }
            }
            "list_devices" => (*self.list).clone(),
            other => return Err(McpError::invalid_params(format!("unknown tool {other}"), None)),
        };
        Ok(result.into())
    }
}

fn schema(v: Value) -> Arc<serde_json::Map<String, Value>> {
    match v {
        Value::Object(m) => Arc::new(m),
        _ => unreachable!("a schema is an object"),
    }
}

/// Starts the rmcp peer on a Unix socket at `path`, on `rt`.
pub fn mcp_peer(rt: &tokio::runtime::Runtime, path: PathBuf, answers: &McpAnswers) -> Res<()> {
    let parse = |v: &Value| serde_json::from_value::<CallToolResult>(v.clone()).map_err(|e| format!("rmcp: {e}"));
    let status = answers.status.iter().map(|(k, v)| Ok((k.clone(), parse(v)?))).collect::<Res<HashMap<_, _>>>()?;
    let tools = vec![
        Tool::new(
            "get_device_status",
            "One device's status from the cache.",
            schema(json!({"type": "object", "properties": {"device_id": {"type": "string"}},
                          "required": ["device_id"]})),
        ),
        Tool::new(
            "list_devices",
            "The cached devices, a page at a time.",
            schema(json!({"type": "object", "properties": {}})),
        ),
    ];
    let peer = McpPeer { status: Arc::new(status), list: Arc::new(parse(&answers.list)?), tools: Arc::new(tools) };
    load::serve_unix(rt, &path, "rmcp peer", move |s| {
        let peer = peer.clone();
        async move {
            if let Ok(running) = peer.serve(s).await {
                let _ = running.waiting().await;
            }
        }
    })
}

/// Checks that the peer on `path` answers every captured call with the daemon's own result document.
pub async fn check_mcp(path: &Path, answers: &McpAnswers) -> Res<()> {
    let mut conn = load::LineConn::mcp(path).await?;
    let mut calls: Vec<(String, &Value)> = answers
        .status
        .iter()
        .enumerate()
        .map(|(i, (d, r))| {
            (load::tool_call(i as u64 + 1, "get_device_status", &format!(r#"{{"device_id":"{d}"}}"#)), r)
        })
        .collect();
    calls.push((load::tool_call(0, "list_devices", "{}"), &answers.list));
    for (req, want) in calls {
        let answer = conn.call(req.as_bytes()).await?;
        let got: Value = serde_json::from_str(answer).map_err(|e| format!("rmcp peer, {req}: {e}"))?;
        if !load::tool_ok(answer) || &got["result"] != want {
            return Err(format!("the rmcp peer answered {req} with {answer:.400}, the daemon with {want:.400}"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// REST: axum over rustls.

/// What the daemon answered to `GET /v1/devices/{id}`: its headers and body.
pub type RestAnswers = HashMap<String, (HeaderMap, Bytes)>;

/// `GET /v1/devices/{id}` on the daemon for every device, with `auth` (`Bearer …`).
pub async fn capture_rest(
    addr: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    auth: &str,
    devices: &[String],
) -> Res<RestAnswers> {
    let mut conn = load::h1_tls(addr, tls).await?;
    let mut out = HashMap::with_capacity(devices.len());
    for d in devices {
        let path = format!("/v1/devices/{d}");
        let req = load::request("GET", &path, &[("authorization", auth.to_string())], Bytes::new());
        let (status, mut headers, body) = load::send(&mut conn, req).await?;
        if status != 200 {
            return Err(format!("GET {path}: {status}"));
        }
        // hyper writes these itself for every response.
        headers.remove(header::DATE);
        headers.remove(header::CONTENT_LENGTH);
        out.insert(d.clone(), (headers, body));
    }
    Ok(out)
}

struct RestPeer {
    /// SHA-256 of the one accepted bearer token.
    token_sha256: Vec<u8>,
    answers: RestAnswers,
}

/// Equal-length comparison that does not stop at the first difference (as the daemon's `store/tokens.rs`: ring
/// 0.17 deprecates its `constant_time` module).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && std::hint::black_box(a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y))) == 0
}

async fn get_device(State(peer): State<Arc<RestPeer>>, UrlPath(id): UrlPath<String>, headers: HeaderMap) -> Response {
    let token =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let authorized = token.is_some_and(|t| {
        constant_time_eq(ring::digest::digest(&ring::digest::SHA256, t.as_bytes()).as_ref(), &peer.token_sha256)
    });
    if !authorized {
        return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")]).into_response();
    }
    match peer.answers.get(&id) {
        Some((headers, body)) => (headers.clone(), body.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Starts the axum peer on 127.0.0.1 over TLS (the daemon's certificate and key, TLS 1.2 and 1.3 with ring, ALPN
/// h2 then http/1.1, as `src/http/tls.rs`), accepting `token` only; returns its address.
pub fn rest_peer(
    rt: &tokio::runtime::Runtime,
    cert: &Path,
    key: &Path,
    token: &str,
    answers: RestAnswers,
) -> Res<SocketAddr> {
    let acceptor = crate::load::server_tls(cert, key, &[b"h2", b"http/1.1"])?;
    let peer = Arc::new(RestPeer {
        token_sha256: ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref().to_vec(),
        answers,
    });
    let app = axum::Router::new().route("/v1/devices/{id}", axum::routing::get(get_device)).with_state(peer);
    let std = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    std.set_nonblocking(true).map_err(|e| e.to_string())?;
    let addr = std.local_addr().map_err(|e| e.to_string())?;
    rt.spawn(async move {
        let listener = TcpListener::from_std(std).expect("a non-blocking listener");
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            let (acceptor, app, builder) = (acceptor.clone(), app.clone(), builder.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = TowerToHyperService::new(app);
                let _ = builder.serve_connection(TokioIo::new(tls), service).await;
            });
        }
    });
    Ok(addr)
}

/// Checks that the peer at `addr` answers every device with the daemon's bytes, and refuses a wrong token.
pub async fn check_rest(
    addr: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    auth: &str,
    answers: &RestAnswers,
) -> Res<()> {
    let mut conn = load::h1_tls(addr, tls).await?;
    for (d, (headers, body)) in answers {
        let req =
            load::request("GET", &format!("/v1/devices/{d}"), &[("authorization", auth.to_string())], Bytes::new());
        let (status, got_headers, got_body) = load::send(&mut conn, req).await?;
        if status != 200
            || got_body != body
            || got_headers.get(header::CONTENT_TYPE) != headers.get(header::CONTENT_TYPE)
        {
            return Err(format!("the axum peer answered GET /v1/devices/{d} with {status} {got_headers:?}"));
        }
    }
    let d = answers.keys().next().ok_or("no device")?;
    let req = load::request(
        "GET",
        &format!("/v1/devices/{d}"),
        &[("authorization", "Bearer not-the-token".to_string())],
        Bytes::new(),
    );
    let (status, _, _) = load::send(&mut conn, req).await?;
    if status != 401 {
        return Err(format!("the axum peer answered a wrong token with {status}"));
    }
    Ok(())
}
