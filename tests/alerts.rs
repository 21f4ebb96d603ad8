//! Alerts end to end: the real daemon (`serve`) against the in-process simulator, telling real receivers
//! that the test starts on ephemeral loopback ports and can stop and start again on the same port:
//!
//! - e-mail: Python's aiosmtpd with STARTTLS and AUTH required (`support::SmtpSink`);
//! - Slack, Teams and the signed webhook: one HTTP receiver that checks each payload's shape and the webhook's
//!   HMAC-SHA256 over the raw body;
//! - syslog on UDP, TCP and TLS: every line checked as RFC 5424 (`<PRI>1 TIMESTAMP HOST xyte-edge …`, facility
//!   local0), TCP and TLS framed by octet counting (RFC 6587).
//!
//! What is checked: an offline device is told once per channel and its return once (counted at the receivers and in
//! `list_alerts`' deliveries, with the `alert.firing` / `alert.resolved` events and the metrics); 200 devices going
//! dark together are one grouped message per channel; a silence keeps an alert quiet until it ends, then it is told
//! once (and one that resolved meanwhile never); a receiver that is down gets the message once when it is back, also
//! across a SIGKILL of the daemon; a broken alerts file (check-config, serve) and an unreachable mail server; an
//! event rule (an incident opened) and a gateway-wide one (Xyte unreachable) added by SIGHUP; a channel's hourly budget;
//! a message acknowledged while the store refuses writes is not sent again.
//!
//! Nothing sleeps to synchronise: every wait polls with a deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use support::SmtpSink;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use xyte_edge::sim::{self, SimHandle, SimOptions};

mod support;

const SITE: &str = "test-site";
const HOOK_SECRET: &str = "alert-hook-secret-0123";
const SMTP_USER: &str = "gateway";
const SMTP_PASSWORD: &str = "s3cret-smtp";
const MAIL_FROM: &str = "xyte-edge@example.com";
const MAIL_TO: [&str; 2] = ["av@example.com", "facilities@example.com"];
/// Every channel the receivers serve, by its name in the alerts file.
const CHANNELS: [&str; 7] = ["mail", "slack", "teams", "hook", "syslog-udp", "syslog-tcp", "syslog-tls"];
const SYSLOG: [&str; 3] = ["syslog-udp", "syslog-tcp", "syslog-tls"];
/// The channels served by the HTTP receiver.
const HTTP: [&str; 3] = ["slack", "teams", "hook"];

// ------------------------------------------------------------------------------------------------------------------
// Time and waiting
// ------------------------------------------------------------------------------------------------------------------

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Unix ms of an RFC 3339 text, or a panic naming what it was.
fn ms(v: &Value) -> i64 {
    let text = v.as_str().unwrap_or_else(|| panic!("expected an RFC 3339 time, got {v}"));
    let t = OffsetDateTime::parse(text, &Rfc3339).unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"));
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Polls `check` every `every` until it returns `Ok`; after `timeout` panics with `what` and the last `Err` (what was
/// seen instead).
fn wait_for<T>(what: &str, timeout: Duration, every: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return v,
            Err(seen) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen:\n{seen}")
            }
            Err(_) => std::thread::park_timeout(every),
        }
    }
}

/// Polls the wall clock until Unix ms `t` has passed.
fn wait_past(t: i64) {
    let left = Duration::from_millis((t - now_ms()).max(0) as u64);
    wait_for(&format!("the wall clock to pass {t}"), left + Duration::from_secs(5), Duration::from_millis(20), || {
        if now_ms() > t { Ok(()) } else { Err(format!("now {}", now_ms())) }
    })
}

// ------------------------------------------------------------------------------------------------------------------
// What the receivers got
// ------------------------------------------------------------------------------------------------------------------

/// One message as a receiver got it.
#[derive(Debug, Clone)]
struct Msg {
    /// The alert channel it came on (a name of `CHANNELS`).
    channel: &'static str,
    /// When it arrived (Unix ms).
    at: i64,
    /// `firing` or `resolved`, as the message says (`?` when it does not say).
    status: String,
    /// What people see as the title (e-mail subject, chat text, card title, webhook title); for syslog the MSG part.
    title: String,
    /// The rest for people: the e-mail body, Slack's section, the card's second block.
    body: String,
    /// The subject keys the message names, where its format carries them (webhook, syslog).
    keys: Vec<String>,
    /// The webhook's JSON body; syslog's structured-data parameters; the sink's JSON line for e-mail.
    json: Value,
    /// The connection it came on (syslog over TCP and TLS: one per batch), else 0.
    conn: u64,
    /// What the receiver found wrong with it (shape, signature, framing, RFC 5424); must stay empty.
    problems: Vec<String>,
}

impl std::fmt::Display for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} at {} conn {} {:?} keys {:?}",
            self.channel, self.status, self.at, self.conn, self.title, self.keys
        )?;
        if !self.problems.is_empty() {
            write!(f, " PROBLEMS {:?}", self.problems)?;
        }
        Ok(())
    }
}

type Inbox = Arc<Mutex<Vec<Msg>>>;

fn summary(msgs: &[Msg]) -> String {
    if msgs.is_empty() {
        return "(no messages)".into();
    }
    // Syslog of a big group is hundreds of lines: counted, and the first few shown.
    let mut out: Vec<String> = vec![];
    let tally = tally(msgs);
    out.push(format!("counts (channel, status): {tally:?}"));
    out.extend(msgs.iter().take(40).map(|m| m.to_string()));
    if msgs.len() > 40 {
        out.push(format!("… and {} more", msgs.len() - 40));
    }
    out.join("\n")
}

/// Messages (for syslog: lines) per (channel, status).
fn tally(msgs: &[Msg]) -> BTreeMap<(String, String), usize> {
    let mut out = BTreeMap::new();
    for m in msgs {
        *out.entry((m.channel.to_string(), m.status.clone())).or_insert(0) += 1;
    }
    out
}

fn count(msgs: &[Msg], channel: &str, status: &str) -> usize {
    msgs.iter().filter(|m| m.channel == channel && m.status == status).count()
}

/// `[resolved] …` is a resolve; `[warning] …` (any severity) a firing.
fn status_of_title(title: &str) -> String {
    if title.starts_with("[resolved] ") {
        "resolved".into()
    } else if ["[info] ", "[warning] ", "[critical] "].iter().any(|t| title.starts_with(t)) {
        "firing".into()
    } else {
        "?".into()
    }
}

// ------------------------------------------------------------------------------------------------------------------
// TCP receivers that stop and start again on the same port
// ------------------------------------------------------------------------------------------------------------------

/// What a TCP receiver does with each connection (the stream and the connection's number).
type Handler = Arc<dyn Fn(TcpStream, u64) + Send + Sync>;

/// A loopback TCP listener on a port reserved at creation; each connection is handled on its own thread. Not
/// listening until `start`; `stop` closes the port (connections are refused) and `start` opens it again.
///
/// While it does not listen, the port stays bound (`reserved`). A port merely remembered can be taken meanwhile, e.g.
/// as the source port of an outgoing connection (the daemon's retries to this very port draw theirs from the same
/// range): CI once saw "Address already in use" for the whole 10 s wait. The kernel never hands out a bound port as a
/// source port, and a bound socket that does not listen refuses connections, as a stopped receiver should.
struct TcpServer {
    port: u16,
    reserved: Option<std::os::fd::OwnedFd>,
    handler: Handler,
    conns: Arc<AtomicU64>,
    running: Option<Running>,
}

/// A TCP socket bound to 127.0.0.1:`port` (0: any free one), not listening.
fn bound_socket(port: u16) -> nix::Result<std::os::fd::OwnedFd> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, setsockopt, socket, sockopt};
    use std::os::fd::AsRawFd;
    let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    // Bindable again right after `stop`, whatever connections of the last listener wait in TIME_WAIT.
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    bind(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, port))?;
    Ok(fd)
}

impl TcpServer {
    fn new(handler: Handler) -> TcpServer {
        use std::os::fd::AsRawFd;
        let fd = bound_socket(0).expect("a free loopback port");
        let addr: nix::sys::socket::SockaddrIn = nix::sys::socket::getsockname(fd.as_raw_fd()).unwrap();
        let (port, reserved) = (addr.port(), Some(fd));
        TcpServer { port, reserved, handler, conns: Arc::new(AtomicU64::new(0)), running: None }
    }

    /// Binds the port again after `stop` (only the last listener's thread held it in between).
    fn reserve(&mut self) -> std::os::fd::OwnedFd {
        let port = self.port;
        self.reserved.take().unwrap_or_else(|| {
            wait_for(&format!("port {port} to bind"), Duration::from_secs(10), Duration::from_millis(20), || {
                bound_socket(port).map_err(|e| e.to_string())
            })
        })
    }

    fn start(&mut self) {
        assert!(self.running.is_none(), "port {} listens already", self.port);
        let fd = self.reserve();
        nix::sys::socket::listen(&fd, nix::sys::socket::Backlog::new(128).unwrap())
            .unwrap_or_else(|e| panic!("cannot listen on port {}: {e}", self.port));
        let listener = TcpListener::from(fd);
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, handler, conns) = (stop.clone(), self.handler.clone(), self.conns.clone());
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
                        let n = conns.fetch_add(1, Ordering::SeqCst) + 1;
                        let handler = handler.clone();
                        std::thread::spawn(move || handler(stream, n));
                    }
                    // Nothing to accept: look again shortly (and at the stop flag).
                    Err(_) => std::thread::park_timeout(Duration::from_millis(10)),
                }
            }
        });
        self.running = Some(Running(stop, Some(thread)));
    }

    fn stop(&mut self) {
        self.running = None;
        self.reserved = Some(self.reserve());
    }
}

/// A receiver's accepting thread and the flag that stops it: stopped and joined when dropped (with its server).
struct Running(Arc<AtomicBool>, Option<JoinHandle<()>>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
        if let Some(thread) = self.1.take() {
            let _ = thread.join();
        }
    }
}

/// A loopback UDP socket whose datagrams are syslog lines; started as [`TcpServer`].
struct UdpServer {
    port: u16,
    inbox: Inbox,
    running: Option<Running>,
}

impl UdpServer {
    fn new(inbox: Inbox) -> UdpServer {
        let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        UdpServer { port, inbox, running: None }
    }

    fn start(&mut self) {
        assert!(self.running.is_none(), "UDP port {} is open already", self.port);
        let port = self.port;
        let socket = wait_for(&format!("UDP port {port}"), Duration::from_secs(10), Duration::from_millis(20), || {
            UdpSocket::bind(("127.0.0.1", port)).map_err(|e| e.to_string())
        });
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        // A group of 200 is 200 datagrams at once: room for them in the kernel, and a loop that only receives (lines
        // are checked on another thread), so none is dropped here.
        let _ = nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::RcvBuf, &(4 << 20));
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, inbox) = (stop.clone(), self.inbox.clone());
        let (tx, datagrams) = std::sync::mpsc::channel::<(i64, Vec<u8>)>();
        std::thread::spawn(move || {
            for (at, bytes) in datagrams {
                let mut m = syslog_msg("syslog-udp", &String::from_utf8_lossy(&bytes), 0);
                m.at = at;
                if std::str::from_utf8(&bytes).is_err() {
                    m.problems.push("the datagram is not UTF-8".into());
                }
                inbox.lock().unwrap().push(m);
            }
        });
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !flag.load(Ordering::SeqCst) {
                if let Ok(n) = socket.recv(&mut buf) {
                    let _ = tx.send((now_ms(), buf[..n].to_vec()));
                }
            }
        });
        self.running = Some(Running(stop, Some(thread)));
    }
}

