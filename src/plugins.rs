//! Plugins: executables that receive every event and every `warn`-or-worse log record as JSON lines on
//! their stdin. A plugin can never block or crash the daemon:
//! - it reads from its own bounded queue (a broadcast receiver of [`QUEUE`] lines): when it falls behind, the
//!   oldest lines are dropped for it alone and counted (`xyte_edge_plugin_dropped_total`); one that reads nothing at
//!   all for the stall bound ([`crate::stall::STALL`]) is restarted;
//! - what it writes to stdout and stderr is drained at a bounded rate, so a chatty plugin costs little CPU;
//! - one that exits, fails the handshake or cannot be started is restarted with exponential backoff.
//!
//! Protocol, version 1: the daemon writes `{"type":"hello","plugin_api_version":"1"}`; the plugin answers
//! `{"plugin_api_version":"1"}` on stdout within 5 s. Then each line is either `{"type":"event", …the event…}` (the
//! same fields as the SSE `data:`) or `{"type":"log","ts","level","target","message","fields"}`. stdout after the
//! handshake is ignored; stderr lines are logged under the plugin's name. The environment is cleared (only `PATH`
//! and `XYTE_PLUGIN_API_VERSION` are set) so the daemon's credentials never reach a plugin.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, Command};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::field::{Field, Visit};
use tracing::{Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

use crate::events::EventBus;
use crate::stall::StallGuard;
use crate::store::events::Event;

pub const API_VERSION: &str = "1";
const HANDSHAKE: Duration = Duration::from_secs(5);
/// Lines a plugin may fall behind before it loses the oldest (per plugin, for logs; events share the bus's buffer
/// of the same size).
const QUEUE: usize = 1024;
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A run at least this long counts as healthy: the next failure starts the backoff again from the minimum.
const HEALTHY: Duration = Duration::from_secs(60);
/// How long a plugin has to exit after its stdin closes at shutdown, before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// Bytes per second read from a plugin's stdout or stderr; beyond that the plugin's own writes block, not us.
const DRAIN_BYTES_PER_SEC: usize = 64 * 1024;
/// stderr lines logged per plugin per minute, and the longest part of a line that is logged.
const STDERR_LINES_PER_MIN: u32 = 20;
const STDERR_LINE_MAX: usize = 512;

/// Log records for plugins, already encoded. Fed by [`LogLayer`]; nobody subscribed means nothing is encoded.
static LOGS: LazyLock<broadcast::Sender<Arc<str>>> = LazyLock::new(|| broadcast::channel(QUEUE).0);

/// Starts one supervisor per configured plugin under the daemon's task tracker.
pub fn start(paths: &[PathBuf], bus: &EventBus, tasks: &TaskTracker, shutdown: &CancellationToken) {
    for path in paths {
        let plugin = Plugin { name: plugin_name(path), path: path.clone() };
        tasks.spawn(supervise(plugin, bus.clone(), shutdown.clone()));
    }
}

/// The file name, as a metrics label: leaked once per configured plugin, so bounded by the configuration.
fn plugin_name(path: &Path) -> &'static str {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string());
    Box::leak(name.into_boxed_str())
}

struct Plugin {
    name: &'static str,
    path: PathBuf,
}

