//! Remote syslog (RFC 5424 messages, from `alerts::message::syslog`): UDP (RFC 5426, one datagram per message),
//! TCP (RFC 6587) and TLS (RFC 5425), both with octet-counted framing, one connection per batch so a restarted
//! receiver costs nothing to reconnect to.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};

use crate::alerts::message::octet_counted;
use crate::config::alerts::SyslogTransport;

/// A whole batch (resolve, connect, handshake, write) gets this long.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// A datagram carries at most this many bytes of a message (RFC 5426 asks receivers for 2048); longer ones are cut.
const DATAGRAM_MAX: usize = 2048;

#[derive(Clone)]
pub struct Syslog {
    transport: SyslogTransport,
    host: String,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Syslog {
    /// For `tls://`, the TLS configuration is built here (a bad `ca_file` is an error now, not at the first alert).
    pub fn new(transport: SyslogTransport, host: &str, port: u16, ca_file: Option<&Path>) -> Result<Syslog, String> {
        let tls = match transport {
            SyslogTransport::Tls => Some(crate::tls_client::config("ca_file", ca_file, None)?),
            _ => None,
        };
        Ok(Syslog { transport, host: host.to_string(), port, tls })
    }

    /// Sends `messages` in order; `Err` says why they were not (all) delivered.
    pub async fn send(&self, messages: &[String]) -> Result<(), String> {
        let what = format!("syslog {}:{}", self.host, self.port);
        match tokio::time::timeout(SEND_TIMEOUT, self.send_all(messages)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("{what}: {e}")),
            Err(_) => Err(format!("{what}: no delivery within {SEND_TIMEOUT:?}")),
        }
    }

    async fn send_all(&self, messages: &[String]) -> Result<(), String> {
        let addr = self.resolve().await?;
        match self.transport {
            SyslogTransport::Udp => {
                let local: SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
                let socket = UdpSocket::bind(local).await.map_err(|e| format!("cannot open a UDP socket: {e}"))?;
                for m in messages {
                    socket.send_to(cut(m, DATAGRAM_MAX).as_bytes(), addr).await.map_err(|e| format!("send: {e}"))?;
                }
                Ok(())
            }
            SyslogTransport::Tcp => {
                let mut stream = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
                write_framed(&mut stream, messages).await
            }
            SyslogTransport::Tls => {
                let config = self.tls.clone().ok_or("TLS is not set up")?;
                let name = ServerName::try_from(self.host.clone()).map_err(|e| format!("{}: {e}", self.host))?;
                let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
                let mut stream = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS handshake: {e}"))?;
                write_framed(&mut stream, messages).await
            }
        }
    }

    async fn resolve(&self) -> Result<SocketAddr, String> {
        tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", self.host))?
            .next()
            .ok_or_else(|| format!("{} has no address", self.host))
    }
}

/// Every message octet-counted, then a clean close (TLS: close_notify), so the receiver has read all of it.
async fn write_framed<S: tokio::io::AsyncWrite + Unpin>(stream: &mut S, messages: &[String]) -> Result<(), String> {
    let framed: String = messages.iter().map(|m| octet_counted(m)).collect();
    stream.write_all(framed.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
    stream.shutdown().await.map_err(|e| format!("close: {e}"))
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    fn batch() -> Vec<String> {
        vec![
            "<132>1 2026-12-01T00:00:00Z gw xyte-edge - ALERT - first".into(),
            "<133>1 - gw xyte-edge - ALERT - é".into(),
        ]
    }

    /// Splits octet-counted frames.
    fn frames(mut bytes: &[u8]) -> Vec<String> {
        let mut out = vec![];
        while !bytes.is_empty() {
            let space = bytes.iter().position(|b| *b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&bytes[..space]).unwrap().parse().unwrap();
            out.push(String::from_utf8(bytes[space + 1..space + 1 + len].to_vec()).unwrap());
            bytes = &bytes[space + 1 + len..];
        }
        out
    }

    #[tokio::test]
    async fn udp_sends_one_datagram_per_message() {
        let receiver = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = receiver.local_addr().unwrap().port();
        Syslog::new(SyslogTransport::Udp, "127.0.0.1", port, None).unwrap().send(&batch()).await.unwrap();
        let mut buf = [0u8; 4096];
        for want in batch() {
            let n = receiver.recv(&mut buf).await.unwrap();
            assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), want);
        }
        assert_eq!(cut("aé", 2), "a", "cut at a character boundary");
    }

    #[tokio::test]
    async fn tcp_frames_by_octet_count_and_a_refused_connection_says_so() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let reader = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut all = vec![];
            s.read_to_end(&mut all).await.unwrap();
            all
        });
        let sender = Syslog::new(SyslogTransport::Tcp, "127.0.0.1", port, None).unwrap();
        sender.send(&batch()).await.unwrap();
        assert_eq!(frames(&reader.await.unwrap()), batch());
        let e = sender.send(&batch()).await.unwrap_err();
        assert!(e.starts_with(&format!("syslog 127.0.0.1:{port}: connect:")), "{e}");
    }

    #[tokio::test]
    async fn tls_checks_the_receivers_certificate_against_the_ca_file() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, acceptor) = super::super::test_tls::localhost(dir.path());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let reader = tokio::spawn(async move {
            let mut got = vec![];
            for _ in 0..2 {
                let (tcp, _) = listener.accept().await.unwrap();
                let mut all = vec![];
                // The second client does not trust the certificate: its handshake fails, nothing is read.
                if let Ok(mut s) = acceptor.accept(tcp).await {
                    s.read_to_end(&mut all).await.unwrap();
                }
                got.push(all);
            }
            got
        });
        let trusted = Syslog::new(SyslogTransport::Tls, "localhost", port, Some(&ca)).unwrap();
        trusted.send(&batch()).await.unwrap();
        let untrusted = Syslog::new(SyslogTransport::Tls, "localhost", port, None).unwrap();
        let e = untrusted.send(&batch()).await.unwrap_err();
        assert!(e.contains("TLS handshake") && e.contains("UnknownIssuer"), "{e}");
        let got = reader.await.unwrap();
        assert_eq!(frames(&got[0]), batch());
        assert!(got[1].is_empty());
        let bad = dir.path().join("not-a-ca.pem");
        std::fs::write(&bad, "hello").unwrap();
        assert!(Syslog::new(SyslogTransport::Tls, "localhost", port, Some(&bad)).is_err());
    }
}
