//! The Xyte endpoint catalogue: every documented organization endpoint, compiled in from
//! `endpoints.json` so the list is data a reviewer can check against the API reference line by line. Turns a
//! catalogue entry plus caller arguments into a validated request, so nothing malformed ever reaches Xyte.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::Error;

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Param {
    pub name: String,
    /// `string`, `integer`, `boolean`, `object`, `array` or `any`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Endpoint {
    pub key: String,
    pub group: String,
    pub method: String,
    /// Relative to the organization base URL; `:name` segments are path parameters.
    pub path: String,
    pub summary: String,
    #[serde(default)]
    pub query: Vec<Param>,
    #[serde(default)]
    pub body: Vec<Param>,
    /// Body keys beyond those listed are passed through (used where the sources do not agree on the fields).
    #[serde(default)]
    pub body_open: bool,
    /// Seen in real clients but not in Xyte's published docs; needs `XYTE_EXPERIMENTAL_APIS=true`.
    #[serde(default)]
    pub experimental: bool,
}

#[derive(Deserialize)]
struct File {
    endpoints: Vec<Endpoint>,
}

/// The whole catalogue, parsed once. The file is part of the binary and checked by a unit test, so a parse failure
/// here is a build defect.
pub fn all() -> &'static [Endpoint] {
    static CATALOGUE: OnceLock<Vec<Endpoint>> = OnceLock::new();
    CATALOGUE.get_or_init(|| {
        serde_json::from_str::<File>(include_str!("endpoints.json")).expect("endpoints.json is valid").endpoints
    })
}

pub fn find(key: &str) -> Option<&'static Endpoint> {
    all().iter().find(|e| e.key == key)
}

/// The first path segment (`devices`, `tickets`, …): 429 pauses apply per class, not per id.
pub fn class_of(path: &str) -> &str {
    path.trim_start_matches('/').split(['/', '?']).next().unwrap_or("")
}

/// The metrics label for an endpoint class: the class itself if a catalogue path has it (every path the client builds
/// does), else `other`.
pub fn class_label(class: &str) -> &'static str {
    all().iter().map(|e| class_of(&e.path)).find(|c| !c.is_empty() && *c == class).unwrap_or("other")
}

/// Percent-encodes an id for use as one path segment, so an id can never change the path.
pub fn segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A request ready for [`super::XyteClient::request`].
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
}

impl Request {
    pub fn describe(&self) -> Value {
        let query: Map<String, Value> = self.query.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        json!({"method": self.method, "path": self.path, "query": query, "body": self.body})
    }
}

impl Endpoint {
    pub fn is_read(&self) -> bool {
        self.method == "GET"
    }

    pub fn path_params(&self) -> Vec<&str> {
        self.path.split('/').filter_map(|s| s.strip_prefix(':')).collect()
    }

    /// The full description returned by `xyte_endpoint_describe`.
    pub fn describe(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        v["path_params"] = json!(self.path_params());
        v["read_only"] = json!(self.is_read());
        v
    }