async fn supervise(plugin: Plugin, bus: EventBus, shutdown: CancellationToken) {
    let name = plugin.name;
    let mut backoff = BACKOFF_MIN;
    let mut restarts = 0u64;
    loop {
        let started = Instant::now();
        let ended = run_once(&plugin, &bus, &shutdown).await;
        crate::metrics::plugin_up(name, false);
        if shutdown.is_cancelled() {
            return;
        }
        if started.elapsed() >= HEALTHY {
            backoff = BACKOFF_MIN;
        }
        restarts += 1;
        crate::metrics::plugin_restart(name);
        tracing::warn!(plugin = name, restarts, "plugin {ended}; restarting in {}s", backoff.as_secs());
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Runs the plugin once; returns why it ended (for the log line), or at shutdown after stopping it.
async fn run_once(plugin: &Plugin, bus: &EventBus, shutdown: &CancellationToken) -> String {
    let name = plugin.name;
    let mut child = match Command::new(&plugin.path)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()))
        .env("XYTE_PLUGIN_API_VERSION", API_VERSION)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return format!("could not be started ({}: {e})", plugin.path.display()),
    };
    let (Some(stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return "has no pipes".into();
    };
    // A plugin that reads nothing for the stall bound is restarted: a slow one loses lines (its queue is bounded),
    // one that is stuck altogether is better started afresh than fed forever.
    let mut stdin = StallGuard::new(stdin);
    // Subscribed before the handshake, so nothing published meanwhile is missed.
    let mut events = bus.subscribe();
    let mut logs = LOGS.subscribe();
    let mut stdout = BufReader::new(stdout);
    tokio::spawn(drain_stderr(name, stderr));

    let hello = format!("{}\n", json!({"type": "hello", "plugin_api_version": API_VERSION}));
    let answer = tokio::select! {
        _ = shutdown.cancelled() => return "stopped".into(),
        a = tokio::time::timeout(HANDSHAKE, handshake(&mut stdin, &mut stdout, &hello)) => a,
    };
    let rejected = match answer {
        Err(_) => format!("no answer to the hello within {}s", HANDSHAKE.as_secs()),
        Ok(Err(reason)) => reason,
        Ok(Ok(())) => String::new(),
    };
    if !rejected.is_empty() {
        // A plugin that died at start is best described by how it exited, not by the broken pipe that followed.
        return match tokio::time::timeout(Duration::from_millis(200), child.wait()).await {
            Ok(Ok(status)) => format!("exited ({status}) before the handshake"),
            _ => format!("was rejected: {rejected}"),
        };
    }
    tracing::info!(plugin = name, pid = child.id(), "plugin ready (plugin API {API_VERSION})");
    crate::metrics::plugin_up(name, true);
    tokio::spawn(drain(stdout, |_| {}));

    tokio::select! {
        _ = shutdown.cancelled() => {
            drop(stdin);
            if tokio::time::timeout(EXIT_GRACE, child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
            "stopped".into()
        }
        status = child.wait() => match status {
            Ok(s) => format!("exited ({s})"),
            Err(e) => format!("could not be waited for ({e})"),
        },
        broken = feed(name, &mut stdin, &mut events, &mut logs) => broken,
    }
}

/// Writes the hello and reads one answer line (at most 4 KiB).
async fn handshake<R: AsyncRead + Unpin>(
    stdin: &mut StallGuard<ChildStdin>,
    stdout: &mut BufReader<R>,
    hello: &str,
) -> Result<(), String> {
    stdin.write_all(hello.as_bytes()).await.map_err(|e| format!("the hello could not be written ({e})"))?;
    let mut line = Vec::new();
    let n = stdout.take(4096).read_until(b'\n', &mut line).await.map_err(|e| format!("stdout: {e}"))?;
    if n == 0 {
        return Err("stdout closed before it answered the hello".into());
    }
    match serde_json::from_slice::<Value>(&line) {
        Ok(v) if v["plugin_api_version"] == API_VERSION => Ok(()),
        Ok(v) => Err(format!(
            "it speaks plugin API {} but this daemon speaks {API_VERSION}",
            v.get("plugin_api_version").map(Value::to_string).unwrap_or_else(|| "(none)".into())
        )),
        Err(_) => {
            let start: String = line
                .iter()
                .take(60)
                .map(|&b| if b.is_ascii_graphic() || b == b' ' { b as char } else { '?' })
                .collect();
            Err(format!(
                "its answer to the hello is not {{\"plugin_api_version\":\"{API_VERSION}\"}} ({} bytes, starting \"{start}\")",
                line.len()
            ))
        }
    }
}

/// Forwards events and log records until the pipe breaks. Lines the plugin was too slow for are counted as dropped.
async fn feed(
    name: &'static str,
    stdin: &mut StallGuard<ChildStdin>,
    events: &mut broadcast::Receiver<Event>,
    logs: &mut broadcast::Receiver<Arc<str>>,
) -> String {
    let mut last_report = Instant::now() - Duration::from_secs(3600);
    loop {
        let received = tokio::select! {
            e = events.recv() => e.map(|e| event_line(&e)),
            l = logs.recv() => l.map(|l| l.to_string()),
        };
        let line = match received {
            Ok(line) => line,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                crate::metrics::plugin_dropped(name, n);
                // Said at most once a minute: a stuck plugin must not flood the journal (its count is a metric).
                if last_report.elapsed() >= Duration::from_secs(60) {
                    last_report = Instant::now();
                    tracing::warn!(plugin = name, dropped = n, "plugin is not keeping up; lines dropped for it");
                }
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return "was stopped (the event bus closed)".into(),
        };
        if let Err(e) = stdin.write_all(line.as_bytes()).await {
            if crate::stall::is_stall(&e) {
                crate::metrics::stalled_client("plugin");
            }
            return format!("stopped reading its input ({e})");
        }
    }
}

fn event_line(e: &Event) -> String {
    let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("type".into(), "event".into());
    }
    format!("{v}\n")
}

