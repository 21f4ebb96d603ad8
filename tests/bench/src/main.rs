//! xyte-bench: the reproducible benchmark of issue #8 (see BENCHMARKS.md). It starts `xyte-edge sim` and
//! `xyte-edge serve` from the binary it is given, loads the daemon over loopback for bounded times, measures the
//! peers (an rmcp MCP server, an axum REST server: what users would pick instead, answering the daemon's own
//! documents) and the floors (NDJSON echo, hyper + rustls, raw SQLite) in the same run, and prints a table plus JSON.
//!
//! Usage: xyte-bench PATH/TO/xyte-edge [--smoke] [--json PATH] [--binary-arm64 PATH] [--binary-armhf PATH]
//!        [--phase-secs S] [--only mqtt]
//!
//! `--smoke` makes every phase a fraction of a second (for tests/run-all.sh). No timing is ever asserted; the run
//! fails (exit 1) when a phase cannot run: a daemon that does not start or stop cleanly, an error answer, no result.
//! `--only mqtt` runs the MQTT uplink phase alone (it needs Debian's `mosquitto`; see mqtt.rs).

mod load;
mod mqtt;
mod peers;
mod procs;
mod servers;
mod sse;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use load::Run;
use procs::{Layout, Notify, Proc, Res, Sim};
use servers::{Server, Spec};

/// Concurrent clients for the durable writes (webhook, commands): the store commits concurrent writes together
/// (group commit), so acceptance scales with concurrency up to the fsync rate times the batch size.
const DURABLE_CLIENTS: usize = 64;

/// How long and how big each phase is.
struct Plan {
    smoke: bool,
    /// Seconds per timed measurement.
    secs: f64,
    /// Rounds of each daemon/floor pair; figures are the medians over rounds.
    rounds: usize,
    devices: usize,
    sse_subscribers: usize,
    sse_events: usize,
    cached_reads: u64,
    cold_devices: usize,
    cold_runs: usize,
    mqtt: mqtt::MqttPlan,
}

