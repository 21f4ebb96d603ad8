//! Wiring for `serve`: open the store, build the Xyte client, start background tasks under one cancellation token
//! and task tracker, tell systemd, and shut down in order on SIGTERM/SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::presets::Presets;
use crate::config::{Config, LoadOptions, Secret, XyteCredential};
use crate::runtime::{App, OutboxLimits};
use crate::store::Store;
use crate::store::lock::StateLock;
use crate::sync::poller::Poller;
use crate::systemd::{self, Heartbeat};
use crate::xyte::{ClientConfig, XyteClient};
use crate::{cli, exit, mcp, ops, sim, telemetry};

/// How long in-flight work may take to finish after SIGTERM; below systemd's default `TimeoutStopSec` of 90 s and
/// well below the 5 s an operator waits at a terminal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

/// The tokio runtime, built by hand: two workers suit the small boxes this runs on. The blocking pool (store scans,
/// the upstream client's requests) is capped well below tokio's 512: a burst of work then queues for a thread
/// instead of starting hundreds, each keeping its stack and allocator caches resident.
///
/// The runtime is handed out only once both workers run. glibc ties a thread to an arena (and its lock) at the
/// thread's first allocation, taking the arenas in turn once `MALLOC_ARENA_MAX` of them exist (the unit sets 2).
/// tokio starts its workers as tasks of the blocking pool, and a thread started for the first `spawn_blocking`
/// (opening the store) sometimes took the second worker's task first: in about one start in ten the two workers
/// then shared one arena, and every call under concurrency cost about twice the CPU, waiting for its lock
/// (BENCHMARKS.md; seen with gdb, `thread_arena` of each thread). With nothing else started until both run, the
/// workers are the pool's first two threads and take different arenas.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    const WORKERS: usize = 2;
    thread_local! {
        static RUNNING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    let (ran, running) = std::sync::mpsc::channel();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .max_blocking_threads(64)
        .thread_name("xyte-edge")
        // Only workers park; each says so the first time (a worker with nothing to do parks at once).
        .on_thread_park(move || {
            if !RUNNING.replace(true) {
                let _ = ran.send(());
            }
        })
        .enable_all()
        .build()?;
    // Bounded: the order only matters for speed, and a start must never hang on it.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    for _ in 0..WORKERS {
        if running.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())).is_err() {
            break;
        }
    }
    Ok(runtime)
}

/// A start-up failure: what to print and which sysexits code to leave with.
#[derive(Debug)]
pub struct Fatal {
    pub code: u8,
    pub message: String,
}

impl Fatal {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Fatal { code, message: message.into() }
    }
}

/// `xyte-edge serve [--config PATH] [--demo]`.
pub fn serve(config_path: Option<PathBuf>, demo: bool) -> ExitCode {
    let config = match cli::load_config(&LoadOptions { path: config_path, demo }) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for note in telemetry::init(&config) {
        tracing::warn!("{note}");
    }
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let result = runtime().map_err(|e| Fatal::new(exit::SOFTWARE, format!("cannot start the runtime: {e}")));
    let code = match result.and_then(|rt| rt.block_on(run(config))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(fatal) => {
            tracing::error!("{}", fatal.message);
            eprintln!("xyte-edge: {}", fatal.message);
            ExitCode::from(fatal.code)
        }
    };
    crate::log_writer::flush();
    code
}

