//! Logging setup: journald under systemd, else text or JSON on stderr (through [`crate::log_writer`]); `XYTE_LOG_LEVEL` filters; an optional
//! syslog sink (`XYTE_SYSLOG`) fed through a bounded queue so a slow or dead syslog server never blocks the daemon.

use std::fmt::Write as _;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tracing::{Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{Config, LogFormat, SyslogTarget};

type BoxedLayer<S> = Box<dyn Layer<S> + Send + Sync>;

/// Installs the global subscriber. Returns notes worth logging once logging works (e.g. journald unavailable).
pub fn init(config: &Config) -> Vec<String> {
    let mut notes = Vec::new();
    let filter: Targets = config.log_filter.parse().unwrap_or_else(|_| Targets::new().with_default(Level::INFO));
    let format = match config.log_format {
        LogFormat::Auto if stderr_is_journal() => LogFormat::Journald,
        LogFormat::Auto => LogFormat::Text,
        other => other,
    };
    let main: BoxedLayer<_> = match format {
        LogFormat::Journald => match tracing_journald::layer() {
            Ok(layer) => Box::new(layer.with_syslog_identifier("xyte-edge".into())),
            Err(e) => {
                notes.push(format!("journald is not reachable ({e}); logging as text on stderr"));
                text_layer()
            }
        },
        LogFormat::Json => Box::new(tracing_subscriber::fmt::layer().json().with_writer(crate::log_writer::stderr())),
        _ => text_layer(),
    };
    let syslog = config.syslog.clone().map(|target| Box::new(SyslogLayer::spawn(target)) as BoxedLayer<_>);
    let plugins = (!config.plugins.is_empty()).then_some(crate::plugins::LogLayer);
    // A second init (tests running several daemons in one process) keeps the first subscriber; that is fine.
    let _ = tracing_subscriber::registry().with(filter).with(main).with(syslog).with(plugins).try_init();
    notes
}

fn text_layer<S>() -> BoxedLayer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    Box::new(
        tracing_subscriber::fmt::layer().with_writer(crate::log_writer::stderr()).with_ansi(false).with_target(false),
    )
}

/// systemd sets `JOURNAL_STREAM=dev:inode` when stderr goes to the journal; compare it with stderr itself so a
/// child process that inherited the variable but writes elsewhere does not log to journald by mistake.
fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else { return false };
    let Some((dev, ino)) = value.split_once(':') else { return false };
    match nix::sys::stat::fstat(std::io::stderr()) {
        // `ino_t` is 32 bits on armhf, 64 elsewhere.
        #[allow(clippy::unnecessary_cast)]
        Ok(st) => dev.parse::<u64>().ok() == Some(st.st_dev) && ino.parse::<u64>().ok() == Some(st.st_ino as u64),
        Err(_) => false,
    }
}

/// Formats each event as one line and hands it to a sender thread; the queue is bounded and drops when full.
struct SyslogLayer {
    queue: mpsc::SyncSender<(Level, String)>,
}

impl SyslogLayer {
    fn spawn(target: SyslogTarget) -> Self {
        let (queue, rx) = mpsc::sync_channel::<(Level, String)>(1024);
        let _ = std::thread::Builder::new().name("syslog".into()).spawn(move || syslog_sender(target, rx));
        SyslogLayer { queue }
    }
}

fn syslog_sender(target: SyslogTarget, rx: mpsc::Receiver<(Level, String)>) {
    let formatter = syslog::Formatter3164 {
        facility: syslog::Facility::LOG_DAEMON,
        hostname: nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()),
        process: "xyte-edge".into(),
        pid: std::process::id(),
    };
    let connect = || match &target {
        SyslogTarget::Unix => syslog::unix(formatter.clone()),
        SyslogTarget::Udp(server) => syslog::udp(formatter.clone(), "0.0.0.0:0", server.as_str()),
        SyslogTarget::Tcp(server) => syslog::tcp(formatter.clone(), server.as_str()),
    };
    let mut logger = None;
    let mut next_attempt = Instant::now();
    for (level, line) in rx {
        if logger.is_none() && Instant::now() >= next_attempt {
            // Reconnect at most every 5 s; lines that arrive meanwhile are dropped rather than queued forever.
            logger = connect().ok();
            next_attempt = Instant::now() + Duration::from_secs(5);
        }
        let Some(l) = logger.as_mut() else { continue };
        let sent = match level {
            Level::ERROR => l.err(&line),
            Level::WARN => l.warning(&line),
            Level::INFO => l.info(&line),
            _ => l.debug(&line),
        };
        if sent.is_err() {
            logger = None;
        }
    }
}

impl<S: Subscriber> Layer<S> for SyslogLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut line = LineVisitor::default();
        event.record(&mut line);
        let _ = self.queue.try_send((*event.metadata().level(), line.finish(event.metadata().target())));
    }
}

/// Renders `message key=value …` from an event's fields.
#[derive(Default)]
pub struct LineVisitor {
    message: String,
    fields: String,
}

impl LineVisitor {
    pub fn finish(self, target: &str) -> String {
        format!("{target}: {}{}", self.message, self.fields)
    }
}

impl tracing::field::Visit for LineVisitor {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_udp_sink_receives_warnings() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let layer = SyslogLayer::spawn(SyslogTarget::Udp(server.local_addr().unwrap().to_string()));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(device = "d1", "store is slow");
        });
        let mut buf = [0u8; 2048];
        let n = server.recv(&mut buf).expect("a syslog datagram within 5 s");
        let text = String::from_utf8_lossy(&buf[..n]);
        // <28> = facility daemon (3) * 8 + severity warning (4).
        assert!(text.starts_with("<28>"), "{text}");
        assert!(text.contains("store is slow") && text.contains("device=\"d1\""), "{text}");
    }
}
