//! The alert rules file: where alerts go (`channels`: e-mail over SMTP, Slack and Microsoft Teams incoming webhooks,
//! a signed JSON webhook, remote syslog) and what the gateway watches (`rules`: a condition over what it already
//! knows, a severity, the channels to tell, a repeat interval, a notice when the condition clears). The file is checked
//! whole, every problem naming its rule or channel, so `check-config` can list them all at once; a rule or channel
//! with a problem is dropped and the rest is kept, as a bad schedule entry is.
//!

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::{Secret, read_secret_file, values};

/// How bad an alert is; chat and syslog messages carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// Which devices a device rule watches; every given field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFilter {
    /// The space's full path starts with this (case-insensitive): a site, a floor or a room.
    pub space: Option<String>,
    pub model: Option<String>,
    pub vendor: Option<String>,
    /// The device's name, with `*` matching any run of characters (case-insensitive).
    pub name: Option<String>,
}

/// What a device rule's filter looks at, taken from the device by the caller.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeviceFacts<'a> {
    pub name: &'a str,
    pub model: &'a str,
    pub vendor: Option<&'a str>,
    /// The space's full path (`HQ Berlin/Floor 3/Board Room`).
    pub space: &'a str,
}

impl DeviceFilter {
    /// Whether the device passes every given field: `space` by whole path segments (`HQ Berlin/Floor 3` takes the
    /// rooms of floor 3, not of `Floor 30`), `model` and `vendor` exactly, `name` as a glob; all case-insensitive.
    pub fn matches(&self, d: DeviceFacts<'_>) -> bool {
        let same = |want: &Option<String>, have: Option<&str>| {
            want.as_ref().is_none_or(|w| have.is_some_and(|h| h.eq_ignore_ascii_case(w.trim())))
        };
        let in_space = self.space.as_ref().is_none_or(|prefix| {
            let (have, want) = (d.space.to_lowercase(), prefix.trim().trim_end_matches('/').to_lowercase());
            have == want || have.starts_with(&format!("{want}/"))
        });
        in_space
            && same(&self.model, Some(d.model))
            && same(&self.vendor, d.vendor)
            && self.name.as_ref().is_none_or(|g| glob(&g.to_lowercase(), &d.name.to_lowercase()))
    }
}

/// `*` matches any run of characters (also none); everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else { return rest.is_empty() };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// What a rule watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// A device offline (or, with `error`, in error) for at least `for_`.
    Device {
        error: bool,
        for_: Duration,
        filter: DeviceFilter,
    },
    /// An incident opened; only these severities when given.
    IncidentOpened {
        severities: Vec<String>,
    },
    TicketOpened,
    /// A command that failed, was rejected or expired.
    CommandFailed,
    PresetFailed,
    ScheduleFailed,
    /// The oldest command waiting in the outbox is older than this.
    OutboxOlderThan(Duration),
    /// More commands than this wait in the outbox.
    OutboxDeeperThan(u64),
    XyteUnreachable {
        for_: Duration,
    },
    UplinkDisconnected {
        for_: Duration,
    },
    /// Free space of the state directory's file system below this many bytes.
    DiskFreeBelow(u64),
    /// Events were deleted by retention before the uplink delivered them (`edge.gap`).
    EventGap,
}

impl Condition {
    /// An event condition (something happened: told once) rather than a state that holds until it clears.
    pub fn is_event(&self) -> bool {
        matches!(
            self,
            Condition::IncidentOpened { .. }
                | Condition::TicketOpened
                | Condition::CommandFailed
                | Condition::PresetFailed
                | Condition::ScheduleFailed
                | Condition::EventGap
        )
    }

