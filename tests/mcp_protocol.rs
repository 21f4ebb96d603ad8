//! The MCP protocol as the daemon speaks it, driven in-process through a session with a chosen principal, against
//! the simulator: JSON-RPC errors, both eras, cancellation, concurrency, roles and read-only mode.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use xyte_edge::config::Role;
use xyte_edge::mcp::outgoing;
use xyte_edge::mcp::session::Session;
use xyte_edge::runtime::Principal;

mod support;
use support::{Rig, rig};

struct Peer {
    session: Arc<Session>,
    rx: outgoing::Receiver,
}

impl Peer {
    fn new(rig: &Rig, role: Role) -> Peer {
        let (tx, rx) = outgoing::queue();
        Peer {
            session: Session::new(rig.app.clone(), Arc::new(()), Principal { id: format!("test:{role}"), role }, tx),
            rx,
        }
    }

    async fn send(&self, raw: &str) {
        self.session.receive(raw.as_bytes()).await;
    }

    async fn next(&mut self) -> Value {
        tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
            .await
            .expect("a message within 10 s")
            .expect("channel open")
            .to_value()
    }

    /// Sends a request and returns the first message that is not a notification.
    async fn request(&mut self, msg: Value) -> Value {
        self.send(&msg.to_string()).await;
        loop {
            let m = self.next().await;
            if m.get("method").is_none() {
                return m;
            }
        }
    }

    async fn call(&mut self, tool: &str, args: Value) -> Value {
        let r = self
            .request(json!({"jsonrpc":"2.0","id":"call","method":"tools/call","params":{"name":tool,"arguments":args}}))
            .await;
        r["result"].clone()
    }