/// Runs the daemon until SIGTERM/SIGINT. Everything started here is stopped here, in reverse order.
pub async fn run(mut config: Config) -> Result<(), Fatal> {
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let mut signals = Signals::install()?;

    let demo = if config.demo { Some(start_demo_simulator(&mut config).await?) } else { None };

    let state_dir = config.state_dir.clone();
    // Held until `run` returns: `restore` refuses while it is, and so does a second daemon on the same directory.
    let (_state_lock, store) = tokio::task::spawn_blocking(move || {
        crate::store::prepare_dir(&state_dir).map_err(|e| store_fatal(&state_dir, e))?;
        let lock = StateLock::acquire(&state_dir, true).map_err(|e| Fatal::new(exit::TEMPFAIL, e.to_string()))?;
        let store = Store::open(&state_dir, Default::default()).map_err(|e| store_fatal(&state_dir, e))?;
        Ok::<_, Fatal>((lock, store))
    })
    .await
    .map_err(|e| Fatal::new(exit::SOFTWARE, format!("store start-up panicked: {e}")))??;

    let client = XyteClient::new(client_config(&config)?).map_err(|e| Fatal::new(exit::CONFIG, e.to_string()))?;
    let mut app = App {
        read_only: config.read_only,
        command_ttl: config.command_ttl,
        outbox_limits: OutboxLimits::new(config.outbox_max, config.outbox_max_per_device, config.rate_limit_per_min),
        env_label: config.env_label.clone(),
        experimental_apis: config.experimental_apis,
        presets: std::sync::RwLock::new(Arc::new(Presets::load_or_report(&config.presets_file))),
        schedule_grace: config.schedule_grace,
        alerts: std::sync::RwLock::new(Arc::new(crate::alerter::load(&config.alerts_file))),
        site: config.site.clone(),
        ..App::new(store.clone(), client.clone())
    };
    app.cache.ttl = config.cache_ttl;
    // Until the first sync of this run, what the database holds is the truth (a restart while Xyte is unreachable
    // serves a warm cache, and says so, rather than "nothing cached yet").
    match store.read(crate::store::cache::device_summary).await {
        Ok((devices, online, newest)) => app.sync.update(|s| {
            (s.devices, s.online, s.last_ok_ms) = (devices, online, newest);
        }),
        Err(e) => tracing::warn!("cannot read the cached devices: {e}"),
    }
    let app = Arc::new(app);
    // Every listener is bound before READY=1, so a client started after systemd says "ready" finds it.
    let connections = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
    let socket = mcp::unix::bind(&config.mcp_socket).map_err(|e| {
        let code =
            if e.kind() == std::io::ErrorKind::PermissionDenied { exit::NO_PERMISSION } else { exit::UNAVAILABLE };
        Fatal::new(code, format!("cannot serve MCP on {}: {e}", config.mcp_socket.display()))
    })?;
    tracing::info!(socket = %config.mcp_socket.display(), "MCP socket ready");
    // A test switch read straight from the environment (exactly `1`), deliberately not a configuration key.
    let mcp_extension = mcp::extension(std::env::var("XYTE_CONFORMANCE_FIXTURES").is_ok_and(|v| v == "1"));
    tasks.spawn(mcp::unix::serve(
        socket,
        config.mcp_socket.clone(),
        app.clone(),
        mcp_extension.clone(),
        config.mcp_socket_role,
        connections.clone(),
        shutdown.clone(),
    ));
    let forward_beat = Heartbeat::new("forwarder");
    let http = crate::http::start(
        &config,
        app.clone(),
        mcp_extension,
        vec![store.heartbeat(), forward_beat.clone()],
        connections,
        &tasks,
        &shutdown,
    )
    .await
    .map_err(|e| Fatal::new(exit::UNAVAILABLE, e))?;
    if demo.is_some() {
        print_demo_http(&http);
        print_demo_token(&store).await;
    }

    let poll_beat = Heartbeat::new("poller");
    let mut heartbeats = vec![store.heartbeat(), poll_beat.clone()];
    let mut reports = None;
    if let Some(interval) = config.poll_interval {
        let poller = Poller::new(app.clone(), interval, poll_beat);
        reports = Some(poller.reports());
        tasks.spawn(poller.run(shutdown.clone()));
    } else {
        heartbeats.pop();
        tracing::info!("XYTE_POLL_INTERVAL=0: background polling is disabled");
    }
    heartbeats.push(forward_beat.clone());
    tasks.spawn(crate::sync::forwarder::Forwarder::new(app.clone(), forward_beat).run(shutdown.clone()));
    let limits =
        crate::sync::retention::Limits { days: config.event_retention_days, rows: config.event_retention_rows };
    tasks.spawn(crate::sync::retention::run(store.clone(), limits, shutdown.clone()));
    tasks.spawn(systemd::run_watchdog(heartbeats, shutdown.clone()));
    crate::plugins::start(&config.plugins, &app.bus, &tasks, &shutdown);
    if let Some(mqtt) = config.mqtt.clone() {
        crate::uplink::start(mqtt, app.clone(), &tasks, &shutdown).map_err(|e| Fatal::new(exit::CONFIG, e))?;
    }
    tasks.spawn(report_status(app.clone(), shutdown.clone()));
    let caches = store.clone();
    tasks.spawn(crate::heap::trim_after_bursts(shutdown.clone(), move || {
        let caches = caches.clone();
        async move { caches.release_page_caches().await }
    }));
    // Due times that passed while the daemon was down are fired or skipped before it reports ready.
    let scheduler = crate::scheduler::Scheduler::new(app.clone(), Arc::new(crate::scheduler::SystemClock));
    if let Err(e) = scheduler.catch_up().await {
        tracing::warn!("room schedules: {e}");
    }
    tasks.spawn(scheduler.run(shutdown.clone()));
    crate::alerter::start(app.clone(), &tasks, &shutdown);
    crate::backup::periodic::start(&config, &tasks, &shutdown);

    let summary = format!("serving {} ({})", config.base_url, config.env_label);
    systemd::ready(&summary);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), state_dir = %config.state_dir.display(), "ready: {summary}");
    if let (Some(_), Some(reports)) = (&demo, reports.clone()) {
        tasks.spawn(print_demo_progress(reports, shutdown.clone()));
    }

    signals
        .wait_for_stop(|| {
            ops::rooms::reload(&app);
            crate::alerter::reload(&app);
            if let Some(c) = &http.certificate {
                c.reload();
            }
        })
        .await;
    systemd::stopping();
    tracing::info!("stopping");
    shutdown.cancel();
    tasks.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tasks.wait()).await.is_err() {
        tracing::warn!("background tasks did not finish within {SHUTDOWN_GRACE:?}; stopping anyway");
    }
    let closing = store.clone();
    let _ = tokio::task::spawn_blocking(move || closing.close()).await;
    if let Some(sim) = demo {
        sim.shutdown.cancel();
    }
    tracing::info!("stopped");
    Ok(())
}

