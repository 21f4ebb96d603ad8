//! OpenAPI 3.1 document generated from the operation catalogue; `docs.rs` renders it as HTML.
//!
//! Both are derived from `ops::CATALOGUE` (once, when first asked for), so neither can drift from what the daemon accepts: tool
//! schemas are used as they are, and the REST read routes take their query parameters and result schema from the
//! tool they map onto.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::config::Role;
use crate::error::ErrorCode;
use crate::ops::{CATALOGUE, Op};

/// Error responses: status, component name, what it means. The taxonomy's codes (docs/architecture.md, Errors) are
/// added from `ErrorCode`.
pub const ERRORS: &[(u16, &str, &str)] = &[
    (400, "BadRequest", "The request or its arguments are invalid."),
    (401, "Unauthorized", "No bearer token, or an unknown, revoked or expired one."),
    (403, "Forbidden", "The token's role is too low for this call, or the gateway is in read-only mode."),
    (404, "NotFound", "No such device, ticket, incident, space, task or tool."),
    (408, "RequestTimeout", "The body did not arrive within 30 s."),
    (413, "PayloadTooLarge", "The body is larger than allowed (1 MiB; 256 KiB for the webhook)."),
    (422, "UnprocessableEntity", "Xyte rejected the request; the message is Xyte's."),
    (
        429,
        "TooManyRequests",
        "Too many requests from this client: failed sign-ins, or (the command tools, code `rate_limited`) more commands \
         than the outbox admits; retry after `Retry-After` seconds.",
    ),
    (500, "InternalError", "An unexpected failure on the gateway."),
    (502, "BadGateway", "Xyte refused the gateway's credential, or failed."),
    (
        503,
        "ServiceUnavailable",
        "Xyte is unreachable or is rate-limiting the gateway; retry after `Retry-After` seconds.",
    ),
    (504, "GatewayTimeout", "Xyte did not answer in time."),
    (507, "InsufficientStorage", "The gateway's disk is full; nothing was stored. Retry once space is freed."),
];

/// Errors any authenticated API call may answer with.
const API_ERRORS: &[u16] = &[400, 401, 403, 404, 422, 429, 500, 502, 503, 504];
/// Tool calls also carry a body and may need to store something.
const TOOL_ERRORS: &[u16] = &[400, 401, 403, 404, 408, 413, 422, 429, 500, 502, 503, 504, 507];

/// Tags: name, heading on the docs page, description.
pub const TAGS: &[(&str, &str, &str)] = &[
    ("reads", "Read tools", "Tools that only read (role `viewer`): `POST /v1/tools/{name}`, body = arguments."),
    ("operate", "Operating tools", "Commands, room presets, tickets, incidents and context (role `operator`)."),
    ("admin", "Admin tools", "Claiming, changing and deleting devices, raw Xyte API calls (role `admin`)."),
    ("rest", "REST reads", "The same data and query parameters as the read tools, as plain GETs."),
    ("events", "Events", "The local event log (SSE or JSON) and the inbound webhook."),
    ("tools", "Catalogue", "The list of tools with their schemas."),
    ("mcp", "MCP", "MCP Streamable HTTP transport (JSON-RPC; see the MCP specification)."),
    ("system", "System", "Health, metrics and this documentation."),
];

/// The OpenAPI 3.1 document of the LAN HTTP API, `GET /v1/openapi.json`.
pub fn document(version: &str) -> Value {
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut add = |path: &str, method: &str, op: Value| {
        paths.entry(path.to_string()).or_default().insert(method.to_string(), op);
    };
    for op in CATALOGUE.iter() {
        add(&format!("/v1/tools/{}", op.name), "post", tool_operation(op));
    }
    for route in super::rest::ROUTES {
        add(route.label, "get", read_operation(route.label, route.tool, route.path_arg));
    }
    for (path, method, op) in fixed_operations() {
        add(&path, method, op);
    }
    let paths: Map<String, Value> = paths.into_iter().map(|(p, ops)| (p, Value::Object(ops))).collect();
    let responses: Map<String, Value> =
        ERRORS.iter().map(|&(status, name, _)| (name.into(), error_response(status))).collect();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "xyte-edge",
            "version": version,
            "summary": "LAN API of a xyte-edge gateway: a local, offline-capable view of a Xyte organization.",
            "description": "Every operation of the gateway's catalogue is callable as `POST /v1/tools/{name}` with the \
                            arguments as a JSON body; the answer is the structured result or an error object. The \
                            REST reads under `/v1` serve the same data with the same query parameters. Authenticate \
                            with `Authorization: Bearer <token>` (`xyte-edge token create --name N --role \
                            viewer|operator|admin`). Roles are ordered viewer < operator < admin.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "tags": TAGS.iter().map(|(name, _, about)| json!({"name": name, "description": about})).collect::<Vec<_>>(),
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A LAN token from `xyte-edge token create`; its role (viewer, operator, admin) \
                                    decides what it may call.",
                },
            },
            "schemas": {
                "Error": error_schema(),
                "Tool": tool_schema(),
                "Health": health_schema(),
                "Ready": ready_schema(),
            },
            "responses": responses,
            "headers": {
                "RetryAfter": {
                    "description": "Seconds to wait before retrying.",
                    "schema": {"type": "integer", "minimum": 0},
                },
                "WWWAuthenticate": {
                    "description": "Always `Bearer realm=\"xyte-edge\"`.",
                    "schema": {"type": "string"},
                },
            },
        },
    })
}