// ------------------------------------------------------------------------------------------------------------------
// HTTP: Slack, Teams, the signed webhook
// ------------------------------------------------------------------------------------------------------------------

/// Reads one HTTP request, answers 200, and checks the payload by path: `/slack/…` (`text` and `blocks`), `/teams/…`
/// (a message with one Adaptive Card), `/hook` (JSON signed in `X-Signature-256` with [`HOOK_SECRET`]).
fn http_handler(inbox: Inbox) -> Handler {
    Arc::new(move |stream, _| {
        if let Some(m) = http_request(stream) {
            inbox.lock().unwrap().push(m);
        }
    })
}

fn http_request(stream: TcpStream) -> Option<Msg> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).ok()? == 0 {
        return None;
    }
    let mut headers: Vec<(String, String)> = vec![];
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let mut problems = vec![];
    let len: usize = match header("content-length").and_then(|l| l.parse().ok()) {
        Some(l) => l,
        None => {
            problems.push(format!("no Content-Length (headers {headers:?})"));
            0
        }
    };
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    let at = now_ms();
    let mut s = stream;
    let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
    let _ = s.flush();

    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or("").to_string());
    if method != "POST" {
        problems.push(format!("method {method}, not POST"));
    }
    if header("content-type").as_deref() != Some("application/json") {
        problems.push(format!("Content-Type {:?}", header("content-type")));
    }
    let json: Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
        problems.push(format!("the body is not JSON ({e}): {}", String::from_utf8_lossy(&body)));
        Value::Null
    });
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let (channel, title, text_body, keys, status) = if path.starts_with("/slack/") {
        if !json["text"].is_string() {
            problems.push("Slack: no `text`".into());
        }
        let blocks = json["blocks"].as_array().cloned().unwrap_or_default();
        if blocks.is_empty() {
            problems.push("Slack: no `blocks`".into());
        }
        if blocks.first().map(|b| &b["type"]) != Some(&json!("header")) {
            problems.push("Slack: the first block is not a header".into());
        }
        if header("x-signature-256").is_some() {
            problems.push("a chat webhook is signed".into());
        }
        let title = text(&json["text"]);
        let status = status_of_title(&title);
        ("slack", title, text(&json["blocks"][1]["text"]["text"]), vec![], status)
    } else if path.starts_with("/teams/") {
        let attachments = json["attachments"].as_array().map(Vec::len).unwrap_or(0);
        let card = &json["attachments"][0];
        if json["type"] != "message" || attachments != 1 {
            problems.push("Teams: not a message with one attachment".into());
        }
        if card["contentType"] != "application/vnd.microsoft.card.adaptive" || card["content"]["type"] != "AdaptiveCard"
        {
            problems.push("Teams: the attachment is not an Adaptive Card".into());
        }
        let title = text(&card["content"]["body"][0]["text"]);
        let status = status_of_title(&title);
        ("teams", title, text(&card["content"]["body"][1]["text"]), vec![], status)
    } else if path == "/hook" {
        match header("x-signature-256").as_deref().and_then(|s| s.strip_prefix("sha256=")).map(unhex) {
            Some(Some(tag)) => {
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, HOOK_SECRET.as_bytes());
                if ring::hmac::verify(&key, &body, &tag).is_err() {
                    problems.push("the webhook's X-Signature-256 does not verify against the raw body".into());
                }
            }
            _ => problems.push(format!("the webhook is not signed `sha256=<hex>`: {:?}", header("x-signature-256"))),
        }
        let keys: Vec<String> =
            json["subjects"].as_array().map(|l| l.iter().map(|s| text(&s["key"])).collect()).unwrap_or_default();
        if json["count"].as_u64() != Some(keys.len() as u64) {
            problems.push(format!("webhook count {} for {} subjects", json["count"], keys.len()));
        }
        if json["site"] != SITE {
            problems.push(format!("webhook site {}", json["site"]));
        }
        ("hook", text(&json["title"]), String::new(), keys, text(&json["status"]))
    } else {
        problems.push(format!("unexpected path {path}"));
        ("hook", String::new(), String::new(), vec![], "?".into())
    };
    Some(Msg { channel, at, status, title, body: text_body, keys, json, conn: 0, problems })
}

fn unhex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

// ------------------------------------------------------------------------------------------------------------------
// Syslog: RFC 5424 lines, octet-counted on TCP and TLS
// ------------------------------------------------------------------------------------------------------------------

/// Checks one line as RFC 5424 from xyte-edge: `<PRI>1 TIMESTAMP HOST xyte-edge - ALERT [xyte-edge@32473 …] MSG` with
/// facility local0 (16) and the severity the parameters say (a resolve is a notice).
fn syslog_msg(channel: &'static str, line: &str, conn: u64) -> Msg {
    let mut problems = vec![];
    let mut params = serde_json::Map::new();
    let mut msg = String::new();
    match parse_5424(line, &mut params, &mut msg) {
        Ok(pri) => {
            if pri / 8 != 16 {
                problems.push(format!("facility {} (PRI {pri}), not local0 (16)", pri / 8));
            }
            let want =
                match (params.get("status").and_then(Value::as_str), params.get("severity").and_then(Value::as_str)) {
                    (Some("resolved"), _) => Some(5),
                    (Some("firing"), Some("critical")) => Some(2),
                    (Some("firing"), Some("warning")) => Some(4),
                    (Some("firing"), Some("info")) => Some(6),
                    _ => None,
                };
            if want != Some(pri % 8) {
                problems.push(format!("severity {} (PRI {pri}) for {params:?}", pri % 8));
            }
            if params.get("site") != Some(&json!(SITE)) {
                problems.push(format!("site {:?}", params.get("site")));
            }
        }
        Err(e) => problems.push(format!("not RFC 5424 from xyte-edge: {e}")),
    }
    let text = |k: &str| params.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    Msg {
        channel,
        at: now_ms(),
        status: params.get("status").and_then(Value::as_str).unwrap_or("?").to_string(),
        title: msg,
        body: line.to_string(),
        keys: params.get("subject").map(|_| vec![text("subject")]).unwrap_or_default(),
        json: Value::Object(params.clone()),
        conn,
        problems,
    }
}

/// The PRI of an RFC 5424 line from xyte-edge's alerts; fills the structured data's parameters and the MSG.
fn parse_5424(line: &str, params: &mut serde_json::Map<String, Value>, msg: &mut String) -> Result<u8, String> {
    let rest = line.strip_prefix('<').ok_or("no <PRI>")?;
    let (pri, rest) = rest.split_once('>').ok_or("no <PRI>")?;
    if pri.is_empty()
        || pri.len() > 3
        || !pri.bytes().all(|b| b.is_ascii_digit())
        || (pri.len() > 1 && pri.starts_with('0'))
    {
        return Err(format!("PRI {pri:?}"));
    }
    let pri: u8 = pri.parse().map_err(|_| format!("PRI {pri:?}"))?;
    let rest = rest.strip_prefix("1 ").ok_or("VERSION is not 1")?;
    let mut fields = rest.splitn(6, ' ');
    let mut field = |name: &str| fields.next().ok_or(format!("no {name}"));
    let timestamp = field("TIMESTAMP")?;
    OffsetDateTime::parse(timestamp, &Rfc3339).map_err(|e| format!("TIMESTAMP {timestamp:?}: {e}"))?;
    let host = field("HOSTNAME")?;
    if host.is_empty() || host.len() > 255 || !host.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("HOSTNAME {host:?}"));
    }
    let app = field("APP-NAME")?;
    if app != "xyte-edge" {
        return Err(format!("APP-NAME {app:?}"));
    }
    let (procid, msgid) = (field("PROCID")?, field("MSGID")?);
    if procid.is_empty() || msgid != "ALERT" {
        return Err(format!("PROCID {procid:?} MSGID {msgid:?}"));
    }
    let sd = field("STRUCTURED-DATA")?;
    let mut sd = sd.strip_prefix("[xyte-edge@32473").ok_or_else(|| format!("SD {sd:?}"))?;
    // PARAM-NAME="value" pairs; `"`, `\` and `]` are escaped with a backslash inside values.
    loop {
        if let Some(after) = sd.strip_prefix(']') {
            sd = after;
            break;
        }
        let after = sd.strip_prefix(' ').ok_or_else(|| format!("SD parameters at {sd:?}"))?;
        let (name, after) = after.split_once("=\"").ok_or_else(|| format!("SD parameter at {after:?}"))?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => value.push(chars.next().ok_or("an escape at the end")?.1),
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => return Err(format!("SD parameter {name} is not closed")),
            }
        };
        params.insert(name.to_string(), json!(value));
        sd = &after[end + 1..];
    }
    *msg = sd.strip_prefix(' ').ok_or("no MSG after the structured data")?.to_string();
    Ok(pri)
}

/// Reads a TCP (or TLS) syslog connection to its end and splits the octet-counted frames (RFC 6587: `<len> <msg>`).
fn frames(channel: &'static str, bytes: &[u8], conn: u64) -> Vec<Msg> {
    let mut out = vec![];
    let mut rest = bytes;
    while !rest.is_empty() {
        let bad = |why: String| {
            let mut m = syslog_msg(channel, "", conn);
            m.problems =
                vec![format!("octet counting: {why}; the connection's bytes: {:?}", String::from_utf8_lossy(bytes))];
            m
        };
        let Some(space) = rest.iter().position(|b| *b == b' ') else {
            out.push(bad("no length".into()));
            break;
        };
        let len = std::str::from_utf8(&rest[..space])
            .ok()
            .filter(|l| !l.starts_with('0'))
            .and_then(|l| l.parse::<usize>().ok());
        let Some(len) = len.filter(|l| space + 1 + l <= rest.len()) else {
            out.push(bad(format!("bad length {:?}", String::from_utf8_lossy(&rest[..space]))));
            break;
        };
        let frame = &rest[space + 1..space + 1 + len];
        match std::str::from_utf8(frame) {
            Ok(line) => out.push(syslog_msg(channel, line, conn)),
            Err(_) => out.push(bad("a frame is not UTF-8".into())),
        }
        rest = &rest[space + 1 + len..];
    }
    out
}

fn syslog_tcp_handler(inbox: Inbox) -> Handler {
    Arc::new(move |mut stream, conn| {
        let mut bytes = vec![];
        let read = stream.read_to_end(&mut bytes);
        // A connection that sends nothing is the daemon's reachability probe.
        if bytes.is_empty() {
            return;
        }
        let mut got = frames("syslog-tcp", &bytes, conn);
        if let (Err(e), Some(last)) = (read, got.last_mut()) {
            last.problems.push(format!("the connection ended with an error: {e}"));
        }
        inbox.lock().unwrap().extend(got);
    })
}

