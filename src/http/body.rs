//! A streaming response body fed through a bounded channel: SSE streams write frames from a task; when the client
//! goes away hyper drops the body, the channel closes, and the writing task sees its `send` fail and stops.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Frame;
use tokio::sync::mpsc;

use super::router::Body;

pub struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

/// A body and the sender that feeds it; at most `capacity` chunks wait for a slow client.
pub fn channel(capacity: usize) -> (mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = mpsc::channel(capacity);
    (tx, ChannelBody(rx).boxed())
}

/// One SSE frame carrying a JSON-RPC message (MCP's Streamable HTTP framing).
pub fn sse_message(msg: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: message\ndata: {msg}\n\n"))
}
