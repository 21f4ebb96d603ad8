//! Prometheus metrics: one process-wide registry, small typed recording functions, and the OpenMetrics
//! text served at `GET /v1/metrics`.
//!
//! Names are part of the public contract (dashboards and alerts use them): never rename one. prometheus-client adds
//! `_total` to counters, the unit to names registered with one (`_seconds`, `_bytes`) and `_info` to info metrics,
//! so the names registered below are the exposed names without those suffixes.
//!
//! Label values are bounded by construction — never a raw path, id or caller-supplied string: routes are the
//! router's pattern labels, tools are catalogue names (anything else is `unknown`; `ops::call` maps them), Xyte
//! endpoints are the first path segment of a catalogue path (anything else is `other`; the transport maps them), event
//! kinds are [`EVENT_KINDS`] (anything else is `other`), codes are [`ErrorCode::as_str`], resources and transports
//! are constants in the code.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::error::ErrorCode;

/// The `Content-Type` of what [`render`] produces.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every event kind the daemon publishes; the only values `xyte_edge_events_total{kind}` takes besides `other`.
pub const EVENT_KINDS: &[&str] = &[
    "device.status_changed",
    "device.updated",
    "device.claimed",
    "device.deleted",
    "incident.opened",
    "incident.closed",
    "ticket.updated",
    "command.accepted",
    "command.sent",
    "command.status_changed",
    "command.expired",
    "command.failed",
    "preset.started",
    "preset.finished",
    "schedule.fired",
    "schedule.finished",
    "schedule.skipped",
    "alert.firing",
    "alert.resolved",
    "alert.delivery_failed",
    "webhook.received",
    "audit",
    "edge.xyte_unreachable",
    "edge.xyte_reachable",
    "edge.gap",
];

