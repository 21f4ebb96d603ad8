//! HEAD answers exactly as GET would, without the body, on every kind of route: the dashboard and its assets,
//! health and readiness, the OpenAPI document and its page, metrics, REST reads without a token (401) and with a
//! viewer's (200), an unknown path (404) and POST-only routes (405 with `Allow`). A HEAD that asks for a stream gets
//! the headers of the JSON answer and opens none. Checked over HTTP/1.1 (raw requests on the loopback listener, so
//! the bytes after the headers can be seen, and a client over TLS) and over HTTP/2 with TLS (curl, whose HTTP/2
//! stack refuses a body after a HEAD's headers).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

mod support;
use support::Gateway;

/// One answer: status, headers (lower-case names; repeated ones joined), body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// Parses a response head (status line and header lines, without the blank line).
fn parse_head(text: &str, version: &str) -> (u16, BTreeMap<String, String>) {
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix(version)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line {status_line:?}, expected {version} <status>"));
    let mut headers = BTreeMap::<String, String>::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').unwrap_or_else(|| panic!("header line {line:?}"));
        let slot = headers.entry(name.trim().to_ascii_lowercase()).or_default();
        if !slot.is_empty() {
            slot.push_str(", ");
        }
        slot.push_str(value.trim());
    }
    (status, headers)
}

fn content_length(a: &Answer) -> Option<usize> {
    a.headers.get("content-length").map(|v| v.parse().unwrap_or_else(|_| panic!("content-length {v:?}")))
}

/// Compares a HEAD's answer with GET's for the same request. `exact`: the body does not change between two calls,
/// so Content-Length must be equal too (otherwise it must only be there whenever GET has one).
fn assert_head_matches_get(what: &str, get: &Answer, head: &Answer, exact: bool) {
    assert_eq!(head.status, get.status, "{what}: status");
    assert!(head.body.is_empty(), "{what}: HEAD sent a body: {:?}", String::from_utf8_lossy(&head.body));
    if let Some(len) = content_length(get) {
        assert_eq!(len, get.body.len(), "{what}: GET's content-length and body");
        assert!(len > 0, "{what}: GET has a body to leave out");
        let head_len = content_length(head).unwrap_or_else(|| panic!("{what}: HEAD without content-length"));
        if exact {
            assert_eq!(head_len, len, "{what}: content-length");
        }
    }
    // Date is the clock's; a changing body may change its length by a digit.
    let comparable = |a: &Answer| {
        let mut h = a.headers.clone();
        h.remove("date");
        if !exact {
            h.remove("content-length");
        }
        h
    };
    assert_eq!(comparable(head), comparable(get), "{what}: headers");
}

/// An HTTP/1.1 connection spoken by hand, so what follows a HEAD's headers is seen byte for byte.
struct Raw {
    stream: TcpStream,
    /// Bytes read past the last answer taken.
    pending: Vec<u8>,
}

impl Raw {
    fn connect(addr: &str) -> Raw {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Raw { stream, pending: Vec::new() }
    }

    fn fill(&mut self, what: &str) {
        let mut buf = [0u8; 16384];
        let n = self.stream.read(&mut buf).unwrap_or_else(|e| panic!("{what}: reading the answer: {e}"));
        assert!(n > 0, "{what}: the server closed the connection");
        self.pending.extend_from_slice(&buf[..n]);
    }

    /// Sends one request and reads its answer: the head, then for GET the body Content-Length announces.
    fn exchange(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
        let what = format!("HTTP/1.1 {method} {path}");
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        self.stream.write_all(request.as_bytes()).unwrap();
        // The answer starts right where the previous one ended: nothing of an earlier HEAD's body is in the way.
        let end = loop {
            if let Some(i) = self.pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            self.fill(&what);
        };
        assert!(self.pending.starts_with(b"HTTP/1.1 "), "{what}: answer starts with {:?}", self.head_text(end));
        let (status, headers) = parse_head(&self.head_text(end), "HTTP/1.1");
        self.pending.drain(..end + 4);
        let mut answer = Answer { status, headers, body: Vec::new() };
        if method == "HEAD" {
            // Whatever arrived with the head would be a body.
            assert!(
                self.pending.is_empty(),
                "{what}: bytes after the headers: {:?}",
                self.head_text(self.pending.len())
            );
            return answer;
        }
        let len = content_length(&answer).unwrap_or_else(|| panic!("{what}: no content-length"));
        while self.pending.len() < len {
            self.fill(&what);
        }
        answer.body = self.pending.drain(..len).collect();
        answer
    }

