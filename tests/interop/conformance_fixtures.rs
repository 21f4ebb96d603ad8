//! TEST-ONLY fixtures for the official MCP conformance suite (`@modelcontextprotocol/conformance`, run by
//! `tests/interop/conformance.sh`): the tools, resources, templates and prompts its server scenarios call by name
//! (`test_simple_text`, `test://static-text`, `test_prompt_with_arguments`, the MRTR tools …), shaped exactly as the
//! suite's reference "everything server" shapes them.
//!
//! Compiled only with the cargo feature `conformance-fixtures` (never in the release binary or the packages), and
//! served, after the catalogue's own entries, only by such a daemon started with `XYTE_CONFORMANCE_FIXTURES=1`.
//!
//! Not served, because they need client features this daemon does not implement (server-to-client requests in the
//! legacy era): `test_sampling`, `test_elicitation`, `test_elicitation_sep1034_defaults`,
//! `test_elicitation_sep1330_enums`. In the modern era the same ideas work without server-to-client requests, as
//! MRTR input requests (`test_input_required_result_*`), and those are served.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::jsonrpc::{self, RpcError};
use super::{Call, Extension, Outcome, Running, mrtr};

/// A 1×1 red PNG.
const IMAGE_PNG: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
/// A minimal WAV file.
const AUDIO_WAV: &str = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA=";

/// The resource whose subscribers are told it changed every [`WATCH_PERIOD`].
const WATCHED_URI: &str = "test://watched-resource";
const WATCH_PERIOD: Duration = Duration::from_secs(3);

fn no_args() -> Value {
    json!({"type": "object", "properties": {}, "additionalProperties": false})
}

fn tool(name: &str, description: &str) -> Value {
    json!({"name": name, "description": description, "inputSchema": no_args()})
}

/// SEP-1613 / SEP-2106: an input schema using JSON Schema 2020-12 keywords that must survive `tools/list` intact.
fn json_schema_2020_12() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "$defs": {
            "address": {
                "$anchor": "addressDef",
                "type": "object",
                "properties": {"street": {"type": "string"}, "city": {"type": "string"}}
            }
        },
        "properties": {
            "name": {"type": "string"},
            "address": {"$ref": "#/$defs/address"},
            "contactMethod": {"type": "string", "enum": ["phone", "email"]},
            "phone": {"type": "string"},
            "email": {"type": "string"}
        },
        "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
        "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
        "then": {"required": ["phone"]},
        "else": {"required": ["email"]},
        "additionalProperties": false
    })
}

const LEGACY_AND_MODERN_TOOLS: &[(&str, &str)] = &[
    ("test_simple_text", "Tests simple text content response"),
    ("test_image_content", "Tests image content response"),
    ("test_audio_content", "Tests audio content response"),
    ("test_embedded_resource", "Tests embedded resource content response"),
    ("test_multiple_content_types", "Tests response with multiple content types (text, image, resource)"),
    ("test_tool_with_logging", "Tests tool that emits log messages during execution"),
    ("test_tool_with_progress", "Tests tool that reports progress notifications"),
    ("test_error_handling", "Tests error response handling"),
];

/// Modern only: MRTR exists only in 2026-07-28, and the diagnostic tools belong to its stateless scenario.
const MODERN_TOOLS: &[(&str, &str)] = &[
    ("test_missing_capability", "Needs the client's sampling capability (answers -32021 without it)"),
    ("test_input_required_result_elicitation", "MRTR: returns InputRequiredResult with an elicitation request"),
    ("test_input_required_result_sampling", "MRTR: returns InputRequiredResult with a sampling request"),
    ("test_input_required_result_list_roots", "MRTR: returns InputRequiredResult with a roots/list request"),
    ("test_input_required_result_request_state", "MRTR: returns InputRequiredResult with requestState"),
    ("test_input_required_result_multiple_inputs", "MRTR: returns InputRequiredResult with multiple input requests"),
    ("test_input_required_result_multi_round", "MRTR: multi-round InputRequiredResult workflow"),
    ("test_input_required_result_tampered_state", "MRTR: integrity-protected requestState"),
    ("test_input_required_result_capabilities", "MRTR: asks only for what the client's capabilities allow"),
    ("test_streaming_elicitation", "Diagnostic tool: its response stream carries no independent requests"),
    ("test_logging_tool", "Diagnostic tool: logs only when the request set a log level"),
];

