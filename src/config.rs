//! Configuration (README, Configure): built-in defaults → config file → environment, plus secret files and systemd
//! credentials. Everything is validated at once and every problem is reported together (exit 78), so an admin fixes
//! the file in one pass. Secrets live in [`Secret`] and are masked wherever a value is shown.

pub mod alerts;
mod file;
pub mod mqtt;
pub mod presets;
pub mod values;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/xyte-edge/xyte-edge.conf";
pub const DEFAULT_BASE_URL: &str = "https://hub.xyte.io/core/v1/organization";

/// A value that must never be printed: `Debug` and `Display` show `***`. Reach the value only with
/// [`Secret::expose`], at the single place it is used (e.g. building the `Authorization` header).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Who may do what (docs/architecture.md, Invariants: Roles); ordered so `role >= Role::Operator` reads naturally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            _ => Err("must be viewer, operator or admin".into()),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The credential used towards Xyte. Precedence: user token, then OAuth token, then API key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XyteCredential {
    ApiKey(Secret<String>),
    UserToken(Secret<String>),
    OAuth(Secret<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Auto,
    Journald,
    Json,
    Text,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogTarget {
    Unix,
    Udp(String),
    Tcp(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The validated configuration. Built only by [`Config::load`].
#[derive(Debug, Clone)]
pub struct Config {
    pub demo: bool,
    pub config_file: Option<PathBuf>,
    pub credential: Option<XyteCredential>,
    pub base_url: String,
    pub cache_ttl: Duration,
    /// `None` when `XYTE_POLL_INTERVAL=0` (polling disabled).
    pub poll_interval: Option<Duration>,
    pub rate_limit_per_min: u32,
    pub request_timeout: Duration,
    pub env_label: String,
    /// A tracing filter directive (level names already normalised).
    pub log_filter: String,
    pub log_format: LogFormat,
    pub syslog: Option<SyslogTarget>,
    pub state_dir: PathBuf,
    pub mcp_socket: PathBuf,
    pub mcp_socket_role: Role,
    pub http_listen: Vec<SocketAddr>,
    pub http_local_listen: Vec<SocketAddr>,
    pub allow_plaintext_lan: bool,
    pub tls: Option<TlsFiles>,
    pub allowed_hosts: Vec<String>,
    pub webhook_secret: Option<Secret<String>>,
    pub presets_file: PathBuf,
    /// `XYTE_ALERTS_FILE`: alert rules and channels (a missing file: no alerts).
    pub alerts_file: PathBuf,
    /// `XYTE_SITE`: names this gateway in alerts and, when the uplink is on, in its topics.
    pub site: String,
    /// Periodic backups, when `XYTE_BACKUP_DIR` is set.
    pub backup: Option<BackupSchedule>,
    /// `XYTE_SCHEDULE_GRACE`: how late a room schedule's missed due time may still fire.
    pub schedule_grace: Duration,
    pub command_ttl: Duration,
    /// Commands the outbox holds undelivered at most, over all devices (`XYTE_OUTBOX_MAX`).
    pub outbox_max: u64,
    /// … and for one device (`XYTE_OUTBOX_MAX_PER_DEVICE`).
    pub outbox_max_per_device: u64,
    pub event_retention_days: u32,
    pub event_retention_rows: u64,
    pub read_only: bool,
    pub plugins: Vec<PathBuf>,
    pub experimental_apis: bool,
    pub max_connections: usize,
    /// The MQTT uplink, when `XYTE_MQTT_URL` is set.
    pub mqtt: Option<mqtt::MqttConfig>,
    /// Every key with its effective (masked) value and where it came from, for `check-config`.
    pub effective: Vec<Effective>,
    /// Things worth telling the admin that do not stop the daemon (deprecated aliases, ignored keys…).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub key: &'static str,
    pub value: String,
    pub source: String,
}

/// `XYTE_BACKUP_DIR`, `XYTE_BACKUP_INTERVAL`, `XYTE_BACKUP_KEEP`: where the daemon writes its periodic backups, how
/// often (skipped while nothing changed) and how many it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSchedule {
    pub dir: PathBuf,
    pub interval: Duration,
    pub keep: usize,
}

/// One validation failure, naming the key, the (masked) value and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[derive(Debug, Clone)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(f, "configuration has {n} problem{}:", if n == 1 { "" } else { "s" })?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// What the command line says about where configuration comes from.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `--config PATH`; when absent the default path is read if it exists (and skipped in demo mode).
    pub path: Option<PathBuf>,
    pub demo: bool,
}

struct KeySpec {
    name: &'static str,
    default: &'static str,
    secret: bool,
}

const fn key(name: &'static str, default: &'static str) -> KeySpec {
    KeySpec { name, default, secret: false }
}

const fn secret(name: &'static str) -> KeySpec {
    KeySpec { name, default: "", secret: true }
}

/// Every key the daemon understands and its default (the only place a default is written). Defaults that depend on
/// the machine or mode are filled in later.
const KEYS: &[KeySpec] = &[
    secret("XYTE_API_KEY"),
    key("XYTE_API_KEY_FILE", ""),
    secret("XYTE_USER_TOKEN"),
    secret("XYTE_OAUTH_TOKEN"),
    key("XYTE_BASE_URL", DEFAULT_BASE_URL),
    key("XYTE_CACHE_TTL", "60"),
    key("XYTE_POLL_INTERVAL", "30"),
    key("XYTE_RATE_LIMIT", "60"),
    key("XYTE_REQUEST_TIMEOUT", "15"),
    key("XYTE_ENV", "prod"),
    key("XYTE_LOG_LEVEL", "info"),
    key("XYTE_LOG_FORMAT", "auto"),
    key("XYTE_SYSLOG", ""),
    key("XYTE_STATE_DIR", "/var/lib/xyte-edge"),
    key("XYTE_MCP_SOCKET", "/run/xyte-edge/mcp.sock"),
    key("XYTE_MCP_SOCKET_ROLE", "operator"),
    key("XYTE_HTTP_LISTEN", "0.0.0.0:8443"),
    key("XYTE_HTTP_LOCAL_LISTEN", "127.0.0.1:8080"),
    key("XYTE_ALLOW_PLAINTEXT_LAN", "false"),
    key("XYTE_TLS_CERT", ""),
    key("XYTE_TLS_KEY", ""),
    key("XYTE_ALLOWED_HOSTS", ""),
    secret("XYTE_WEBHOOK_SECRET"),
    key("XYTE_WEBHOOK_SECRET_FILE", ""),
    key("XYTE_PRESETS_FILE", "/etc/xyte-edge/presets.json"),
    key("XYTE_SCHEDULE_GRACE", "15m"),
    key("XYTE_ALERTS_FILE", "/etc/xyte-edge/alerts.json"),
    // Periodic backups (backup/periodic.rs): off while XYTE_BACKUP_DIR is empty.
    key("XYTE_BACKUP_DIR", ""),
    key("XYTE_BACKUP_INTERVAL", "24h"),
    key("XYTE_BACKUP_KEEP", "7"),
    key("XYTE_COMMAND_TTL", "600"),
    // Empty: derived from XYTE_RATE_LIMIT and XYTE_COMMAND_TTL (see [`default_outbox_max`]).
    key("XYTE_OUTBOX_MAX", ""),
    key("XYTE_OUTBOX_MAX_PER_DEVICE", ""),
    key("XYTE_EVENT_RETENTION_DAYS", "14"),
    key("XYTE_EVENT_RETENTION_ROWS", "200000"),
    key("XYTE_READ_ONLY", "false"),
    key("XYTE_PLUGINS", ""),
    key("XYTE_EXPERIMENTAL_APIS", "false"),
    key("XYTE_MAX_CONNECTIONS", "1024"),
    // The MQTT uplink (config/mqtt.rs): off while XYTE_MQTT_URL is empty. Empty defaults are derived from the host name.
    key("XYTE_MQTT_URL", ""),
    key("XYTE_MQTT_CLIENT_ID", ""),
    key("XYTE_MQTT_USERNAME", ""),
    secret("XYTE_MQTT_PASSWORD"),
    key("XYTE_MQTT_PASSWORD_FILE", ""),
    key("XYTE_MQTT_CA_FILE", ""),
    key("XYTE_MQTT_CLIENT_CERT", ""),
    key("XYTE_MQTT_CLIENT_KEY", ""),
    key("XYTE_SITE", ""),
    key("XYTE_MQTT_TOPIC_PREFIX", ""),
    key("XYTE_MQTT_COMMANDS", "off"),
    key("XYTE_MQTT_ROLE", "operator"),
];

/// The predecessor's bind variables, still honoured (with a warning) so old environment files keep working.
const ALIASES: &[&str] = &["MCP_INSPECTOR_HOST", "MCP_INSPECTOR_PORT"];

#[derive(Debug, Clone)]
enum Source {
    Default,
    File(usize),
    Env,
    Demo,
    Machine,
    /// Computed from the settings named (the outbox limits).
    Derived(&'static str),
    Alias,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(line) => write!(f, "file line {line}"),
            Source::Env => f.write_str("environment"),
            Source::Demo => f.write_str("demo mode"),
            Source::Machine => f.write_str("default (this machine)"),
            Source::Derived(from) => write!(f, "default (from {from})"),
            Source::Alias => f.write_str("MCP_INSPECTOR_HOST/PORT (deprecated)"),
        }
    }
}

