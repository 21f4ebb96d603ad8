//! Command requests over MQTT (`XYTE_MQTT_COMMANDS=on`): `<prefix>/cmd/req/<tool>` carries the tool's arguments,
//! MQTT 5's response topic says where the answer goes and its correlation data ties the answer to the request.
//! Each request runs through the catalogue like every other front door, as principal `mqtt` with `XYTE_MQTT_ROLE`.
//!
//! A requester that did not see its answer (a lost connection, a restarted app) sends the same request again; a
//! write repeated with the same correlation data within [`REMEMBER`] gets the first answer again and runs nothing,
//! so a command is never sent twice. Reads are simply run again.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::Publish;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::config::Role;
use crate::error::{Error, ErrorCode};
use crate::ops;
use crate::runtime::{App, Ctx, Principal};

/// The largest request payload run; a larger one is answered with `invalid_params`.
pub const MAX_PAYLOAD: usize = 256 * 1024;
/// How long the answer to a write is kept for a repeated request.
const REMEMBER: Duration = Duration::from_secs(600);
/// Writes remembered at most, and the bytes of their answers: beyond either, new writes are refused (`rate_limited`)
/// until old answers age out. Far more than the outbox admits in ten minutes at Xyte's default budget.
const REMEMBERED_MAX: usize = 4096;
const REMEMBERED_BYTES: usize = 8 * 1024 * 1024;
/// Requests run at once, like the requests of one MCP connection.
const RUNNING: usize = 16;
/// Requests waiting (in order) for one of the [`RUNNING`] places; beyond it, refused with `rate_limited`.
const WAITING: usize = 256;
/// The principal command requests run as (audit records, context).
const PRINCIPAL: &str = "mqtt";

/// An answer to publish: where, with which correlation data, and for how long it is worth delivering.
pub struct Reply {
    pub topic: String,
    pub correlation: Option<Bytes>,
    /// What is left of the request's message expiry, passed on to the answer.
    pub expiry_s: Option<u32>,
    pub payload: Vec<u8>,
}

/// A request's run ended: its answer, and the write it answers.
pub struct Done {
    key: Option<Key>,
    reply: Reply,
}

/// A request waiting for one of the [`RUNNING`] places, in the order requests arrived.
struct Request {
    tool: String,
    args: Value,
    key: Option<Key>,
    /// When its MQTT message expiry passes.
    deadline: Option<Instant>,
    /// Where the answer goes (its payload is filled in when the run ends).
    reply: Reply,
}

/// A write is repeated when the same tool is requested with the same correlation data, whatever the response topic:
/// a requester that restarted may listen on a new one, and its retry must not send the command again.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    tool: String,
    correlation: Bytes,
}

struct Remembered {
    at: Instant,
    /// `None` while the first request still runs.
    answer: Option<Vec<u8>>,
    /// Response topics of repeats that came while it ran, other than the first's: they get the answer too (a few:
    /// a requester that keeps changing topics for one request is not followed everywhere).
    waiting: Vec<String>,
}

pub struct Requests {
    app: Arc<App>,
    role: Role,
    /// `<prefix>/cmd/req/`
    prefix: String,
    remembered: HashMap<Key, Remembered>,
    /// Requests running now, at most [`RUNNING`].
    running: usize,
    waiting: VecDeque<Request>,
    done_tx: mpsc::Sender<Done>,
    pub done: mpsc::Receiver<Done>,
}

impl Requests {
    pub fn new(app: Arc<App>, role: Role, prefix: String) -> Self {
        let (done_tx, done) = mpsc::channel(WAITING);
        Requests { app, role, prefix, remembered: HashMap::new(), running: 0, waiting: VecDeque::new(), done_tx, done }
    }

    /// Takes one incoming request: answers at once what needs no run (bad input, a repeat), starts the rest.
    pub fn receive(&mut self, publish: Publish) -> Option<Reply> {
        let received = Instant::now();
        let topic = String::from_utf8_lossy(&publish.topic).into_owned();
        let props = publish.properties.unwrap_or_default();
        let Some(response_topic) = props.response_topic.filter(|t| !t.is_empty() && !t.contains(['+', '#'])) else {
            crate::metrics::mqtt_request("refused");
            tracing::warn!(
                topic,
                "MQTT command request without a usable response topic refused: set the MQTT 5 response topic"
            );
            return None;
        };
        let answer = |payload: Value| Reply {
            topic: response_topic.clone(),
            correlation: props.correlation_data.clone(),
            expiry_s: props.message_expiry_interval,
            payload: payload.to_string().into_bytes(),
        };
        let tool = topic.strip_prefix(&self.prefix).unwrap_or_default().to_string();
        let args = match parse_args(&publish.payload) {
            Ok(args) => args,
            Err(e) => {
                crate::metrics::mqtt_request(e.code.as_str());
                return Some(answer(error_payload(&e)));
            }
        };
        let key = match (ops::find(&tool), &props.correlation_data) {
            (Some(op), Some(correlation)) if op.kind != ops::Kind::Read => {
                Some(Key { tool: tool.clone(), correlation: correlation.clone() })
            }
            _ => None,
        };
        if let Some(key) = &key {
            self.forget_old();
            let full = self.remembered.len() >= REMEMBERED_MAX || self.remembered_bytes() >= REMEMBERED_BYTES;
            match self.remembered.get_mut(key) {
                Some(Remembered { answer: Some(first), .. }) => {
                    crate::metrics::mqtt_request("repeated");
                    return Some(Reply { payload: first.clone(), ..answer(Value::Null) });
                }
                Some(Remembered { answer: None, waiting, .. }) => {
                    // The first still runs: its answer goes to this response topic too, with the same correlation.
                    crate::metrics::mqtt_request("repeated");
                    if !waiting.contains(&response_topic) && waiting.len() < RUNNING {
                        waiting.push(response_topic);
                    }
                    return None;
                }
                None if full => {
                    let e = Error::new(
                        ErrorCode::RateLimited,
                        format!(
                            "the answers kept for repeated command requests are full ({REMEMBERED_MAX} requests or \
                             {} MiB in the last 10 minutes); try again later",
                            REMEMBERED_BYTES >> 20
                        ),
                    );
                    crate::metrics::mqtt_request(e.code.as_str());
                    return Some(answer(error_payload(&e)));
                }
                None => {
                    self.remembered.insert(key.clone(), Remembered { at: received, answer: None, waiting: Vec::new() });
                }
            }
        }
        let request = Request {
            tool,
            args,
            key,
            deadline: props.message_expiry_interval.map(|s| received + Duration::from_secs(u64::from(s))),
            reply: answer(Value::Null),
        };
        if self.running < RUNNING {
            self.start(request);
        } else if self.waiting.len() < WAITING {
            self.waiting.push_back(request);
        } else {
            if let Some(key) = &request.key {
                self.remembered.remove(key);
            }
            let e = Error::new(ErrorCode::RateLimited, format!("{WAITING} command requests are already waiting"));
            crate::metrics::mqtt_request(e.code.as_str());
            return Some(answer(error_payload(&e)));
        }
        None
    }