const JSON_SCHEMA_TOOL: &str = "json_schema_2020_12_tool";

fn tools(modern: bool) -> Vec<Value> {
    let mut list: Vec<Value> = LEGACY_AND_MODERN_TOOLS.iter().map(|(n, d)| tool(n, d)).collect();
    list.push(json!({
        "name": JSON_SCHEMA_TOOL,
        "description": "Tool with JSON Schema 2020-12 features for conformance testing (SEP-1613)",
        "inputSchema": json_schema_2020_12(),
    }));
    if modern {
        list.extend(MODERN_TOOLS.iter().map(|(n, d)| tool(n, d)));
    }
    list
}

fn text(t: impl Into<String>) -> Value {
    json!({"type": "text", "text": t.into()})
}

fn content(items: Vec<Value>) -> Outcome {
    Outcome::Complete(json!({"content": items}))
}

fn elicit(message: &str, field: &str, kind: &str) -> Value {
    json!({"method": "elicitation/create", "params": {
        "message": message,
        "requestedSchema": {"type": "object", "properties": {field: {"type": kind}}, "required": [field]}
    }})
}

fn sample(prompt: &str, max_tokens: u32) -> Value {
    json!({"method": "sampling/createMessage", "params": {
        "messages": [{"role": "user", "content": {"type": "text", "text": prompt}}],
        "maxTokens": max_tokens
    }})
}

fn list_roots() -> Value {
    json!({"method": "roots/list", "params": {}})
}

fn ask(requests: Value, state: Option<Value>) -> Outcome {
    let requests = requests.as_object().cloned().unwrap_or_default();
    Outcome::InputRequired { requests, state }
}

/// A field of an elicitation answer (`{action, content: {field: …}}`).
fn answer<'a>(call: &'a Call, key: &str, field: &str) -> Option<&'a str> {
    call.responses.get(key)?.get("content")?.get(field)?.as_str()
}

fn state_str<'a>(call: &'a Call, field: &str) -> Option<&'a str> {
    call.state?.get(field)?.as_str()
}

async fn pause() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