fn syslog_tls_handler(inbox: Inbox, config: Arc<rustls::ServerConfig>) -> Handler {
    Arc::new(move |stream, conn| {
        let mut tls = rustls::StreamOwned::new(rustls::ServerConnection::new(config.clone()).unwrap(), stream);
        let mut bytes = vec![];
        let read = tls.read_to_end(&mut bytes);
        // A probe connects and closes without a handshake; nothing was sent.
        if bytes.is_empty() {
            return;
        }
        let mut got = frames("syslog-tls", &bytes, conn);
        if let (Err(e), Some(last)) = (read, got.last_mut()) {
            last.problems.push(format!("the TLS stream ended with an error (no close_notify?): {e}"));
        }
        inbox.lock().unwrap().extend(got);
    })
}

fn tls_server_config(files: &support::TlsFiles) -> Arc<rustls::ServerConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(&files.cert).unwrap().collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(&files.key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    Arc::new(config)
}

// ------------------------------------------------------------------------------------------------------------------
// All receivers together
// ------------------------------------------------------------------------------------------------------------------

struct Receivers {
    inbox: Inbox,
    smtp: SmtpSink,
    http: TcpServer,
    udp: UdpServer,
    tcp: TcpServer,
    tls: TcpServer,
    smtp_ca: PathBuf,
    syslog_ca: PathBuf,
}

impl Receivers {
    /// Every receiver, listening.
    fn start(dir: &Path) -> Receivers {
        let mut rx = Receivers::ready(dir);
        rx.http.start();
        rx
    }

    /// Every receiver listening except the HTTP one (Slack, Teams, webhook), whose port refuses connections.
    fn ready(dir: &Path) -> Receivers {
        let inbox: Inbox = Arc::default();
        let smtp = SmtpSink::start(dir, SMTP_USER, SMTP_PASSWORD);
        let files = support::make_tls(dir, &["127.0.0.1", "localhost"]);
        let mut rx = Receivers {
            smtp,
            http: TcpServer::new(http_handler(inbox.clone())),
            udp: UdpServer::new(inbox.clone()),
            tcp: TcpServer::new(syslog_tcp_handler(inbox.clone())),
            tls: TcpServer::new(syslog_tls_handler(inbox.clone(), tls_server_config(&files))),
            smtp_ca: SmtpSink::ca(dir),
            syslog_ca: files.ca.clone(),
            inbox,
        };
        rx.udp.start();
        rx.tcp.start();
        rx.tls.start();
        rx
    }

    /// The alerts file's `channels`, one per receiver (names as in [`CHANNELS`]).
    fn channels(&self) -> Value {
        let http = format!("http://127.0.0.1:{}", self.http.port);
        json!({
            "mail": {"type": "email", "url": format!("smtp://localhost:{}", self.smtp.port), "username": SMTP_USER,
                     "password": SMTP_PASSWORD, "from": MAIL_FROM, "to": MAIL_TO, "ca_file": self.smtp_ca},
            "slack": {"type": "slack", "url": format!("{http}/slack/services/T0/B0/XYZ")},
            "teams": {"type": "teams", "url": format!("{http}/teams/webhookb2/abc")},
            "hook": {"type": "webhook", "url": format!("{http}/hook"), "secret": HOOK_SECRET},
            "syslog-udp": {"type": "syslog", "url": format!("udp://127.0.0.1:{}", self.udp.port)},
            "syslog-tcp": {"type": "syslog", "url": format!("tcp://127.0.0.1:{}", self.tcp.port)},
            "syslog-tls": {"type": "syslog", "url": format!("tls://127.0.0.1:{}", self.tls.port),
                           "ca_file": self.syslog_ca},
        })
    }

    /// Every message so far, in arrival order per receiver (mails taken from the sink as they come).
    fn messages(&self) -> Vec<Msg> {
        let mut inbox = self.inbox.lock().unwrap();
        while let Ok(v) = self.smtp.lines.try_recv() {
            inbox.push(mail_msg(v));
        }
        let mut all = inbox.clone();
        all.sort_by_key(|m| m.at);
        all
    }

    /// Waits until `done` holds for the messages so far; returns them.
    fn wait(&self, what: &str, timeout: Duration, done: impl Fn(&[Msg]) -> bool) -> Vec<Msg> {
        wait_for(what, timeout, Duration::from_millis(20), || {
            let msgs = self.messages();
            if done(&msgs) { Ok(msgs) } else { Err(summary(&msgs)) }
        })
    }

    /// Waits until each of `channels` got at least `n` messages (syslog: lines) of `status`.
    fn wait_each(&self, channels: &[&str], status: &str, n: usize, timeout: Duration) -> Vec<Msg> {
        self.wait(&format!("{n} {status} message(s) on each of {channels:?}"), timeout, |msgs| {
            channels.iter().all(|c| count(msgs, c, status) >= n)
        })
    }
}

/// A message as the SMTP sink reported it; the envelope is checked here (the same for every test).
fn mail_msg(v: Value) -> Msg {
    let mut problems = vec![];
    if v["user"] != SMTP_USER {
        problems.push(format!("not authenticated as {SMTP_USER} after STARTTLS: user {}", v["user"]));
    }
    if v["mail_from"] != MAIL_FROM || v["rcpt_tos"] != json!(MAIL_TO) {
        problems.push(format!("envelope from {} to {}", v["mail_from"], v["rcpt_tos"]));
    }
    let title = v["subject"].as_str().unwrap_or_default().to_string();
    let body = v["body"].as_str().unwrap_or_default().replace("\r\n", "\n");
    if title.is_empty() || body.is_empty() {
        problems.push(format!("no readable subject or plain-text body: {}", v["data"]));
    }
    let at = (v["at"].as_f64().unwrap_or(0.0) * 1000.0) as i64;
    Msg { channel: "mail", at, status: status_of_title(&title), title, body, keys: vec![], json: v, conn: 0, problems }
}

fn assert_no_problems(msgs: &[Msg]) {
    let bad: Vec<String> = msgs.iter().filter(|m| !m.problems.is_empty()).map(|m| m.to_string()).collect();
    assert!(bad.is_empty(), "the receivers found these messages wrong:\n{}", bad.join("\n"));
}

/// Checks every message of one device's alert: the title (and syslog line) names the device, its space and the rule,
/// keys name the device, bodies list it.
fn check_device_messages(msgs: &[Msg], rule: &str, d: &Device, status: &str) {
    let tag = if status == "firing" { "[warning]" } else { "[resolved]" };
    let title = format!("{tag} {}: {rule} ({}) — site {SITE}", d.name, d.space);
    let line = format!("- {} ({})", d.name, d.space);
    for m in msgs.iter().filter(|m| m.status == status) {
        if SYSLOG.contains(&m.channel) {
            assert_eq!(m.title, format!("{rule}: {} {status} ({})", d.name, d.space), "{m}");
            assert_eq!((m.json["rule"].as_str(), m.json["severity"].as_str()), (Some(rule), Some("warning")), "{m}");
        } else {
            assert_eq!(m.title, title, "{m}");
        }
        if m.channel == "hook" || SYSLOG.contains(&m.channel) {
            assert_eq!(m.keys, std::slice::from_ref(&d.id), "{m}");
        }
        match m.channel {
            "mail" => {
                let state = if status == "firing" { "is firing" } else { "has resolved" };
                let head = format!("Rule {rule} {state} on the xyte-edge gateway of site {SITE}.");
                assert!(m.body.starts_with(&head) && m.body.contains(&line), "{m}\nbody:\n{}", m.body);
            }
            "slack" | "teams" => assert!(m.body.contains(&line), "{m}\nbody: {}", m.body),
            "hook" => {
                let w = &m.json;
                assert_eq!(
                    (w["rule"].as_str(), w["severity"].as_str(), w["count"].as_u64()),
                    (Some(rule), Some("warning"), Some(1)),
                    "{w}"
                );
                assert_eq!(w["subjects"][0], json!({"key": d.id, "label": d.name, "space": d.space}), "{w}");
            }
            _ => {}
        }
    }
}

// ------------------------------------------------------------------------------------------------------------------
// The simulator and the daemon
// ------------------------------------------------------------------------------------------------------------------

/// The simulator in this process, on its own runtime; every device held online (none fires by itself).
struct Xyte {
    sim: SimHandle,
    _rt: tokio::runtime::Runtime,
}

#[derive(Debug, Clone)]
struct Device {
    id: String,
    name: String,
    space: String,
}

impl Xyte {
    fn start(devices: usize) -> Xyte {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let opts = SimOptions { devices, churn: false, seed: 1, ..Default::default() };
        let sim = rt.block_on(sim::spawn("127.0.0.1:0".parse().unwrap(), opts)).expect("simulator starts");
        let xyte = Xyte { sim, _rt: rt };
        for id in xyte.sim.sim.device_ids() {
            xyte.set(&id, "online");
        }
        xyte
    }

    fn devices(&self) -> Vec<Device> {
        self.sim
            .sim
            .device_ids()
            .into_iter()
            .map(|id| {
                let d = self.sim.sim.device(&id).unwrap();
                let text = |v: &Value| v.as_str().unwrap_or_else(|| panic!("device {id}: {d}")).to_string();
                Device { name: text(&d["name"]), space: text(&d["space"]["full_path"]), id }
            })
            .collect()
    }

    /// Sets a device's status and holds it there.
    fn set(&self, id: &str, status: &str) {
        assert!(self.sim.sim.set_device_status(id, status), "the simulator has no device {id}");
    }
}

/// The signed webhook channel of a test's own HTTP receiver.
fn hook_channel(http: &TcpServer) -> Value {
    json!({"type": "webhook", "url": format!("http://127.0.0.1:{}/hook", http.port), "secret": HOOK_SECRET})
}

/// A device-offline rule for the tests: 3 s, one-second group window.
fn offline_rule(name: &str, channels: &[&str]) -> Value {
    json!({"name": name, "condition": "device_offline", "for": "3s", "group_window": "1s", "channels": channels})
}

fn write_alerts(dir: &Path, file: &Value) -> PathBuf {
    let path = dir.join("alerts.json");
    std::fs::write(&path, serde_json::to_string_pretty(file).unwrap()).unwrap();
    path
}

/// The real daemon on a state directory that outlives it (a restart uses the same one and the same settings).
struct Edge {
    dir: PathBuf,
    base_url: String,
    api_key: String,
    daemon: support::Daemon,
    /// `127.0.0.1:port` of the loopback REST listener.
    http: String,
}

impl Edge {
    fn command(dir: &Path, base_url: &str, api_key: &str) -> std::process::Command {
        let mut cmd = support::bin();
        cmd.env("XYTE_STATE_DIR", dir.join("state"))
            .env("XYTE_MCP_SOCKET", dir.join("mcp.sock"))
            .env("XYTE_PRESETS_FILE", dir.join("presets.json"))
            .env("XYTE_ALERTS_FILE", dir.join("alerts.json"))
            .env("XYTE_HTTP_LISTEN", "")
            .env("XYTE_HTTP_LOCAL_LISTEN", "127.0.0.1:0")
            .env("XYTE_BASE_URL", base_url)
            .env("XYTE_API_KEY", api_key)
            .env("XYTE_POLL_INTERVAL", "1s")
            .env("XYTE_RATE_LIMIT", "6000")
            .env("XYTE_REQUEST_TIMEOUT", "5s")
            .env("XYTE_SITE", SITE)
            .env("XYTE_LOG_FORMAT", "text");
        cmd
    }

