//! One upstream call, done right: rate-limited, paused per endpoint class after a 429, timed out per
//! attempt and overall, retried only when the method is idempotent, and mapped onto the stable error codes.
//! Runs on a blocking thread; never logs or echoes the credential.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use super::endpoints;
use super::limiter::{Limiter, Priority};
use crate::config::Secret;
use crate::error::{Error, ErrorCode};

/// Bodies larger than this are refused (a page of 100 devices is ~100 KiB).
const MAX_BODY: u64 = 16 * 1024 * 1024;
const MAX_ATTEMPTS: u32 = 3;
const BACKOFF_BASE: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(5);

pub struct Transport {
    agent: ureq::Agent,
    base: String,
    authorization: Secret<String>,
    request_timeout: Duration,
    pub limiter: Limiter,
    /// Endpoint class → until when Xyte told us to back off.
    paused: Mutex<HashMap<String, Instant>>,
}

/// What a caller hands to [`Transport::call`].
pub struct Call<'a> {
    pub method: &'a str,
    /// Relative to the base URL, ids already percent-encoded (see [`endpoints::segment`]).
    pub path: &'a str,
    pub query: &'a [(String, String)],
    pub body: Option<&'a Value>,
    pub prio: Priority,
}

impl Transport {
    pub fn new(base: &str, authorization: Secret<String>, request_timeout: Duration, rate_per_min: u32) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(request_timeout.min(Duration::from_secs(5))))
            .timeout_global(Some(request_timeout))
            .max_redirects(0)
            .user_agent(concat!("xyte-edge/", env!("CARGO_PKG_VERSION")))
            // 128 KiB each by default, kept by every pooled connection; ureq grows the input buffer when a response
            // head needs more, and bodies stream through it.
            .input_buffer_size(16 * 1024)
            .output_buffer_size(16 * 1024)
            .build();
        Transport {
            agent: config.into(),
            base: base.trim_end_matches('/').to_string(),
            authorization,
            request_timeout,
            limiter: Limiter::new(rate_per_min),
            paused: Mutex::new(HashMap::new()),
        }
    }

    /// The whole-call budget: room for a retry after a slow first attempt, never unbounded.
    pub fn budget(&self) -> Duration {
        self.request_timeout * 2
    }

    pub fn call(&self, call: &Call<'_>) -> Result<Value, Error> {
        let started = Instant::now();
        let deadline = started + self.budget();
        let idempotent = matches!(call.method, "GET" | "PUT" | "DELETE");
        // 429 pauses apply per class; the metrics label is the catalogue's class, so no id becomes a label.
        let class = endpoints::class_of(call.path).to_string();
        let label = endpoints::class_label(&class);
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Err(e) = self.clear_to_send(&class, call.prio, deadline) {
                crate::metrics::xyte_error(label, e.code);
                return Err(e);
            }
            let left = deadline.saturating_duration_since(Instant::now()).min(self.request_timeout);
            let sent = Instant::now();
            let outcome = self.attempt(call, left);
            let latency_ms = sent.elapsed().as_millis() as u64;
            crate::metrics::xyte_request(label, sent.elapsed().as_secs_f64());
            let status = outcome.as_ref().map(|(s, _, _)| *s).unwrap_or(0);
            tracing::debug!(method = call.method, path = call.path, status, latency_ms, attempt, "xyte call");
            let error = match outcome {
                Ok((status, _, body)) if (200..300).contains(&status) => {
                    // An unreadable 2xx body is an error, but not a retryable one (the request was accepted).
                    let parsed = parse_body(&body);
                    if let Err(e) = &parsed {
                        crate::metrics::xyte_error(label, e.code);
                    }
                    return parsed;
                }
                Ok((429, retry_after, body)) => {
                    let wait = retry_after.unwrap_or_else(|| backoff(attempt));
                    self.pause(&class, wait);
                    rate_limited(&body, wait)
                }
                Ok((status, _, body)) => map_status(status, &body),
                Err(e) => e,
            };
            crate::metrics::xyte_error(label, error.code);
            let retryable = idempotent
                && attempt < MAX_ATTEMPTS
                && matches!(
                    error.code,
                    ErrorCode::RateLimited | ErrorCode::NetworkError | ErrorCode::Timeout | ErrorCode::XyteServerError
                );
            if !retryable {
                return Err(error);
            }
            // 429 pauses are waited for at the top of the loop; other failures back off with full jitter.
            if error.code != ErrorCode::RateLimited {
                let wait = jitter(backoff(attempt));
                if Instant::now() + wait >= deadline {
                    return Err(error);
                }
                std::thread::sleep(wait);
            }
        }
    }

    /// One HTTP exchange: (status, Retry-After, body) or a transport failure already mapped.
    fn attempt(&self, call: &Call<'_>, timeout: Duration) -> Result<(u16, Option<Duration>, Vec<u8>), Error> {
        let url = format!("{}/{}", self.base, call.path.trim_start_matches('/'));
        let auth = self.authorization.expose().as_str();
        macro_rules! prepare {
            ($builder:expr) => {{
                let mut b = $builder.header("Authorization", auth).header("Accept", "application/json");
                for (k, v) in call.query {
                    b = b.query(k, v);
                }
                b.config().timeout_global(Some(timeout)).build()
            }};
        }
        let body = call.body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        let result = match call.method {
            "GET" => prepare!(self.agent.get(&url)).call(),
            "DELETE" => prepare!(self.agent.delete(&url)).call(),
            method => {
                let b = match method {
                    "POST" => self.agent.post(&url),
                    "PUT" => self.agent.put(&url),
                    "PATCH" => self.agent.patch(&url),
                    other => return Err(Error::internal(format!("unsupported HTTP method {other}"))),
                };
                let b = prepare!(b);
                match body {
                    Some(bytes) => b.header("Content-Type", "application/json").send(bytes),
                    None => b.send_empty(),
                }
            }
        };
        let mut response = result.map_err(map_transport_error)?;
        let status = response.status().as_u16();
        let retry_after =
            response.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        let bytes = response.body_mut().with_config().limit(MAX_BODY).read_to_vec().map_err(map_transport_error)?;
        Ok((status, retry_after, bytes))
    }

    /// Waits out any 429 pause of the class, then takes a token. A call that waited for its token may find that
    /// another call met a 429 meanwhile: it must not send then, so it gives the token back and waits again.
    fn clear_to_send(&self, class: &str, prio: Priority, deadline: Instant) -> Result<(), Error> {
        loop {
            self.wait_for_pause(class, deadline)?;
            let granted = self.limiter.acquire(prio, deadline).map_err(|wait| {
                Error::new(
                    ErrorCode::RateLimited,
                    "the upstream request budget (XYTE_RATE_LIMIT) is used up; try again shortly",
                )
                .with_retry_after(wait.as_secs().max(1))
            })?;
            if !self.paused_now(class) {
                return Ok(());
            }
            self.limiter.refund(granted);
        }
    }

    fn paused_now(&self, class: &str) -> bool {
        let now = Instant::now();
        self.paused.lock().ok().and_then(|p| p.get(class).copied()).is_some_and(|until| until > now)
    }

    fn pause(&self, class: &str, wait: Duration) {
        if let Ok(mut p) = self.paused.lock() {
            let until = Instant::now() + wait;
            let entry = p.entry(class.to_string()).or_insert(until);
            *entry = (*entry).max(until);
        }
    }

    /// Sleeps while Xyte asked this endpoint class to back off; gives up with `rate_limited` past the deadline.
    fn wait_for_pause(&self, class: &str, deadline: Instant) -> Result<(), Error> {
        let until = self.paused.lock().ok().and_then(|p| p.get(class).copied());
        let Some(until) = until else { return Ok(()) };
        let now = Instant::now();
        if until <= now {
            return Ok(());
        }
        if until > deadline {
            let secs = (until - now).as_secs_f64().ceil() as u64;
            return Err(Error::new(ErrorCode::RateLimited, "Xyte asked us to slow down (429); try again later")
                .with_retry_after(secs.max(1)));
        }
        std::thread::sleep(until - now);
        Ok(())
    }
}