/// The error body (docs/architecture.md, Errors), exactly as `crate::error::Error::to_body` serializes it.
fn error_schema() -> Value {
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    json!({
        "type": "object",
        "required": ["error"],
        "additionalProperties": false,
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "additionalProperties": false,
                "properties": {
                    "code": {"type": "string", "enum": codes, "description": "Stable error code."},
                    "message": {"type": "string", "description": "What happened and what to do next."},
                    "hint": {"type": "string", "description": "A further suggestion, when there is one."},
                    "retry_after_s": {
                        "type": "integer",
                        "minimum": 0,
                        "description": "Seconds to wait before retrying (rate limits).",
                    },
                },
            },
        },
        "examples": [{"error": {"code": "rate_limited", "message": "Xyte is rate-limiting this gateway; retry shortly",
                                "retry_after_s": 2}}],
    })
}

/// One entry of `GET /v1/tools`: an MCP `tools/list` entry plus the role it needs and whether the caller has it.
fn tool_schema() -> Value {
    json!({
        "type": "object",
        "required": ["name", "inputSchema"],
        "properties": {
            "name": {"type": "string", "pattern": "^[a-z0-9_]{1,64}$"},
            "title": {"type": "string"},
            "description": {"type": "string"},
            "role": {"type": "string", "enum": ["viewer", "operator", "admin"],
                     "description": "The role a call needs."},
            "allowed": {"type": "boolean", "description": "Whether the calling token's role may call it."},
            "inputSchema": {"type": "object", "description": "JSON Schema (2020-12) of the arguments."},
            "outputSchema": {"type": "object", "description": "JSON Schema (2020-12) of the structured result."},
            "annotations": {"type": "object", "description": "MCP tool annotations."},
        },
    })
}

/// Health bodies: loose on purpose (monitoring reads the status code; the body explains).
fn health_schema() -> Value {
    json!({"type": "object", "properties": {
        "status": {"type": "string", "enum": ["ok", "unhealthy"]},
        "stale": {"type": "array", "description": "Components whose heartbeat is late.", "items": {"type": "object",
            "properties": {"component": {"type": "string"}, "age_s": {"type": "integer"}}}},
    }})
}

fn ready_schema() -> Value {
    json!({"type": "object", "properties": {
        "ready": {"type": "boolean"},
        "reasons": {"type": "array", "items": {"type": "string"}, "description": "Why it is not ready; also \
            `uplink: disconnected` while a configured MQTT uplink is not connected, which does not make it unready."},
        "xyte_reachable": {"type": "boolean"},
        "cache_warm": {"type": "boolean"},
        "uplink_connected": {"type": "boolean", "description": "Present when the MQTT uplink is configured."},
    }})
}

fn error_response(status: u16) -> Value {
    let (_, _, what) = ERRORS.iter().find(|e| e.0 == status).copied().unwrap_or((status, "", "Error."));
    let codes: Vec<String> =
        ErrorCode::ALL.iter().filter(|c| c.http_status() == status).map(|c| format!("`{}`", c.as_str())).collect();
    let description = if codes.is_empty() { what.to_string() } else { format!("{what} Codes: {}.", codes.join(", ")) };
    let mut r = json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    });
    let header = match status {
        401 => Some(("WWW-Authenticate", "WWWAuthenticate")),
        429 | 503 => Some(("Retry-After", "RetryAfter")),
        _ => None,
    };
    if let Some((name, component)) = header {
        r["headers"] = json!({name: {"$ref": format!("#/components/headers/{component}")}});
    }
    r
}

