//! The self-contained HTML reference at `GET /v1/docs`, rendered server-side from the OpenAPI document as static HTML
//! (no script, no external asset), so it works under a strict CSP and offline.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

use super::openapi::{ERRORS, TAGS, document};
use crate::ops::CATALOGUE;

const DOCS_TEMPLATE: &str = include_str!("docs.html");
const BASE_URL: &str = "https://gateway:8443";

/// The HTML reference, `GET /v1/docs`: every route and tool of [`document`], rendered as static HTML.
pub fn docs_page(version: &str) -> String {
    let doc = document(version);
    let mut by_tag: BTreeMap<&str, Vec<(&str, &str, &Value)>> = BTreeMap::new();
    for (path, ops) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in ops.as_object().into_iter().flatten() {
            let tag = op["tags"][0].as_str().unwrap_or("system");
            by_tag.entry(tag).or_default().push((path, method, op));
        }
    }
    // Tools in catalogue order (the most useful first); routes by path.
    let rank = |path: &str| CATALOGUE.iter().position(|op| path.strip_prefix("/v1/tools/") == Some(op.name));
    for ops in by_tag.values_mut() {
        ops.sort_by_key(|(path, _, _)| (rank(path), *path));
    }
    let (mut toc, mut body) = (String::new(), String::new());
    for (tag, heading, description) in TAGS {
        let Some(ops) = by_tag.get(tag) else { continue };
        let _ = write!(toc, "<li><a href=\"#{tag}\">{}</a><ul>", esc(heading));
        let _ = write!(body, "<section id=\"{tag}\"><h2>{}</h2>{}", esc(heading), text(description));
        for (path, method, op) in ops {
            let anchor = esc(op["operationId"].as_str().unwrap_or(""));
            let label = if path.starts_with("/v1/tools/") && *method == "post" {
                path.trim_start_matches("/v1/tools/").to_string()
            } else {
                format!("{} {path}", method.to_uppercase())
            };
            let _ = write!(toc, "<li><a href=\"#{anchor}\">{}</a></li>", esc(&label));
            body.push_str(&operation_html(path, method, op));
        }
        toc.push_str("</ul></li>");
        body.push_str("</section>");
    }
    toc.push_str("<li><a href=\"#errors\">Errors</a></li>");
    body.push_str(&errors_html(&doc));
    // Markers are HTML comments; every inserted text is escaped, so none can contain one.
    DOCS_TEMPLATE.replace("<!--VERSION-->", &esc(version)).replace("<!--TOC-->", &toc).replace("<!--BODY-->", &body)
}