/// The raw layered view before typing: key → (value, source).
struct Layers {
    values: BTreeMap<&'static str, (String, Source)>,
    problems: Vec<Problem>,
    warnings: Vec<String>,
}

impl Layers {
    /// Every key at its built-in default.
    fn defaults() -> Layers {
        let values = KEYS.iter().map(|k| (k.name, (k.default.to_string(), Source::Default))).collect();
        Layers { values, problems: Vec::new(), warnings: Vec::new() }
    }

    fn get(&self, key: &str) -> &str {
        self.values.get(key).map(|(v, _)| v.as_str()).unwrap_or("")
    }

    fn is_set(&self, key: &str) -> bool {
        !self.get(key).trim().is_empty()
    }

    fn source(&self, key: &str) -> String {
        self.values.get(key).map(|(_, s)| s.to_string()).unwrap_or_else(|| "default".into())
    }

    fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem { key: key.to_string(), message: message.into() });
    }

    /// A problem that names the offending value, unless the key is secret.
    fn bad_value(&mut self, key: &'static str, why: impl fmt::Display) {
        let shown =
            if KEYS.iter().any(|k| k.name == key && k.secret) { "***".to_string() } else { self.get(key).to_string() };
        self.problem(key, format!("invalid value {shown:?}: {why}"));
    }

    /// A key whose default is computed `from` other settings: `default` (recorded, so `check-config` shows the value
    /// in force and what it came from) when the key is not set, else the key parsed with `parse`.
    fn derived<T: fmt::Display>(
        &mut self,
        key: &'static str,
        (default, from): (T, &'static str),
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> T {
        if !self.is_set(key) {
            self.values.insert(key, (default.to_string(), Source::Derived(from)));
            return default;
        }
        let raw = self.get(key).to_string();
        parse(&raw).unwrap_or_else(|why| {
            self.bad_value(key, why);
            default
        })
    }

    /// Parses one key with `parse`. When that fails a problem is recorded (so the configuration is refused) and the
    /// key's built-in default from [`KEYS`] stands in, so that the keys validated after it still see a sane value.
    fn typed<T>(&mut self, key: &'static str, parse: impl Fn(&str) -> Result<T, String>) -> T {
        let raw = self.get(key).to_string();
        parse(&raw).unwrap_or_else(|why| {
            self.bad_value(key, why);
            // Every built-in default parses: `every_default_is_what_an_empty_configuration_holds` checks it.
            parse(default_of(key)).expect("built-in defaults are valid")
        })
    }
}

/// The built-in default of `key`, as [`KEYS`] lists it.
fn default_of(key: &str) -> &'static str {
    KEYS.iter().find(|k| k.name == key).map_or("", |k| k.default)
}

