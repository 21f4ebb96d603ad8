//! The conformance suite's test-only fixtures (`XYTE_CONFORMANCE_FIXTURES=1`, tests/interop/conformance_fixtures.rs): with the switch
//! off (the default) or without the cargo feature `conformance-fixtures` nothing of them is listed, callable or
//! readable in either era; with both on (the tests below that need the feature) they are, including
//! the MRTR flow's sealed `requestState` (tampering and replay by another principal refused) and request-scoped log
//! lines on the request's own SSE stream over HTTP. The full suite runs in tests/interop/conformance.sh.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use xyte_edge::config::Role;
use xyte_edge::mcp::session::Session;
use xyte_edge::mcp::{Extension, outgoing};
use xyte_edge::runtime::Principal;

mod support;
#[cfg(feature = "conformance-fixtures")]
use support::Gateway;
use support::{Rig, rig};

struct Peer {
    session: Arc<Session>,
    rx: outgoing::Receiver,
    next_id: u64,
}

impl Peer {
    fn new(rig: &Rig, extension: &Arc<dyn Extension>, principal: &str) -> Peer {
        let (tx, rx) = outgoing::queue();
        let principal = Principal { id: principal.into(), role: Role::Admin };
        Peer { session: Session::new(rig.app.clone(), extension.clone(), principal, tx), rx, next_id: 0 }
    }

    /// Sends a request; returns the notifications that came before its response, and the response.
    async fn request(&mut self, method: &str, params: Value) -> (Vec<Value>, Value) {
        self.next_id += 1;
        let msg = json!({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params});
        self.session.receive(msg.to_string().as_bytes()).await;
        let mut notes = Vec::new();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
                .await
                .expect("an answer")
                .unwrap()
                .to_value();
            if m.get("method").is_none() {
                assert_eq!(m["id"], self.next_id, "{m}");
                return (notes, m);
            }
            notes.push(m);
        }
    }

    async fn legacy(rig: &Rig, extension: &Arc<dyn Extension>) -> Peer {
        let mut p = Peer::new(rig, extension, "test:legacy");
        let init =
            json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}});
        let (_, r) = p.request("initialize", init).await;
        assert_eq!(r["result"]["protocolVersion"], "2025-11-25");
        p
    }
}

fn modern(mut params: Value, caps: Value) -> Value {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": caps,
    });
    params
}

fn all_caps() -> Value {
    json!({"elicitation": {}, "sampling": {}, "roots": {"listChanged": true}})
}

fn names(list: &Value, key: &str) -> Vec<String> {
    list.as_array().unwrap().iter().map(|x| x[key].as_str().unwrap().to_string()).collect()
}

/// Everything a client can see of the catalogue, in one era.
async fn inventory(p: &mut Peer, wrap: impl Fn(Value) -> Value) -> Vec<String> {
    let mut seen = Vec::new();
    for (method, field, key) in [
        ("tools/list", "tools", "name"),
        ("resources/list", "resources", "uri"),
        ("resources/templates/list", "resourceTemplates", "uriTemplate"),
        ("prompts/list", "prompts", "name"),
    ] {
        let (_, r) = p.request(method, wrap(json!({}))).await;
        seen.extend(names(&r["result"][field], key));
    }
    seen
}

