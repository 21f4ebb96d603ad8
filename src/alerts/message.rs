//! What a notification says on each channel: one title and text for people (e-mail, and the
//! base of the chat messages), Slack's and Microsoft Teams' native webhook payloads, the generic JSON webhook body
//! with its HMAC-SHA256 signature (the same header the gateway's own webhook checks), and RFC 5424 syslog messages
//! (octet-counted framing for TCP and TLS). Pure: the caller delivers the bytes.

use ring::hmac;
use serde_json::{Value, json};

use super::{Notification, Subject};
use crate::config::alerts::Severity;

/// Subjects listed by name in one message at most; the rest are counted.
pub const LISTED: usize = 50;

/// What every rendering needs besides the notification.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The site (`XYTE_SITE`), so people with several gateways know which one speaks.
    pub site: &'a str,
    pub severity: Severity,
}

fn firing(n: &Notification) -> bool {
    n.kind == "firing"
}

/// The longest space path every subject shares, by whole segments (`HQ Berlin/Floor 3`).
fn common_space(subjects: &[Subject]) -> Option<String> {
    let mut paths = subjects.iter().map(|s| s.space.as_deref().unwrap_or("").split('/').collect::<Vec<_>>());
    let mut common = paths.next()?;
    for p in paths {
        let same = common.iter().zip(&p).take_while(|(a, b)| a == b).count();
        common.truncate(same);
    }
    let joined = common.join("/");
    (!joined.is_empty()).then_some(joined)
}

/// `[critical] Board Room Projector: projector-offline (HQ Berlin/Floor 3/Board Room) — site hq` or, grouped,
/// `[warning] 12 devices: projector-offline in HQ Berlin/Floor 3 — site hq`.
pub fn title(n: &Notification, ctx: Context<'_>) -> String {
    let tag = if firing(n) { ctx.severity.as_str() } else { "resolved" };
    let what = match &n.subjects[..] {
        [one] => match &one.space {
            Some(space) => format!("{}: {} ({space})", one.label, n.rule),
            None => format!("{}: {}", one.label, n.rule),
        },
        many => match common_space(many) {
            Some(space) => format!("{} devices: {} in {space}", many.len(), n.rule),
            None => format!("{} subjects: {}", many.len(), n.rule),
        },
    };
    format!("[{tag}] {what} — site {}", ctx.site)
}

/// The subjects, one per line (`- Board Room Projector (HQ Berlin/Floor 3/Board Room)`), at most [`LISTED`].
pub fn lines(n: &Notification) -> Vec<String> {
    let mut out: Vec<String> = n
        .subjects
        .iter()
        .take(LISTED)
        .map(|s| match &s.space {
            Some(space) => format!("- {} ({space})", s.label),
            None => format!("- {}", s.label),
        })
        .collect();
    if n.subjects.len() > LISTED {
        out.push(format!("… and {} more", n.subjects.len() - LISTED));
    }
    out
}

/// An e-mail: subject line and plain-text body.
pub fn email(n: &Notification, ctx: Context<'_>) -> (String, String) {
    let state = if firing(n) { "is firing" } else { "has resolved" };
    let mut body = format!("Rule {} {state} on the xyte-edge gateway of site {}.\n\n", n.rule, ctx.site);
    body.push_str(&lines(n).join("\n"));
    body.push('\n');
    (title(n, ctx), body)
}

/// A Slack incoming webhook's payload: `text` (the notification's fallback) and a section block with the list.
pub fn slack(n: &Notification, ctx: Context<'_>) -> Value {
    let title = title(n, ctx);
    json!({
        "text": title,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": truncate(&title, 150)}},
            {"type": "section", "text": {"type": "mrkdwn", "text": truncate(&lines(n).join("\n"), 3000)}},
        ],
    })
}

/// A Microsoft Teams webhook's payload (Workflows / incoming webhook): a message with one Adaptive Card.
pub fn teams(n: &Notification, ctx: Context<'_>) -> Value {
    let color = match (firing(n), ctx.severity) {
        (false, _) => "Good",
        (true, Severity::Critical) => "Attention",
        (true, Severity::Warning) => "Warning",
        (true, Severity::Info) => "Default",
    };
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    {"type": "TextBlock", "text": title(n, ctx), "weight": "Bolder", "color": color, "wrap": true},
                    {"type": "TextBlock", "text": lines(n).join("\n\n"), "wrap": true},
                ],
            },
        }],
    })
}

/// The generic webhook's JSON body: everything a receiver needs to route or display the alert.
pub fn webhook(n: &Notification, ctx: Context<'_>) -> Value {
    let subjects: Vec<Value> =
        n.subjects.iter().map(|s| json!({"key": s.key, "label": s.label, "space": s.space})).collect();
    json!({
        "rule": n.rule, "status": n.kind, "severity": ctx.severity.as_str(), "site": ctx.site,
        "title": title(n, ctx), "count": n.subjects.len(), "subjects": subjects,
        "first_at": rfc3339(n.first_at),
    })
}