    /// Validates the caller's arguments against this entry and builds the request: every path parameter given (and
    /// encoded as one segment), only known query keys with scalar values of the declared type, body fields known (unless
    /// the entry is open) and required ones present, no body on GET/DELETE.
    pub fn build(
        &self,
        path_params: &Map<String, Value>,
        query: &Map<String, Value>,
        body: Option<&Map<String, Value>>,
    ) -> Result<Request, Error> {
        let names = self.path_params();
        if let Some(extra) = path_params.keys().find(|k| !names.contains(&k.as_str())) {
            return Err(Error::invalid_params(format!(
                "{} has no path parameter {extra:?}; it takes: {}",
                self.key,
                list_or_none(&names)
            )));
        }
        let mut path = String::new();
        for seg in self.path.trim_start_matches('/').split('/') {
            path.push('/');
            match seg.strip_prefix(':') {
                Some(name) => {
                    let value = path_params.get(name).and_then(scalar).ok_or_else(|| {
                        Error::invalid_params(format!("{} needs path_params.{name} (a string or integer)", self.key))
                    })?;
                    if value.is_empty() {
                        return Err(Error::invalid_params(format!("path_params.{name} must not be empty")));
                    }
                    path.push_str(&segment(&value));
                }
                None => path.push_str(seg),
            }
        }
        let mut pairs = Vec::new();
        for (k, v) in query {
            let Some(param) = self.query.iter().find(|p| p.name == *k) else {
                let known: Vec<&str> = self.query.iter().map(|p| p.name.as_str()).collect();
                return Err(Error::invalid_params(format!(
                    "{} has no query parameter {k:?}; it takes: {}",
                    self.key,
                    list_or_none(&known)
                )));
            };
            check_type(&format!("query.{k}"), param, v)?;
            let text = scalar(v)
                .ok_or_else(|| Error::invalid_params(format!("query.{k} must be a string, number or boolean")))?;
            pairs.push((k.clone(), text));
        }
        missing(&self.key, "query", &self.query, |n| query.contains_key(n))?;
        let body = match body {
            Some(_) if matches!(self.method.as_str(), "GET" | "DELETE") => {
                return Err(Error::invalid_params(format!("{} ({}) takes no body", self.key, self.method)));
            }
            Some(b) => {
                for (k, v) in b {
                    match self.body.iter().find(|p| p.name == *k) {
                        Some(param) => check_type(&format!("body.{k}"), param, v)?,
                        None if self.body_open => {}
                        None => {
                            let known: Vec<&str> = self.body.iter().map(|p| p.name.as_str()).collect();
                            return Err(Error::invalid_params(format!(
                                "{} has no body field {k:?}; it takes: {}",
                                self.key,
                                list_or_none(&known)
                            )));
                        }
                    }
                }
                Some(Value::Object(b.clone()))
            }
            None => None,
        };
        let given = |n: &str| body.as_ref().is_some_and(|b| b.get(n).is_some_and(|v| !v.is_null()));
        missing(&self.key, "body", &self.body, given)?;
        Ok(Request { method: self.method.clone(), path, query: pairs, body })
    }
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() { "none".into() } else { names.join(", ") }
}

