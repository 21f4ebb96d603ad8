//! Operations of the catalogue called in-process against the simulator, as every front door calls them: the Xyte
//! endpoint catalogue and `xyte_api_call` (roles, confirm, experimental entries), room presets (order, stop on
//! failure, progress, fuzzy rooms, reload), admin device tools, the device list (name order, filters, counts, paging),
//! a device's commands (listed, filtered, paged, the latest in its status), the analytics report, dry-run existence
//! checks, and the outbox limits under concurrent callers.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use xyte_edge::config::Role;
use xyte_edge::config::presets::Presets;
use xyte_edge::error::{Error, ErrorCode};
use xyte_edge::ops::{self, rooms};
use xyte_edge::runtime::{Ctx, OutboxLimits, Principal};

mod support;
use support::{Rig, rig};

fn ctx(rig: &Rig, role: Role) -> Ctx {
    Ctx { app: rig.app.clone(), principal: Principal { id: format!("test:{role}"), role }, progress: None }
}

async fn call(rig: &Rig, role: Role, name: &str, args: Value) -> Result<Value, Error> {
    ops::call(&ctx(rig, role), name, args).await
}

async fn ok(rig: &Rig, role: Role, name: &str, args: Value) -> Value {
    call(rig, role, name, args.clone()).await.unwrap_or_else(|e| panic!("{name} {args}: {e}"))
}

