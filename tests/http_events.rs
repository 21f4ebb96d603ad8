//! Events over the LAN API, against the real daemon over real TLS: `POST /v1/webhook` (HMAC or operator token,
//! limits, validation, idempotency) and `GET /v1/events` as Server-Sent Events (retry hint, filters, resume with
//! `Last-Event-ID` from the log without loss or repeats, then live; graceful shutdown ends open streams).
//! Nothing sleeps to synchronise: every wait is a read with the agent's deadline.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod support;
use support::Gateway;

const SECRET: &str = "a-long-test-secret-123";

fn gateway() -> Gateway {
    Gateway::start(&[("XYTE_WEBHOOK_SECRET", SECRET)])
}

fn signature(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    format!("sha256={}", tag.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Posts `body` to the webhook with extra headers; (status, headers, JSON body or Null).
fn post_raw(
    agent: &ureq::Agent,
    gw: &Gateway,
    body: &[u8],
    headers: &[(&str, &str)],
) -> (u16, ureq::http::HeaderMap, Value) {
    let mut req = agent.post(&gw.url("/v1/webhook")).header("Content-Type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp =
        req.send(body).unwrap_or_else(|e| panic!("POST /v1/webhook ({} bytes, {headers:?}): {e}", body.len()));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (status, headers, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Posts `body` signed with the gateway's secret; (status, JSON body).
fn post_signed(agent: &ureq::Agent, gw: &Gateway, body: &Value) -> (u16, Value) {
    let raw = body.to_string();
    let sig = signature(SECRET, raw.as_bytes());
    let (status, _, json) = post_raw(agent, gw, raw.as_bytes(), &[("X-Signature-256", &sig)]);
    (status, json)
}

fn get_json(agent: &ureq::Agent, url: &str, token: &str) -> Value {
    let mut resp = agent.get(url).header("Authorization", &format!("Bearer {token}")).call().unwrap();
    assert_eq!(resp.status().as_u16(), 200, "GET {url}");
    serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap()
}

/// One SSE frame (the lines up to a blank line).
#[derive(Debug, Default, Clone)]
struct Frame {
    id: Option<i64>,
    event: Option<String>,
    data: Option<String>,
    retry: Option<u64>,
    comments: Vec<String>,
}

impl Frame {
    fn is_event(&self) -> bool {
        self.event.is_some() || self.data.is_some()
    }

    fn json(&self) -> Value {
        serde_json::from_str(self.data.as_deref().unwrap_or("null")).unwrap()
    }
}

/// A reader over an open event stream. Reads are bounded by the agent's global timeout.
struct Stream {
    lines: BufReader<ureq::BodyReader<'static>>,
}

impl Stream {
    /// Opens `GET /v1/events{query}` as a stream; panics unless the answer is a 200 event stream.
    fn open(agent: &ureq::Agent, gw: &Gateway, query: &str, token: &str, last_event_id: Option<i64>) -> Stream {
        let mut req = agent
            .get(&gw.url(&format!("/v1/events{query}")))
            .header("Accept", "text/event-stream")
            .header("Authorization", &format!("Bearer {token}"));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", &id.to_string());
        }
        let resp = req.call().unwrap();
        assert_eq!(resp.status().as_u16(), 200, "GET /v1/events{query} as a stream");
        let h = resp.headers();
        assert_eq!(h.get("content-type").unwrap(), "text/event-stream");
        assert_eq!(h.get("cache-control").unwrap(), "no-store");
        assert_eq!(h.get("x-accel-buffering").unwrap(), "no");
        Stream { lines: BufReader::new(resp.into_body().into_reader()) }
    }

    /// The next frame, or `None` at the end of the stream.
    fn frame(&mut self) -> Option<Frame> {
        let mut frame = Frame::default();
        let mut any = false;
        loop {
            let mut line = String::new();
            let n = self.lines.read_line(&mut line).unwrap_or_else(|e| panic!("reading the event stream: {e}"));
            if n == 0 {
                assert!(!any, "the stream ended inside a frame: {frame:?}");
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if any {
                    return Some(frame);
                }
                continue;
            }
            any = true;
            if let Some(c) = line.strip_prefix(':') {
                frame.comments.push(c.trim().to_string());
                continue;
            }
            let (field, value) = line.split_once(':').map(|(f, v)| (f, v.strip_prefix(' ').unwrap_or(v))).unwrap();
            match field {
                "id" => frame.id = Some(value.parse().unwrap()),
                "event" => frame.event = Some(value.to_string()),
                "data" => frame.data = Some(value.to_string()),
                "retry" => frame.retry = Some(value.parse().unwrap()),
                other => panic!("unexpected field {other:?} in {line:?}"),
            }
        }
    }

    /// The next event frame, skipping heartbeats and the like; panics at the end of the stream.
    fn event(&mut self) -> Frame {
        loop {
            match self.frame() {
                Some(f) if f.is_event() => return f,
                Some(_) => continue,
                None => panic!("the stream ended while an event was expected"),
            }
        }
    }
}

/// The delivery id a `webhook.received` frame carries, after checking the frame is one.
fn webhook_id(frame: &Frame) -> String {
    assert_eq!(frame.event.as_deref(), Some("webhook.received"), "{frame:?}");
    let event = frame.json();
    assert_eq!(event["id"].as_i64(), frame.id, "the SSE id is the event's id: {frame:?}");
    assert_eq!(event["kind"], "webhook.received");
    event["data"]["id"].as_str().unwrap().to_string()
}

#[test]
fn webhooks_are_authenticated_validated_and_stored_once() {
    let started = Instant::now();
    let gw = gateway();
    let agent = Gateway::agent(&gw.cert);
    let (viewer, operator) = (gw.token("viewer-1", "viewer"), gw.token("operator-1", "operator"));
    let body = json!({"type": "device.status_changed", "data": {"device_id": "d-1", "status": "offline"}});
    let raw = body.to_string();

    // Refused: a signature made with another secret, a malformed one, no credential, a viewer token.
    let wrong = signature("another-secret-4567", raw.as_bytes());
    for (headers, why) in [
        (vec![("X-Signature-256", wrong.as_str())], "wrong secret"),
        (vec![("X-Signature-256", "sha256=not-hex")], "malformed signature"),
        (vec![], "no credential"),
        (vec![("Authorization", "Bearer xe_not-a-real-token")], "unknown token"),
    ] {
        let (status, h, json) = post_raw(&agent, &gw, raw.as_bytes(), &headers);
        assert_eq!(status, 401, "{why}: {json}");
        assert_eq!(h.get("www-authenticate").unwrap(), "Bearer realm=\"xyte-edge\"", "{why}");
        assert!(json["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{why}: {json}");
    }
    let auth = |t: &str| format!("Bearer {t}");
    let (status, _, json) = post_raw(&agent, &gw, raw.as_bytes(), &[("Authorization", &auth(&viewer))]);
    assert_eq!((status, json["error"]["code"].as_str()), (403, Some("permission_denied")), "{json}");

    // Accepted: an operator token, a valid signature.
    let (status, _, by_token) = post_raw(&agent, &gw, raw.as_bytes(), &[("Authorization", &auth(&operator))]);
    assert_eq!(status, 202, "{by_token}");
    assert_eq!((by_token["accepted"].as_bool(), by_token["duplicate"].as_bool()), (Some(true), Some(false)));
    // Without an id, the delivery is identified by the SHA-256 of its body.
    let digest = ring::digest::digest(&ring::digest::SHA256, raw.as_bytes());
    let content_id: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(by_token["id"].as_str(), Some(content_id.as_str()));
    assert!(by_token["event_id"].as_i64().is_some(), "{by_token}");
    let signed = json!({"type": "ticket.updated", "data": {"ticket_id": "t-9"}, "id": "sig-1"});
    let (status, json) = post_signed(&agent, &gw, &signed);
    assert_eq!((status, json["id"].as_str(), json["duplicate"].as_bool()), (202, Some("sig-1"), Some(false)));
    // The same body again is the same delivery.
    let (status, _, again) = post_raw(&agent, &gw, raw.as_bytes(), &[("Authorization", &auth(&operator))]);
    assert_eq!((status, again["duplicate"].as_bool()), (202, Some(true)), "{again}");
    assert_eq!(again["event_id"], by_token["event_id"]);

    // Too large: 413 with a reason (checked with a valid signature, so only the size is wrong).
    let big = json!({"type": "big", "data": {"blob": "x".repeat(256 * 1024)}});
    let (status, json) = post_signed(&agent, &gw, &big);
    assert_eq!(status, 413, "{json}");
    assert!(json["error"]["message"].as_str().unwrap().contains("256 KiB"), "{json}");
    // Just under the limit is fine.
    let fits = json!({"type": "big", "data": {"blob": "x".repeat(256 * 1024 - 100)}});
    assert_eq!(post_signed(&agent, &gw, &fits).0, 202);

    // Malformed: 400 with a reason.
    for (raw, reason) in [
        (&b"{\"type\": \"x\""[..], "not valid JSON"),
        (br#"["type"]"#, "not an object"),
        (br#"{"data": {}}"#, "`type` is missing"),
        (br#"{"type": ""}"#, "`type` must not be empty"),
        (br#"{"type": "x", "data": "text"}"#, "`data` must be a JSON object"),
    ] {
        let sig = signature(SECRET, raw);
        let (status, _, json) = post_raw(&agent, &gw, raw, &[("X-Signature-256", &sig)]);
        assert_eq!((status, json["error"]["code"].as_str()), (400, Some("invalid_params")), "{json}");
        let message = json["error"]["message"].as_str().unwrap();
        assert!(message.contains(reason), "{}: {message}", String::from_utf8_lossy(raw));
    }

    // Only POST.
    let resp = agent.get(&gw.url("/v1/webhook")).call().unwrap();
    assert_eq!((resp.status().as_u16(), resp.headers().get("allow").unwrap().to_str().unwrap()), (405, "POST"));

    // A repeated id is accepted both times and stored once.
    let delivery = json!({"type": "incident.opened", "data": {"n": 1}, "id": "dup-1"});
    let (status, first) = post_signed(&agent, &gw, &delivery);
    assert_eq!((status, first["duplicate"].as_bool()), (202, Some(false)), "{first}");
    let retried = json!({"type": "incident.opened", "data": {"n": 2}, "id": "dup-1"});
    let (status, second) = post_signed(&agent, &gw, &retried);
    assert_eq!((status, second["duplicate"].as_bool()), (202, Some(true)), "{second}");
    assert_eq!(second["event_id"], first["event_id"], "the duplicate points at the original event");
    let log = get_json(&agent, &gw.url("/v1/events?kind=webhook.received&limit=500"), &viewer);
    let events = log["events"].as_array().unwrap();
    let dup: Vec<&Value> = events.iter().filter(|e| e["data"]["id"] == "dup-1").collect();
    assert_eq!(dup.len(), 1, "{log}");
    assert_eq!(dup[0]["id"], first["event_id"]);
    assert_eq!(dup[0]["data"], json!({"type": "incident.opened", "id": "dup-1", "data": {"n": 1}}));
    let content: Vec<&Value> = events.iter().filter(|e| e["data"]["id"] == content_id.as_str()).collect();
    assert_eq!(content.len(), 1);
    assert_eq!(content[0]["device_id"], "d-1", "the delivery's device is the event's device");
    assert_eq!(events.len(), 4, "token, signed, fits, dup-1: {log}");
    eprintln!("webhooks: {:?}", started.elapsed());
}

#[test]
fn event_streams_resume_from_the_log_then_go_live() {
    let started = Instant::now();
    let gw = gateway();
    let agent = Gateway::agent(&gw.cert);
    let viewer = gw.token("viewer-1", "viewer");
    let query = "?kind=webhook.received";

    // One live event on a first connection; note its id and go away.
    let mut first = Stream::open(&agent, &gw, query, &viewer, None);
    let hint = first.frame().unwrap();
    assert_eq!(hint.retry, Some(3000), "the retry hint comes first: {hint:?}");
    assert!(!hint.is_event());
    assert_eq!(post_signed(&agent, &gw, &json!({"type": "t", "id": "live-0"})).0, 202);
    let seen = first.event();
    assert_eq!(webhook_id(&seen), "live-0");
    let noted = seen.id.unwrap();
    drop(first);

    // 100 deliveries while nobody listens.
    for i in 0..100 {
        let (status, json) = post_signed(&agent, &gw, &json!({"type": "t", "id": format!("resume-{i}")}));
        assert_eq!(status, 202, "{json}");
    }

    // Reconnecting with the noted id replays exactly those 100, in order, then continues live.
    let mut second = Stream::open(&agent, &gw, query, &viewer, Some(noted));
    assert_eq!(second.frame().unwrap().retry, Some(3000));
    let mut last = noted;
    for i in 0..100 {
        let frame = second.event();
        assert_eq!(webhook_id(&frame), format!("resume-{i}"));
        let id = frame.id.unwrap();
        assert!(id > last, "ids increase: {id} after {last}");
        last = id;
    }
    assert_eq!(post_signed(&agent, &gw, &json!({"type": "t", "id": "live-101"})).0, 202);
    let frame = second.event();
    assert_eq!(webhook_id(&frame), "live-101", "the next event after the replay is the live one");
    assert!(frame.id.unwrap() > last);

    // `?after_id=` resumes the same way (the header wins when both are given).
    let mut third = Stream::open(&agent, &gw, &format!("{query}&after_id={noted}"), &viewer, None);
    third.frame().unwrap();
    assert_eq!(webhook_id(&third.event()), "resume-0");
    let mut fourth = Stream::open(&agent, &gw, &format!("{query}&after_id=0"), &viewer, Some(last));
    fourth.frame().unwrap();
    assert_eq!(webhook_id(&fourth.event()), "live-101");
    eprintln!("resume: {:?}", started.elapsed());
}

#[test]
fn event_streams_filter_by_kind_and_device_and_need_a_token() {
    let started = Instant::now();
    let gw = gateway();
    let agent = Gateway::agent(&gw.cert);
    let (viewer, operator) = (gw.token("viewer-1", "viewer"), gw.token("operator-1", "operator"));

    // No token, a bad token, bad parameters.
    let resp = agent.get(&gw.url("/v1/events")).header("Accept", "text/event-stream").call().unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(resp.headers().get("www-authenticate").unwrap(), "Bearer realm=\"xyte-edge\"");
    let resp = agent
        .get(&gw.url("/v1/events"))
        .header("Accept", "text/event-stream")
        .header("Authorization", "Bearer xe_nope")
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    for (query, last_event_id) in [("?after_id=soon", None), ("?kinds=audit", None), ("", Some("x"))] {
        let mut req = agent
            .get(&gw.url(&format!("/v1/events{query}")))
            .header("Accept", "text/event-stream")
            .header("Authorization", &format!("Bearer {viewer}"));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        assert_eq!(req.call().unwrap().status().as_u16(), 400, "{query} {last_event_id:?}");
    }

    // Streams opened before anything happens.
    let mut everything = Stream::open(&agent, &gw, "?kind=command.accepted,webhook.received", &viewer, None);
    let mut webhooks = Stream::open(&agent, &gw, "?kind=webhook.received", &viewer, None);
    let mut repeated = Stream::open(&agent, &gw, "?kind=no.such.kind&kind=webhook.received", &viewer, None);
    let mut device_a = Stream::open(&agent, &gw, "?device_id=dev-a", &viewer, None);
    let mut webhooks_a = Stream::open(&agent, &gw, "?kind=webhook.received&device_id=dev-a", &viewer, None);
    for s in [&mut everything, &mut webhooks, &mut repeated, &mut device_a, &mut webhooks_a] {
        assert_eq!(s.frame().unwrap().retry, Some(3000), "the retry hint comes first");
    }

    // A command (kind command.accepted, on a real device), then webhooks for dev-b, for no device, for dev-a.
    let devices = get_json(&agent, &gw.url("/v1/devices?limit=1"), &viewer);
    let device = devices["devices"][0]["id"].as_str().unwrap().to_string();
    let mut resp = agent
        .post(&gw.url("/v1/tools/send_command_async"))
        .header("Authorization", &format!("Bearer {operator}"))
        .send(json!({"device_id": device, "command": "reboot"}).to_string())
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{}", resp.body_mut().read_to_string().unwrap());
    for (id, dev) in [("w-b", Some("dev-b")), ("w-none", None), ("w-a", Some("dev-a"))] {
        let data = dev.map(|d| json!({"device_id": d})).unwrap_or(json!({}));
        assert_eq!(post_signed(&agent, &gw, &json!({"type": "t", "id": id, "data": data})).0, 202);
    }

    // Both kinds, in order.
    let command = everything.event();
    assert_eq!(command.event.as_deref(), Some("command.accepted"));
    assert_eq!(command.json()["device_id"].as_str(), Some(device.as_str()));
    for id in ["w-b", "w-none", "w-a"] {
        let frame = everything.event();
        assert!(frame.id > command.id);
        assert_eq!(webhook_id(&frame), id);
    }
    // Only webhooks: the command is not there (comma list and repeated `kind` alike).
    for s in [&mut webhooks, &mut repeated] {
        for id in ["w-b", "w-none", "w-a"] {
            assert_eq!(webhook_id(&s.event()), id);
        }
    }
    // Only dev-a: the first event is the dev-a webhook (the command is for another device, w-b and w-none are
    // not for dev-a, and events arrive in id order, so nothing else can come first).
    assert_eq!(webhook_id(&device_a.event()), "w-a");
    assert_eq!(webhook_id(&webhooks_a.event()), "w-a");
    eprintln!("filters: {:?}", started.elapsed());
}

#[test]
fn shutdown_ends_open_streams_and_the_daemon_exits_promptly() {
    let started = Instant::now();
    let mut gw = gateway();
    let agent = Gateway::agent(&gw.cert);
    let viewer = gw.token("viewer-1", "viewer");
    let mut nothing = Stream::open(&agent, &gw, "?device_id=no-such-device", &viewer, None);
    let mut all = Stream::open(&agent, &gw, "?kind=webhook.received", &viewer, None);
    assert_eq!(nothing.frame().unwrap().retry, Some(3000));
    assert_eq!(all.frame().unwrap().retry, Some(3000));
    assert_eq!(post_signed(&agent, &gw, &json!({"type": "t", "id": "before-stop", "data": {"device_id": "d"}})).0, 202);
    assert_eq!(webhook_id(&all.event()), "before-stop");

    gw.daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let stopping = Instant::now();
    // Both streams end cleanly; the one whose device matches nothing got no event at all.
    while let Some(frame) = nothing.frame() {
        assert!(!frame.is_event(), "no event matches device no-such-device: {frame:?}");
    }
    while all.frame().is_some() {}
    let ended = stopping.elapsed();
    let (code, took) = gw.daemon.wait_exit(Duration::from_secs(5));
    assert_eq!(code, Some(0), "exit code; output:\n{}", gw.daemon.output.join("\n"));
    assert!(ended + took < Duration::from_secs(5), "streams ended after {ended:?}, exit after {took:?} more");
    eprintln!("shutdown: streams ended in {ended:?}, exit {took:?} later; test {:?}", started.elapsed());
}
