//! MCP over a connection: bytes as a client would write them to the Unix socket, framed into lines the way the socket
//! transport frames them, each line through `Session::receive` (JSON-RPC decoding, batches, both eras' dispatch, tool
//! calls against a read-only core whose Xyte is unreachable), then end of input as the peer going away. Every
//! message the session sends must be well-formed JSON-RPC, and the session must finish once the peer has gone.
//!
//! Input: the first byte picks the caller (bits 0-1: viewer, operator, admin) and whether the conformance fixtures
//! are served (bit 2); the rest is the byte stream.
#![no_main]

mod common;

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use xyte_edge::config::Role;
use xyte_edge::mcp::MAX_MESSAGE;
use xyte_edge::mcp::jsonrpc::{INVALID_REQUEST, RpcError};
use xyte_edge::mcp::outgoing;
use xyte_edge::mcp::session::Session;
use xyte_edge::runtime::Principal;

/// Far above anything a read-only core with an unreachable Xyte needs; beyond it the session has hung.
const FINISH_WITHIN: Duration = Duration::from_secs(5);

fuzz_target!(|data: &[u8]| {
    let Some((&options, stream)) = data.split_first() else { return };
    let role = match options & 3 {
        0 => Role::Viewer,
        1 => Role::Operator,
        _ => Role::Admin,
    };
    let app = common::app();
    // With bit 2 the session also serves the conformance suite's test fixtures (they reach more session code: MRTR
    // request state, progress, log levels).
    let extension = xyte_edge::mcp::extension(options & 4 != 0);
    common::runtime().block_on(async move {
        let (tx, mut rx) = outgoing::queue();
        let session = Session::new(app, extension, Principal { id: "uid:fuzz".into(), role }, tx);
        // The socket transport's framing (mcp::unix): `\n`-terminated lines, a trailing `\r` dropped, blank lines
        // skipped, a line longer than MAX_MESSAGE answered with an error and skipped.
        for line in stream.split(|b| *b == b'\n') {
            if line.len() > MAX_MESSAGE {
                session.receive_error(RpcError::new(INVALID_REQUEST, "message too large")).await;
                continue;
            }
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if !line.iter().all(u8::is_ascii_whitespace) {
                session.receive(line).await;
            }
        }
        session.close();
        drop(session);
        let drained = tokio::time::timeout(FINISH_WITHIN, async {
            while let Some(out) = rx.recv().await {
                check_message(&out.to_value());
            }
        })
        .await;
        assert!(drained.is_ok(), "the session was still running {FINISH_WITHIN:?} after the peer went away");
    });
});

/// What the socket writer sends must serialise, and be a JSON-RPC 2.0 notification or response (or a batch of them).
fn check_message(msg: &Value) {
    assert!(serde_json::to_vec(msg).is_ok(), "unserialisable message {msg}");
    match msg {
        Value::Array(items) => {
            assert!(!items.is_empty(), "empty batch response");
            items.iter().for_each(check_single);
        }
        _ => check_single(msg),
    }
}

fn check_single(msg: &Value) {
    let obj = msg.as_object().unwrap_or_else(|| panic!("not an object: {msg}"));
    assert_eq!(obj.get("jsonrpc"), Some(&Value::from("2.0")), "{msg}");
    if let Some(method) = obj.get("method") {
        assert!(method.is_string(), "{msg}");
        assert!(!obj.contains_key("id"), "the server sends no requests: {msg}");
        assert!(obj.get("params").is_none_or(Value::is_object), "{msg}");
        return;
    }
    match obj.get("id") {
        None => {}
        Some(Value::String(_)) => {}
        Some(Value::Number(n)) => assert!(n.is_i64(), "{msg}"),
        Some(other) => panic!("bad response id {other} in {msg}"),
    }
    match (obj.get("result"), obj.get("error")) {
        (Some(_), None) => assert!(obj.contains_key("id"), "a result without an id: {msg}"),
        (None, Some(e)) => {
            assert!(e.get("code").is_some_and(|c| c.is_i64()), "{msg}");
            assert!(e.get("message").is_some_and(Value::is_string), "{msg}");
        }
        _ => panic!("a response needs exactly one of result and error: {msg}"),
    }
}