async fn err(rig: &Rig, role: Role, name: &str, args: Value) -> Error {
    match call(rig, role, name, args.clone()).await {
        Ok(v) => panic!("{name} {args} should fail, got {v}"),
        Err(e) => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xyte_api_call_enforces_roles_confirm_and_experimental_entries() {
    let mut rig = rig(false).await;
    let device = rig.sim.sim.device_ids()[0].clone();
    let list = ok(&rig, Role::Viewer, "xyte_api_call", json!({"key": "devices.list", "query": {"per_page": 5}})).await;
    assert_eq!(list["result"]["items"].as_array().map(Vec::len), Some(5));
    let move_args = json!({"key": "devices.move", "path_params": {"device_id": device}, "body": {"space_id": 1}});
    for role in [Role::Viewer, Role::Operator] {
        assert_eq!(err(&rig, role, "xyte_api_call", move_args.clone()).await.code, ErrorCode::PermissionDenied);
    }
    let cancel = json!({"key": "commands.cancel", "path_params": {"device_id": device, "command_id": "c1"}});
    let e = err(&rig, Role::Admin, "xyte_api_call", cancel.clone()).await;
    assert!(e.message.contains("confirm=\"commands.cancel\""), "{e}");
    let mut confirmed = cancel.clone();
    confirmed["confirm"] = json!("commands.cancel");
    confirmed["dry_run"] = json!(true);
    let dry = ok(&rig, Role::Admin, "xyte_api_call", confirmed).await;
    assert_eq!(dry["would_send"]["path"], json!(format!("/devices/{device}/commands/c1")));

    let e = err(&rig, Role::Admin, "xyte_api_call", json!({"key": "device.lst"})).await;
    assert!(e.message.contains("did you mean") && e.message.contains("devices.list"), "{e}");
    let e = err(&rig, Role::Viewer, "xyte_api_call", json!({"key": "devices.list", "query": {"pages": 1}})).await;
    assert!(e.message.contains("no query parameter \"pages\""), "{e}");

    let ping = json!({"key": "edge_legacy.start_ping", "body": {"proxy_id": "p", "device_ip": "10.0.0.9"}});
    let e = err(&rig, Role::Admin, "xyte_api_call", ping.clone()).await;
    assert!(e.message.contains("XYTE_EXPERIMENTAL_APIS=true"), "{e}");
    Arc::get_mut(&mut rig.app).expect("no other handle yet").experimental_apis = true;
    let sent = ok(&rig, Role::Admin, "xyte_api_call", ping).await;
    assert_eq!(sent["path"], "/edge/devices/start_ping");

    // A real write through the catalogue reaches the simulator.
    let target = rig.sim.sim.device(&device).unwrap();
    let other_space = rig.sim.sim.device(&rig.sim.sim.device_ids()[1]).unwrap()["space"]["id"].clone();
    assert_ne!(target["space"]["id"], other_space);
    let moved = json!({"key": "devices.move", "path_params": {"device_id": device}, "body": {"space_id": other_space}});
    ok(&rig, Role::Admin, "xyte_api_call", moved).await;
    assert_eq!(rig.sim.sim.device(&device).unwrap()["space"]["id"], other_space);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_read_answers_at_the_simulator() {
    let rig = rig(false).await;
    let device = rig.sim.sim.device_ids()[0].clone();
    let d = rig.sim.sim.device(&device).unwrap();
    let first = |key: &'static str| {
        let rig = &rig;
        async move { ok(rig, Role::Viewer, "xyte_api_call", json!({"key": key})).await["result"]["items"][0]["id"].clone() }
    };
    let ids = json!({"device_id": device, "space_id": d["space"]["id"], "model_id": d["model"]["id"], "category": "manufacturer",
                     "ticket_id": ok(&rig, Role::Viewer, "list_tickets", json!({})).await["tickets"][0]["id"],
                     "user_id": first("users.list").await, "group_id": first("groups.list").await,
                     "asset_id": first("assets.list").await});
    let listed = ok(&rig, Role::Viewer, "xyte_endpoints_list", json!({"read_only": true})).await;
    let mut called = 0;
    for e in listed["endpoints"].as_array().unwrap() {
        let key = e["key"].as_str().unwrap();
        let described = ok(&rig, Role::Viewer, "xyte_endpoint_describe", json!({"key": key})).await["endpoint"].clone();
        if described["experimental"] == true {
            continue;
        }
        let path_params: serde_json::Map<String, Value> = described["path_params"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p.as_str().unwrap().to_string(), ids[p.as_str().unwrap()].clone()))
            .collect();
        let query: serde_json::Map<String, Value> = described["query"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|q| q["required"] == true)
            .map(|q| (q["name"].as_str().unwrap().to_string(), json!("x")))
            .collect();
        let out =
            ok(&rig, Role::Viewer, "xyte_api_call", json!({"key": key, "path_params": path_params, "query": query}))
                .await;
        assert!(!out["result"].is_null(), "{key} answered nothing");
        called += 1;
    }
    assert!(called >= 25, "only {called} reads in the catalogue");
}

/// Presets for the simulator's first room: a real command, then `bad` (an unknown command), then another real one.
fn presets_with(rig: &Rig, dir: &std::path::Path, continue_on_error: bool) -> std::path::PathBuf {
    let demo = rig.sim.sim.demo_presets(1);
    let (room, entry) = demo["rooms"].as_object().unwrap().iter().next().unwrap();
    let first = entry["presets"]["start"][0].clone();
    let bad =
        json!({"device_id": first["device_id"], "command": "fly_to_the_moon", "continue_on_error": continue_on_error});
    let last = entry["presets"]["shutdown"][0].clone();
    let file = json!({"rooms": {room: {"space_id": entry["space_id"], "presets": {"start": [first, bad, last]}}}});
    let path = dir.join("presets.json");
    std::fs::write(&path, file.to_string()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presets_run_in_order_stop_on_failure_and_report_each_step() {
    let rig = rig(false).await;
    let dir = tempfile::tempdir().unwrap();
    let path = presets_with(&rig, dir.path(), false);
    rig.app.set_presets(Presets::load(&path).unwrap());

    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let mut c = ctx(&rig, Role::Operator);
    c.progress = Some(Arc::new(move |done, total, msg| sink.lock().unwrap().push((done, total, msg))));
    let out = ops::call(&c, "start_meeting_room_preset", json!({"room": "bord rom"})).await.unwrap();
    assert_eq!(out["room"], "Board Room", "a close spelling finds the room");
    let statuses: Vec<&str> = out["steps"].as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap()).collect();
    assert!(["done", "failed"].contains(&statuses[0]), "{out}");
    assert_eq!(&statuses[1..], ["invalid", "skipped"], "{out}");
    assert_eq!(out["ok"], false);
    assert!(out["steps"][1]["message"].as_str().unwrap().contains("has no command \"fly_to_the_moon\""), "{out}");
    let first_device = out["steps"][0]["device_id"].as_str().unwrap();
    let sent: Vec<Value> = rig.sim.sim.device_commands(first_device);
    assert!(sent.iter().any(|c| c["id"] == out["steps"][0]["xyte_command_id"]), "the first step reached Xyte");
    let progress = seen.lock().unwrap().clone();
    assert_eq!(progress.len(), 4, "two reports per step that ran: {progress:?}");
    assert!(progress.windows(2).all(|w| w[0].0 <= w[1].0) && progress.iter().all(|p| p.1 == Some(3.0)));
    // The run is in the event log for every dashboard and consumer: who started it, and how each step ended.
    let log = ok(&rig, Role::Viewer, "list_events", json!({"kind": "preset.started"})).await;
    let started = &log["events"][0];
    assert_eq!(started["data"]["room"], "Board Room", "{log}");
    assert_eq!(started["data"]["steps"], 3);
    assert!(started["data"]["principal"].as_str().is_some_and(|p| !p.is_empty()), "{log}");
    let space = &rig.sim.sim.demo_presets(1)["rooms"]["Board Room"]["space_id"];
    assert_eq!(
        started["space_id"].as_str(),
        Some(space.as_str().map_or_else(|| space.to_string(), String::from)).as_deref()
    );
    let log = ok(&rig, Role::Viewer, "list_events", json!({"kind": "preset.finished"})).await;
    let finished = &log["events"][0]["data"];
    assert_eq!(finished["ok"], false, "{log}");
    let logged: Vec<&str> =
        finished["steps"].as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap()).collect();
    assert_eq!(logged, statuses, "{log}");

    // A dry run changes nothing, so it is not logged.
    ok(&rig, Role::Operator, "start_meeting_room_preset", json!({"room": "Board", "dry_run": true})).await;
    let log = ok(&rig, Role::Viewer, "list_events", json!({"kind": "preset.started"})).await;
    assert_eq!(log["events"].as_array().unwrap().len(), 1, "{log}");

    // continue_on_error lets the rest run.
    let path = presets_with(&rig, dir.path(), true);
    rig.app.set_presets(Presets::load(&path).unwrap());
    let out = ok(&rig, Role::Operator, "start_meeting_room_preset", json!({"room": "Board", "dry_run": true})).await;
    let statuses: Vec<&str> = out["steps"].as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["validated", "invalid", "validated"], "{out}");

    // A room with no presets: the error lists its devices and their commands so an agent can act.
    let e = err(&rig, Role::Operator, "shutdown_meeting_room", json!({"room": "Training Room"})).await;
    assert_eq!(e.code, ErrorCode::NotFound);
    assert!(e.message.contains("has no presets") && e.message.contains("reboot"), "{e}");
    let e = err(&rig, Role::Operator, "start_meeting_room_preset", json!({"room": "Cafeteria"})).await;
    assert!(e.message.contains("did you mean"), "{e}");
    let e = err(&rig, Role::Viewer, "start_meeting_room_preset", json!({"room": "Board Room"})).await;
    assert_eq!(e.code, ErrorCode::PermissionDenied);

    let rooms = ok(&rig, Role::Viewer, "list_rooms", json!({})).await;
    let names: Vec<&str> = rooms["rooms"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Board Room", "Huddle 2.14", "Training Room"]);
    assert_eq!(rooms["rooms"][0]["presets"], json!(["start"]));
    assert_eq!(rooms["rooms"][0]["source"], "presets+space");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_presets_file_is_reported_and_the_old_one_kept() {
    let rig = rig(false).await;
    let dir = tempfile::tempdir().unwrap();
    let path = presets_with(&rig, dir.path(), false);
    rig.app.set_presets(Presets::load(&path).unwrap());
    std::fs::write(&path, "{\"rooms\": {\"Board Room\": ").unwrap();
    rooms::reload(&rig.app);
    let p = rig.app.presets();
    assert!(p.rooms.contains_key("Board Room"), "the old presets stay");
    assert!(p.error.as_deref().is_some_and(|e| e.contains("not a valid presets file")), "{:?}", p.error);
    let listed = ok(&rig, Role::Viewer, "list_rooms", json!({})).await;
    assert!(listed["presets_error"].as_str().is_some_and(|e| e.contains("presets.json")));

    std::fs::write(
        &path,
        r#"{"rooms": {"Huddle 2.14": {"presets": {"start": [{"device_id": "x", "command": "wake"}]}}}}"#,
    )
    .unwrap();
    rooms::reload(&rig.app);
    let p = rig.app.presets();
    assert_eq!(p.rooms.keys().collect::<Vec<_>>(), ["Huddle 2.14"]);
    assert!(p.error.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_tools_need_admin_and_validate_before_sending() {
    let rig = rig(false).await;
    let space = rig.sim.sim.device(&rig.sim.sim.device_ids()[0]).unwrap()["space"]["id"].clone();
    let claim = json!({"name": "Lobby sign", "space_id": space, "cloud_id": "cloud-xyz"});
    assert_eq!(err(&rig, Role::Operator, "claim_device", claim.clone()).await.code, ErrorCode::PermissionDenied);
    let e = err(&rig, Role::Admin, "claim_device", json!({"name": "x", "space_id": 999_999, "cloud_id": "c"})).await;
    assert!(e.message.contains("no space 999999"), "{e}");
    let e = err(&rig, Role::Admin, "claim_device", json!({"name": "x", "space_id": space, "mac": "m"})).await;
    assert!(e.message.contains("cloud_id, or both mac and sn"), "{e}");
    let before = ok(&rig, Role::Viewer, "list_devices", json!({"limit": 500})).await["total"].as_u64().unwrap();
    let claimed = ok(&rig, Role::Admin, "claim_device", claim).await;
    let id = claimed["device"]["id"].as_str().unwrap().to_string();
    let after = ok(&rig, Role::Viewer, "list_devices", json!({"limit": 500})).await["total"].as_u64().unwrap();
    assert_eq!(after, before + 1, "the cache forgot the old device list");

    let e =
        err(&rig, Role::Admin, "update_device", json!({"device_id": id, "custom_parameters": {"password": "*****"}}))
            .await;
    assert!(e.message.contains("masked placeholder"), "{e}");
    ok(&rig, Role::Admin, "update_device", json!({"device_id": id, "name": "Lobby sign 2"})).await;
    assert_eq!(rig.sim.sim.device(&id).unwrap()["name"], "Lobby sign 2");

    let e = err(&rig, Role::Admin, "delete_device", json!({"device_id": id, "confirm": "yes"})).await;
    assert!(e.message.contains("confirm must equal"), "{e}");
    let e =
        err(&rig, Role::Admin, "delete_device", json!({"device_id": "nope", "confirm": "nope", "dry_run": true})).await;
    assert!(e.message.contains("no device nope"), "{e}");
    ok(&rig, Role::Admin, "delete_device", json!({"device_id": id, "confirm": id})).await;
    assert!(rig.sim.sim.device(&id).is_none(), "deleted at the simulator");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_and_dry_run_existence_checks() {
    let rig = rig(false).await;
    let device = rig.sim.sim.device_ids()[0].clone();
    let report =
        ok(&rig, Role::Viewer, "get_device_analytics_report", json!({"device_id": device, "period": "last_30_days"}))
            .await;
    let pct = report["availability_pct"].as_f64().expect("availability computed");
    assert!((0.0..=100.0).contains(&pct), "{report}");
    assert!(report["sources"].as_array().unwrap().contains(&json!("xyte_histories")), "{report}");
    assert!(report["observed_s"].as_i64().unwrap() > 0 && report["commands"]["by_status"].is_object());
    let e =
        err(&rig, Role::Viewer, "get_device_analytics_report", json!({"device_id": device, "period": "forever"})).await;
    assert_eq!(e.code, ErrorCode::InvalidParams);

    for (tool, args, expected) in [
        ("update_ticket", json!({"ticket_id": "T-nope", "title": "x", "dry_run": true}), "no ticket T-nope"),
        ("mark_ticket_resolved", json!({"ticket_id": "T-nope", "dry_run": true}), "no ticket T-nope"),
        ("send_ticket_message", json!({"ticket_id": "T-nope", "message": "hi", "dry_run": true}), "no ticket T-nope"),
        ("close_incident", json!({"incident_id": "I-nope", "dry_run": true}), "no active incident I-nope"),
    ] {
        let e = err(&rig, Role::Operator, tool, args).await;
        assert!(e.message.contains(expected), "{tool}: {e}");
    }
}

/// Both read a device's cached command list (shared with the cache, not copied): `list_device_commands` filters and
/// pages it, `get_device_status` shows its first five. Both must be the simulator's list, newest first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_commands_are_listed_filtered_and_paged_as_xyte_has_them() {
    let rig = rig(false).await;
    let device = rig.sim.sim.device_ids()[1].clone();
    let status = ok(&rig, Role::Viewer, "get_device_status", json!({"device_id": device})).await;
    assert_eq!(status["recent_commands"], json!([]), "no command sent yet");
    let name = status["commands"][0]["name"].as_str().expect("the model accepts a command").to_string();
    for _ in 0..7 {
        ok(&rig, Role::Operator, "send_command", json!({"device_id": device, "command": name})).await;
    }
    // Each command by its id and status, newest first (the daemon's typed command leaves out Xyte's null fields).
    let ids = |list: &Value| -> Vec<(String, String)> {
        let list = list.as_array().unwrap_or_else(|| panic!("a list: {list}"));
        list.iter().map(|c| (c["id"].as_str().unwrap().into(), c["status"].as_str().unwrap().into())).collect()
    };
    let xyte = ids(&json!(rig.sim.sim.device_commands(&device)));
    assert_eq!(xyte.len(), 7);

    let all = ok(&rig, Role::Viewer, "list_device_commands", json!({"device_id": device})).await;
    assert_eq!((ids(&all["commands"]), &all["total"], &all["omitted"]), (xyte.clone(), &json!(7), &json!(0)));
    let page = ok(&rig, Role::Viewer, "list_device_commands", json!({"device_id": device, "limit": 2})).await;
    assert_eq!((ids(&page["commands"]), &page["total"], &page["omitted"]), (xyte[..2].to_vec(), &json!(7), &json!(5)));
    let state = xyte[0].1.clone();
    let some = ok(&rig, Role::Viewer, "list_device_commands", json!({"device_id": device, "status": state})).await;
    let wanted: Vec<_> = xyte.iter().filter(|c| c.1 == state).cloned().collect();
    assert_eq!((ids(&some["commands"]), &some["total"]), (wanted.clone(), &json!(wanted.len())));
    let none = ok(&rig, Role::Viewer, "list_device_commands", json!({"device_id": device, "status": "nothing"})).await;
    assert_eq!((ids(&none["commands"]), &none["total"]), (vec![], &json!(0)));

    let status = ok(&rig, Role::Viewer, "get_device_status", json!({"device_id": device})).await;
    assert_eq!(ids(&status["recent_commands"]), xyte[..5].to_vec());
    assert_eq!(status["recent_commands"], json!(all["commands"].as_array().unwrap()[..5]), "the same documents");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_cached_entries_never_pass_for_the_whole_collection() {
    let rig = rig(false).await;
    let device = rig.sim.sim.device_ids()[3].clone();
    // On a cold cache, one device is fetched (and cached) on its own first...
    let status = ok(&rig, Role::Viewer, "get_device_status", json!({"device_id": device})).await;
    // ...with the commands its model accepts, so a caller can offer them without another lookup.
    let commands: Vec<&str> = status["commands"]
        .as_array()
        .expect("the model's commands")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(!commands.is_empty(), "{status}");
    // ...and the device list is still the whole fleet, not that one row.
    let listed = ok(&rig, Role::Viewer, "list_devices", json!({})).await;
    assert_eq!(listed["total"], 12, "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_status_shows_that_devices_open_incidents_and_no_others() {
    let rig = rig(false).await;
    let ids = rig.sim.sim.device_ids();
    // Every device online (no incident), then two of them down: one incident each.
    for id in &ids {
        assert!(rig.sim.sim.set_device_status(id, "online"));
    }
    assert!(rig.sim.sim.set_device_status(&ids[1], "offline") && rig.sim.sim.set_device_status(&ids[4], "error"));
    for (id, open) in [(&ids[1], 1), (&ids[4], 1), (&ids[0], 0)] {
        let status = ok(&rig, Role::Viewer, "get_device_status", json!({"device_id": id})).await;
        let incidents = status["open_incidents"].as_array().unwrap_or_else(|| panic!("{status}"));
        assert_eq!(incidents.len(), open, "{id}: {status}");
        assert!(incidents.iter().all(|i| i["device_id"] == id.as_str() && i["status"] == "active"), "{status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_collection_is_a_cached_answer_too() {
    let rig = rig(false).await;
    // Every device online: no active incident, so the stored snapshot of incidents is empty.
    for id in rig.sim.sim.device_ids() {
        assert!(rig.sim.sim.set_device_status(&id, "online"));
    }
    let first = ok(&rig, Role::Viewer, "list_incidents", json!({})).await;
    assert_eq!(first["total"], 0, "{first}");
    rig.sim.sim.reset_stats();
    for _ in 0..5 {
        let again = ok(&rig, Role::Viewer, "list_incidents", json!({})).await;
        assert_eq!((again["total"].as_u64(), again["stale"].as_bool()), (Some(0), Some(false)), "{again}");
    }
    assert_eq!(rig.sim.sim.stats().total, 0, "fresh empty answers must not go back to Xyte");
}

/// The names of a `list_devices` page, in order.
fn names(listed: &Value) -> Vec<String> {
    listed["devices"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap_or("").to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_list_is_in_name_order_filtered_counted_and_follows_cache_writes() {
    let rig = rig(false).await;
    let ids = rig.sim.sim.device_ids();
    // Some devices of each status, so the status filter has something to keep and something to drop.
    assert!(rig.sim.sim.set_device_status(&ids[0], "offline") && rig.sim.sim.set_device_status(&ids[1], "offline"));
    assert!(rig.sim.sim.set_device_status(&ids[2], "online"));
    let fleet: Vec<Value> = ids.iter().map(|id| rig.sim.sim.device(id).unwrap()).collect();
    let count = |status: &str| fleet.iter().filter(|d| d["status"] == status).count();

    let all = ok(&rig, Role::Viewer, "list_devices", json!({"limit": 500})).await;
    let mut expected: Vec<String> = fleet.iter().map(|d| d["name"].as_str().unwrap().to_string()).collect();
    expected.sort();
    assert_eq!(names(&all), expected);
    assert_eq!(all["total"], fleet.len());
    let counts = json!({"online": count("online"), "offline": count("offline"), "error": count("error")});
    assert_eq!(all["counts"], counts);

    // A status filter keeps the order and the counts (which describe every match before it).
    let offline = ok(&rig, Role::Viewer, "list_devices", json!({"status": "offline", "limit": 500})).await;
    assert!(offline["devices"].as_array().unwrap().iter().all(|d| d["status"] == "offline"), "{offline}");
    assert!(count("offline") >= 2);
    assert_eq!(offline["total"], count("offline"));
    assert!(names(&offline).is_sorted());
    assert_eq!(offline["counts"], counts);

    // Pages of 5 put together are the whole list.
    let (mut paged, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let page = ok(&rig, Role::Viewer, "list_devices", json!({"limit": 5, "cursor": cursor})).await;
        paged.extend(names(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(paged, expected);

    // A rename moves the device: the order is the new collection's, not the one kept from before.
    let last = fleet.iter().max_by_key(|d| d["name"].as_str().unwrap().to_string()).unwrap();
    let id = last["id"].as_str().unwrap();
    ok(&rig, Role::Admin, "update_device", json!({"device_id": id, "name": "000 first now"})).await;
    let renamed = ok(&rig, Role::Viewer, "list_devices", json!({"limit": 500})).await;
    assert_eq!(names(&renamed)[0], "000 first now", "{renamed}");
    assert_eq!(renamed["devices"][0]["id"], last["id"]);
}

/// Requests for the device listing the simulator has answered.
fn device_listings(rig: &Rig) -> usize {
    let stats = rig.sim.sim.stats();
    stats.requests.iter().filter(|r| r.method == "GET" && r.path.ends_with("/organization/devices")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_that_miss_during_a_fetch_of_the_same_collection_wait_for_it_instead_of_fetching_again() {
    use std::time::{Duration, Instant};
    use xyte_edge::sim::Faults;
    let rig = rig(false).await;
    // Every answer takes 300 ms, so a fetch is still running when the next read arrives.
    rig.sim.sim.set_faults(Faults { latency: Duration::from_millis(300), ..Default::default() });

    // Two reads of a cold cache at once: one listing.
    let (a, b) = tokio::join!(
        call(&rig, Role::Viewer, "list_devices", json!({})),
        call(&rig, Role::Viewer, "list_devices", json!({"status": "online"}))
    );
    let ids = rig.sim.sim.device_ids();
    let online = ids.iter().filter(|id| rig.sim.sim.device(id).unwrap()["status"] == "online").count();
    assert_eq!(a.unwrap()["total"], 12);
    assert_eq!(b.unwrap()["total"], online);
    assert_eq!(device_listings(&rig), 1);

    // A read while the poller is listing the fleet (the cache has expired meanwhile): it waits for the poller.
    rig.app.cache.invalidate("device", None).await;
    rig.sim.sim.reset_stats();
    let poller = xyte_edge::sync::poller::Poller::new(
        rig.app.clone(),
        Duration::from_secs(3600),
        xyte_edge::systemd::Heartbeat::new("poller"),
    );
    let sync = tokio::spawn(async move { poller.poll_once(false, true).await.map(|r| r.devices) });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rig.app.cache.fetching("device") {
        assert!(Instant::now() < deadline, "the poller never started listing devices");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let listed = ok(&rig, Role::Viewer, "list_devices", json!({})).await;
    assert_eq!((listed["total"].as_u64(), listed["stale"].as_bool()), (Some(12), Some(false)), "{listed}");
    assert_eq!(sync.await.unwrap().unwrap(), 12);
    assert_eq!(device_listings(&rig), 1, "the read listed the fleet again");
}

/// The admission check shares the insert's write transaction, so callers racing for the last places of a device's
/// queue cannot both take one: of 24 concurrent `send_command_async` calls exactly the limit is acknowledged (no
/// forwarder runs, so nothing drains meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_cannot_slip_past_the_outbox_limit() {
    let mut rig = rig(false).await;
    Arc::get_mut(&mut rig.app).expect("no other handle yet").outbox_limits = OutboxLimits::new(100, 3, 60);
    let device = rig.sim.sim.device_ids()[0].clone();
    ok(&rig, Role::Operator, "send_command", json!({"device_id": device, "command": "reboot", "dry_run": true})).await;
    let calls = (0..24).map(|_| {
        let ctx = ctx(&rig, Role::Operator);
        let args = json!({"device_id": device, "command": "reboot"});
        tokio::spawn(async move { ops::call(&ctx, "send_command_async", args).await })
    });
    let mut acknowledged = 0;
    for call in calls.collect::<Vec<_>>() {
        match call.await.unwrap() {
            Ok(task) => {
                assert_eq!(task["state"], "queued", "{task}");
                acknowledged += 1;
            }
            Err(e) => {
                assert_eq!((e.code, e.http_status(), e.retry_after_s), (ErrorCode::RateLimited, 429, Some(2)), "{e}");
                assert!(e.message.contains("XYTE_OUTBOX_MAX_PER_DEVICE=3"), "{e}");
            }
        }
    }
    assert_eq!(acknowledged, 3);
}
