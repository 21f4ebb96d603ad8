//! `/mcp` over real TLS, at the HTTP level the SDK clients hide: Host and Origin checks, tokens, the legacy session
//! life cycle (Mcp-Session-Id, version header, DELETE) and the modern era's header validation and status codes.
//! The full client conversations run in tests/interop (Python SDK and MCP Inspector over HTTPS).

use serde_json::{Value, json};

mod support;
use support::Gateway;

struct Call<'a> {
    agent: &'a ureq::Agent,
    url: String,
}

impl Call<'_> {
    /// POSTs `body` with extra headers; returns status, the headers we look at, and the JSON body (or Null).
    fn post(&self, headers: &[(&str, &str)], body: &Value) -> (u16, Option<String>, Value) {
        let mut req = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json, text/event-stream");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut resp = req.send(body.to_string()).unwrap();
        let status = resp.status().as_u16();
        let session = resp.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()).map(String::from);
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (status, session, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
           "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
}

#[test]
fn mcp_over_https_checks_hosts_tokens_sessions_and_modern_headers() {
    let gw = Gateway::start(&[]);
    let agent = Gateway::agent(&gw.cert);
    let token = gw.token("mcp-op", "operator");
    let bearer = format!("Bearer {token}");
    let auth = ("Authorization", bearer.as_str());
    let mcp = Call { agent: &agent, url: gw.url("/mcp") };

    // DNS rebinding: a foreign Host or Origin is refused before anything else; no token is 401.
    let port = gw.lan.rsplit(':').next().unwrap().to_string();
    let evil_host = format!("evil.example:{port}");
    assert_eq!(mcp.post(&[auth, ("Host", &evil_host)], &initialize()).0, 403);
    assert_eq!(mcp.post(&[auth, ("Origin", "https://evil.example")], &initialize()).0, 403);
    let own_origin = format!("https://localhost:{port}");
    assert_eq!(mcp.post(&[auth, ("Origin", &own_origin)], &initialize()).0, 200);
    assert_eq!(mcp.post(&[], &initialize()).0, 401);

    // Legacy: initialize gives a session; later requests need it and the agreed version.
    let (status, session, body) = mcp.post(&[auth], &initialize());
    assert_eq!((status, body["result"]["protocolVersion"].as_str()), (200, Some("2025-11-25")), "{body}");
    let session = session.expect("Mcp-Session-Id on the initialize response");
    assert!(session.len() >= 32 && session.chars().all(|c| c.is_ascii_hexdigit()));
    let sid = ("Mcp-Session-Id", session.as_str());
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert_eq!(mcp.post(&[auth, sid], &initialized).0, 202);
    let list = json!({"jsonrpc": "2.0", "id": "two", "method": "tools/list"});
    let (status, _, body) = mcp.post(&[auth, sid, ("MCP-Protocol-Version", "2025-11-25")], &list);
    assert_eq!(status, 200);
    assert_eq!(body["id"], "two");
    assert!(body["result"]["tools"].as_array().unwrap().len() >= 32);
    assert_eq!(mcp.post(&[auth], &list).0, 400, "no session id");
    assert_eq!(mcp.post(&[auth, ("Mcp-Session-Id", "feedface")], &list).0, 404, "unknown session");
    assert_eq!(mcp.post(&[auth, sid, ("MCP-Protocol-Version", "2025-06-18")], &list).0, 400, "wrong version");
    // Another token cannot use this session.
    let other = format!("Bearer {}", gw.token("mcp-other", "viewer"));
    assert_eq!(mcp.post(&[("Authorization", &other), sid], &list).0, 404);
    let (status, _, body) = mcp.post(&[auth], &json!("not an object"));
    assert_eq!((status, body["error"]["code"].as_i64()), (400, Some(-32600)), "{body}");
    let resp = agent
        .post(&gw.url("/mcp"))
        .header("Authorization", &bearer)
        .header("Content-Type", "application/json")
        .send("{broken")
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400, "parse error");
    // DELETE ends the session.
    let resp = agent.delete(&gw.url("/mcp")).header("Authorization", &bearer).header("Mcp-Session-Id", &session).call();
    assert_eq!(resp.unwrap().status().as_u16(), 204);
    assert_eq!(mcp.post(&[auth, sid], &list).0, 404, "ended");

    // Modern: stateless; the headers must agree with the body.
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                      "io.modelcontextprotocol/clientCapabilities": {}});
    let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                      "params": {"name": "list_devices", "arguments": {"limit": 2}, "_meta": meta}});
    let v = ("MCP-Protocol-Version", "2026-07-28");
    let (status, _, body) = mcp.post(&[auth, v, ("Mcp-Method", "tools/call"), ("Mcp-Name", "list_devices")], &call);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["structuredContent"]["devices"].as_array().map(Vec::len), Some(2));
    let (status, _, body) = mcp.post(&[auth, v, ("Mcp-Method", "tools/call")], &call);
    assert_eq!((status, body["error"]["code"].as_i64()), (400, Some(-32020)), "missing Mcp-Name");
    let (status, _, body) = mcp.post(&[auth, v, ("Mcp-Method", "tools/list"), ("Mcp-Name", "list_devices")], &call);
    assert_eq!((status, body["error"]["code"].as_i64()), (400, Some(-32020)), "Mcp-Method differs");
    let unknown = json!({"jsonrpc": "2.0", "id": 8, "method": "nope/nothing", "params": {"_meta": meta}});
    let (status, _, body) = mcp.post(&[auth, v, ("Mcp-Method", "nope/nothing")], &unknown);
    assert_eq!((status, body["error"]["code"].as_i64()), (404, Some(-32601)), "{body}");
    let future = ("MCP-Protocol-Version", "2099-01-01");
    let (status, _, body) =
        mcp.post(&[auth, future, ("Mcp-Method", "tools/call"), ("Mcp-Name", "list_devices")], &call);
    assert_eq!((status, body["error"]["code"].as_i64()), (400, Some(-32022)), "{body}");
    // A viewer may not call an operator tool, over HTTP as over the socket.
    let send = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                      "params": {"name": "send_command", "arguments": {"command": "reboot", "device_id": "x", "dry_run": true},
                                 "_meta": meta}});
    let (status, _, body) =
        mcp.post(&[("Authorization", &other), v, ("Mcp-Method", "tools/call"), ("Mcp-Name", "send_command")], &send);
    assert_eq!(status, 200);
    assert_eq!(body["result"]["isError"], true);
    assert_eq!(body["result"]["structuredContent"]["error"]["code"], "permission_denied");
    // GET without a legacy session offers no stream.
    let resp = agent.get(&gw.url("/mcp")).header("Authorization", &bearer).header("Accept", "text/event-stream").call();
    assert_eq!(resp.unwrap().status().as_u16(), 405);
}