/// Adds `$ref`s to the shared error responses for `statuses`.
fn with_errors(mut responses: Value, statuses: &[u16]) -> Value {
    for &status in statuses {
        if let Some((_, name, _)) = ERRORS.iter().find(|e| e.0 == status) {
            responses[status.to_string()] = json!({"$ref": format!("#/components/responses/{name}")});
        }
    }
    responses
}

fn family(op: &Op) -> &'static str {
    match op.role {
        Role::Admin => "admin",
        _ if op.annotations["readOnlyHint"] == json!(true) => "reads",
        _ => "operate",
    }
}

fn tool_operation(op: &Op) -> Value {
    let input = op.input.clone();
    let body_required = input["required"].as_array().is_some_and(|r| !r.is_empty());
    let example = example_arguments(&input, op.annotations["readOnlyHint"] != json!(true));
    let mut responses = with_errors(
        json!({"200": {
            "description": "The structured result (what an MCP client gets as `structuredContent`).",
            "content": {"application/json": {"schema": op.output.clone()}},
        }}),
        TOOL_ERRORS,
    );
    if op.outbox_admitted {
        responses["429"] = outbox_full();
    }
    json!({
        "operationId": op.name,
        "summary": op.title,
        "description": format!("{}\n\nRequires role `{}`.", op.description, op.role),
        "tags": [family(op)],
        "x-required-role": op.role.as_str(),
        "x-mcp-annotations": op.annotations,
        "requestBody": {
            "required": body_required,
            "description": "The tool's arguments (an empty body means no arguments).",
            "content": {"application/json": {"schema": input, "example": example}},
        },
        "responses": responses,
    })
}

/// The 429 of a tool that the outbox limits admit (`ops::OUTBOX_ADMITTED`).
fn outbox_full() -> Value {
    json!({
        "description": "The command outbox is at its limit (`XYTE_OUTBOX_MAX`, or `XYTE_OUTBOX_MAX_PER_DEVICE` for a \
                        device); code `rate_limited`, nothing was queued or sent. Also answered after too many failed \
                        sign-ins (`too_many_requests`). Retry after `Retry-After` seconds.",
        "headers": {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}},
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    })
}

/// Arguments that satisfy the schema's required keys, with placeholders, plus the subject (`device_id`, `room`) when
/// it may come from the caller's context, since a fresh caller has none; mutating tools get `dry_run: true` so a
/// pasted example never changes anything.
fn example_arguments(schema: &Value, mutating: bool) -> Value {
    let mut args = Map::new();
    let props = schema["properties"].as_object();
    let required = schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str);
    let subject = ["device_id", "room"].into_iter().filter(|name| {
        props.and_then(|p| p.get(*name)).and_then(|p| p["description"].as_str()).is_some_and(|d| d.contains("context"))
    });
    for name in required.chain(subject) {
        let prop = props.and_then(|p| p.get(name)).unwrap_or(&Value::Null);
        args.insert(name.to_string(), example_value(name, prop));
    }
    // `confirm` must repeat the key or device id it confirms.
    if args.contains_key("confirm")
        && let Some(v) = args.get("device_id").or_else(|| args.get("key")).cloned()
    {
        args.insert("confirm".into(), v);
    }
    if mutating && props.is_some_and(|p| p.contains_key("dry_run")) {
        args.insert("dry_run".into(), json!(true));
    }
    Value::Object(args)
}

fn example_value(name: &str, prop: &Value) -> Value {
    if let Some(first) = prop["enum"].as_array().and_then(|e| e.first()) {
        return first.clone();
    }
    if let Some(c) = prop.get("const") {
        return c.clone();
    }
    if let Some(arm) = ["oneOf", "anyOf"].iter().find_map(|k| prop[k].as_array().and_then(|a| a.first())) {
        return example_value(name, arm);
    }
    let ty = match &prop["type"] {
        Value::Array(types) => types.iter().find(|t| *t != "null").cloned().unwrap_or(Value::Null),
        other => other.clone(),
    };
    match ty.as_str() {
        Some("integer") | Some("number") => {
            prop.get("minimum").filter(|m| m.as_f64() > Some(0.0)).cloned().unwrap_or(json!(1))
        }
        Some("boolean") => json!(true),
        Some("array") => json!([]),
        Some("object") => json!({}),
        _ => json!(name.to_ascii_uppercase()),
    }
}

