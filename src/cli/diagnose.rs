//! `xyte-edge diagnose [--config PATH] [--to FILE]`: a support bundle, one plain-text file an operator attaches to a
//! ticket. It holds what a first look at a gateway needs — version, configuration, the daemon's status, readiness,
//! metrics, database statistics, recent warnings from the journal, the unit's state — in sections with headings.
//!
//! The bundle is most wanted when something is wrong, so every section is gathered on its own and says why when it
//! could not be (daemon not running, no journal, permission denied); the file is written whatever the gateway's
//! state, and every call to the daemon, request and external command is bounded in time and size, so a wedged
//! daemon cannot wedge the command too. Nothing secret goes out: the configuration is shown masked as `check-config`
//! shows it, and the whole text is then scrubbed of every secret value the configuration and the alert rules hold
//! and of anything shaped like a LAN token, in case one reached a log line.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use time::OffsetDateTime;

use crate::config::alerts::AlertRules;
use crate::config::{Config, ConfigError, LoadOptions};
use crate::exit;
use crate::store::{self, tokens};

/// The longest one call to the daemon, one HTTP request or one external command may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest the database statistics may take together (`quick_check` reads every page of a large file).
const DB_TIMEOUT: Duration = Duration::from_secs(10);
/// The most bytes kept of one HTTP body or one command's output; beyond, the section says it was cut.
const MAX_OUTPUT: usize = 512 * 1024;
/// The journal's warnings and errors for the unit over the last day, newest 300 lines.
const JOURNALCTL: &[&str] =
    &["-u", "xyte-edge", "-p", "warning", "--since", "-24h", "--no-pager", "-o", "short-iso", "-n", "300"];
const SYSTEMCTL: &[&str] =
    &["show", "xyte-edge", "--no-pager", "-p", "ActiveState,SubState,MainPID,NRestarts,ExecMainStartTimestamp,Result"];

pub fn run(config_path: Option<PathBuf>, to: Option<PathBuf>) -> ExitCode {
    let opts = LoadOptions { path: config_path, demo: false };
    // `load_local`: the Xyte credential may live in a systemd credential only the service sees, and a bundle about a
    // gateway with a broken configuration is the one most needed, so neither stops the command.
    let (config, load_error) = match Config::load_local(&opts) {
        Ok(c) => (c, None),
        Err(e) => (Config::defaults(), Some(e)),
    };
    let alerts = AlertRules::load(&config.alerts_file).ok();
    let now = OffsetDateTime::now_utc();
    let host = crate::config::host_name();
    let sections = [
        ("Version and host", about(&host, now)),
        ("Configuration", configuration(&config, load_error.as_ref(), &opts)),
        ("Room presets and alert rules files", rules_files(&config)),
        ("Daemon status (edge://status on the MCP socket)", daemon_status(&config.mcp_socket)),
        ("Readiness (GET /readyz on the loopback listener)", loopback_get(&config, "/readyz")),
        ("Metrics (GET /v1/metrics on the loopback listener)", loopback_get(&config, "/v1/metrics")),
        ("Database", database(&config.state_dir)),
        ("Journal: warnings and errors of the last 24 hours", external("journalctl", JOURNALCTL)),
        ("systemd unit", external("systemctl", SYSTEMCTL)),
    ];
    let mut text = format!(
        "xyte-edge support bundle, written {} on {host} by `xyte-edge diagnose`.\n\
         Secrets are replaced by ***, LAN tokens by xe_***.\n",
        rfc3339(now)
    );
    for (title, lines) in sections {
        text.push_str(&format!("\n{title}\n{}\n", "=".repeat(title.chars().count())));
        for line in lines {
            text.push_str(&line);
            text.push('\n');
        }
    }
    let text = scrub(&text, &config.secret_values(alerts.as_ref()));
    write(to.unwrap_or_else(|| default_file(&host, now)), text.as_bytes())
}

// ---------------------------------------------------------------------------------------------------------------
// Sections: each returns its lines, and says in them what it could not gather and why.
// ---------------------------------------------------------------------------------------------------------------

fn about(host: &str, now: OffsetDateTime) -> Vec<String> {
    let build = if cfg!(debug_assertions) { "debug" } else { "release" };
    let uid = nix::unistd::geteuid();
    let user = nix::unistd::User::from_uid(uid).ok().flatten().map_or_else(|| "?".into(), |u| u.name);
    let uptime = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        .map_or_else(|| "unknown (/proc/uptime not readable)".into(), |s| words(s as u64));
    vec![
        super::version_text(),
        format!("build:        {build}, target {}-{}", std::env::consts::ARCH, std::env::consts::OS),
        format!("host:         {host}"),
        format!("time:         {}", rfc3339(now)),
        format!("host uptime:  {uptime}"),
        format!("run as:       uid {uid} ({user})"),
    ]
}

