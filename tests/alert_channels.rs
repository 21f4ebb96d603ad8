//! The alert channels against real receivers (the alerts issue; the senders are not wired into the daemon yet): an
//! HTTP receiver that checks the Slack and Teams payload shapes and verifies the webhook's HMAC over the raw body, and
//! e-mail through Python's aiosmtpd with STARTTLS and AUTH required (`support::SmtpSink`: `tests/receivers/smtp_sink.py`
//! run with `XYTE_TEST_PYTHON`, which tests/run-all.sh points at a venv with aiosmtpd), the message rendered by
//! `alerts::message`. A missing Python or aiosmtpd fails the test with what to install.

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use serde_json::Value;
use support::SmtpSink;
use xyte_edge::alerts::message::{Context, email};
use xyte_edge::alerts::{Notification, Subject};
use xyte_edge::channels::email::{EmailSender, Server};
use xyte_edge::config::Secret;
use xyte_edge::config::alerts::{Severity, SmtpTls};

mod support;

fn notification() -> Notification {
    Notification {
        rule: "projector-offline".into(),
        kind: "firing",
        subjects: vec![Subject {
            key: "p1".into(),
            label: "Board Room Projector".into(),
            space: Some("HQ Berlin/Floor 3/Board Room".into()),
        }],
        first_at: 1_796_083_200_000,
    }
}

#[tokio::test]
async fn an_alert_mail_goes_through_starttls_and_auth_to_every_address() {
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(dir.path(), "gateway", "s3cret");
    let ca = SmtpSink::ca(dir.path());
    let password = Secret::new("s3cret".to_string());
    let server = Server {
        host: "localhost",
        port: sink.port,
        tls: SmtpTls::StartTls,
        username: Some("gateway"),
        password: Some(&password),
        ca_file: Some(&ca),
    };
    let to = ["av@example.com".to_string(), "facilities@example.com".to_string()];
    let sender = EmailSender::new(server, "xyte-edge@example.com", &to).unwrap();
    let (subject, body) = email(&notification(), Context { site: "hq", severity: Severity::Warning });
    sender.send(&subject, &body).await.unwrap();
    let got = sink.lines.recv_timeout(Duration::from_secs(10)).expect("the sink received the message");
    assert_eq!(got["mail_from"], "xyte-edge@example.com");
    assert_eq!(got["rcpt_tos"], serde_json::json!(["av@example.com", "facilities@example.com"]));
    assert_eq!(got["user"], "gateway", "authenticated after STARTTLS");
    let data = got["data"].as_str().unwrap().replace("\r\n", "\n");
    // The subject is folded at 78 columns and its one non-ASCII character (the dash) is an RFC 2047 encoded word,
    // which mail clients show as the title.
    let unfolded = data.replace("\n ", " ");
    let encoded = subject.replace(" — ", " =?utf-8?b?4oCU?= ");
    assert!(unfolded.contains(&format!("Subject: {encoded}\n")), "{data}");
    assert!(data.contains("Rule projector-offline is firing on the xyte-edge gateway of site hq."), "{data}");
    assert!(data.contains("- Board Room Projector (HQ Berlin/Floor 3/Board Room)"), "{data}");
}

#[tokio::test]
async fn a_wrong_password_or_an_untrusted_certificate_is_an_error_and_nothing_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(dir.path(), "gateway", "s3cret");
    let ca = SmtpSink::ca(dir.path());
    let wrong = Secret::new("guess".to_string());
    let to = ["av@example.com".to_string()];
    let server = |password, ca_file| Server {
        host: "localhost",
        port: sink.port,
        tls: SmtpTls::StartTls,
        username: Some("gateway"),
        password,
        ca_file,
    };
    let e = EmailSender::new(server(Some(&wrong), Some(&ca)), "gw@example.com", &to).unwrap().send("s", "b").await;
    let e = e.unwrap_err();
    assert!(e.contains("535") || e.to_lowercase().contains("auth"), "{e}");
    let right = Secret::new("s3cret".to_string());
    let untrusted = EmailSender::new(server(Some(&right), None), "gw@example.com", &to).unwrap().send("s", "b").await;
    let e = untrusted.unwrap_err();
    assert!(e.to_lowercase().contains("certificate") || e.contains("UnknownIssuer"), "{e}");
    assert!(sink.lines.try_recv().is_err(), "nothing was accepted");
}