async fn call_tool(name: &str, call: &Call<'_>) -> Result<Outcome, RpcError> {
    let caps_has = |c: &str| call.caps.get(c).is_some_and(Value::is_object);
    Ok(match name {
        "test_simple_text" => content(vec![text("This is a simple text response for testing.")]),
        "test_image_content" => content(vec![json!({"type": "image", "data": IMAGE_PNG, "mimeType": "image/png"})]),
        "test_audio_content" => content(vec![json!({"type": "audio", "data": AUDIO_WAV, "mimeType": "audio/wav"})]),
        "test_embedded_resource" => content(vec![json!({"type": "resource", "resource": {
            "uri": "test://embedded-resource", "mimeType": "text/plain", "text": "This is an embedded resource content."
        }})]),
        "test_multiple_content_types" => content(vec![
            text("Multiple content types test:"),
            json!({"type": "image", "data": IMAGE_PNG, "mimeType": "image/png"}),
            json!({"type": "resource", "resource": {
                "uri": "test://mixed-content-resource", "mimeType": "application/json",
                "text": json!({"test": "data", "value": 123}).to_string()
            }}),
        ]),
        "test_tool_with_logging" => {
            (call.log)("info", json!("Tool execution started"));
            pause().await;
            (call.log)("info", json!("Tool processing data"));
            pause().await;
            (call.log)("info", json!("Tool execution completed"));
            content(vec![text("Tool with logging executed successfully")])
        }
        "test_tool_with_progress" => {
            for (i, done) in [0.0, 50.0, 100.0].into_iter().enumerate() {
                if i > 0 {
                    pause().await;
                }
                if let Some(p) = &call.progress {
                    p(done, Some(100.0), format!("Completed step {done} of 100"));
                }
            }
            content(vec![text("Progress reported: 0, 50 and 100 of 100")])
        }
        "test_error_handling" => Outcome::Complete(json!({
            "content": [text("This tool intentionally returns an error for testing")],
            "isError": true
        })),
        JSON_SCHEMA_TOOL => {
            content(vec![text(format!("JSON Schema 2020-12 tool called with: {}", Value::Object(call.args.clone())))])
        }
        "test_missing_capability" => match call.responses.get("sample") {
            Some(_) => content(vec![text("Success")]),
            // The session refuses this with -32021 unless the client declared `sampling`.
            None => ask(json!({"sample": sample("Say anything", 20)}), None),
        },
        "test_input_required_result_elicitation" => match answer(call, "user_name", "name") {
            Some(name) => content(vec![text(format!("Hello, {name}!"))]),
            None if call.responses.contains_key("user_name") => content(vec![text("Hello, friend!")]),
            None => ask(json!({"user_name": elicit("What is your name?", "name", "string")}), None),
        },
        "test_input_required_result_sampling" => match call.responses.get("capital_question") {
            Some(r) => {
                let said = r.pointer("/content/text").and_then(Value::as_str).unwrap_or("no response");
                content(vec![text(format!("Sampling result: {said}"))])
            }
            None => ask(json!({"capital_question": sample("What is the capital of France?", 100)}), None),
        },
        "test_input_required_result_list_roots" => match call.responses.get("client_roots") {
            Some(r) => {
                let n = r.get("roots").and_then(Value::as_array).map_or(0, Vec::len);
                content(vec![text(format!("Found {n} root(s)"))])
            }
            None => ask(json!({"client_roots": list_roots()}), None),
        },
        "test_input_required_result_request_state" => {
            let ok = call.responses.get("confirm").and_then(|r| r.pointer("/content/ok")) == Some(&json!(true));
            if state_str(call, "kind") == Some("request-state") && ok {
                content(vec![text("state-ok: requestState validated")])
            } else {
                ask(
                    json!({"confirm": elicit("Please confirm", "ok", "boolean")}),
                    Some(json!({"kind": "request-state", "nonce": mrtr::nonce()})),
                )
            }
        }
        "test_input_required_result_multiple_inputs" => {
            let all = ["user_name", "greeting", "client_roots"].iter().all(|k| call.responses.contains_key(*k));
            if state_str(call, "kind") == Some("multiple-inputs") && all {
                let name = answer(call, "user_name", "name").unwrap_or("unknown");
                let greeting = call.responses["greeting"].pointer("/content/text").and_then(Value::as_str);
                let roots = call.responses["client_roots"].get("roots").and_then(Value::as_array).map_or(0, Vec::len);
                content(vec![text(format!(
                    "Name: {name}; Greeting: {}; Roots: {roots}",
                    greeting.unwrap_or("Hello there!")
                ))])
            } else {
                ask(
                    json!({
                        "user_name": elicit("What is your name?", "name", "string"),
                        "greeting": sample("Generate a greeting", 50),
                        "client_roots": list_roots(),
                    }),
                    Some(json!({"kind": "multiple-inputs", "nonce": mrtr::nonce()})),
                )
            }
        }
        "test_input_required_result_multi_round" => {
            let round = call.state.and_then(|s| s.get("round")).and_then(Value::as_i64);
            match (round, answer(call, "step1", "name"), answer(call, "step2", "color")) {
                (Some(1), Some(name), _) => ask(
                    json!({"step2": elicit("Step 2: What is your favorite color?", "color", "string")}),
                    Some(json!({"round": 2, "name": name, "nonce": mrtr::nonce()})),
                ),
                (Some(2), _, Some(color)) => {
                    let name = state_str(call, "name").unwrap_or("friend");
                    content(vec![text(format!("Multi-round complete for {name} who likes {color}"))])
                }
                // First call, or answers that do not fit the round: start over.
                _ => ask(
                    json!({"step1": elicit("Step 1: What is your name?", "name", "string")}),
                    Some(json!({"round": 1, "nonce": mrtr::nonce()})),
                ),
            }
        }
        "test_input_required_result_tampered_state" => {
            // A tampered state never gets here: the session refuses it before the fixture runs.
            if state_str(call, "kind") == Some("tamper-test") && call.responses.contains_key("confirm") {
                content(vec![text("integrity-ok: state verified")])
            } else {
                ask(
                    json!({"confirm": elicit("Please confirm", "ok", "boolean")}),
                    Some(json!({"kind": "tamper-test", "nonce": mrtr::nonce()})),
                )
            }
        }
        "test_input_required_result_capabilities" => {
            if !call.responses.is_empty() {
                let keys: Vec<&str> = call.responses.keys().map(String::as_str).collect();
                content(vec![text(format!("capabilities-ok: received {}", keys.join(",")))])
            } else {
                let mut requests = Map::new();
                if caps_has("elicitation") {
                    requests.insert("elicit_input".into(), elicit("Elicitation input", "value", "string"));
                }
                if caps_has("sampling") {
                    requests.insert("sample_input".into(), sample("Sample request", 50));
                }
                if requests.is_empty() {
                    content(vec![text("No supported capabilities declared")])
                } else {
                    Outcome::InputRequired {
                        requests,
                        state: Some(json!({"kind": "capabilities-test", "nonce": mrtr::nonce()})),
                    }
                }
            }
        }
        "test_streaming_elicitation" => {
            if let Some(p) = &call.progress {
                p(50.0, Some(100.0), "halfway".into());
            }
            content(vec![text("Streaming complete")])
        }
        "test_logging_tool" => {
            (call.log)("info", json!("Diagnostic trace logging activated"));
            content(vec![text("Logging evaluated")])
        }
        _ => return Err(RpcError::new(jsonrpc::INVALID_PARAMS, format!("unknown tool: {name}"))),
    })
}