    fn head_text(&self, end: usize) -> String {
        String::from_utf8_lossy(&self.pending[..end.min(self.pending.len())]).into_owned()
    }
}

/// `curl --http2` over TLS trusting the daemon's certificate; `-I` for HEAD. A stream (or a body after a HEAD's
/// headers, which curl reports as a protocol error) fails the exit-code check or the time limit.
fn curl(gw: &Gateway, head: bool, path: &str, headers: &[(&str, &str)]) -> Answer {
    let url = gw.url(path);
    let mut cmd = Command::new("curl");
    cmd.args(["--http2", "-sS", "--max-time", "20", "--cacert"]).arg(&gw.cert);
    cmd.arg(if head { "-I" } else { "-i" });
    for (name, value) in headers {
        cmd.args(["-H", &format!("{name}: {value}")]);
    }
    let out = cmd.arg(&url).output().expect("curl runs");
    let what = format!("HTTP/2 {} {path}", if head { "HEAD" } else { "GET" });
    assert!(out.status.success(), "{what}: curl {:?}: {}", out.status.code(), String::from_utf8_lossy(&out.stderr));
    let end = out.stdout.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("{what}: no head"));
    let (status, headers) = parse_head(&String::from_utf8_lossy(&out.stdout[..end]), "HTTP/2");
    Answer { status, headers, body: out.stdout[end + 4..].to_vec() }
}

/// HTTP/1.1 over TLS with the client the other LAN tests use.
fn tls_h1(agent: &ureq::Agent, gw: &Gateway, head: bool, path: &str, headers: &[(&str, &str)]) -> Answer {
    let url = gw.url(path);
    let mut req = if head { agent.head(&url) } else { agent.get(&url) };
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let mut resp = req.call().unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(resp.version(), ureq::http::Version::HTTP_11);
    let status = resp.status().as_u16();
    let mut map = BTreeMap::<String, String>::new();
    for (name, value) in resp.headers() {
        let slot = map.entry(name.as_str().to_string()).or_default();
        if !slot.is_empty() {
            slot.push_str(", ");
        }
        slot.push_str(value.to_str().unwrap());
    }
    let body = resp.body_mut().read_to_vec().unwrap();
    Answer { status, headers: map, body }
}

/// One check: GET and HEAD of `path` with `headers` should answer `status`; `exact` as in
/// [`assert_head_matches_get`]. `head_headers` are sent with HEAD only (to ask for a stream GET would open).
struct Case<'a> {
    path: &'a str,
    headers: Vec<(&'a str, &'a str)>,
    head_headers: Vec<(&'a str, &'a str)>,
    status: u16,
    exact: bool,
}

fn case<'a>(path: &'a str, headers: Vec<(&'a str, &'a str)>, status: u16, exact: bool) -> Case<'a> {
    Case { path, headers, head_headers: vec![], status, exact }
}