    /// Starts `serve` with the alerts file at `dir/alerts.json`; returns once it serves and has synced once.
    fn start(dir: &Path, xyte: &Xyte) -> Edge {
        let (base_url, api_key) = (xyte.sim.base_url(), xyte.sim.sim.api_key().to_string());
        let daemon = Edge::spawn(dir, &base_url, &api_key);
        let mut edge = Edge { dir: dir.to_path_buf(), base_url, api_key, daemon, http: String::new() };
        edge.ready();
        edge
    }

    fn spawn(dir: &Path, base_url: &str, api_key: &str) -> support::Daemon {
        let mut cmd = Edge::command(dir, base_url, api_key);
        cmd.arg("serve");
        support::Daemon::spawn(cmd)
    }

    fn ready(&mut self) {
        self.daemon.wait_line("ready: ", Duration::from_secs(30));
        let line = self.daemon.wait_line("HTTP listener ready", Duration::from_secs(5));
        let addr = line.split("addr=").nth(1).and_then(|r| r.split_whitespace().next()).expect("addr= in the line");
        self.http = addr.to_string();
        // The first sync: the cache holds every device (online) before a test changes one.
        self.daemon.wait_line("Xyte reachable", Duration::from_secs(30));
    }

    /// SIGKILL, and the exit.
    fn kill(&mut self) {
        self.daemon.signal(nix::sys::signal::Signal::SIGKILL);
        self.daemon.wait_exit(Duration::from_secs(10));
    }

    /// Starts the daemon again on the same state directory (the previous process must have exited).
    fn restart(&mut self) {
        assert!(self.daemon.exit_code.is_some(), "restart while the previous daemon still runs");
        self.daemon = Edge::spawn(&self.dir, &self.base_url, &self.api_key);
        self.ready();
    }

    fn mcp(&self) -> support::Mcp {
        support::Mcp::connect(&self.dir.join("mcp.sock"))
    }

    /// A LAN token, made with `xyte-edge token create` as an admin would.
    fn token(&self, name: &str, role: &str) -> String {
        support::create_token(&self.dir.join("state"), name, role)
    }

    /// (status, body) of a request on the loopback listener; with `token` as Bearer.
    fn rest(&self, token: Option<&str>, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let url = format!("http://{}{path}", self.http);
        let auth = token.map(|t| format!("Bearer {t}"));
        let resp = match method {
            "GET" => {
                let mut r = agent.get(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            _ => {
                let mut r = agent.post(&url).header("Content-Type", "application/json");
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.send(body.unwrap_or(json!({})).to_string())
            }
        };
        let mut resp = resp.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        (resp.status().as_u16(), resp.body_mut().read_to_string().unwrap_or_default())
    }

    fn rest_json(&self, token: Option<&str>, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let (status, text) = self.rest(token, method, path, body);
        (status, serde_json::from_str(&text).unwrap_or(json!({"not_json": text})))
    }
}

// ------------------------------------------------------------------------------------------------------------------
// list_alerts and the event log
// ------------------------------------------------------------------------------------------------------------------

fn list_alerts(mcp: &mut support::Mcp, args: Value) -> Value {
    mcp.call("list_alerts", args).unwrap_or_else(|e| panic!("list_alerts: {e}"))
}

/// The alert of `rule` about `key` in a `list_alerts` answer.
fn alert_in<'a>(list: &'a Value, rule: &str, key: &str) -> Option<&'a Value> {
    list["alerts"].as_array()?.iter().find(|a| a["rule"] == rule && a["subject"]["key"] == key)
}

/// Polls `list_alerts` (all states) until the alert of `rule` about `key` satisfies `done`; returns it.
fn wait_alert(
    mcp: &mut support::Mcp,
    what: &str,
    rule: &str,
    key: &str,
    timeout: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    wait_for(what, timeout, Duration::from_millis(200), || {
        let list = list_alerts(mcp, json!({"rule": rule}));
        match alert_in(&list, rule, key) {
            Some(a) if done(a) => Ok(a.clone()),
            _ => Err(serde_json::to_string_pretty(&list).unwrap()),
        }
    })
}

/// The alert's deliveries to `channel` of `kind` (`firing` or `resolved`).
fn deliveries<'a>(alert: &'a Value, channel: &str, kind: &str) -> Vec<&'a Value> {
    let all = alert["deliveries"].as_array().map(|l| l.iter().collect::<Vec<_>>()).unwrap_or_default();
    all.into_iter().filter(|d| d["channel"] == channel && d["kind"] == kind).collect()
}

/// Waits until `list_alerts`' message counts say `sent` messages were sent, none pending and none given up.
fn wait_all_sent(mcp: &mut support::Mcp, sent: u64, timeout: Duration) {
    let want = json!({"pending": 0, "sent": sent, "given_up": 0});
    wait_for(&format!("list_alerts' deliveries to be {want}"), timeout, Duration::from_millis(200), || {
        let got = list_alerts(mcp, json!({}))["deliveries"].clone();
        if got == want { Ok(()) } else { Err(got.to_string()) }
    })
}

/// One line per delivery of an alert, for failure messages.
fn delivery_lines(alert: &Value) -> String {
    let list = alert["deliveries"].as_array().cloned().unwrap_or_default();
    let lines: Vec<String> = list
        .iter()
        .map(|d| format!("  #{} {} {} {} attempts {}", d["id"], d["channel"], d["kind"], d["state"], d["attempts"]))
        .collect();
    format!("{} deliveries:\n{}", list.len(), lines.join("\n"))
}

/// The alert's deliveries as `list_alerts` documents them: every message about it, here exactly one `firing` and one
/// `resolved` to each of `channels`, all sent. The tests check this once the message counts say all were sent.
fn assert_deliveries_listed(mcp: &mut support::Mcp, rule: &str, key: &str, channels: &[&str]) {
    let list = list_alerts(mcp, json!({"rule": rule}));
    let alert = alert_in(&list, rule, key).unwrap_or_else(|| panic!("list_alerts has no alert {rule}/{key}: {list:#}"));
    let mut got: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for d in alert["deliveries"].as_array().cloned().unwrap_or_default() {
        let k = (d["channel"].as_str().unwrap_or("?").to_string(), d["kind"].as_str().unwrap_or("?").to_string());
        got.entry(k).or_default().push(d["state"].as_str().unwrap_or("?").to_string());
    }
    let want: BTreeMap<(String, String), Vec<String>> = channels
        .iter()
        .flat_map(|c| ["firing", "resolved"].map(|k| ((c.to_string(), k.to_string()), vec!["sent".to_string()])))
        .collect();
    assert_eq!(
        got,
        want,
        "list_alerts {{\"rule\": {rule:?}}}: the alert's deliveries should be one firing and one resolved message per \
         channel ({} in all), all sent; got {}",
        want.len(),
        delivery_lines(alert)
    );
}

/// After `d` came back: no receiver holds a bad message, and every channel got exactly one firing and one resolve
/// message about it, as `list_alerts` records them.
fn assert_told_once_and_resolved_once(rx: &Receivers, mcp: &mut support::Mcp, d: &Device) {
    let msgs = rx.messages();
    assert_no_problems(&msgs);
    check_device_messages(&msgs, "offline", d, "resolved");
    for c in CHANNELS {
        assert_eq!((count(&msgs, c, "firing"), count(&msgs, c, "resolved")), (1, 1), "{c}:\n{}", summary(&msgs));
    }
    assert_eq!(msgs.len(), 14, "{}", summary(&msgs));
    assert_deliveries_listed(mcp, "offline", &d.id, &CHANNELS);
}