/// A REST read: query parameters and result schema taken from the tool it maps onto.
fn read_operation(path: &str, tool: &str, path_arg: Option<&str>) -> Value {
    let op = crate::ops::find(tool);
    let input = op.map(|o| o.input.clone()).unwrap_or_else(|| json!({"properties": {}}));
    let required: Vec<&str> = input["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let mut parameters = Vec::new();
    if let Some(arg) = path_arg {
        let prop = input["properties"].get(arg).cloned().unwrap_or_else(|| json!({"type": "string", "minLength": 1}));
        let mut p = parameter("id", "path", &prop, true);
        if p.get("description").is_none() {
            p["description"] = json!(format!("The `{arg}`."));
        }
        parameters.push(p);
    }
    for (name, prop) in input["properties"].as_object().into_iter().flatten() {
        if Some(name.as_str()) != path_arg {
            parameters.push(parameter(name, "query", prop, required.contains(&name.as_str())));
        }
    }
    let output = op.map(|o| o.output.clone()).unwrap_or_else(|| json!({"type": "object"}));
    let role = op.map_or(Role::Viewer, |o| o.role);
    let title = op.map_or(tool, |o| o.title);
    let mut content = json!({"application/json": {"schema": output}});
    let mut description = format!(
        "The same data as the `{tool}` tool, with its arguments as query parameters{}.\n\nRequires role `{role}`.",
        path_arg.map(|a| format!(" (`{{id}}` is `{a}`)")).unwrap_or_default()
    );
    if path == "/v1/events" {
        // SSE when asked for (`Accept: text/event-stream`), else the JSON list.
        parameters.push(json!({"name": "Last-Event-ID", "in": "header", "required": false,
            "description": "Resume an event stream after this id (replayed from the event log, then live).",
            "schema": {"type": "string", "pattern": "^[0-9]+$"}}));
        content["text/event-stream"] = json!({"schema": {"type": "string", "description":
            "`id:`/`event:`/`data:` frames (data = one event as JSON), a `retry:` hint and a comment heartbeat \
             every 15 s; `event: lagged` before a too-slow client is disconnected."}});
        description.insert_str(
            0,
            "With `Accept: text/event-stream`, a Server-Sent Events stream of the event log: past events after \
             `Last-Event-ID` (or `after_id`) first, then live ones. Otherwise a JSON list.\n\n",
        );
    }
    json!({
        "operationId": operation_id("get", path),
        "summary": title,
        "description": description,
        "tags": [if path == "/v1/events" { "events" } else { "rest" }],
        "x-required-role": role.as_str(),
        "x-tool": tool,
        "parameters": parameters,
        "responses": with_errors(
            json!({"200": {"description": format!("The `{tool}` result."), "content": content}}),
            API_ERRORS,
        ),
    })
}

/// A parameter from a tool argument's schema: scalars and arrays as plain query values, objects as JSON.
fn parameter(name: &str, location: &str, prop: &Value, required: bool) -> Value {
    let mut schema = prop.clone();
    let description = schema.as_object_mut().and_then(|s| s.remove("description"));
    let mut p = json!({"name": name, "in": location, "required": required});
    if schema["type"] == "object" {
        p["content"] = json!({"application/json": {"schema": schema}});
    } else {
        p["schema"] = schema;
    }
    if let Some(d) = description {
        p["description"] = d;
    }
    p
}

fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_string();
    for part in path.split(|c: char| !c.is_ascii_alphanumeric()).filter(|p| !p.is_empty()) {
        id.push('_');
        id.push_str(part);
    }
    id
}

