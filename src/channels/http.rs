//! Chat and webhook channels over HTTPS (Slack and Microsoft Teams incoming webhooks, the generic signed webhook):
//! one JSON POST per message, through the same HTTP client as Xyte's (ureq on rustls with ring and the built-in
//! roots), run on the blocking pool and bounded in time. A 2xx answer is delivery; anything else is an error the
//! caller retries. Errors never contain the URL: a chat webhook's URL is its credential.

use std::time::Duration;

use crate::alerts::message::signature;

/// Connect, send and read the answer together.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Of an error answer, this much of the body is kept for the log (receivers explain themselves there).
const ERROR_BODY: usize = 200;

#[derive(Clone)]
pub struct HttpSender {
    agent: ureq::Agent,
}

impl Default for HttpSender {
    fn default() -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(TIMEOUT))
            .max_redirects(0)
            .user_agent(concat!("xyte-edge/", env!("CARGO_PKG_VERSION")))
            .build();
        HttpSender { agent: config.into() }
    }
}

impl HttpSender {
    /// POSTs `body` (JSON) to `url`; with `secret`, signed in `X-Signature-256` as the gateway's own webhook expects.
    pub async fn post(&self, url: &str, body: Vec<u8>, secret: Option<&str>) -> Result<(), String> {
        let signed = secret.map(|s| signature(s, &body));
        let (agent, url) = (self.agent.clone(), url.to_string());
        let answer = tokio::task::spawn_blocking(move || {
            let mut request = agent.post(&url).header("Content-Type", "application/json");
            if let Some(sig) = &signed {
                request = request.header("X-Signature-256", sig);
            }
            let mut response = request.send(&body[..]).map_err(|e| without_url(&e.to_string(), &url))?;
            let status = response.status().as_u16();
            if (200..300).contains(&status) {
                return Ok(());
            }
            let text = response.body_mut().with_config().limit(64 * 1024).read_to_string().unwrap_or_default();
            let text: String = text.chars().take(ERROR_BODY).collect();
            Err(format!("HTTP {status}{}", if text.is_empty() { String::new() } else { format!(": {text}") }))
        })
        .await;
        answer.unwrap_or_else(|e| Err(format!("the sending task failed: {e}")))
    }
}

/// `error` with the URL (and its path and query, where a token would be) taken out.
fn without_url(error: &str, url: &str) -> String {
    let cleaned = error.replace(url, "<url>");
    let path = url.split_once("://").and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]));
    match path.filter(|p| p.len() > 1) {
        Some(p) => cleaned.replace(p, "/…"),
        None => cleaned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    /// What the receiver read: the request's head lines and its body.
    type Request = (Vec<String>, Vec<u8>);

    /// A one-request HTTP server answering `status`, on the port it returns.
    fn receiver(status: u16) -> (u16, std::thread::JoinHandle<Request>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = vec![];
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" {
                    break;
                }
                head.push(line.trim_end().to_string());
            }
            let len: usize = head
                .iter()
                .find_map(|h| h.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.parse().unwrap()))
                .unwrap();
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let text = if status == 200 { "ok" } else { "invalid_token" };
            let mut s = stream;
            write!(s, "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}", text.len())
                .unwrap();
            (head, body)
        });
        (port, handle)
    }

    #[tokio::test]
    async fn posts_json_signed_when_asked_and_reports_a_refusal() {
        let sender = HttpSender::default();
        let (port, got) = receiver(200);
        let body = br#"{"rule":"r"}"#.to_vec();
        sender.post(&format!("http://127.0.0.1:{port}/alerts"), body.clone(), Some("Jefe")).await.unwrap();
        let (head, received) = got.join().unwrap();
        assert_eq!(received, body);
        assert!(head[0].starts_with("POST /alerts HTTP/1.1"), "{head:?}");
        let lower: Vec<String> = head.iter().map(|h| h.to_ascii_lowercase()).collect();
        assert!(lower.contains(&"content-type: application/json".to_string()), "{head:?}");
        assert!(lower.contains(&format!("x-signature-256: {}", signature("Jefe", &body))), "{head:?}");

        let (port, got) = receiver(403);
        let url = format!("http://127.0.0.1:{port}/services/T0/B0/SECRET");
        let e = sender.post(&url, body, None).await.unwrap_err();
        assert_eq!(e, "HTTP 403: invalid_token");
        assert!(!got.join().unwrap().0.iter().any(|h| h.to_ascii_lowercase().starts_with("x-signature-256")));
    }

    #[tokio::test]
    async fn a_failed_connection_does_not_leak_the_url() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}/services/T0/B0/SECRET");
        let e = HttpSender::default().post(&url, b"{}".to_vec(), None).await.unwrap_err();
        assert!(!e.contains("SECRET"), "{e}");
        assert_eq!(without_url("x https://h/a/SECRET y", "https://h/a/SECRET"), "x <url> y");
        assert_eq!(without_url("no route to /a/SECRET", "https://h/a/SECRET"), "no route to /…");
    }
}
