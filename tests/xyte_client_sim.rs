//! The Xyte client against the simulator, counting at the simulator: every endpoint, both pagination styles,
//! 429 + Retry-After, retries for GET only, timeouts, the shared rate limit, and the key never leaking.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use xyte_edge::config::Secret;
use xyte_edge::error::ErrorCode;
use xyte_edge::sim::{self, Faults, SimHandle, SimOptions};
use xyte_edge::xyte::{ClientConfig, Credential, HistoryQuery, IncidentQuery, Priority, SendCommand, XyteClient};

const P: Priority = Priority::Interactive;

async fn start(devices: usize, faults: &str) -> SimHandle {
    let faults: Faults = if faults.is_empty() { Faults::default() } else { faults.parse().expect("fault spec") };
    let opts = SimOptions { devices, seed: 7, faults, ..Default::default() };
    sim::spawn("127.0.0.1:0".parse().unwrap(), opts).await.expect("simulator")
}

fn client(sim: &SimHandle, timeout: Duration, rate: u32) -> XyteClient {
    XyteClient::new(ClientConfig {
        base_url: sim.base_url(),
        credential: Credential::ApiKey(Secret::new(sim.sim.api_key().to_string())),
        request_timeout: timeout,
        rate_limit_per_min: rate,
    })
    .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_round_trips() {
    let sim = start(30, "").await;
    let c = client(&sim, Duration::from_secs(5), 6000);

    let info = c.info(P).await.unwrap();
    assert!(info.name.as_deref().is_some_and(|n| !n.is_empty()));

    let devices = c.list_devices(None, P).await.unwrap();
    assert_eq!(devices.len(), 30);
    let dev = &devices[0];
    let one = c.get_device(&dev.id, P).await.unwrap();
    assert_eq!(one.id, dev.id);
    let space_id = one.space.as_ref().and_then(|s| s.id.clone()).expect("device has a space");
    let in_space = c.list_devices(Some(space_id.parse().unwrap()), P).await.unwrap();
    assert!(
        !in_space.is_empty()
            && in_space.iter().all(|d| d.space.as_ref().and_then(|s| s.id.clone()) == Some(space_id.clone()))
    );

    let renamed = c.update_device(&dev.id, json!({"name": "Renamed by test"}), P).await.unwrap();
    assert_eq!(renamed.name.as_deref(), Some("Renamed by test"));

    let model_id = one.model.as_ref().and_then(|m| m.id.clone()).expect("device has a model");
    let model = c.get_model(&model_id, P).await.unwrap();
    let command = model.commands.first().expect("model has commands").name.clone().unwrap();
    assert!(!c.list_models(P).await.unwrap().is_empty());

    let sent = c
        .send_command(
            &dev.id,
            SendCommand { command: command.clone(), friendly_name: None, extra_params: None, file_id: None },
            Priority::Command,
        )
        .await;
    // A model command may need extra params or a file; pick the first that needs neither.
    let sent = match sent {
        Ok(s) => s,
        Err(e) => panic!("send_command {command}: {e}"),
    };
    assert!(!sent.id.is_empty());
    let listed = c.list_commands(&dev.id, None, 100, P).await.unwrap();
    assert!(listed.iter().any(|r| r.id == sent.id));
    c.cancel_command(&dev.id, &sent.id, Priority::Command).await.unwrap();

    let spaces = c.list_spaces(P).await.unwrap();
    assert!(spaces.iter().any(|s| s.name.as_deref() == Some("Board Room")));
    let space = c.get_space(&spaces[0].id, P).await.unwrap();
    assert_eq!(space.id, spaces[0].id);

    let now = time::OffsetDateTime::now_utc();
    let q = HistoryQuery { from: Some(now - time::Duration::days(70)), to: Some(now), ..Default::default() };
    sim.sim.reset_stats();
    let rows = c.list_histories(q, P).await.unwrap();
    assert!(!rows.is_empty(), "the simulator seeds 30 days of history");
    let history_calls = sim.sim.stats().requests.iter().filter(|r| r.path.contains("/devices/histories")).count();
    assert!(history_calls >= 3, "70 days need at least three ≤31-day windows, saw {history_calls}");

    let incidents = c.list_incidents(IncidentQuery::default(), P).await.unwrap();
    if let Some(active) = incidents.iter().find(|i| i.status.as_deref() == Some("active")) {
        c.close_incident(&active.id, P).await.unwrap();
    }

    let tickets = c.list_tickets(P).await.unwrap();
    let t = &tickets[0];
    let full = c.get_ticket(&t.id, P).await.unwrap();
    assert_eq!(full.id, t.id);
    c.update_ticket(&t.id, Some("New title"), None, P).await.unwrap();
    c.ticket_message(&t.id, "hello from the edge", P).await.unwrap();
    let after = c.get_ticket(&t.id, P).await.unwrap();
    assert!(serde_json::to_string(&after).unwrap().contains("hello from the edge"));
    c.resolve_ticket(&t.id, P).await.unwrap();

    let claimed = c
        .claim_device(
            json!({"name": "New Display", "space_id": space_id.parse::<i64>().unwrap(), "cloud_id": "CLAIM-TEST-1"}),
            P,
        )
        .await
        .unwrap();
    c.delete_device(&claimed.id, P).await.unwrap();
    assert_eq!(c.get_device(&claimed.id, P).await.unwrap_err().code, ErrorCode::NotFound);

    let users = c.request("GET", "users", &[], None, P).await.unwrap();
    assert!(users.get("items").is_some());
    sim.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paginates_250_devices_in_both_continuation_styles() {
    for style in ["next_page", "has_next_page"] {
        let sim = start(250, &format!("pagination={style}")).await;
        let c = client(&sim, Duration::from_secs(5), 6000);
        let devices = c.list_devices(None, P).await.unwrap();
        let mut ids: Vec<_> = devices.iter().map(|d| d.id.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 250, "style {style}");
        let pages = sim.sim.stats().requests.iter().filter(|r| r.path.ends_with("/devices")).count();
        assert_eq!(pages, 3, "style {style}: 100 + 100 + 50");
        sim.shutdown.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_429_waits_for_retry_after() {
    let sim = start(10, "burst_429=1,retry_after=2").await;
    let c = client(&sim, Duration::from_secs(5), 6000);
    c.info(P).await.expect("second attempt succeeds");
    let times: Vec<Duration> = sim.sim.stats().requests.iter().map(|r| r.at).collect();
    assert_eq!(times.len(), 2, "one 429 then one success");
    assert!(times[1] - times[0] >= Duration::from_secs(2), "waited only {:?}", times[1] - times[0]);
    sim.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_retry_gets_but_never_posts() {
    let sim = start(5, "error_rate=1").await;
    let c = client(&sim, Duration::from_secs(5), 6000);
    let device = sim.sim.device_ids()[0].clone();
    let err = c.info(P).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::XyteServerError);
    assert_eq!(sim.sim.stats().requests.len(), 3, "GET tried three times");

    sim.sim.reset_stats();
    let cmd = SendCommand { command: "reboot".into(), friendly_name: None, extra_params: None, file_id: None };
    let err = c.send_command(&device, cmd, Priority::Command).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::XyteServerError);
    assert_eq!(sim.sim.stats().requests.len(), 1, "POST sent exactly once");
    sim.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_response_ends_at_the_timeout() {
    let sim = start(5, "hang=1").await;
    let c = client(&sim, Duration::from_secs(1), 6000);
    let started = Instant::now();
    let err = c.info(P).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Timeout, "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    sim.shutdown.cancel();
}

/// 200 concurrent reads with 60/min: the simulator never sees more than burst + rate × elapsed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_rate_limit_holds_under_200_concurrent_reads() {
    let sim = start(5, "").await;
    let c = client(&sim, Duration::from_secs(2), 60);
    let started = Instant::now();
    let calls: Vec<_> = (0..200)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.info(P).await })
        })
        .collect();
    let mut ok = 0;
    for call in calls {
        if call.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    let elapsed = started.elapsed();
    let times: Vec<Duration> = sim.sim.stats().requests.iter().map(|r| r.at).collect();
    assert!(ok >= 6, "at least the burst succeeded, got {ok}");
    assert!(ok < 200, "not everything can pass a 60/min bucket in {elapsed:?}");
    let first = times[0];
    let burst = 6.0; // max(5, 10 % of 60)
    for (i, t) in times.iter().enumerate() {
        let allowed = burst + (*t - first).as_secs_f64() * 1.0 + 1.0;
        assert!((i + 1) as f64 <= allowed, "request {} at {:?} exceeds the bucket ({allowed})", i + 1, *t - first);
    }
    sim.shutdown.cancel();
}

