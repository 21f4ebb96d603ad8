//! The LAN API over real TLS, trusting the certificate the daemon generated: every REST route returns the same data
//! as its tool, the role matrix (no token / viewer / operator / admin × every route and every tool), error statuses,
//! security headers, HTTP/2 by ALPN, and a certificate reload on SIGHUP that leaves open connections alone.

use std::time::Duration;

use serde_json::{Value, json};

mod support;
use support::Gateway;

/// (status, headers we check, JSON body or Null)
fn get(agent: &ureq::Agent, url: &str, token: Option<&str>) -> (u16, ureq::http::HeaderMap, Value) {
    let mut req = agent.get(url);
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let mut resp = req.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    (status, headers, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn post(agent: &ureq::Agent, url: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
    let mut req = agent.post(url).header("Content-Type", "application/json");
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let mut resp = req.send(body.to_string()).unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Fields that legitimately differ between two reads a moment apart.
fn settle(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.remove("fetched_at");
        m.remove("generated_at");
    }
    v
}

#[test]
fn rest_over_tls_matches_the_tools_and_enforces_roles() {
    let gw = Gateway::start(&[]);
    let agent = Gateway::agent(&gw.cert);
    let (viewer, operator, admin) =
        (gw.token("viewer-1", "viewer"), gw.token("operator-1", "operator"), gw.token("admin-1", "admin"));

    // Health needs no token and tells the truth.
    let (status, headers, body) = get(&agent, &gw.url("/healthz"), None);
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    assert_eq!(headers.get("strict-transport-security").unwrap(), "max-age=31536000");
    assert_eq!(headers.get("x-content-type-options").unwrap(), "nosniff");
    assert_eq!(headers.get("cache-control").unwrap(), "no-store");
    let (status, _, body) = get(&agent, &gw.url("/readyz"), None);
    assert_eq!(status, 200, "{body}");

    // Ids to use.
    let devices = get(&agent, &gw.url("/v1/devices?limit=100"), Some(&viewer)).2;
    let device = devices["devices"][0]["id"].as_str().unwrap().to_string();
    let space = devices["devices"][0]["space_id"].as_str().unwrap().to_string();
    let ticket = get(&agent, &gw.url("/v1/tickets"), Some(&viewer)).2["tickets"][0]["id"].as_str().unwrap().to_string();
    let incident =
        get(&agent, &gw.url("/v1/incidents"), Some(&viewer)).2["incidents"][0]["id"].as_str().unwrap().to_string();

    // Every REST read equals its tool.
    let routes = [
        ("/v1/devices?status=online&limit=7", "list_devices", json!({"status": "online", "limit": 7})),
        (&format!("/v1/devices/{device}") as &str, "get_device_status", json!({"device_id": device})),
        (&format!("/v1/devices/{device}/commands"), "list_device_commands", json!({"device_id": device})),
        (&format!("/v1/devices/{device}/histories"), "search_device_histories", json!({"device_id": device})),
        ("/v1/incidents", "list_incidents", json!({})),
        ("/v1/tickets", "list_tickets", json!({})),
        (&format!("/v1/tickets/{ticket}"), "get_ticket", json!({"ticket_id": ticket})),
        ("/v1/spaces?query=room", "list_spaces", json!({"query": "room"})),
        (&format!("/v1/spaces/{space}/devices"), "list_devices", json!({"space_id": space})),
        ("/v1/rooms", "list_rooms", json!({})),
        ("/v1/organization", "get_organization_info", json!({})),
        ("/v1/fleet/health", "get_fleet_health", json!({})),
        ("/v1/events?limit=5", "list_events", json!({"limit": 5})),
    ];
    for (path, tool, args) in &routes {
        let (status, _, rest) = get(&agent, &gw.url(path), Some(&viewer));
        assert_eq!(status, 200, "{path}: {rest}");
        let (status, via_tool) = post(&agent, &gw.url(&format!("/v1/tools/{tool}")), Some(&viewer), args);
        assert_eq!(status, 200, "{tool}: {via_tool}");
        assert_eq!(settle(rest), settle(via_tool), "{path} differs from {tool}");
        // No token: 401 with the challenge.
        let resp = agent.get(&gw.url(path)).call().unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{path}");
        assert_eq!(resp.headers().get("www-authenticate").unwrap(), "Bearer realm=\"xyte-edge\"");
    }
    let (status, _, body) = get(&agent, &gw.url("/v1/devices"), Some("xe_not-a-real-token"));
    assert_eq!(status, 401, "{body}");

    // The role matrix over every tool: exactly the allowed roles succeed.
    let room = "Board Room";
    let args_for = |tool: &str| -> Value {
        match tool {
            "get_device_status"
            | "list_device_commands"
            | "search_device_histories"
            | "get_device_analytics_report" => {
                json!({"device_id": device})
            }
            "get_ticket" => json!({"ticket_id": ticket}),
            "search" => json!({"query": "board"}),
            "fetch" => json!({"id": format!("device:{device}")}),
            "get_task_status" => json!({"task_id": "tsk_none"}),
            "xyte_endpoint_describe" => json!({"key": "devices.get"}),
            "xyte_api_call" => json!({"key": "devices.move", "path_params": {"device_id": device},
                                      "body": {"space_id": space}, "dry_run": true}),
            "send_command" | "send_command_async" => json!({"device_id": device, "command": "reboot", "dry_run": true}),
            "cancel_command" => json!({"device_id": device, "command_id": "c-1", "dry_run": true}),
            "start_meeting_room_preset" | "shutdown_meeting_room" => json!({"room": room, "dry_run": true}),
            "update_ticket" => json!({"ticket_id": ticket, "title": "t", "dry_run": true}),
            "mark_ticket_resolved" => json!({"ticket_id": ticket, "dry_run": true}),
            "send_ticket_message" => json!({"ticket_id": ticket, "message": "m", "dry_run": true}),
            "close_incident" => json!({"incident_id": incident, "dry_run": true}),
            "set_context" => json!({"room": room}),
            "claim_device" => json!({"name": "n", "space_id": space, "cloud_id": "c", "dry_run": true}),
            "update_device" => json!({"device_id": device, "name": "n", "dry_run": true}),
            "delete_device" => json!({"device_id": device, "confirm": device, "dry_run": true}),
            "pause_schedule" | "resume_schedule" | "run_schedule_now" => {
                json!({"name": "no-such-schedule", "dry_run": true})
            }
            "silence_alerts" => json!({"device": device, "duration": "1h", "dry_run": true}),
            "end_silence" => json!({"id": "sil_none", "dry_run": true}),
            _ => json!({}),
        }
    };
    let tools = get(&agent, &gw.url("/v1/tools"), Some(&viewer)).2["tools"].as_array().unwrap().clone();
    assert!(tools.len() >= 32);
    let rank = |r: &str| ["viewer", "operator", "admin"].iter().position(|x| *x == r).unwrap();
    for tool in &tools {
        let name = tool["name"].as_str().unwrap();
        let needed = rank(tool["role"].as_str().unwrap());
        for (who, token) in [("viewer", &viewer), ("operator", &operator), ("admin", &admin)] {
            let (status, body) = post(&agent, &gw.url(&format!("/v1/tools/{name}")), Some(token), &args_for(name));
            let allowed = rank(who) >= needed;
            if ["get_task_status", "run_schedule_now", "end_silence"].contains(&name) || name.ends_with("_schedule") {
                // A made-up task id, schedule name or silence id: allowed means "looked up and not found".
                assert_eq!(status, if allowed { 404 } else { 403 }, "{name} as {who}: {body}");
            } else if allowed {
                assert_eq!(status, 200, "{name} as {who}: {body}");
            } else {
                assert_eq!(
                    (status, body["error"]["code"].as_str()),
                    (403, Some("permission_denied")),
                    "{name} as {who}"
                );
            }
        }
        let (status, _) = post(&agent, &gw.url(&format!("/v1/tools/{name}")), None, &args_for(name));
        assert_eq!(status, 401, "{name} without a token");
    }
    // A GET through the catalogue is a read: a viewer may.
    let (status, body) = post(
        &agent,
        &gw.url("/v1/tools/xyte_api_call"),
        Some(&viewer),
        &json!({"key": "devices.get", "path_params": {"device_id": device}}),
    );
    assert_eq!((status, body["result"]["id"].as_str()), (200, Some(device.as_str())), "{body}");

    // Errors: unknown route, wrong method, bad bodies, unknown query parameter, unknown tool.
    assert_eq!(get(&agent, &gw.url("/v1/nothing"), Some(&viewer)).0, 404);
    assert_eq!(post(&agent, &gw.url("/v1/devices"), Some(&viewer), &json!({})).0, 405);
    let (status, _, body) = get(&agent, &gw.url("/v1/devices?limt=3"), Some(&viewer));
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_params")), "{body}");
    assert_eq!(post(&agent, &gw.url("/v1/tools/no_such_tool"), Some(&viewer), &json!({})).0, 400);
    let resp = agent
        .post(&gw.url("/v1/tools/list_devices"))
        .header("Authorization", &format!("Bearer {viewer}"))
        .send("{not json")
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let big = "x".repeat(1024 * 1024 + 10);
    let resp = agent
        .post(&gw.url("/v1/tools/list_devices"))
        .header("Authorization", &format!("Bearer {viewer}"))
        .send(format!("{{\"query\": \"{big}\"}}"))
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);

    // The loopback listener serves the same API in plain HTTP.
    let plain: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let (status, headers, _) = get(&plain, &format!("http://{}/v1/organization", gw.local), Some(&viewer));
    assert_eq!(status, 200);
    assert!(headers.get("strict-transport-security").is_none(), "no HSTS on plain HTTP");

    // The OpenAPI document and the docs page need no token.
    let (status, _, doc) = get(&agent, &gw.url("/v1/openapi.json"), None);
    assert_eq!((status, doc["openapi"].as_str()), (200, Some("3.1.0")));
    let mut page = agent.get(&gw.url("/v1/docs")).call().unwrap();
    assert!(page.headers().get("content-security-policy").is_some());
    assert!(page.body_mut().read_to_string().unwrap().contains("list_devices"));
    drop(gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_is_offered_by_alpn_and_sighup_reloads_the_certificate() {
    let gw = tokio::task::spawn_blocking(|| Gateway::start(&[])).await.unwrap();
    let old_pem = std::fs::read(&gw.cert).unwrap();
    let connect = |pem: Vec<u8>, port: String| async move {
        let mut roots = rustls::RootCertStore::empty();
        use rustls_pki_types::pem::PemObject;
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.unwrap()).unwrap();
        }
        let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}")).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        connector.connect(name, tcp).await
    };
    let port = gw.lan.rsplit(':').next().unwrap().to_string();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = connect(old_pem.clone(), port.clone()).await.expect("handshake with the generated certificate");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "HTTP/2 negotiated");

    // A new certificate: remove the generated pair and reload; the daemon makes a new one.
    let dir = gw.cert.parent().unwrap();
    std::fs::remove_file(dir.join("cert.pem")).unwrap();
    std::fs::remove_file(dir.join("key.pem")).unwrap();
    let mut gw = gw;
    gw.daemon.signal(nix::sys::signal::Signal::SIGHUP);
    gw.daemon.wait_line("TLS certificate reloaded", Duration::from_secs(10));
    let new_pem = std::fs::read(&gw.cert).unwrap();
    assert_ne!(old_pem, new_pem);
    assert!(connect(old_pem, port.clone()).await.is_err(), "new handshakes present the new certificate");
    assert!(connect(new_pem, port).await.is_ok());
    // The connection opened before the reload is still usable.
    let (mut reader, mut writer) = tokio::io::split(tls);
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    writer.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    writer.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap(); // empty SETTINGS
    let mut frame = [0u8; 9];
    reader.read_exact(&mut frame).await.expect("the server still talks on the old connection");
    assert_eq!(frame[3], 4, "the server's first frame is SETTINGS");
}