fn backoff(attempt: u32) -> Duration {
    BACKOFF_BASE.saturating_mul(1 << attempt.min(10)).min(BACKOFF_CAP)
}

/// Full jitter: a random wait in [0, d], so many clients do not retry in lockstep.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 4];
    let r = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).map(|_| u32::from_le_bytes(b));
    let frac = f64::from(r.unwrap_or(u32::MAX / 2)) / f64::from(u32::MAX);
    d.mul_f64(frac)
}

/// `Retry-After` as seconds or an HTTP date (RFC 9110 §10.2.3); capped at an hour.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(3600)));
    }
    let format = time::format_description::well_known::Rfc2822;
    let when = time::OffsetDateTime::parse(v, &format).ok()?;
    let now = time::OffsetDateTime::from(SystemTime::now());
    let secs = (when - now).whole_seconds().clamp(0, 3600) as u64;
    Some(Duration::from_secs(secs))
}

fn parse_body(body: &[u8]) -> Result<Value, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body)
        .map_err(|_| Error::new(ErrorCode::XyteServerError, "Xyte answered with a body we could not read as JSON"))
}

/// Xyte's own words from an error body: `error`, `message`, `errors`, `detail`, `error_description` (strings or lists).
fn xyte_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let text = |v: &Value| -> Option<String> {
        match v {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Array(items) => {
                let parts: Vec<String> = items.iter().filter_map(|i| i.as_str().map(String::from)).collect();
                (!parts.is_empty()).then(|| parts.join("; "))
            }
            Value::Object(map) => {
                let parts: Vec<String> =
                    map.iter().map(|(k, v)| format!("{k} {}", v.to_string().trim_matches('"'))).collect();
                (!parts.is_empty()).then(|| parts.join("; "))
            }
            _ => None,
        }
    };
    ["error_description", "error", "message", "errors", "detail", "title"].iter().find_map(|k| v.get(*k).and_then(text))
}

