//! What one MCP session sends, on its way to the peer: a queue bounded in bytes per connection.
//!
//! Every message is serialised once, when it is sent, and takes as much room in its connection's queue as it has
//! bytes; the room comes back when the transport has written it (the Unix socket) or handed it to the HTTP response.
//! Responses wait for room, and while the queue is full the transport reads no further request from the peer — so a
//! client that writes requests and never reads the answers stops being read, instead of growing the daemon (it grew
//! to 2.5 GiB in ten seconds before this queue existed). Notifications (progress, log lines, resource updates) never
//! wait: one that finds no room is dropped for that peer and the drop is logged. A peer that reads nothing at all is
//! disconnected by [`crate::stall`] after [`crate::stall::STALL`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::ops::Answer;

/// Unsent bytes one connection may have queued before the daemon stops reading its requests (README).
pub const QUEUE_BYTES: usize = 1024 * 1024;

/// Room a message holds in its connection's queue until it is written; dropping it gives the room back.
pub struct Room(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

impl Room {
    /// For bytes that belong to no session's queue (a priming frame).
    pub fn none() -> Room {
        Room(None)
    }
}

/// What the transport needs to know about a message without parsing it again.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A response; `id` is the JSON text of its id (absent when the request's id could not be read).
    Response { id: Option<String>, error_code: Option<i64> },
    /// The response to a batch (protocol 2025-03-26).
    Batch,
    /// A notification: `progress` is the JSON text of its `progressToken`, `related` that of the request it belongs to
    /// (a tool's log line), if any.
    Notification { progress: Option<String>, related: Option<String> },
}

/// One serialised message: its JSON followed by `\n` (the socket's framing), and its kind.
pub struct Outgoing {
    line: Bytes,
    pub kind: Kind,
    room: Room,
}

impl Outgoing {
    /// The JSON-RPC message followed by `\n`.
    pub fn line(&self) -> &Bytes {
        &self.line
    }

    /// The JSON-RPC message alone.
    pub fn json(&self) -> Bytes {
        self.line.slice(..self.line.len() - 1)
    }

    /// The message parsed back (tests, and the rare caller that needs a field: `initialize`'s agreed version).
    pub fn to_value(&self) -> Value {
        serde_json::from_slice(&self.line).unwrap_or(Value::Null)
    }

    /// The JSON and the room it holds, for a transport that passes the bytes on (an HTTP response stream).
    pub fn into_parts(self) -> (Bytes, Room) {
        (self.json(), self.room)
    }

    pub fn is_response(&self) -> bool {
        !matches!(self.kind, Kind::Notification { .. })
    }
}

/// A message to send: JSON-RPC, and for a tool's result the tool's answer, which `json` holds as
/// `"structuredContent": null` and which is written in that place ([`write_message`]): a kept answer is written from
/// the shared document, never copied into the message ([`Answer`]).
pub struct Message {
    pub json: Value,
    pub answer: Option<Answer>,
}

impl Message {
    /// The message as one JSON document (the answer moved into its place), for a batch's list of responses.
    pub fn into_value(self) -> Value {
        let Message { mut json, answer } = self;
        if let (Some(answer), Some(slot)) = (answer, json.pointer_mut("/result/structuredContent")) {
            *slot = answer.into_value();
        }
        json
    }
}

impl From<Value> for Message {
    fn from(json: Value) -> Message {
        Message { json, answer: None }
    }
}

/// The session's end of the queue.
#[derive(Clone)]
pub struct Sender {
    tx: mpsc::UnboundedSender<Outgoing>,
    room: Arc<Semaphore>,
    /// Whether a notification has been dropped for this peer (logged once per connection).
    dropped: Arc<AtomicBool>,
}

pub type Receiver = mpsc::UnboundedReceiver<Outgoing>;

/// A queue for one connection's messages, bounded at [`QUEUE_BYTES`].
pub fn queue() -> (Sender, Receiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let sender = Sender { tx, room: Arc::new(Semaphore::new(QUEUE_BYTES)), dropped: Arc::default() };
    (sender, rx)
}