/// A tracing writer that keeps everything written, at TRACE, so the test can search it for the key.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_key_never_appears_in_logs_or_errors() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber =
        tracing_subscriber::fmt().with_max_level(tracing::Level::TRACE).with_writer(move || writer.clone()).finish();
    // Global, not thread-local: the client logs from its blocking worker threads.
    tracing::subscriber::set_global_default(subscriber).expect("only this test installs a subscriber");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut errors = Vec::new();
    rt.block_on(async {
        let sim = start(5, "").await;
        let good = client(&sim, Duration::from_secs(2), 6000);
        good.list_devices(None, P).await.unwrap();
        let wrong_key = "wrong-key-7f3a9c-should-never-be-logged";
        let bad = XyteClient::new(ClientConfig {
            base_url: sim.base_url(),
            credential: Credential::ApiKey(Secret::new(wrong_key.into())),
            request_timeout: Duration::from_secs(2),
            rate_limit_per_min: 6000,
        })
        .unwrap();
        let e = bad.info(P).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthorized);
        errors.push(format!("{e} {e:?} {bad:?}"));
        sim.sim.set_faults("error_rate=1".parse().unwrap());
        errors.push(format!("{:?}", good.info(P).await.unwrap_err()));
        sim.shutdown.cancel();
        assert!(!format!("{errors:?}").contains(wrong_key));
        assert!(!format!("{errors:?}").contains(sim.sim.api_key()));
    });
    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("GET"), "debug logs of upstream calls were captured: {logs}");
    assert!(!logs.contains("wrong-key-7f3a9c") && !logs.contains("demo-key"), "{logs}");
}
