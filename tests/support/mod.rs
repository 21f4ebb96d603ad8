//! Shared helpers for integration tests: the real binary as a child process, readiness by polling with deadlines,
//! a real systemd notify socket, and an in-process daemon core (store + client + simulator) for operation tests.
//! Nothing here sleeps to synchronise; every wait has a deadline.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xyte-edge"));
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd
}

/// A `NOTIFY_SOCKET` like systemd's: a datagram socket the daemon writes `READY=1` etc. to.
pub struct NotifySocket {
    pub path: PathBuf,
    sock: UnixDatagram,
}

impl NotifySocket {
    pub fn bind(dir: &Path) -> Self {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        NotifySocket { path, sock }
    }

    /// Waits for a datagram containing `needle` (e.g. "READY=1"); returns every message seen until then.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Result<Vec<String>, Vec<String>> {
        self.wait_until(|l| l == needle, timeout)
    }

    /// Waits for a datagram with a line that satisfies `hit`; returns every message seen until then.
    pub fn wait_until(&self, hit: impl Fn(&str) -> bool, timeout: Duration) -> Result<Vec<String>, Vec<String>> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(seen);
            }
            self.sock.set_read_timeout(Some(left)).unwrap();
            match self.sock.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let found = msg.lines().any(&hit);
                    seen.push(msg);
                    if found {
                        return Ok(seen);
                    }
                }
                Err(_) => return Err(seen),
            }
        }
    }

    /// Every datagram already received, without waiting.
    pub fn drain(&self) -> Vec<String> {
        self.sock.set_nonblocking(true).unwrap();
        let mut buf = vec![0u8; 4096];
        let mut seen = Vec::new();
        while let Ok(n) = self.sock.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        self.sock.set_nonblocking(false).unwrap();
        seen
    }
}

/// A child whose stdout and stderr lines are collected on threads, so the test can wait for a line with a deadline.
pub struct Daemon {
    pub pid: u32,
    lines: mpsc::Receiver<String>,
    exited: mpsc::Receiver<Option<i32>>,
    pub exit_code: Option<Option<i32>>,
    pub output: Vec<String>,
}

impl Daemon {
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn xyte-edge");
        let (tx, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        // The child is owned by a waiter thread, so exit is observed as a message rather than by polling.
        let pid = child.id();
        let (exit_tx, exited) = mpsc::channel();
        std::thread::spawn(move || {
            let code = child.wait().ok().and_then(|s| s.code());
            let _ = exit_tx.send(code);
        });
        Daemon { pid, lines, exited, exit_code: None, output: Vec::new() }
    }