/// What `check-config` prints, plus its warnings and problems. When the configuration does not load, its problems
/// (values masked) and the built-in defaults the other sections fall back on.
fn configuration(config: &Config, load_error: Option<&ConfigError>, opts: &LoadOptions) -> Vec<String> {
    let file = opts.path.clone().unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_CONFIG_PATH));
    let mut lines = vec![format!("configuration file: {}", file.display())];
    if let Some(e) = load_error {
        lines.push(format!("the configuration does not load: {e}").trim_end().to_string());
        lines.push("the sections below use the built-in defaults (state directory, socket, listener)".into());
        return lines;
    }
    lines.push(
        "as this command sees it (the file and this shell's environment; a credential given to the service alone, \
         e.g. as a systemd credential, shows as none):"
            .into(),
    );
    lines.extend(super::effective_lines(config));
    lines.extend(config.warnings.iter().map(|w| format!("warning: {w}")));
    lines.push(format!("Xyte credential: {}", config.credential_kind()));
    lines
}

/// Each file's path, size and times, what it holds as `check-config` lists it (names and counts, never the
/// contents: channels hold secrets) and every problem its loader found.
fn rules_files(config: &Config) -> Vec<String> {
    type Report = fn(&Path) -> (Vec<String>, Vec<String>);
    let files: [(&Path, Report); 2] =
        [(&config.presets_file, super::presets_report), (&config.alerts_file, super::alerts_report)];
    let mut lines = vec![];
    for (path, report) in files {
        lines.push(format!("{}: {}", path.display(), file_facts(path)));
        let (summary, problems) = report(path);
        lines.extend(summary.iter().map(|l| format!("  {}", l.trim_start_matches("# "))));
        lines.extend(problems.iter().map(|p| format!("  problem: {p}")));
    }
    lines
}

fn daemon_status(socket: &Path) -> Vec<String> {
    let mut lines = vec![format!("socket: {}", socket.display())];
    match crate::mcp::bridge::read_status(socket, CALL_TIMEOUT) {
        Ok(status) => lines.extend(serde_json::to_string_pretty(&status).unwrap_or_default().lines().map(String::from)),
        Err((_, why)) => lines.push(format!("not available: {why}")),
    }
    lines
}

/// A GET on the plain loopback listener, where `/readyz` and `/v1/metrics` need no token: the status and the body.
fn loopback_get(config: &Config, path: &str) -> Vec<String> {
    let Some(&listen) = config.http_local_listen.first() else {
        return vec!["not available: no loopback listener is configured (XYTE_HTTP_LOCAL_LISTEN is empty)".into()];
    };
    if listen.port() == 0 {
        return vec![format!(
            "not available: XYTE_HTTP_LOCAL_LISTEN is {listen}, a port the daemon picks at start, unknown here"
        )];
    }
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { IpAddr::V6(Ipv6Addr::LOCALHOST) });
    }
    let url = format!("http://{addr}{path}");
    // No proxy: a proxy from the environment cannot reach this machine's loopback.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .timeout_global(Some(CALL_TIMEOUT))
        .build()
        .into();
    let mut response = match agent.get(&url).call() {
        Ok(r) => r,
        Err(ureq::Error::Io(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            return vec![format!("not available: nothing answers at {url}: the daemon is not running ({e})")];
        }
        Err(ureq::Error::Timeout(_)) => {
            return vec![format!("not available: {url} did not answer within {}s", CALL_TIMEOUT.as_secs())];
        }
        Err(e) => return vec![format!("not available: GET {url}: {e}")],
    };
    let status = response.status();
    let mut lines = vec![format!("GET {url} -> {} {}", status.as_u16(), status.canonical_reason().unwrap_or(""))];
    let body = bounded(response.body_mut().as_reader());
    // `/readyz` answers one line of JSON: indented, its reasons read one a line.
    match serde_json::from_str::<serde_json::Value>(&body) {
        Ok(json) => lines.extend(serde_json::to_string_pretty(&json).unwrap_or_default().lines().map(String::from)),
        Err(_) => lines.extend(body.lines().map(String::from)),
    }
    lines
}

