//! `xyte-edge mcp`: a byte-transparent stdio ↔ Unix-socket bridge, so any stdio MCP client can reach the daemon
//! (`{"command": "xyte-edge", "args": ["mcp"]}`). It exits when either side closes.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;

use crate::cli::exit;

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
        let _ = copy(&mut stdin, &mut to_daemon);
        let _ = to_daemon.shutdown(std::net::Shutdown::Write);
    });
    let mut stdout = io::stdout().lock();
    let _ = copy(&mut from_daemon, &mut stdout);
    ExitCode::SUCCESS
}

/// Like `io::copy`, but flushes after every read so each message reaches the other side at once.
fn copy(from: &mut impl Read, to: &mut impl Write) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        to.flush()?;
    }
}