/// A gauge's value in the Prometheus text of `/v1/metrics`.
fn gauge(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

// ------------------------------------------------------------------------------------------------------------------
// 0. The receivers themselves: they take what the gateway's senders send, and catch what is wrong
// ------------------------------------------------------------------------------------------------------------------

#[test]
fn the_receivers_accept_the_senders_messages_catch_bad_ones_and_restart_on_their_port() {
    use xyte_edge::alerts::message::{self, Context};
    use xyte_edge::alerts::{Notification, Subject};
    use xyte_edge::channels::email::{EmailSender, Server};
    use xyte_edge::channels::http::HttpSender;
    use xyte_edge::channels::syslog::Syslog;
    use xyte_edge::config::Secret;
    use xyte_edge::config::alerts::{Severity, SmtpTls, SyslogTransport};

    let dir = tempfile::tempdir().unwrap();
    let mut rx = Receivers::start(dir.path());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let subject = |i: usize| Subject {
        key: format!("d{i}"),
        label: format!("Display {i}"),
        space: Some(format!("HQ/Floor 3/Room {i}")),
    };
    let n =
        Notification { rule: "r".into(), kind: "firing", subjects: (0..3).map(subject).collect(), first_at: now_ms() };
    let ctx = Context { site: SITE, severity: Severity::Warning };
    let lines = message::syslog(&n, ctx, "gw", "2026-12-01T00:00:00Z");
    let syslog = |t, port, ca: Option<&Path>| Syslog::new(t, "127.0.0.1", port, ca).unwrap();
    let (udp, tcp, tls) = (
        syslog(SyslogTransport::Udp, rx.udp.port, None),
        syslog(SyslogTransport::Tcp, rx.tcp.port, None),
        syslog(SyslogTransport::Tls, rx.tls.port, Some(&rx.syslog_ca)),
    );
    let http = HttpSender::default();
    let base = format!("http://127.0.0.1:{}", rx.http.port);
    let body = |v: Value| serde_json::to_vec(&v).unwrap();
    let password = Secret::new(SMTP_PASSWORD.to_string());
    let to: Vec<String> = MAIL_TO.iter().map(|a| a.to_string()).collect();
    let mail = |port| {
        let server = Server {
            host: "localhost",
            port,
            tls: SmtpTls::StartTls,
            username: Some(SMTP_USER),
            password: Some(&password),
            ca_file: Some(&rx.smtp_ca),
        };
        EmailSender::new(server, MAIL_FROM, &to).unwrap()
    };
    let (subject_line, text) = message::email(&n, ctx);
    rt.block_on(async {
        mail(rx.smtp.port).send(&subject_line, &text).await.unwrap();
        udp.send(&lines).await.unwrap();
        tcp.send(&lines).await.unwrap();
        tls.send(&lines).await.unwrap();
        http.post(&format!("{base}/slack/services/T0/B0/X"), body(message::slack(&n, ctx)), None).await.unwrap();
        http.post(&format!("{base}/teams/webhookb2/x"), body(message::teams(&n, ctx)), None).await.unwrap();
        http.post(&format!("{base}/hook"), body(message::webhook(&n, ctx)), Some(HOOK_SECRET)).await.unwrap();
    });
    let msgs =
        rx.wait("one message on mail and each HTTP channel, 3 lines on each syslog", Duration::from_secs(10), |m| {
            ["mail", "slack", "teams", "hook"].iter().all(|c| count(m, c, "firing") == 1)
                && SYSLOG.iter().all(|c| count(m, c, "firing") == 3)
        });
    assert_no_problems(&msgs);
    let keys: Vec<String> = (0..3).map(|i| format!("d{i}")).collect();
    for c in SYSLOG {
        let got: Vec<String> = msgs.iter().filter(|m| m.channel == c).flat_map(|m| m.keys.clone()).collect();
        assert_eq!(got, keys, "{c}");
    }
    let title = message::title(&n, ctx);
    for c in ["mail", "slack", "teams", "hook"] {
        assert_eq!(msgs.iter().find(|m| m.channel == c).unwrap().title, title, "{c}");
    }
    let got = msgs.iter().find(|m| m.channel == "mail").unwrap();
    assert_eq!(got.body.trim_end(), text.trim_end(), "the mail's body as the sink decoded it");

    // What is wrong is caught: a signature made with another secret, broken framing, another facility.
    rt.block_on(async {
        http.post(&format!("{base}/hook"), body(message::webhook(&n, ctx)), Some("another-secret")).await.unwrap();
    });
    let mut raw = TcpStream::connect(("127.0.0.1", rx.tcp.port)).unwrap();
    let user_facility = lines[0].replacen("<132>", "<12>", 1);
    write!(raw, "{}", message::octet_counted(&user_facility)).unwrap();
    write!(raw, "999 {}", lines[1]).unwrap();
    drop(raw);
    let msgs = rx.wait("the bad ones", Duration::from_secs(10), |m| m.len() == 4 + 9 + 3);
    let bad: Vec<&Msg> = msgs.iter().filter(|m| !m.problems.is_empty()).collect();
    assert_eq!(bad.len(), 3, "{}", summary(&msgs));
    assert!(bad.iter().any(|m| m.channel == "hook" && m.problems[0].contains("does not verify")), "{}", summary(&msgs));
    assert!(bad.iter().any(|m| m.problems[0].contains("facility 1 ")), "{}", summary(&msgs));
    assert!(bad.iter().any(|m| m.problems[0].contains("octet counting")), "{}", summary(&msgs));

    // Stopped, a receiver refuses; started again, it takes messages on the same port.
    rx.tcp.stop();
    rx.smtp.stop();
    let refused = rt.block_on(tcp.send(&lines));
    assert!(refused.is_err(), "the stopped receiver refuses");
    assert!(TcpStream::connect(("127.0.0.1", rx.smtp.port)).is_err(), "the stopped SMTP sink refuses");
    rx.tcp.start();
    rx.smtp.start_again();
    rt.block_on(tcp.send(&lines)).unwrap();
    rt.block_on(mail(rx.smtp.port).send(&subject_line, &text)).unwrap();
    rx.wait("a second mail", Duration::from_secs(10), |m| count(m, "mail", "firing") == 2);
    // The three good lines, the one of another facility, three more.
    rx.wait("3 more lines on syslog-tcp", Duration::from_secs(10), |m| count(m, "syslog-tcp", "firing") == 3 + 1 + 3);
}

// ------------------------------------------------------------------------------------------------------------------
// 1. One device: told once per channel, its return once
// ------------------------------------------------------------------------------------------------------------------

#[test]
fn an_offline_device_is_told_once_on_every_channel_and_its_return_once() {
    let xyte = Xyte::start(6);
    let dir = tempfile::tempdir().unwrap();
    let rx = Receivers::start(dir.path());
    let path =
        write_alerts(dir.path(), &json!({"channels": rx.channels(), "rules": [offline_rule("offline", &CHANNELS)]}));
    let edge = Edge::start(dir.path(), &xyte);
    let mut mcp = edge.mcp();

    let before = list_alerts(&mut mcp, json!({}));
    assert_eq!(before["errors"], json!([]), "a good file has no errors: {before:#}");
    assert_eq!(before["file"], json!(path), "{before:#}");
    let rules: Vec<Value> = before["rules"]
        .as_array()
        .unwrap_or_else(|| panic!("{before:#}"))
        .iter()
        .map(|r| json!({"name": r["name"], "condition": r["condition"], "severity": r["severity"], "channels": r["channels"]}))
        .collect();
    assert_eq!(
        rules,
        [json!({"name": "offline", "condition": "device_offline", "severity": "warning", "channels": CHANNELS})],
        "{before:#}"
    );
    let channels: BTreeSet<&str> =
        before["channels"].as_array().unwrap().iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(channels, CHANNELS.into_iter().collect(), "{before:#}");
    assert_eq!(before["alerts"], json!([]), "every device is online: {before:#}");

    let d = xyte.devices()[0].clone();
    let t0 = now_ms();
    xyte.set(&d.id, "offline");
    let fired = wait_alert(&mut mcp, "the alert to fire", "offline", &d.id, Duration::from_secs(30), |a| {
        a["state"] == "firing"
    });
    assert_eq!(fired["subject"], json!({"key": d.id, "label": d.name, "space": d.space}), "{fired:#}");
    assert_eq!((&fired["severity"], &fired["condition"]), (&json!("warning"), &json!("device_offline")), "{fired:#}");
    assert!(ms(&fired["fired_at"]) - ms(&fired["since"]) >= 3_000, "fired before the rule's 3 s: {fired:#}");
    assert!(ms(&fired["since"]) >= t0 - 1_000, "since is when the gateway saw the change: {fired:#}");

    let msgs = rx.wait_each(&CHANNELS, "firing", 1, Duration::from_secs(30));
    assert_no_problems(&msgs);
    check_device_messages(&msgs, "offline", &d, "firing");
    for m in &msgs {
        assert!(m.at >= t0 + 3_000, "told before the device was offline for 3 s (offline at {t0}): {m}");
    }
    wait_all_sent(&mut mcp, 7, Duration::from_secs(30));
    let told = wait_alert(&mut mcp, "the firing messages listed", "offline", &d.id, Duration::from_secs(5), |a| {
        CHANNELS.iter().all(|c| deliveries(a, c, "firing").len() == 1)
    });
    assert_eq!(told["deliveries"].as_array().map(Vec::len), Some(7), "{}", delivery_lines(&told));
    for dl in told["deliveries"].as_array().unwrap() {
        assert_eq!((&dl["state"], &dl["attempts"]), (&json!("sent"), &json!(1)), "every receiver was up: {dl}");
        assert!(dl["done_at"].is_string() && dl["last_error"].is_null() && dl["next_at"].is_null(), "{dl}");
    }

    let t1 = now_ms();
    xyte.set(&d.id, "online");
    let msgs = rx.wait_each(&CHANNELS, "resolved", 1, Duration::from_secs(30));
    assert_no_problems(&msgs);
    check_device_messages(&msgs, "offline", &d, "resolved");
    assert!(msgs.iter().filter(|m| m.status == "resolved").all(|m| m.at >= t1), "{}", summary(&msgs));

    // Counted honestly: once the record says every message was sent, the receivers hold exactly one of each.
    wait_all_sent(&mut mcp, 14, Duration::from_secs(30));
    let done = wait_alert(&mut mcp, "the alert resolved", "offline", &d.id, Duration::from_secs(5), |a| {
        a["state"] == "resolved"
    });
    // RFC 3339 times may be whole seconds.
    assert!(ms(&done["resolved_at"]) >= t1 - 1_000, "{done:#}");
    for c in CHANNELS {
        let r = deliveries(&done, c, "resolved");
        assert!(r.len() == 1 && r[0]["state"] == "sent" && r[0]["attempts"] == 1, "{c}: {}", delivery_lines(&done));
    }
    let msgs = rx.messages();
    let want: BTreeMap<(String, String), usize> = CHANNELS
        .iter()
        .flat_map(|c| [((c.to_string(), "firing".to_string()), 1), ((c.to_string(), "resolved".to_string()), 1)])
        .collect();
    assert_eq!(tally(&msgs), want, "exactly one firing and one resolve per channel:\n{}", summary(&msgs));
    assert_no_problems(&msgs);

    // The event log: one alert.firing and one alert.resolved, naming the device.
    let subject = json!([{"key": d.id, "label": d.name, "space": d.space}]);
    let firing = mcp.events("alert.firing");
    assert_eq!(firing.len(), 1, "{firing:#?}");
    assert_eq!(
        (&firing[0]["rule"], &firing[0]["severity"], &firing[0]["count"], &firing[0]["subjects"]),
        (&json!("offline"), &json!("warning"), &json!(1), &subject),
        "{firing:#?}"
    );
    let resolved = mcp.events("alert.resolved");
    assert_eq!(resolved.len(), 1, "{resolved:#?}");
    assert_eq!(
        (&resolved[0]["rule"], &resolved[0]["count"], &resolved[0]["subjects"]),
        (&json!("offline"), &json!(1), &subject)
    );

    // Metrics and the REST read.
    let (status, metrics) = edge.rest(None, "GET", "/v1/metrics", None);
    assert_eq!(status, 200, "{metrics}");
    assert_eq!(gauge(&metrics, "xyte_edge_alerts_firing"), Some(0.0), "{metrics}");
    for (state, n) in [("pending", 0.0), ("sent", 14.0), ("given_up", 0.0)] {
        let series = format!("xyte_edge_alert_deliveries{{state=\"{state}\"}}");
        assert_eq!(gauge(&metrics, &series), Some(n), "{series}:\n{metrics}");
    }
    let viewer = edge.token("alerts-viewer", "viewer");
    let (status, listed) = edge.rest_json(Some(&viewer), "GET", "/v1/alerts", None);
    assert_eq!(status, 200, "{listed}");
    let alert = alert_in(&listed, "offline", &d.id).unwrap_or_else(|| panic!("GET /v1/alerts: {listed:#}"));
    assert_eq!(alert["state"], "resolved", "{listed:#}");
    assert_deliveries_listed(&mut mcp, "offline", &d.id, &CHANNELS);
}

// ------------------------------------------------------------------------------------------------------------------
// 2. 200 devices at once: one grouped message per channel
// ------------------------------------------------------------------------------------------------------------------

/// The longest space path every device shares, by whole segments.
fn common_space(devices: &[Device]) -> String {
    let mut common: Vec<&str> = devices[0].space.split('/').collect();
    for d in devices {
        let same = common.iter().zip(d.space.split('/')).take_while(|(a, b)| **a == *b).count();
        common.truncate(same);
    }
    common.join("/")
}

#[test]
fn two_hundred_devices_going_dark_together_are_one_grouped_message_per_channel() {
    let xyte = Xyte::start(200);
    let devices = xyte.devices();
    assert_eq!(devices.len(), 200);
    let ids: BTreeSet<String> = devices.iter().map(|d| d.id.clone()).collect();
    let space = common_space(&devices);
    assert!(!space.is_empty(), "the simulator's devices share a site");
    let dir = tempfile::tempdir().unwrap();
    let rx = Receivers::start(dir.path());
    // A longer window than elsewhere: the 200 changes may come over two poll cycles; they are still one group.
    let rule = json!({"name": "fleet", "condition": "device_offline", "space": space, "for": "3s", "group_window": "3s",
                      "channels": CHANNELS});
    write_alerts(dir.path(), &json!({"channels": rx.channels(), "rules": [rule]}));
    let edge = Edge::start(dir.path(), &xyte);
    let mut mcp = edge.mcp();

    for d in &devices {
        xyte.set(&d.id, "offline");
    }
    let grouped = |msgs: &[Msg], status: &str| {
        HTTP.iter().chain(["mail"].iter()).all(|c| count(msgs, c, status) >= 1)
            && SYSLOG.iter().all(|c| count(msgs, c, status) >= 200)
    };
    let msgs = rx.wait("the grouped firing on every channel", Duration::from_secs(60), |m| grouped(m, "firing"));
    assert_no_problems(&msgs);
    let check = |msgs: &[Msg], status: &str| {
        let tag = if status == "firing" { "[warning]" } else { "[resolved]" };
        let title = format!("{tag} 200 devices: fleet in {space} — site {SITE}");
        for c in ["mail", "slack", "teams", "hook"] {
            let of: Vec<&Msg> = msgs.iter().filter(|m| m.channel == c && m.status == status).collect();
            assert_eq!(of.len(), 1, "one {status} message on {c}, not one per device:\n{}", summary(msgs));
            assert_eq!(of[0].title, title, "{}", of[0]);
        }
        let hook = msgs.iter().find(|m| m.channel == "hook" && m.status == status).unwrap();
        assert_eq!(hook.json["count"], 200, "{}", hook.json);
        assert_eq!(hook.keys.iter().cloned().collect::<BTreeSet<_>>(), ids, "the webhook names every device");
        let mail = msgs.iter().find(|m| m.channel == "mail" && m.status == status).unwrap();
        let listed = mail.body.lines().filter(|l| l.starts_with("- ")).count();
        assert!(listed == 50 && mail.body.contains("… and 150 more"), "50 listed, the rest counted:\n{}", mail.body);
        // Slack's section holds at most 3000 characters (the renderer cuts it there).
        let slack = msgs.iter().find(|m| m.channel == "slack" && m.status == status).unwrap();
        assert!(slack.body.starts_with("- ") && slack.body.chars().count() <= 3000, "{}", slack.body);
        // Syslog: one line per device, each once; over TCP and TLS all in one connection (one batch).
        for c in SYSLOG {
            let lines: Vec<&Msg> = msgs.iter().filter(|m| m.channel == c && m.status == status).collect();
            let keys: BTreeSet<String> = lines.iter().flat_map(|m| m.keys.clone()).collect();
            assert_eq!((lines.len(), &keys), (200, &ids), "{c}: one {status} line per device:\n{}", summary(msgs));
            if c != "syslog-udp" {
                let conns: BTreeSet<u64> = lines.iter().map(|m| m.conn).collect();
                assert_eq!(conns.len(), 1, "{c}: the 200 lines in one batch, got connections {conns:?}");
            }
        }
    };
    check(&msgs, "firing");

    let firing = list_alerts(&mut mcp, json!({"state": "firing"}));
    assert_eq!(firing["total"], 200, "every device's alert fires: total {}", firing["total"]);
    let events_firing = mcp.events("alert.firing");
    assert_eq!(events_firing.len(), 1, "one alert.firing for the group: {events_firing:#?}");
    assert_eq!(events_firing[0]["count"], 200, "{:#}", events_firing[0]);
    assert_eq!(events_firing[0]["subjects"].as_array().map(Vec::len), Some(50), "at most 50 subjects in the event");

    for d in &devices {
        xyte.set(&d.id, "online");
    }
    let msgs = rx.wait("the grouped resolve on every channel", Duration::from_secs(60), |m| grouped(m, "resolved"));
    assert_no_problems(&msgs);
    check(&msgs, "resolved");

    // Once the record says 14 messages were sent (7 channels, firing and resolve), the receivers hold just those.
    wait_all_sent(&mut mcp, 14, Duration::from_secs(30));
    let msgs = rx.messages();
    for c in ["mail", "slack", "teams", "hook"] {
        assert_eq!((count(&msgs, c, "firing"), count(&msgs, c, "resolved")), (1, 1), "{c}:\n{}", summary(&msgs));
    }
    for c in SYSLOG {
        assert_eq!((count(&msgs, c, "firing"), count(&msgs, c, "resolved")), (200, 200), "{c}:\n{}", summary(&msgs));
    }
    assert_eq!(msgs.len(), 4 * 2 + 3 * 400, "nothing else arrived:\n{}", summary(&msgs));
    assert_eq!(mcp.events("alert.resolved").len(), 1, "one alert.resolved for the group");
}

// ------------------------------------------------------------------------------------------------------------------
// 3. Silences
// ------------------------------------------------------------------------------------------------------------------

fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp(ms / 1000).unwrap().format(&Rfc3339).unwrap()
}