impl Config {
    /// Loads from the real process environment.
    pub fn load(opts: &LoadOptions) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Self::load_from(opts, &env)
    }

    /// Loads with an explicit environment (tests pass their own).
    pub fn load_from(opts: &LoadOptions, env: &HashMap<String, String>) -> Result<Config, ConfigError> {
        Self::load_layers(opts, env, true)
    }

    /// [`Config::load`] for local maintenance commands (`token`) that never talk to Xyte: everything is read and
    /// validated exactly as for the daemon, except that a missing Xyte credential is not a problem. The admin may
    /// keep the key in a systemd credential that only the service sees, and must still be able to manage tokens.
    pub fn load_local(opts: &LoadOptions) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Self::load_layers(opts, &env, false)
    }

    fn load_layers(
        opts: &LoadOptions,
        env: &HashMap<String, String>,
        need_credential: bool,
    ) -> Result<Config, ConfigError> {
        let mut layers = Layers::defaults();
        if opts.demo {
            apply_demo_defaults(&mut layers, env);
        }
        let mut alias: BTreeMap<&'static str, String> = BTreeMap::new();
        let config_file = read_file_layer(&mut layers, opts, &mut alias);
        for (name, value) in env {
            if let Some(k) = KEYS.iter().find(|k| k.name == name) {
                layers.values.insert(k.name, (value.clone(), Source::Env));
            } else if let Some(a) = ALIASES.iter().find(|a| **a == name) {
                alias.insert(*a, value.clone());
            } else if name.starts_with("XYTE_") {
                // The environment is shared with other software, so a stray XYTE_ variable is only a warning.
                layers.warnings.push(format!("environment variable {name} is not a xyte-edge setting; ignored"));
            }
        }
        apply_aliases(&mut layers, &alias);
        let config = build(&mut layers, opts, env, config_file, need_credential);
        if layers.problems.is_empty() { Ok(config) } else { Err(ConfigError { problems: layers.problems }) }
    }

    /// The configuration of an empty file and environment: every key at its built-in default, no credential.
    /// What [`crate::runtime::App::new`] starts from, so no default is written twice.
    pub fn defaults() -> Config {
        build(&mut Layers::defaults(), &LoadOptions::default(), &HashMap::new(), None, false)
    }

    /// Every secret value the configuration and the alert rules hold, longest first (so a secret containing another
    /// is replaced whole).
    pub fn secret_values(&self, alerts: Option<&alerts::AlertRules>) -> Vec<String> {
        let mut all: Vec<&String> = vec![];
        if let Some(XyteCredential::ApiKey(s) | XyteCredential::UserToken(s) | XyteCredential::OAuth(s)) =
            &self.credential
        {
            all.push(s.expose());
        }
        all.extend(self.webhook_secret.as_ref().map(|s| s.expose()));
        all.extend(self.mqtt.as_ref().and_then(|m| m.password.as_ref()).map(|s| s.expose()));
        for channel in alerts.map(|a| a.channels.values()).into_iter().flatten() {
            match &channel.kind {
                alerts::ChannelKind::Email { password: Some(s), .. }
                | alerts::ChannelKind::Webhook { secret: Some(s), .. } => all.push(s.expose()),
                alerts::ChannelKind::Slack { url } | alerts::ChannelKind::Teams { url } => all.push(url.expose()),
                _ => {}
            }
        }
        let mut all: Vec<String> = all.into_iter().filter(|s| !s.is_empty()).cloned().collect();
        all.sort_by_key(|s| std::cmp::Reverse(s.len()));
        all.dedup();
        all
    }

    /// The label of the configured credential kind, for status output.
    pub fn credential_kind(&self) -> &'static str {
        match &self.credential {
            Some(XyteCredential::ApiKey(_)) => "api key",
            Some(XyteCredential::UserToken(_)) => "user token",
            Some(XyteCredential::OAuth(_)) => "oauth token",
            None => "none",
        }
    }
}

