//! The command line: subcommands, their flags, and the small commands that need no daemon.

pub mod backup;
pub mod diagnose;
pub mod token;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError, LoadOptions};
use crate::exit;

#[derive(Debug, Parser)]
#[command(
    name = "xyte-edge",
    about = "Edge daemon for a Xyte organization: local cache, event log, MCP and command outbox"
)]
#[command(disable_version_flag = true)]
pub struct Cli {
    /// Print version and build information.
    #[arg(short = 'V', long = "version", global = false)]
    pub version: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve {
        /// Configuration file (default /etc/xyte-edge/xyte-edge.conf).
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Run against a built-in simulated organization: no API key, no root, files under a per-user directory.
        #[arg(long)]
        demo: bool,
    },
    /// Serve a simulated Xyte Organization API on loopback (for development and tests).
    Sim {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8787", value_name = "ADDR")]
        listen: SocketAddr,
        /// Number of devices in the generated organization.
        #[arg(long, default_value_t = 40, value_name = "N")]
        devices: usize,
        /// Seed for the generated organization and its behaviour over time.
        #[arg(long, default_value_t = 1, value_name = "S")]
        seed: u64,
        /// Faults to inject, e.g. "latency=200ms,error_rate=0.3,rate_429=0.1,retry_after=2,pagination=next_page".
        #[arg(long, value_name = "SPEC")]
        faults: Option<String>,
    },
    /// Bridge stdio to the daemon's MCP socket, for agents that launch MCP servers as commands.
    Mcp {
        /// The daemon's socket (default: $XYTE_MCP_SOCKET, else /run/xyte-edge/mcp.sock).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Ask the running daemon (over its socket) for a health summary.
    Status {
        /// The daemon's socket (default: $XYTE_MCP_SOCKET, else /run/xyte-edge/mcp.sock).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Validate the configuration and print the effective values (secrets masked). Exit 0, or 78 with every problem.
    CheckConfig {
        /// Configuration file (default /etc/xyte-edge/xyte-edge.conf).
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Manage the bearer tokens LAN clients use (REST, MCP over HTTP, events). Works while the daemon runs.
    Token {
        #[command(subcommand)]
        command: token::TokenCommand,
    },
    /// Write a support bundle to attach to a ticket: one plain-text file, nothing secret in it.
    ///
    /// Version, configuration (secrets masked), the daemon's status, readiness, metrics, database statistics, recent
    /// warnings from the journal and the unit's state. Exit 0 once the file is written, also when the daemon is down.
    Diagnose {
        /// Configuration file (default /etc/xyte-edge/xyte-edge.conf).
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Where to write the bundle (`-` for stdout; default xyte-edge-diagnose-HOST-TIME.txt here).
        #[arg(long, value_name = "FILE")]
        to: Option<PathBuf>,
    },
    /// Write a backup: a consistent copy of the database (taken while the daemon runs) and the configuration files,
    /// as one file (mode 0600) to copy off the box. Secrets are left out unless --with-secrets.
    Backup {
        /// Configuration file (default /etc/xyte-edge/xyte-edge.conf).
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Where to write it (default xyte-edge-HOST-TIME.backup here). Its path is printed on stdout.
        #[arg(long, value_name = "FILE")]
        to: Option<PathBuf>,
        /// Include the secrets: the API key and other secret settings, secret files and the TLS key.
        #[arg(long)]
        with_secrets: bool,
    },
    /// Restore a backup into the state directory (stop the daemon first). The database it replaces is kept aside.
    ///
    /// The file is checked first (whole, undamaged, made by xyte-edge, a schema this release can upgrade); a bad file
    /// changes nothing. Configuration files are restored only with --with-config.
    Restore {
        /// The backup file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Configuration file (default /etc/xyte-edge/xyte-edge.conf); its XYTE_STATE_DIR is restored into.
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Also write the configuration files back (a replaced file is kept as NAME.before-restore-TIME; one whose
        /// secrets were left out of the backup never replaces an existing file).
        #[arg(long)]
        with_config: bool,
    },
    /// Print version and build information.
    Version,
}

/// Parses the arguments; usage errors exit 64 (EX_USAGE) rather than clap's 2, help and version exit 0.
pub fn parse() -> Result<Cli, ExitCode> {
    Cli::try_parse().map_err(|e| {
        let _ = e.print();
        if e.use_stderr() { ExitCode::from(exit::USAGE) } else { ExitCode::from(exit::OK) }
    })
}

/// The socket `mcp` and `status` talk to: the flag, else `XYTE_MCP_SOCKET`, else the packaged default.
pub fn socket_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("XYTE_MCP_SOCKET").filter(|v| !v.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(crate::mcp::bridge::DEFAULT_SOCKET))
}

pub fn version_text() -> String {
    format!(
        "xyte-edge {} ({}-{}; SQLite {}; TLS rustls with ring)",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH,
        std::env::consts::OS,
        rusqlite::version()
    )
}

/// Loads configuration, printing every problem to stderr; `Err` carries exit code 78.
pub fn load_config(opts: &LoadOptions) -> Result<Config, ExitCode> {
    Config::load(opts).map_err(|e| config_failed(opts, &e))
}

/// Prints every configuration problem and where the file is; returns exit code 78.
pub fn config_failed(opts: &LoadOptions, e: &ConfigError) -> ExitCode {
    eprint!("xyte-edge: {e}");
    if let Some(path) =
        opts.path.as_ref().or((!opts.demo).then_some(&PathBuf::from(crate::config::DEFAULT_CONFIG_PATH)))
    {
        eprintln!("(configuration file: {}; see `xyte-edge check-config --help`)", path.display());
    }
    ExitCode::from(exit::CONFIG)
}

/// `check-config`: the effective configuration, secrets masked, with where each value came from.
pub fn check_config(path: Option<PathBuf>) -> ExitCode {
    let config = match load_config(&LoadOptions { path, demo: false }) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for w in &config.warnings {
        eprintln!("warning: {w}");
    }
    let lines = effective_lines(&config);
    let (presets, mut problems) = presets_report(&config.presets_file);
    let (alerts, alert_problems) = alerts_report(&config.alerts_file);
    problems.extend(alert_problems.iter().map(|p| format!("alerts file: {p}")));
    for p in &problems {
        eprintln!("error: {p}");
    }
    let verdict = match problems.len() {
        0 => format!("# configuration ok; Xyte credential: {}", config.credential_kind()),
        n => format!(
            "# {n} problem(s) in {} or {} (listed on stderr)",
            config.presets_file.display(),
            config.alerts_file.display()
        ),
    };
    print_lines(lines.into_iter().chain(presets).chain(alerts).chain([verdict]));
    ExitCode::from(if problems.is_empty() { exit::OK } else { exit::CONFIG })
}

/// Every effective value with where it came from, one aligned line each (secrets are masked in `effective` already).
fn effective_lines(config: &Config) -> Vec<String> {
    let width = config.effective.iter().map(|e| e.key.len()).max().unwrap_or(0);
    config.effective.iter().map(|e| format!("{:width$} = {:40} # {}", e.key, e.value, e.source)).collect()
}

/// The presets file as `check-config` shows it: its rooms and schedules, each schedule with its next three run times
/// in its own zone, and every problem found (a broken file, a schedule entry that would not load).
fn presets_report(path: &std::path::Path) -> (Vec<String>, Vec<String>) {
    let presets = match crate::config::presets::Presets::load(path) {
        Ok(p) => p,
        Err(e) => return (vec![], vec![e]),
    };
    let mut lines = vec![format!(
        "# room presets: {}: {} rooms, {} schedules",
        path.display(),
        presets.rooms.len(),
        presets.schedules.len()
    )];
    let now = crate::store::now_ms();
    for s in &presets.schedules {
        let next: Vec<String> = crate::ops::schedules::next_runs(s, &presets.holidays, now, 3)
            .into_iter()
            .filter_map(|t| crate::ops::schedules::local_time(t, s.when.timezone()))
            .collect();
        let state = if s.enabled { format!("next {}", next.join(", ")) } else { "disabled".into() };
        lines.push(format!("#   schedule {}: {} / {}, {}; {state}", s.name, s.room, s.preset, s.describe()));
    }
    (lines, presets.problems.clone())
}

/// The alerts file as `check-config` shows it: each channel (type, hourly budget, no secrets) and rule (condition,
/// severity, channels), and every problem, each naming its rule or channel.
fn alerts_report(path: &std::path::Path) -> (Vec<String>, Vec<String>) {
    let rules = match crate::config::alerts::AlertRules::load(path) {
        Ok(r) => r,
        Err(e) => return (vec![], vec![e]),
    };
    if !path.exists() {
        return (vec![format!("# alerts: {} does not exist: no alerts", path.display())], vec![]);
    }
    let mut lines =
        vec![format!("# alerts: {}: {} channels, {} rules", path.display(), rules.channels.len(), rules.rules.len())];
    for c in rules.channels.values() {
        lines.push(format!("#   channel {}: {}, at most {} messages an hour", c.name, c.kind.type_name(), c.per_hour));
    }
    for r in &rules.rules {
        lines.push(format!(
            "#   rule {}: {}, {}, to {}",
            r.name,
            r.condition.name(),
            r.severity.as_str(),
            if r.channels.is_empty() { "no channel".into() } else { r.channels.join(", ") }
        ));
    }
    (lines, rules.problems)
}

/// Prints lines to stdout, stopping quietly when the reader has gone (`check-config | head`): `println!` would
/// panic on the broken pipe, since Rust programs ignore SIGPIPE.
pub fn print_lines(lines: impl IntoIterator<Item = String>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for line in lines {
        if writeln!(out, "{line}").is_err() {
            return;
        }
    }
}
