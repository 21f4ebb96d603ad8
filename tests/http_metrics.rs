//! `GET /v1/metrics` on the running demo: no token on the loopback listener, a `viewer` token on
//! the LAN listener; the exposition parses, carries the documented names, counts the requests and tool calls made, and
//! every metric the packaged Grafana dashboard queries exists in it.

use std::collections::BTreeSet;

use serde_json::{Value, json};

mod support;
use support::Gateway;

/// (status, content type, body)
fn get(agent: &ureq::Agent, url: &str, token: Option<&str>) -> (u16, String, String) {
    let mut req = agent.get(url);
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let mut resp = req.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let content_type = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (status, content_type, resp.body_mut().read_to_string().unwrap_or_default())
}

fn post(agent: &ureq::Agent, url: &str, token: &str, body: &Value) -> (u16, Value) {
    let mut resp = agent
        .post(url)
        .header("Content-Type", "application/json")
        .header("Authorization", &format!("Bearer {token}"))
        .send(body.to_string())
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = resp.status().as_u16();
    (status, serde_json::from_str(&resp.body_mut().read_to_string().unwrap_or_default()).unwrap_or(Value::Null))
}

/// Checks the text exposition line by line: comments are `# HELP|TYPE|UNIT|EOF`, every other line is
/// `name{labels} value` (labels optional) with a numeric value. Returns (series, value) pairs.
fn parse(text: &str) -> Vec<(String, f64)> {
    assert!(text.ends_with("# EOF\n"), "an OpenMetrics exposition ends with # EOF");
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let kind = comment.split(' ').next().unwrap();
            assert!(["HELP", "TYPE", "UNIT", "EOF"].contains(&kind), "unexpected comment: {line}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad metric name in: {line}"
        );
        if name_end < series.len() {
            let labels = &series[name_end..];
            assert!(labels.starts_with('{') && labels.ends_with('}'), "bad labels in: {line}");
            for pair in labels[1..labels.len() - 1].split("\",").filter(|p| !p.is_empty()) {
                let (key, val) = pair.split_once('=').unwrap_or_else(|| panic!("bad label {pair:?} in: {line}"));
                assert!(key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "bad label key in: {line}");
                assert!(val.starts_with('"'), "unquoted label value in: {line}");
            }
        }
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in: {line}")),
        };
        samples.push((series.to_string(), v));
    }
    samples
}

fn value(samples: &[(String, f64)], series: &str) -> Option<f64> {
    samples.iter().find(|(s, _)| s == series).map(|(_, v)| *v)
}

fn base_name(series: &str) -> String {
    let name = series.split('{').next().unwrap();
    ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name).to_string()
}

/// Metric names in a PromQL expression (`xyte_…`, `process_…`), histogram series suffixes removed.
fn names_in_expr(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut i = 0;
    while i < expr.len() {
        let boundary = i == 0 || !expr[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
        if boundary && (expr[i..].starts_with("xyte_") || expr[i..].starts_with("process_")) {
            let end = expr[i..].find(|c: char| !(c.is_ascii_lowercase() || c == '_')).map_or(expr.len(), |n| i + n);
            names.push(base_name(&expr[i..end]));
            i = end;
        } else {
            i += expr[i..].chars().next().unwrap().len_utf8();
        }
    }
    names
}

fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match v.as_str() {
                    Some(s) if k == "expr" => out.push(s.to_string()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| exprs(i, out)),
        _ => {}
    }
}