#[test]
fn a_silenced_alert_is_told_once_when_the_silence_ends_and_one_resolved_meanwhile_never() {
    let xyte = Xyte::start(6);
    let devices = xyte.devices();
    let (a, b, c) = (devices[0].clone(), devices[1].clone(), devices[2].clone());
    let dir = tempfile::tempdir().unwrap();
    let rx = Receivers::start(dir.path());
    write_alerts(dir.path(), &json!({"channels": rx.channels(), "rules": [offline_rule("offline", &CHANNELS)]}));
    let edge = Edge::start(dir.path(), &xyte);
    let mut mcp = edge.mcp();

    // A viewer may read alerts, not silence them.
    let viewer = edge.token("silence-viewer", "viewer");
    let (status, body) = edge.rest_json(
        Some(&viewer),
        "POST",
        "/v1/tools/silence_alerts",
        Some(json!({"rule": "offline", "duration": "1h"})),
    );
    assert_eq!(status, 403, "a viewer's silence_alerts: {body}");
    // The arguments are checked: a duration below a minute, an end in the past, no target.
    for bad in [
        json!({"rule": "offline", "duration": "30s"}),
        json!({"rule": "offline", "until": rfc3339(now_ms() - 60_000)}),
        json!({"until": rfc3339(now_ms() + 60_000)}),
    ] {
        let r = mcp.call("silence_alerts", bad.clone());
        assert!(r.is_err(), "silence_alerts {bad} should be refused: {r:?}");
    }
    assert_eq!(list_alerts(&mut mcp, json!({}))["silences"], json!([]), "nothing silenced by refused calls");

    // The rule is silenced for 14 s (whole seconds: the silence ends exactly then).
    let until = (now_ms() / 1000 + 14) * 1000;
    let silence = mcp
        .call("silence_alerts", json!({"rule": "offline", "until": rfc3339(until), "comment": "projector swap"}))
        .unwrap_or_else(|e| panic!("silence_alerts: {e}"));
    let id = silence["silence"]["id"].as_str().unwrap_or_else(|| panic!("{silence:#}")).to_string();
    assert!(id.starts_with("sil_"), "{silence:#}");
    assert_eq!(
        (&silence["silence"]["rule"], &silence["silence"]["comment"]),
        (&json!("offline"), &json!("projector swap"))
    );
    assert_eq!(ms(&silence["silence"]["until"]), until, "{silence:#}");
    assert_eq!(silence["silenced"], json!([]), "nothing fires yet: {silence:#}");
    assert!(silence["silence"]["by"].as_str().is_some_and(|b| !b.is_empty()), "who silenced: {silence:#}");
    assert!(ms(&silence["silence"]["created_at"]) <= now_ms(), "{silence:#}");
    let running = list_alerts(&mut mcp, json!({}))["silences"].clone();
    assert_eq!(running, json!([silence["silence"]]), "list_alerts shows the running silence");

    xyte.set(&a.id, "offline");
    xyte.set(&b.id, "offline");
    for d in [&a, &b] {
        let fired =
            wait_alert(&mut mcp, "the alert to fire, silenced", "offline", &d.id, Duration::from_secs(30), |x| {
                x["state"] == "firing"
            });
        assert_eq!(fired["silenced_by"], json!(id), "fired in the record, under the silence: {fired:#}");
    }
    // B comes back during the silence: nobody was told it fired, so nobody is told it resolved.
    xyte.set(&b.id, "online");
    let b_done =
        wait_alert(&mut mcp, "B to resolve", "offline", &b.id, Duration::from_secs(30), |x| x["state"] == "resolved");
    assert!(
        ms(&b_done["resolved_at"]) < until,
        "the setup was slower than the silence: B resolved at {} after it ended at {until}; rerun",
        b_done["resolved_at"]
    );
    let early = rx.messages();
    assert!(early.is_empty(), "nothing is told while silenced:\n{}", summary(&early));

    // When the silence ends, A (still offline) is told, once, on every channel.
    wait_past(until);
    let msgs = rx.wait_each(&CHANNELS, "firing", 1, Duration::from_secs(40));
    assert_no_problems(&msgs);
    check_device_messages(&msgs, "offline", &a, "firing");
    for m in &msgs {
        assert!(m.at >= until, "told while the silence ran (it ended at {until}): {m}");
    }
    xyte.set(&a.id, "online");
    rx.wait_each(&CHANNELS, "resolved", 1, Duration::from_secs(30));
    wait_all_sent(&mut mcp, 14, Duration::from_secs(30));
    let a_done =
        wait_alert(&mut mcp, "A resolved", "offline", &a.id, Duration::from_secs(5), |x| x["state"] == "resolved");
    assert!(a_done["silenced_by"].is_null(), "{a_done:#}");
    let msgs = rx.messages();
    assert_no_problems(&msgs);
    check_device_messages(&msgs, "offline", &a, "resolved");
    for ch in CHANNELS {
        assert_eq!((count(&msgs, ch, "firing"), count(&msgs, ch, "resolved")), (1, 1), "{ch}:\n{}", summary(&msgs));
    }
    assert_eq!(msgs.len(), 14, "nothing about B:\n{}", summary(&msgs));
    let list = list_alerts(&mut mcp, json!({}));
    let b_now = alert_in(&list, "offline", &b.id).unwrap_or_else(|| panic!("B is listed (resolved): {list:#}"));
    assert_eq!((&b_now["deliveries"], &b_now["told_at"]), (&json!([]), &Value::Null), "B was never told: {b_now:#}");
    let firing = mcp.events("alert.firing");
    assert_eq!(firing.len(), 1, "one alert.firing, for A after the silence: {firing:#?}");
    assert_eq!(firing[0]["subjects"][0]["key"], json!(a.id), "{firing:#?}");

    // A silence by device, ended early; ending it again (or an unknown one) is not_found.
    let other = mcp
        .call("silence_alerts", json!({"device": c.id, "duration": "2h"}))
        .unwrap_or_else(|e| panic!("silence_alerts by device: {e}"));
    let other_id = other["silence"]["id"].as_str().unwrap_or_else(|| panic!("{other:#}")).to_string();
    assert_eq!(other["silence"]["device"], json!(c.id), "{other:#}");
    let ended = mcp.call("end_silence", json!({"id": other_id})).unwrap_or_else(|e| panic!("end_silence: {e}"));
    assert_eq!(ended, json!({"id": other_id, "ended": true}));
    for gone in [other_id.as_str(), "sil_nope"] {
        let e = mcp.call("end_silence", json!({"id": gone})).expect_err("ending an ended or unknown silence");
        assert_eq!(e["code"], "not_found", "end_silence {gone}: {e}");
    }
    assert_deliveries_listed(&mut mcp, "offline", &a.id, &CHANNELS);
}