const RESOURCES: &[(&str, &str, &str, &str, &str)] = &[
    ("test://static-text", "static-text", "Static Text Resource", "A static text resource for testing", "text/plain"),
    (
        "test://static-binary",
        "static-binary",
        "Static Binary Resource",
        "A static binary resource (image)",
        "image/png",
    ),
    (WATCHED_URI, "watched-resource", "Watched Resource", "A resource that changes every 3 seconds", "text/plain"),
];

/// The fixtures as an MCP [`Extension`].
pub struct Fixtures;

impl Extension for Fixtures {
    fn list(&self, kind: &str, modern: bool) -> Vec<Value> {
        match kind {
            "tools" => tools(modern),
            "resources" => RESOURCES
                .iter()
                .map(|(uri, name, title, d, mime)| {
                    json!({"uri": uri, "name": name, "title": title, "description": d, "mimeType": mime})
                })
                .collect(),
            "resourceTemplates" => vec![json!({
                "uriTemplate": "test://template/{id}/data",
                "name": "template",
                "title": "Resource Template",
                "description": "A resource template with parameter substitution",
                "mimeType": "application/json",
            })],
            "prompts" => prompts(modern),
            _ => Vec::new(),
        }
    }
    fn read(&self, uri: &str) -> Option<Value> {
        // Numbers the watched resource's changes.
        let revision = crate::store::now_ms() / WATCH_PERIOD.as_millis() as i64;
        let one = |mime: &str, field: &str, value: String| Some(json!([{"uri": uri, "mimeType": mime, field: value}]));
        match uri {
            "test://static-text" => {
                one("text/plain", "text", "This is the content of the static text resource.".into())
            }
            "test://static-binary" => one("image/png", "blob", IMAGE_PNG.into()),
            WATCHED_URI => one("text/plain", "text", format!("Watched resource content (revision {revision})")),
            _ => {
                let id = uri.strip_prefix("test://template/")?.strip_suffix("/data")?;
                if id.is_empty() || id.contains('/') {
                    return None;
                }
                let body = json!({"id": id, "templateTest": true, "data": format!("Data for ID: {id}")});
                one("application/json", "text", body.to_string())
            }
        }
    }
    fn run<'a>(&'a self, method: &'a str, name: &'a str, call: &'a Call<'a>) -> Running<'a> {
        match method {
            "tools/call" => Box::pin(call_tool(name, call)),
            _ => Box::pin(std::future::ready(get_prompt(name, call))),
        }
    }
    fn watched(&self) -> Option<(&'static str, Duration)> {
        Some((WATCHED_URI, WATCH_PERIOD))
    }
}

struct Prompt {
    name: &'static str,
    title: &'static str,
    description: &'static str,
    arguments: &'static [(&'static str, &'static str)],
}

const PROMPTS: &[Prompt] = &[
    Prompt {
        name: "test_simple_prompt",
        title: "Simple Test Prompt",
        description: "A simple prompt without arguments",
        arguments: &[],
    },
    Prompt {
        name: "test_prompt_with_arguments",
        title: "Prompt With Arguments",
        description: "A prompt with required arguments",
        arguments: &[("arg1", "First test argument"), ("arg2", "Second test argument")],
    },
    Prompt {
        name: "test_prompt_with_embedded_resource",
        title: "Prompt With Embedded Resource",
        description: "A prompt that includes an embedded resource",
        arguments: &[("resourceUri", "URI of the resource to embed")],
    },
    Prompt {
        name: "test_prompt_with_image",
        title: "Prompt With Image",
        description: "A prompt that includes image content",
        arguments: &[],
    },
];