fn is_fixture(name: &str) -> bool {
    name.starts_with("test_") || name.starts_with("test://") || name == "json_schema_2020_12_tool"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixtures_are_invisible_when_the_switch_is_off() {
    let rig = rig(false).await;
    let ext = xyte_edge::mcp::extension(false);
    assert!(ext.list("tools", true).is_empty(), "off by default");
    let mut legacy = Peer::legacy(&rig, &ext).await;
    let mut stateless = Peer::new(&rig, &ext, "test:modern");

    let seen = inventory(&mut legacy, |p| p).await;
    assert!(seen.iter().any(|n| n == "list_devices"), "{seen:?}");
    assert!(!seen.iter().any(|n| is_fixture(n)), "legacy: {seen:?}");
    let (_, tools) = legacy.request("tools/list", json!({})).await;
    assert_eq!(tools["result"]["tools"].as_array().unwrap().len(), xyte_edge::ops::CATALOGUE.len());
    let seen = inventory(&mut stateless, |p| modern(p, all_caps())).await;
    assert!(!seen.iter().any(|n| is_fixture(n)), "modern: {seen:?}");

    for tool in ["test_simple_text", "test_error_handling", "json_schema_2020_12_tool"] {
        let (_, r) = legacy.request("tools/call", json!({"name": tool, "arguments": {}})).await;
        assert_eq!(r["error"]["code"], -32602, "{r}");
    }
    let call = json!({"name": "test_input_required_result_elicitation", "arguments": {}});
    let (_, r) = stateless.request("tools/call", modern(call, all_caps())).await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
    let (_, r) = legacy.request("resources/read", json!({"uri": "test://static-text"})).await;
    assert_eq!(r["error"]["code"], -32002, "{r}");
    let (_, r) = stateless.request("resources/read", modern(json!({"uri": "test://template/1/data"}), json!({}))).await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
    let (_, r) = legacy.request("prompts/get", json!({"name": "test_simple_prompt"})).await;
    assert!(r.get("error").is_some(), "{r}");
    let (_, r) = stateless
        .request("prompts/get", modern(json!({"name": "test_input_required_result_prompt"}), all_caps()))
        .await;
    assert!(r.get("error").is_some(), "{r}");
}

#[cfg(feature = "conformance-fixtures")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_switch_on_fixtures_are_served_in_both_eras() {
    let rig = rig(false).await;
    let ext = xyte_edge::mcp::extension(true);
    let mut legacy = Peer::legacy(&rig, &ext).await;
    let seen = inventory(&mut legacy, |p| p).await;
    for want in
        ["list_devices", "test_simple_text", "test://static-text", "test://template/{id}/data", "test_simple_prompt"]
    {
        assert!(seen.iter().any(|n| n == want), "{want} in {seen:?}");
    }
    assert!(!seen.iter().any(|n| n.starts_with("test_input_required")), "MRTR is modern only: {seen:?}");

    // Legacy log lines: only after logging/setLevel, tied to the call, before its response.
    let (notes, r) = legacy.request("tools/call", json!({"name": "test_tool_with_logging"})).await;
    assert!(notes.is_empty() && r["result"]["content"][0]["type"] == "text", "{notes:?} {r}");
    legacy.request("logging/setLevel", json!({"level": "debug"})).await;
    let (notes, _) = legacy.request("tools/call", json!({"name": "test_tool_with_logging"})).await;
    assert_eq!(notes.len(), 3, "{notes:?}");
    assert!(notes.iter().all(|n| n["method"] == "notifications/message" && n["params"]["level"] == "info"));

    let (_, r) = legacy.request("resources/read", json!({"uri": "test://template/123/data"})).await;
    let text: Value = serde_json::from_str(r["result"]["contents"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(text["id"], "123");
    let (_, r) = legacy.request("tools/call", json!({"name": "test_error_handling"})).await;
    assert_eq!(r["result"]["isError"], true);

    // The watched resource changes every 3 s; a subscriber hears of it.
    legacy.request("resources/subscribe", json!({"uri": "test://watched-resource"})).await;
    let updated = loop {
        let m = tokio::time::timeout(Duration::from_secs(5), legacy.rx.recv())
            .await
            .expect("an update")
            .unwrap()
            .to_value();
        if m["method"] == "notifications/resources/updated" {
            break m;
        }
    };
    assert_eq!(updated["params"]["uri"], "test://watched-resource");

    // Modern: per-request log level; without one, no log lines.
    let mut m = Peer::new(&rig, &ext, "test:modern");
    let (notes, _) = m.request("tools/call", modern(json!({"name": "test_logging_tool"}), json!({}))).await;
    assert!(notes.is_empty(), "{notes:?}");
    let mut params = modern(json!({"name": "test_logging_tool"}), json!({}));
    params["_meta"]["io.modelcontextprotocol/logLevel"] = json!("info");
    let (notes, _) = m.request("tools/call", params).await;
    assert_eq!(notes.len(), 1, "{notes:?}");
}

#[cfg(feature = "conformance-fixtures")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mrtr_state_is_sealed_and_bound_and_capabilities_are_respected() {
    let rig = rig(false).await;
    let ext = xyte_edge::mcp::extension(true);
    let mut alice = Peer::new(&rig, &ext, "token:alice");
    let mut bob = Peer::new(&rig, &ext, "token:bob");
    let tool = "test_input_required_result_tampered_state";
    let call = |extra: Value| {
        let mut p = json!({"name": tool, "arguments": {}});
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        modern(p, all_caps())
    };

    let (_, r1) = alice.request("tools/call", call(json!({}))).await;
    let r1 = &r1["result"];
    assert_eq!(r1["resultType"], "input_required", "{r1}");
    assert_eq!(r1["inputRequests"]["confirm"]["method"], "elicitation/create");
    assert!(r1.get("ttlMs").is_none(), "no caching hints on an incomplete result: {r1}");
    let state = r1["requestState"].as_str().unwrap().to_string();
    let answer = json!({"confirm": {"action": "accept", "content": {"ok": true}}});

    let (_, r) = alice.request("tools/call", call(json!({"inputResponses": answer, "requestState": state}))).await;
    assert_eq!(r["result"]["resultType"], "complete", "{r}");
    assert_eq!(r["result"]["content"][0]["text"], "integrity-ok: state verified");
    let tampered = format!("{state}-TAMPERED");
    let (_, r) = alice.request("tools/call", call(json!({"inputResponses": answer, "requestState": tampered}))).await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
    let (_, r) = bob.request("tools/call", call(json!({"inputResponses": answer, "requestState": state}))).await;
    assert_eq!(r["error"]["code"], -32602, "another principal's state: {r}");
    let (_, r) = alice.request("tools/call", call(json!({"inputResponses": {"confirm": 12345}}))).await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
    let (_, r) = alice.request("tools/call", call(json!({"inputResponses": null}))).await;
    assert_eq!(r["error"]["code"], -32602, "{r}");

    // An input request the client's capabilities do not allow is never sent: -32021 names what is missing.
    let (_, r) = alice.request("tools/call", modern(json!({"name": "test_missing_capability"}), json!({}))).await;
    assert_eq!(r["error"]["code"], -32021, "{r}");
    assert_eq!(r["error"]["data"]["requiredCapabilities"], json!({"sampling": {}}));
    let caps = json!({"sampling": {}});
    let (_, r) =
        alice.request("tools/call", modern(json!({"name": "test_input_required_result_capabilities"}), caps)).await;
    let asked: Vec<&String> = r["result"]["inputRequests"].as_object().unwrap().keys().collect();
    assert_eq!(asked, ["sample_input"], "{r}");
}

/// Over HTTP (legacy era), a tool's log lines travel on the tools/call's own SSE stream, before its response; and
/// the switch is read from the daemon's environment.
#[cfg(feature = "conformance-fixtures")]
#[test]
fn http_switch_and_log_lines_on_the_call_stream() {
    let mut gw = Gateway::start(&[("XYTE_CONFORMANCE_FIXTURES", "1")]);
    gw.daemon.wait_line("XYTE_CONFORMANCE_FIXTURES=1: MCP also serves", Duration::from_secs(5));
    let agent = Gateway::agent(&gw.cert);
    let bearer = format!("Bearer {}", gw.token("fixtures", "viewer"));
    let post = |session: Option<&str>, body: Value| {
        let mut req = agent
            .post(&gw.url("/mcp"))
            .header("Authorization", &bearer)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json, text/event-stream");
        if let Some(s) = session {
            req = req.header("Mcp-Session-Id", s).header("MCP-Protocol-Version", "2025-11-25");
        }
        let mut resp = req.send(body.to_string()).unwrap();
        let kind = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let session = resp.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()).map(String::from);
        (kind, session, resp.body_mut().read_to_string().unwrap())
    };
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params":
        {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let (_, session, _) = post(None, init);
    let session = session.expect("a legacy session");
    let s = Some(session.as_str());
    post(s, json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));

    let (_, _, tools) = post(s, json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}));
    assert!(tools.contains("\"test_simple_text\""), "{tools}");
    let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "test_tool_with_logging"}});
    let (kind, _, body) = post(s, call.clone());
    assert!(kind.starts_with("application/json"), "no log level set, plain JSON: {kind} {body}");

    post(s, json!({"jsonrpc": "2.0", "id": 4, "method": "logging/setLevel", "params": {"level": "info"}}));
    let (kind, _, body) = post(s, call);
    assert!(kind.starts_with("text/event-stream"), "{kind} {body}");
    let messages: Vec<Value> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str(d.trim()).ok())
        .collect();
    let methods: Vec<&str> = messages.iter().map(|m| m["method"].as_str().unwrap_or("(response)")).collect();
    assert_eq!(methods, ["notifications/message", "notifications/message", "notifications/message", "(response)"]);
    assert_eq!(messages[3]["id"], 3);
}