    /// The keyword the file names it by.
    pub fn name(&self) -> &'static str {
        match self {
            Condition::Device { error: false, .. } => "device_offline",
            Condition::Device { error: true, .. } => "device_error",
            Condition::IncidentOpened { .. } => "incident_opened",
            Condition::TicketOpened => "ticket_opened",
            Condition::CommandFailed => "command_failed",
            Condition::PresetFailed => "preset_failed",
            Condition::ScheduleFailed => "schedule_failed",
            Condition::OutboxOlderThan(_) => "outbox_older_than",
            Condition::OutboxDeeperThan(_) => "outbox_deeper_than",
            Condition::XyteUnreachable { .. } => "xyte_unreachable",
            Condition::UplinkDisconnected { .. } => "uplink_disconnected",
            Condition::DiskFreeBelow(_) => "disk_free_below",
            Condition::EventGap => "event_gap",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub condition: Condition,
    pub severity: Severity,
    pub channels: Vec<String>,
    /// Tell again after this long while still firing; `None`: once.
    pub repeat: Option<Duration>,
    /// Send a notice when the condition clears.
    pub resolve: bool,
    /// Alerts of this rule that fire within this window go out as one message.
    pub group_window: Duration,
}

/// How an SMTP connection is secured: implicit TLS (`smtps://`, port 465) or STARTTLS (`smtp://`, port 587; required,
/// never plain text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    Implicit,
    StartTls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogTransport {
    Udp,
    Tcp,
    Tls,
}

#[derive(Debug, Clone)]
pub enum ChannelKind {
    Email {
        host: String,
        port: u16,
        tls: SmtpTls,
        username: Option<String>,
        password: Option<Secret<String>>,
        from: String,
        to: Vec<String>,
        /// Trust this CA (PEM) for the mail server instead of the built-in roots.
        ca_file: Option<PathBuf>,
    },
    /// A Slack incoming webhook; its URL carries the credential, so it is a secret.
    Slack { url: Secret<String> },
    /// A Microsoft Teams incoming webhook (or workflow URL); a secret for the same reason.
    Teams { url: Secret<String> },
    /// A JSON webhook, signed with HMAC-SHA256 like the gateway's own webhook when a secret is given.
    Webhook { url: String, secret: Option<Secret<String>> },
    /// Remote syslog (RFC 5424; octet-counted framing over TCP and TLS).
    Syslog { transport: SyslogTransport, host: String, port: u16, ca_file: Option<PathBuf> },
}

impl ChannelKind {
    /// The `type` the file gives it.
    pub fn type_name(&self) -> &'static str {
        match self {
            ChannelKind::Email { .. } => "email",
            ChannelKind::Slack { .. } => "slack",
            ChannelKind::Teams { .. } => "teams",
            ChannelKind::Webhook { .. } => "webhook",
            ChannelKind::Syslog { .. } => "syslog",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Channel {
    pub name: String,
    pub kind: ChannelKind,
    /// Messages per hour at most; beyond, alerts wait (a flapping device must not flood a channel).
    pub per_hour: u32,
    /// A message not delivered within this long is given up, with the reason logged.
    pub give_up_after: Duration,
}

/// The loaded file: what loaded, and every problem (each naming its rule or channel).
#[derive(Debug, Default, Clone)]
pub struct AlertRules {
    pub path: PathBuf,
    pub channels: BTreeMap<String, Channel>,
    pub rules: Vec<Rule>,
    pub problems: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    channels: BTreeMap<String, Value>,
    #[serde(default)]
    rules: Vec<Value>,
}

impl AlertRules {
    /// Reads and checks the file. A missing file means "no alerts"; a file that is not JSON of this shape is an error.
    pub fn load(path: &Path) -> Result<AlertRules, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(AlertRules { path: path.to_path_buf(), ..Default::default() });
            }
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let file: File =
            serde_json::from_str(&text).map_err(|e| format!("{} is not a valid alerts file: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("/"));
        let mut out = AlertRules { path: path.to_path_buf(), ..Default::default() };
        for (name, raw) in &file.channels {
            match channel(name, raw, base) {
                Ok(c) => {
                    out.channels.insert(name.clone(), c);
                }
                Err(e) => out.problems.push(format!("channel {name:?}: {e}")),
            }
        }
        for (i, raw) in file.rules.iter().enumerate() {
            let label = match raw["name"].as_str() {
                Some(n) if !n.trim().is_empty() => format!("rule {n:?}"),
                _ => format!("rules[{i}]"),
            };
            // A rule naming a channel that was dropped for a problem of its own is not an extra problem.
            let known = |c: &str| out.channels.contains_key(c) || file.channels.contains_key(c);
            match rule(raw, &known) {
                Ok(r) if out.rules.iter().any(|o| o.name == r.name) => {
                    out.problems.push(format!("{label}: the name is used by an earlier rule"))
                }
                Ok(mut r) => {
                    r.channels.retain(|c| out.channels.contains_key(c));
                    out.rules.push(r);
                }
                Err(e) => out.problems.push(format!("{label}: {e}")),
            }
        }
        Ok(out)
    }
}

fn name_ok(name: &str) -> Result<(), String> {
    if name.trim().is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err("the name must be 1 to 64 printable characters".into());
    }
    Ok(())
}

fn duration_of(key: &str, raw: &Option<String>, min: Duration, max: Duration) -> Result<Option<Duration>, String> {
    raw.as_deref().map(|r| values::duration_in(r, min, max).map_err(|e| format!("{key}: {e}"))).transpose()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    condition: String,
    #[serde(rename = "for")]
    for_: Option<String>,
    space: Option<String>,
    model: Option<String>,
    vendor: Option<String>,
    device_name: Option<String>,
    severities: Option<Vec<String>>,
    older_than: Option<String>,
    deeper_than: Option<u64>,
    below: Option<String>,
    severity: Option<String>,
    channels: Vec<String>,
    repeat: Option<String>,
    #[serde(default = "yes")]
    resolve: bool,
    group_window: Option<String>,
}

fn yes() -> bool {
    true
}

const CONDITIONS: &str = "device_offline, device_error, incident_opened, ticket_opened, command_failed, \
                          preset_failed, schedule_failed, outbox_older_than, outbox_deeper_than, xyte_unreachable, \
                          uplink_disconnected, disk_free_below, event_gap";

fn rule(raw: &Value, known_channel: &dyn Fn(&str) -> bool) -> Result<Rule, String> {
    let r = RawRule::deserialize(raw).map_err(|e| e.to_string())?;
    name_ok(&r.name)?;
    const SECOND: Duration = Duration::from_secs(1);
    const WEEK: Duration = Duration::from_secs(7 * 86_400);
    let for_ = duration_of("for", &r.for_, Duration::ZERO, WEEK)?;
    // Each condition takes its own keys; any other one given is a mistake worth naming.
    let mut used: Vec<&str> = vec![];
    let mut take = |key: &'static str| used.push(key);
    let condition = match r.condition.as_str() {
        "device_offline" | "device_error" => {
            ["for", "space", "model", "vendor", "device_name"].into_iter().for_each(&mut take);
            Condition::Device {
                error: r.condition == "device_error",
                for_: for_.unwrap_or(Duration::ZERO),
                filter: DeviceFilter {
                    space: r.space.clone(),
                    model: r.model.clone(),
                    vendor: r.vendor.clone(),
                    name: r.device_name.clone(),
                },
            }
        }
        "incident_opened" => {
            take("severities");
            Condition::IncidentOpened { severities: r.severities.clone().unwrap_or_default() }
        }
        "ticket_opened" => Condition::TicketOpened,
        "command_failed" => Condition::CommandFailed,
        "preset_failed" => Condition::PresetFailed,
        "schedule_failed" => Condition::ScheduleFailed,
        "outbox_older_than" => {
            take("older_than");
            let age = duration_of("older_than", &r.older_than, SECOND, WEEK)?;
            Condition::OutboxOlderThan(age.ok_or("outbox_older_than needs older_than (e.g. \"5m\")")?)
        }
        "outbox_deeper_than" => {
            take("deeper_than");
            Condition::OutboxDeeperThan(r.deeper_than.ok_or("outbox_deeper_than needs deeper_than (a count)")?)
        }
        "xyte_unreachable" | "uplink_disconnected" => {
            take("for");
            let for_ = for_.unwrap_or(Duration::ZERO);
            if r.condition == "xyte_unreachable" {
                Condition::XyteUnreachable { for_ }
            } else {
                Condition::UplinkDisconnected { for_ }
            }
        }
        "disk_free_below" => {
            take("below");
            let below = r.below.as_deref().ok_or("disk_free_below needs below (e.g. \"500MB\")")?;
            Condition::DiskFreeBelow(bytes(below).map_err(|e| format!("below: {e}"))?)
        }
        "event_gap" => Condition::EventGap,
        other => return Err(format!("unknown condition {other:?} (one of {CONDITIONS})")),
    };
    let given = [
        ("for", r.for_.is_some()),
        ("space", r.space.is_some()),
        ("model", r.model.is_some()),
        ("vendor", r.vendor.is_some()),
        ("device_name", r.device_name.is_some()),
        ("severities", r.severities.is_some()),
        ("older_than", r.older_than.is_some()),
        ("deeper_than", r.deeper_than.is_some()),
        ("below", r.below.is_some()),
    ];
    if let Some((key, _)) = given.iter().find(|(k, set)| *set && !used.contains(k)) {
        return Err(format!("{key} does not apply to {}", r.condition));
    }
    let severity = match r.severity.as_deref().unwrap_or("warning") {
        "info" => Severity::Info,
        "warning" => Severity::Warning,
        "critical" => Severity::Critical,
        other => return Err(format!("unknown severity {other:?} (info, warning, critical)")),
    };
    if r.channels.is_empty() {
        return Err("channels: name at least one channel".into());
    }
    if let Some(unknown) = r.channels.iter().find(|c| !known_channel(c)) {
        return Err(format!("unknown channel {unknown:?}"));
    }
    let repeat = duration_of("repeat", &r.repeat, Duration::from_secs(60), WEEK)?;
    let group_window = duration_of("group_window", &r.group_window, Duration::ZERO, Duration::from_secs(3600))?
        .unwrap_or(GROUP_WINDOW);
    Ok(Rule { name: r.name, condition, severity, channels: r.channels, repeat, resolve: r.resolve, group_window })
}

/// Alerts of one rule that fire within this long go out as one message, unless the rule says otherwise.
pub const GROUP_WINDOW: Duration = Duration::from_secs(30);

/// `500MB`, `2GB`, `1048576` (bytes; K/M/G are powers of 1000, KiB/MiB/GiB of 1024).
fn bytes(raw: &str) -> Result<u64, String> {
    let s = raw.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{raw:?} is not a size (e.g. 500MB, 2GiB)"))?;
    let mul: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1000,
        "mb" | "m" => 1000 * 1000,
        "gb" | "g" => 1000 * 1000 * 1000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        other => return Err(format!("unknown unit {other:?} (B, KB, MB, GB, KiB, MiB, GiB)")),
    };
    n.checked_mul(mul).ok_or_else(|| format!("{raw:?} is too large"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannel {
    #[serde(rename = "type")]
    kind: String,
    url: Option<String>,
    url_file: Option<String>,
    secret: Option<String>,
    secret_file: Option<String>,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<String>,
    from: Option<String>,
    to: Option<Vec<String>>,
    ca_file: Option<String>,
    per_hour: Option<u32>,
    give_up_after: Option<String>,
}

/// A secret given inline or in a file (relative paths from the alerts file's directory), never both.
fn secret(
    key: &str,
    inline: &Option<String>,
    file: &Option<String>,
    base: &Path,
) -> Result<Option<Secret<String>>, String> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(format!("give either {key} or {key}_file, not both")),
        (Some(v), None) if v.trim().is_empty() => Err(format!("{key} is empty")),
        (Some(v), None) => Ok(Some(Secret::new(v.clone()))),
        (None, Some(f)) => read_secret_file(&base.join(f)).map(Some).map_err(|e| format!("{key}_file: {e}")),
        (None, None) => Ok(None),
    }
}

fn email_ok(address: &str) -> bool {
    let mut parts = address.rsplitn(2, '@');
    let (domain, local) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !address.chars().any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>' || c == ',')
}

/// `scheme://host[:port]` with no path, user or query: the host and the port (or the scheme's default).
fn endpoint(url: &str, schemes: &[(&str, u16)]) -> Result<(String, String, u16), String> {
    let names: Vec<String> = schemes.iter().map(|(s, _)| format!("{s}://")).collect();
    let bad = || format!("{url:?} is not {}host[:port]", names.join(" or "));
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    let default = schemes.iter().find(|(s, _)| *s == scheme).map(|(_, p)| *p).ok_or_else(bad)?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains(['/', '@', '?', '#']) {
        return Err(bad());
    }
    // `[v6]:port`, `[v6]`, `host:port` or `host`.
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']').ok_or_else(bad)?;
            match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None if after.is_empty() => (host, None),
                None => return Err(bad()),
            }
        }
        None => match rest.split_once(':') {
            Some((host, p)) => (host, Some(p)),
            None => (rest, None),
        },
    };
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)?,
        None => default,
    };
    if host.is_empty() || host.contains(['[', ']']) {
        return Err(bad());
    }
    Ok((scheme.to_string(), host.to_string(), port))
}