/// Upstream calls: a few hundred ms typically, up to the request budget.
const XYTE_BUCKETS: [f64; 11] = [0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// Local HTTP answers: mostly from SQLite (ms), sometimes waiting on Xyte.
const HTTP_BUCKETS: [f64; 12] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointCodeLabels {
    endpoint: &'static str,
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabel {
    resource: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabel {
    transport: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatusLabels {
    route: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolOutcomeLabels {
    tool: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabel {
    plugin: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    env: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn xyte_histogram() -> Histogram {
    Histogram::new(XYTE_BUCKETS)
}

fn http_histogram() -> Histogram {
    Histogram::new(HTTP_BUCKETS)
}

/// Everything recorded as it happens. Values sampled at scrape time (outbox depth, process RSS/CPU, build info) are
/// encoded by [`render`] from a registry built for that scrape.
struct Metrics {
    registry: Registry,
    xyte_latency: HistogramFamily<EndpointLabel>,
    xyte_errors: Family<EndpointCodeLabels, Counter>,
    cache_hits: Family<ResourceLabel, Counter>,
    cache_misses: Family<ResourceLabel, Counter>,
    events: Family<KindLabel, Counter>,
    sse_clients: Gauge,
    mcp_connections: Family<TransportLabel, Gauge>,
    stalled_clients: Family<TransportLabel, Counter>,
    http_requests: Family<RouteStatusLabels, Counter>,
    http_duration: HistogramFamily<RouteLabel>,
    tool_calls: Family<ToolOutcomeLabels, Counter>,
    upstream_reachable: Gauge,
    plugin_up: Family<PluginLabel, Gauge>,
    plugin_restarts: Family<PluginLabel, Counter>,
    plugin_dropped: Family<PluginLabel, Counter>,
    mqtt_connected: Gauge,
    mqtt_published: Counter,
    mqtt_acked: Counter,
    mqtt_backlog: Gauge,
    mqtt_reconnects: Counter,
    mqtt_requests: Family<OutcomeLabel, Counter>,
    backup_last: Gauge,
    backup_failures: Counter,
}

impl Metrics {
    fn new() -> Self {
        let m = Metrics {
            registry: Registry::default(),
            xyte_latency: Family::new_with_constructor(xyte_histogram),
            xyte_errors: Family::default(),
            cache_hits: Family::default(),
            cache_misses: Family::default(),
            events: Family::default(),
            sse_clients: Gauge::default(),
            mcp_connections: Family::default(),
            stalled_clients: Family::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(http_histogram),
            tool_calls: Family::default(),
            upstream_reachable: Gauge::default(),
            plugin_up: Family::default(),
            plugin_restarts: Family::default(),
            plugin_dropped: Family::default(),
            mqtt_connected: Gauge::default(),
            mqtt_published: Counter::default(),
            mqtt_acked: Counter::default(),
            mqtt_backlog: Gauge::default(),
            mqtt_reconnects: Counter::default(),
            mqtt_requests: Family::default(),
            backup_last: Gauge::default(),
            backup_failures: Counter::default(),
        };
        // Both transports are always exposed, so a dashboard shows 0 rather than "no data".
        for transport in ["unix", "http"] {
            let _ = m.mcp_connections.get_or_create_owned(&TransportLabel { transport });
        }
        for transport in STALL_TRANSPORTS {
            let _ = m.stalled_clients.get_or_create_owned(&TransportLabel { transport });
        }
        let mut r = Registry::default();
        r.register_with_unit(
            "xyte_request_latency",
            "Latency of each HTTP exchange with Xyte, by endpoint class",
            Unit::Seconds,
            m.xyte_latency.clone(),
        );
        r.register("xyte_errors", "Failed upstream calls, by endpoint class and error code", m.xyte_errors.clone());
        r.register("xyte_cache_hits", "Reads answered from the fresh local cache, by resource", m.cache_hits.clone());
        r.register("xyte_cache_misses", "Reads that had to ask Xyte, by resource", m.cache_misses.clone());
        r.register("xyte_edge_events", "Events published to the event log, by kind", m.events.clone());
        r.register("xyte_edge_sse_clients", "Open SSE streams", m.sse_clients.clone());
        r.register("xyte_edge_mcp_connections", "Open MCP connections, by transport", m.mcp_connections.clone());
        r.register(
            "xyte_edge_stalled_clients",
            "Connections closed because the peer read nothing for the stall bound, by transport",
            m.stalled_clients.clone(),
        );
        r.register("xyte_edge_http_requests", "HTTP requests answered, by route and status", m.http_requests.clone());
        r.register_with_unit(
            "xyte_edge_http_request_duration",
            "Time to answer an HTTP request (to the response head), by route",
            Unit::Seconds,
            m.http_duration.clone(),
        );
        r.register("xyte_edge_tool_calls", "Catalogue calls, by tool and outcome", m.tool_calls.clone());
        r.register(
            "xyte_edge_upstream_reachable",
            "1 when the last sync cycle reached Xyte, else 0",
            m.upstream_reachable.clone(),
        );
        r.register("xyte_edge_plugin_up", "1 while the plugin is running past its handshake", m.plugin_up.clone());
        r.register(
            "xyte_edge_plugin_restarts",
            "Plugin restarts (exits, failed handshakes)",
            m.plugin_restarts.clone(),
        );
        r.register(
            "xyte_edge_plugin_dropped",
            "Lines dropped because the plugin was not reading fast enough",
            m.plugin_dropped.clone(),
        );
        r.register(
            "xyte_edge_mqtt_connected",
            "1 while the MQTT uplink is connected to its broker",
            m.mqtt_connected.clone(),
        );
        r.register(
            "xyte_edge_mqtt_published",
            "Messages the MQTT uplink handed to its broker",
            m.mqtt_published.clone(),
        );
        r.register("xyte_edge_mqtt_acked", "Messages the broker acknowledged (PUBACK)", m.mqtt_acked.clone());
        r.register(
            "xyte_edge_mqtt_backlog",
            "Events of the log the broker has not acknowledged yet",
            m.mqtt_backlog.clone(),
        );
        r.register(
            "xyte_edge_mqtt_reconnects",
            "Connections to the broker after the first (lost or refused ones included)",
            m.mqtt_reconnects.clone(),
        );
        r.register(
            "xyte_edge_mqtt_requests",
            "Command requests received over MQTT, by outcome (ok, an error code, refused, expired, repeated)",
            m.mqtt_requests.clone(),
        );
        r.register_with_unit(
            "xyte_edge_backup_last_success",
            "When the last periodic backup was written (Unix time; 0: none since start)",
            Unit::Seconds,
            m.backup_last.clone(),
        );
        r.register(
            "xyte_edge_backup_failures",
            "Periodic backups that could not be written",
            m.backup_failures.clone(),
        );
        Metrics { registry: r, ..m }
    }
}

/// The one registry. A process-wide static rather than a handle threaded through `App`: the HTTP router, the
/// catalogue, the blocking upstream transport, the event bus, the MCP socket and the poller all record, and none of
/// them should have to carry (or be constructed with) a metrics handle just for that. Metrics are per process by
/// nature, so a global loses nothing; tests that need isolation compare before/after values.
static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Decrements its gauge when dropped: hold one for as long as a connection or stream is open.
#[must_use = "the gauge goes back down when the guard is dropped"]
#[derive(Debug)]
pub struct Guard(Gauge);

impl Guard {
    fn new(gauge: Gauge) -> Self {
        gauge.inc();
        Guard(gauge)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One answered HTTP request. `route` is the router's pattern label, never the raw path.
pub fn http_request(route: &'static str, status: u16, seconds: f64) {
    let m = &*METRICS;
    m.http_requests.get_or_create(&RouteStatusLabels { route, status }).inc();
    m.http_duration.get_or_create(&RouteLabel { route }).observe(seconds);
}

/// One catalogue call. `tool` is a catalogue name or `unknown`; `outcome` is `ok`, `dry_run` or an
/// [`ErrorCode::as_str`].
pub fn tool_call(tool: &'static str, outcome: &'static str) {
    METRICS.tool_calls.get_or_create(&ToolOutcomeLabels { tool, outcome }).inc();
}

/// One HTTP exchange with Xyte (per attempt), whatever its status. `endpoint` is a catalogue class or `other`.
pub fn xyte_request(endpoint: &'static str, seconds: f64) {
    METRICS.xyte_latency.get_or_create(&EndpointLabel { endpoint }).observe(seconds);
}

/// One failed upstream attempt (or a call refused before sending, e.g. by the rate limiter).
pub fn xyte_error(endpoint: &'static str, code: ErrorCode) {
    METRICS.xyte_errors.get_or_create(&EndpointCodeLabels { endpoint, code: code.as_str() }).inc();
}

/// A cache-first read: `hit` when answered from fresh cache, a miss when it had to ask Xyte.
pub fn cache(resource: &'static str, hit: bool) {
    let family = if hit { &METRICS.cache_hits } else { &METRICS.cache_misses };
    family.get_or_create(&ResourceLabel { resource }).inc();
}

/// One published event.
pub fn event(kind: &str) {
    let kind = EVENT_KINDS.iter().find(|k| **k == kind).copied().unwrap_or("other");
    METRICS.events.get_or_create(&KindLabel { kind }).inc();
}

/// An open MCP connection (`unix` or `http`) until the guard drops.
pub fn mcp_connection(transport: &'static str) -> Guard {
    let transport = if matches!(transport, "unix" | "http") { transport } else { "other" };
    Guard::new(METRICS.mcp_connections.get_or_create_owned(&TransportLabel { transport }))
}

/// Where a peer can stall: the MCP socket, an HTTP connection, a plugin's stdin.
const STALL_TRANSPORTS: [&str; 3] = ["unix", "http", "plugin"];

/// A connection closed because its peer read nothing for [`crate::stall::STALL`].
pub fn stalled_client(transport: &'static str) {
    let transport = if STALL_TRANSPORTS.contains(&transport) { transport } else { "other" };
    METRICS.stalled_clients.get_or_create(&TransportLabel { transport }).inc();
}

/// An open SSE stream until the guard drops.
pub fn sse_client() -> Guard {
    Guard::new(METRICS.sse_clients.clone())
}

/// The outcome of the last sync cycle.
pub fn upstream_reachable(reachable: bool) {
    METRICS.upstream_reachable.set(i64::from(reachable));
}

/// Plugin labels are configured file names, so their number is bounded by the configuration.
pub fn plugin_up(plugin: &'static str, up: bool) {
    METRICS.plugin_up.get_or_create(&PluginLabel { plugin }).set(i64::from(up));
}

pub fn plugin_restart(plugin: &'static str) {
    METRICS.plugin_restarts.get_or_create(&PluginLabel { plugin }).inc();
}

pub fn plugin_dropped(plugin: &'static str, lines: u64) {
    METRICS.plugin_dropped.get_or_create(&PluginLabel { plugin }).inc_by(lines);
}

/// The MQTT uplink: connected or not, and the events it has not delivered yet.
pub fn mqtt_state(connected: bool, backlog: u64) {
    METRICS.mqtt_connected.set(i64::from(connected));
    METRICS.mqtt_backlog.set(backlog.min(i64::MAX as u64) as i64);
}

pub fn mqtt_published() {
    METRICS.mqtt_published.inc();
}

pub fn mqtt_acked() {
    METRICS.mqtt_acked.inc();
}

pub fn mqtt_reconnect() {
    METRICS.mqtt_reconnects.inc();
}

/// One command request; `outcome` is `ok`, an [`ErrorCode::as_str`], `refused`, `expired` or `repeated`.
pub fn mqtt_request(outcome: &'static str) {
    METRICS.mqtt_requests.get_or_create(&OutcomeLabel { outcome }).inc();
}

/// A periodic backup was written (`unix_secs`: when) or failed.
pub fn backup(written_at: Option<i64>) {
    match written_at {
        Some(t) => {
            METRICS.backup_last.set(t);
        }
        None => {
            METRICS.backup_failures.inc();
        }
    }
}

/// Values sampled by the caller at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Sampled {
    /// Tasks queued or being sent (`xyte_edge_outbox_depth`).
    pub outbox_depth: i64,
    /// `XYTE_ENV`, an extra label on `xyte_edge_build_info`.
    pub env: String,
    /// Alerts firing now (`xyte_edge_alerts_firing`).
    pub alerts_firing: i64,
    /// Alert messages in the database: pending, sent, given up (`xyte_edge_alert_deliveries{state}`).
    pub alert_deliveries: (u64, u64, u64),
}

/// The OpenMetrics text exposition (serve with [`CONTENT_TYPE`]).
pub fn render(sampled: &Sampled) -> String {
    let mut scrape = Registry::default();
    scrape.register(
        "xyte_edge_outbox_depth",
        "Commands queued or being sent to Xyte",
        ConstGauge::new(sampled.outbox_depth),
    );
    scrape.register("xyte_edge_alerts_firing", "Alerts firing now", ConstGauge::new(sampled.alerts_firing));
    let deliveries = Family::<StateLabel, Gauge>::default();
    let (pending, sent, given_up) = sampled.alert_deliveries;
    for (state, n) in [("pending", pending), ("sent", sent), ("given_up", given_up)] {
        deliveries.get_or_create(&StateLabel { state }).set(n as i64);
    }
    scrape.register(
        "xyte_edge_alert_deliveries",
        "Alert messages by state (pending, sent, given up; kept 7 days after they are done)",
        deliveries,
    );
    scrape.register(
        "xyte_edge_build",
        "The running build",
        Info::new(BuildLabels { version: env!("CARGO_PKG_VERSION"), env: sampled.env.clone() }),
    );
    if let Some(p) = process_sample() {
        scrape.register_with_unit(
            "process_resident_memory",
            "Resident set size of this process",
            Unit::Bytes,
            ConstGauge::new(p.rss_bytes),
        );
        scrape.register_with_unit(
            "process_cpu",
            "User and system CPU time of this process",
            Unit::Seconds,
            ConstCounter::new(p.cpu_seconds),
        );
    }
    let mut out = String::new();
    // Writing to a String cannot fail; the encoder only returns fmt errors from the writer.
    let _ = prometheus_client::encoding::text::encode_registry(&mut out, &METRICS.registry);
    let _ = prometheus_client::encoding::text::encode_registry(&mut out, &scrape);
    let _ = prometheus_client::encoding::text::encode_eof(&mut out);
    out
}

struct ProcessSample {
    rss_bytes: i64,
    cpu_seconds: f64,
}

/// RSS from `/proc/self/statm` (resident pages × page size) and CPU from `/proc/self/stat` (utime + stime in clock
/// ticks). `None` where /proc is unavailable.
fn process_sample() -> Option<ProcessSample> {
    use nix::unistd::{SysconfVar, sysconf};
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let resident: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page = sysconf(SysconfVar::PAGE_SIZE).ok().flatten()?;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // `comm` (field 2) is in parentheses and may contain spaces: fields are counted after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After `comm`, field 3 (state) is index 0: utime (14) and stime (15) are indexes 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = sysconf(SysconfVar::CLK_TCK).ok().flatten().filter(|t| *t > 0)?;
    // `c_long` is 32 bits on armhf.
    #[allow(clippy::useless_conversion)]
    let page = i64::from(page);
    Some(ProcessSample { rss_bytes: resident * page, cpu_seconds: (utime + stime) as f64 / ticks as f64 })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sample names (the part before `{` or the value) of every non-comment line.
    fn sample_names(text: &str) -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
            .collect()
    }

    /// The value of the sample line starting with exactly `series` (name plus labels as encoded).
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn every_spec_name_is_exposed_with_its_exact_spelling() {
        http_request("/v1/devices", 200, 0.003);
        tool_call("list_devices", "ok");
        xyte_request("devices", 0.2);
        xyte_error("devices", ErrorCode::Timeout);
        cache("device", true);
        cache("device", false);
        event("device.updated");
        let _sse = sse_client();
        let _mcp = mcp_connection("unix");
        upstream_reachable(true);
        let text = render(&Sampled { outbox_depth: 3, env: "test".into(), ..Default::default() });
        let names = sample_names(&text);
        for name in [
            "xyte_request_latency_seconds_bucket",
            "xyte_request_latency_seconds_sum",
            "xyte_request_latency_seconds_count",
            "xyte_errors_total",
            "xyte_cache_hits_total",
            "xyte_cache_misses_total",
            "xyte_edge_outbox_depth",
            "xyte_edge_events_total",
            "xyte_edge_sse_clients",
            "xyte_edge_mcp_connections",
            "xyte_edge_http_requests_total",
            "xyte_edge_http_request_duration_seconds_bucket",
            "xyte_edge_http_request_duration_seconds_sum",
            "xyte_edge_http_request_duration_seconds_count",
            "xyte_edge_tool_calls_total",
            "xyte_edge_upstream_reachable",
            "xyte_edge_build_info",
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} missing from:\n{text}");
        }
        // No name got a suffix twice.
        assert!(!text.contains("_total_total") && !text.contains("_seconds_seconds") && !text.contains("_info_info"));
        assert_eq!(value(&text, "xyte_edge_outbox_depth"), Some(3.0));
        assert_eq!(value(&text, "xyte_edge_upstream_reachable"), Some(1.0));
        assert_eq!(
            value(&text, &format!("xyte_edge_build_info{{version=\"{}\",env=\"test\"}}", env!("CARGO_PKG_VERSION"))),
            Some(1.0)
        );
        assert!(value(&text, "xyte_edge_http_requests_total{route=\"/v1/devices\",status=\"200\"}").unwrap() >= 1.0);
        assert!(value(&text, "xyte_edge_tool_calls_total{tool=\"list_devices\",outcome=\"ok\"}").unwrap() >= 1.0);
        assert!(value(&text, "xyte_errors_total{endpoint=\"devices\",code=\"timeout\"}").unwrap() >= 1.0);
        assert!(value(&text, "process_resident_memory_bytes").unwrap() > 0.0);
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn labels_are_bounded() {
        event("kind.from.a.webhook.9c1d");
        let text = render(&Sampled::default());
        assert!(!text.contains("9c1d"), "an event kind leaked into a label");
        assert!(value(&text, "xyte_edge_events_total{kind=\"other\"}").unwrap() >= 1.0);
        // Every label value in the exposition comes from a bounded set.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            for (key, allowed) in [
                ("kind=\"", EVENT_KINDS.iter().copied().chain(["other"]).collect::<Vec<_>>()),
                ("transport=\"", STALL_TRANSPORTS.iter().copied().chain(["other"]).collect()),
            ] {
                if let Some(rest) = line.split(key).nth(1) {
                    let v = rest.split('"').next().unwrap();
                    assert!(allowed.contains(&v), "{key}{v} is not a bounded value: {line}");
                }
            }
        }
    }

    #[test]
    fn guards_decrement_when_dropped() {
        let gauge = Gauge::default();
        let a = Guard::new(gauge.clone());
        let b = Guard::new(gauge.clone());
        assert_eq!(gauge.get(), 2);
        drop(a);
        assert_eq!(gauge.get(), 1);
        drop(b);
        assert_eq!(gauge.get(), 0);

        // The real gauges go up and back down (other tests may hold guards concurrently, so compare relative).
        let series = "xyte_edge_mcp_connections{transport=\"http\"}";
        let before = value(&render(&Sampled::default()), series).unwrap();
        let g = mcp_connection("http");
        assert!(value(&render(&Sampled::default()), series).unwrap() >= before);
        drop(g);
        let sse = sse_client();
        assert!(value(&render(&Sampled::default()), "xyte_edge_sse_clients").unwrap() >= 1.0);
        drop(sse);
    }

    /// Metric names in a PromQL expression (`xyte_…`, `process_…`), with histogram series suffixes removed.
    fn names_in_expr(expr: &str) -> Vec<String> {
        let bytes = expr.as_bytes();
        let mut names = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
            if boundary && (expr[i..].starts_with("xyte_") || expr[i..].starts_with("process_")) {
                let end = expr[i..].find(|c: char| !(c.is_ascii_lowercase() || c == '_')).map_or(expr.len(), |n| i + n);
                let name = &expr[i..end];
                let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
                names.push(base.to_string());
                i = end;
            } else {
                i += 1;
            }
        }
        names
    }

    #[test]
    fn the_dashboard_uses_only_exposed_names() {
        // One of everything, so every family has a series.
        every_spec_name_is_exposed_with_its_exact_spelling();
        let text = render(&Sampled::default());
        let exposed: Vec<String> = sample_names(&text)
            .into_iter()
            .map(|n| ["_bucket", "_sum", "_count"].iter().find_map(|s| n.strip_suffix(s)).unwrap_or(&n).to_string())
            .collect();
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../packaging/grafana-dashboard.json")).expect("the dashboard is JSON");
        let mut exprs = Vec::new();
        fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, v) in m {
                        match v.as_str() {
                            Some(s) if k == "expr" => out.push(s.to_string()),
                            _ => walk(v, out),
                        }
                    }
                }
                serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
                _ => {}
            }
        }
        walk(&dashboard, &mut exprs);
        assert!(exprs.len() >= 12, "{exprs:?}");
        let mut used = 0;
        for expr in &exprs {
            for name in names_in_expr(expr) {
                assert!(exposed.contains(&name), "the dashboard uses {name}, which is not exposed ({expr})");
                used += 1;
            }
        }
        assert!(used >= exprs.len());
        assert_eq!(
            names_in_expr("rate(xyte_edge_http_request_duration_seconds_bucket{a=\"b\"}[5m])"),
            ["xyte_edge_http_request_duration_seconds"]
        );
    }
}
