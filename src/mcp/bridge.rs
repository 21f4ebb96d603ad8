//! `xyte-edge mcp`: a byte-transparent stdio ↔ Unix-socket bridge, so any stdio MCP client can reach the daemon
//! (`{"command": "xyte-edge", "args": ["mcp"]}`). It exits when either side closes.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;

use crate::exit;

pub const DEFAULT_SOCKET: &str = "/run/xyte-edge/mcp.sock";

/// Explains a failed connect in terms of what the user can do, with the sysexits code to leave with.
pub fn connect_error(path: &Path, e: &io::Error) -> (u8, String) {
    let p = path.display();
    match e.kind() {
        io::ErrorKind::NotFound => (
            exit::UNAVAILABLE,
            format!("no xyte-edge socket at {p}; is the daemon running? (systemctl status xyte-edge)"),
        ),
        io::ErrorKind::ConnectionRefused => (
            exit::UNAVAILABLE,
            format!("nothing is listening on {p}; the daemon is not running (systemctl start xyte-edge)"),
        ),
        io::ErrorKind::PermissionDenied => (
            exit::NO_PERMISSION,
            format!(
                "permission denied on {p}; add your user to the xyte-edge group (sudo usermod -aG xyte-edge $USER) and log in again"
            ),
        ),
        _ => (exit::UNAVAILABLE, format!("cannot connect to {p}: {e}")),
    }
}

pub fn run(path: &Path) -> ExitCode {
    let socket = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e) => {
            let (code, message) = connect_error(path, &e);
            eprintln!("xyte-edge mcp: {message}");
            return ExitCode::from(code);
        }
    };
    let (mut to_daemon, mut from_daemon) = match (socket.try_clone(), socket.try_clone()) {
        (Ok(a), Ok(b)) => (a, b),
        _ => return ExitCode::from(exit::SOFTWARE),
    };
    // stdin → socket; at end of input, half-close so the daemon finishes in-flight answers and closes.
    std::thread::spawn(move || {
        let mut stdin = io::stdin().lock();
        match copy(&mut stdin, &mut to_daemon) {
            Err(Failed::Writing(e)) => {
                // The daemon closed the connection (e.g. this client read none of its answers for too long, README):
                // the other direction may be stuck writing to a stdout nobody reads, so leave now.
                eprintln!("xyte-edge mcp: the daemon closed the connection: {e}");
                std::process::exit(i32::from(exit::UNAVAILABLE));
            }
            Ok(()) | Err(Failed::Reading) => {
                let _ = to_daemon.shutdown(std::net::Shutdown::Write);
            }
        }
    });
    let mut stdout = io::stdout().lock();
    let _ = copy(&mut from_daemon, &mut stdout);
    ExitCode::SUCCESS
}

/// Which side of a copy failed (a failed read is handled like the end of input).
enum Failed {
    Reading,
    Writing(io::Error),
}

/// Like `io::copy`, but flushes after every read so each message reaches the other side at once. Blocking on both
/// sides, with one buffer: what the bridge holds is bounded, and a side that does not read holds up the other.
fn copy(from: &mut impl Read, to: &mut impl Write) -> Result<(), Failed> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(Failed::Reading),
        };
        to.write_all(&buf[..n]).and_then(|_| to.flush()).map_err(Failed::Writing)?;
    }
}

/// The daemon's `edge://status` document, read over the socket at `path` with `timeout` for each read and write; or
/// the sysexits code and what went wrong, in words for the operator. `status` prints it, `diagnose` bundles it.
pub fn read_status(path: &Path, timeout: std::time::Duration) -> Result<serde_json::Value, (u8, String)> {
    use std::io::BufRead;
    let mut socket = UnixStream::connect(path).map_err(|e| connect_error(path, &e))?;
    let _ = socket.set_read_timeout(Some(timeout));
    let _ = socket.set_write_timeout(Some(timeout));
    let request = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": "edge://status",
        "_meta": {"io.modelcontextprotocol/protocolVersion": super::MODERN_VERSION, "io.modelcontextprotocol/clientCapabilities": {},
                  "io.modelcontextprotocol/clientInfo": {"name": "xyte-edge status", "version": env!("CARGO_PKG_VERSION")}}}});
    let mut line = request.to_string();
    line.push('\n');
    let mut answer = String::new();
    // The answer is one line of a few hundred bytes; the bound keeps a confused peer from filling memory.
    let read = socket
        .write_all(line.as_bytes())
        .and_then(|_| io::BufReader::new(&socket).take(1024 * 1024).read_line(&mut answer));
    if let Err(e) = read {
        return Err((exit::UNAVAILABLE, format!("the daemon did not answer on {}: {e}", path.display())));
    }
    let parsed: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
    let Some(text) = parsed.pointer("/result/contents/0/text").and_then(|t| t.as_str()) else {
        return Err((exit::SOFTWARE, format!("unexpected answer: {}", answer.trim())));
    };
    Ok(serde_json::from_str(text).unwrap_or_default())
}

/// `xyte-edge status`: asks the running daemon for `edge://status` over the socket and prints a summary.
pub fn status(path: &Path) -> ExitCode {
    let s = match read_status(path, std::time::Duration::from_secs(10)) {
        Ok(s) => s,
        Err((code, message)) => {
            eprintln!("xyte-edge status: {message}");
            return ExitCode::from(code);
        }
    };
    let reachable = match s["xyte"]["reachable"].as_bool() {
        Some(true) => "reachable".to_string(),
        Some(false) => format!("UNREACHABLE ({})", s["xyte"]["last_error"].as_str().unwrap_or("unknown error")),
        None => "not yet contacted".to_string(),
    };
    println!(
        "xyte-edge {} ({}) — up {}s",
        s["version"].as_str().unwrap_or("?"),
        s["env"].as_str().unwrap_or("?"),
        s["uptime_s"]
    );
    println!("  Xyte:       {} at {}", reachable, s["xyte"]["base_url"].as_str().unwrap_or("?"));
    println!(
        "  cache:      {} devices, last sync {}",
        s["cache"]["devices"],
        match s["cache"]["age_s"].as_i64() {
            Some(a) => format!("{a}s ago"),
            None => "never".into(),
        }
    );
    println!("  outbox:     {} commands waiting", s["outbox_depth"]);
    println!("  event log:  {} events (latest id {})", s["event_log"]["rows"], s["event_log"]["latest_id"]);
    println!("  clients:    {} on the MCP socket", s["clients"]["mcp_socket"]);
    let u = &s["uplink"];
    if !u.is_null() {
        let state = if u["connected"] == true {
            format!("connected (session {}), {} events to deliver", u["session"], u["backlog"])
        } else {
            format!("DISCONNECTED ({})", u["last_error"].as_str().unwrap_or("connecting"))
        };
        println!("  MQTT:       {state} — {}", u["broker"].as_str().unwrap_or("?"));
    }
    if s["read_only"] == true {
        println!("  mode:       read-only (XYTE_READ_ONLY=true)");
    }
    ExitCode::SUCCESS
}
