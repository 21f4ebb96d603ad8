//! Load generators (closed loop: each connection sends its next request when the previous answer is in) and the
//! floors they are compared with: an NDJSON echo over a Unix socket, a hyper + rustls server answering fixed bytes,
//! and raw rusqlite inserts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::procs::Res;

/// What a closed-loop run did: calls answered, over how long, and each call's latency in microseconds.
#[derive(Default)]
pub struct Run {
    pub calls: u64,
    pub secs: f64,
    pub lat_us: Vec<u32>,
}

impl Run {
    pub fn rate(&self) -> f64 {
        self.calls as f64 / self.secs
    }

    /// The `p`-th percentile latency in milliseconds.
    pub fn pct_ms(&mut self, p: f64) -> f64 {
        self.lat_us.sort_unstable();
        pct(&self.lat_us, p) as f64 / 1000.0
    }

    fn merge(runs: Vec<Run>, secs: f64) -> Res<Run> {
        let mut all = Run { secs, ..Default::default() };
        for r in runs {
            all.calls += r.calls;
            all.lat_us.extend(r.lat_us);
        }
        if all.calls == 0 {
            return Err("no call completed".into());
        }
        Ok(all)
    }
}

pub fn pct(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p / 100.0).round() as usize]
}

fn micros(since: Instant) -> u32 {
    since.elapsed().as_micros().min(u32::MAX as u128) as u32
}

// ---------------------------------------------------------------------------------------------------------------
// MCP over the Unix socket (NDJSON), and its floor.

/// A JSON-RPC request line for `tools/call`.
pub fn tool_call(id: u64, tool: &str, args: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{args}}}}}"#)
}

pub struct LineConn {
    rd: BufReader<tokio::net::unix::OwnedReadHalf>,
    wr: tokio::net::unix::OwnedWriteHalf,
    buf: Vec<u8>,
}

impl LineConn {
    pub async fn connect(path: &Path) -> Res<LineConn> {
        let s = UnixStream::connect(path).await.map_err(|e| format!("{}: {e}", path.display()))?;
        let (rd, wr) = s.into_split();
        Ok(LineConn { rd: BufReader::with_capacity(256 * 1024, rd), wr, buf: Vec::with_capacity(64 * 1024) })
    }

    /// Connects and runs the legacy MCP handshake (`initialize`, `notifications/initialized`).
    pub async fn mcp(path: &Path) -> Res<LineConn> {
        let mut c = LineConn::connect(path).await?;
        let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"xyte-bench","version":"0"}}}"#;
        let answer = c.call(init.as_bytes()).await?;
        if !answer.contains("\"result\"") {
            return Err(format!("initialize: {answer:.300}"));
        }
        c.wr.write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n")
            .await
            .map_err(|e| e.to_string())?;
        Ok(c)
    }

    /// Sends one line and reads one line back.
    pub async fn call(&mut self, line: &[u8]) -> Res<&str> {
        let mut msg = Vec::with_capacity(line.len() + 1);
        msg.extend_from_slice(line);
        msg.push(b'\n');
        self.wr.write_all(&msg).await.map_err(|e| format!("write: {e}"))?;
        self.buf.clear();
        let n = self.rd.read_until(b'\n', &mut self.buf).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("the peer closed the connection".into());
        }
        std::str::from_utf8(&self.buf).map_err(|e| e.to_string())
    }
}

/// Whether a daemon answer is a successful tool result.
pub fn tool_ok(answer: &str) -> bool {
    answer.contains("\"result\"") && !answer.contains("\"isError\":true")
}

/// `conns` connections, each calling in a closed loop for `secs`; `line(conn, i)` makes the i-th request,
/// `ok(answer)` judges the reply (any failure stops the run with an error).
pub async fn lines_closed_loop(
    path: &Path,
    mcp: bool,
    conns: usize,
    secs: f64,
    line: Arc<dyn Fn(usize, u64) -> String + Send + Sync>,
    ok: fn(&str, &str) -> bool,
) -> Res<Run> {
    let mut clients = Vec::new();
    for _ in 0..conns {
        clients.push(if mcp { LineConn::mcp(path).await? } else { LineConn::connect(path).await? });
    }
    closed_loop(clients, secs, move |mut client: LineConn, c, i| {
        let req = line(c, i);
        async move {
            let answer = client.call(req.as_bytes()).await?;
            if !ok(&req, answer) {
                return Err(format!("unexpected answer to {req}: {answer:.400}"));
            }
            Ok(client)
        }
    })
    .await
}

