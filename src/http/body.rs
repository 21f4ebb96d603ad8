//! Bodies. Requests: read whole, bounded in size and time, and an oversized one is read on (up to a point) and
//! discarded, so the client sees its 413. Responses: a stream fed through a bounded channel — SSE streams write
//! frames from a task; when the client goes away hyper drops the body, the channel closes, and the writing task sees
//! its `send` fail and stops.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Response;
use hyper::StatusCode;
use hyper::body::{Body as _, Frame, Incoming};
use tokio::sync::mpsc;

use super::response::{Body, error_with_status};
use crate::error::Error;
use crate::mcp::outgoing::{Outgoing, Room};

/// How long a request body may take to arrive, all of it.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of an oversized body is read past the limit and discarded. A server that closes a connection with
/// unread data resets it, and a client still sending never reads the 413 (measured over TLS: 21 of 30 1-MiB webhook
/// posts saw a reset instead). Beyond this the client is cut off; one that sent `Expect: 100-continue` is answered
/// before it sends anything.
const DRAIN_MAX: u64 = 8 * 1024 * 1024;

/// What a request body may be, and what to say when it is too large.
pub struct BodyLimit {
    pub bytes: usize,
    /// "the body", "the webhook body", …
    pub what: &'static str,
    pub hint: Option<&'static str>,
}

/// The whole request body, at most `limit.bytes`: 413 beyond, 408 when it takes longer than [`BODY_TIMEOUT`], 400
/// when the connection fails mid-body.
pub async fn read_limited(mut body: Incoming, limit: &BodyLimit) -> Result<Bytes, Response<Body>> {
    let max = limit.bytes as u64;
    let too_large = || {
        let mut e = Error::invalid_params(format!("{} is larger than {}", limit.what, size(max)));
        if let Some(hint) = limit.hint {
            e = e.with_hint(hint);
        }
        error_with_status(StatusCode::PAYLOAD_TOO_LARGE, &e)
    };
    // A declared length is exact; the frames are not polled, so no `100 Continue` invites the body.
    if body.size_hint().lower() > max + DRAIN_MAX {
        return Err(too_large());
    }
    let mut parts: Vec<Bytes> = Vec::new();
    let mut seen: u64 = 0;
    let read = async {
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else { continue };
            seen += data.len() as u64;
            if seen > max + DRAIN_MAX {
                break;
            } else if seen > max {
                parts.clear();
            } else {
                parts.push(data);
            }
        }
        Ok::<_, hyper::Error>(())
    };
    let outcome = tokio::time::timeout(BODY_TIMEOUT, read).await;
    match outcome {
        // Also when the rest of an oversized body was cut off, by the drain limit or the clock.
        _ if seen > max => Err(too_large()),
        Ok(Ok(())) if parts.len() == 1 => Ok(parts.remove(0)),
        Ok(Ok(())) => Ok(Bytes::from(parts.concat())),
        Ok(Err(e)) => {
            let e = Error::invalid_params(format!("cannot read the body: {e}"));
            Err(error_with_status(StatusCode::BAD_REQUEST, &e))
        }
        Err(_) => {
            let e = Error::invalid_params(format!("the body did not arrive within {} s", BODY_TIMEOUT.as_secs()));
            Err(error_with_status(StatusCode::REQUEST_TIMEOUT, &e))
        }
    }
}

/// `1 MiB`, `256 KiB`, `100 bytes`.
fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// A piece of a streamed response, holding its room in the MCP session's queue until hyper takes it: the bytes
/// stay counted against the connection's bound ([`crate::mcp::outgoing`]) until they leave for the client.
pub struct Chunk {
    bytes: Bytes,
    _room: Room,
}

impl Chunk {
    pub fn new(bytes: Bytes, room: Room) -> Chunk {
        Chunk { bytes, _room: room }
    }
}

pub struct ChannelBody(mpsc::Receiver<Chunk>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|c| Ok(Frame::data(c.bytes))))
    }
}

/// A body and the sender that feeds it; at most `capacity` chunks wait for a slow client.
pub fn channel(capacity: usize) -> (mpsc::Sender<Chunk>, Body) {
    let (tx, rx) = mpsc::channel(capacity);
    (tx, ChannelBody(rx).boxed())
}

/// One SSE frame carrying a JSON-RPC message (MCP's Streamable HTTP framing), with the room it held in its session's
/// queue.
pub fn sse_message(out: Outgoing) -> Chunk {
    let (json, room) = out.into_parts();
    let mut frame = Vec::with_capacity(json.len() + 24);
    frame.extend_from_slice(b"event: message\ndata: ");
    frame.extend_from_slice(&json);
    frame.extend_from_slice(b"\n\n");
    Chunk::new(Bytes::from(frame), room)
}
