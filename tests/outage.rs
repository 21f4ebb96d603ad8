//! The WAN outage (issue: edge resilience), counted at the simulator: while Xyte is down, reads answer from the
//! cache marked stale and 50 async commands are accepted; when it is back, each is delivered exactly once, in order
//! per device, and every task reaches the simulator's final status.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use xyte_edge::config::Role;
use xyte_edge::ops;
use xyte_edge::runtime::{Ctx, Principal};
use xyte_edge::sync::forwarder::Forwarder;
use xyte_edge::systemd::Heartbeat;

mod support;

/// An operator's context, and the forwarder delivering the outbox until the token is cancelled.
fn operator_with_forwarder(rig: &support::Rig) -> (Ctx, CancellationToken) {
    let ctx = Ctx {
        app: rig.app.clone(),
        principal: Principal { id: "test:op".into(), role: Role::Operator },
        progress: None,
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(Forwarder::new(rig.app.clone(), Heartbeat::new("forwarder")).run(shutdown.clone()));
    (ctx, shutdown)
}

async fn call(ctx: &Ctx, name: &str, args: Value) -> Value {
    ops::call(ctx, name, args.clone()).await.unwrap_or_else(|e| panic!("{name} {args}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_queued_during_an_outage_are_delivered_once_in_order_when_xyte_returns() {
    let mut rig = support::rig(false).await;
    // Every read past a millisecond goes to Xyte, so an outage shows at once as stale answers.
    Arc::get_mut(&mut rig.app).expect("no other handle yet").cache.ttl = Duration::from_millis(1);
    let (ctx, shutdown) = operator_with_forwarder(&rig);
    // The poller notices when Xyte goes and comes back (the forwarder retries at once when it does).
    let poller =
        xyte_edge::sync::poller::Poller::new(rig.app.clone(), Duration::from_secs(1), Heartbeat::new("poller"));
    tokio::spawn(poller.run(shutdown.clone()));

    // Warm the cache: the fleet, three devices and their models (a dry run validates against the model).
    let devices: Vec<String> = rig.sim.sim.device_ids().into_iter().take(3).collect();
    call(&ctx, "list_devices", json!({})).await;
    for d in &devices {
        call(&ctx, "send_command", json!({"device_id": d, "command": "reboot", "dry_run": true})).await;
    }

    rig.sim.stop().await;
    let listed = call(&ctx, "list_devices", json!({})).await;
    assert_eq!((listed["stale"].as_bool(), listed["total"].as_u64()), (Some(true), Some(12)), "{listed}");
    let one = call(&ctx, "get_device_status", json!({"device_id": devices[0]})).await;
    assert_eq!(one["stale"], true);

    let mut tasks = Vec::new();
    for i in 0..50 {
        let device = &devices[i % 3];
        let args = json!({"device_id": device, "command": "reboot", "friendly_name": format!("step-{i}")});
        let t = call(&ctx, "send_command_async", args).await;
        assert_eq!(t["state"], "queued", "{t}");
        tasks.push((t["task_id"].as_str().unwrap().to_string(), device.clone(), i));
    }
    // Nothing can have reached Xyte: it is down.
    assert!(rig.sim.sim.stats().commands.is_empty());

    rig.sim.restart().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut finals = HashMap::new();
    while finals.len() < tasks.len() {
        assert!(Instant::now() < deadline, "only {} of 50 tasks final after 180 s", finals.len());
        for (id, _, _) in &tasks {
            if finals.contains_key(id) {
                continue;
            }
            let s = call(&ctx, "get_task_status", json!({"task_id": id})).await;
            if s["final"] == true {
                finals.insert(id.clone(), s);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for s in finals.values() {
        assert!(matches!(s["state"].as_str(), Some("done" | "failed")), "a Xyte verdict, not an expiry: {s}");
    }

    // Counted at the simulator: exactly 50 commands, each once, in submission order per device.
    let received = rig.sim.sim.stats().commands;
    assert_eq!(received.len(), 50, "delivered exactly once each");
    for device in &devices {
        let got: Vec<String> = received
            .iter()
            .filter(|(d, _)| d == device)
            .map(|(_, body)| body["friendly_name"].as_str().unwrap_or("").to_string())
            .collect();
        let want: Vec<String> =
            tasks.iter().filter(|(_, d, _)| d == device).map(|(_, _, i)| format!("step-{i}")).collect();
        assert_eq!(got, want, "order for {device}");
    }
    let ids: std::collections::HashSet<&str> = finals.values().filter_map(|s| s["xyte_command_id"].as_str()).collect();
    assert_eq!(ids.len(), 50, "each task has its own Xyte command");
    shutdown.cancel();
}

/// Waits (polling the store, with a deadline) until `query` finds a row.
async fn wait_for_row(rig: &support::Rig, sql: &'static str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found: bool = rig.app.store.read(move |c| Ok(c.query_row(sql, [], |_| Ok(())).is_ok())).await.unwrap();
        if found {
            return;
        }
        assert!(Instant::now() < deadline, "{what} within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_whose_answer_was_lost_is_reconciled_not_resent() {
    let rig = support::rig(false).await;
    let (ctx, shutdown) = operator_with_forwarder(&rig);
    let device = rig.sim.sim.device_ids()[0].clone();
    let send = |name: &str| json!({"device_id": device, "command": "reboot", "friendly_name": name});

    // A first reboot, delivered normally: an earlier command of the same name for reconciliation to not mistake.
    let first = call(&ctx, "send_command_async", send("first")).await;
    wait_for_row(&rig, "SELECT 1 FROM tasks WHERE xyte_command_id IS NOT NULL", "the first delivery").await;

    // The second POST reaches Xyte, but its answer trickles so slowly that the client times out: outcome unknown.
    rig.sim.sim.set_faults(xyte_edge::sim::Faults { slow_body: Duration::from_secs(2), ..Default::default() });
    let second = call(&ctx, "send_command_async", send("second")).await;
    wait_for_row(&rig, "SELECT 1 FROM tasks WHERE outcome_unknown = 1", "the unknown outcome").await;
    rig.sim.sim.set_faults(Default::default());

    let deadline = Instant::now() + Duration::from_secs(90);
    let final_of = |t: &Value| t["task_id"].as_str().unwrap().to_string();
    let (first_id, second_id) = (final_of(&first), final_of(&second));
    let mut states = (Value::Null, Value::Null);
    loop {
        states.0 = call(&ctx, "get_task_status", json!({"task_id": first_id})).await;
        states.1 = call(&ctx, "get_task_status", json!({"task_id": second_id})).await;
        if states.0["final"] == true && states.1["final"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "tasks final within 90 s: {states:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let at_xyte: Vec<(String, Value)> =
        rig.sim.sim.stats().commands.into_iter().filter(|(d, _)| *d == device).collect();
    let names: Vec<&str> = at_xyte.iter().map(|(_, b)| b["friendly_name"].as_str().unwrap_or("")).collect();
    assert_eq!(names, ["first", "second"], "the second command was not sent twice");
    // The simulator lists a device's commands newest first; ours are the two newest.
    let commands = rig.sim.sim.device_commands(&device);
    assert_eq!(states.0["xyte_command_id"], commands[1]["id"]);
    assert_eq!(states.1["xyte_command_id"], commands[0]["id"], "reconciled to its own command: {states:?}");
    shutdown.cancel();
}
