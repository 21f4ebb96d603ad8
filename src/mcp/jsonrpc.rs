//! JSON-RPC 2.0 framing as MCP uses it: string or integer ids (never null), notifications never answered, error
//! responses without `id` when the id could not be read, batches only where a revision allowed them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// Legacy-era "resource not found"; the modern era uses `INVALID_PARAMS`.
pub const RESOURCE_NOT_FOUND: i64 = -32002;
pub const HEADER_MISMATCH: i64 = -32020;
pub const MISSING_CLIENT_CAPABILITY: i64 = -32021;
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;

/// A request id: JSON-RPC allows strings and numbers; MCP forbids null.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Id {
    Number(i64),
    String(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: Id,
    pub method: String,
    pub params: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub method: String,
    pub params: Map<String, Value>,
}

/// One decoded line (or HTTP body).
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Request(Request),
    Notification(Notification),
    /// A response to something we sent (the daemon sends no requests, so these are ignored).
    Response,
    Batch(Vec<Value>),
}

/// An error object with its response id (absent when the id was unreadable).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError { code, message: message.into(), data: None }
    }

    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }
}

/// Decoding failed: answer with this error (and `id` if it could be read).
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeError {
    pub id: Option<Id>,
    pub error: RpcError,
}

pub fn decode(bytes: &[u8]) -> Result<Incoming, DecodeError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| DecodeError { id: None, error: RpcError::new(PARSE_ERROR, format!("parse error: {e}")) })?;
    decode_value(value)
}

pub fn decode_value(value: Value) -> Result<Incoming, DecodeError> {
    let obj = match value {
        Value::Array(items) if items.is_empty() => return Err(invalid(None, "empty batch")),
        Value::Array(items) => return Ok(Incoming::Batch(items)),
        Value::Object(obj) => obj,
        _ => return Err(invalid(None, "a JSON-RPC message must be an object")),
    };
    let id = match obj.get("id") {
        None => None,
        Some(Value::Null) => return Err(invalid(None, "id must be a string or an integer, not null")),
        Some(v) => match serde_json::from_value::<Id>(v.clone()) {
            Ok(id) => Some(id),
            Err(_) => return Err(invalid(None, "id must be a string or an integer")),
        },
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(invalid(id, "jsonrpc must be \"2.0\""));
    }
    let method = match obj.get("method") {
        Some(Value::String(m)) => m.clone(),
        Some(_) => return Err(invalid(id, "method must be a string")),
        None if id.is_some() && (obj.contains_key("result") || obj.contains_key("error")) => {
            return Ok(Incoming::Response);
        }
        None => return Err(invalid(id, "missing method")),
    };
    let params = match obj.get("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p.clone(),
        Some(_) => return Err(invalid(id, "params must be an object")),
    };
    Ok(match id {
        Some(id) => Incoming::Request(Request { id, method, params }),
        None => Incoming::Notification(Notification { method, params }),
    })
}

fn invalid(id: Option<Id>, message: &str) -> DecodeError {
    DecodeError { id, error: RpcError::new(INVALID_REQUEST, format!("invalid request: {message}")) }
}

// `json!` serialises every value it interpolates into a new `Value` (a deep copy); a result or params can be a
// large tree, so they are moved in afterwards instead.
pub fn result(id: &Id, result: Value) -> Value {
    let mut msg = serde_json::json!({ "jsonrpc": "2.0", "id": id });
    msg["result"] = result;
    msg
}

/// An error response; `id` is omitted (not null) when unknown, as the MCP schema requires.
pub fn error(id: Option<&Id>, error: &RpcError) -> Value {
    let mut msg = serde_json::json!({ "jsonrpc": "2.0", "error": error });
    if let Some(id) = id {
        msg["id"] = serde_json::to_value(id).unwrap_or(Value::Null);
    }
    msg
}

pub fn notification(method: &str, params: Value) -> Value {
    let mut msg = serde_json::json!({ "jsonrpc": "2.0", "method": method });
    msg["params"] = params;
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_notifications_and_ids() {
        let r = decode(br#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#).unwrap();
        assert_eq!(r, Incoming::Request(Request { id: Id::Number(7), method: "ping".into(), params: Map::new() }));
        let r = decode(br#"{"jsonrpc":"2.0","id":"a-1","method":"tools/list","params":{"cursor":"x"}}"#).unwrap();
        let Incoming::Request(req) = r else { panic!() };
        assert_eq!(req.id, Id::String("a-1".into()));
        assert_eq!(req.params["cursor"], "x");
        let n = decode(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert!(matches!(n, Incoming::Notification(_)));
        assert_eq!(decode(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#).unwrap(), Incoming::Response);
    }

    #[test]
    fn bad_input_maps_to_the_right_codes() {
        let e = decode(b"{not json").unwrap_err();
        assert_eq!((e.id, e.error.code), (None, PARSE_ERROR));
        let e = decode(br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#).unwrap_err();
        assert_eq!(e.error.code, INVALID_REQUEST);
        let e = decode(br#"{"jsonrpc":"1.0","id":3,"method":"ping"}"#).unwrap_err();
        assert_eq!((e.id, e.error.code), (Some(Id::Number(3)), INVALID_REQUEST));
        let e = decode(br#"{"jsonrpc":"2.0","id":3,"method":"x","params":[1]}"#).unwrap_err();
        assert_eq!(e.error.code, INVALID_REQUEST);
        assert!(matches!(decode(b"[1,2]").unwrap(), Incoming::Batch(_)));
        assert_eq!(decode(b"[]").unwrap_err().error.code, INVALID_REQUEST);
    }

    #[test]
    fn error_without_id_omits_the_field() {
        let msg = error(None, &RpcError::new(PARSE_ERROR, "parse error"));
        assert_eq!(msg, json!({"jsonrpc":"2.0","error":{"code":-32700,"message":"parse error"}}));
        let msg = error(Some(&Id::String("x".into())), &RpcError::new(METHOD_NOT_FOUND, "nope"));
        assert_eq!(msg["id"], "x");
    }
}