/// The daemon keeps the tokens it verified in memory (a request costs no database read), and that stays exact:
/// `token revoke`, run by another process while the daemon serves, refuses the token from the very next request;
/// a name reused after revocation gets a new secret and the old one stays refused; an expiring token is refused
/// from its expiry on, although it was answered from memory a moment before.
#[test]
fn tokens_kept_in_memory_are_refused_once_revoked_or_expired() {
    let gw = Gateway::start(&[]);
    let agent = Gateway::agent(&gw.cert);
    let devices = gw.url("/v1/devices");
    let cli = |args: &[&str]| {
        let out = support::bin().arg("token").args(args).env("XYTE_STATE_DIR", &gw.state).output().unwrap();
        assert!(out.status.success(), "token {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };

    let first = gw.token("kiosk", "viewer");
    for _ in 0..3 {
        assert_eq!(get(&agent, &devices, Some(&first)).0, 200);
    }
    cli(&["revoke", "kiosk"]);
    assert_eq!(get(&agent, &devices, Some(&first)).0, 401, "a revoked token must be refused at once");

    let second = cli(&["create", "--name", "kiosk", "--role", "viewer"]);
    assert_eq!(get(&agent, &devices, Some(&second)).0, 200);
    assert_eq!(get(&agent, &devices, Some(&first)).0, 401, "the revoked secret stays refused");
    // Revoking one token forgets every kept one; the others are read again and still pass.
    let other = gw.token("panel", "viewer");
    assert_eq!(get(&agent, &devices, Some(&other)).0, 200);
    cli(&["revoke", "kiosk"]);
    assert_eq!(get(&agent, &devices, Some(&second)).0, 401);
    assert_eq!(get(&agent, &devices, Some(&other)).0, 200);

    // `now` in `token create` is taken before it returns, so the token has expired 2 s after that.
    let expiring = cli(&["create", "--name", "visitor", "--role", "viewer", "--expires", "2s"]);
    let made = std::time::Instant::now();
    assert_eq!(get(&agent, &devices, Some(&expiring)).0, 200);
    assert_eq!(get(&agent, &devices, Some(&expiring)).0, 200);
    std::thread::sleep((made + Duration::from_millis(2100)).saturating_duration_since(std::time::Instant::now()));
    assert_eq!(get(&agent, &devices, Some(&expiring)).0, 401, "an expired token must be refused");
}
