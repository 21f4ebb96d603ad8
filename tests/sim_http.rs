//! The simulator over raw HTTP, as any client sees it: auth, pagination shapes and limits, the command lifecycle,
//! validation, faults and the control routes.

use std::time::Duration;

use serde_json::{Value, json};
use xyte_edge::sim::{self, SimHandle, SimOptions};

async fn start(devices: usize, faults: &str) -> SimHandle {
    let opts = SimOptions { devices, seed: 11, faults: faults.parse().unwrap(), churn: false, ..Default::default() };
    sim::spawn("127.0.0.1:0".parse().unwrap(), opts).await.unwrap()
}

/// (status, headers' Retry-After, JSON body) for one request; runs ureq on a blocking thread.
async fn call(
    sim: &SimHandle,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Option<String>, Value) {
    let url = if path.starts_with("/_sim") {
        format!("http://{}{path}", sim.addr)
    } else {
        format!("{}{path}", sim.base_url())
    };
    let (method, key) = (method.to_string(), key.map(String::from));
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let req = ureq::http::Request::builder().method(method.as_str()).uri(&url);
        let req = match &key {
            Some(k) => req.header("Authorization", k),
            None => req,
        };
        let mut resp = match body {
            Some(b) => {
                agent.run(req.header("Content-Type", "application/json").body(serde_json::to_vec(&b).unwrap()).unwrap())
            }
            None => agent.run(req.body(()).unwrap()),
        }
        .unwrap();
        let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
        let text = resp.body_mut().read_to_string().unwrap();
        (
            resp.status().as_u16(),
            retry,
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() },
        )
    })
    .await
    .unwrap()
}