/// Statistics of the daemon's database, read directly (read-only), so they are there when the daemon is not.
fn database(state_dir: &Path) -> Vec<String> {
    let db = state_dir.join(store::DB_FILE);
    let mut lines = vec![format!("state directory: {} ({})", state_dir.display(), free_space(state_dir))];
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", db.display()));
        lines.push(format!("{}: {}", file.display(), file_facts(&file)));
    }
    if !db.exists() {
        lines.push("no statistics: there is no database (the daemon has not run with this state directory)".into());
        return lines;
    }
    let conn =
        match Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .and_then(|c| c.busy_timeout(CALL_TIMEOUT).map(|()| c))
        {
            Ok(c) => c,
            Err(e) => {
                lines.push(format!("no statistics: cannot open {} read-only: {e}{}", db.display(), as_root_hint(&e)));
                return lines;
            }
        };
    // Interrupts whatever statement still runs at the deadline; the channel's end (this function returning) lets the
    // thread go earlier.
    let interrupt = conn.get_interrupt_handle();
    let (done, deadline) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = deadline.recv_timeout(DB_TIMEOUT) {
            interrupt.interrupt();
        }
    });
    lines.extend(db_statistics(&conn));
    drop(done);
    lines
}

fn db_statistics(conn: &Connection) -> Vec<String> {
    let or_why = |what: &str, r: Result<String, store::StoreError>| match r {
        Ok(s) => format!("{what}: {s}"),
        Err(store::StoreError::Sql(e)) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::OperationInterrupted) => {
            format!("{what}: not read, the statistics took longer than {}s", DB_TIMEOUT.as_secs())
        }
        Err(e) => format!("{what}: not read: {e}"),
    };
    let pragma = |name: &str| conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0));
    let layout = (|| {
        let (version, pages, size, free) =
            (pragma("user_version")?, pragma("page_count")?, pragma("page_size")?, pragma("freelist_count")?);
        let total = bytes(pages * size);
        Ok(format!("schema version {version}, {pages} pages of {size} bytes ({total}), {free} of them free"))
    })();
    let now = store::now_ms();
    let tokens = tokens::list(conn).map(|all| {
        let active = all.iter().filter(|t| t.is_active(now)).count();
        let revoked = all.iter().filter(|t| t.revoked_at.is_some()).count();
        let expired = all.len() - active - revoked;
        let names: Vec<String> = all.iter().map(|t| format!("{} ({}, {})", t.name, t.role, t.state(now))).collect();
        match all.len() {
            0 => "0".to_string(),
            n => format!("{n} ({active} active, {revoked} revoked, {expired} expired): {}", names.join(", ")),
        }
    });
    let quick_check = (|| {
        let mut stmt = conn.prepare("PRAGMA quick_check(20)")?;
        let rows: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        Ok(rows.join("; "))
    })();
    vec![
        or_why("layout", layout),
        or_why("cache rows by resource", grouped(conn, "cache", "resource")),
        or_why("events", total(conn, "events")),
        or_why("tasks by state", grouped(conn, "tasks", "state")),
        or_why("tokens", tokens),
        or_why("audit records", total(conn, "audit")),
        or_why("alerts by state", grouped(conn, "alerts", "state")),
        or_why("alert deliveries by state", grouped(conn, "alert_deliveries", "state")),
        or_why("schedules", total(conn, "schedules")),
        or_why("schedule runs", total(conn, "schedule_runs")),
        or_why("quick_check", quick_check),
    ]
}

/// `N (a 3, b 2)`: the rows of `table` counted by `column`. Names are the schema's own, never input.
fn grouped(conn: &Connection, table: &str, column: &str) -> Result<String, store::StoreError> {
    let mut stmt = conn.prepare(&format!("SELECT {column}, COUNT(*) FROM {table} GROUP BY 1 ORDER BY 1"))?;
    let counts: Vec<(String, i64)> = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
    let sum: i64 = counts.iter().map(|(_, n)| n).sum();
    let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
    Ok(if parts.is_empty() { "0".into() } else { format!("{sum} ({})", parts.join(", ")) })
}

fn total(conn: &Connection, table: &str) -> Result<String, store::StoreError> {
    Ok(conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get::<_, i64>(0))?.to_string())
}