/// Modern only, like the MRTR tools.
const MRTR_PROMPT: &str = "test_input_required_result_prompt";

fn prompts(modern: bool) -> Vec<Value> {
    let mut list: Vec<Value> = PROMPTS
        .iter()
        .map(|p| {
            let args: Vec<Value> =
                p.arguments.iter().map(|(n, d)| json!({"name": n, "description": d, "required": true})).collect();
            json!({"name": p.name, "title": p.title, "description": p.description, "arguments": args})
        })
        .collect();
    if modern {
        list.push(json!({"name": MRTR_PROMPT, "description": "MRTR: prompt that requires elicitation input"}));
    }
    list
}

fn user(content: Value) -> Value {
    json!({"role": "user", "content": content})
}

fn get_prompt(name: &str, call: &Call<'_>) -> Result<Outcome, RpcError> {
    if let Some(p) = PROMPTS.iter().find(|p| p.name == name) {
        for (arg, _) in p.arguments {
            if !call.args.get(*arg).is_some_and(Value::is_string) {
                return Err(RpcError::new(
                    jsonrpc::INVALID_PARAMS,
                    format!("prompt {name} needs the string argument {arg}"),
                ));
            }
        }
    }
    let arg = |k: &str| call.args.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let messages = match name {
        "test_simple_prompt" => vec![user(text("This is a simple prompt for testing."))],
        "test_prompt_with_arguments" => {
            vec![user(text(format!("Prompt with arguments: arg1='{}', arg2='{}'", arg("arg1"), arg("arg2"))))]
        }
        "test_prompt_with_embedded_resource" => vec![
            user(json!({"type": "resource", "resource": {
                "uri": arg("resourceUri"), "mimeType": "text/plain", "text": "Embedded resource content for testing."
            }})),
            user(text("Please process the embedded resource above.")),
        ],
        "test_prompt_with_image" => vec![
            user(json!({"type": "image", "data": IMAGE_PNG, "mimeType": "image/png"})),
            user(text("Please analyze the image above.")),
        ],
        MRTR_PROMPT => match answer(call, "user_context", "context") {
            Some(context) => vec![user(text(format!("Prompt with context: {context}")))],
            None => {
                let ask_context = elicit("What context should the prompt use?", "context", "string");
                return Ok(ask(json!({"user_context": ask_context}), None));
            }
        },
        _ => return Err(RpcError::new(jsonrpc::INVALID_PARAMS, format!("unknown prompt: {name}"))),
    };
    let description = PROMPTS.iter().find(|p| p.name == name).map_or("MRTR prompt", |p| p.description);
    Ok(Outcome::Complete(json!({"description": description, "messages": messages})))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session runs the tools and prompts an extension lists, so each listed one must have its arm.
    #[tokio::test]
    async fn listed_fixtures_are_the_callable_ones() {
        let (args, responses, caps) = (Map::new(), Map::new(), json!({}));
        for modern in [false, true] {
            let log = |_: &str, _| {};
            let call = Call { args: &args, responses: &responses, state: None, caps: &caps, progress: None, log: &log };
            for (method, list) in [("tools/call", tools(modern)), ("prompts/get", prompts(modern))] {
                for entry in list {
                    let name = entry["name"].as_str().unwrap();
                    let unknown =
                        Fixtures.run(method, name, &call).await.is_err_and(|e| e.message.starts_with("unknown"));
                    assert!(!unknown, "{method} {name}");
                }
            }
        }
        assert!(!tools(false).iter().any(|t| t["name"] == "test_input_required_result_elicitation"), "modern only");
        for r in Fixtures.list("resources", false) {
            assert!(Fixtures.read(r["uri"].as_str().unwrap()).is_some(), "{r}");
        }
        assert_eq!(Fixtures.read("test://template/123/data").unwrap()[0]["uri"], "test://template/123/data");
        assert!(Fixtures.read("test://template//data").is_none());
        assert!(Fixtures.read("devices://").is_none());
    }
}