/// Per-user places for `serve --demo`, so it needs no root.
fn apply_demo_defaults(layers: &mut Layers, env: &HashMap<String, String>) {
    let non_empty = |k: &str| env.get(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let local = PathBuf::from(".xyte-edge");
    let state = non_empty("XDG_STATE_HOME").map(|p| p.join("xyte-edge-demo")).unwrap_or_else(|| local.join("state"));
    let runtime = non_empty("XDG_RUNTIME_DIR").map(|p| p.join("xyte-edge-demo")).unwrap_or_else(|| local.clone());
    let set = |layers: &mut Layers, k: &'static str, v: String| {
        layers.values.insert(k, (v, Source::Demo));
    };
    set(layers, "XYTE_STATE_DIR", state.display().to_string());
    set(layers, "XYTE_MCP_SOCKET", runtime.join("mcp.sock").display().to_string());
    set(layers, "XYTE_PRESETS_FILE", state.join("presets.json").display().to_string());
    set(layers, "XYTE_ALERTS_FILE", state.join("alerts.json").display().to_string());
    set(layers, "XYTE_HTTP_LISTEN", "127.0.0.1:8443".into());
    set(layers, "XYTE_POLL_INTERVAL", "5".into());
    // The simulator is local and unmetered; a demo should not feel Xyte's production budget.
    set(layers, "XYTE_RATE_LIMIT", "600".into());
}

fn read_file_layer(
    layers: &mut Layers,
    opts: &LoadOptions,
    alias: &mut BTreeMap<&'static str, String>,
) -> Option<PathBuf> {
    let (path, explicit) = match &opts.path {
        Some(p) => (p.clone(), true),
        None if opts.demo => return None,
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            layers.warnings.push(format!("no config file at {}; using the environment and defaults", path.display()));
            return None;
        }
        Err(e) => {
            layers.problem("--config", format!("cannot read {}: {e}", path.display()));
            return None;
        }
    };
    let (assignments, syntax) = file::parse(&text);
    for s in syntax {
        layers.problem(&path.display().to_string(), s);
    }
    let mut holds_secret = false;
    for a in assignments {
        if let Some(k) = KEYS.iter().find(|k| k.name == a.key) {
            holds_secret |= k.secret && !a.value.is_empty();
            layers.values.insert(k.name, (a.value, Source::File(a.line)));
        } else if let Some(name) = ALIASES.iter().find(|n| **n == a.key) {
            // The environment may still override it, exactly like the real keys.
            alias.insert(name, a.value);
        } else if a.key.starts_with("XYTE_") {
            let suggestion =
                KEYS.iter().map(|k| (values::distance(&a.key, k.name), k.name)).min().filter(|(d, _)| *d <= 3);
            let hint = suggestion.map(|(_, n)| format!(" (did you mean {n}?)")).unwrap_or_default();
            layers.problem(&a.key, format!("unknown key in {} line {}{hint}", path.display(), a.line));
        } else {
            layers.warnings.push(format!(
                "{} line {}: {} is not a xyte-edge setting; ignored",
                path.display(),
                a.line,
                a.key
            ));
        }
    }
    if holds_secret && world_readable(&path) {
        layers.warnings.push(format!(
            "{} holds a secret and is readable by every user; run: chmod 0640 {}",
            path.display(),
            path.display()
        ));
    }
    Some(path)
}

fn world_readable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).map(|m| m.permissions().mode() & 0o004 != 0).unwrap_or(false)
}

/// Maps the predecessor's `MCP_INSPECTOR_HOST`/`PORT` onto `XYTE_HTTP_LOCAL_LISTEN` unless that was set explicitly.
fn apply_aliases(layers: &mut Layers, alias: &BTreeMap<&'static str, String>) {
    if alias.is_empty() {
        return;
    }
    let explicit = matches!(layers.values.get("XYTE_HTTP_LOCAL_LISTEN"), Some((_, Source::Env | Source::File(_))));
    if explicit {
        layers.warnings.push("MCP_INSPECTOR_HOST/PORT ignored: XYTE_HTTP_LOCAL_LISTEN is set".into());
        return;
    }
    let current = layers.get("XYTE_HTTP_LOCAL_LISTEN").to_string();
    let default = default_of("XYTE_HTTP_LOCAL_LISTEN");
    let (cur_host, cur_port) = current.rsplit_once(':').or(default.rsplit_once(':')).unwrap_or_default();
    let host = alias.get("MCP_INSPECTOR_HOST").map(String::as_str).unwrap_or(cur_host);
    let port = alias.get("MCP_INSPECTOR_PORT").map(String::as_str).unwrap_or(cur_port);
    let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_string() };
    layers.values.insert("XYTE_HTTP_LOCAL_LISTEN", (format!("{host}:{port}"), Source::Alias));
    layers
        .warnings
        .push("MCP_INSPECTOR_HOST/MCP_INSPECTOR_PORT are deprecated; set XYTE_HTTP_LOCAL_LISTEN instead".into());
}