const KEY: Option<&str> = Some("demo-key");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_is_required_and_oauth_bearer_accepted() {
    let s = start(5, "").await;
    let (status, _, body) = call(&s, "GET", "/info", None, None).await;
    assert_eq!((status, body), (401, json!({"error": "Not authorized"})));
    assert_eq!(call(&s, "GET", "/info", Some("wrong"), None).await.0, 401);
    assert_eq!(call(&s, "GET", "/info", Some("Bearer xoat_demo"), None).await.0, 200);
    assert_eq!(call(&s, "GET", "/info", Some("Bearer xoat_other"), None).await.0, 401);
    let (status, _, info) = call(&s, "GET", "/info", KEY, None).await;
    assert_eq!(status, 200);
    assert_eq!(info["statistics"]["devices"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_pagination_shapes_and_limits() {
    for (style, has_next, has_flag) in
        [("next_page", true, false), ("has_next_page", false, true), ("both", true, true)]
    {
        let s = start(250, &format!("pagination={style}")).await;
        let mut ids = std::collections::HashSet::new();
        for page in 1..=3 {
            let (status, _, body) = call(&s, "GET", &format!("/devices?page={page}&per_page=100"), KEY, None).await;
            assert_eq!(status, 200);
            for d in body["items"].as_array().unwrap() {
                ids.insert(d["id"].as_str().unwrap().to_string());
            }
            assert_eq!(body.get("next_page").is_some(), has_next, "{style}");
            assert_eq!(body.get("has_next_page").is_some(), has_flag, "{style}");
            if page == 3 {
                assert_eq!(body["items"].as_array().unwrap().len(), 50);
                if has_next {
                    assert_eq!(body["next_page"], Value::Null);
                }
            }
        }
        assert_eq!(ids.len(), 250);
    }
    let s = start(5, "").await;
    let (status, _, body) = call(&s, "GET", "/devices?per_page=101", KEY, None).await;
    assert_eq!(status, 422, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_seed_same_org() {
    let a = start(20, "").await;
    let b = start(20, "").await;
    assert_eq!(a.sim.device_ids(), b.sim.device_ids());
    let rooms = call(&a, "GET", "/spaces?space_type=room", KEY, None).await.2;
    assert!(rooms["items"].as_array().unwrap().iter().any(|r| r["name"] == "Board Room"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_validation_and_lifecycle() {
    let s = start(10, "").await;
    let device = s.sim.device_ids()[0].clone();
    let d = call(&s, "GET", &format!("/devices/{device}"), KEY, None).await.2;
    let model = call(&s, "GET", &format!("/models/{}", d["model"]["id"].as_str().unwrap()), KEY, None).await.2;
    let names: Vec<&str> = model["commands"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"reboot"), "{names:?}");

    let path = format!("/devices/{device}/commands");
    let (status, _, body) = call(&s, "POST", &path, KEY, Some(json!({"command": "self_destruct"}))).await;
    assert_eq!((status, body["error"].as_str()), (422, Some("Either a valid command or friendly_name is required")));
    let (status, _, body) = call(&s, "POST", &path, KEY, Some(json!({"command": "reboot", "extra_params": "x"}))).await;
    assert_eq!(status, 422, "{body}");

    let (status, _, sent) = call(&s, "POST", &path, KEY, Some(json!({"name": "reboot", "extra_params": {}}))).await;
    assert_eq!((status, sent["status"].as_str()), (200, Some("pending")));
    let id = sent["id"].as_str().unwrap().to_string();
    let status_of = |list: &Value| {
        list["items"].as_array().unwrap().iter().find(|c| c["id"] == id.as_str()).unwrap()["status"].clone()
    };
    s.sim.step();
    assert_eq!(status_of(&call(&s, "GET", &path, KEY, None).await.2), "in_progress");
    for _ in 0..3 {
        s.sim.step();
    }
    let final_status = status_of(&call(&s, "GET", &path, KEY, None).await.2);
    assert!(final_status == "done" || final_status == "failed", "{final_status}");
    assert_eq!(
        call(&s, "DELETE", &format!("{path}/{id}"), KEY, None).await.0,
        422,
        "a finished command cannot be cancelled"
    );

    let (_, _, second) = call(&s, "POST", &path, KEY, Some(json!({"command": "reboot"}))).await;
    let (status, _, cancelled) =
        call(&s, "DELETE", &format!("{path}/{}", second["id"].as_str().unwrap()), KEY, None).await;
    assert_eq!((status, cancelled["status"].as_str()), (200, Some("aborted")));
    assert_eq!(s.sim.stats().commands.len(), 2, "accepted commands are recorded in order");

    // The `command_key=command` rule refuses the older `name` key.
    s.sim.set_faults("command_key=command".parse().unwrap());
    assert_eq!(call(&s, "POST", &path, KEY, Some(json!({"name": "reboot"}))).await.0, 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_opens_an_incident_and_recovery_closes_it() {
    let s = start(10, "").await;
    let online = call(&s, "GET", "/devices", KEY, None).await.2["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["status"] == "online")
        .map(|d| d["id"].as_str().unwrap().to_string())
        .unwrap();
    let active = |list: &Value| {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["device_id"] == online.as_str() && i["status"] == "active")
            .count()
    };
    assert_eq!(active(&call(&s, "GET", "/incidents?status=active&from=0", KEY, None).await.2), 0);
    let (status, _, _) =
        call(&s, "POST", &format!("/_sim/devices/{online}/status"), None, Some(json!({"status": "offline"}))).await;
    assert_eq!(status, 200);
    assert_eq!(call(&s, "GET", &format!("/devices/{online}"), KEY, None).await.2["status"], "offline");
    assert_eq!(active(&call(&s, "GET", "/incidents?status=active&from=0", KEY, None).await.2), 1);
    assert!(s.sim.set_device_status(&online, "online"));
    assert_eq!(active(&call(&s, "GET", "/incidents?from=0", KEY, None).await.2), 0);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let rows =
        call(&s, "GET", &format!("/devices/histories?device_id={online}&from={}&to={now}", now - 3600), KEY, None)
            .await
            .2;
    let statuses: Vec<&str> =
        rows["items"].as_array().unwrap().iter().map(|r| r["state"]["status"].as_str().unwrap()).collect();
    assert!(statuses.ends_with(&["offline", "online"]), "{statuses:?}");
    let (status, _, _) =
        call(&s, "GET", &format!("/devices/histories?from={}&to={now}", now - 40 * 86_400), KEY, None).await;
    assert_eq!(status, 422, "windows over 31 days are refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_messages_by_query_and_body() {
    let s = start(10, "").await;
    let tickets = call(&s, "GET", "/tickets", KEY, None).await.2;
    let list = tickets.as_array().expect("a bare array");
    assert!(list.iter().all(|t| t["status"] == "open" && t.get("comments").is_none()));
    let id = list[0]["id"].as_str().unwrap();
    assert_eq!(call(&s, "POST", &format!("/tickets/{id}/message?message=via%20query"), KEY, None).await.0, 200);
    assert_eq!(
        call(&s, "POST", &format!("/tickets/{id}/message"), KEY, Some(json!({"message": "via body"}))).await.0,
        200
    );
    assert_eq!(call(&s, "POST", &format!("/tickets/{id}/message"), KEY, None).await.0, 422);
    let full = call(&s, "GET", &format!("/tickets/{id}"), KEY, None).await.2;
    let texts: Vec<&str> = full["comments"].as_array().unwrap().iter().map(|c| c["text"].as_str().unwrap()).collect();
    assert!(texts.ends_with(&["via query", "via body"]), "{texts:?}");
    assert_eq!(call(&s, "POST", &format!("/tickets/{id}/resolved"), KEY, None).await.0, 200);
    let (status, _, body) = call(&s, "POST", &format!("/tickets/{id}/resolved"), KEY, None).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("Cannot move from resolved to resolved")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_and_control_routes() {
    let s = start(5, "burst_429=2,retry_after=3").await;
    for _ in 0..2 {
        let (status, retry, _) = call(&s, "GET", "/info", KEY, None).await;
        assert_eq!((status, retry.as_deref()), (429, Some("3")));
    }
    assert_eq!(call(&s, "GET", "/info", KEY, None).await.0, 200);
    // Faults never touch the control routes.
    let (status, _, _) = call(&s, "POST", "/_sim/faults", None, Some(json!({"spec": "error_rate=1"}))).await;
    assert_eq!(status, 200);
    assert!(matches!(call(&s, "GET", "/info", KEY, None).await.0, 500 | 502 | 503));
    let stats = call(&s, "GET", "/_sim/stats", None, None).await.2;
    assert_eq!(stats["total"], 4);
    assert_eq!(call(&s, "POST", "/_sim/faults", None, Some(json!({"spec": "nonsense=1"}))).await.0, 422);
    assert_eq!(call(&s, "POST", "/_sim/faults", None, Some(json!({"spec": ""}))).await.0, 200);
    assert_eq!(call(&s, "GET", "/no/such/route", KEY, None).await.0, 404);
    let devices = call(&s, "GET", "/_sim/devices", None, None).await.2;
    assert_eq!(devices.as_array().unwrap().len(), 5);
    assert_eq!(call(&s, "POST", "/_sim/step", None, None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_world_survives_a_server_restart_on_the_same_port() {
    let mut s = start(5, "").await;
    let id = s.sim.device_ids()[0].clone();
    s.sim.set_device_status(&id, "error");
    s.stop().await;
    assert!(std::net::TcpStream::connect(s.addr).is_err(), "the port is closed while stopped");
    s.restart().await.unwrap();
    assert_eq!(call(&s, "GET", &format!("/devices/{id}"), KEY, None).await.2["status"], "error");
}
