//! E-mail over SMTP (lettre on tokio and rustls with ring): STARTTLS required on `smtp://` (never plain text) or
//! implicit TLS on `smtps://`, authentication when the channel has credentials, the server's certificate checked
//! against the channel's `ca_file` or the built-in roots. One message per notification, to every address of the
//! channel; bounded in time.

use std::path::Path;
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::Secret;
use crate::config::alerts::SmtpTls;

/// Each SMTP command's answer; and the whole message, connect to QUIT.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// Where and how to send, as the channel's settings say.
pub struct Server<'a> {
    pub host: &'a str,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<&'a str>,
    pub password: Option<&'a Secret<String>>,
    pub ca_file: Option<&'a Path>,
}

#[derive(Clone)]
pub struct EmailSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    what: String,
}

impl EmailSender {
    /// Checks the addresses and reads `ca_file` now, so a mistake shows at start, not with the first alert.
    pub fn new(server: Server<'_>, from: &str, to: &[String]) -> Result<EmailSender, String> {
        let mailbox = |a: &str| a.parse::<Mailbox>().map_err(|e| format!("{a:?} is not an e-mail address: {e}"));
        let (from, to) = (mailbox(from)?, to.iter().map(|a| mailbox(a)).collect::<Result<Vec<_>, _>>()?);
        let mut params = TlsParameters::builder(server.host.to_string());
        if let Some(path) = server.ca_file {
            let pem = std::fs::read(path).map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            let cert = Certificate::from_pem(&pem).map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            params = params.certificate_store(CertificateStore::None).add_root_certificate(cert);
        }
        let params = params.build_rustls().map_err(|e| format!("TLS set-up: {e}"))?;
        let tls = match server.tls {
            SmtpTls::Implicit => Tls::Wrapper(params),
            SmtpTls::StartTls => Tls::Required(params),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(server.host)
            .port(server.port)
            .tls(tls)
            .timeout(Some(COMMAND_TIMEOUT));
        if let (Some(user), Some(password)) = (server.username, server.password) {
            builder = builder.credentials(Credentials::new(user.to_string(), password.expose().clone()));
        }
        let what = format!("SMTP {}:{}", server.host, server.port);
        Ok(EmailSender { transport: builder.build(), from, to, what })
    }

    /// Sends one plain-text message to every address; `Err` says why it was not accepted.
    pub async fn send(&self, subject: &str, body: &str) -> Result<(), String> {
        let mut message = Message::builder().from(self.from.clone()).subject(subject).header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            message = message.to(to.clone());
        }
        let message = message.body(body.to_string()).map_err(|e| format!("cannot build the message: {e}"))?;
        match tokio::time::timeout(SEND_TIMEOUT, self.transport.send(message)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("{}: {e}", self.what)),
            Err(_) => Err(format!("{}: not accepted within {SEND_TIMEOUT:?}", self.what)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    /// What the fake server saw: the commands and the message data.
    #[derive(Default, Debug)]
    struct Seen {
        commands: Vec<String>,
        data: String,
    }

    /// Reads commands and answers them until QUIT (or STARTTLS, then returns true to upgrade).
    async fn converse<S: AsyncRead + AsyncWrite + Unpin>(s: S, tls_now: bool, seen: &mut Seen) -> (bool, S) {
        let mut s = BufReader::new(s);
        if !tls_now {
            s.write_all(b"220 fake ESMTP\r\n").await.unwrap();
        }
        loop {
            let mut line = String::new();
            if s.read_line(&mut line).await.unwrap() == 0 {
                return (false, s.into_inner());
            }
            let cmd = line.trim_end().to_string();
            let upper = cmd.to_ascii_uppercase();
            seen.commands.push(cmd.clone());
            let answer: &[u8] = if upper.starts_with("EHLO") {
                if tls_now { b"250-fake\r\n250 AUTH PLAIN LOGIN\r\n" } else { b"250-fake\r\n250 STARTTLS\r\n" }
            } else if upper == "STARTTLS" {
                s.write_all(b"220 go ahead\r\n").await.unwrap();
                return (true, s.into_inner());
            } else if upper.starts_with("AUTH PLAIN ") {
                b"235 ok\r\n"
            } else if upper == "DATA" {
                s.write_all(b"354 go\r\n").await.unwrap();
                loop {
                    let mut l = String::new();
                    s.read_line(&mut l).await.unwrap();
                    if l == ".\r\n" {
                        break;
                    }
                    seen.data.push_str(&l);
                }
                b"250 queued\r\n"
            } else if upper == "QUIT" {
                s.write_all(b"221 bye\r\n").await.unwrap();
                return (false, s.into_inner());
            } else {
                b"250 ok\r\n"
            };
            s.write_all(answer).await.unwrap();
        }
    }

    #[tokio::test]
    async fn starttls_then_auth_then_one_message_to_every_address() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, acceptor) = super::super::test_tls::localhost(dir.path());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let fake = tokio::spawn(async move {
            let mut seen = Seen::default();
            let (tcp, _) = listener.accept().await.unwrap();
            let (upgrade, tcp) = converse(tcp, false, &mut seen).await;
            assert!(upgrade, "the client asked for STARTTLS: {seen:?}");
            let tls = acceptor.accept(tcp).await.unwrap();
            converse(tls, true, &mut seen).await;
            seen
        });
        let password = Secret::new("s3cret".to_string());
        let sender = EmailSender::new(
            Server {
                host: "localhost",
                port,
                tls: SmtpTls::StartTls,
                username: Some("gw"),
                password: Some(&password),
                ca_file: Some(&ca),
            },
            "gateway@example.com",
            &["av@example.com".to_string(), "facilities@example.com".to_string()],
        )
        .unwrap();
        sender.send("[warning] Projector offline", "Rule projector-offline is firing.\n").await.unwrap();
        let seen = fake.await.unwrap();
        let commands: Vec<&str> = seen.commands.iter().map(String::as_str).collect();
        assert_eq!(commands[1], "STARTTLS", "{commands:?}");
        // base64 of "\0gw\0s3cret"
        assert!(commands.contains(&"AUTH PLAIN AGd3AHMzY3JldA=="), "{commands:?}");
        assert!(commands.contains(&"MAIL FROM:<gateway@example.com>"), "{commands:?}");
        assert!(
            commands.contains(&"RCPT TO:<av@example.com>") && commands.contains(&"RCPT TO:<facilities@example.com>")
        );
        assert!(seen.data.contains("Subject: [warning] Projector offline\r\n"), "{}", seen.data);
        assert!(seen.data.contains("Rule projector-offline is firing."), "{}", seen.data);
    }

