//! Reads past the cache TTL while Xyte struggles (issue #23), counted at the simulator: Xyte answers 30 % of
//! requests with 503 and 10 % with 429 (`Retry-After: 1`), and every answer takes 2 s. Eight REST clients keep
//! reading sixteen cached devices and the fleet list through the real daemon while the entries pass
//! `XYTE_CACHE_TTL`; meanwhile
//! (a) every read answers 200, past the TTL from the cache marked `stale: true` with its `fetched_at`, within the
//!     documented bound (`REVALIDATE_WAIT`, 750 ms): no read waits for Xyte, whose every answer takes 2 s;
//! (b) the refreshes behind those reads never ask Xyte for the same thing twice at once, and the simulator never
//!     sees more than `XYTE_RATE_LIMIT` requests in any sliding 60 s window; and
//! (c) once the faults are cleared, a background refresh lands and reads are fresh again.

use std::time::{Duration, Instant};

use serde_json::Value;
use xyte_edge::sim::{self, RequestRecord, SimOptions};

mod support;

/// `XYTE_RATE_LIMIT`: low enough that the refreshes meet it, high enough that warming sixteen devices (their
/// commands and models are not in the initial sync) takes seconds, not a minute.
const RATE: usize = 120;
const DEVICES: usize = 16;
const CLIENTS: usize = 8;
/// `XYTE_CACHE_TTL`: short, so the entries pass it early in the storm.
const TTL: Duration = Duration::from_secs(2);
/// The simulator's latency: a read that waited for any answer from Xyte took at least this long.
const LATENCY: Duration = Duration::from_secs(2);
const STORM: Duration = Duration::from_secs(12);
/// How often each client reads: a steady load that leaves the two cores to the daemon and the simulator.
const READ_EVERY: Duration = Duration::from_millis(100);

struct Read {
    took: Duration,
    status: u16,
    body: Value,
}

