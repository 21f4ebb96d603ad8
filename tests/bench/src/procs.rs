//! The processes under test: `xyte-edge sim` and `xyte-edge serve` as children whose output goes to files, waited
//! on by polling with deadlines (never by sleeping), stopped with SIGTERM and checked for a clean exit.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub type Res<T> = Result<T, String>;

/// How often a wait re-checks its condition: short, so start-up times are not rounded up by much.
const POLL: Duration = Duration::from_millis(1);

pub struct Proc {
    pub name: String,
    child: Option<Child>,
    out: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, dir: &Path) -> Res<Proc> {
        let out = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&out).map_err(|e| format!("{name}: log file: {e}"))?;
        let err = file.try_clone().map_err(|e| e.to_string())?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        Ok(Proc { name: name.to_string(), child: Some(child), out })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// An error naming the process and showing its last output, if it has exited.
    pub fn alive(&mut self) -> Res<()> {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => Ok(()),
            Some(Ok(Some(status))) => {
                Err(format!("{} exited ({status}); its output ends with:\n{}", self.name, self.tail()))
            }
            Some(Err(e)) => Err(format!("{}: {e}", self.name)),
            None => Err(format!("{} was already stopped", self.name)),
        }
    }

    /// The first output line containing `needle`.
    pub fn wait_line(&mut self, needle: &str, timeout: Duration) -> Res<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.log().lines().find(|l| l.contains(needle)) {
                return Ok(l.to_string());
            }
            self.alive()?;
            if Instant::now() > deadline {
                return Err(format!("{}: no line with {needle:?} within {timeout:?}:\n{}", self.name, self.tail()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGTERM, then a clean exit (status 0) within `timeout`.
    pub fn stop(&mut self, timeout: Duration) -> Res<Duration> {
        self.alive()?;
        let started = Instant::now();
        signal(self.pid(), libc::SIGTERM);
        let deadline = started + timeout;
        let mut child = self.child.take().expect("alive checked it");
        loop {
            match child.try_wait() {
                Ok(Some(s)) if s.success() => return Ok(started.elapsed()),
                Ok(Some(s)) => return Err(format!("{} stopped with {s}:\n{}", self.name, self.tail())),
                Ok(None) if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("{} did not stop within {timeout:?} of SIGTERM", self.name));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// The resident set of a process in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> Res<u64> {
    status_kib(pid, "VmRSS:")
}

fn status_kib(pid: u32, field: &str) -> Res<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| format!("/proc/{pid}: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no {field} in /proc/{pid}/status"))
}

/// The peak resident set (VmHWM) since start or since [`reset_peak_rss`], in KiB.
pub fn peak_rss_kib(pid: u32) -> Res<u64> {
    status_kib(pid, "VmHWM:")
}

/// Starts the peak (VmHWM) over from the current RSS (`5` to `/proc/PID/clear_refs`, Linux 4.0 and later).
pub fn reset_peak_rss(pid: u32) -> Res<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").map_err(|e| format!("/proc/{pid}/clear_refs: {e}"))
}

/// Samples VmRSS every 200 ms until it is at most `limit_kib` or `wait` has passed; the last sample and the time.
pub fn rss_back_within(pid: u32, limit_kib: u64, wait: Duration) -> Res<(u64, Duration)> {
    let start = Instant::now();
    loop {
        let rss = rss_kib(pid)?;
        if rss <= limit_kib || start.elapsed() >= wait {
            return Ok((rss, start.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// CPU time (user + system) a process has used so far, in seconds (`/proc/PID/stat`).
pub fn cpu_secs(pid: u32) -> Res<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // The fields after the command name (which may hold spaces), from field 3 on: utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).ok_or(format!("/proc/{pid}/stat: {stat:.200}"));
    let total = ticks(11)? + ticks(12)?;
    // SAFETY: sysconf has no memory arguments.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    Ok(total as f64 / hz as f64)
}

/// VmRSS once it has stopped moving: three samples 200 ms apart within 1 % of each other (at most 10 s).
pub fn settled_rss_kib(pid: u32) -> Res<u64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = Vec::new();
    loop {
        last.push(rss_kib(pid)?);
        if last.len() >= 3 {
            let w = &last[last.len() - 3..];
            let (lo, hi) = (*w.iter().min().unwrap(), *w.iter().max().unwrap());
            if hi - lo <= hi / 100 || Instant::now() > deadline {
                return Ok(hi);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> Res<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// A plain HTTP/1.1 request on a fresh connection (`Connection: close`): (status, body).
pub fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Res<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("{method} {path}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let status = text.get(9..12).and_then(|s| s.parse().ok()).ok_or_else(|| format!("bad response: {text:.200}"))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.into() };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Polls `GET /readyz` until it answers 200; returns when that was seen.
pub fn wait_ready(daemon: &mut Proc, local: SocketAddr, timeout: Duration) -> Res<Instant> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        if let Ok((status, body)) = http(local, "GET", "/readyz", &[], "") {
            if status == 200 {
                return Ok(Instant::now());
            }
            last = body;
        }
        daemon.alive()?;
        if Instant::now() > deadline {
            return Err(format!("{} not ready within {timeout:?}; last /readyz: {last}", daemon.name));
        }
        std::thread::sleep(POLL);
    }
}

/// systemd's side of sd_notify: the daemon sends `READY=1` here.
pub struct Notify {
    pub path: PathBuf,
    sock: UnixDatagram,
}

impl Notify {
    pub fn bind(dir: &Path) -> Res<Notify> {
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).map_err(|e| format!("notify socket: {e}"))?;
        Ok(Notify { path, sock })
    }

    /// Waits for a datagram with the line `READY=1`; returns when it arrived.
    pub fn wait_ready(&self, timeout: Duration) -> Res<Instant> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no READY=1 within {timeout:?}"));
            }
            self.sock.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
            let n = self.sock.recv(&mut buf).map_err(|e| format!("no READY=1: {e}"))?;
            if String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "READY=1") {
                return Ok(Instant::now());
            }
        }
    }
}

/// The simulator as a child process.
pub struct Sim {
    /// Kept so the simulator lives (and is killed on drop) with this handle.
    _proc: Proc,
    pub base_url: String,
    pub api_key: String,
    /// `127.0.0.1:port`, for the `/_sim/` control routes.
    pub addr: SocketAddr,
}

impl Sim {
    pub fn start(bin: &Path, dir: &Path, devices: usize) -> Res<Sim> {
        let mut cmd = Command::new(bin);
        cmd.env_clear().args(["sim", "--listen", "127.0.0.1:0", "--devices", &devices.to_string(), "--seed", "8"]);
        let mut proc = Proc::spawn(&format!("sim-{devices}"), cmd, dir)?;
        let line = proc.wait_line("listening on", Duration::from_secs(30))?;
        // "xyte-edge sim listening on {base} (api key: {key}, …; control routes under http://{addr}/_sim/)"
        let base_url = line.split("listening on ").nth(1).and_then(|s| s.split(' ').next()).unwrap_or("").to_string();
        let api_key = line.split("api key: ").nth(1).and_then(|s| s.split(',').next()).unwrap_or("").to_string();
        let addr = line
            .split("http://")
            .last()
            .and_then(|s| s.split('/').next())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("cannot read the simulator's address from {line:?}"))?;
        if base_url.is_empty() || api_key.is_empty() {
            return Err(format!("cannot read the simulator's URL and key from {line:?}"));
        }
        Ok(Sim { _proc: proc, base_url, api_key, addr })
    }

    /// Requests the simulator has answered so far (`GET /_sim/stats` total).
    pub fn total_requests(&self) -> Res<u64> {
        let (status, body) = http(self.addr, "GET", "/_sim/stats", &[], "")?;
        let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("/_sim/stats: {e}: {body:.200}"))?;
        match (status, v["total"].as_u64()) {
            (200, Some(n)) => Ok(n),
            _ => Err(format!("/_sim/stats answered {status}: {body:.200}")),
        }
    }
}