/// A message needs as much room as it has bytes; one larger than the whole queue takes all of it (and so goes out
/// alone).
fn permits(line: &Bytes) -> u32 {
    line.len().clamp(1, QUEUE_BYTES) as u32
}

impl Sender {
    /// Queues a response (or any message that must not be lost), waiting for room. False when the peer has gone.
    pub async fn send(&self, msg: impl Into<Message>) -> bool {
        let msg = msg.into();
        let (line, kind) = serialise(&msg.json, msg.answer.as_ref(), None);
        let Ok(permit) = self.room.clone().acquire_many_owned(permits(&line)).await else { return false };
        self.tx.send(Outgoing { line, kind, room: Room(Some(permit)) }).is_ok()
    }

    /// Queues a notification if there is room; drops it (logged once per connection) if the peer is not reading.
    /// `related` is the request it belongs to. False when the peer has gone.
    pub fn notify(&self, msg: &Value, related: Option<&super::jsonrpc::Id>) -> bool {
        let (line, kind) = serialise(msg, None, related);
        match self.room.clone().try_acquire_many_owned(permits(&line)) {
            Ok(permit) => self.tx.send(Outgoing { line, kind, room: Room(Some(permit)) }).is_ok(),
            Err(_) => {
                if !self.dropped.swap(true, Ordering::Relaxed) {
                    let method = msg.get("method").and_then(Value::as_str).unwrap_or_default();
                    tracing::warn!(
                        method,
                        "MCP client is not reading: {QUEUE_BYTES} bytes wait for it; notifications are dropped \
                         until it reads (logged once per connection)"
                    );
                }
                !self.tx.is_closed()
            }
        }
    }

    /// Waits until the queue is below its bound: the transport calls this before reading the next request.
    pub async fn room(&self) {
        // A permit taken and given back at once: this waits in line behind responses waiting for room.
        let _ = self.room.acquire().await;
    }