    /// Returns the first output line containing `needle`, or panics with everything seen after `timeout`.
    pub fn wait_line(&mut self, needle: &str, timeout: Duration) -> String {
        if let Some(l) = self.output.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.output.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => {
                    panic!("no line containing {needle:?} within {timeout:?}; output:\n{}", self.output.join("\n"))
                }
            }
        }
    }

    /// Waits until at least `n` output lines contain `needle`, or panics with everything seen after `timeout`.
    pub fn wait_lines(&mut self, needle: &str, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.output.iter().filter(|l| l.contains(needle)).count() < n {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => self.output.push(line),
                Err(_) => {
                    panic!("fewer than {n} lines with {needle:?} within {timeout:?}:\n{}", self.output.join("\n"))
                }
            }
        }
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid as i32), sig).expect("signal");
    }

    /// Waits for exit with a deadline; returns the exit code and how long it took.
    pub fn wait_exit(&mut self, timeout: Duration) -> (Option<i32>, Duration) {
        let start = Instant::now();
        match self.exited.recv_timeout(timeout) {
            Ok(code) => {
                self.exit_code = Some(code);
                // The pipes close when the process exits; collect what is left.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
                    self.output.push(line);
                }
                (code, start.elapsed())
            }
            Err(_) => {
                self.signal(nix::sys::signal::Signal::SIGKILL);
                panic!("did not exit within {timeout:?}; output:\n{}", self.output.join("\n"));
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exit_code.is_none() {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// The daemon's core in-process: a fresh store, a client and a simulator with 12 devices and no churn.
pub struct Rig {
    pub _dir: tempfile::TempDir,
    pub sim: xyte_edge::sim::SimHandle,
    pub app: std::sync::Arc<xyte_edge::runtime::App>,
}

pub async fn rig(read_only: bool) -> Rig {
    use xyte_edge::config::{Secret, XyteCredential};
    use xyte_edge::sim::{self, SimOptions};
    use xyte_edge::xyte::{ClientConfig, XyteClient};
    let dir = tempfile::tempdir().unwrap();
    let sim =
        sim::spawn("127.0.0.1:0".parse().unwrap(), SimOptions { devices: 12, churn: false, ..Default::default() })
            .await
            .unwrap();
    let store = xyte_edge::store::Store::open(dir.path(), Default::default()).unwrap();
    let client = XyteClient::new(ClientConfig {
        base_url: sim.base_url(),
        credential: XyteCredential::ApiKey(Secret::new(sim.sim.api_key().into())),
        request_timeout: Duration::from_secs(5),
        rate_limit_per_min: 6000,
    })
    .unwrap();
    let app = std::sync::Arc::new(xyte_edge::runtime::App {
        read_only,
        env_label: "test".into(),
        ..xyte_edge::runtime::App::new(store, client)
    });
    Rig { _dir: dir, sim, app }
}

/// `serve --demo` with its LAN listeners on ephemeral loopback ports, synced and ready for HTTP tests.
pub struct Gateway {
    pub daemon: Daemon,
    pub _dir: tempfile::TempDir,
    pub state: PathBuf,
    /// `127.0.0.1:port` of the TLS listener.
    pub lan: String,
    /// `127.0.0.1:port` of the plain loopback listener.
    pub local: String,
    /// The generated certificate (PEM) to trust.
    pub cert: PathBuf,
}

impl Gateway {
    /// Starts the demo with extra environment (e.g. `XYTE_WEBHOOK_SECRET`).
    pub fn start(env: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let mut cmd = bin();
        cmd.args(["serve", "--demo"])
            .env("XYTE_STATE_DIR", &state)
            .env("XYTE_MCP_SOCKET", dir.path().join("mcp.sock"))
            .env("XYTE_HTTP_LISTEN", "127.0.0.1:0")
            .env("XYTE_HTTP_LOCAL_LISTEN", "127.0.0.1:0")
            .env("XYTE_LOG_FORMAT", "text");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut daemon = Daemon::spawn(cmd);
        let lan = daemon.wait_line("LAN HTTPS:", Duration::from_secs(20));
        let lan = lan.split("https://").nth(1).unwrap().trim_end_matches('/').to_string();
        let local = daemon.wait_line("loopback HTTP:", Duration::from_secs(5));
        let local = local.split("http://").nth(1).unwrap().trim_end_matches('/').to_string();
        let cert = daemon.wait_line("TLS certificate:", Duration::from_secs(5));
        let cert =
            PathBuf::from(cert.split("TLS certificate:").nth(1).unwrap().split(" (SHA-256").next().unwrap().trim());
        daemon.wait_line("Xyte reachable", Duration::from_secs(20));
        Gateway { daemon, _dir: dir, state, lan, local, cert }
    }

    /// A LAN token made with `xyte-edge token create`, as an admin would.
    pub fn token(&self, name: &str, role: &str) -> String {
        let out = bin()
            .args(["token", "create", "--name", name, "--role", role])
            .env("XYTE_STATE_DIR", &self.state)
            .output()
            .unwrap();
        assert!(out.status.success(), "token create: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// A client that trusts exactly `cert` (the daemon's own, as a LAN user would with `--cacert`).
    pub fn agent(cert: &std::path::Path) -> ureq::Agent {
        let pem = std::fs::read(cert).unwrap();
        let cert = ureq::tls::Certificate::from_pem(&pem).unwrap().to_owned();
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::new_with_certs(&[cert]))
            .provider(ureq::tls::TlsProvider::Rustls)
            .build();
        ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into()
    }

    pub fn url(&self, path: &str) -> String {
        // The certificate names localhost; the daemon listens on 127.0.0.1.
        format!("https://localhost:{}{path}", self.lan.rsplit(':').next().unwrap())
    }
}

/// A newline-delimited JSON-RPC client on a daemon's MCP Unix socket (the test's own uid, so the socket's role).
pub struct Mcp {
    writer: std::os::unix::net::UnixStream,
    reader: BufReader<std::os::unix::net::UnixStream>,
    next_id: u64,
}

impl Mcp {
    /// Connects and initialises the session.
    pub fn connect(path: &Path) -> Mcp {
        let s = std::os::unix::net::UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {path:?}: {e}"));
        // Bounded so a wedged daemon fails the test instead of hanging it.
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut mcp = Mcp { reader: BufReader::new(s.try_clone().unwrap()), writer: s, next_id: 0 };
        let init = mcp.request(
            "initialize",
            serde_json::json!({"protocolVersion": "2025-06-18", "capabilities": {},
                               "clientInfo": {"name": "test", "version": "1"}}),
        );
        assert!(init["result"]["capabilities"]["tools"].is_object(), "{init}");
        mcp.send(&serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        mcp
    }

    fn send(&mut self, msg: &serde_json::Value) {
        use std::io::Write;
        self.writer.write_all(format!("{msg}\n").as_bytes()).expect("write to the MCP socket");
    }

    /// The response to a new request (notifications in between are skipped).
    pub fn request(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let mut line = String::new();
            assert!(self.reader.read_line(&mut line).expect("read from the MCP socket") > 0, "the daemon hung up");
            let msg: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            if msg["id"] == id {
                return msg;
            }
        }
    }

    /// A tool's structured result, or the error object of a tool error (`isError: true`).
    pub fn call(&mut self, tool: &str, args: serde_json::Value) -> Result<serde_json::Value, serde_json::Value> {
        let r = self.request("tools/call", serde_json::json!({"name": tool, "arguments": args}));
        match r["result"]["isError"].as_bool() {
            Some(false) => Ok(r["result"]["structuredContent"].clone()),
            Some(true) => Err(r["result"]["structuredContent"]["error"].clone()),
            None => panic!("{tool}: not a tool result: {r}"),
        }
    }
}