#[test]
fn metrics_on_both_listeners() {
    let gw = Gateway::start(&[]);
    let agent = Gateway::agent(&gw.cert);
    let viewer = gw.token("v", "viewer");
    let operator = gw.token("o", "operator");
    let local = format!("http://{}/v1/metrics", gw.local);

    // Loopback: no token needed; OpenMetrics text.
    let (status, content_type, text) = get(&agent, &local, None);
    assert_eq!(status, 200, "{text}");
    assert_eq!(content_type, "application/openmetrics-text; version=1.0.0; charset=utf-8");
    let samples = parse(&text);
    let build = samples.iter().find(|(s, _)| s.starts_with("xyte_edge_build_info{")).expect("build info");
    assert!(build.0.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))), "{}", build.0);
    assert_eq!(build.1, 1.0);
    // Gateway::start returns once the demo has synced.
    assert_eq!(value(&samples, "xyte_edge_upstream_reachable"), Some(1.0), "{text}");
    assert_eq!(value(&samples, "xyte_edge_outbox_depth"), Some(0.0));
    assert_eq!(value(&samples, "xyte_edge_sse_clients"), Some(0.0));
    assert!(value(&samples, "process_resident_memory_bytes").unwrap() > 0.0);
    assert!(value(&samples, "process_cpu_seconds_total").is_some());
    assert!(value(&samples, "xyte_request_latency_seconds_count{endpoint=\"devices\"}").unwrap() >= 1.0, "{text}");

    // Traffic to count: a REST read, a read Xyte answers 404 to, and a queued command (an event).
    let (status, _, body) = get(&agent, &gw.url("/v1/devices"), Some(&viewer));
    assert_eq!(status, 200, "{body}");
    let devices: Value = serde_json::from_str(&body).unwrap();
    let device = devices["devices"][0]["id"].as_str().unwrap().to_string();
    let (status, _, body) = get(&agent, &gw.url("/v1/devices/no-such-device"), Some(&viewer));
    assert_eq!(status, 404, "{body}");
    let (status, body) = post(
        &agent,
        &gw.url("/v1/tools/send_command_async"),
        &operator,
        &json!({"device_id": device, "command": "reboot"}),
    );
    assert_eq!(status, 200, "{body}");
    // A tool name a caller made up is counted as `unknown`, never under its own name.
    let (status, body) = post(&agent, &gw.url("/v1/tools/tool-from-a-caller-7f3e"), &operator, &json!({}));
    assert_eq!(status, 400, "{body}");

    // LAN: a viewer token is required.
    let (status, _, body) = get(&agent, &gw.url("/v1/metrics"), None);
    assert_eq!(status, 401, "{body}");
    let (status, content_type, text) = get(&agent, &gw.url("/v1/metrics"), Some(&viewer));
    assert_eq!(status, 200, "{text}");
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    let samples = parse(&text);
    let at_least_one = |series: &str| {
        let v = value(&samples, series).unwrap_or_else(|| panic!("{series} missing from:\n{text}"));
        assert!(v >= 1.0, "{series} = {v}");
    };
    at_least_one("xyte_edge_http_requests_total{route=\"/v1/devices\",status=\"200\"}");
    at_least_one("xyte_edge_http_requests_total{route=\"/v1/devices/{id}\",status=\"404\"}");
    at_least_one("xyte_edge_http_requests_total{route=\"(unauthenticated)\",status=\"401\"}");
    at_least_one("xyte_edge_http_request_duration_seconds_count{route=\"/v1/devices\"}");
    at_least_one("xyte_edge_tool_calls_total{tool=\"list_devices\",outcome=\"ok\"}");
    at_least_one("xyte_edge_tool_calls_total{tool=\"get_device_status\",outcome=\"not_found\"}");
    at_least_one("xyte_edge_tool_calls_total{tool=\"send_command_async\",outcome=\"ok\"}");
    at_least_one("xyte_errors_total{endpoint=\"devices\",code=\"not_found\"}");
    at_least_one("xyte_cache_hits_total{resource=\"device\"}");
    at_least_one("xyte_edge_events_total{kind=\"command.accepted\"}");
    assert!(value(&samples, "xyte_edge_mcp_connections{transport=\"unix\"}").is_some());
    assert!(value(&samples, "xyte_edge_mcp_connections{transport=\"http\"}").is_some());
    // Loopback scrapes were counted under the route label, never a raw path; no id reached a label.
    at_least_one("xyte_edge_http_requests_total{route=\"/v1/metrics\",status=\"200\"}");
    assert!(!text.contains("no-such-device") && !text.contains(&device), "an id leaked into a label");
    at_least_one("xyte_edge_tool_calls_total{tool=\"unknown\",outcome=\"invalid_params\"}");
    assert!(!text.contains("7f3e"), "a made-up tool name leaked into a label");
    // Every tool label is a catalogue name or `unknown`.
    let (_, _, tools) = get(&agent, &gw.url("/v1/tools"), Some(&viewer));
    let tools: Value = serde_json::from_str(&tools).unwrap();
    let names: Vec<&str> =
        tools["tools"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).chain(["unknown"]).collect();
    for (series, _) in &samples {
        if let Some(rest) = series.split("tool=\"").nth(1) {
            let v = rest.split('"').next().unwrap();
            assert!(names.contains(&v), "tool=\"{v}\" is not a bounded value: {series}");
        }
    }

    // Every metric the dashboard queries is exposed.
    let exposed: BTreeSet<String> = samples.iter().map(|(s, _)| base_name(s)).collect();
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string("packaging/grafana-dashboard.json").unwrap()).unwrap();
    let mut all = Vec::new();
    exprs(&dashboard, &mut all);
    assert!(all.len() >= 12, "{all:?}");
    let used: BTreeSet<String> = all.iter().flat_map(|e| names_in_expr(e)).collect();
    let missing: Vec<&String> = used.difference(&exposed).collect();
    assert!(missing.is_empty(), "the dashboard queries {missing:?}, not in the exposition:\n{text}");
    for spec in [
        "xyte_request_latency_seconds",
        "xyte_errors_total",
        "xyte_cache_hits_total",
        "xyte_cache_misses_total",
        "xyte_edge_outbox_depth",
        "xyte_edge_events_total",
        "xyte_edge_sse_clients",
        "xyte_edge_mcp_connections",
        "xyte_edge_http_requests_total",
        "xyte_edge_http_request_duration_seconds",
        "xyte_edge_tool_calls_total",
        "xyte_edge_upstream_reachable",
        "xyte_edge_build_info",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ] {
        assert!(exposed.contains(spec), "{spec} not exposed");
        assert!(used.contains(spec), "the dashboard has no panel for {spec}");
    }
}