fn https_url(key: &str, url: &str) -> Result<(), String> {
    let (scheme, host) = url.split_once("://").ok_or_else(|| format!("{key} is not an http(s) URL"))?;
    match scheme {
        "https" if !host.is_empty() => Ok(()),
        // Plain HTTP only to this machine: a chat or webhook URL is a credential, and alerts are not sent in clear.
        "http" if super::is_loopback_host(host.split(['/', ':']).next().unwrap_or("")) => Ok(()),
        "http" => Err(format!("{key} must be https:// (plain http only to a loopback address)")),
        _ => Err(format!("{key} is not an http(s) URL")),
    }
}

/// A CA file (relative to the alerts file's directory) that exists; its contents are checked when the channel's
/// sender is built.
fn ca_file(given: &Option<String>, base: &Path) -> Result<Option<PathBuf>, String> {
    let path = given.as_ref().map(|f| base.join(f));
    match path {
        Some(f) if !f.is_file() => Err(format!("ca_file: {} is not a readable file", f.display())),
        other => Ok(other),
    }
}

fn channel(name: &str, raw: &Value, base: &Path) -> Result<Channel, String> {
    name_ok(name)?;
    let c = RawChannel::deserialize(raw).map_err(|e| e.to_string())?;
    // Each type takes its own keys (and every type `per_hour` and `give_up_after`); any other one is a mistake.
    let given = [
        ("url_file", c.url_file.is_some()),
        ("secret", c.secret.is_some() || c.secret_file.is_some()),
        ("username", c.username.is_some()),
        ("password", c.password.is_some() || c.password_file.is_some()),
        ("from", c.from.is_some()),
        ("to", c.to.is_some()),
        ("ca_file", c.ca_file.is_some()),
    ];
    let only = |allowed: &[&str]| match given.iter().find(|(key, set)| *set && !allowed.contains(key)) {
        Some((key, _)) => Err(format!("{key} does not apply to a {} channel", c.kind)),
        None => Ok(()),
    };
    let kind = match c.kind.as_str() {
        "email" => {
            only(&["username", "password", "from", "to", "ca_file"])?;
            let url =
                c.url.as_deref().ok_or("email needs url (smtps://host[:465] or smtp://host[:587] with STARTTLS)")?;
            let (scheme, host, port) =
                endpoint(url, &[("smtps", 465), ("smtp", 587)]).map_err(|e| format!("url: {e}"))?;
            let tls = if scheme == "smtps" { SmtpTls::Implicit } else { SmtpTls::StartTls };
            let password = secret("password", &c.password, &c.password_file, base)?;
            if password.is_some() != c.username.is_some() {
                return Err("username and password (or password_file) go together".into());
            }
            let from = c.from.clone().ok_or("email needs from (the sender address)")?;
            if !email_ok(&from) {
                return Err(format!("from: {from:?} is not an e-mail address"));
            }
            let to = c.to.clone().filter(|t| !t.is_empty()).ok_or("email needs to (a list of addresses)")?;
            if let Some(bad) = to.iter().find(|a| !email_ok(a)) {
                return Err(format!("to: {bad:?} is not an e-mail address"));
            }
            let ca_file = ca_file(&c.ca_file, base)?;
            ChannelKind::Email { host, port, tls, username: c.username.clone(), password, from, to, ca_file }
        }
        "slack" | "teams" => {
            only(&["url_file"])?;
            let url =
                secret("url", &c.url, &c.url_file, base)?.ok_or("needs url or url_file (the incoming webhook)")?;
            https_url("url", url.expose())?;
            if c.kind == "slack" { ChannelKind::Slack { url } } else { ChannelKind::Teams { url } }
        }
        "webhook" => {
            only(&["secret"])?;
            let url = c.url.clone().ok_or("webhook needs url")?;
            https_url("url", &url)?;
            ChannelKind::Webhook { url, secret: secret("secret", &c.secret, &c.secret_file, base)? }
        }
        "syslog" => {
            only(&["ca_file"])?;
            let url =
                c.url.as_deref().ok_or("syslog needs url (udp://host[:514], tcp://host[:514], tls://host[:6514])")?;
            let (scheme, host, port) =
                endpoint(url, &[("udp", 514), ("tcp", 514), ("tls", 6514)]).map_err(|e| format!("url: {e}"))?;
            let transport = match scheme.as_str() {
                "udp" => SyslogTransport::Udp,
                "tcp" => SyslogTransport::Tcp,
                _ => SyslogTransport::Tls,
            };
            if c.ca_file.is_some() && transport != SyslogTransport::Tls {
                return Err("ca_file applies to tls:// only".into());
            }
            ChannelKind::Syslog { transport, host, port, ca_file: ca_file(&c.ca_file, base)? }
        }
        other => return Err(format!("unknown type {other:?} (email, slack, teams, webhook, syslog)")),
    };
    let give_up_after =
        duration_of("give_up_after", &c.give_up_after, Duration::from_secs(60), Duration::from_secs(7 * 86_400))?
            .unwrap_or(Duration::from_secs(86_400));
    let per_hour = c.per_hour.unwrap_or(60);
    if per_hour == 0 {
        return Err("per_hour must be at least 1".into());
    }
    Ok(Channel { name: name.to_string(), kind, per_hour, give_up_after })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn load(dir: &Path, file: Value) -> AlertRules {
        let path = dir.join("alerts.json");
        std::fs::write(&path, file.to_string()).unwrap();
        AlertRules::load(&path).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The example the package ships loads whole once its secret files sit beside it, as in /etc/xyte-edge.
    #[test]
    fn the_packaged_example_loads() {
        let dir = tempfile::tempdir().unwrap();
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/alerts.example.json");
        let text = std::fs::read_to_string(example).unwrap();
        for secret in ["smtp-password", "slack-webhook-url", "teams-webhook-url", "itsm-secret"] {
            std::fs::write(dir.path().join(secret), "https://hooks.example.com/x\n").unwrap();
        }
        let rules = load(dir.path(), serde_json::from_str(&text).unwrap());
        assert!(rules.problems.is_empty(), "{:?}", rules.problems);
        assert_eq!((rules.channels.len(), rules.rules.len()), (5, 8));
    }

    #[test]
    fn a_missing_file_means_no_alerts_and_a_broken_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.json");
        let none = AlertRules::load(&path).unwrap();
        assert!(none.rules.is_empty() && none.channels.is_empty() && none.problems.is_empty());
        std::fs::write(&path, "{\"rules\": [").unwrap();
        assert!(AlertRules::load(&path).unwrap_err().contains("is not a valid alerts file"));
        std::fs::write(&path, "{\"rulez\": []}").unwrap();
        assert!(AlertRules::load(&path).unwrap_err().contains("unknown field `rulez`"));
    }

    #[test]
    fn every_channel_type_and_condition_loads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("smtp-password"), "s3cret\n").unwrap();
        std::fs::write(dir.path().join("slack-url"), "https://hooks.slack.com/services/T0/B0/XYZ\n").unwrap();
        std::fs::write(dir.path().join("ca.pem"), "-----BEGIN CERTIFICATE-----\n").unwrap();
        let rules = load(
            dir.path(),
            json!({
                "channels": {
                    "mail": {"type": "email", "url": "smtp://mail.example.com", "username": "gw",
                             "password_file": "smtp-password", "from": "gateway@example.com",
                             "to": ["av@example.com", "facilities@example.com"]},
                    "mail-tls": {"type": "email", "url": "smtps://mail.example.com:2465", "from": "gw@example.com",
                                 "to": ["av@example.com"], "ca_file": "ca.pem"},
                    "slack": {"type": "slack", "url_file": "slack-url", "per_hour": 20},
                    "teams": {"type": "teams", "url": "https://example.webhook.office.com/webhookb2/abc"},
                    "hook": {"type": "webhook", "url": "http://127.0.0.1:9000/alerts", "secret": "k",
                             "give_up_after": "2h"},
                    "syslog-udp": {"type": "syslog", "url": "udp://10.0.0.5"},
                    "syslog-tcp": {"type": "syslog", "url": "tcp://[fd00::5]:1514"},
                    "syslog-tls": {"type": "syslog", "url": "tls://logs.example.com", "ca_file": "ca.pem"},
                },
                "rules": [
                    {"name": "projector", "condition": "device_offline", "for": "10m", "space": "HQ Berlin/Floor 3",
                     "device_name": "*Projector*", "severity": "warning", "channels": ["slack", "mail"],
                     "repeat": "4h"},
                    {"name": "errors", "condition": "device_error", "model": "CP4", "vendor": "Crestron",
                     "channels": ["teams"], "resolve": false, "group_window": "1m"},
                    {"name": "incidents", "condition": "incident_opened", "severities": ["critical"],
                     "channels": ["hook"]},
                    {"name": "tickets", "condition": "ticket_opened", "channels": ["hook"]},
                    {"name": "commands", "condition": "command_failed", "channels": ["syslog-udp"]},
                    {"name": "presets", "condition": "preset_failed", "channels": ["syslog-tcp"]},
                    {"name": "schedules", "condition": "schedule_failed", "channels": ["syslog-tls"]},
                    {"name": "outbox-age", "condition": "outbox_older_than", "older_than": "5m", "channels": ["mail"]},
                    {"name": "outbox-depth", "condition": "outbox_deeper_than", "deeper_than": 100,
                     "channels": ["mail"]},
                    {"name": "wan", "condition": "xyte_unreachable", "for": "15m", "severity": "critical",
                     "channels": ["mail-tls", "syslog-udp"]},
                    {"name": "uplink", "condition": "uplink_disconnected", "for": "5m", "channels": ["mail"]},
                    {"name": "disk", "condition": "disk_free_below", "below": "500MB", "channels": ["mail"]},
                    {"name": "gap", "condition": "event_gap", "severity": "info", "channels": ["syslog-udp"]},
                ]
            }),
        );
        assert!(rules.problems.is_empty(), "{:#?}", rules.problems);
        assert_eq!((rules.channels.len(), rules.rules.len()), (8, 13));
        match &rules.channels["mail"].kind {
            ChannelKind::Email { host, port, tls, password, to, .. } => {
                assert_eq!((host.as_str(), *port, *tls), ("mail.example.com", 587, SmtpTls::StartTls));
                assert_eq!(password.as_ref().map(|p| p.expose().as_str()), Some("s3cret"));
                assert_eq!(to.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        match &rules.channels["syslog-tcp"].kind {
            ChannelKind::Syslog { transport, host, port, .. } => {
                assert_eq!((*transport, host.as_str(), *port), (SyslogTransport::Tcp, "fd00::5", 1514))
            }
            other => panic!("{other:?}"),
        }
        let projector = &rules.rules[0];
        assert_eq!(projector.repeat, Some(Duration::from_secs(4 * 3600)));
        assert_eq!(projector.group_window, GROUP_WINDOW);
        assert!(matches!(&projector.condition, Condition::Device { error: false, for_, filter }
            if *for_ == Duration::from_secs(600) && filter.name.as_deref() == Some("*Projector*")));
        assert_eq!(rules.rules[11].condition, Condition::DiskFreeBelow(500_000_000));
        assert_eq!(rules.channels["slack"].per_hour, 20);
        assert_eq!(rules.channels["hook"].give_up_after, Duration::from_secs(7200));
        // Secrets are masked wherever the configuration is printed.
        assert!(!format!("{:?}", rules.channels["slack"]).contains("XYZ"));
        assert!(!format!("{:?}", rules.channels["mail"]).contains("s3cret"));
    }

    #[test]
    fn each_problem_names_its_rule_or_channel_and_the_rest_loads() {
        let dir = tempfile::tempdir().unwrap();
        let rules = load(
            dir.path(),
            json!({
                "channels": {
                    "ok": {"type": "webhook", "url": "https://alerts.example.com/in"},
                    "pager": {"type": "pager", "url": "https://x"},
                    "plain-mail": {"type": "email", "url": "smtp://mail.example.com:25x", "from": "a@b.c",
                                   "to": ["d@e.f"]},
                    "chat": {"type": "slack", "url": "http://hooks.slack.com/services/T0"},
                    "two": {"type": "webhook", "url": "https://x.example.com", "secret": "a", "secret_file": "b"},
                    "mail": {"type": "email", "url": "smtp://m.example.com", "from": "nobody", "to": ["d@e.f"]},
                    "udp-ca": {"type": "syslog", "url": "udp://10.0.0.5", "ca_file": "ca.pem"},
                },
                "rules": [
                    {"name": "good", "condition": "device_offline", "for": "10m", "channels": ["ok"]},
                    {"name": "typo", "condition": "device_ofline", "channels": ["ok"]},
                    {"name": "bad-for", "condition": "xyte_unreachable", "for": "ten minutes", "channels": ["ok"]},
                    {"name": "no-channel", "condition": "ticket_opened", "channels": ["sms"]},
                    {"name": "stray-key", "condition": "ticket_opened", "for": "1m", "channels": ["ok"]},
                    {"name": "good", "condition": "event_gap", "channels": ["ok"]},
                    {"name": "loud", "condition": "event_gap", "severity": "urgent", "channels": ["ok"]},
                    {"condition": "event_gap", "channels": ["ok"]},
                    {"name": "dropped-channel", "condition": "event_gap", "channels": ["pager", "ok"]},
                ]
            }),
        );
        let expected = [
            "channel \"chat\": url must be https:// (plain http only to a loopback address)",
            "channel \"mail\": from: \"nobody\" is not an e-mail address",
            "channel \"pager\": unknown type \"pager\"",
            "channel \"plain-mail\": url: \"smtp://mail.example.com:25x\" is not smtps:// or smtp://host[:port]",
            "channel \"two\": give either secret or secret_file, not both",
            "channel \"udp-ca\": ca_file applies to tls:// only",
            "rule \"typo\": unknown condition \"device_ofline\"",
            "rule \"bad-for\": for: expected a whole number",
            "rule \"no-channel\": unknown channel \"sms\"",
            "rule \"stray-key\": for does not apply to ticket_opened",
            "rule \"good\": the name is used by an earlier rule",
            "rule \"loud\": unknown severity \"urgent\"",
            "rules[7]: missing field `name`",
        ];
        for (problem, want) in rules.problems.iter().zip(expected) {
            assert!(problem.starts_with(want), "{problem:?} should start with {want:?}");
        }
        assert_eq!(rules.problems.len(), expected.len(), "{:#?}", rules.problems);
        let names: Vec<&str> = rules.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["good", "dropped-channel"]);
        assert_eq!(rules.rules[1].channels, ["ok"], "a dropped channel is left out of the rules naming it");
        assert_eq!(rules.channels.keys().collect::<Vec<_>>(), ["ok"]);
    }

    #[test]
    fn device_filters_match_by_space_segments_model_vendor_and_name_glob() {
        let d = DeviceFacts {
            name: "Board Room Projector",
            model: "EB-L1070U",
            vendor: Some("Epson"),
            space: "HQ Berlin/Floor 3/Board Room",
        };
        let f = |space: Option<&str>, model: Option<&str>, vendor: Option<&str>, name: Option<&str>| DeviceFilter {
            space: space.map(String::from),
            model: model.map(String::from),
            vendor: vendor.map(String::from),
            name: name.map(String::from),
        };
        assert!(f(None, None, None, None).matches(d));
        assert!(f(Some("hq berlin/floor 3"), Some("eb-l1070u"), Some("EPSON"), Some("*projector")).matches(d));
        assert!(f(Some("HQ Berlin/Floor 3/Board Room/"), None, None, None).matches(d));
        assert!(!f(Some("HQ Berlin/Floor"), None, None, None).matches(d), "whole segments only");
        assert!(!f(None, Some("EB-L1070"), None, None).matches(d));
        assert!(!f(None, None, Some("Epson"), None).matches(DeviceFacts { vendor: None, ..d }));
        for (pattern, hit) in [
            ("*", true),
            ("board*", true),
            ("*room*", true),
            ("b*r*p*r", true),
            ("*display*", false),
            ("board", false),
            ("*projector*x", false),
            ("board room projector", true),
        ] {
            assert_eq!(glob(pattern, "board room projector"), hit, "{pattern}");
        }
        assert!(glob("a*a", "aa") && !glob("a*a", "a"), "the parts do not overlap");
    }

    #[test]
    fn sizes_have_units() {
        assert_eq!(bytes("1048576").unwrap(), 1 << 20);
        assert_eq!(bytes("2GiB").unwrap(), 2 << 30);
        assert_eq!(bytes("500 MB").unwrap(), 500_000_000);
        assert!(bytes("5 parsecs").unwrap_err().contains("unknown unit"));
        assert!(bytes("99999999999999GB").unwrap_err().contains("too large"));
    }
}