/// Every client calls in a closed loop (the next request when the answer is in) for `secs`; `call(client, conn, i)`
/// makes the i-th call on connection `conn` and hands the client back, or fails the whole run.
async fn closed_loop<C, F, Fut>(clients: Vec<C>, secs: f64, call: F) -> Res<Run>
where
    C: Send + 'static,
    F: Fn(C, usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Res<C>> + Send,
{
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(secs);
    let mut handles = Vec::new();
    for (c, mut client) in clients.into_iter().enumerate() {
        let call = call.clone();
        handles.push(tokio::spawn(async move {
            let mut run = Run::default();
            let mut i = 0u64;
            while Instant::now() < until {
                let t = Instant::now();
                client = call(client, c, i).await?;
                run.lat_us.push(micros(t));
                run.calls += 1;
                i += 1;
            }
            Ok::<Run, String>(run)
        }));
    }
    let mut runs = Vec::new();
    for h in handles {
        runs.push(h.await.map_err(|e| e.to_string())??);
    }
    Run::merge(runs, started.elapsed().as_secs_f64())
}

/// The MCP floor: a minimal tokio NDJSON echo server on a Unix socket (one task per connection, a line in, the
/// same line out), on `rt` (in a process of its own: `servers.rs`).
pub fn echo_server(rt: &tokio::runtime::Runtime, path: PathBuf) -> Res<()> {
    serve_unix(rt, &path, "echo", |s| async move {
        let (rd, mut wr) = s.into_split();
        let mut rd = BufReader::with_capacity(64 * 1024, rd);
        let mut buf = Vec::with_capacity(4096);
        loop {
            buf.clear();
            match rd.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if wr.write_all(&buf).await.is_err() {
                        break;
                    }
                }
            }
        }
    })
}

/// Listens on the Unix socket `path` (replacing a stale one) on `rt`, serving each connection in a task of its own.
pub fn serve_unix<F, Fut>(rt: &tokio::runtime::Runtime, path: &Path, what: &str, serve: F) -> Res<()>
where
    F: Fn(tokio::net::UnixStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let _ = std::fs::remove_file(path);
    let std = std::os::unix::net::UnixListener::bind(path).map_err(|e| format!("{what}: {e}"))?;
    std.set_nonblocking(true).map_err(|e| e.to_string())?;
    rt.spawn(async move {
        let listener = UnixListener::from_std(std).expect("a non-blocking listener");
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(serve(s));
        }
    });
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// HTTP/1.1 over TLS (hyper client), and its floor.