/// `X-Signature-256`'s value for `body`: `sha256=<hex HMAC-SHA256>`, as the gateway's own webhook expects it.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let tag = hmac::sign(&key, body);
    format!("sha256={}", tag.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// RFC 5424 messages, one per subject (a syslog line is one event), facility local0. `timestamp` is RFC 3339 and
/// `host` the gateway's name; the structured data carries the rule, status, severity and subject key.
pub fn syslog(n: &Notification, ctx: Context<'_>, host: &str, timestamp: &str) -> Vec<String> {
    // Severity numbers of RFC 5424: 2 critical, 4 warning, 5 notice (a resolve), 6 informational.
    let level = match (firing(n), ctx.severity) {
        (false, _) => 5,
        (true, Severity::Critical) => 2,
        (true, Severity::Warning) => 4,
        (true, Severity::Info) => 6,
    };
    let pri = 16 * 8 + level;
    let host = header_field(host, 255);
    n.subjects
        .iter()
        .map(|s| {
            let space = s.space.as_deref().map(|p| format!(" ({p})")).unwrap_or_default();
            format!(
                "<{pri}>1 {timestamp} {host} xyte-edge - ALERT [xyte-edge@32473 rule=\"{}\" status=\"{}\" severity=\"{}\" \
                 subject=\"{}\" site=\"{}\"] {}: {} {}{space}",
                param(&n.rule),
                n.kind,
                ctx.severity.as_str(),
                param(&s.key),
                param(ctx.site),
                n.rule,
                s.label,
                if firing(n) { "firing" } else { "resolved" },
            )
        })
        .collect()
}

/// TCP and TLS framing (RFC 6587 octet counting): the message's length in bytes, a space, the message.
pub fn octet_counted(message: &str) -> String {
    format!("{} {message}", message.len())
}

/// A syslog header field: printable US-ASCII without spaces, at most `max` characters, `-` when empty.
fn header_field(text: &str, max: usize) -> String {
    let clean: String = text.chars().filter(|c| c.is_ascii_graphic()).take(max).collect();
    if clean.is_empty() { "-".into() } else { clean }
}

/// A structured-data parameter value: `"`, `\` and `]` escaped (RFC 5424 §6.3.3).
fn param(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"").replace(']', "\\]")
}

fn rfc3339(ms: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    t.format(&time::format_description::well_known::Rfc3339).ok()
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(id: &str, name: &str, space: &str) -> Subject {
        Subject { key: id.into(), label: name.into(), space: Some(space.into()) }
    }

    fn one() -> Notification {
        Notification {
            rule: "projector-offline".into(),
            kind: "firing",
            subjects: vec![subject("p1", "Board Room Projector", "HQ Berlin/Floor 3/Board Room")],
            first_at: 1_796_083_200_000,
        }
    }

    const CTX: Context<'static> = Context { site: "hq", severity: Severity::Warning };

    #[test]
    fn titles_name_the_device_or_count_the_group_in_their_common_space() {
        assert_eq!(
            title(&one(), CTX),
            "[warning] Board Room Projector: projector-offline (HQ Berlin/Floor 3/Board Room) — site hq"
        );
        let floor = Notification {
            subjects: (0..12)
                .map(|i| subject(&format!("d{i}"), &format!("Display {i}"), &format!("HQ Berlin/Floor 3/Room {i}")))
                .collect(),
            ..one()
        };
        assert_eq!(title(&floor, CTX), "[warning] 12 devices: projector-offline in HQ Berlin/Floor 3 — site hq");
        let resolved = Notification { kind: "resolved", ..one() };
        assert!(title(&resolved, CTX).starts_with("[resolved] Board Room Projector"));
        let many = Notification { subjects: floor.subjects.iter().cycle().take(60).cloned().collect(), ..one() };
        let listed = lines(&many);
        assert_eq!((listed.len(), listed.last().unwrap().as_str()), (51, "… and 10 more"));
    }

    #[test]
    fn chat_payloads_have_their_native_shapes() {
        let s = slack(&one(), CTX);
        assert_eq!(s["text"], title(&one(), CTX));
        assert_eq!(
            (s["blocks"][0]["type"].as_str(), s["blocks"][1]["text"]["type"].as_str()),
            (Some("header"), Some("mrkdwn"))
        );
        let t = teams(&one(), Context { severity: Severity::Critical, ..CTX });
        let card = &t["attachments"][0];
        assert_eq!(card["contentType"], "application/vnd.microsoft.card.adaptive");
        assert_eq!(
            (card["content"]["type"].as_str(), card["content"]["body"][0]["color"].as_str()),
            (Some("AdaptiveCard"), Some("Attention"))
        );
        let w = webhook(&one(), CTX);
        assert_eq!(
            (w["status"].as_str(), w["count"].as_u64(), w["subjects"][0]["key"].as_str()),
            (Some("firing"), Some(1), Some("p1"))
        );
    }

    #[test]
    fn the_webhook_signature_is_the_one_our_own_webhook_checks() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn syslog_lines_are_rfc5424_with_octet_counting_for_streams() {
        let lines = syslog(&one(), CTX, "gw 1", "2026-12-01T00:00:00Z");
        assert_eq!(
            lines[0],
            "<132>1 2026-12-01T00:00:00Z gw1 xyte-edge - ALERT [xyte-edge@32473 rule=\"projector-offline\" \
             status=\"firing\" severity=\"warning\" subject=\"p1\" site=\"hq\"] projector-offline: Board Room Projector \
             firing (HQ Berlin/Floor 3/Board Room)"
        );
        let resolved = syslog(&Notification { kind: "resolved", ..one() }, CTX, "gw", "t");
        assert!(resolved[0].starts_with("<133>1 "), "{}", resolved[0]);
        assert_eq!(octet_counted("<14>1 é"), "8 <14>1 é", "the count is of bytes");
        assert_eq!(param("a\"b]c\\"), "a\\\"b\\]c\\\\");
    }

    #[test]
    fn an_email_says_what_fires_where() {
        let (subject, body) = email(&one(), CTX);
        assert_eq!(subject, title(&one(), CTX));
        assert!(body.starts_with("Rule projector-offline is firing on the xyte-edge gateway of site hq."), "{body}");
        assert!(body.contains("- Board Room Projector (HQ Berlin/Floor 3/Board Room)"));
    }
}