    #[tokio::test]
    async fn a_server_without_starttls_gets_nothing_and_bad_addresses_are_refused_early() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let fake = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            tcp.write_all(b"220 plain\r\n").await.unwrap();
            let mut s = BufReader::new(tcp);
            let mut seen = vec![];
            loop {
                let mut line = String::new();
                if s.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return seen;
                }
                seen.push(line.trim_end().to_string());
                let answer: &[u8] = if line.starts_with("EHLO") { b"250 plain-only\r\n" } else { b"221 bye\r\n" };
                if s.write_all(answer).await.is_err() {
                    return seen;
                }
            }
        });
        let server =
            Server { host: "127.0.0.1", port, tls: SmtpTls::StartTls, username: None, password: None, ca_file: None };
        let sender = EmailSender::new(server, "gw@example.com", &["av@example.com".to_string()]).unwrap();
        let e = sender.send("s", "b").await.unwrap_err();
        assert!(e.starts_with(&format!("SMTP 127.0.0.1:{port}:")), "{e}");
        let seen = fake.await.unwrap();
        assert!(
            !seen.iter().any(|c| c.starts_with("MAIL") || c.starts_with("DATA")),
            "nothing sent in clear: {seen:?}"
        );
        let server =
            Server { host: "127.0.0.1", port, tls: SmtpTls::StartTls, username: None, password: None, ca_file: None };
        let refused = EmailSender::new(server, "nobody", &[]).err().unwrap_or_default();
        assert!(refused.contains("is not an e-mail address"), "{refused}");
    }
}