// ------------------------------------------------------------------------------------------------------------------
// 4. A receiver that is down
// ------------------------------------------------------------------------------------------------------------------

#[test]
fn a_receiver_that_is_down_gets_its_message_once_when_it_listens_again() {
    let xyte = Xyte::start(6);
    let d = xyte.devices()[0].clone();
    let dir = tempfile::tempdir().unwrap();
    // The HTTP receiver (Slack, Teams, webhook) does not listen yet: its port refuses connections.
    let mut rx = Receivers::ready(dir.path());
    write_alerts(dir.path(), &json!({"channels": rx.channels(), "rules": [offline_rule("offline", &CHANNELS)]}));
    let edge = Edge::start(dir.path(), &xyte);
    let mut mcp = edge.mcp();

    xyte.set(&d.id, "offline");
    let others = ["mail", "syslog-udp", "syslog-tcp", "syslog-tls"];
    let failing = wait_alert(
        &mut mcp,
        "HTTP deliveries failing, the others sent",
        "offline",
        &d.id,
        Duration::from_secs(40),
        |a| {
            HTTP.iter().all(|c| {
                deliveries(a, c, "firing").first().is_some_and(|x| {
                    x["state"] == "pending" && x["attempts"].as_u64() >= Some(1) && x["last_error"].is_string()
                })
            }) && others.iter().all(|c| deliveries(a, c, "firing").first().is_some_and(|x| x["state"] == "sent"))
        },
    );
    for c in HTTP {
        let x = deliveries(&failing, c, "firing")[0];
        assert!(x["next_at"].is_string() && x["done_at"].is_null(), "a retry is due: {x}");
    }
    let before = rx.messages();
    assert!(before.iter().all(|m| others.contains(&m.channel)), "{}", summary(&before));

    rx.http.start();
    let msgs = rx.wait_each(&HTTP, "firing", 1, Duration::from_secs(40));
    assert_no_problems(&msgs);
    check_device_messages(&msgs, "offline", &d, "firing");
    wait_all_sent(&mut mcp, 7, Duration::from_secs(30));
    let told = wait_alert(&mut mcp, "the firing messages listed", "offline", &d.id, Duration::from_secs(5), |a| {
        CHANNELS.iter().all(|c| deliveries(a, c, "firing").len() == 1)
    });
    for c in HTTP {
        let x = deliveries(&told, c, "firing")[0];
        assert!(x["state"] == "sent" && x["attempts"].as_u64() >= Some(2), "{c} was retried: {x}");
    }

    // Receivers go away and come back on the same port: the mail sink and the TCP syslog receiver miss the resolve.
    rx.smtp.stop();
    rx.tcp.stop();
    xyte.set(&d.id, "online");
    wait_alert(
        &mut mcp,
        "the resolve failing on mail and syslog-tcp",
        "offline",
        &d.id,
        Duration::from_secs(40),
        |a| {
            ["mail", "syslog-tcp"].iter().all(|c| {
                deliveries(a, c, "resolved")
                    .first()
                    .is_some_and(|x| x["state"] == "pending" && x["attempts"].as_u64() >= Some(1))
            })
        },
    );
    rx.smtp.start_again();
    rx.tcp.start();
    rx.wait_each(&CHANNELS, "resolved", 1, Duration::from_secs(40));

    wait_all_sent(&mut mcp, 14, Duration::from_secs(40));
    let done = wait_alert(&mut mcp, "the alert resolved", "offline", &d.id, Duration::from_secs(5), |a| {
        a["state"] == "resolved"
    });
    for c in ["mail", "syslog-tcp"] {
        let x = deliveries(&done, c, "resolved")[0];
        assert!(x["state"] == "sent" && x["attempts"].as_u64() >= Some(2), "{c} was retried: {x}");
    }
    assert_told_once_and_resolved_once(&rx, &mut mcp, &d);
}

// ------------------------------------------------------------------------------------------------------------------
// 5. SIGKILL between queueing and delivery
// ------------------------------------------------------------------------------------------------------------------