/// Where a daemon listens and what it needs to be talked to.
#[derive(Clone)]
pub struct Layout {
    pub dir: PathBuf,
    pub state: PathBuf,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub lan: SocketAddr,
    pub local: SocketAddr,
    pub secret: String,
}

impl Layout {
    /// Writes a configuration file (every key from packaging/xyte-edge.conf that matters here) for a daemon
    /// against `sim`. Polling is hourly and the cache lives a day, so nothing but the load touches the store or Xyte.
    pub fn write(dir: &Path, name: &str, sim: &Sim, rate_limit: u32) -> Res<Layout> {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let state = dir.join("state");
        let config = dir.join("xyte-edge.conf");
        let socket = dir.join("mcp.sock");
        let lan: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse().unwrap();
        let local: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse().unwrap();
        let secret = "bench-webhook-secret-0123456789".to_string();
        let text = format!(
            "XYTE_API_KEY={key}\nXYTE_BASE_URL={base}\nXYTE_CACHE_TTL=86400\nXYTE_POLL_INTERVAL=3600\n\
             XYTE_RATE_LIMIT={rate_limit}\nXYTE_REQUEST_TIMEOUT=15\nXYTE_ENV=bench\nXYTE_LOG_LEVEL=info\n\
             XYTE_LOG_FORMAT=text\nXYTE_STATE_DIR={state}\nXYTE_MCP_SOCKET={socket}\nXYTE_MCP_SOCKET_ROLE=operator\n\
             XYTE_HTTP_LISTEN={lan}\nXYTE_HTTP_LOCAL_LISTEN={local}\nXYTE_ALLOWED_HOSTS=localhost,127.0.0.1\n\
             XYTE_WEBHOOK_SECRET={secret}\nXYTE_MAX_CONNECTIONS=8192\nXYTE_PRESETS_FILE={presets}\n\
             XYTE_COMMAND_TTL=600\nXYTE_EVENT_RETENTION_DAYS=14\nXYTE_EVENT_RETENTION_ROWS=2000000\n",
            key = sim.api_key,
            base = sim.base_url,
            state = state.display(),
            socket = socket.display(),
            presets = dir.join("presets.json").display(),
        );
        std::fs::write(&config, text).map_err(|e| e.to_string())?;
        Ok(Layout { dir, state, config, socket, lan, local, secret })
    }

