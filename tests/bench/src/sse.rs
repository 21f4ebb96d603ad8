//! SSE fan-out: N subscribers on `GET /v1/events` over TLS; events are pushed through the signed webhook one at a
//! time, and each subscriber's receipt is timed from the moment the webhook request was sent (so the figure
//! includes the webhook's durable commit, the upper bound of what a subscriber waits for).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;

use crate::load::{self, Run};
use crate::procs::Res;

pub struct Fanout {
    pub run: Run,
    /// The daemon's VmRSS (KiB) with every subscriber connected.
    pub rss_kib: u64,
}

/// `X-Signature-256` for a webhook body.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

struct Shared {
    base: Instant,
    /// Per event, per subscriber: nanoseconds after `base` when it arrived (0: not yet).
    seen: Vec<Vec<AtomicU64>>,
    count: Vec<AtomicUsize>,
    connected: AtomicUsize,
    error: Mutex<Option<String>>,
}

#[allow(clippy::too_many_arguments)]
pub async fn fanout(
    lan: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    token: &str,
    secret: &str,
    subscribers: usize,
    events: usize,
    nonce: u64,
    pid: u32,
) -> Res<Fanout> {
    let shared = Arc::new(Shared {
        base: Instant::now(),
        seen: (0..events).map(|_| (0..subscribers).map(|_| AtomicU64::new(0)).collect()).collect(),
        count: (0..events).map(|_| AtomicUsize::new(0)).collect(),
        connected: AtomicUsize::new(0),
        error: Mutex::new(None),
    });
    let marker = format!("BENCHEVT-{nonce}-");
    let mut tasks = Vec::new();
    for s in 0..subscribers {
        let (tls, shared, marker, auth) = (tls.clone(), shared.clone(), marker.clone(), format!("Bearer {token}"));
        tasks.push(tokio::spawn(async move {
            if let Err(e) = subscribe(lan, &tls, &auth, s, &marker, &shared).await {
                shared.error.lock().unwrap().get_or_insert(format!("subscriber {s}: {e}"));
            }
        }));
    }
    let result = drive(lan, tls, secret, subscribers, events, nonce, pid, &shared).await;
    for t in &tasks {
        t.abort();
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    lan: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    secret: &str,
    subscribers: usize,
    events: usize,
    nonce: u64,
    pid: u32,
    shared: &Arc<Shared>,
) -> Res<Fanout> {
    let failed = || shared.error.lock().unwrap().clone();
    // Every subscriber has its response headers, so the daemon has registered it.
    let deadline = Instant::now() + Duration::from_secs(120);
    while shared.connected.load(Ordering::Relaxed) < subscribers {
        if let Some(e) = failed() {
            return Err(e);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {subscribers} SSE subscribers connected",
                shared.connected.load(Ordering::Relaxed)
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rss_kib = crate::procs::rss_kib(pid)?;
    let mut hook = load::h1_tls(lan, tls).await?;
    let mut lat_us = Vec::with_capacity(subscribers * events);
    let mut sent = Vec::new();
    for k in 0..events {
        let body = format!(
            r#"{{"type":"bench.fanout","id":"fanout-{nonce}-{k}","data":{{"marker":"BENCHEVT-{nonce}-{k}-"}}}}"#
        );
        let sig = sign(secret, body.as_bytes());
        let req = load::request(
            "POST",
            "/v1/webhook",
            &[("content-type", "application/json".into()), ("x-signature-256", sig)],
            Bytes::from(body),
        );
        let t = Instant::now();
        let (status, _, answer) = load::send(&mut hook, req).await?;
        if status != 202 {
            return Err(format!("webhook for event {k}: {status} {}", String::from_utf8_lossy(&answer)));
        }
        sent.push(t);
        let deadline = Instant::now() + Duration::from_secs(30);
        while shared.count[k].load(Ordering::Relaxed) < subscribers {
            if let Some(e) = failed() {
                return Err(e);
            }
            if Instant::now() > deadline {
                let got = shared.count[k].load(Ordering::Relaxed);
                return Err(format!("event {k} reached {got} of {subscribers} SSE subscribers within 30 s"));
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    }
    for (k, t) in sent.iter().enumerate() {
        let sent_ns = t.duration_since(shared.base).as_nanos() as u64;
        for s in &shared.seen[k] {
            lat_us.push((s.load(Ordering::Relaxed).saturating_sub(sent_ns) / 1000) as u32);
        }
    }
    let secs = shared.base.elapsed().as_secs_f64();
    Ok(Fanout { run: Run { calls: lat_us.len() as u64, secs, lat_us }, rss_kib })
}

async fn subscribe(
    lan: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    auth: &str,
    me: usize,
    marker: &str,
    shared: &Shared,
) -> Res<()> {
    let mut sender = load::h1_tls(lan, tls).await?;
    let req = load::request(
        "GET",
        "/v1/events",
        &[("accept", "text/event-stream".into()), ("authorization", auth.into())],
        Bytes::new(),
    );
    sender.ready().await.map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    if resp.status() != 200 {
        return Err(format!("GET /v1/events: {}", resp.status()));
    }
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let mut body = resp.into_body();
    let mut pending = String::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("stream: {e}"))?;
        let Some(data) = frame.data_ref() else { continue };
        let now = shared.base.elapsed().as_nanos() as u64;
        pending.push_str(&String::from_utf8_lossy(data));
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            // Only the `data:` line carries the marker; the `id:` and `event:` lines of the frame do not.
            if let Some(at) = line.find(marker) {
                let digits: String = line[at + marker.len()..].chars().take_while(char::is_ascii_digit).collect();
                if let Ok(k) = digits.parse::<usize>()
                    && k < shared.seen.len()
                    && shared.seen[k][me].swap(now.max(1), Ordering::Relaxed) == 0
                {
                    shared.count[k].fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    Err("the stream ended".into())
}