/// Keeps systemd's `STATUS=` (the line `systemctl status` shows) current: whether Xyte is reachable, the fleet, the
/// outbox and, when configured, the MQTT uplink. Sent only when it changes.
async fn report_status(app: Arc<App>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut last = String::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let sync = app.sync.get();
        let xyte = match sync.reachable {
            None => "connecting to Xyte".to_string(),
            Some(true) => format!("Xyte reachable, {} devices ({} online)", sync.devices, sync.online),
            Some(false) => match crate::cache::rfc3339(sync.last_ok_ms) {
                Some(at) => format!("Xyte UNREACHABLE, serving the cache from {at} ({} devices)", sync.devices),
                None => "Xyte UNREACHABLE, nothing cached yet".to_string(),
            },
        };
        let outbox = match app.store.read(crate::store::tasks::outbox_depth).await {
            Ok(n) => format!("{n} commands queued"),
            Err(e) => format!("store error: {e}"),
        };
        let uplink = match app.uplink() {
            Some(u) if u.connected => "; MQTT uplink connected",
            Some(_) => "; MQTT uplink DISCONNECTED",
            None => "",
        };
        let line = format!("{xyte}; {outbox}{uplink}");
        if line != last {
            systemd::status(&line);
            last = line;
        }
    }
}

fn client_config(config: &Config) -> Result<ClientConfig, Fatal> {
    let credential = match config.credential.clone() {
        Some(c) => c,
        None => return Err(Fatal::new(exit::CONFIG, "no Xyte credential configured")),
    };
    Ok(ClientConfig {
        base_url: config.base_url.clone(),
        credential,
        request_timeout: config.request_timeout,
        rate_limit_per_min: config.rate_limit_per_min,
    })
}

fn store_fatal(state_dir: &std::path::Path, e: crate::store::StoreError) -> Fatal {
    let text = e.to_string();
    let code = match e {
        // A file from a newer release: installing that release (or restoring a backup) is the fix, as for a bad
        // setting.
        crate::store::StoreError::TooNew { .. } => exit::CONFIG,
        _ if text.contains("ermission denied") => exit::NO_PERMISSION,
        _ => exit::SOFTWARE,
    };
    Fatal::new(code, format!("cannot open the store in {}: {text}", state_dir.display()))
}