/// Reads and discards at a bounded rate, handing each chunk to `seen`.
async fn drain<R: AsyncRead + Unpin>(mut from: R, mut seen: impl FnMut(&[u8])) {
    let mut buf = vec![0u8; 8192];
    let mut window = Instant::now();
    let mut budget = DRAIN_BYTES_PER_SEC;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        seen(&buf[..n]);
        budget = budget.saturating_sub(n);
        if budget == 0 {
            tokio::time::sleep_until((window + Duration::from_secs(1)).into()).await;
            window = Instant::now();
            budget = DRAIN_BYTES_PER_SEC;
        }
    }
}

/// Logs the plugin's stderr lines (truncated, at most [`STDERR_LINES_PER_MIN`] a minute; the rest are counted).
async fn drain_stderr<R: AsyncRead + Unpin>(name: &'static str, stderr: R) {
    let mut line = Vec::new();
    let mut minute = Instant::now();
    let (mut logged, mut suppressed) = (0u32, 0u64);
    drain(stderr, |chunk| {
        for &b in chunk {
            if b != b'\n' {
                if line.len() < STDERR_LINE_MAX {
                    line.push(b);
                }
                continue;
            }
            if minute.elapsed() >= Duration::from_secs(60) {
                if suppressed > 0 {
                    tracing::info!(plugin = name, suppressed, "plugin stderr lines not logged in the last minute");
                }
                (minute, logged, suppressed) = (Instant::now(), 0, 0);
            }
            if logged < STDERR_LINES_PER_MIN {
                logged += 1;
                tracing::info!(plugin = name, "plugin: {}", String::from_utf8_lossy(&line));
            } else {
                suppressed += 1;
            }
            line.clear();
        }
    })
    .await;
}

/// The tracing layer that hands `warn`-or-worse records to plugins. Records from this module are left out, so a
/// plugin that is not keeping up is never sent news of itself in a loop.
pub struct LogLayer;

impl<S: Subscriber> Layer<S> for LogLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() > Level::WARN || meta.target().starts_with(module_path!()) || LOGS.receiver_count() == 0 {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let ts = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).ok();
        let record = json!({
            "type": "log", "ts": ts, "level": meta.level().as_str(), "target": meta.target(),
            "message": fields.message, "fields": fields.rest,
        });
        let _ = LOGS.send(format!("{record}\n").into());
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: serde_json::Map<String, Value>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.rest.insert(field.name().into(), text.into());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.into();
        } else {
            self.rest.insert(field.name().into(), value.into());
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.rest.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.rest.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.rest.insert(field.name().into(), value.into());
    }
}
