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

/// The lines a child writes to stdout and stderr (both piped), read on threads as they come.
fn output_lines(child: &mut std::process::Child) -> mpsc::Receiver<String> {
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
    lines
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
        let lines = output_lines(&mut child);
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
        create_token(&self.state, name, role)
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

    /// The data of every event of `kind` in the log, oldest first (page by page through `list_events`).
    pub fn events(&mut self, kind: &str) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let page = self
                .call("list_events", serde_json::json!({"kind": kind, "after_id": after, "limit": 500}))
                .unwrap_or_else(|e| panic!("list_events: {e}"));
            let list = page["events"].as_array().cloned().unwrap_or_default();
            let Some(last) = list.last() else { break };
            after = last["id"].as_i64().expect("an event id");
            let full = list.len() == 500;
            for e in list {
                assert_eq!(e["kind"], kind, "list_events filters by kind: {e}");
                out.push(e["data"].clone());
            }
            if !full {
                break;
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------------------------
// MQTT (issue 25): a real Mosquitto broker on an ephemeral port and its command-line clients (`mosquitto_sub`,
// `mosquitto_pub`, MQTT 5), driven from the test. Brokers and subscribers are killed on drop.
// ---------------------------------------------------------------------------------------------------------------

/// A loopback port that was free a moment ago (bound to port 0, then released).
/// A LAN token for the daemon whose state is `state_dir`, made with `xyte-edge token create` as an admin would.
pub fn create_token(state_dir: &Path, name: &str, role: &str) -> String {
    let out = bin()
        .args(["token", "create", "--name", name, "--role", role])
        .env("XYTE_STATE_DIR", state_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "token create: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `check` every 20 ms until it returns Some, or panics with `what` after `timeout`.
pub fn poll<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

/// A CA and a server certificate it signed, as PEM files (for a TLS listener and the clients that trust the CA), and
/// a client certificate it signed too (for mutual TLS).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// Generates a CA and a server certificate for `names` (DNS names or IP addresses) into `dir`.
pub fn make_tls(dir: &Path, names: &[&str]) -> TlsFiles {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(DnType::CommonName, "xyte-edge test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
    client.distinguished_name.push(DnType::CommonName, "xyte-edge gateway");
    client.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client.signed_by(&client_key, &issuer).unwrap();
    let files = TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    };
    std::fs::write(&files.ca, ca_cert.pem()).unwrap();
    std::fs::write(&files.cert, cert.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    std::fs::write(&files.client_cert, client_cert.pem()).unwrap();
    std::fs::write(&files.client_key, client_key.serialize_pem()).unwrap();
    files
}

#[derive(Debug, Clone, Default)]
pub struct BrokerOptions {
    /// A TLS listener with this certificate (clients connect to `localhost`).
    pub tls: Option<TlsFiles>,
    /// Only this user (a `password_file`), no anonymous clients.
    pub user: Option<(String, String)>,
    /// Sessions and queued messages survive a restart of the broker (`persistence true`).
    pub persistence: bool,
    /// With `tls`: clients must present a certificate the CA signed (mutual TLS).
    pub require_client_cert: bool,
}

/// Debian's `mosquitto` on an ephemeral loopback port, with its configuration and log in a temporary directory.
pub struct Broker {
    pub port: u16,
    pub opts: BrokerOptions,
    pub dir: tempfile::TempDir,
    conf: PathBuf,
    log: PathBuf,
    child: Option<std::process::Child>,
}

impl Broker {
    pub fn start(opts: BrokerOptions) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        // When the tests run as root, mosquitto would drop to the `mosquitto` user, which cannot read the temporary
        // directory: stay the user we are (the option is ignored when not root).
        let me = nix::unistd::User::from_uid(nix::unistd::geteuid()).ok().flatten().map(|u| u.name);
        let mut conf = format!("per_listener_settings false\nlistener {port} 127.0.0.1\n");
        if let Some(tls) = &opts.tls {
            conf += &format!(
                "cafile {}\ncertfile {}\nkeyfile {}\n",
                tls.ca.display(),
                tls.cert.display(),
                tls.key.display()
            );
            if opts.require_client_cert {
                conf += "require_certificate true\n";
            }
        }
        match &opts.user {
            Some((user, password)) => {
                let file = dir.path().join("passwords");
                let out = Command::new("mosquitto_passwd")
                    .args(["-b", "-c"])
                    .arg(&file)
                    .args([user, password])
                    .output()
                    .expect("mosquitto_passwd (Debian package mosquitto)");
                assert!(out.status.success(), "mosquitto_passwd: {}", String::from_utf8_lossy(&out.stderr));
                conf += &format!("allow_anonymous false\npassword_file {}\n", file.display());
            }
            None => conf += "allow_anonymous true\n",
        }
        if opts.persistence {
            conf += &format!("persistence true\npersistence_location {}/\n", dir.path().display());
        }
        if let Some(me) = me {
            conf += &format!("user {me}\n");
        }
        // Nothing queued for a subscriber that is away may be dropped: the tests count every message.
        conf += "max_queued_messages 0\nlog_type all\nlog_timestamp_format %H:%M:%S\n";
        let path = dir.path().join("mosquitto.conf");
        std::fs::write(&path, conf).unwrap();
        let log = dir.path().join("mosquitto.log");
        let mut broker = Broker { port, opts, conf: path, log, child: None, dir };
        broker.spawn();
        broker
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        // Debian installs the broker in /usr/sbin, which is not on every user's PATH.
        let program = if Path::new("/usr/sbin/mosquitto").exists() { "/usr/sbin/mosquitto" } else { "mosquitto" };
        let child = Command::new(program)
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("mosquitto (Debian package mosquitto)");
        self.child = Some(child);
        let port = self.port;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("mosquitto exited ({status}) before accepting connections:\n{}", self.log_text());
            }
            assert!(Instant::now() < deadline, "mosquitto not accepting on {port} within 15 s:\n{}", self.log_text());
            std::thread::park_timeout(Duration::from_millis(20));
        }
    }

    /// Stops the broker as an administrator would (SIGTERM: it saves its persistent sessions), waiting for it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("mosquitto did not stop within 10 s of SIGTERM:\n{}", self.log_text());
            }
            std::thread::park_timeout(Duration::from_millis(20));
        }
    }

    /// Starts the broker again on the same port with the same configuration (and, with persistence, sessions).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The URL the daemon is given (`XYTE_MQTT_URL`).
    pub fn url(&self) -> String {
        match self.opts.tls {
            Some(_) => format!("mqtts://localhost:{}", self.port),
            None => format!("mqtt://127.0.0.1:{}", self.port),
        }
    }

    /// Connection arguments for `mosquitto_sub` / `mosquitto_pub` (MQTT 5).
    pub fn client_args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec!["-V".into(), "mqttv5".into(), "-p".into(), self.port.to_string()];
        match &self.opts.tls {
            Some(tls) => args.extend(["-h".into(), "localhost".into(), "--cafile".into(), path_text(&tls.ca)]),
            None => args.extend(["-h".into(), "127.0.0.1".into()]),
        }
        if let Some(tls) = self.opts.tls.as_ref().filter(|_| self.opts.require_client_cert) {
            args.extend(["--cert".into(), path_text(&tls.client_cert), "--key".into(), path_text(&tls.client_key)]);
        }
        if let Some((user, password)) = &self.opts.user {
            args.extend(["-u".into(), user.clone(), "-P".into(), password.clone()]);
        }
        args
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn path_text(p: &Path) -> String {
    p.to_str().expect("a UTF-8 path").to_string()
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One message as `mosquitto_sub -F %j` printed it.
#[derive(Debug, Clone)]
pub struct MqttMsg {
    pub topic: String,
    pub qos: u64,
    pub retain: bool,
    /// `None` for an empty payload.
    pub payload: Option<String>,
    /// MQTT 5 properties (`correlation-data`, `response-topic`, `message-expiry-interval`, …) as printed.
    pub properties: Value,
}

use serde_json::Value;

impl MqttMsg {
    /// The payload as JSON; panics (naming the message) when it is not.
    pub fn json(&self) -> Value {
        let text = self.payload.as_deref().unwrap_or_else(|| panic!("empty payload: {self:?}"));
        serde_json::from_str(text).unwrap_or_else(|e| panic!("payload is not JSON ({e}): {self:?}"))
    }

    pub fn correlation(&self) -> Option<&str> {
        self.properties["correlation-data"].as_str()
    }
}

/// A `mosquitto_sub` (MQTT 5, QoS 1) whose messages are collected on a thread; the test waits for them with
/// deadlines. Debug lines (`-d`) tell when the subscription is acknowledged and when the client reconnected.
pub struct Sub {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    pub msgs: Vec<MqttMsg>,
    /// Lines that are not messages (the client's debug output).
    pub debug: Vec<String>,
    pub what: String,
}

impl Sub {
    /// Subscribes to `topics` with a clean session; returns once the broker acknowledged the subscription.
    pub fn start(broker: &Broker, topics: &[&str]) -> Sub {
        Sub::spawn(broker, topics, &[])
    }

    /// A persistent session with client id `id` (no expiry): messages published while the client is away (the
    /// broker restarting) are kept for it and delivered when it is back. The client reconnects on its own.
    pub fn persistent(broker: &Broker, topics: &[&str], id: &str) -> Sub {
        Sub::spawn(broker, topics, &["-c", "-i", id, "-x", "-1"])
    }

    fn spawn(broker: &Broker, topics: &[&str], extra: &[&str]) -> Sub {
        // Line-buffered: mosquitto_sub writes through stdio, which a pipe would otherwise block-buffer.
        let mut cmd = Command::new("stdbuf");
        cmd.args(["-oL", "mosquitto_sub"]).args(broker.client_args()).args(["-q", "1", "-d", "-F", "%j"]).args(extra);
        for t in topics {
            cmd.args(["-t", t]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub (Debian package mosquitto-clients)");
        let lines = output_lines(&mut child);
        let mut sub = Sub { child, lines, msgs: Vec::new(), debug: Vec::new(), what: topics.join(" ") };
        sub.wait_debug("received SUBACK", 1, Duration::from_secs(15));
        sub
    }

    /// Reads one line (message or debug) within `timeout`; false when none came.
    fn pump(&mut self, timeout: Duration) -> bool {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => {
                if line.starts_with('{') {
                    let v: Value =
                        serde_json::from_str(&line).unwrap_or_else(|e| panic!("mosquitto_sub ({e}): {line}"));
                    self.msgs.push(MqttMsg {
                        topic: v["topic"].as_str().unwrap_or_default().to_string(),
                        qos: v["qos"].as_u64().unwrap_or(0),
                        retain: v["retain"].as_u64() == Some(1),
                        payload: v["payload"].as_str().map(str::to_string),
                        properties: v["properties"].clone(),
                    });
                } else {
                    self.debug.push(line);
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Collects whatever has arrived, without waiting.
    pub fn drain(&mut self) {
        while self.pump(Duration::ZERO) {}
    }

    /// Reads for up to `timeout` until something arrives, then whatever else has arrived; how many new messages.
    pub fn read_for(&mut self, timeout: Duration) -> usize {
        let before = self.msgs.len();
        if self.pump(timeout) {
            self.drain();
        }
        self.msgs.len() - before
    }

    /// Waits until at least `n` debug lines contain `needle` (e.g. "received SUBACK" once per (re)connection).
    pub fn wait_debug(&mut self, needle: &str, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.debug.iter().filter(|l| l.contains(needle)).count() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if !self.pump(left) && Instant::now() >= deadline {
                panic!(
                    "mosquitto_sub {}: fewer than {n} lines with {needle:?} within {timeout:?}:\n{}",
                    self.what,
                    self.debug.join("\n")
                );
            }
        }
    }

    /// Waits until `done` holds for the messages received so far; panics naming `what` after `timeout`.
    pub fn wait_until(&mut self, what: &str, timeout: Duration, mut done: impl FnMut(&[MqttMsg]) -> bool) {
        let deadline = Instant::now() + timeout;
        self.drain();
        while !done(&self.msgs) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let tail: Vec<String> = self.msgs.iter().rev().take(20).map(|m| format!("{m:?}")).collect();
                panic!(
                    "mosquitto_sub {}: no {what} within {timeout:?}; {} messages, the last ones (newest first):\n{}",
                    self.what,
                    self.msgs.len(),
                    tail.join("\n")
                );
            }
            // Batches of lines, then the condition again.
            if self.pump(left.min(Duration::from_millis(200))) {
                self.drain();
            }
        }
    }

    /// The first message (in arrival order) that satisfies `hit`, waiting for it until `timeout`.
    pub fn wait_msg(&mut self, what: &str, timeout: Duration, hit: impl Fn(&MqttMsg) -> bool) -> MqttMsg {
        self.wait_until(what, timeout, |msgs| msgs.iter().any(&hit));
        self.msgs.iter().find(|m| hit(m)).unwrap().clone()
    }

    /// Messages on exactly this topic, in arrival order.
    pub fn on(&self, topic: &str) -> Vec<&MqttMsg> {
        self.msgs.iter().filter(|m| m.topic == topic).collect()
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `mosquitto_pub` (MQTT 5, QoS 1): `payload` (None: an empty message) to `topic`, with `-D publish` properties
/// such as `("response-topic", "r/1")`, `("correlation-data", "c-1")`. Panics unless the broker acknowledged it.
pub fn mqtt_pub(broker: &Broker, topic: &str, payload: Option<&[u8]>, props: &[(&str, &str)]) {
    use std::io::Write;
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(broker.client_args()).args(["-q", "1", "-t", topic]);
    for (name, value) in props {
        cmd.args(["-D", "publish", name, value]);
    }
    match payload {
        Some(_) => cmd.arg("-s"),
        None => cmd.arg("-n"),
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub (Debian package mosquitto-clients)");
    let mut stdin = child.stdin.take().unwrap();
    if let Some(p) = payload {
        stdin.write_all(p).unwrap();
    }
    drop(stdin);
    // mosquitto_pub exits once the PUBACK came; its connect timeout bounds the wait.
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "mosquitto_pub {topic}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Daemon {
    /// Returns the first output line that satisfies `hit`, or panics naming `what` with everything seen after
    /// `timeout`.
    pub fn wait_line_where(&mut self, what: &str, timeout: Duration, hit: impl Fn(&str) -> bool) -> String {
        if let Some(l) = self.output.iter().find(|l| hit(l)) {
            return l.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    self.output.push(line.clone());
                    if hit(&line) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with {what} within {timeout:?}; output:\n{}", self.output.join("\n")),
            }
        }
    }

    /// The address of the listener whose `HTTP listener ready` line says `tls=<tls>` (`XYTE_HTTP_LISTEN` when true,
    /// `XYTE_HTTP_LOCAL_LISTEN` when false; both may be `127.0.0.1:0`), waiting for it until `timeout`.
    pub fn listener(&mut self, tls: bool, timeout: Duration) -> String {
        let flag = format!("tls={tls}");
        let line = self.wait_line_where(&format!("an HTTP listener with {flag}"), timeout, |l| {
            l.contains("HTTP listener ready") && l.split_whitespace().any(|w| w == flag)
        });
        line.split("addr=").nth(1).and_then(|r| r.split_whitespace().next()).expect("addr= in the line").to_string()
    }

    /// Collects the output that has arrived, without waiting.
    pub fn drain_output(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.output.push(line);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Alert receivers (the alerts issue): e-mail through Python's aiosmtpd with STARTTLS and AUTH required.
// ---------------------------------------------------------------------------------------------------------------

/// aiosmtpd (`tests/receivers/smtp_sink.py`, run with `XYTE_TEST_PYTHON`, which tests/run-all.sh points at a venv with
/// aiosmtpd) on a loopback port, STARTTLS with a certificate for `localhost` and `127.0.0.1` (`ca()` to trust) and
/// AUTH required; one JSON line per accepted message arrives on `lines`. `stop` and `start_again` keep the port, so a
/// sender configured for it finds the sink again. Killed on drop. A missing Python or aiosmtpd fails the test with
/// what to install.
pub struct SmtpSink {
    child: Option<std::process::Child>,
    /// Every accepted message, across restarts.
    pub lines: mpsc::Receiver<Value>,
    tx: mpsc::Sender<Value>,
    pub port: u16,
    dir: PathBuf,
    user: String,
    password: String,
}

impl SmtpSink {
    /// Generates the certificate into `dir` and starts the sink on an ephemeral port.
    pub fn start(dir: &Path, user: &str, password: &str) -> SmtpSink {
        let key = rcgen::KeyPair::generate().unwrap();
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let cert = rcgen::CertificateParams::new(names).unwrap().self_signed(&key).unwrap();
        std::fs::write(dir.join("smtp.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("smtp.key"), key.serialize_pem()).unwrap();
        let (tx, lines) = mpsc::channel();
        let mut sink = SmtpSink {
            child: None,
            lines,
            tx,
            port: 0,
            dir: dir.to_path_buf(),
            user: user.into(),
            password: password.into(),
        };
        sink.spawn();
        sink
    }

    /// The certificate the sink presents (self-signed), for the sender to trust.
    pub fn ca(dir: &Path) -> PathBuf {
        dir.join("smtp.pem")
    }

    fn spawn(&mut self) {
        let python = std::env::var("XYTE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/receivers/smtp_sink.py");
        let mut child = Command::new(&python)
            .arg(script)
            .args([self.dir.join("smtp.pem"), self.dir.join("smtp.key")])
            .args([&self.user, &self.password])
            .arg(self.port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {python}: {e} (set XYTE_TEST_PYTHON to a Python with aiosmtpd)"));
        // Its stderr is read as it comes (a full pipe would stall it) and shown if it does not start.
        let err = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (stderr, sink) = (child.stderr.take().unwrap(), err.clone());
        let err_reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut e) = sink.lock() {
                    e.push_str(&line);
                    e.push('\n');
                }
            }
        });
        // The first line says the port; every later one is a message, kept on the channel that outlives restarts.
        let (ready_tx, ready) = mpsc::channel::<u16>();
        let (stdout, tx) = (child.stdout.take().unwrap(), self.tx.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
                match v["port"].as_u64() {
                    Some(port) => {
                        let _ = ready_tx.send(port as u16);
                    }
                    None => {
                        let _ = tx.send(v);
                    }
                }
            }
        });
        match ready.recv_timeout(Duration::from_secs(20)) {
            Ok(port) => {
                assert!(self.port == 0 || self.port == port, "the sink took port {port}, not {}", self.port);
                self.port = port;
                self.child = Some(child);
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = err_reader.join();
                let err = err.lock().map(|e| e.clone()).unwrap_or_default();
                panic!(
                    "the SMTP sink did not start ({python}; is aiosmtpd installed? tests/run-all.sh installs it):\n{err}"
                );
            }
        }
    }

    /// Stops the sink (its port refuses connections until `start_again`).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the sink again on the same port.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "start_again while the sink runs");
        self.spawn();
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
    }
}