/// `--demo`: an in-process simulator on a loopback port, and the client pointed at it.
async fn start_demo_simulator(config: &mut Config) -> Result<sim::SimHandle, Fatal> {
    let opts = sim::SimOptions::default();
    let (devices, seed) = (opts.devices, opts.seed);
    let handle = sim::spawn("127.0.0.1:0".parse().expect("literal address"), opts)
        .await
        .map_err(|e| Fatal::new(exit::UNAVAILABLE, format!("cannot start the demo simulator: {e}")))?;
    config.base_url = handle.base_url();
    config.credential = Some(XyteCredential::ApiKey(Secret::new(handle.sim.api_key().to_string())));
    println!("xyte-edge {} demo", env!("CARGO_PKG_VERSION"));
    println!("  simulated Xyte org: {} ({devices} devices, seed {seed})", config.base_url);
    println!("  state (SQLite):     {}", config.state_dir.join(crate::store::DB_FILE).display());
    println!(
        "  polling every:      {}",
        config.poll_interval.map(crate::config::values::human).unwrap_or("off".into())
    );
    write_demo_presets(&handle.sim, &config.presets_file);
    println!("  room presets:       {}", config.presets_file.display());
    println!("  MCP socket:         {}", config.mcp_socket.display());
    println!("  connect an agent:   xyte-edge mcp --socket {}", config.mcp_socket.display());
    Ok(handle)
}

/// The demo's LAN addresses, printed once they are bound (a busy port is replaced by a free one).
fn print_demo_http(http: &crate::http::Started) {
    for addr in &http.lan {
        println!("  LAN HTTPS:          https://{addr}/");
    }
    if let Some(c) = &http.certificate {
        println!("  TLS certificate:    {} (SHA-256 {})", c.path.display(), c.fingerprint);
    }
    for addr in &http.local {
        println!("  loopback HTTP:      http://{addr}/");
    }
    // The dashboard is on both; on this machine the loopback address needs no certificate exception.
    if let Some(addr) =
        http.local.first().map(|a| format!("http://{a}/")).or(http.lan.first().map(|a| format!("https://{a}/")))
    {
        println!("  dashboard:          {addr}   (sign in with the admin token below)");
    }
}

/// A fresh admin token for the demo's dashboard and API, replacing the previous run's.
async fn print_demo_token(store: &crate::store::Store) {
    let now = crate::store::now_ms();
    let created = store
        .write(crate::store::Durability::Full, move |c| {
            crate::store::tokens::revoke(c, "demo-admin", now)?;
            crate::store::tokens::create(c, "demo-admin", crate::config::Role::Admin, None, now)
        })
        .await;
    match created {
        Ok(secret) => println!("  admin token:        {secret}   (shown once; `xyte-edge token` manages others)"),
        Err(e) => tracing::warn!("could not create the demo admin token: {e}"),
    }
    println!("  stop with Ctrl-C");
}

/// The demo's presets file, written once from the simulated rooms so presets work at once; an existing file (the
/// user's edits) is left alone.
fn write_demo_presets(sim: &sim::Simulator, path: &std::path::Path) {
    if path.exists() {
        return;
    }
    let text = serde_json::to_string_pretty(&sim.demo_presets(4)).unwrap_or_default();
    let written = path.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|_| std::fs::write(path, text));
    if let Err(e) = written {
        tracing::warn!("cannot write the demo presets file {}: {e}", path.display());
    }
}

/// Tells the person at the terminal what the demo is doing: each sync that changed the picture.
async fn print_demo_progress(
    mut reports: tokio::sync::watch::Receiver<Option<crate::sync::poller::SyncReport>>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = reports.changed() => if changed.is_err() { return },
        }
        let Some(report) = reports.borrow_and_update().clone() else { continue };
        println!("{report}");
    }
}

/// SIGTERM/SIGINT stop the daemon; SIGHUP (`systemctl reload`) re-reads room presets, alert rules and the TLS
/// certificate.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self, Fatal> {
        let make =
            |kind| signal(kind).map_err(|e| Fatal::new(exit::SOFTWARE, format!("cannot install signal handlers: {e}")));
        Ok(Signals {
            term: make(SignalKind::terminate())?,
            int: make(SignalKind::interrupt())?,
            hup: make(SignalKind::hangup())?,
        })
    }

    async fn wait_for_stop(&mut self, on_reload: impl Fn()) {
        loop {
            tokio::select! {
                _ = self.term.recv() => { tracing::info!("SIGTERM received"); return }
                _ = self.int.recv() => { tracing::info!("SIGINT received"); return }
                _ = self.hup.recv() => {
                    tracing::info!("SIGHUP received: reloading room presets and the TLS certificate (other settings apply at restart)");
                    on_reload();
                }
            }
        }
    }
}