    /// Asserts that nothing arrives for a short while (used only to prove that no answer is sent).
    async fn silent(&mut self) {
        assert!(tokio::time::timeout(Duration::from_millis(300), self.rx.recv()).await.is_err(), "unexpected message");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_rpc_errors_and_ids() {
    let rig = rig(false).await;
    let mut p = Peer::new(&rig, Role::Admin);
    p.send("{not json").await;
    let e = p.next().await;
    assert_eq!(e["error"]["code"], -32700);
    assert!(e.get("id").is_none(), "no id on a parse error: {e}");

    let e = p.request(json!({"jsonrpc":"2.0","id":1,"method":"no/such"})).await;
    assert_eq!((e["id"].clone(), e["error"]["code"].clone()), (json!(1), json!(-32601)));
    let e = p.request(json!({"jsonrpc":"2.0","id":"abc","method":"tools/call","params":{"name":"nope"}})).await;
    assert_eq!((e["id"].clone(), e["error"]["code"].clone()), (json!("abc"), json!(-32602)));
    let e = p.request(json!({"jsonrpc":"2.0","id":null,"method":"ping"})).await;
    assert_eq!(e["error"]["code"], -32600);

    // Notifications are never answered.
    p.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).await;
    p.send(r#"{"jsonrpc":"2.0","method":"notifications/whatever"}"#).await;
    p.silent().await;

    // Batches only in 2025-03-26.
    p.send(r#"[{"jsonrpc":"2.0","id":5,"method":"ping"}]"#).await;
    assert_eq!(p.next().await["error"]["code"], -32600);
    let init = p.request(json!({"jsonrpc":"2.0","id":2,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"t","version":"1"}}})).await;
    assert_eq!(init["result"]["protocolVersion"], "2025-03-26");
    p.send(r#"[{"jsonrpc":"2.0","id":6,"method":"ping"},{"jsonrpc":"2.0","id":"7","method":"tools/list"}]"#).await;
    let batch = p.next().await;
    assert_eq!(batch.as_array().map(Vec::len), Some(2), "{batch}");
    assert_eq!(batch[0]["id"], 6);
    assert_eq!(batch[1]["id"], "7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_eras_on_one_connection_type() {
    let rig = rig(false).await;
    let mut p = Peer::new(&rig, Role::Viewer);
    let init = p.request(json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2099-01-01","capabilities":{},"clientInfo":{"name":"t","version":"1"}}})).await;
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25", "unknown version → our latest legacy");
    assert_eq!(init["result"]["serverInfo"]["name"], "xyte-edge");
    for v in ["2024-11-05", "2025-06-18", "2025-11-25"] {
        let mut q = Peer::new(&rig, Role::Viewer);
        let r = q.request(json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":v,"capabilities":{},"clientInfo":{"name":"t","version":"1"}}})).await;
        assert_eq!(r["result"]["protocolVersion"], v);
    }
    assert_eq!(p.request(json!({"jsonrpc":"2.0","id":2,"method":"ping"})).await["result"], json!({}));

    let meta =
        json!({"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}});
    let mut m = Peer::new(&rig, Role::Viewer);
    let d = m.request(json!({"jsonrpc":"2.0","id":1,"method":"server/discover","params":{"_meta":meta}})).await;
    assert_eq!(d["result"]["supportedVersions"], json!(["2026-07-28"]));
    assert_eq!(d["result"]["resultType"], "complete");
    assert!(d["result"]["ttlMs"].is_number() && d["result"]["cacheScope"].is_string());
    assert_eq!(d["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"], "xyte-edge");
    let t = m.request(json!({"jsonrpc":"2.0","id":2,"method":"tools/list","params":{"_meta":meta}})).await;
    assert_eq!(t["result"]["resultType"], "complete");
    let names: Vec<&str> =
        t["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"list_devices") && names.contains(&"send_command"));
    let e = m.request(json!({"jsonrpc":"2.0","id":3,"method":"ping","params":{"_meta":meta}})).await;
    assert_eq!(e["error"]["code"], -32601, "ping is gone in the modern era");
    let e = m.request(json!({"jsonrpc":"2.0","id":4,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2030-01-01","io.modelcontextprotocol/clientCapabilities":{}}}})).await;
    assert_eq!(e["error"]["code"], -32022);
    assert_eq!(e["error"]["data"]["requested"], "2030-01-01");
    let e = m.request(json!({"jsonrpc":"2.0","id":5,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}})).await;
    assert_eq!(e["error"]["code"], -32602, "clientCapabilities is required");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_request_gets_no_response() {
    let rig = rig(false).await;
    rig.sim.sim.set_faults("latency=3s".parse().unwrap());
    let mut p = Peer::new(&rig, Role::Viewer);
    p.send(
        r#"{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"get_organization_info","arguments":{}}}"#,
    )
    .await;
    p.send(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":42,"reason":"user"}}"#).await;
    let r = p.request(json!({"jsonrpc":"2.0","id":43,"method":"ping"})).await;
    assert_eq!(r["id"], 43, "the next answer is the ping's, not the cancelled call's");
    assert!(
        tokio::time::timeout(Duration::from_secs(4), p.rx.recv()).await.is_err(),
        "the cancelled request must not be answered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_requests_in_flight_are_all_answered() {
    let rig = rig(false).await;
    rig.sim.sim.set_faults("latency=200ms".parse().unwrap());
    let mut p = Peer::new(&rig, Role::Viewer);
    for i in 0..64 {
        let tool = if i % 2 == 0 { "list_devices" } else { "get_organization_info" };
        p.send(
            &json!({"jsonrpc":"2.0","id":i,"method":"tools/call","params":{"name":tool,"arguments":{}}}).to_string(),
        )
        .await;
    }
    let mut ids = std::collections::BTreeSet::new();
    while ids.len() < 64 {
        let m = p.next().await;
        assert_eq!(m["result"]["isError"], false, "{m}");
        ids.insert(m["id"].as_i64().unwrap());
    }
    assert_eq!(ids, (0..64).collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_read_only_mode_refuse_mutations() {
    let rw = rig(false).await;
    let device = rw.sim.sim.device_ids()[0].clone();
    // Dry runs check that the objects exist, so use real ones.
    let mut reader = Peer::new(&rw, Role::Viewer);
    let ticket = reader.call("list_tickets", json!({})).await["structuredContent"]["tickets"][0]["id"].clone();
    let incident = reader.call("list_incidents", json!({})).await["structuredContent"]["incidents"][0]["id"].clone();
    assert!(
        ticket.is_string() && incident.is_string(),
        "the simulator has a ticket ({ticket}) and an incident ({incident})"
    );
    let mutating = [
        ("send_command", json!({"device_id": device, "command": "reboot", "dry_run": true})),
        ("update_ticket", json!({"ticket_id": ticket, "title": "x", "dry_run": true})),
        ("mark_ticket_resolved", json!({"ticket_id": ticket, "dry_run": true})),
        ("send_ticket_message", json!({"ticket_id": ticket, "message": "m", "dry_run": true})),
        ("close_incident", json!({"incident_id": incident, "dry_run": true})),
        ("set_context", json!({"room": "Board Room"})),
    ];
    let mut viewer = Peer::new(&rw, Role::Viewer);
    for (tool, args) in &mutating {
        let r = viewer.call(tool, args.clone()).await;
        assert_eq!(r["isError"], true, "{tool}");
        assert_eq!(r["structuredContent"]["error"]["code"], "permission_denied", "{tool}: {r}");
    }
    let mut operator = Peer::new(&rw, Role::Operator);
    for (tool, args) in &mutating {
        let r = operator.call(tool, args.clone()).await;
        assert_eq!(r["isError"], false, "{tool}: {r}");
    }
    let sent = operator.call("send_command", json!({"device_id": device, "command": "reboot", "dry_run": true})).await;
    assert_eq!(sent["structuredContent"]["would_send"]["body"]["command"], "reboot");
    assert!(rw.sim.sim.stats().commands.is_empty(), "a dry run sends nothing");

    let ro = rig(true).await;
    let mut admin = Peer::new(&ro, Role::Admin);
    for (tool, args) in &mutating {
        let r = admin.call(tool, args.clone()).await;
        assert_eq!(r["structuredContent"]["error"]["code"], "read_only", "{tool}: {r}");
    }
    let admin_writes = [
        ("claim_device", json!({"name": "x", "space_id": 1, "cloud_id": "c", "dry_run": true})),
        ("xyte_api_call", json!({"key": "spaces.create", "body": {"name": "x"}, "dry_run": true})),
        ("start_meeting_room_preset", json!({"room": "Board Room", "dry_run": true})),
    ];
    for (tool, args) in &admin_writes {
        let r = admin.call(tool, args.clone()).await;
        assert_eq!(r["structuredContent"]["error"]["code"], "read_only", "{tool}: {r}");
    }
    assert_eq!(admin.call("list_devices", json!({})).await["isError"], false, "reads still work read-only");
    let read = admin.call("xyte_api_call", json!({"key": "spaces.list"})).await;
    assert_eq!(read["isError"], false, "a GET through xyte_api_call is a read: {read}");
}