/// Routes that are not tool calls or REST reads: health, metrics, catalogue, webhook, docs, MCP.
fn fixed_operations() -> Vec<(String, &'static str, Value)> {
    let mut out = Vec::new();
    let mut add = |path: &str, method: &'static str, mut op: Value| {
        op["operationId"] = json!(operation_id(method, path));
        out.push((path.to_string(), method, op));
    };
    let no_token = json!([]);
    let token_optional = json!([{}, {"bearerAuth": []}]);
    for prefix in ["", "/v1"] {
        let alias = if prefix.is_empty() { "" } else { " (alias)" };
        add(
            &format!("{prefix}/healthz"),
            "get",
            json!({
                "summary": format!("Liveness{alias}"), "tags": ["system"], "security": no_token,
                "description": "200 while the runtime, the store writer and the command forwarder are alive.",
                "responses": {"200": json_body("Alive: `{\"status\": \"ok\"}`.", "Health"),
                              "503": json_body("A core task has stopped; `stale` names it.", "Health")},
            }),
        );
        add(
            &format!("{prefix}/readyz"),
            "get",
            json!({
                "summary": format!("Readiness{alias}"), "tags": ["system"], "security": no_token,
                "description": "200 when the store is writable and either Xyte answered within the last 5 minutes or \
                                the cache is warm; 503 with the reasons otherwise.",
                "responses": {"200": json_body("Ready.", "Ready"),
                              "503": json_body("Not ready; `reasons` says why.", "Ready")},
            }),
        );
    }
    add(
        "/v1/metrics",
        "get",
        json!({
            "summary": "Prometheus metrics", "tags": ["system"], "security": token_optional,
            "x-required-role": "viewer",
            "description": "Prometheus text exposition. No token is needed on the loopback listener; on the LAN a \
                            `viewer` token is.",
            "responses": with_errors(json!({"200": {"description": "Metrics.",
                "content": {"text/plain": {"schema": {"type": "string"}}}}}), &[401, 403]),
        }),
    );
    add(
        "/v1/tools",
        "get",
        json!({
            "summary": "List tools", "tags": ["tools"], "x-required-role": "viewer",
            "description": "The operation catalogue: every tool with its input and output schemas and annotations (the \
                            same list an MCP client gets from `tools/list`), the role each needs and whether the \
                            caller's token may call it. Call one with `POST /v1/tools/{name}`.",
            "responses": with_errors(json!({"200": {"description": "The catalogue.", "content": {"application/json": {
                "schema": {"type": "object", "required": ["tools"], "properties": {
                    "tools": {"type": "array", "items": {"$ref": "#/components/schemas/Tool"}},
                    "role": {"type": "string", "description": "The calling token's role."}}}}}}}),
                &[401, 403, 429, 500]),
        }),
    );
    add(
        "/v1/webhook",
        "post",
        json!({
            "summary": "Receive a Xyte webhook", "tags": ["events"], "security": token_optional,
            "x-required-role": "operator",
            "description": "Authenticated by `X-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>` keyed with \
                            `XYTE_WEBHOOK_SECRET`, or by an `operator` token. Stored durably before `202`; a repeated \
                            `id` is accepted once. At most 256 KiB.",
            "parameters": [{"name": "X-Signature-256", "in": "header", "required": false,
                "description": "`sha256=` followed by the hex HMAC-SHA256 of the raw body.",
                "schema": {"type": "string", "pattern": "^sha256=[0-9a-fA-F]{64}$"}}],
            "requestBody": {"required": true, "content": {"application/json": {
                "schema": {"type": "object", "required": ["type"], "properties": {
                    "type": {"type": "string", "minLength": 1, "description": "Xyte's event type."},
                    "data": {"type": "object", "description": "Xyte's payload (default {})."},
                    "id": {"type": "string", "description": "Delivery id; a repeated id is accepted once."}}},
                "example": {"type": "device.status_changed", "data": {"device_id": "DEVICE_ID", "status": "offline"},
                            "id": "evt-1"}}}},
            "responses": with_errors(json!({
                "202": {"description": "Stored (or already stored under this id).", "content": {"application/json": {
                    "schema": {"type": "object", "required": ["accepted", "id", "duplicate"], "properties": {
                        "accepted": {"type": "boolean"}, "id": {"type": "string"},
                        "duplicate": {"type": "boolean", "description": "This id was stored before."},
                        "event_id": {"type": "integer", "description": "The `webhook.received` event."},
                        "received_at": {"type": "string", "description": "When it was first stored."}}}}}},
                "405": {"description": "Only POST."}}),
                &[400, 401, 403, 408, 413, 429, 500, 507]),
        }),
    );
    add(
        "/v1/openapi.json",
        "get",
        json!({
            "summary": "This OpenAPI document", "tags": ["system"], "security": no_token,
            "description": "The OpenAPI 3.1 document, generated from the operation catalogue.",
            "responses": {"200": {"description": "The document.",
                "content": {"application/json": {"schema": {"type": "object"}}}}},
        }),
    );
    add(
        "/v1/docs",
        "get",
        json!({
            "summary": "API reference page", "tags": ["system"], "security": no_token,
            "description": "A self-contained HTML reference of every route and tool (no external assets).",
            "responses": {"200": {"description": "The page.",
                                  "content": {"text/html": {"schema": {"type": "string"}}}}},
        }),
    );
    add(
        "/",
        "get",
        json!({
            "summary": "Facility dashboard", "tags": ["system"], "security": no_token,
            "description": "The staff dashboard: one self-contained page (its script, style sheet and icon are \
                            `/dashboard.js`, `/dashboard.css`, `/favicon.svg`). The page needs no token; it asks for \
                            one and sends it as a bearer header on every data call.",
            "responses": {"200": {"description": "The page.",
                                  "content": {"text/html": {"schema": {"type": "string"}}}}},
        }),
    );
    for prefix in ["", "/v1"] {
        let path = format!("{prefix}/mcp");
        for (method, summary, description, responses) in mcp_operations() {
            let mut op = json!({
                "summary": summary, "description": description, "tags": ["mcp"], "x-required-role": "viewer",
                "parameters": mcp_headers(), "responses": responses,
            });
            if method == "post" {
                op["requestBody"] = json!({"required": true, "content": {"application/json": {
                    "schema": {"type": ["object", "array"],
                               "description": "A JSON-RPC 2.0 message (batches only in 2025-03-26)."},
                    "example": {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                        "protocolVersion": "2025-06-18", "capabilities": {},
                        "clientInfo": {"name": "curl", "version": "1"}}}}}});
            }
            add(&path, method, op);
        }
    }
    out
}