/// One HTTP request as a receiver saw it: its path, headers (lower-case names) and raw body.
struct Received {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// An HTTP receiver on loopback answering `status` to each of `n` requests; returns its URL base and what it got.
fn http_receiver(n: usize, status: u16) -> (String, std::thread::JoinHandle<Vec<Received>>) {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let handle = std::thread::spawn(move || {
        let mut got = vec![];
        for _ in 0..n {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut headers = vec![];
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                let (k, v) = line.split_once(':').unwrap();
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
            let len: usize = headers.iter().find(|(k, _)| k == "content-length").unwrap().1.parse().unwrap();
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let mut s = stream;
            write!(s, "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").unwrap();
            let path = request_line.split_whitespace().nth(1).unwrap().to_string();
            got.push(Received { path, headers, body });
        }
        got
    });
    (base, handle)
}

#[tokio::test]
async fn chat_and_webhook_receivers_get_their_native_payloads_and_a_verifiable_signature() {
    use xyte_edge::alerts::message::{slack, teams, webhook};
    use xyte_edge::channels::http::HttpSender;
    let ctx = Context { site: "hq", severity: Severity::Critical };
    let n = notification();
    let (base, got) = http_receiver(3, 200);
    let sender = HttpSender::default();
    let body = |v: Value| serde_json::to_vec(&v).unwrap();
    sender.post(&format!("{base}/services/T0/B0/X"), body(slack(&n, ctx)), None).await.unwrap();
    sender.post(&format!("{base}/webhookb2/teams"), body(teams(&n, ctx)), None).await.unwrap();
    sender.post(&format!("{base}/alerts"), body(webhook(&n, ctx)), Some("a-shared-secret")).await.unwrap();
    let got = got.join().unwrap();
    let json = |r: &Received| serde_json::from_slice::<Value>(&r.body).unwrap();
    let header = |r: &Received, k: &str| r.headers.iter().find(|(h, _)| h == k).map(|(_, v)| v.clone());

    // Slack: a fallback text and Block Kit blocks.
    let s = json(&got[0]);
    assert_eq!(got[0].path, "/services/T0/B0/X");
    assert!(s["text"].as_str().unwrap().starts_with("[critical] Board Room Projector"), "{s}");
    assert_eq!(s["blocks"].as_array().map(Vec::len), Some(2));
    // Teams: a message carrying one Adaptive Card.
    let t = json(&got[1]);
    assert_eq!(t["type"], "message");
    assert_eq!(t["attachments"][0]["contentType"], "application/vnd.microsoft.card.adaptive");
    assert_eq!(t["attachments"][0]["content"]["type"], "AdaptiveCard");
    // The generic webhook: the receiver checks the HMAC over the raw body with the shared secret.
    let w = &got[2];
    assert_eq!(header(w, "content-type").as_deref(), Some("application/json"));
    let signature = header(w, "x-signature-256").expect("signed");
    let hex = signature.strip_prefix("sha256=").expect("sha256=<hex>");
    let tag: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"a-shared-secret");
    ring::hmac::verify(&key, &w.body, &tag).expect("the signature verifies against the raw body");
    assert!(ring::hmac::verify(&key, b"{}", &tag).is_err(), "and against nothing else");
    assert_eq!((json(w)["rule"].as_str(), json(w)["count"].as_u64()), (Some("projector-offline"), Some(1)));
    assert!(header(&got[0], "x-signature-256").is_none(), "chat webhooks are not signed");
}