fn clip(s: String) -> String {
    if s.chars().count() > 300 { format!("{}…", s.chars().take(300).collect::<String>()) } else { s }
}

fn rate_limited(body: &[u8], wait: Duration) -> Error {
    let said = xyte_message(body).map(|m| format!(": {}", clip(m))).unwrap_or_default();
    Error::new(ErrorCode::RateLimited, format!("Xyte is rate limiting this gateway (429){said}"))
        .with_retry_after(wait.as_secs_f64().ceil() as u64)
}

/// The one mapping of Xyte HTTP statuses onto error codes (docs/architecture.md, Errors).
pub fn map_status(status: u16, body: &[u8]) -> Error {
    let said = xyte_message(body).map(clip);
    let with = |base: &str| match &said {
        Some(m) => format!("{base}: {m}"),
        None => base.to_string(),
    };
    match status {
        401 => Error::new(
            ErrorCode::Unauthorized,
            "Xyte rejected the credential (401); check XYTE_API_KEY (or XYTE_USER_TOKEN / XYTE_OAUTH_TOKEN) in \
             /etc/xyte-edge/xyte-edge.conf",
        ),
        403 => {
            Error::new(ErrorCode::Forbidden, with("Xyte refused this operation for the configured credential (403)"))
        }
        404 => Error::new(ErrorCode::NotFound, with("Xyte has no such object (404)")),
        400 | 422 => Error::new(ErrorCode::InvalidRequest, with(&format!("Xyte rejected the request ({status})"))),
        408 => Error::new(ErrorCode::XyteServerError, "Xyte timed out (408) answering the request"),
        429 => rate_limited(body, Duration::from_secs(1)),
        500..=599 => Error::new(ErrorCode::XyteServerError, with(&format!("Xyte had a server error ({status})")))
            .with_hint("this is on Xyte's side; cached data is still served"),
        other => Error::new(ErrorCode::XyteServerError, with(&format!("Xyte answered with unexpected status {other}"))),
    }
}