fn json_body(description: &str, component: &str) -> Value {
    json!({"description": description,
           "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{component}")}}}})
}

fn mcp_headers() -> Value {
    let header = |name: &str, description: &str| {
        json!({"name": name, "in": "header", "required": false, "description": description,
               "schema": {"type": "string"}})
    };
    json!([
        header("Mcp-Session-Id", "The session from `initialize` (legacy protocol versions)."),
        header("MCP-Protocol-Version", "The negotiated protocol version."),
        header("Mcp-Method", "Modern era (2026-07-28): the JSON-RPC method of the body."),
        header("Mcp-Name", "Modern era: the tool, resource or prompt name the request is about."),
    ])
}

fn mcp_operations() -> Vec<(&'static str, &'static str, &'static str, Value)> {
    let rpc = json!({"type": "object", "description": "A JSON-RPC 2.0 message."});
    let sse = json!({"schema": {"type": "string", "description": "Server-Sent Events carrying JSON-RPC messages."}});
    vec![
        (
            "post",
            "MCP request",
            "Sends one JSON-RPC message. Requests are answered with JSON or, when progress is reported, an SSE \
             stream; notifications and responses with 202. Each tool call needs the tool's role.",
            with_errors(
                json!({
                    "200": {"description": "The JSON-RPC response.",
                            "content": {"application/json": {"schema": rpc}, "text/event-stream": sse}},
                    "202": {"description": "Notification or response accepted."},
                }),
                &[400, 401, 403, 404, 408, 413, 429],
            ),
        ),
        (
            "get",
            "MCP notification stream",
            "Opens the server-to-client SSE stream of a legacy session.",
            with_errors(
                json!({"200": {"description": "The stream.", "content": {"text/event-stream": sse}},
                       "405": {"description": "No stream is offered (modern era)."}}),
                &[400, 401, 403, 404],
            ),
        ),
        (
            "delete",
            "End MCP session",
            "Ends a legacy session.",
            with_errors(json!({"2XX": {"description": "Session ended."}}), &[400, 401, 403, 404]),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn walk<'a>(v: &'a Value, at: String, f: &mut dyn FnMut(&str, &'a Value)) {
        f(&at, v);
        match v {
            Value::Object(m) => m.iter().for_each(|(k, c)| walk(c, format!("{at}/{k}"), f)),
            Value::Array(a) => a.iter().enumerate().for_each(|(i, c)| walk(c, format!("{at}/{i}"), f)),
            _ => {}
        }
    }

    #[test]
    fn every_tool_has_its_path() {
        let doc = document("1.2.3");
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["version"], "1.2.3");
        for op in CATALOGUE.iter() {
            let o = &doc["paths"][format!("/v1/tools/{}", op.name)]["post"];
            assert_eq!(o["operationId"], op.name, "{}", op.name);
            assert_eq!(o["summary"], op.title);
            assert_eq!(o["x-required-role"], op.role.as_str());
            assert_eq!(o["x-mcp-annotations"], op.annotations);
            assert!(o["description"].as_str().unwrap().contains(&format!("Requires role `{}`.", op.role)));
            assert_eq!(o["requestBody"]["content"]["application/json"]["schema"]["type"], "object");
            assert_eq!(o["responses"]["200"]["content"]["application/json"]["schema"], op.output);
            for status in ["400", "401", "403", "404", "502", "503", "504", "507"] {
                assert!(o["responses"][status]["$ref"].is_string(), "{} {status}", op.name);
            }
            let too_many = &o["responses"]["429"];
            if op.outbox_admitted {
                let what = too_many["description"].as_str().unwrap();
                assert!(what.contains("XYTE_OUTBOX_MAX") && what.contains("`rate_limited`"), "{}: {what}", op.name);
                assert_eq!(too_many["headers"]["Retry-After"]["$ref"], "#/components/headers/RetryAfter");
            } else {
                assert!(too_many["$ref"].is_string(), "{} 429", op.name);
            }
            let tag = o["tags"][0].as_str().unwrap();
            assert!(["reads", "operate", "admin"].contains(&tag), "{}", op.name);
        }
        assert_eq!(doc["paths"]["/v1/tools/list_devices"]["post"]["tags"][0], "reads");
        assert_eq!(doc["paths"]["/v1/tools/send_command"]["post"]["tags"][0], "operate");
        assert_eq!(doc["paths"]["/v1/tools/delete_device"]["post"]["tags"][0], "admin");
    }

    #[test]
    fn every_documented_error_status_can_happen() {
        // 401, 408 and 413 come from the HTTP layer (no token; body too slow or too large); every other one from an
        // error code.
        let produced: Vec<u16> = crate::error::ErrorCode::ALL.iter().map(|c| c.http_status()).collect();
        for (status, name, _) in ERRORS {
            assert!(produced.contains(status) || [401, 408, 413].contains(status), "{status} {name} is never answered");
        }
        for status in produced {
            assert!(ERRORS.iter().any(|(s, _, _)| *s == status), "{status} is answered but not documented");
        }
    }

    #[test]
    fn every_route_of_the_spec_is_documented() {
        let doc = document("0");
        for (path, methods) in [
            ("/healthz", &["get"][..]),
            ("/v1/healthz", &["get"]),
            ("/readyz", &["get"]),
            ("/v1/readyz", &["get"]),
            ("/v1/metrics", &["get"]),
            ("/v1/tools", &["get"]),
            ("/v1/events", &["get"]),
            ("/v1/webhook", &["post"]),
            ("/v1/openapi.json", &["get"]),
            ("/v1/docs", &["get"]),
            ("/", &["get"]),
            ("/mcp", &["post", "get", "delete"]),
            ("/v1/mcp", &["post", "get", "delete"]),
        ] {
            for m in methods {
                assert!(doc["paths"][path][m].is_object(), "{m} {path}");
            }
        }
        for route in crate::http::rest::ROUTES {
            let (path, tool, arg) = (route.label, route.tool, route.path_arg);
            let op = crate::ops::find(tool).unwrap_or_else(|| panic!("{path} maps onto unknown tool {tool}"));
            let get = &doc["paths"][path]["get"];
            assert_eq!(get["responses"]["200"]["content"]["application/json"]["schema"], op.output, "{path}");
            let input = op.input.clone();
            if let Some(arg) = arg {
                assert!(input["properties"].get(arg).is_some(), "{tool} has no {arg}");
            }
            let params: Vec<&str> =
                get["parameters"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
            for name in input["properties"].as_object().unwrap().keys() {
                assert!(Some(name.as_str()) == arg || params.contains(&name.as_str()), "{path} lacks {name}");
            }
        }
        let devices = &doc["paths"]["/v1/devices"]["get"]["parameters"];
        for name in ["space_id", "status", "query", "limit", "cursor"] {
            assert!(devices.as_array().unwrap().iter().any(|p| p["name"] == name && p["in"] == "query"), "{name}");
        }
        for path in ["/healthz", "/readyz", "/v1/openapi.json", "/v1/docs"] {
            assert_eq!(doc["paths"][path]["get"]["security"], json!([]), "{path}");
        }
        assert!(doc["paths"]["/v1/metrics"]["get"]["responses"]["200"]["content"]["text/plain"].is_object());
        assert!(doc["paths"]["/v1/events"]["get"]["responses"]["200"]["content"]["text/event-stream"].is_object());
    }

    #[test]
    fn every_ref_resolves_and_operation_ids_are_unique_and_path_params_declared() {
        let doc = document("0");
        walk(&doc, String::new(), &mut |at, v| {
            if let Some(r) = v.get("$ref").and_then(Value::as_str) {
                let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("{at}: external $ref {r}"));
                assert!(doc.pointer(pointer).is_some(), "{at}: unresolved $ref {r}");
            }
        });
        let mut ids = std::collections::HashSet::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                assert!(ids.insert(op["operationId"].as_str().unwrap().to_string()), "{method} {path}");
                let declared: Vec<&str> = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "path")
                    .map(|p| p["name"].as_str().unwrap())
                    .collect();
                let templated: Vec<&str> =
                    path.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}')).collect();
                assert_eq!(declared, templated, "{method} {path}");
            }
        }
    }

    #[test]
    fn request_schemas_have_no_null() {
        let doc = document("0");
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                let check = |what: &str, schema: &Value| {
                    walk(schema, String::new(), &mut |at, v| {
                        let bad = match v.get("type") {
                            Some(Value::String(t)) => t == "null",
                            Some(Value::Array(ts)) => ts.iter().any(|t| t == "null"),
                            _ => false,
                        };
                        let null_value = v.get("const") == Some(&Value::Null)
                            || v.get("enum").and_then(Value::as_array).is_some_and(|e| e.contains(&Value::Null));
                        assert!(!bad && !null_value, "{method} {path} {what}{at}: {v}");
                    });
                };
                check("body", &op["requestBody"]);
                check("parameters", &op["parameters"]);
            }
        }
    }

    #[test]
    fn error_schema_matches_how_errors_serialize() {
        let doc = document("0");
        let schema = &doc["components"]["schemas"]["Error"];
        let inner = &schema["properties"]["error"];
        let codes = inner["properties"]["code"]["enum"].as_array().unwrap();
        for code in ErrorCode::ALL {
            let full = Error::new(code, "m").with_hint("h").with_retry_after(3).to_body();
            let minimal = Error::new(code, "m").to_body();
            for body in [full, minimal] {
                assert_eq!(body.as_object().unwrap().keys().collect::<Vec<_>>(), ["error"]);
                let e = body["error"].as_object().unwrap();
                for key in e.keys() {
                    assert!(inner["properties"].get(key).is_some(), "{key} is not in the Error schema");
                }
                for key in inner["required"].as_array().unwrap() {
                    assert!(e.contains_key(key.as_str().unwrap()), "{key} is required but absent");
                }
                assert!(codes.contains(&body["error"]["code"]));
                assert!(body["error"]["retry_after_s"].is_null() || body["error"]["retry_after_s"].is_u64());
            }
        }
    }

    #[test]
    fn document_round_trips_and_is_deterministic() {
        let text = serde_json::to_string_pretty(&document("9.9.9")).unwrap();
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, document("9.9.9"));
        assert_eq!(text, serde_json::to_string_pretty(&document("9.9.9")).unwrap());
        let paths: Vec<&String> = back["paths"].as_object().unwrap().keys().collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted);
    }

    /// Builds the document (and the docs page) and, with `XYTE_WRITE_OPENAPI` set, writes them to
    /// `$CARGO_TARGET_DIR/openapi.json` and `…/openapi-docs.html` for `tests/interop/openapi_check.py`.
    #[test]
    fn write_document_when_asked() {
        let text = serde_json::to_string_pretty(&document(env!("CARGO_PKG_VERSION"))).unwrap();
        let page = super::super::docs::docs_page(env!("CARGO_PKG_VERSION"));
        assert!(text.len() > 10_000 && page.len() > 10_000);
        if std::env::var_os("XYTE_WRITE_OPENAPI").is_some() {
            let dir = std::env::var("CARGO_TARGET_DIR")
                .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target").into());
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(format!("{dir}/openapi.json"), text + "\n").unwrap();
            std::fs::write(format!("{dir}/openapi-docs.html"), page).unwrap();
        }
    }

    #[test]
    fn example_arguments_satisfy_the_required_keys() {
        for op in CATALOGUE.iter() {
            let input = op.input.clone();
            let example = example_arguments(&input, true);
            for key in input["required"].as_array().into_iter().flatten() {
                assert!(example.get(key.as_str().unwrap()).is_some(), "{}: {key}", op.name);
            }
            for key in example.as_object().unwrap().keys() {
                assert!(input["properties"].get(key).is_some(), "{}: {key}", op.name);
            }
        }
    }
}