#[test]
fn a_message_queued_before_a_sigkill_is_delivered_once_after_the_restart() {
    let xyte = Xyte::start(6);
    let d = xyte.devices()[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let mut rx = Receivers::ready(dir.path());
    write_alerts(dir.path(), &json!({"channels": rx.channels(), "rules": [offline_rule("offline", &CHANNELS)]}));
    let mut edge = Edge::start(dir.path(), &xyte);
    let mut mcp = edge.mcp();

    xyte.set(&d.id, "offline");
    let others = ["mail", "syslog-udp", "syslog-tcp", "syslog-tls"];
    wait_alert(&mut mcp, "the webhook pending, the others sent", "offline", &d.id, Duration::from_secs(40), |a| {
        HTTP.iter().all(|c| {
            deliveries(a, c, "firing")
                .first()
                .is_some_and(|x| x["state"] == "pending" && x["attempts"].as_u64() >= Some(1))
        }) && others.iter().all(|c| deliveries(a, c, "firing").first().is_some_and(|x| x["state"] == "sent"))
    });
    drop(mcp);
    edge.kill();
    rx.http.start();
    edge.restart();
    let mut mcp = edge.mcp();

    let msgs = rx.wait_each(&HTTP, "firing", 1, Duration::from_secs(40));
    assert_no_problems(&msgs);
    check_device_messages(&msgs, "offline", &d, "firing");
    wait_all_sent(&mut mcp, 7, Duration::from_secs(30));
    let told = wait_alert(&mut mcp, "the firing messages listed", "offline", &d.id, Duration::from_secs(5), |a| {
        CHANNELS.iter().all(|c| deliveries(a, c, "firing").len() == 1)
    });
    for c in HTTP {
        let x = deliveries(&told, c, "firing")[0];
        assert!(x["state"] == "sent" && x["attempts"].as_u64() >= Some(2), "{c}: failed before, sent after: {x}");
    }
    for c in others {
        let x = deliveries(&told, c, "firing")[0];
        assert!(x["state"] == "sent" && x["attempts"] == 1, "{c}: sent before the SIGKILL, not again: {x}");
    }
    // The device is still offline: its alert was told before the crash and is not told again; then it resolves.
    xyte.set(&d.id, "online");
    rx.wait_each(&CHANNELS, "resolved", 1, Duration::from_secs(40));
    wait_all_sent(&mut mcp, 14, Duration::from_secs(40));
    assert_told_once_and_resolved_once(&rx, &mut mcp, &d);
}

// ------------------------------------------------------------------------------------------------------------------
// 6. A broken alerts file and an unreachable mail server
// ------------------------------------------------------------------------------------------------------------------

#[test]
fn a_broken_alerts_file_is_named_rule_by_rule_and_the_good_rule_still_works() {
    let xyte = Xyte::start(6);
    let d = xyte.devices()[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let inbox: Inbox = Arc::default();
    let mut http = TcpServer::new(http_handler(inbox.clone()));
    http.start();
    let dead = support::free_port();
    let channels = json!({
        "hook": hook_channel(&http),
        "mail": {"type": "email", "url": format!("smtp://127.0.0.1:{dead}"), "from": MAIL_FROM, "to": MAIL_TO,
                 "give_up_after": "60s"},
    });
    let rules = json!([
        offline_rule("good", &["hook", "mail"]),
        offline_rule("bad-channel", &["hook", "pager"]),
        {"name": "bad-for", "condition": "device_offline", "for": "ten minutes", "channels": ["hook"]},
    ]);
    let path = write_alerts(dir.path(), &json!({"channels": channels, "rules": rules}));

    // check-config names every problem, rule by rule, and exits 78.
    let out =
        Edge::command(dir.path(), &xyte.sim.base_url(), xyte.sim.sim.api_key()).arg("check-config").output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(78), "check-config:\nstdout:\n{stdout}\nstderr:\n{stderr}");
    for needle in [
        "error: alerts file: rule \"bad-channel\": unknown channel \"pager\"",
        "error: alerts file: rule \"bad-for\": for:",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in check-config's stderr:\n{stderr}");
    }
    let all = format!("{stdout}{stderr}");
    for name in ["good", "hook", "mail"] {
        assert!(
            all.contains(name),
            "check-config prints rule and channel {name}:\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
    }

    // serve logs each problem at ERROR, warns that the mail server cannot be reached, and serves.
    let mut edge = Edge::start(dir.path(), &xyte);
    for rule in ["bad-channel", "bad-for"] {
        edge.daemon.wait_line_where(&format!("an ERROR naming rule {rule}"), Duration::from_secs(10), |l| {
            l.contains("ERROR") && l.contains(rule)
        });
    }
    let reach = format!("cannot reach 127.0.0.1:{dead}");
    edge.daemon.wait_line_where(&format!("a WARN naming channel mail: {reach}"), Duration::from_secs(20), |l| {
        l.contains("WARN") && l.contains("alert channel") && l.contains("mail") && l.contains(&reach)
    });
    let viewer = edge.token("broken-file-viewer", "viewer");
    let (status, listed) = edge.rest_json(Some(&viewer), "GET", "/v1/devices", None);
    assert_eq!(status, 200, "a REST read while the alerts file is broken: {listed}");
    let mut mcp = edge.mcp();
    let l = list_alerts(&mut mcp, json!({}));
    let errors: Vec<&str> =
        l["errors"].as_array().map(|e| e.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    assert_eq!(errors.len(), 2, "{l:#}");
    assert!(errors.iter().any(|e| e.contains("rule \"bad-channel\"") && e.contains("pager")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("rule \"bad-for\"")), "{errors:?}");
    let rules: Vec<&Value> = l["rules"].as_array().map(|r| r.iter().map(|r| &r["name"]).collect()).unwrap_or_default();
    assert_eq!(rules, [&json!("good")], "{l:#}");
    assert_eq!(l["file"], json!(path), "{l:#}");

    // The good rule works: the webhook is told; the mail waits, retried, and is given up after its minute.
    xyte.set(&d.id, "offline");
    let hook = wait_for("the webhook's firing message", Duration::from_secs(30), Duration::from_millis(20), || {
        let msgs = inbox.lock().unwrap().clone();
        if count(&msgs, "hook", "firing") >= 1 { Ok(msgs) } else { Err(summary(&msgs)) }
    });
    assert_no_problems(&hook);
    check_device_messages(&hook, "good", &d, "firing");
    let fired = wait_alert(&mut mcp, "mail pending with an error", "good", &d.id, Duration::from_secs(20), |a| {
        deliveries(a, "hook", "firing").first().is_some_and(|x| x["state"] == "sent")
            && deliveries(a, "mail", "firing")
                .first()
                .is_some_and(|x| x["state"] == "pending" && x["last_error"].is_string())
    });
    let mail_id = deliveries(&fired, "mail", "firing")[0]["id"].clone();
    let failed =
        wait_for("alert.delivery_failed for the mail", Duration::from_secs(120), Duration::from_millis(500), || {
            let list = mcp.events("alert.delivery_failed");
            list.iter().find(|e| e["channel"] == "mail").cloned().ok_or_else(|| format!("{list:#?}"))
        });
    assert_eq!((&failed["rule"], &failed["delivery_id"]), (&json!("good"), &mail_id), "{failed:#}");
    assert!(
        failed["attempts"].as_u64() >= Some(1) && failed["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{failed:#}"
    );
    let gave_up = wait_alert(&mut mcp, "the mail given up", "good", &d.id, Duration::from_secs(10), |a| {
        deliveries(a, "mail", "firing").first().is_some_and(|x| x["state"] == "given_up")
    });
    // Given up once the next retry would come after its 60 s (5, 10, 20 s backoff), at the latest one backoff later.
    let mail = deliveries(&gave_up, "mail", "firing")[0];
    let age = ms(&mail["done_at"]) - ms(&mail["created_at"]);
    assert!((25_000..=100_000).contains(&age), "given up {age} ms after it was queued (give_up_after 60 s): {mail}");
    edge.daemon.wait_line_where("a WARN that the mail was given up", Duration::from_secs(10), |l| {
        let lower = l.to_lowercase();
        l.contains("WARN")
            && l.contains("mail")
            && ["given up", "gave up", "giving up"].iter().any(|w| lower.contains(w))
    });

    xyte.set(&d.id, "online");
    wait_alert(&mut mcp, "the webhook's resolve sent", "good", &d.id, Duration::from_secs(30), |a| {
        a["state"] == "resolved" && deliveries(a, "hook", "resolved").first().is_some_and(|x| x["state"] == "sent")
    });
    let msgs = inbox.lock().unwrap().clone();
    assert_no_problems(&msgs);
    check_device_messages(&msgs, "good", &d, "resolved");
    assert_eq!(
        tally(&msgs),
        BTreeMap::from([(("hook".into(), "firing".into()), 1), (("hook".into(), "resolved".into()), 1)])
    );
}

// ------------------------------------------------------------------------------------------------------------------
// 7. Gateway-wide and event rules, and a reload
// ------------------------------------------------------------------------------------------------------------------

/// An event rule (an incident opened) is told once; a SIGHUP adds a rule over the gateway's own state (Xyte
/// unreachable), which fires while the simulator answers only errors and resolves when it answers again.
#[test]
fn an_opened_incident_and_an_unreachable_xyte_are_told_and_a_reload_brings_new_rules() {
    let xyte = Xyte::start(6);
    let d = xyte.devices()[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let inbox: Inbox = Arc::default();
    let mut http = TcpServer::new(http_handler(inbox.clone()));
    http.start();
    let channels = json!({"hook": hook_channel(&http)});
    let incidents = json!({"name": "incidents", "condition": "incident_opened", "group_window": "0s",
                           "severity": "critical", "channels": ["hook"]});
    write_alerts(dir.path(), &json!({"channels": channels, "rules": [incidents]}));
    let mut edge = Edge::start(dir.path(), &xyte);
    let mut mcp = edge.mcp();
    let received = |rule: &str, status: &str| {
        inbox
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.json["rule"] == rule && m.status == status)
            .cloned()
            .collect::<Vec<_>>()
    };

    // The simulator opens an incident when a device goes offline; the poll brings it as incident.opened.
    xyte.set(&d.id, "offline");
    let told = wait_for("the incident's message", Duration::from_secs(60), Duration::from_millis(50), || {
        let got = received("incidents", "firing");
        if got.is_empty() { Err(summary(&inbox.lock().unwrap())) } else { Ok(got) }
    });
    assert_no_problems(&told);
    assert_eq!((told.len(), &told[0].json["severity"], &told[0].json["count"]), (1, &json!("critical"), &json!(1)));
    let key = told[0].keys[0].clone();
    assert!(key.starts_with("incident:"), "an incident is the subject: {key}");
    let listed = wait_alert(&mut mcp, "the incident told", "incidents", &key, Duration::from_secs(10), |a| {
        a["state"] == "notified" && deliveries(a, "hook", "firing").first().is_some_and(|x| x["state"] == "sent")
    });
    assert!(listed["told_at"].is_string(), "{listed:#}");

    // A reload adds a rule over Xyte's reachability; the incident rule stays and does not tell again.
    let wan = json!({"name": "wan", "condition": "xyte_unreachable", "for": "2s", "group_window": "0s",
                     "severity": "critical", "channels": ["hook"]});
    write_alerts(dir.path(), &json!({"channels": channels, "rules": [incidents, wan]}));
    edge.daemon.signal(nix::sys::signal::Signal::SIGHUP);
    edge.daemon.wait_line("alert rules reloaded", Duration::from_secs(10));
    xyte.sim.sim.set_faults("error_rate=1".parse().unwrap());
    let down = wait_for("the wan rule's message", Duration::from_secs(90), Duration::from_millis(50), || {
        let got = received("wan", "firing");
        if got.is_empty() { Err(summary(&inbox.lock().unwrap())) } else { Ok(got) }
    });
    assert_eq!((down.len(), down[0].keys.as_slice()), (1, ["gateway".to_string()].as_slice()), "{down:?}");
    assert!(down[0].title.contains("Xyte unreachable"), "{}", down[0]);
    xyte.sim.sim.set_faults(Default::default());
    wait_for("the wan rule's resolve", Duration::from_secs(90), Duration::from_millis(50), || {
        let got = received("wan", "resolved");
        if got.is_empty() { Err(summary(&inbox.lock().unwrap())) } else { Ok(got) }
    });
    let msgs = inbox.lock().unwrap().clone();
    assert_no_problems(&msgs);
    assert_eq!(
        (received("incidents", "firing").len(), received("wan", "firing").len(), received("wan", "resolved").len()),
        (1, 1, 1),
        "{}",
        summary(&msgs)
    );
}

// ------------------------------------------------------------------------------------------------------------------
// 8. A channel's hourly budget
// ------------------------------------------------------------------------------------------------------------------

/// A channel that takes one message an hour gets the first alert; the second waits for the hour, unattempted.
#[test]
fn a_channel_over_its_hourly_budget_holds_the_next_message_back() {
    let xyte = Xyte::start(6);
    let devices = xyte.devices();
    let (a, b) = (&devices[0], &devices[1]);
    let dir = tempfile::tempdir().unwrap();
    let inbox: Inbox = Arc::default();
    let mut http = TcpServer::new(http_handler(inbox.clone()));
    http.start();
    let rule = json!({"name": "offline", "condition": "device_offline", "for": "0s", "group_window": "0s",
                      "channels": ["hook"]});
    let mut hook = hook_channel(&http);
    hook["per_hour"] = json!(1);
    let channels = json!({"hook": hook});
    write_alerts(dir.path(), &json!({"channels": channels, "rules": [rule]}));
    let edge = Edge::start(dir.path(), &xyte);
    let mut mcp = edge.mcp();

    xyte.set(&a.id, "offline");
    wait_alert(&mut mcp, "the first alert sent", "offline", &a.id, Duration::from_secs(30), |x| {
        deliveries(x, "hook", "firing").first().is_some_and(|d| d["state"] == "sent")
    });
    xyte.set(&b.id, "offline");
    let held = wait_alert(&mut mcp, "the second alert queued", "offline", &b.id, Duration::from_secs(30), |x| {
        deliveries(x, "hook", "firing")
            .first()
            .is_some_and(|d| d["next_at"].is_string() && ms(&d["next_at"]) > now_ms())
    });
    let d = deliveries(&held, "hook", "firing")[0];
    assert_eq!((&d["state"], &d["attempts"]), (&json!("pending"), &json!(0)), "held back, not tried: {d}");
    assert!(ms(&d["next_at"]) - ms(&d["created_at"]) > 50 * 60_000, "it waits for the hour: {d}");
    let msgs = inbox.lock().unwrap().clone();
    assert_no_problems(&msgs);
    assert_eq!(msgs.len(), 1, "one message in the hour: {}", summary(&msgs));
    assert_eq!(msgs[0].keys.as_slice(), std::slice::from_ref(&a.id), "{}", summary(&msgs));
}

// ------------------------------------------------------------------------------------------------------------------
// 9. A record that cannot be written when the receiver acknowledges
// ------------------------------------------------------------------------------------------------------------------

/// The store refuses writes (here another process holds the database's write lock, as a full disk or a failing
/// card would refuse them) while a message waits for its receiver. The receiver comes back and takes it; the record
/// that it was sent cannot be written, and the message is not sent again while writes fail (two more rounds of the
/// sender); once the store writes again it is recorded as sent — delivered once.
#[test]
fn a_message_acknowledged_while_its_record_cannot_be_written_is_not_sent_again() {
    let xyte = Xyte::start(6);
    let d = xyte.devices()[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let inbox: Inbox = Arc::default();
    let mut http = TcpServer::new(http_handler(inbox.clone()));
    let rule = json!({"name": "offline", "condition": "device_offline", "for": "0s", "group_window": "0s",
                      "channels": ["hook"]});
    let hook = hook_channel(&http);
    write_alerts(dir.path(), &json!({"channels": {"hook": hook}, "rules": [rule]}));
    let mut edge = Edge::start(dir.path(), &xyte);
    let mut mcp = edge.mcp();

    xyte.set(&d.id, "offline");
    wait_alert(&mut mcp, "the message waiting for its receiver", "offline", &d.id, Duration::from_secs(30), |a| {
        deliveries(a, "hook", "firing").first().is_some_and(|x| x["state"] == "pending" && x["attempts"] == 1)
    });
    let db = rusqlite::Connection::open(dir.path().join("state").join("xyte-edge.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    http.start();
    wait_for("the receiver's message", Duration::from_secs(60), Duration::from_millis(20), || {
        let msgs = inbox.lock().unwrap().clone();
        if count(&msgs, "hook", "firing") >= 1 { Ok(()) } else { Err(summary(&msgs)) }
    });
    // Two more refused rounds of the sender (each waits out the store's busy timeout, then 5 s): nothing sent again.
    let refused = "alert delivery: ";
    let seen = edge.daemon.output.iter().filter(|l| l.contains(refused)).count();
    edge.daemon.wait_lines(refused, seen + 2, Duration::from_secs(60));
    assert_eq!(count(&inbox.lock().unwrap(), "hook", "firing"), 1, "sent again while its record could not be written");

    db.execute_batch("ROLLBACK").unwrap();
    let sent = wait_alert(&mut mcp, "the message recorded as sent", "offline", &d.id, Duration::from_secs(30), |a| {
        deliveries(a, "hook", "firing").first().is_some_and(|x| x["state"] == "sent")
    });
    let msgs = inbox.lock().unwrap().clone();
    assert_no_problems(&msgs);
    assert_eq!(msgs.len(), 1, "delivered once: {}\n{}", summary(&msgs), delivery_lines(&sent));
}