fn get(agent: &ureq::Agent, url: &str, token: &str) -> Read {
    let sent = Instant::now();
    let mut r = agent
        .get(url)
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let took = sent.elapsed();
    let body = serde_json::from_str(&r.body_mut().read_to_string().unwrap_or_default()).unwrap_or(Value::Null);
    Read { took, status: r.status().as_u16(), body }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The most arrivals in any 60 s window.
fn busiest_minute(requests: &[RequestRecord]) -> usize {
    let at: Vec<Duration> = requests.iter().map(|r| r.at).collect();
    let mut end = 0;
    (0..at.len())
        .map(|start| {
            while end < at.len() && at[end] - at[start] < Duration::from_secs(60) {
                end += 1;
            }
            end - start
        })
        .max()
        .unwrap_or(0)
}

/// Requests for a path that arrived while another for the same path was still unanswered: a duplicate fetch.
fn overlapping(requests: &[RequestRecord]) -> Vec<String> {
    let mut by_path = std::collections::BTreeMap::<&str, Vec<&RequestRecord>>::new();
    for r in requests {
        by_path.entry(r.path.as_str()).or_default().push(r);
    }
    let mut found = Vec::new();
    for (path, rs) in by_path {
        // Arrival order; a retry of the same call only leaves after the previous answer came back.
        let mut busy_until = Duration::ZERO;
        for r in rs {
            if r.at < busy_until {
                found.push(format!("{path} at {:.3} s", r.at.as_secs_f64()));
            }
            busy_until = busy_until.max(r.answered);
        }
    }
    found
}

#[test]
fn reads_past_the_ttl_answer_stale_at_once_while_xyte_struggles_and_fresh_once_it_recovers() {
    let began = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let sim_epoch = Instant::now();
    let opts = SimOptions { devices: DEVICES, seed: 42, churn: false, ..Default::default() };
    let sim = rt.block_on(sim::spawn("127.0.0.1:0".parse().unwrap(), opts)).unwrap();
    let ids = sim.sim.device_ids();

    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut cmd = support::bin();
    cmd.arg("serve")
        .env("XYTE_API_KEY", sim.sim.api_key())
        .env("XYTE_BASE_URL", sim.base_url())
        .env("XYTE_RATE_LIMIT", RATE.to_string())
        // One sync at start, then none: the reads alone decide what reaches Xyte, and the poller neither confirms
        // the cache nor declares Xyte unreachable (which serves stale answers at once by another path).
        .env("XYTE_POLL_INTERVAL", "1h")
        .env("XYTE_REQUEST_TIMEOUT", "10")
        .env("XYTE_CACHE_TTL", TTL.as_secs().to_string())
        .env("XYTE_STATE_DIR", &state)
        .env("XYTE_MCP_SOCKET", dir.path().join("mcp.sock"))
        .env("XYTE_PRESETS_FILE", dir.path().join("presets.json"))
        .env("XYTE_HTTP_LISTEN", "")
        .env("XYTE_HTTP_LOCAL_LISTEN", "127.0.0.1:0")
        .env("XYTE_LOG_FORMAT", "text");
    let mut daemon = support::Daemon::spawn(cmd);
    let line = daemon.wait_line("tls=false", Duration::from_secs(30));
    let local = line.split("addr=").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    daemon.wait_line("Xyte reachable", Duration::from_secs(30));
    let out = support::bin()
        .args(["token", "create", "--name", "reader", "--role", "viewer"])
        .env("XYTE_STATE_DIR", &state)
        .output()
        .unwrap();
    assert!(out.status.success(), "token create: {}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let device_url = move |id: &str| format!("http://{local}/v1/devices/{id}");
    let list_url = device_url("").trim_end_matches('/').to_string();

    // Warm the cache: every device with its commands, and the fleet list. (A read may already answer stale here
    // when its refresh waits for a token of the rate limit.)
    for id in &ids {
        let r = get(&agent, &device_url(id), &token);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(get(&agent, &list_url, &token).status, 200);

    sim.sim.set_faults("latency=2s,error_rate=0.3,rate_429=0.1,retry_after=1".parse().unwrap());
    let storm_started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (agent, token, ids) = (agent.clone(), token.clone(), ids.clone());
            let (device_url, list_url) = (device_url.clone(), list_url.clone());
            std::thread::spawn(move || {
                let mut reads = Vec::new();
                let mut next = Instant::now();
                while storm_started.elapsed() < STORM {
                    let i = reads.len();
                    // Every fourth read is the whole fleet (a collection); the rest single devices.
                    let url = if i % 4 == 3 { list_url.clone() } else { device_url(&ids[(c + i) % ids.len()]) };
                    let past_ttl = storm_started.elapsed() > TTL;
                    reads.push((url.clone(), past_ttl, get(&agent, &url, &token)));
                    // Pacing the load, not waiting for anything.
                    next += READ_EVERY;
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
                reads
            })
        })
        .collect();
    let reads: Vec<(String, bool, Read)> = clients.into_iter().flat_map(|c| c.join().expect("client")).collect();

    let mut took: Vec<Duration> = reads.iter().map(|(_, _, r)| r.took).collect();
    took.sort();
    let pct = |p: f64| took[((took.len() as f64 * p).ceil() as usize).clamp(1, took.len()) - 1];
    let (longest_url, _, longest) = reads.iter().max_by_key(|(_, _, r)| r.took).unwrap();
    let stale: Vec<&Read> = reads.iter().filter(|(_, _, r)| r.body["stale"] == true).map(|(_, _, r)| r).collect();
    let past_ttl = reads.iter().filter(|(_, past, _)| *past).count();
    eprintln!(
        "stale_reads: {} REST reads by {CLIENTS} clients ({past_ttl} begun past the TTL, {} answered stale): p50 {}, \
         p99 {}, longest {} ({longest_url})",
        reads.len(),
        stale.len(),
        ms(pct(0.5)),
        ms(pct(0.99)),
        ms(longest.took),
    );

    // (a) every read answered, past the TTL from the cache, and none waited for Xyte.
    for (url, _, r) in &reads {
        assert_eq!(r.status, 200, "{url}: {}", r.body);
    }
    assert!(!stale.is_empty(), "reads past the TTL were answered from the cache marked stale");
    for r in &stale {
        assert!(r.body["fetched_at"].is_string(), "a stale answer says when it was fetched: {}", r.body);
    }
    assert!(
        longest.took < LATENCY,
        "the longest read took {} (REVALIDATE_WAIT is 750 ms): it waited for Xyte, which answers after {} s",
        ms(longest.took),
        LATENCY.as_secs()
    );

    // (c) Xyte recovers: a refresh lands and stores what it fetched, and reads are fresh again.
    sim.sim.set_faults(Default::default());
    let recovered = Instant::now();
    let mut fresh = [false, false];
    while fresh != [true, true] {
        assert!(recovered.elapsed() < Duration::from_secs(60), "reads still stale 60 s after Xyte recovered");
        for (i, url) in [device_url(&ids[0]), list_url.clone()].iter().enumerate() {
            let r = get(&agent, url, &token);
            assert_eq!(r.status, 200, "{url}: {}", r.body);
            fresh[i] |= r.body["stale"] == false;
        }
        // Pacing the polling; each read above is what is waited for.
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("stale_reads: fresh again {:.1} s after the faults were cleared", recovered.elapsed().as_secs_f64());

    // (b) counted at the simulator.
    let requests = sim.sim.stats().requests;
    drop(daemon);
    let storm_at = storm_started - sim_epoch;
    let during: Vec<RequestRecord> = requests.iter().filter(|r| r.at >= storm_at).cloned().collect();
    let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
    for r in &during {
        *by_status.entry(r.status).or_default() += 1;
    }
    let busiest = busiest_minute(&requests);
    let duplicates = overlapping(&during);
    eprintln!(
        "stale_reads: upstream requests at the simulator: {} in all, {} since the storm began, by status \
         {by_status:?}; most in any 60 s window {busiest} (XYTE_RATE_LIMIT={RATE}); concurrent duplicates {}",
        requests.len(),
        during.len(),
        duplicates.len()
    );
    assert!(by_status.keys().any(|s| *s >= 500), "the storm answered 5xx: {by_status:?}");
    assert!(duplicates.is_empty(), "one refresh per entry at a time, yet: {duplicates:?}");
    assert!(busiest <= RATE, "{busiest} requests reached Xyte within 60 s (XYTE_RATE_LIMIT={RATE})");
    eprintln!("stale_reads: wall time {:.1} s", began.elapsed().as_secs_f64());
}