#[test]
fn head_answers_as_get_without_the_body_over_http1_and_http2() {
    let gw = Gateway::start(&[]);
    let viewer = format!("Bearer {}", gw.token("head-viewer", "viewer"));
    let auth = || vec![("Authorization", viewer.as_str())];
    let sse = ("Accept", "text/event-stream");

    // A device id for the per-device route.
    let agent = Gateway::agent(&gw.cert);
    let devices = tls_h1(&agent, &gw, false, "/v1/devices?limit=1", &auth());
    let devices: serde_json::Value = serde_json::from_slice(&devices.body).unwrap();
    let device_id = devices["devices"][0]["id"].as_str().expect("a demo device").to_string();
    let device_path = format!("/v1/devices/{device_id}");

    // Routes answered alike on both listeners (metrics differ: see below).
    let mut cases = vec![
        case("/", vec![], 200, true),
        case("/index.html", vec![], 200, true),
        case("/dashboard.js", vec![], 200, true),
        case("/dashboard.css", vec![], 200, true),
        case("/favicon.svg", vec![], 200, true),
        case("/healthz", vec![], 200, true),
        case("/readyz", vec![], 200, false),
        case("/v1/openapi.json", vec![], 200, true),
        case("/v1/docs", vec![], 200, true),
        // POST-only routes: 405 with Allow, as GET, and nothing is called.
        case("/v1/webhook", vec![], 405, true),
        case("/v1/tools/get_organization_info", auth(), 405, true),
        case("/mcp", auth(), 405, true),
        case("/v1/nope", auth(), 404, true),
        case("/v1/tools", auth(), 200, true),
    ];
    for path in ["/v1/organization", "/v1/devices", "/v1/devices?limit=2", "/v1/fleet/health", "/v1/events"] {
        cases.push(case(path, vec![], 401, true));
        cases.push(case(path, auth(), 200, false));
    }
    cases.push(case(&device_path, vec![], 401, true));
    cases.push(case(&device_path, auth(), 200, false));
    // A HEAD asking for a stream gets the headers of the JSON list (or of GET /mcp without a stream) and opens none.
    for path in ["/v1/events", "/mcp"] {
        let status = if path == "/mcp" { 405 } else { 200 };
        cases.push(Case { path, headers: auth(), head_headers: vec![sse], status, exact: path == "/mcp" });
    }

    // HTTP/1.1, by hand on the loopback listener: one connection for everything, so every HEAD is followed by
    // another request on the same connection, which must find its answer right after the HEAD's headers.
    let mut raw = Raw::connect(&gw.local);
    let mut local_cases: Vec<&Case> = cases.iter().collect();
    let metrics_local = case("/v1/metrics", vec![], 200, false); // no token on loopback
    local_cases.push(&metrics_local);
    for c in &local_cases {
        let what = format!("HTTP/1.1 {} {:?}", c.path, c.headers.iter().map(|h| h.0).collect::<Vec<_>>());
        let get = raw.exchange("GET", c.path, &c.headers);
        assert_eq!(get.status, c.status, "{what}: GET {}", String::from_utf8_lossy(&get.body));
        let head_headers: Vec<_> = c.headers.iter().chain(&c.head_headers).copied().collect();
        let head = raw.exchange("HEAD", c.path, &head_headers);
        assert_head_matches_get(&what, &get, &head, c.exact);
        if !c.head_headers.is_empty() {
            assert_eq!(head.headers["content-type"], "application/json", "{what}: not a stream");
        }
    }
    assert_eq!(raw.exchange("GET", "/healthz", &[]).status, 200, "the connection is still usable");

    // HTTP/1.1 and HTTP/2 over TLS (metrics need a token there).
    let mut lan_cases: Vec<&Case> = cases.iter().collect();
    let metrics_lan = [case("/v1/metrics", vec![], 401, true), case("/v1/metrics", auth(), 200, false)];
    lan_cases.extend(&metrics_lan);
    for c in &lan_cases {
        let head_headers: Vec<_> = c.headers.iter().chain(&c.head_headers).copied().collect();
        let names = c.headers.iter().map(|h| h.0).collect::<Vec<_>>();

        let what = format!("HTTP/1.1 over TLS {} {names:?}", c.path);
        let get = tls_h1(&agent, &gw, false, c.path, &c.headers);
        assert_eq!(get.status, c.status, "{what}: GET");
        let head = tls_h1(&agent, &gw, true, c.path, &head_headers);
        assert_head_matches_get(&what, &get, &head, c.exact);
        assert_eq!(head.headers["strict-transport-security"], "max-age=31536000", "{what}");

        let what = format!("HTTP/2 {} {names:?}", c.path);
        let get = curl(&gw, false, c.path, &c.headers);
        assert_eq!(get.status, c.status, "{what}: GET {}", String::from_utf8_lossy(&get.body));
        let head = curl(&gw, true, c.path, &head_headers);
        assert_head_matches_get(&what, &get, &head, c.exact);
        if !c.head_headers.is_empty() {
            assert_eq!(head.headers["content-type"], "application/json", "{what}: not a stream");
        }
    }
}