/// An external command's output (stdout, then stderr marked), or why there is none. `journalctl` and `systemctl`
/// are missing in containers and tests, and refuse to work without systemd: the bundle says so and goes on.
fn external(program: &str, args: &[&str]) -> Vec<String> {
    let mut lines = vec![format!("$ {program} {}", args.join(" "))];
    match run_bounded(program, args) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            lines.push(format!("not available: {program} is not installed here (not found in PATH)"))
        }
        Err(e) => lines.push(format!("not available: cannot run {program}: {e}")),
        Ok(out) => {
            match out.status {
                None => lines.push(format!(
                    "not available: {program} did not finish within {}s and was stopped; what it wrote:",
                    CALL_TIMEOUT.as_secs()
                )),
                Some(s) if !s.success() => lines.push(format!("not available: {program} failed ({s}); what it wrote:")),
                Some(_) => {}
            }
            lines.extend(out.stdout.lines().map(String::from));
            lines.extend(out.stderr.lines().map(|l| format!("(stderr) {l}")));
        }
    }
    lines
}

// ---------------------------------------------------------------------------------------------------------------
// Bounds: commands and bodies in time and size.
// ---------------------------------------------------------------------------------------------------------------

struct Output {
    /// `None` when the command was stopped at the deadline.
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

enum Part {
    Stdout(String),
    Stderr(String),
    Exit(io::Result<ExitStatus>),
}

/// Runs `program` with no input, keeping at most [`MAX_OUTPUT`] bytes of each stream; stops it with SIGKILL at
/// [`CALL_TIMEOUT`]. The pipes are read and the child waited for on threads, so the deadline holds whatever it does.
fn run_bounded(program: &str, args: &[&str]) -> io::Result<Output> {
    let mut child =
        Command::new(program).args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let (tx, parts) = mpsc::channel();
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let send = |tx: &mpsc::Sender<Part>, part| {
        let _ = tx.send(part);
    };
    let out = tx.clone();
    std::thread::spawn(move || send(&out, Part::Stdout(stdout.map(bounded).unwrap_or_default())));
    let err = tx.clone();
    std::thread::spawn(move || send(&err, Part::Stderr(stderr.map(bounded).unwrap_or_default())));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    std::thread::spawn(move || send(&tx, Part::Exit(child.wait())));

    let mut output = Output { status: None, stdout: String::new(), stderr: String::new() };
    let mut deadline = Instant::now() + CALL_TIMEOUT;
    let mut killed = false;
    for _ in 0..3 {
        match parts.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Part::Stdout(s)) => output.stdout = s,
            Ok(Part::Stderr(s)) => output.stderr = s,
            Ok(Part::Exit(status)) => output.status = if killed { None } else { Some(status?) },
            Err(_) if killed => break,
            Err(_) => {
                // Still running: stop it, then give the threads a moment to hand over what it wrote.
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                killed = true;
                deadline = Instant::now() + Duration::from_secs(1);
            }
        }
    }
    Ok(output)
}

/// At most [`MAX_OUTPUT`] bytes of `reader` as text, with a note when there was more.
fn bounded(reader: impl Read) -> String {
    let mut buf = Vec::new();
    let read = reader.take(MAX_OUTPUT as u64 + 1).read_to_end(&mut buf);
    let cut = buf.len() > MAX_OUTPUT;
    buf.truncate(MAX_OUTPUT);
    let mut text = String::from_utf8_lossy(&buf).into_owned();
    if cut {
        text.push_str(&format!("\n[cut here: more than {} KiB]", MAX_OUTPUT / 1024));
    }
    if let Err(e) = read {
        text.push_str(&format!("\n[reading stopped: {e}]"));
    }
    text
}

// ---------------------------------------------------------------------------------------------------------------
// Nothing secret.
// ---------------------------------------------------------------------------------------------------------------

/// `text` with every value of `secrets` replaced by `***` and every LAN token (`xe_` and the base64url alphabet,
/// store/tokens.rs) by `xe_***`. A token starts after anything but a letter or digit (`Bearer xe_…`, `token_xe_…`),
/// so a word that merely contains `xe_` (`fixe_me`) is left alone.
fn scrub(text: &str, secrets: &[String]) -> String {
    let text = secrets.iter().fold(text.to_string(), |t, s| t.replace(s.as_str(), "***"));
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for (i, _) in text.match_indices(tokens::PREFIX) {
        let body = bytes[i + tokens::PREFIX.len()..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'-' || **b == b'_')
            .count();
        let starts_word = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
        if i >= copied && starts_word && body > 0 {
            out.push_str(&text[copied..i]);
            out.push_str("xe_***");
            copied = i + tokens::PREFIX.len() + body;
        }
    }
    out.push_str(&text[copied..]);
    out
}

// ---------------------------------------------------------------------------------------------------------------
// Writing the file.
// ---------------------------------------------------------------------------------------------------------------

