//! The alert channels against real receivers (the alerts issue; the senders are not wired into the daemon yet):
//! e-mail through Python's aiosmtpd with STARTTLS and AUTH required (`tests/receivers/smtp_sink.py`, run with
//! `XYTE_TEST_PYTHON`, which tests/run-all.sh points at a venv with aiosmtpd), the message rendered by
//! `alerts::message`. A missing Python or aiosmtpd fails the test with what to install.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use xyte_edge::alerts::message::{Context, email};
use xyte_edge::alerts::{Notification, Subject};
use xyte_edge::channels::email::{EmailSender, Server};
use xyte_edge::config::Secret;
use xyte_edge::config::alerts::{Severity, SmtpTls};

/// aiosmtpd, listening; its JSON lines arrive on `lines`. Stopped (stdin closed, then killed) on drop.
struct SmtpSink {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<Value>,
    port: u16,
}

impl SmtpSink {
    fn start(dir: &Path, user: &str, password: &str) -> SmtpSink {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().self_signed(&key).unwrap();
        std::fs::write(dir.join("smtp.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("smtp.key"), key.serialize_pem()).unwrap();
        let python = std::env::var("XYTE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/receivers/smtp_sink.py");
        let mut child = Command::new(&python)
            .arg(script)
            .args([dir.join("smtp.pem"), dir.join("smtp.key")])
            .args([user, password])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {python}: {e} (set XYTE_TEST_PYTHON to a Python with aiosmtpd)"));
        let (tx, lines) = mpsc::channel::<Value>();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        let stdin = child.stdin.take();
        let first = lines.recv_timeout(Duration::from_secs(20));
        let port = match first {
            Ok(v) => v["port"].as_u64().unwrap() as u16,
            Err(_) => {
                let _ = child.kill();
                let mut err = String::new();
                let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
                panic!(
                    "the SMTP sink did not start ({python}; is aiosmtpd installed? tests/run-all.sh installs it):\n{err}"
                );
            }
        };
        SmtpSink { child, stdin, lines, port }
    }

    fn ca(dir: &Path) -> std::path::PathBuf {
        dir.join("smtp.pem")
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        if let Some(mut s) = self.stdin.take() {
            let _ = s.flush();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