    pub fn command(&self, bin: &Path, notify: Option<&Path>) -> Command {
        let mut cmd = Command::new(bin);
        cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
        cmd.arg("serve").arg("--config").arg(&self.config);
        if let Some(n) = notify {
            cmd.env("NOTIFY_SOCKET", n);
        }
        // The environment the shipped systemd unit gives the daemon (e.g. MALLOC_ARENA_MAX), so the figures are
        // those of an installed gateway.
        for (k, v) in unit_environment() {
            cmd.env(k, v);
        }
        // Command acceptance is measured by queueing tens of thousands of commands in seconds, far more than the
        // outbox admits by default (XYTE_RATE_LIMIT x TTL minutes / 2: 30,000 here), so its limits are raised to their
        // maximum. In the environment, not the file: a daemon from before the outbox limits warns about an unknown
        // variable but refuses an unknown key in its file, and old and new code are measured alike.
        cmd.env("XYTE_OUTBOX_MAX", "1000000").env("XYTE_OUTBOX_MAX_PER_DEVICE", "1000000");
        // For experiments (e.g. XYTE_BENCH_DAEMON_ENV=MALLOC_ARENA_MAX=2): extra environment for the daemon.
        for kv in std::env::var("XYTE_BENCH_DAEMON_ENV").unwrap_or_default().split_whitespace() {
            if let Some((k, v)) = kv.split_once('=') {
                cmd.env(k, v);
            }
        }
        cmd
    }

    /// A LAN bearer token from `xyte-edge token create`, as an admin makes one.
    pub fn token(&self, bin: &Path, name: &str, role: &str) -> Res<String> {
        let out = Command::new(bin)
            .env_clear()
            .args(["token", "create", "--name", name, "--role", role])
            .env("XYTE_STATE_DIR", &self.state)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("token create: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    pub fn cert(&self) -> PathBuf {
        self.state.join("tls/cert.pem")
    }

    pub fn key(&self) -> PathBuf {
        self.state.join("tls/key.pem")
    }
}

/// `Environment=KEY=VALUE` lines of systemd/xyte-edge.service (read when the runner is built).
pub fn unit_environment() -> Vec<(String, String)> {
    include_str!("../../../systemd/xyte-edge.service")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Environment="))
        .flat_map(|v| v.split_whitespace())
        .filter_map(|kv| kv.trim_matches('"').split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

/// Raises the soft open-file limit to the hard one (the daemon, a child, inherits it): 1,000 SSE clients need
/// 1,000 descriptors on each side.
pub fn raise_fd_limit() -> Res<u64> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return Err("getrlimit failed".into());
        }
        r.rlim_cur = r.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
            return Err("setrlimit failed".into());
        }
    }
    Ok(r.rlim_cur)
}