/// `xyte-edge-diagnose-<host>-<UTC yyyymmddThhmmssZ>.txt` in the current directory.
fn default_file(host: &str, now: OffsetDateTime) -> PathBuf {
    PathBuf::from(crate::backup::stamped_name("xyte-edge-diagnose", host, &crate::backup::stamp(now), "txt"))
}

/// Writes the bundle to `to` (`-`: stdout), 0600 since it describes the gateway in detail, and says where it went.
fn write(to: PathBuf, bundle: &[u8]) -> ExitCode {
    if to.as_os_str() == "-" {
        return match io::stdout().lock().write_all(bundle) {
            Ok(()) => ExitCode::from(exit::OK),
            Err(e) => {
                eprintln!("xyte-edge diagnose: cannot write to stdout: {e}");
                ExitCode::from(exit::IO_ERROR)
            }
        };
    }
    // O_NOFOLLOW: run as root in a shared directory, the command must not write through someone's symlink.
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&to)
        .and_then(|mut file| {
            // An existing file keeps its mode through `open`; the bundle must not stay readable by others.
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            file.write_all(bundle)?;
            file.sync_all()
        });
    let shown = std::path::absolute(&to).unwrap_or(to);
    match written {
        Ok(()) => {
            let size = bytes(bundle.len() as i64);
            println!("xyte-edge diagnose: wrote {} ({size}); attach it to the support ticket", shown.display());
            ExitCode::from(exit::OK)
        }
        Err(e) => {
            eprintln!("xyte-edge diagnose: cannot write {}: {e}", shown.display());
            let denied = matches!(e.kind(), io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem);
            ExitCode::from(if denied { exit::NO_PERMISSION } else { exit::IO_ERROR })
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Small words.
// ---------------------------------------------------------------------------------------------------------------

/// Size, mode, owner and modification time of a file, or why they are unknown.
fn file_facts(path: &Path) -> String {
    match std::fs::metadata(path) {
        Ok(m) => format!(
            "{}, mode {:04o}, owner {}:{}, modified {}",
            bytes(m.len() as i64),
            m.mode() & 0o7777,
            m.uid(),
            m.gid(),
            crate::cache::rfc3339(m.mtime() * 1000).unwrap_or_else(|| "?".into())
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => "does not exist".into(),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            format!("not readable here ({e}); run as root for every detail")
        }
        Err(e) => format!("unknown: {e}"),
    }
}

fn free_space(dir: &Path) -> String {
    match store::free_bytes(dir) {
        Ok(n) => format!("{} free", bytes(n as i64)),
        Err(e) => format!("free space unknown: {e}"),
    }
}

/// A hint for an open refused for lack of rights: the state directory is the daemon's alone (mode 0700).
fn as_root_hint(e: &rusqlite::Error) -> &'static str {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::PermissionDenied) => {
            "; the state directory belongs to the daemon's user: run as root (sudo xyte-edge diagnose)"
        }
        _ => "",
    }
}

/// `1234 bytes`, `4.8 MiB`.
fn bytes(n: i64) -> String {
    match n {
        n if n < 1024 => format!("{n} bytes"),
        n if n < 1024 * 1024 => format!("{:.1} KiB", n as f64 / 1024.0),
        n if n < 1024 * 1024 * 1024 => format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0)),
        n => format!("{:.1} GiB", n as f64 / (1024.0 * 1024.0 * 1024.0)),
    }
}

/// `3 d 4 h 12 min`, `12 min 5 s`.
fn words(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h) {
        (0, 0) => format!("{m} min {s} s"),
        (0, _) => format!("{h} h {m} min"),
        _ => format!("{d} d {h} h {m} min"),
    }
}

/// To the second, as the rest of the gateway writes times.
fn rfc3339(t: OffsetDateTime) -> String {
    crate::cache::rfc3339(t.unix_timestamp() * 1000).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_secrets_are_scrubbed_and_names_are_not() {
        let token = format!("xe_{}", "aB3-_x".repeat(7));
        let text = format!(
            "Bearer {token}\n{token}\nprincipal=token:ops\nindex_xe_foo fixe_me xyte_edge_outbox_depth 3\nkey=s3cr3t-key"
        );
        let out = scrub(&text, &["s3cr3t-key".into()]);
        assert_eq!(
            out,
            "Bearer xe_***\nxe_***\nprincipal=token:ops\nindex_xe_*** fixe_me xyte_edge_outbox_depth 3\nkey=***"
        );
    }
}