fn operation_html(path: &str, method: &str, op: &Value) -> String {
    let mut h = String::new();
    let anchor = esc(op["operationId"].as_str().unwrap_or(""));
    let _ = write!(
        h,
        "<article class=\"op\" id=\"{anchor}\"><h3><span class=\"method {m}\">{M}</span> <code>{}</code></h3>",
        esc(path),
        m = esc(method),
        M = esc(&method.to_uppercase())
    );
    h.push_str("<p class=\"badges\">");
    let security = &op["security"];
    let role = op["x-required-role"].as_str();
    if security.as_array().is_some_and(|s| s.is_empty()) {
        h.push_str("<span class=\"badge open\">no token</span>");
    } else if let Some(role) = role {
        let optional =
            security.as_array().is_some_and(|s| s.iter().any(|r| r.as_object().is_some_and(|o| o.is_empty())));
        let _ = write!(h, "<span class=\"badge role-{r}\">role: {r}</span>", r = esc(role));
        if optional {
            h.push_str("<span class=\"badge open\">token optional</span>");
        }
    }
    let a = &op["x-mcp-annotations"];
    for (key, on, off) in [
        ("readOnlyHint", Some("read-only"), None),
        ("destructiveHint", Some("destructive"), None),
        ("idempotentHint", Some("idempotent"), None),
        ("openWorldHint", Some("talks to Xyte"), Some("local")),
    ] {
        let label = match a.get(key).and_then(Value::as_bool) {
            Some(true) => on,
            Some(false) => off,
            None => None,
        };
        if let Some(label) = label {
            let class = if key == "destructiveHint" { "badge warn" } else { "badge" };
            let _ = write!(h, "<span class=\"{class}\">{label}</span>");
        }
    }
    h.push_str("</p>");
    let _ = write!(h, "<p class=\"summary\">{}</p>", esc(op["summary"].as_str().unwrap_or("")));
    h.push_str(&text(op["description"].as_str().unwrap_or("")));

    let mut rows = Vec::new();
    for p in op["parameters"].as_array().into_iter().flatten() {
        let location = p["in"].as_str().unwrap_or("");
        let schema = p.get("schema").or_else(|| p["content"]["application/json"].get("schema")).unwrap_or(&Value::Null);
        let name = p["name"].as_str().unwrap_or("");
        let name = if location == "query" { name.to_string() } else { format!("{name} ({location})") };
        rows.push((name, schema.clone(), p["required"] == json!(true), p["description"].as_str().map(str::to_string)));
    }
    let body = &op["requestBody"]["content"]["application/json"];
    let body_schema = &body["schema"];
    let body_required: Vec<&str> =
        body_schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    for (name, prop) in body_schema["properties"].as_object().into_iter().flatten() {
        rows.push((
            name.clone(),
            prop.clone(),
            body_required.contains(&name.as_str()),
            prop["description"].as_str().map(str::to_string),
        ));
    }
    let heading = if path.starts_with("/v1/tools/") { "Arguments (JSON body)" } else { "Parameters" };
    if rows.is_empty() {
        if path.starts_with("/v1/tools/") {
            h.push_str("<h4>Arguments</h4><p class=\"none\">None.</p>");
        }
    } else {
        let _ = write!(
            h,
            "<h4>{heading}</h4><div class=\"scroll\"><table class=\"params\"><thead><tr><th>Name</th><th>Type</th>\
             <th>Required</th><th>Description</th></tr></thead><tbody>"
        );
        for (name, schema, required, description) in rows {
            let _ = write!(
                h,
                "<tr><td><code>{}</code></td><td class=\"type\">{}</td><td class=\"req\">{}</td>\
                 <td class=\"desc\">{}</td></tr>",
                esc(&name),
                esc(&type_label(&schema)),
                // Table cell on wide screens, a word after the type on phones.
                if required {
                    "<span class=\"wide\">yes</span><span class=\"narrow\">required</span>"
                } else {
                    "<span class=\"wide\">no</span><span class=\"narrow\">optional</span>"
                },
                inline(&with_constraints(description.as_deref().unwrap_or(""), &schema))
            );
        }
        h.push_str("</tbody></table></div>");
    }

    if let Some(ok) = op["responses"].as_object().and_then(|r| r.iter().find(|(s, _)| s.starts_with('2'))) {
        let (status, ok) = ok;
        let content = &ok["content"];
        let types: Vec<&str> = content.as_object().map(|c| c.keys().map(String::as_str).collect()).unwrap_or_default();
        let _ = write!(h, "<h4>Returns</h4><p>{} {}", esc(status), inline(ok["description"].as_str().unwrap_or("")));
        if !types.is_empty() {
            let _ = write!(h, " <span class=\"muted\">({})</span>", esc(&types.join(", ")));
        }
        h.push_str("</p>");
        let schema = &content["application/json"]["schema"];
        let required: Vec<&str> =
            schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        if let Some(props) = schema["properties"].as_object().filter(|p| !p.is_empty()) {
            h.push_str("<ul class=\"fields\">");
            for (name, prop) in props {
                let _ = write!(
                    h,
                    "<li><code>{}</code> <span class=\"muted\">{}{}</span></li>",
                    esc(name),
                    esc(&type_label(prop)),
                    if required.contains(&name.as_str()) { "" } else { ", optional" }
                );
            }
            h.push_str("</ul>");
        }
    }
    let _ = write!(h, "<h4>Example</h4><pre><code>{}</code></pre></article>", esc(&curl(path, method, op)));
    h
}

fn errors_html(doc: &Value) -> String {
    let mut h = String::from(
        "<section id=\"errors\"><h2>Errors</h2><p>Every failure answers with one stable code in the body \
         <code>{\"error\": {\"code\", \"message\", \"hint\"?, \"retry_after_s\"?}}</code>; the message says what to \
         do next.</p><div class=\"scroll\"><table><thead><tr><th>Status</th><th>Meaning</th></tr></thead><tbody>",
    );
    for (status, name, _) in ERRORS {
        let description = doc["components"]["responses"][name]["description"].as_str().unwrap_or("");
        let _ = write!(h, "<tr><td>{status}</td><td>{}</td></tr>", inline(description));
    }
    h.push_str("</tbody></table></div></section>");
    h
}

/// A one-line example: `curl` with the gateway's certificate, the token when one is needed, and a body that
/// satisfies the schema (dry runs for mutating tools).
fn curl(path: &str, method: &str, op: &Value) -> String {
    let mut c = String::from("curl --cacert cert.pem");
    let ok = &op["responses"]["200"]["content"];
    let streams = ok.get("text/event-stream").is_some();
    let mcp = op["tags"][0] == "mcp";
    if streams && method == "get" {
        c.push_str(" -N -H 'Accept: text/event-stream'");
    } else if mcp && method == "post" {
        c.push_str(" -H 'Accept: application/json, text/event-stream'");
    }
    if !op["security"].as_array().is_some_and(|s| s.is_empty()) {
        c.push_str(" -H \"Authorization: Bearer $TOKEN\"");
    }
    if mcp && method != "post" {
        c.push_str(" -H \"Mcp-Session-Id: $SESSION\"");
    }
    if method == "delete" {
        c.push_str(" -X DELETE");
    }
    let _ = write!(c, " \"{BASE_URL}{}\"", path.replace("{id}", "$ID"));
    if let Some(example) = op["requestBody"]["content"]["application/json"].get("example") {
        let _ = write!(c, " -H 'Content-Type: application/json' -d '{}'", example.to_string().replace('\'', "'\\''"));
    }
    c
}