fn missing(key: &str, place: &str, params: &[Param], given: impl Fn(&str) -> bool) -> Result<(), Error> {
    let absent: Vec<&str> = params.iter().filter(|p| p.required && !given(&p.name)).map(|p| p.name.as_str()).collect();
    if absent.is_empty() {
        Ok(())
    } else {
        Err(Error::invalid_params(format!("{key} needs {place} field(s): {}", absent.join(", "))))
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Light type checking: catches the mistakes an agent makes (an object where an id belongs, "yes" for a boolean)
/// while accepting numbers written as strings, which Xyte itself accepts.
fn check_type(place: &str, param: &Param, v: &Value) -> Result<(), Error> {
    let ok = match param.kind.as_str() {
        "integer" => v.is_i64() || v.is_u64() || v.as_str().is_some_and(|s| s.parse::<i64>().is_ok()),
        "boolean" => v.is_boolean() || matches!(v.as_str(), Some("true" | "false")),
        "string" => v.is_string() || v.is_number(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        _ => true,
    };
    if ok { Ok(()) } else { Err(Error::invalid_params(format!("{place} must be of type {} (got {v})", param.kind))) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn the_catalogue_covers_the_reference_and_is_consistent() {
        let all = all();
        // Xyte's published catalog has 64 organization endpoints; the experimental aliases come on top.
        assert_eq!(all.iter().filter(|e| !e.experimental).count(), 64);
        let mut keys = std::collections::HashSet::new();
        for e in all {
            assert!(keys.insert(e.key.as_str()), "duplicate key {}", e.key);
            assert!(["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&e.method.as_str()), "{}", e.key);
            assert!(e.path.starts_with('/') && !e.summary.is_empty(), "{}", e.key);
            if e.is_read() {
                assert!(e.body.is_empty() && !e.body_open, "{} is a GET with a body", e.key);
            }
            for p in e.query.iter().chain(&e.body) {
                assert!(
                    ["string", "integer", "boolean", "object", "array", "any"].contains(&p.kind.as_str()),
                    "{}",
                    e.key
                );
            }
        }
        let routes: std::collections::HashSet<(String, String)> =
            all.iter().map(|e| (e.method.clone(), e.path.clone())).collect();
        assert_eq!(routes.len(), all.len(), "two entries share a route");
    }

    #[test]
    fn ids_cannot_escape_their_segment_and_classes_are_bounded() {
        assert_eq!(segment("c66308c8-1d12"), "c66308c8-1d12");
        assert_eq!(segment("../tickets"), "%2E%2E%2Ftickets");
        assert_eq!(segment("a b?c"), "a%20b%3Fc");
        assert_eq!(class_of("devices/abc/commands"), "devices");
        assert_eq!(class_of("/tickets"), "tickets");
        // Metrics labels are bounded.
        assert_eq!(class_label(class_of("devices/3f2a-secret-id/commands")), "devices");
        assert_eq!(class_label(class_of("incidents?from=1")), "incidents");
        assert_eq!(class_label("tickets"), "tickets");
        assert_eq!(class_label("no-such-class"), "other");
        assert_eq!(class_label(""), "other");
    }

    #[test]
    fn requests_are_built_and_validated() {
        let e = find("commands.cancel").unwrap();
        let r = e.build(&obj(json!({"device_id": "a/b", "command_id": 7})), &Map::new(), None).unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("DELETE", "/devices/a%2Fb/commands/7"));
        let err = e.build(&obj(json!({"device_id": "d"})), &Map::new(), None).unwrap_err();
        assert!(err.message.contains("path_params.command_id"), "{}", err.message);
        let err = e.build(&obj(json!({"device_id": "d", "command_id": "c", "x": 1})), &Map::new(), None).unwrap_err();
        assert!(err.message.contains("no path parameter \"x\""), "{}", err.message);

        let list = find("incidents.list").unwrap();
        let r = list.build(&Map::new(), &obj(json!({"status": "active", "from": 0})), None).unwrap();
        assert_eq!(r.query, vec![("from".into(), "0".into()), ("status".into(), "active".into())]);
        let err = list.build(&Map::new(), &obj(json!({"state": "x"})), None).unwrap_err();
        assert!(err.message.contains("no query parameter \"state\"") && err.message.contains("priority"));
        let err = list.build(&Map::new(), &obj(json!({"from": "yesterday"})), None).unwrap_err();
        assert!(err.message.contains("query.from must be of type integer"), "{}", err.message);
        let err = list.build(&Map::new(), &Map::new(), Some(&obj(json!({"a": 1})))).unwrap_err();
        assert!(err.message.contains("takes no body"));

        let claim = find("devices.claim").unwrap();
        let err = claim.build(&Map::new(), &Map::new(), Some(&obj(json!({"name": "x"})))).unwrap_err();
        assert!(err.message.contains("needs body field(s): space_id"), "{}", err.message);
        let err = claim.build(&Map::new(), &Map::new(), Some(&obj(json!({"name": "x", "space": 1})))).unwrap_err();
        assert!(err.message.contains("no body field \"space\""), "{}", err.message);
        let ok = claim.build(&Map::new(), &Map::new(), Some(&obj(json!({"name": "x", "space_id": "12"})))).unwrap();
        assert_eq!(ok.body, Some(json!({"name": "x", "space_id": "12"})));

        let msg = find("tickets.message").unwrap();
        assert!(msg.build(&obj(json!({"ticket_id": "t"})), &Map::new(), None).is_err());
    }
}