fn build(
    layers: &mut Layers,
    opts: &LoadOptions,
    env: &HashMap<String, String>,
    config_file: Option<PathBuf>,
    need_credential: bool,
) -> Config {
    use values::*;
    let secs = Duration::from_secs;
    let credentials_dir = env.get("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty()).map(PathBuf::from);

    let credential = credential(layers, need_credential && !opts.demo, credentials_dir.as_deref());
    let webhook_secret = webhook_secret(layers, credentials_dir.as_deref());

    let base_url: String = layers.typed("XYTE_BASE_URL", |raw| {
        let url = raw.trim().trim_end_matches('/');
        match url.split_once("://") {
            Some(("https" | "http", rest)) if !rest.is_empty() && !rest.contains(char::is_whitespace) => Ok(url.into()),
            _ => Err("must be an http:// or https:// URL".into()),
        }
    });
    if base_url.starts_with("http://") && !is_loopback_url(&base_url) {
        layers.warnings.push(format!(
            "XYTE_BASE_URL {base_url} is plain http: the Xyte credential would cross the network unencrypted"
        ));
    }
    let cache_ttl = layers.typed("XYTE_CACHE_TTL", |r| duration_in(r, secs(1), secs(86_400)));
    let poll_interval = layers.typed("XYTE_POLL_INTERVAL", |r| match duration(r)? {
        d if d.is_zero() => Ok(None),
        d if d < secs(1) || d > secs(86_400) => Err("must be 0 (disabled) or between 1s and 1d".into()),
        d => Ok(Some(d)),
    });
    let rate_limit_per_min = layers.typed("XYTE_RATE_LIMIT", |r| integer_in(r, 1, 6000).map(|n| n as u32));
    let request_timeout = layers.typed("XYTE_REQUEST_TIMEOUT", |r| duration_in(r, secs(1), secs(300)));
    let env_label = layers.typed("XYTE_ENV", |r| {
        let r = r.trim();
        if r.is_empty() || r.len() > 64 || r.chars().any(char::is_control) {
            Err("must be 1 to 64 printable characters".into())
        } else {
            Ok(r.to_string())
        }
    });
    let log_filter = layers.typed("XYTE_LOG_LEVEL", log_filter);
    let log_format = layers.typed("XYTE_LOG_FORMAT", |r| match r.trim().to_ascii_lowercase().as_str() {
        "auto" => Ok(LogFormat::Auto),
        "journald" => Ok(LogFormat::Journald),
        "json" => Ok(LogFormat::Json),
        "text" => Ok(LogFormat::Text),
        _ => Err("must be auto, journald, json or text".into()),
    });
    let syslog = layers.typed("XYTE_SYSLOG", syslog_target);
    let state_dir = layers.typed("XYTE_STATE_DIR", |r| path(r, opts.demo));
    let mcp_socket = layers.typed("XYTE_MCP_SOCKET", |r| path(r, opts.demo));
    let mcp_socket_role = layers.typed("XYTE_MCP_SOCKET_ROLE", |r| r.parse());
    let allow_plaintext_lan = layers.typed("XYTE_ALLOW_PLAINTEXT_LAN", boolean);
    let http_listen = layers.typed("XYTE_HTTP_LISTEN", |r| list(r).iter().map(|a| socket_addr(a)).collect());
    let http_local_listen = layers.typed("XYTE_HTTP_LOCAL_LISTEN", |r| {
        let addrs: Vec<SocketAddr> = list(r).iter().map(|a| socket_addr(a)).collect::<Result<_, _>>()?;
        match addrs.iter().find(|a| !a.ip().is_loopback()) {
            Some(a) if !allow_plaintext_lan => {
                Err(format!("{a} is not a loopback address; plain HTTP on the LAN needs XYTE_ALLOW_PLAINTEXT_LAN=true"))
            }
            _ => Ok(addrs),
        }
    });
    let tls = tls_files(layers);
    let allowed_hosts = if layers.is_set("XYTE_ALLOWED_HOSTS") {
        list(layers.get("XYTE_ALLOWED_HOSTS")).into_iter().map(|h| h.to_ascii_lowercase()).collect()
    } else {
        let hosts = machine_hosts();
        layers.values.insert("XYTE_ALLOWED_HOSTS", (hosts.join(","), Source::Machine));
        hosts
    };
    let presets_file = layers.typed("XYTE_PRESETS_FILE", |r| path(r, opts.demo));
    let alerts_file = layers.typed("XYTE_ALERTS_FILE", |r| path(r, opts.demo));
    let backup = backup_schedule(layers, opts.demo);
    let schedule_grace = layers.typed("XYTE_SCHEDULE_GRACE", |r| duration_in(r, secs(1), secs(86_400)));
    let command_ttl = layers.typed("XYTE_COMMAND_TTL", |r| duration_in(r, secs(1), secs(7 * 86_400)));
    let outbox_max = layers.derived(
        "XYTE_OUTBOX_MAX",
        (default_outbox_max(rate_limit_per_min, command_ttl), "XYTE_RATE_LIMIT and XYTE_COMMAND_TTL"),
        |r| integer_in(r, 1, OUTBOX_MAX_LIMIT),
    );
    let outbox_max_per_device = layers.derived(
        "XYTE_OUTBOX_MAX_PER_DEVICE",
        (default_outbox_max_per_device(outbox_max), "XYTE_OUTBOX_MAX"),
        |r| match integer_in(r, 1, OUTBOX_MAX_LIMIT)? {
            n if n > outbox_max => Err(format!("must not be more than XYTE_OUTBOX_MAX ({outbox_max})")),
            n => Ok(n),
        },
    );
    let deliverable = u64::from(rate_limit_per_min) * command_ttl.as_secs() / 60;
    if layers.is_set("XYTE_OUTBOX_MAX") && outbox_max > deliverable {
        layers.warnings.push(format!(
            "XYTE_OUTBOX_MAX={outbox_max} is more than XYTE_RATE_LIMIT can deliver within XYTE_COMMAND_TTL even with the \
             whole budget ({deliverable}): commands acknowledged into a full outbox would expire undelivered"
        ));
    }
    let event_retention_days = layers.typed("XYTE_EVENT_RETENTION_DAYS", |r| integer_in(r, 1, 3650).map(|n| n as u32));
    let event_retention_rows = layers.typed("XYTE_EVENT_RETENTION_ROWS", |r| integer_in(r, 1000, 100_000_000));
    let read_only = layers.typed("XYTE_READ_ONLY", boolean);
    let plugins = layers.typed("XYTE_PLUGINS", |r| list(r).iter().map(|p| plugin(p)).collect());
    let experimental_apis = layers.typed("XYTE_EXPERIMENTAL_APIS", boolean);
    let max_connections = layers.typed("XYTE_MAX_CONNECTIONS", |r| integer_in(r, 1, 65_535).map(|n| n as usize));
    let mqtt = mqtt::mqtt(layers, &host_name());
    // The uplink makes XYTE_SITE topic-safe; without it the value (or the host name) only names the gateway in alerts.
    let site = match &mqtt {
        Some(m) => m.site.clone(),
        None => Some(layers.get("XYTE_SITE").trim().to_string()).filter(|s| !s.is_empty()).unwrap_or_else(host_name),
    };

    let effective = KEYS
        .iter()
        .map(|k| {
            let raw = layers.get(k.name);
            let value = if k.secret && !raw.is_empty() { "***".to_string() } else { raw.to_string() };
            Effective { key: k.name, value, source: layers.source(k.name) }
        })
        .collect();

    Config {
        demo: opts.demo,
        config_file,
        credential,
        base_url,
        cache_ttl,
        poll_interval,
        rate_limit_per_min,
        request_timeout,
        env_label,
        log_filter,
        log_format,
        syslog,
        state_dir,
        mcp_socket,
        mcp_socket_role,
        http_listen,
        http_local_listen,
        allow_plaintext_lan,
        tls,
        allowed_hosts,
        webhook_secret,
        presets_file,
        alerts_file,
        backup,
        schedule_grace,
        command_ttl,
        outbox_max,
        outbox_max_per_device,
        event_retention_days,
        event_retention_rows,
        read_only,
        plugins,
        experimental_apis,
        max_connections,
        mqtt,
        site,
        effective,
        warnings: std::mem::take(&mut layers.warnings),
    }
}

/// The largest outbox limit accepted (and derived): the admission check counts the queue on every command.
const OUTBOX_MAX_LIMIT: u64 = 1_000_000;

/// The default `XYTE_OUTBOX_MAX`: what the upstream budget can deliver within the TTL at half the rate, at least 1.
/// Half, because the same token bucket also serves the tracking of delivered commands, interactive reads and (when it
/// waited long enough) polling; a full outbox must still drain before its last command expires. With the defaults
/// (60/min, 600 s): 300.
pub fn default_outbox_max(rate_limit_per_min: u32, command_ttl: Duration) -> u64 {
    (u64::from(rate_limit_per_min) * command_ttl.as_secs() / 120).clamp(1, OUTBOX_MAX_LIMIT)
}

/// The default `XYTE_OUTBOX_MAX_PER_DEVICE`: a tenth of the outbox, so one flooded device leaves room for at least
/// nine others; at least 10, enough for a room preset's worth of commands; never more than the outbox. A device
/// runs its commands one after another, so a deeper queue for one device only delays the next command sent to it.
/// With the defaults: 30.
pub fn default_outbox_max_per_device(outbox_max: u64) -> u64 {
    (outbox_max / 10).max(10).min(outbox_max)
}

/// Reads a secret from a file: trailing newlines trimmed, empty refused, the content never echoed.
fn read_secret_file(path: &Path) -> Result<Secret<String>, String> {
    use std::io::Read;
    // A key is a few hundred bytes; the bound keeps a mistake (`/dev/zero`, a log file) from eating the memory.
    const MAX: u64 = 64 * 1024;
    let cannot = |e: std::io::Error| format!("cannot read secret file {}: {e}", path.display());
    let mut text = String::new();
    std::fs::File::open(path).and_then(|f| f.take(MAX + 1).read_to_string(&mut text)).map_err(cannot)?;
    if text.len() as u64 > MAX {
        return Err(format!("secret file {} is larger than {MAX} bytes; is it the right file?", path.display()));
    }
    let value = text.trim_end_matches(['\n', '\r']).to_string();
    if value.trim().is_empty() {
        return Err(format!("secret file {} is empty", path.display()));
    }
    Ok(Secret::new(value))
}

/// The API key comes from exactly one of `XYTE_API_KEY`, `XYTE_API_KEY_FILE` or `$CREDENTIALS_DIRECTORY/xyte-api-key`.
/// `required` is false in demo mode (the simulator's key is used) and for local commands.
fn credential(layers: &mut Layers, required: bool, credentials_dir: Option<&Path>) -> Option<XyteCredential> {
    let secret_value = |layers: &Layers, k: &str| {
        let v = layers.get(k);
        (!v.trim().is_empty()).then(|| Secret::new(v.trim().to_string()))
    };
    let mut api_key = secret_value(layers, "XYTE_API_KEY");
    if layers.is_set("XYTE_API_KEY_FILE") {
        if api_key.is_some() {
            layers.problem("XYTE_API_KEY_FILE", "set either XYTE_API_KEY or XYTE_API_KEY_FILE, not both");
        } else {
            match read_secret_file(Path::new(layers.get("XYTE_API_KEY_FILE").trim())) {
                Ok(s) => api_key = Some(s),
                Err(e) => layers.problem("XYTE_API_KEY_FILE", e),
            }
        }
    } else if api_key.is_none()
        && let Some(dir) = credentials_dir
    {
        let path = dir.join("xyte-api-key");
        if path.exists() {
            match read_secret_file(&path) {
                Ok(s) => {
                    api_key = Some(s);
                    layers.values.insert("XYTE_API_KEY", ("(systemd credential)".into(), Source::Env));
                }
                Err(e) => layers.problem("CREDENTIALS_DIRECTORY", e),
            }
        }
    }
    let user = secret_value(layers, "XYTE_USER_TOKEN");
    let oauth = secret_value(layers, "XYTE_OAUTH_TOKEN");
    if let Some(token) = &oauth
        && !token.expose().starts_with("xoat_")
    {
        layers.warnings.push("XYTE_OAUTH_TOKEN does not start with xoat_; Xyte access tokens do".into());
    }
    let chosen = user
        .map(XyteCredential::UserToken)
        .or(oauth.map(XyteCredential::OAuth))
        .or(api_key.map(XyteCredential::ApiKey));
    if chosen.is_none() && required {
        layers.problem(
            "XYTE_API_KEY",
            "no Xyte credential: set XYTE_API_KEY (or XYTE_API_KEY_FILE, a systemd credential named xyte-api-key, \
             XYTE_USER_TOKEN or XYTE_OAUTH_TOKEN); create a key at https://app.xyte.io/settings/api_keys",
        );
    }
    chosen
}

fn webhook_secret(layers: &mut Layers, credentials_dir: Option<&Path>) -> Option<Secret<String>> {
    let secret = match secret_setting(layers, "XYTE_WEBHOOK_SECRET", "XYTE_WEBHOOK_SECRET_FILE") {
        Some(given) => given,
        None => credentials_dir
            .map(|d| d.join("webhook-secret"))
            .filter(|p| p.exists())
            .and_then(|p| read_secret_file(&p).map_err(|e| layers.problem("CREDENTIALS_DIRECTORY", e)).ok()),
    };
    if let Some(s) = &secret
        && s.expose().len() < 16
    {
        layers.problem("XYTE_WEBHOOK_SECRET", "must be at least 16 characters (use e.g. `openssl rand -hex 32`)");
    }
    secret
}

/// A secret given as `key` or read from the file `file_key` names (one of them, not both): `None` when neither is
/// set, `Some(None)` when what was set is unusable (the problem is recorded).
fn secret_setting(layers: &mut Layers, key: &'static str, file_key: &'static str) -> Option<Option<Secret<String>>> {
    let direct = layers.get(key).trim().to_string();
    let from_file = layers.get(file_key).trim().to_string();
    match (direct.is_empty(), from_file.is_empty()) {
        (false, false) => {
            layers.problem(file_key, format!("set either {key} or {file_key}, not both"));
            Some(None)
        }
        (false, true) => Some(Some(Secret::new(direct))),
        (true, false) => Some(read_secret_file(Path::new(&from_file)).map_err(|e| layers.problem(file_key, e)).ok()),
        (true, true) => None,
    }
}

fn backup_schedule(layers: &mut Layers, demo: bool) -> Option<BackupSchedule> {
    use values::{duration_in, integer_in};
    let secs = Duration::from_secs;
    let interval = layers.typed("XYTE_BACKUP_INTERVAL", |r| duration_in(r, secs(1), secs(365 * 86_400)));
    let keep = layers.typed("XYTE_BACKUP_KEEP", |r| integer_in(r, 1, 1000).map(|n| n as usize));
    let raw = layers.get("XYTE_BACKUP_DIR").to_string();
    if raw.trim().is_empty() {
        return None;
    }
    match path(&raw, demo) {
        Ok(dir) => Some(BackupSchedule { dir, interval, keep }),
        Err(why) => {
            layers.bad_value("XYTE_BACKUP_DIR", why);
            None
        }
    }
}

fn tls_files(layers: &mut Layers) -> Option<TlsFiles> {
    let cert = layers.get("XYTE_TLS_CERT").trim().to_string();
    let key = layers.get("XYTE_TLS_KEY").trim().to_string();
    match (cert.is_empty(), key.is_empty()) {
        (true, true) => None,
        (false, true) => {
            layers.problem("XYTE_TLS_KEY", "XYTE_TLS_CERT is set, so XYTE_TLS_KEY must be set too");
            None
        }
        (true, false) => {
            layers.problem("XYTE_TLS_CERT", "XYTE_TLS_KEY is set, so XYTE_TLS_CERT must be set too");
            None
        }
        (false, false) => {
            for (k, p) in [("XYTE_TLS_CERT", &cert), ("XYTE_TLS_KEY", &key)] {
                if let Err(e) = std::fs::File::open(p) {
                    layers.problem(k, format!("cannot read {p}: {e}"));
                }
            }
            Some(TlsFiles { cert: cert.into(), key: key.into() })
        }
    }
}

/// Level names (any case, `WARNING` too, as the predecessor accepted) or per-module levels
/// (`info,xyte_edge::uplink=debug`: tracing-subscriber's `Targets`, without the regular expressions of its
/// `EnvFilter`, which cost 270 KiB of binary for span and field filters nobody running a gateway needs).
fn log_filter(raw: &str) -> Result<String, String> {
    const MUST: &str = "must be error, warn, info, debug, trace, or per-module levels such as info,xyte_edge=debug";
    // A filter is ASCII (levels, module paths, `=`, `,`). Each directive is trimmed here because tracing-subscriber
    // 0.3.23's EnvFilter sliced a directive at positions found in its trimmed copy (leading white space before a
    // multi-byte character made it panic, found by the `config` fuzz target); refusing non-ASCII keeps that shut.
    if !raw.is_ascii() || raw.chars().any(|c| c.is_ascii_control()) {
        return Err(format!("{MUST} (letters, digits and punctuation only)"));
    }
    let lower = raw.to_ascii_lowercase();
    let normalised = match lower.trim() {
        "warning" => "warn".to_string(),
        "critical" | "fatal" => "error".to_string(),
        _ => lower.split(',').map(str::trim).collect::<Vec<_>>().join(","),
    };
    normalised.parse::<tracing_subscriber::filter::Targets>().map(|_| normalised).map_err(|_| MUST.into())
}

fn syslog_target(raw: &str) -> Result<Option<SyslogTarget>, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let addr = |rest: &str| -> Result<String, String> {
        match rest.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => Ok(rest.to_string()),
            _ => Err("expected host:port after the scheme, e.g. udp://10.0.0.5:514".into()),
        }
    };
    if raw == "unix" {
        Ok(Some(SyslogTarget::Unix))
    } else if let Some(rest) = raw.strip_prefix("udp://") {
        Ok(Some(SyslogTarget::Udp(addr(rest)?)))
    } else if let Some(rest) = raw.strip_prefix("tcp://") {
        Ok(Some(SyslogTarget::Tcp(addr(rest)?)))
    } else {
        Err("must be unix, udp://host:port or tcp://host:port".into())
    }
}