/// A short human form of a schema's type: `string`, `integer`, `one of: a, b`, `array of string`.
fn type_label(schema: &Value) -> String {
    if let Some(r) = schema["$ref"].as_str() {
        return r.rsplit('/').next().unwrap_or(r).to_string();
    }
    let consts: Vec<String> = ["oneOf", "anyOf"]
        .iter()
        .filter_map(|k| schema[k].as_array())
        .flatten()
        .filter_map(|arm| arm.get("const").or_else(|| arm["enum"].get(0)))
        .chain(schema["enum"].as_array().into_iter().flatten())
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
        .collect();
    if !consts.is_empty() {
        return format!("one of: {}", consts.join(", "));
    }
    let ty = match &schema["type"] {
        Value::String(t) => t.clone(),
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" or "),
        _ if schema.get("oneOf").or_else(|| schema.get("anyOf")).is_some() => "one of several shapes".into(),
        _ => "any".into(),
    };
    if ty == "array" && schema.get("items").is_some() {
        return format!("array of {}", type_label(&schema["items"]));
    }
    ty
}

/// A parameter description with the schema's default and bounds appended.
fn with_constraints(description: &str, schema: &Value) -> String {
    let mut d = description.to_string();
    for (key, label) in [("default", "Default"), ("minimum", "Minimum"), ("maximum", "Maximum")] {
        // `minimum: 0` only says "unsigned".
        if let Some(v) = schema.get(key).filter(|v| !(key == "minimum" && v.as_f64() == Some(0.0))) {
            let sep = if d.is_empty() || d.ends_with('.') { " " } else { ". " };
            let _ = write!(d, "{}{label}: `{v}`.", if d.is_empty() { "" } else { sep });
        }
    }
    d
}

/// Paragraphs of escaped text, with `code` spans.
fn text(s: &str) -> String {
    s.split("\n\n").filter(|p| !p.trim().is_empty()).map(|p| format!("<p>{}</p>", inline(p.trim()))).collect()
}

/// Escaped text with backtick-delimited `code` spans.
fn inline(s: &str) -> String {
    s.split('`')
        .enumerate()
        .map(|(i, part)| if i % 2 == 1 { format!("<code>{}</code>", esc(part)) } else { esc(part) })
        .collect()
}

/// Escapes text for HTML element content and quoted attribute values.
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_page_is_self_contained_and_lists_everything() {
        let page = docs_page("1.0.0<b>");
        assert!(page.contains("Version 1.0.0&lt;b&gt;"));
        for forbidden in ["<script", "<link", "src=", "@import", "url(", "<iframe", "<img", "http://"] {
            assert!(!page.contains(forbidden), "{forbidden}");
        }
        assert!(!page.contains("<!--TOC-->") && !page.contains("<!--BODY-->"));
        for op in CATALOGUE.iter() {
            assert!(page.contains(&format!("id=\"{}\"", op.name)), "{}", op.name);
            assert!(page.contains(&format!("{BASE_URL}/v1/tools/{}&quot;", op.name)), "{}", op.name);
        }
        for anchor in ["get_v1_devices", "get_v1_devices_id_histories", "post_v1_webhook", "get_healthz", "post_mcp"] {
            assert!(page.contains(&format!("id=\"{anchor}\"")), "{anchor}");
        }
        // A mutating tool's example is a dry run, and the curl line carries the token and the certificate.
        assert!(page.contains(
            "curl --cacert cert.pem -H &quot;Authorization: Bearer $TOKEN&quot; \
             &quot;https://gateway:8443/v1/tools/delete_device&quot; -H &#39;Content-Type: application/json&#39; -d"
        ));
        let delete = page.split("id=\"delete_device\"").nth(1).unwrap().split("</article>").next().unwrap();
        assert!(delete.contains("&quot;dry_run&quot;:true"), "{delete}");
        // Health needs no token.
        let health = page.split("id=\"get_healthz\"").nth(1).unwrap().split("</article>").next().unwrap();
        assert!(!health.contains("Authorization"));
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(esc("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
        assert_eq!(inline("use `a<b` now"), "use <code>a&lt;b</code> now");
        assert_eq!(text("one\n\ntwo"), "<p>one</p><p>two</p>");
    }
}