/// Transport failures, described without ureq's text (which may include the URL or request details).
fn map_transport_error(e: ureq::Error) -> Error {
    match e {
        ureq::Error::Timeout(_) => Error::new(ErrorCode::Timeout, "Xyte did not answer within XYTE_REQUEST_TIMEOUT"),
        ureq::Error::HostNotFound => Error::new(ErrorCode::NetworkError, "cannot resolve the Xyte host name (DNS)"),
        ureq::Error::ConnectionFailed => Error::new(ErrorCode::NetworkError, "cannot connect to Xyte"),
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            Error::new(ErrorCode::Timeout, "Xyte did not answer within XYTE_REQUEST_TIMEOUT")
        }
        ureq::Error::Io(io) => {
            Error::new(ErrorCode::NetworkError, format!("network error talking to Xyte: {}", io.kind()))
        }
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) | ureq::Error::Pem(_) => Error::new(
            ErrorCode::NetworkError,
            "TLS handshake with Xyte failed; check the system time and XYTE_BASE_URL",
        ),
        ureq::Error::BodyExceedsLimit(_) => {
            Error::new(ErrorCode::XyteServerError, "Xyte sent a response larger than 16 MiB")
        }
        ureq::Error::BadUri(_) | ureq::Error::Http(_) => {
            Error::new(ErrorCode::InvalidParams, "the request URL is not valid; check XYTE_BASE_URL and the ids used")
        }
        _ => Error::new(ErrorCode::NetworkError, "the connection to Xyte failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_mapping() {
        assert_eq!(map_status(401, b"{}").code, ErrorCode::Unauthorized);
        assert_eq!(map_status(403, b"").code, ErrorCode::Forbidden);
        assert_eq!(
            map_status(404, br#"{"error":"Unknown device d9"}"#).message,
            "Xyte has no such object (404): Unknown device d9"
        );
        let e = map_status(422, br#"{"error":"Either a valid command or friendly_name is required"}"#);
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(e.message.ends_with("Either a valid command or friendly_name is required"));
        assert!(map_status(400, br#"{"errors":["a","b"]}"#).message.ends_with("a; b"));
        assert!(map_status(422, br#"{"errors":{"name":["taken"]}}"#).message.contains("name"));
        assert_eq!(map_status(429, b"").code, ErrorCode::RateLimited);
        assert_eq!(map_status(503, b"<html>").code, ErrorCode::XyteServerError);
        assert_eq!(map_status(302, b"").code, ErrorCode::XyteServerError);
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("99999"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO), "a past date means now");
        let future = time::OffsetDateTime::now_utc() + time::Duration::seconds(30);
        let header = future.format(&time::format_description::well_known::Rfc2822).unwrap();
        let d = parse_retry_after(&header).unwrap();
        assert!((28..=30).contains(&d.as_secs()), "{d:?}");
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn backoff_is_bounded_and_jittered() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(30), BACKOFF_CAP);
        for _ in 0..100 {
            assert!(jitter(Duration::from_secs(1)) <= Duration::from_secs(1));
        }
    }

    /// A call that waits for a token while another call meets a 429 must not send during the pause that follows.
    #[test]
    fn a_call_waiting_for_a_token_honours_a_pause_that_began_meanwhile() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let faults = "latency=300ms,burst_429=1,retry_after=2".parse().unwrap();
        let opts = crate::sim::SimOptions { faults, churn: false, ..Default::default() };
        let sim = rt.block_on(crate::sim::spawn("127.0.0.1:0".parse().unwrap(), opts)).unwrap();
        let key = Secret::new(sim.sim.api_key().to_string());
        // 60/min: one token a second once the burst of 6 is spent.
        let t = std::sync::Arc::new(Transport::new(&sim.base_url(), key, Duration::from_secs(10), 60));
        while t.limiter.try_acquire(Priority::Command) {}
        let granted = t.limiter.grants();
        let get = |t: std::sync::Arc<Transport>| {
            std::thread::spawn(move || {
                t.call(&Call { method: "GET", path: "info", query: &[], body: None, prio: Priority::Interactive })
            })
        };
        // The first call takes the next token and meets the 429 some 300 ms later; the second starts waiting for the
        // token after that, which comes while the 429's pause holds.
        let first = get(t.clone());
        let deadline = Instant::now() + Duration::from_secs(5);
        while t.limiter.grants() == granted {
            assert!(Instant::now() < deadline, "the first call took a token");
            std::thread::yield_now();
        }
        let second = get(t.clone());
        assert!(first.join().unwrap().is_ok(), "retried after the pause");
        assert!(second.join().unwrap().is_ok());
        let requests = sim.sim.stats().requests;
        let limited = requests.iter().find(|r| r.status == 429).expect("a 429");
        for r in requests.iter().filter(|r| r.at > limited.answered) {
            assert!(r.at - limited.answered >= Duration::from_secs(2), "sent during the pause: {requests:?}");
        }
        assert_eq!(requests.len(), 3, "the 429, then one request per call: {requests:?}");
    }

    #[test]
    fn bodies() {
        assert_eq!(parse_body(b"").unwrap(), Value::Null);
        assert_eq!(parse_body(b"{\"a\":1}").unwrap()["a"], 1);
        assert_eq!(parse_body(b"<html>").unwrap_err().code, ErrorCode::XyteServerError);
    }
}