impl Plan {
    fn new(smoke: bool) -> Plan {
        if smoke {
            Plan {
                smoke,
                secs: 0.3,
                rounds: 1,
                devices: 100,
                sse_subscribers: 50,
                sse_events: 3,
                cached_reads: 400,
                cold_devices: 500,
                cold_runs: 2,
                mqtt: mqtt::MqttPlan { rounds: 1, backlog: 500, live: 500, latency_secs: 1.0 },
            }
        } else {
            Plan {
                smoke,
                secs: 3.0,
                rounds: 3,
                devices: 500,
                sse_subscribers: 1_000,
                sse_events: 20,
                cached_reads: 10_000,
                cold_devices: 10_000,
                cold_runs: 7,
                mqtt: mqtt::MqttPlan { rounds: 3, backlog: 50_000, live: 20_000, latency_secs: 5.0 },
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Target {
    /// value / comparison (peer or floor) at most this
    RatioMax(f64),
    /// value / comparison (peer or floor) at least this
    RatioMin(f64),
    Max(f64),
    Min(f64),
}

/// What a figure is compared with, measured back to back with the daemon in the same run.
const RMCP: &str = "rmcp peer";
const AXUM: &str = "axum peer";
const ECHO: &str = "echo floor";
const HYPER: &str = "hyper floor";
const SQLITE: &str = "sqlite floor";

impl Target {
    fn text(self, against: &str) -> String {
        match self {
            Target::RatioMax(x) => format!("<= {x}x {against}"),
            Target::RatioMin(x) => format!(">= {:.0}% {against}", x * 100.0),
            Target::Max(x) => format!("<= {x}"),
            Target::Min(x) => format!(">= {x}"),
        }
    }
}

/// One reported figure: its value per round (and its comparison's, a peer or a floor, when it has one).
struct Figure {
    name: String,
    unit: &'static str,
    values: Vec<f64>,
    floors: Vec<f64>,
    /// What `floors` are: `RMCP`, `AXUM`, `ECHO`, `HYPER`, `SQLITE`, "floor", or "" without a comparison.
    against: &'static str,
    target: Option<Target>,
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    Some(if s.len() % 2 == 1 { s[s.len() / 2] } else { (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0 })
}

impl Figure {
    fn value(&self) -> Option<f64> {
        median(&self.values)
    }

    fn floor(&self) -> Option<f64> {
        median(&self.floors)
    }

    fn ratio(&self) -> Option<f64> {
        Some(self.value()? / self.floor()?)
    }

    fn met(&self) -> Option<bool> {
        let v = self.value()?;
        Some(match self.target? {
            Target::RatioMax(x) => self.ratio()? <= x,
            Target::RatioMin(x) => self.ratio()? >= x,
            Target::Max(x) => v <= x,
            Target::Min(x) => v >= x,
        })
    }
}

#[derive(Default)]
struct Report {
    figures: Vec<Figure>,
}

impl Report {
    /// A figure, with a floor when it has one (`add_vs` names what it is compared with).
    fn add(&mut self, name: &str, unit: &'static str, target: Option<Target>, value: f64, floor: Option<f64>) {
        self.add_vs(name, unit, target, value, floor.map(|f| ("floor", f)));
    }

    /// A figure compared with `vs` = (what, its value in the same round).
    fn add_vs(
        &mut self,
        name: &str,
        unit: &'static str,
        target: Option<Target>,
        value: f64,
        vs: Option<(&'static str, f64)>,
    ) {
        let (against, floor) = match vs {
            Some((a, f)) => (a, Some(f)),
            None => ("", None),
        };
        if let Some(f) = self.figures.iter_mut().find(|f| f.name == name) {
            f.values.push(value);
            f.floors.extend(floor);
        } else {
            let floors = floor.into_iter().collect();
            self.figures.push(Figure { name: name.into(), unit, values: vec![value], floors, against, target });
        }
        let floor = floor.map(|f| format!(" ({against} {f:.3})")).unwrap_or_default();
        eprintln!("  {name}: {value:.3} {unit}{floor}");
    }

    fn table(&self) -> String {
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
        let mut out = format!(
            "{:<44} {:>12} {:<9} {:<12} {:>12} {:>8} {:<24} {}\n",
            "figure", "daemon", "unit", "vs", "peer/floor", "ratio", "target", "met?"
        );
        for f in &self.figures {
            let met = match f.met() {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "",
            };
            out.push_str(&format!(
                "{:<44} {:>12} {:<9} {:<12} {:>12} {:>8} {:<24} {}\n",
                f.name,
                opt(f.value()),
                f.unit,
                f.against,
                opt(f.floor()),
                f.ratio().map_or("-".into(), |r| format!("{r:.2}")),
                f.target.map(|t| t.text(f.against)).unwrap_or_default(),
                met
            ));
        }
        out
    }

    fn json(&self, plan: &Plan, bin: &Path, wall: f64) -> Value {
        let figures: Vec<Value> = self
            .figures
            .iter()
            .map(|f| {
                // "floor" is the comparison's value, a peer's or a floor's: "against" says which.
                json!({"name": f.name, "unit": f.unit, "value": f.value(), "floor": f.floor(),
                       "against": (!f.against.is_empty()).then_some(f.against), "ratio": f.ratio(),
                       "target": f.target.map(|t| t.text(f.against)), "met": f.met(), "rounds": f.values,
                       "floor_rounds": f.floors})
            })
            .collect();
        json!({
            "mode": if plan.smoke { "smoke" } else { "full" },
            "binary": bin.display().to_string(),
            "machine": machine(),
            "plan": {"seconds_per_measurement": plan.secs, "rounds": plan.rounds, "devices": plan.devices,
                     "sse_subscribers": plan.sse_subscribers, "sse_events": plan.sse_events,
                     "cached_reads": plan.cached_reads, "cold_start_devices": plan.cold_devices,
                     "cold_start_runs": plan.cold_runs, "mqtt_rounds": plan.mqtt.rounds,
                     "mqtt_backlog_events": plan.mqtt.backlog, "mqtt_live_events": plan.mqtt.live,
                     "mqtt_latency_seconds": plan.mqtt.latency_secs},
            "wall_seconds": wall,
            "daemon_environment": procs::unit_environment().into_iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "figures": figures,
        })
    }
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu.lines().find_map(|l| l.strip_prefix("model name")).map(|s| s.trim_start_matches([' ', '\t', ':']));
    let mem = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "mem_total": mem.lines().next(),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
    })
}

struct Args {
    bin: PathBuf,
    smoke: bool,
    json: Option<PathBuf>,
    arm64: Option<PathBuf>,
    armhf: Option<PathBuf>,
    /// Overrides the seconds per measurement (e.g. to profile one phase for longer).
    secs: Option<f64>,
    /// `--only mqtt`: that phase alone.
    only_mqtt: bool,
    /// `--only peers`: the MCP and REST phases against the peers and floors alone (e.g. to profile them).
    only_peers: bool,
}

fn args() -> Res<Args> {
    let mut a = Args {
        bin: PathBuf::new(),
        smoke: false,
        json: None,
        arm64: None,
        armhf: None,
        secs: None,
        only_mqtt: false,
        only_peers: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut path = |flag: &str| it.next().map(PathBuf::from).ok_or(format!("{flag} needs a path"));
        match arg.as_str() {
            "--smoke" => a.smoke = true,
            "--json" => a.json = Some(path("--json")?),
            "--binary-arm64" => a.arm64 = Some(path("--binary-arm64")?),
            "--binary-armhf" => a.armhf = Some(path("--binary-armhf")?),
            "--phase-secs" => {
                let v = it.next().and_then(|s| s.parse().ok()).filter(|s: &f64| *s > 0.0);
                a.secs = Some(v.ok_or("--phase-secs needs a positive number")?);
            }
            "--only" => match it.next().as_deref() {
                Some("mqtt") => a.only_mqtt = true,
                Some("peers") => a.only_peers = true,
                other => return Err(format!("--only takes one phase name: mqtt or peers (got {other:?})")),
            },
            s if s.starts_with('-') => return Err(format!("unknown flag {s}")),
            s => a.bin = PathBuf::from(s),
        }
    }
    if a.bin.as_os_str().is_empty() {
        return Err("usage: xyte-bench PATH/TO/xyte-edge [--smoke] [--json PATH] [--binary-arm64 PATH] \
                    [--binary-armhf PATH] [--phase-secs S] [--only mqtt|peers]"
            .into());
    }
    a.bin = std::fs::canonicalize(&a.bin).map_err(|e| format!("{}: {e}", a.bin.display()))?;
    Ok(a)
}

fn main() -> ExitCode {
    let started = *STARTED.get_or_init(Instant::now);
    // A peer or a floor started by the runner (servers.rs).
    if let [_, serve, spec] = &std::env::args().collect::<Vec<_>>()[..]
        && serve == "serve"
    {
        return servers::child(Path::new(spec));
    }
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("xyte-bench: {e}");
            return ExitCode::from(64);
        }
    };
    let mut plan = Plan::new(args.smoke);
    if let Some(s) = args.secs {
        plan.secs = s;
    }
    let mut report = Report::default();
    let outcome = run(&args, &plan, &mut report);
    let wall = started.elapsed().as_secs_f64();
    println!("\n{}", report.table());
    let doc = report.json(&plan, &args.bin, wall);
    let text = serde_json::to_string_pretty(&doc).unwrap();
    println!("{text}");
    if let Some(p) = &args.json
        && let Err(e) = std::fs::write(p, &text)
    {
        eprintln!("xyte-bench: cannot write {}: {e}", p.display());
        return ExitCode::FAILURE;
    }
    match outcome {
        Ok(()) => {
            eprintln!("xyte-bench: {} run finished in {wall:.1} s", if plan.smoke { "smoke" } else { "full" });
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xyte-bench: FAILED after {wall:.1} s: {e}");
            ExitCode::FAILURE
        }
    }
}

static STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn phase(name: &str) {
    let t = STARTED.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("== [{t:6.1} s] {name}");
}

fn run(args: &Args, plan: &Plan, report: &mut Report) -> Res<()> {
    if args.only_mqtt {
        let tmp = tempfile::Builder::new().prefix("xyte-bench").tempdir().map_err(|e| e.to_string())?;
        let client = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        return mqtt::run(&args.bin, tmp.path(), &client, &plan.mqtt, report);
    }
    let fds = procs::raise_fd_limit()?;
    if fds < (plan.sse_subscribers as u64) * 2 + 256 {
        return Err(format!("the open-file limit is {fds}; {} SSE clients need more", plan.sse_subscribers));
    }
    let tmp = tempfile::Builder::new().prefix("xyte-bench").tempdir().map_err(|e| e.to_string())?;
    let dir = tmp.path();
    // The load generator's runtime. The peers and the floors are processes of their own (servers.rs), as the daemon.
    let client = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    binary_sizes(args, report)?;

    phase(&format!("simulator ({} devices) and daemon", plan.devices));
    let sim = Sim::start(&args.bin, dir, plan.devices)?;
    // The highest upstream rate, so the warm-up (one read per device) is quick; polling is off during measurements.
    let layout = Layout::write(dir, "main", &sim, 6000)?;
    let mut daemon = Proc::spawn("daemon", layout.command(&args.bin, None), &layout.dir)?;
    procs::wait_ready(&mut daemon, layout.local, Duration::from_secs(60))?;
    let viewer = layout.token(&args.bin, "bench-viewer", "viewer")?;
    let operator = layout.token(&args.bin, "bench-operator", "operator")?;
    wait_synced(&mut daemon, &layout, &viewer, plan.devices)?;
    let devices = device_ids(&sim)?;
    let idle_kib = procs::settled_rss_kib(daemon.pid())?;
    report.add(&format!("rss.idle_{}_devices", plan.devices), "MiB", Some(Target::Max(15.0)), mib(idle_kib), None);
    // From here the peak (VmHWM) counts the load phases only, not start-up and the first sync.
    procs::reset_peak_rss(daemon.pid())?;

    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let tls = load::client_tls(&layout.cert())?;
    client.block_on(async {
        phase("warm-up: every device read once over MCP and REST, every model's commands validated (dry run)");
        warm_up(&layout, &tls, &viewer, &devices).await?;
        daemon.alive()?;

        phase("upstream efficiency: cached reads while fresh");
        let before = sim.total_requests()?;
        let reads = read_n(&layout.socket, &devices, plan.cached_reads).await?;
        let upstream = sim.total_requests()? - before;
        eprintln!("  {reads} cached get_device_status reads");
        report.add("upstream.calls_during_cached_reads", "calls", Some(Target::Max(0.0)), upstream as f64, None);

        // Before the load phases, so the RSS with the SSE clients is not inflated by what the load left behind.
        if !args.only_peers {
            phase(&format!("SSE fan-out to {} subscribers over TLS, {} events", plan.sse_subscribers, plan.sse_events));
            let mut fan = sse::fanout(
                layout.lan,
                &tls,
                &viewer,
                &layout.secret,
                plan.sse_subscribers,
                plan.sse_events,
                nonce,
                daemon.pid(),
            )
            .await?;
            let subs = plan.sse_subscribers;
            report.add("sse.delivery.p50", "ms", None, fan.run.pct_ms(50.0), None);
            report.add("sse.delivery.p99", "ms", Some(Target::Max(50.0)), fan.run.pct_ms(99.0), None);
            report.add(&format!("rss.with_{subs}_sse_clients"), "MiB", Some(Target::Max(40.0)), mib(fan.rss_kib), None);
            daemon.alive()?;
        }

        phase("MCP peer (rmcp): the daemon's answers for every device and list_devices, checked");
        let answers = peers::capture_mcp(&layout.socket, &devices).await?;
        let rmcp_sock = dir.join("rmcp.sock");
        let mut rmcp = Server::start(dir, "rmcp-peer", &Spec::Rmcp { socket: &rmcp_sock, answers: &answers })?;
        peers::check_mcp(&rmcp_sock, &answers).await?;
        drop(answers);
        let echo = dir.join("echo.sock");
        let mut echo_floor = Server::start(dir, "echo-floor", &Spec::Echo { socket: &echo })?;
        // The first connections and allocations of the floor and the peer are not part of what they measure.
        let first = mcp_lines(&devices).remove(0).1;
        load::lines_closed_loop(&echo, false, 1, 0.1, first.clone(), |q, a| a.trim_end() == q).await?;
        load::lines_closed_loop(&rmcp_sock, true, 1, 0.1, first, |_, a| load::tool_ok(a)).await?;
        for round in 0..plan.rounds {
            phase(&format!("MCP over the Unix socket (daemon, rmcp peer, echo), round {}/{}", round + 1, plan.rounds));
            for (tool, line) in mcp_lines(&devices) {
                for conns in [1usize, 8] {
                    let (mut d, d_cpu) = with_cpu(daemon.pid(), async {
                        load::lines_closed_loop(&layout.socket, true, conns, plan.secs, line.clone(), |_, a| {
                            load::tool_ok(a)
                        })
                        .await
                    })
                    .await?;
                    let (mut p, p_cpu) = with_cpu(rmcp.pid(), async {
                        load::lines_closed_loop(&rmcp_sock, true, conns, plan.secs, line.clone(), |_, a| {
                            load::tool_ok(a)
                        })
                        .await
                    })
                    .await?;
                    let mut f =
                        load::lines_closed_loop(&echo, false, conns, plan.secs, line.clone(), |q, a| a.trim_end() == q)
                            .await?;
                    let pre = format!("mcp.{tool}.{conns}conn");
                    let (rate, p50, p99) = (d.rate(), d.pct_ms(50.0), d.pct_ms(99.0));
                    if conns == 1 {
                        let t = Some(Target::RatioMax(1.0));
                        report.add_vs(&format!("{pre}.p50"), "ms", t, p50, Some((RMCP, p.pct_ms(50.0))));
                        report.add_vs(&format!("{pre}.p99"), "ms", None, p99, Some((RMCP, p.pct_ms(99.0))));
                    }
                    let t = Some(Target::RatioMin(1.0));
                    report.add_vs(&format!("{pre}.calls_per_s"), "1/s", t, rate, Some((RMCP, p.rate())));
                    // The echo floor, as context: the same daemon measurement against a server doing no work.
                    if conns == 1 {
                        report.add_vs(&format!("{pre}.p50.vs_echo"), "ms", None, p50, Some((ECHO, f.pct_ms(50.0))));
                        report.add_vs(&format!("{pre}.p99.vs_echo"), "ms", None, p99, Some((ECHO, f.pct_ms(99.0))));
                    }
                    report.add_vs(&format!("{pre}.calls_per_s.vs_echo"), "1/s", None, rate, Some((ECHO, f.rate())));
                    // Where the time goes, whatever the load generator costs: each server's own CPU per call.
                    report.add_vs(&format!("{pre}.cpu_us_per_call"), "us", None, d_cpu, Some((RMCP, p_cpu)));
                }
            }
            daemon.alive()?;
            rmcp.alive()?;
            echo_floor.alive()?;
        }

        phase("REST over TLS, 32 keep-alive connections, GET /v1/devices/{id}");
        let auth = format!("Bearer {viewer}");
        let mut probe = load::h1_tls(layout.lan, &tls).await?;
        let path = format!("/v1/devices/{}", devices[0]);
        let (status, headers, body) =
            load::send(&mut probe, load::request("GET", &path, &[("authorization", auth.clone())], Bytes::new()))
                .await?;
        if status != 200 {
            return Err(format!("GET {path}: {status}"));
        }
        let (cert, key) = (layout.cert(), layout.key());
        let mut hyper_floor =
            Server::start(dir, "hyper-floor", &Spec::Hyper { cert: &cert, key: &key, headers: &headers, body: &body })?;
        let floor_addr = hyper_floor.socket_addr()?;
        let answers = peers::capture_rest(layout.lan, &tls, &auth, &devices).await?;
        let spec = Spec::Axum { cert: &cert, key: &key, token: &viewer, answers: &answers };
        let mut axum = Server::start(dir, "axum-peer", &spec)?;
        let peer_addr = axum.socket_addr()?;
        peers::check_rest(peer_addr, &tls, &auth, &answers).await?;
        drop(answers);
        let make: Arc<dyn Fn(usize, u64) -> _ + Send + Sync> = {
            let (devices, auth) = (devices.clone(), auth.clone());
            Arc::new(move |c: usize, i: u64| {
                let d = &devices[(c * 61 + i as usize) % devices.len()];
                load::request("GET", &format!("/v1/devices/{d}"), &[("authorization", auth.clone())], Bytes::new())
            })
        };
        for round in 0..plan.rounds {
            eprintln!("  round {}/{}", round + 1, plan.rounds);
            let (mut d, d_cpu) =
                with_cpu(daemon.pid(), load::http_closed_loop(layout.lan, &tls, 32, plan.secs, 200, make.clone()))
                    .await?;
            let (mut p, p_cpu) =
                with_cpu(axum.pid(), load::http_closed_loop(peer_addr, &tls, 32, plan.secs, 200, make.clone())).await?;
            let mut f = load::http_closed_loop(floor_addr, &tls, 32, plan.secs, 200, make.clone()).await?;
            let pre = "rest.get_device.32conn";
            let (rate, p99) = (d.rate(), d.pct_ms(99.0));
            report.add_vs(
                &format!("{pre}.req_per_s"),
                "1/s",
                Some(Target::RatioMin(0.8)),
                rate,
                Some((AXUM, p.rate())),
            );
            report.add_vs(&format!("{pre}.p99"), "ms", Some(Target::RatioMax(1.5)), p99, Some((AXUM, p.pct_ms(99.0))));
            // The hyper floor, as context.
            report.add_vs(&format!("{pre}.req_per_s.vs_hyper"), "1/s", None, rate, Some((HYPER, f.rate())));
            report.add_vs(&format!("{pre}.p99.vs_hyper"), "ms", None, p99, Some((HYPER, f.pct_ms(99.0))));
            report.add_vs(&format!("{pre}.cpu_us_per_request"), "us", None, d_cpu, Some((AXUM, p_cpu)));
            daemon.alive()?;
            axum.alive()?;
            hyper_floor.alive()?;
        }

        let write_rounds = if args.only_peers { 0 } else { plan.rounds };
        for round in 0..write_rounds {
            phase(&format!("durable writes, round {}/{}", round + 1, plan.rounds));
            let secret = layout.secret.clone();
            let hook: Arc<dyn Fn(usize, u64) -> _ + Send + Sync> = Arc::new(move |c: usize, i: u64| {
                let body =
                    format!(r#"{{"type":"bench.ingest","id":"ingest-{nonce}-{round}-{c}-{i}","data":{{"n":{i}}}}}"#);
                let sig = sse::sign(&secret, body.as_bytes());
                load::request(
                    "POST",
                    "/v1/webhook",
                    &[("content-type", "application/json".into()), ("x-signature-256", sig)],
                    Bytes::from(body),
                )
            });
            let d = load::http_closed_loop(layout.lan, &tls, DURABLE_CLIENTS, plan.secs, 202, hook).await?;
            let f = sqlite_floor(dir, "webhook-floor", 200, plan.secs).await?;
            report.add_vs(
                "webhook.events_per_s",
                "1/s",
                Some(Target::Min(20_000.0)),
                d.rate(),
                Some((SQLITE, f.rate())),
            );

            let cmd: Arc<dyn Fn(usize, u64) -> _ + Send + Sync> = {
                let (devices, auth) = (devices.clone(), format!("Bearer {operator}"));
                Arc::new(move |c: usize, i: u64| {
                    let d = &devices[(c * 61 + i as usize) % devices.len()];
                    let body = format!(r#"{{"device_id":"{d}","command":"reboot"}}"#);
                    load::request(
                        "POST",
                        "/v1/tools/send_command_async",
                        &[("authorization", auth.clone()), ("content-type", "application/json".into())],
                        Bytes::from(body),
                    )
                })
            };
            let d = load::http_closed_loop(layout.lan, &tls, DURABLE_CLIENTS, plan.secs, 200, cmd).await?;
            let f = sqlite_floor(dir, "command-floor", 400, plan.secs).await?;
            let t = Some(Target::Min(5_000.0));
            report.add_vs("commands.async_accepted_per_s", "1/s", t, d.rate(), Some((SQLITE, f.rate())));
            daemon.alive()?;
        }
        Ok::<(), String>(())
    })?;
    if args.only_peers {
        daemon.stop(Duration::from_secs(30))?;
        return Ok(());
    }
    let n = plan.devices;
    report.add(
        &format!("rss.peak_load_{n}_devices"),
        "MiB",
        Some(Target::Max(64.0)),
        mib(procs::peak_rss_kib(daemon.pid())?),
        None,
    );
    report.add(&format!("rss.after_load_{n}_devices"), "MiB", None, mib(procs::rss_kib(daemon.pid())?), None);
    // Memory must come back once the load is over: the RSS a minute later (or as soon as it is within 1.5x idle),
    // against the idle RSS measured before the load.
    let wait = if plan.smoke { Duration::from_secs(3) } else { Duration::from_secs(60) };
    phase(&format!("memory after the load: RSS until it is within 1.5x idle, at most {}s", wait.as_secs()));
    let (back_kib, took) = procs::rss_back_within(daemon.pid(), idle_kib * 3 / 2, wait)?;
    report.add_vs(
        &format!("rss.60s_after_load_{n}_devices"),
        "MiB",
        Some(Target::RatioMax(1.5)),
        mib(back_kib),
        Some(("idle", mib(idle_kib))),
    );
    report.add(&format!("rss.seconds_to_1.5x_idle_{n}_devices"), "s", None, took.as_secs_f64(), None);
    phase("stopping the daemon and the simulator");
    daemon.stop(Duration::from_secs(30))?;
    drop(sim);

    cold_start(args, plan, dir, report)?;
    mqtt::run(&args.bin, dir, &client, &plan.mqtt, report)?;
    drop(client);
    Ok(())
}

/// A measurement and the CPU time the server process `pid` spent during it, in microseconds per answered call.
async fn with_cpu(pid: u32, run: impl Future<Output = Res<Run>>) -> Res<(Run, f64)> {
    let before = procs::cpu_secs(pid)?;
    let run = run.await?;
    let per_call = (procs::cpu_secs(pid)? - before) * 1e6 / run.calls as f64;
    Ok((run, per_call))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn binary_sizes(args: &Args, report: &mut Report) -> Res<()> {
    phase("binary sizes");
    for (arch, path) in [("x86_64", Some(&args.bin)), ("aarch64", args.arm64.as_ref()), ("armv7", args.armhf.as_ref())]
    {
        let Some(path) = path else {
            eprintln!("  {arch}: no binary given");
            continue;
        };
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        // A stripped ELF has no symbol table, so its section-name table no longer names one.
        let stripped = !bytes.windows(8).any(|w| w == b".symtab\0");
        let name = format!("binary.{arch}{}", if stripped { "" } else { ".NOT_STRIPPED" });
        report.add(&name, "MiB", Some(Target::Max(8.0)), bytes.len() as f64 / 1048576.0, None);
    }
    Ok(())
}

/// The device ids of the simulated org, from its control route.
fn device_ids(sim: &Sim) -> Res<Vec<String>> {
    let (_, body) = procs::http(sim.addr, "GET", "/_sim/devices", &[], "")?;
    let v: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    let ids: Vec<String> =
        v.as_array().into_iter().flatten().filter_map(|d| d["id"].as_str().map(String::from)).collect();
    if ids.is_empty() {
        return Err("the simulator lists no devices".into());
    }
    Ok(ids)
}

/// Waits until the daemon's cache holds all `n` devices (its first poll has finished).
fn wait_synced(daemon: &mut Proc, layout: &Layout, token: &str, n: usize) -> Res<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let auth = format!("Bearer {token}");
    loop {
        let (status, body) = procs::http(layout.local, "GET", "/v1/devices?limit=1", &[("Authorization", &auth)], "")?;
        if status == 200
            && serde_json::from_str::<Value>(&body).ok().and_then(|v| v["total"].as_u64()) == Some(n as u64)
        {
            return Ok(());
        }
        daemon.alive()?;
        if Instant::now() > deadline {
            return Err(format!("the daemon did not cache {n} devices: {status} {body:.300}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The two MCP read calls measured, each as a request-line maker (rotating over devices).
#[allow(clippy::type_complexity)]
fn mcp_lines(devices: &[String]) -> Vec<(&'static str, Arc<dyn Fn(usize, u64) -> String + Send + Sync>)> {
    let ids = devices.to_vec();
    vec![
        (
            "get_device_status",
            Arc::new(move |c: usize, i: u64| {
                let d = &ids[(c * 61 + i as usize) % ids.len()];
                load::tool_call(i, "get_device_status", &format!(r#"{{"device_id":"{d}"}}"#))
            }),
        ),
        ("list_devices", Arc::new(|_, i| load::tool_call(i, "list_devices", "{}"))),
    ]
}

async fn warm_up(layout: &Layout, tls: &Arc<rustls::ClientConfig>, token: &str, devices: &[String]) -> Res<()> {
    let mut mcp = load::LineConn::mcp(&layout.socket).await?;
    let mut rest = load::h1_tls(layout.lan, tls).await?;
    for (i, d) in devices.iter().enumerate() {
        for (tool, args) in [
            ("get_device_status", format!(r#"{{"device_id":"{d}"}}"#)),
            ("send_command", format!(r#"{{"device_id":"{d}","command":"reboot","dry_run":true}}"#)),
        ] {
            let req = load::tool_call(i as u64, tool, &args);
            let answer = mcp.call(req.as_bytes()).await?;
            if !load::tool_ok(answer) {
                return Err(format!("{req}: {answer:.400}"));
            }
        }
        let req = load::request(
            "GET",
            &format!("/v1/devices/{d}"),
            &[("authorization", format!("Bearer {token}"))],
            Bytes::new(),
        );
        let (status, _, body) = load::send(&mut rest, req).await?;
        if status != 200 {
            return Err(format!("GET /v1/devices/{d}: {status} {}", String::from_utf8_lossy(&body)));
        }
    }
    Ok(())
}

/// `n` cached `get_device_status` reads over 8 connections; returns how many were made.
async fn read_n(socket: &Path, devices: &[String], n: u64) -> Res<u64> {
    let per = n.div_ceil(8);
    let mut handles = Vec::new();
    for c in 0..8 {
        let (socket, devices) = (socket.to_path_buf(), devices.to_vec());
        handles.push(tokio::spawn(async move {
            let mut conn = load::LineConn::mcp(&socket).await?;
            for i in 0..per {
                let d = &devices[(c * 61 + i as usize) % devices.len()];
                let req = load::tool_call(i, "get_device_status", &format!(r#"{{"device_id":"{d}"}}"#));
                let answer = conn.call(req.as_bytes()).await?;
                if !load::tool_ok(answer) || answer.contains(r#""stale":true"#) {
                    return Err(format!("{req}: {answer:.400}"));
                }
            }
            Ok::<u64, String>(per)
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await.map_err(|e| e.to_string())??;
    }
    Ok(total)
}

async fn sqlite_floor(dir: &Path, name: &str, row_bytes: usize, secs: f64) -> Res<Run> {
    let (dir, name) = (dir.to_path_buf(), name.to_string());
    tokio::task::spawn_blocking(move || load::sqlite_floor(&dir, &name, row_bytes, secs))
        .await
        .map_err(|e| e.to_string())?
}

/// A daemon with a `cold_devices` database, started `cold_runs` times with the simulator up: time to `READY=1`
/// (sd_notify, sent once every listener is bound) and to the first `/readyz` 200, and its idle RSS.
fn cold_start(args: &Args, plan: &Plan, dir: &Path, report: &mut Report) -> Res<()> {
    let n = plan.cold_devices;
    phase(&format!("cold start: building a {n}-device database"));
    let sim = Sim::start(&args.bin, dir, n)?;
    let layout = Layout::write(dir, "cold", &sim, 6000)?;
    let mut daemon = Proc::spawn("cold-build", layout.command(&args.bin, None), &layout.dir)?;
    procs::wait_ready(&mut daemon, layout.local, Duration::from_secs(60))?;
    let token = layout.token(&args.bin, "bench-cold", "viewer")?;
    let t = Instant::now();
    wait_synced(&mut daemon, &layout, &token, n)?;
    eprintln!("  synced {n} devices in {:.1} s", t.elapsed().as_secs_f64());
    daemon.stop(Duration::from_secs(30))?;

    for run in 0..plan.cold_runs {
        let notify = Notify::bind(&layout.dir)?;
        let t0 = Instant::now();
        let mut daemon =
            Proc::spawn(&format!("cold-{run}"), layout.command(&args.bin, Some(&notify.path)), &layout.dir)?;
        let ready =
            notify.wait_ready(Duration::from_secs(30)).map_err(|e| format!("{e}; output:\n{}", daemon.log()))?;
        let readyz = procs::wait_ready(&mut daemon, layout.local, Duration::from_secs(30))?;
        report.add("cold_start.ready_notify", "ms", Some(Target::Max(100.0)), ms(ready - t0), None);
        report.add("cold_start.readyz_200", "ms", None, ms(readyz - t0), None);
        if run + 1 == plan.cold_runs {
            let name = format!("rss.idle_{n}_devices");
            report.add(&name, "MiB", None, mib(procs::settled_rss_kib(daemon.pid())?), None);
        }
        daemon.stop(Duration::from_secs(30))?;
    }
    drop(sim);
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