pub type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// A client TLS configuration trusting exactly `cert` (the daemon's own), offering HTTP/1.1 only.
pub fn client_tls(cert: &Path) -> Res<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).map_err(|e| format!("{}: {e}", cert.display()))? {
        roots.add(c.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A keep-alive HTTP/1.1 connection over TLS to `addr` (certificate name `localhost`).
pub async fn h1_tls(addr: SocketAddr, tls: &Arc<rustls::ClientConfig>) -> Res<Sender> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| format!("{addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from("localhost").unwrap();
    let stream =
        tokio_rustls::TlsConnector::from(tls.clone()).connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(conn);
    Ok(sender)
}

pub fn request(method: &str, path: &str, headers: &[(&str, String)], body: Bytes) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(method).uri(path).header("host", "localhost");
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    b.body(Full::new(body)).expect("valid request")
}

/// One request on `s`: (status, headers, body).
pub async fn send(s: &mut Sender, req: Request<Full<Bytes>>) -> Res<(u16, hyper::HeaderMap, Bytes)> {
    s.ready().await.map_err(|e| format!("connection: {e}"))?;
    let resp = s.send_request(req).await.map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
    Ok((status, parts.headers, body))
}

/// `conns` keep-alive TLS connections, each sending `make(conn, i)` in a closed loop for `secs`; any answer other
/// than `want` stops the run with an error.
pub async fn http_closed_loop(
    addr: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    conns: usize,
    secs: f64,
    want: u16,
    make: Arc<dyn Fn(usize, u64) -> Request<Full<Bytes>> + Send + Sync>,
) -> Res<Run> {
    let mut senders = Vec::new();
    for _ in 0..conns {
        senders.push(h1_tls(addr, tls).await?);
    }
    closed_loop(senders, secs, move |mut s: Sender, c, i| {
        let req = make(c, i);
        async move {
            let path = req.uri().to_string();
            let (status, _, body) = send(&mut s, req).await?;
            if status != want {
                return Err(format!("{path}: {status} {}", String::from_utf8_lossy(&body[..body.len().min(300)])));
            }
            Ok(s)
        }
    })
    .await
}

/// A TLS acceptor with the daemon's certificate and key, ring, TLS 1.2 and 1.3 (rustls' safe defaults) and `alpn`.
pub fn server_tls(cert: &Path, key: &Path, alpn: &[&[u8]]) -> Res<tokio_rustls::TlsAcceptor> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| e.to_string())?
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// The REST floor: hyper's HTTP/1.1 server over rustls (ring) with the daemon's own certificate and key, answering
/// every request with the bytes the daemon sent for the same route (status, headers, body), on `rt` (in a process of
/// its own: `servers.rs`).
pub fn hyper_floor(
    rt: &tokio::runtime::Runtime,
    cert: &Path,
    key: &Path,
    headers: hyper::HeaderMap,
    body: Bytes,
) -> Res<SocketAddr> {
    let acceptor = server_tls(cert, key, &[b"http/1.1"])?;
    let std = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    std.set_nonblocking(true).map_err(|e| e.to_string())?;
    let addr = std.local_addr().map_err(|e| e.to_string())?;
    let headers = Arc::new(headers);
    rt.spawn(async move {
        let listener = TcpListener::from_std(std).expect("a non-blocking listener");
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            let (acceptor, headers, body) = (acceptor.clone(), headers.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                    let mut r = Response::new(Full::new(body.clone()));
                    *r.headers_mut() = (*headers).clone();
                    async move { Ok::<_, std::convert::Infallible>(r) }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
            });
        }
    });
    Ok(addr)
}

// ---------------------------------------------------------------------------------------------------------------
// Durable writes: the SQLite floor.

/// Raw rusqlite: one row per transaction, WAL with `synchronous=FULL` (what the daemon uses for webhooks and
/// acknowledged commands), in a directory on the same file system as the daemon's state, for `secs`.
pub fn sqlite_floor(dir: &Path, name: &str, row_bytes: usize, secs: f64) -> Res<Run> {
    let path = dir.join(format!("{name}.sqlite"));
    let _ = std::fs::remove_file(&path);
    let c = rusqlite::Connection::open(&path).map_err(|e| e.to_string())?;
    let mode: String = c.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).map_err(|e| e.to_string())?;
    if mode != "wal" {
        return Err(format!("journal_mode is {mode}"));
    }
    c.execute_batch(
        "PRAGMA synchronous=FULL; CREATE TABLE t (id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, kind TEXT NOT NULL, \
         data TEXT NOT NULL);",
    )
    .map_err(|e| e.to_string())?;
    let data = "x".repeat(row_bytes);
    let mut stmt = c.prepare("INSERT INTO t (ts, kind, data) VALUES (?1, 'bench', ?2)").map_err(|e| e.to_string())?;
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(secs);
    let mut run = Run::default();
    while Instant::now() < until {
        let t = Instant::now();
        // Autocommit: each INSERT is its own transaction, committed (and fsynced) before the next.
        stmt.execute(rusqlite::params![run.calls as i64, data]).map_err(|e| e.to_string())?;
        run.lat_us.push(micros(t));
        run.calls += 1;
    }
    run.secs = started.elapsed().as_secs_f64();
    Ok(run)
}