    /// Resolves when the transport has stopped taking messages.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

/// The message's line and kind; `answer` is a tool result's structured content (see [`Message`]).
fn serialise(msg: &Value, answer: Option<&Answer>, related: Option<&super::jsonrpc::Id>) -> (Bytes, Kind) {
    let text = |v: &Value| serde_json::to_string(v).unwrap_or_default();
    let kind = match msg {
        Value::Array(_) => Kind::Batch,
        _ if msg.get("method").is_some() => Kind::Notification {
            progress: msg.pointer("/params/progressToken").map(text),
            related: related.map(|id| serde_json::to_string(id).unwrap_or_default()),
        },
        _ => Kind::Response {
            id: msg.get("id").map(text),
            error_code: msg.pointer("/error/code").and_then(Value::as_i64),
        },
    };
    let line = crate::heap::build_bytes(|line, json| {
        if write_message(line, json, msg, answer).is_err() {
            line.clear();
        }
        line.push(b'\n');
    });
    (line, kind)
}

/// Writes a message (or a batch of them) as JSON.
///
/// A tool's result carries its answer twice: as `structuredContent` and as the same JSON in a text block, escaped.
/// The session leaves that block's `text` out ([`super::session`]'s `call_tool`) and it is written here from the
/// structured content's bytes, so the answer is serialised once rather than twice (a 28 KB `list_devices` answer was
/// serialised three times: for the text, then both again in the message). A text block without `text` is not valid
/// MCP, so it cannot be anything else.
/// `json` is scratch space for the structured answer ([`crate::heap::build_bytes`]); `answer`, when given, is written
/// in place of the structured content's placeholder ([`Message`]).
fn write_message(
    out: &mut Vec<u8>,
    json: &mut Vec<u8>,
    msg: &Value,
    answer: Option<&Answer>,
) -> serde_json::Result<()> {
    if let Value::Array(items) = msg {
        out.push(b'[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_message(out, json, item, None)?;
        }
        out.push(b']');
        return Ok(());
    }
    // Not a tool result of that shape: as it is (with the answer in its place, if one came with it).
    let plain = |out: &mut Vec<u8>| match answer {
        None => serde_json::to_writer(out, msg),
        Some(answer) => {
            serde_json::to_writer(out, &Message { json: msg.clone(), answer: Some(answer.clone()) }.into_value())
        }
    };
    let (Value::Object(fields), Some(Value::Object(result))) = (msg, msg.get("result")) else {
        return plain(out);
    };
    let (Some(structured), Some([Value::Object(block)])) =
        (result.get("structuredContent"), result.get("content").and_then(Value::as_array).map(Vec::as_slice))
    else {
        return plain(out);
    };
    if block.get("type").and_then(Value::as_str) != Some("text") || block.contains_key("text") {
        return plain(out);
    }
    json.clear();
    match answer {
        Some(answer) => serde_json::to_writer(&mut *json, answer)?,
        None => serde_json::to_writer(&mut *json, structured)?,
    }
    let json = &json[..];
    out.reserve(json.len() * 5 / 2 + 256);
    let text = std::str::from_utf8(json).map_err(serde::ser::Error::custom)?;
    write_object(out, fields, |out, key, value| match key {
        "result" => write_object(out, result, |out, key, value| match key {
            "structuredContent" => {
                out.extend_from_slice(json);
                Ok(())
            }
            "content" => {
                out.push(b'[');
                write_object(out, block, |out, _, value| serde_json::to_writer(out, value))?;
                // `write_object` left the block open for this field.
                out.truncate(out.len() - 1);
                out.extend_from_slice(if block.is_empty() { b"\"text\":" } else { b",\"text\":" });
                serde_json::to_writer(&mut *out, text)?;
                out.extend_from_slice(b"}]");
                Ok(())
            }
            _ => serde_json::to_writer(out, value),
        }),
        _ => serde_json::to_writer(out, value),
    })
}

/// `{"key":value,…}` with each value written by `value`.
fn write_object(
    out: &mut Vec<u8>,
    fields: &serde_json::Map<String, Value>,
    mut value: impl FnMut(&mut Vec<u8>, &str, &Value) -> serde_json::Result<()>,
) -> serde_json::Result<()> {
    out.push(b'{');
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, k)?;
        out.push(b':');
        value(out, k, v)?;
    }
    out.push(b'}');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_tool_result_gets_its_structured_content_as_text() {
        let answer = json!({"devices": [{"name": "Lobby \"A\" \\ \u{e9}\n", "n": 1.5}], "stale": false});
        let result = |extra: Value| {
            let mut r = json!({"isError": false, "content": [{"type": "text"}], "structuredContent": answer});
            r.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            r
        };
        let msg = json!({"jsonrpc": "2.0", "id": "a\"b", "result": result(json!({}))});
        let modern =
            json!({"jsonrpc": "2.0", "id": 7, "result": result(json!({"_meta": {"k": 1}, "resultType": "complete"}))});
        let (line, kind) = serialise(&msg, None, None);
        assert_eq!(kind, Kind::Response { id: Some(r#""a\"b""#.into()), error_code: None });
        for (sent, original) in [(line, &msg), (serialise(&modern, None, None).0, &modern)] {
            assert!(sent.ends_with(b"\n"));
            let back: Value = serde_json::from_slice(&sent).unwrap();
            let text = back["result"]["content"][0]["text"].as_str().unwrap();
            assert_eq!(text, serde_json::to_string(&answer).unwrap());
            let mut expected = original.clone();
            expected["result"]["content"][0]["text"] = json!(text);
            assert_eq!(back, expected);
        }
        // In a batch, each response; a block that has its text (an extension's tool) is left as it is.
        let own = json!({"jsonrpc": "2.0", "id": 2, "result": {"content": [{"type": "text", "text": "hi"}],
                         "structuredContent": {"x": 1}}});
        let (batch, _) = serialise(&json!([msg, own]), None, None);
        let back: Value = serde_json::from_slice(&batch).unwrap();
        assert_eq!(back[0]["result"]["content"][0]["text"], serde_json::to_string(&answer).unwrap());
        assert_eq!(back[1], own);
    }

    #[test]
    fn a_kept_answer_is_written_in_its_place_as_its_copy_would_be() {
        let doc = json!({"devices": [{"name": "Lobby \"A\" \u{e9}"}], "next_cursor": "1", "total": 2});
        let read = crate::cache::Cached { value: (), stale: true, fetched_at: 1_700_000_000_000 };
        let answer = Answer::kept(Arc::new(doc.as_object().unwrap().clone()), &read);
        let message = |result: Value| Message {
            json: json!({"jsonrpc": "2.0", "id": 1, "result": result}),
            answer: Some(answer.clone()),
        };
        let tool = message(json!({"content": [{"type": "text"}], "isError": false, "structuredContent": null}));
        let (line, _) = serialise(&tool.json, tool.answer.as_ref(), None);
        let (copied, _) = serialise(&tool.into_value(), None, None);
        assert_eq!(line, copied);
        let back: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(back["result"]["structuredContent"], read.stamp(doc.clone()));
        let text = back["result"]["content"][0]["text"].as_str().unwrap();
        assert_eq!(serde_json::from_str::<Value>(text).unwrap(), read.stamp(doc.clone()));
        // A result of another shape still gets the answer in its place.
        let other = message(json!({"content": [{"type": "text", "text": "t"}], "structuredContent": null}));
        let (line, _) = serialise(&other.json, other.answer.as_ref(), None);
        let back: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(back["result"]["structuredContent"], read.stamp(doc));
        assert_eq!(back["result"]["content"][0]["text"], "t");
    }

    #[test]
    fn messages_serialised_one_after_another_on_a_thread_share_no_bytes() {
        let tool = |id: u64, answer: Value| {
            json!({"jsonrpc": "2.0", "id": id,
                   "result": {"content": [{"type": "text"}], "structuredContent": answer}})
        };
        let big = tool(1, json!({"devices": vec!["d".repeat(100); 1000]}));
        let small = tool(2, json!({"ok": true}));
        let error = json!({"jsonrpc": "2.0", "id": 3, "error": {"code": -32601, "message": "m"}});
        for msg in [&big, &small, &error, &small, &big, &error] {
            let (line, _) = serialise(msg, None, None);
            let back: Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(back["id"], msg["id"]);
            if let Some(answer) = msg.pointer("/result/structuredContent") {
                assert_eq!(back["result"]["content"][0]["text"], serde_json::to_string(answer).unwrap());
            } else {
                assert_eq!(&back, msg);
            }
        }
    }

    #[tokio::test]
    async fn responses_wait_for_room_and_notifications_are_dropped() {
        let (tx, mut rx) = queue();
        let big = json!({"jsonrpc": "2.0", "id": 1, "result": {"text": "x".repeat(QUEUE_BYTES - 100)}});
        assert!(tx.send(big).await);
        // The queue is nearly full: a notification that does not fit is dropped, not queued.
        let note = json!({"jsonrpc": "2.0", "method": "notifications/progress",
                          "params": {"progressToken": "t", "progress": 1, "message": "x".repeat(200)}});
        assert!(tx.notify(&note, None));
        // A response waits until the first message has been taken (and its room given back).
        let second = json!({"jsonrpc": "2.0", "id": 2, "error": {"code": -32602, "message": "no"}});
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(second).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        let first = rx.recv().await.unwrap();
        assert_eq!(first.kind, Kind::Response { id: Some("1".into()), error_code: None });
        assert_eq!(first.line().last(), Some(&b'\n'));
        drop(first);
        assert!(waiting.await.unwrap());
        let second = rx.recv().await.unwrap();
        assert_eq!(second.kind, Kind::Response { id: Some("2".into()), error_code: Some(-32602) });
        assert_eq!(second.to_value()["error"]["message"], "no");
        assert!(rx.try_recv().is_err(), "the dropped notification was queued");
    }

    #[test]
    fn kinds_name_what_the_http_transport_routes_by() {
        let (_, kind) = serialise(&json!([{"jsonrpc": "2.0", "id": 1, "result": {}}]), None, None);
        assert_eq!(kind, Kind::Batch);
        let note = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 7}});
        let (_, kind) = serialise(&note, None, Some(&super::super::jsonrpc::Id::String("a".into())));
        assert_eq!(kind, Kind::Notification { progress: Some("7".into()), related: Some("\"a\"".into()) });
    }
}