    /// Runs a request in its own task, unless its message expiry passed while it waited: then it is dropped unrun.
    fn start(&mut self, request: Request) {
        let Request { tool, args, key, deadline, reply } = request;
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left.is_some_and(|l| l.is_zero()) {
            crate::metrics::mqtt_request("expired");
            tracing::info!(tool, "MQTT command request expired before it ran; not run");
            if let Some(key) = &key {
                self.remembered.remove(key);
            }
            return;
        }
        self.running += 1;
        let ctx = Ctx {
            app: self.app.clone(),
            principal: Principal { id: PRINCIPAL.into(), role: self.role },
            progress: None,
        };
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let outcome = ops::call(&ctx, &tool, args).await;
            crate::metrics::mqtt_request(match &outcome {
                Ok(_) => "ok",
                Err(e) => e.code.as_str(),
            });
            let payload = match outcome {
                Ok(result) => json!({"status": "ok", "result": result}),
                Err(e) => error_payload(&e),
            };
            // The answer expires when the request would have: nobody waits for it after that.
            let expiry_s = left.map(|l| l.as_secs().max(1) as u32);
            let reply = Reply { payload: payload.to_string().into_bytes(), expiry_s, ..reply };
            let _ = done.send(Done { key, reply }).await;
        });
    }

    /// Records a finished run (the answer to a repeat of it), starts the next waiting request, and returns what to
    /// publish: the answer, to the first request's response topic and to those of repeats that came while it ran.
    pub fn finished(&mut self, done: Done) -> Vec<Reply> {
        self.running -= 1;
        while self.running < RUNNING
            && let Some(next) = self.waiting.pop_front()
        {
            self.start(next);
        }
        let reply = done.reply;
        let mut replies = Vec::new();
        if let Some(key) = done.key {
            let waiting = self.remembered.remove(&key).map(|r| r.waiting).unwrap_or_default();
            for topic in waiting.into_iter().filter(|t| *t != reply.topic) {
                replies.push(Reply {
                    topic,
                    correlation: reply.correlation.clone(),
                    payload: reply.payload.clone(),
                    ..reply
                });
            }
            let answer = Some(reply.payload.clone());
            self.remembered.insert(key, Remembered { at: Instant::now(), answer, waiting: Vec::new() });
        }
        replies.insert(0, reply);
        replies
    }

    fn remembered_bytes(&self) -> usize {
        self.remembered.values().map(|r| r.answer.as_ref().map_or(0, Vec::len)).sum()
    }

    fn forget_old(&mut self) {
        self.remembered.retain(|_, r| r.answer.is_none() || r.at.elapsed() < REMEMBER);
    }
}

/// The payload as the tool's arguments: a JSON object (an empty payload is `{}`), at most [`MAX_PAYLOAD`] bytes.
fn parse_args(payload: &[u8]) -> Result<Value, Error> {
    if payload.len() > MAX_PAYLOAD {
        return Err(Error::invalid_params(format!(
            "the request is {} bytes; command requests are limited to {MAX_PAYLOAD} bytes",
            payload.len()
        )));
    }
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    match serde_json::from_slice::<Value>(payload) {
        Ok(args @ Value::Object(_)) => Ok(args),
        Ok(_) => Err(Error::invalid_params("the payload must be a JSON object of the tool's arguments")),
        Err(e) => Err(Error::invalid_params(format!("the payload is not valid JSON: {e}"))),
    }
}

fn error_payload(e: &Error) -> Value {
    json!({"status": "error", "error": e})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments() {
        assert_eq!(parse_args(b"").unwrap(), json!({}));
        assert_eq!(parse_args(b" {\"device_id\":\"d1\"} ").unwrap(), json!({"device_id": "d1"}));
        for bad in [&b"{"[..], b"[1]", b"\"x\"", &vec![b' '; MAX_PAYLOAD + 1]] {
            assert_eq!(parse_args(bad).unwrap_err().code, ErrorCode::InvalidParams);
        }
    }
}