/// Paths must be absolute for the service (its working directory is `/`); demo mode may use relative ones.
fn path(raw: &str, demo: bool) -> Result<PathBuf, String> {
    let p = PathBuf::from(raw.trim());
    if raw.trim().is_empty() {
        Err("must not be empty".into())
    } else if !p.is_absolute() && !demo {
        Err("must be an absolute path".into())
    } else {
        Ok(p)
    }
}

fn plugin(raw: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let p = PathBuf::from(raw);
    match std::fs::metadata(&p) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(p),
        Ok(_) => Err(format!("plugin {raw} is not an executable file")),
        Err(e) => Err(format!("plugin {raw}: {e}")),
    }
}

fn is_loopback_url(url: &str) -> bool {
    let host = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let host = host.split('/').next().unwrap_or("");
    let host = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    is_loopback_host(host.trim_matches(['[', ']']))
}

/// `localhost` or a loopback address (an IPv6 one without its brackets).
fn is_loopback_host(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// This machine's name (`gateway` when it has none).
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|n| n.into_string().ok())
        .filter(|n| !n.is_empty())
        .unwrap_or("gateway".into())
}

/// The default Host allow-list: this machine's name, `localhost` and every local address.
pub fn machine_hosts() -> Vec<String> {
    let mut hosts = vec!["localhost".to_string()];
    if let Ok(name) = nix::unistd::gethostname()
        && let Some(name) = name.to_str()
    {
        hosts.push(name.to_ascii_lowercase());
    }
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let Some(sa) = a.address else { continue };
            if let Some(v4) = sa.as_sockaddr_in() {
                hosts.push(v4.ip().to_string());
            } else if let Some(v6) = sa.as_sockaddr_in6() {
                hosts.push(format!("[{}]", v6.ip()));
            }
        }
    }
    hosts.sort();
    hosts.dedup();
    hosts
}

#[cfg(test)]
mod tests;
