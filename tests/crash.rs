//! The crash test (issue: edge resilience), counted at the simulator: the real daemon is SIGKILLed 50 times at
//! random moments while about 20 `send_command_async` calls a second arrive on its MCP socket. Every acknowledged
//! task must end delivered to Xyte exactly once (its Xyte command id the one the simulator made for it), or expired /
//! rejected with a reason and never delivered; nothing lost, nothing duplicated, per-device order kept, and the
//! database passes `PRAGMA integrity_check` after every kill.
//!
//! Some rounds slow Xyte down so kills land during the POST: with `latency` the kill comes before the simulator has
//! taken the command, with `slow_body` after it took it but before the daemon read the answer. Both leave a task whose
//! outcome is unknown, which the restarted daemon must reconcile (README, Guarantees) rather than blindly resend.
//!
//! The simulator runs in this process for the whole test, so its world (and every command it received) outlives the
//! daemons. `CRASH_SEED=<n>` replays a run's kill moments.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use xyte_edge::sim::rng::Rng;
use xyte_edge::sim::{self, Faults, SimOptions};
use xyte_edge::store::tasks;

mod support;

const ROUNDS: usize = 50;
const DEVICES: usize = 16;
/// One submission every 50 ms: about 20 a second.
const PACE: Duration = Duration::from_millis(50);

/// One `send_command_async` call: its marker travels in `extra_params` and is recorded by the simulator.
#[derive(Debug, Clone)]
struct Submission {
    n: usize,
    round: usize,
    device: String,
    marker: String,
    /// The task id, when the daemon acknowledged the call.
    task_id: Option<String>,
    /// The daemon's answer when it refused the call.
    refused: Option<String>,
}

/// A newline-delimited JSON-RPC client on the daemon's MCP socket (our own uid, so the admin role).
struct Mcp {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    next_id: u64,
}

impl Mcp {
    fn connect(path: &Path) -> std::io::Result<Mcp> {
        let s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        Ok(Mcp { reader: BufReader::new(s.try_clone()?), writer: s, next_id: 0 })
    }

    /// The tool's structured result, `Err` with the reason when it failed, or an I/O error when the daemon is gone.
    fn call(&mut self, tool: &str, args: Value) -> std::io::Result<Result<Value, String>> {
        self.next_id += 1;
        let msg = json!({"jsonrpc": "2.0", "id": self.next_id, "method": "tools/call",
                         "params": {"name": tool, "arguments": args}});
        self.writer.write_all(format!("{msg}\n").as_bytes())?;
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "daemon closed the socket"));
            }
            let v: Value = serde_json::from_str(&line).map_err(std::io::Error::other)?;
            if v["id"] != json!(self.next_id) {
                continue; // a notification
            }
            return Ok(match (&v["error"], &v["result"]) {
                (Value::Null, r) if r["isError"] != true => Ok(r["structuredContent"].clone()),
                (Value::Null, r) => Err(r["structuredContent"].to_string()),
                (e, _) => Err(e.to_string()),
            });
        }
    }
}

struct Daemon {
    proc: support::Daemon,
    socket: PathBuf,
}

fn start_daemon(dir: &Path, base_url: &str, api_key: &str, command_ttl: &str) -> Daemon {
    let socket = dir.join("mcp.sock");
    let mut cmd = support::bin();
    cmd.arg("serve")
        .env("XYTE_STATE_DIR", dir.join("state"))
        .env("XYTE_MCP_SOCKET", &socket)
        .env("XYTE_HTTP_LISTEN", "")
        .env("XYTE_HTTP_LOCAL_LISTEN", "")
        .env("XYTE_BASE_URL", base_url)
        .env("XYTE_API_KEY", api_key)
        .env("XYTE_COMMAND_TTL", command_ttl)
        // Validation reads the cache, so submissions go on while Xyte is slowed down.
        .env("XYTE_CACHE_TTL", "1d")
        .env("XYTE_RATE_LIMIT", "6000")
        .env("XYTE_REQUEST_TIMEOUT", "5s")
        .env("XYTE_LOG_FORMAT", "text");
    let mut proc = support::Daemon::spawn(cmd);
    proc.wait_line("ready: serving", Duration::from_secs(20));
    Daemon { proc, socket }
}

/// Submits one command every `PACE` until `stop`, or until the daemon goes away under it.
fn submit_until(
    socket: &Path,
    round: usize,
    devices: &[String],
    first: usize,
    stop: &AtomicBool,
    rng: &mut Rng,
) -> Vec<Submission> {
    let mut out = Vec::new();
    let Ok(mut mcp) = Mcp::connect(socket) else { return out };
    let start = Instant::now();
    for i in 0.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let n = first + i;
        let device = devices[rng.below(devices.len())].clone();
        let marker = format!("m{n:05}");
        let args = json!({"device_id": device, "command": "reboot", "extra_params": {"marker": marker}});
        let mut sub = Submission { n, round, device, marker, task_id: None, refused: None };
        let answer = mcp.call("send_command_async", args);
        let alive = answer.is_ok();
        match answer {
            Ok(Ok(task)) => {
                sub.task_id = Some(task["task_id"].as_str().expect("an acknowledgement has a task_id").into())
            }
            Ok(Err(reason)) => sub.refused = Some(reason),
            Err(_) => {}
        }
        out.push(sub);
        if !alive {
            break;
        }
        // Pacing, not synchronisation: the load is ~20 calls a second whatever the daemon does.
        let next = start + PACE * (i as u32 + 1);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    out
}

/// What the database says right after a kill: the integrity check, and how many tasks were caught mid-POST.
fn inspect(db: &Path) -> (String, i64) {
    let c = rusqlite::Connection::open(db).expect("the database opens after SIGKILL");
    let check: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    let sending: i64 = c.query_row("SELECT COUNT(*) FROM tasks WHERE state = 'sending'", [], |r| r.get(0)).unwrap();
    (check, sending)
}

/// Tasks (acknowledged or not) that have not reached a final state yet.
fn open_tasks(db: &Path) -> usize {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut s = c.prepare("SELECT state FROM tasks").unwrap();
    let states: Vec<tasks::TaskState> = s.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap();
    states.iter().filter(|st| st.is_open()).count()
}

/// Most rounds are calm; the others slow Xyte so the kill lands during a POST, or fail half its answers so the
/// reconciliation of the previous round's unknown outcome must cope with a command list it cannot read. The slow
/// answers come with a 3 s command TTL, so some of their backlog expires on purpose, possibly while its delivery is
/// still unknown; everywhere else the TTL is a day, so nothing expires by accident.
fn faults_for(round: usize) -> (&'static str, Faults, &'static str) {
    let calm = ("none", Faults::default(), "1d");
    match round % 5 {
        // The first round is always calm: it fills the cache the later rounds validate against.
        _ if round == 0 => calm,
        1 => ("latency", Faults { latency: Duration::from_millis(300), ..Default::default() }, "1d"),
        3 => ("slow_body", Faults { slow_body: Duration::from_millis(80), ..Default::default() }, "3s"),
        4 => ("5xx", Faults { error_rate: 0.5, ..Default::default() }, "1d"),
        _ => calm,
    }
}

#[test]
fn fifty_sigkills_under_load_lose_and_duplicate_no_acknowledged_command() {
    let started = Instant::now();
    let seed: u64 = std::env::var("CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("crash: seed {seed} (CRASH_SEED={seed} replays the kill moments)");
    let mut rng = Rng::new(seed);

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let sim = rt
        .block_on(sim::spawn(
            "127.0.0.1:0".parse().unwrap(),
            SimOptions { devices: DEVICES, churn: false, ..Default::default() },
        ))
        .expect("simulator starts");
    let devices = sim.sim.device_ids();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state").join(xyte_edge::store::DB_FILE);

    let mut subs: Vec<Submission> = Vec::new();
    let mut mid_post_kills = 0;
    for round in 0..ROUNDS {
        let (fault_name, faults, ttl) = faults_for(round);
        sim.sim.set_faults(faults);
        let mut daemon = start_daemon(dir.path(), &sim.base_url(), sim.sim.api_key(), ttl);
        if round == 0 {
            let mut mcp = Mcp::connect(&daemon.socket).expect("MCP socket");
            for d in &devices {
                let args = json!({"device_id": d, "command": "reboot", "extra_params": {"marker": "warm"},
                                  "dry_run": true});
                mcp.call("send_command_async", args).unwrap().expect("a dry run validates against the model");
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let submitter = {
            let (socket, devices, stop, first) = (daemon.socket.clone(), devices.clone(), stop.clone(), subs.len());
            let mut rng = Rng::new(rng.next_u64());
            std::thread::spawn(move || submit_until(&socket, round, &devices, first, &stop, &mut rng))
        };
        // The kill moment is the experiment, not a synchronisation: a seeded random time after readiness.
        let after = Duration::from_millis(300 + rng.below(2200) as u64);
        std::thread::sleep(after);
        daemon.proc.signal(nix::sys::signal::Signal::SIGKILL);
        daemon.proc.wait_exit(Duration::from_secs(10));
        stop.store(true, Ordering::SeqCst);
        let got = submitter.join().expect("submitter thread");
        let acked = got.iter().filter(|s| s.task_id.is_some()).count();
        subs.extend(got);
        sim.sim.set_faults(Faults::default());

        let (check, sending) = inspect(&db);
        assert_eq!(check, "ok", "round {round}: integrity_check after SIGKILL");
        mid_post_kills += usize::from(sending > 0);
        eprintln!(
            "crash: round {round:2} faults {fault_name:9} killed after {:4} ms: {acked:3} acknowledged, \
             {sending} task(s) caught mid-POST",
            after.as_millis()
        );
    }

    // Once more, to the end: every task (acknowledged or not) leaves the outbox and reaches a final state.
    let daemon = start_daemon(dir.path(), &sim.base_url(), sim.sim.api_key(), "1d");
    let mut mcp = Mcp::connect(&daemon.socket).expect("MCP socket");
    let acked: Vec<&Submission> = subs.iter().filter(|s| s.task_id.is_some()).collect();
    let mut finals: HashMap<String, Value> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        for s in &acked {
            let id = s.task_id.clone().unwrap();
            if finals.contains_key(&id) {
                continue;
            }
            let t = mcp.call("get_task_status", json!({"task_id": id})).unwrap().expect("get_task_status");
            if t["final"] == true {
                finals.insert(id, t);
            }
        }
        let open = open_tasks(&db);
        if finals.len() == acked.len() && open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "within 90 s of the last start: {} of {} acknowledged tasks final, {open} tasks still open",
            finals.len(),
            acked.len()
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // Counted at the simulator: which markers arrived, in what order per device, under which command id.
    let mut at_sim: HashMap<String, Vec<String>> = HashMap::new();
    for d in &devices {
        for c in sim.sim.device_commands(d) {
            let marker = c["params"]["marker"].as_str().unwrap_or("<none>").to_string();
            at_sim.entry(marker).or_default().push(c["id"].as_str().unwrap().to_string());
        }
    }
    let received = sim.sim.stats().commands;
    assert_eq!(received.len(), at_sim.values().map(Vec::len).sum::<usize>(), "the simulator's two records agree");
    let by_marker: HashMap<&str, &Submission> = subs.iter().map(|s| (s.marker.as_str(), s)).collect();
    for marker in at_sim.keys() {
        assert!(by_marker.contains_key(marker.as_str()), "the simulator received {marker}, which nobody submitted");
    }

    let (mut delivered, mut expired, mut rejected) = (0, 0, 0);
    for s in &acked {
        let t = &finals[s.task_id.as_ref().unwrap()];
        let ids = at_sim.get(&s.marker).cloned().unwrap_or_default();
        match t["state"].as_str().unwrap() {
            "expired" | "rejected" => {
                assert!(t["last_error"].as_str().is_some_and(|r| !r.is_empty()), "a reason: {t}");
                assert!(
                    ids.is_empty(),
                    "{} ended {} yet reached Xyte {} time(s): {t}",
                    s.marker,
                    t["state"],
                    ids.len()
                );
                if t["state"] == "expired" {
                    expired += 1;
                } else {
                    rejected += 1;
                }
            }
            "done" | "failed" | "aborted" => {
                assert_eq!(ids.len(), 1, "{} (round {}) reached Xyte exactly once: {t}", s.marker, s.round);
                assert_eq!(t["xyte_command_id"], json!(ids[0]), "{}: the task names its own Xyte command", s.marker);
                delivered += 1;
            }
            other => panic!("{}: acknowledged task ended {other}, which nothing asked for: {t}", s.marker),
        }
    }
    let unacked: Vec<&Submission> = subs.iter().filter(|s| s.task_id.is_none()).collect();
    for s in &unacked {
        let n = at_sim.get(&s.marker).map_or(0, Vec::len);
        assert!(n <= 1, "unacknowledged {} (round {}) reached Xyte {n} times", s.marker, s.round);
    }
    let unacked_delivered = unacked.iter().filter(|s| at_sim.contains_key(&s.marker)).count();
    // Per device, commands reached Xyte in the order they were submitted.
    let mut order: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (device, body) in &received {
        let marker = body["extra_params"]["marker"].as_str().unwrap_or_default();
        let s = by_marker[marker];
        assert_eq!(device, &s.device, "{marker} reached the device it was sent to");
        order.entry(device.as_str()).or_default().push(s.n);
    }
    for (device, ns) in &order {
        assert!(ns.windows(2).all(|w| w[0] < w[1]), "order at Xyte for {device}: {ns:?}");
    }

    let c = rusqlite::Connection::open(&db).unwrap();
    let reconciled: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM events WHERE kind = 'command.sent' AND json_extract(data, '$.reconciled') = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let resent: i64 = c
        .query_row("SELECT COUNT(*) FROM tasks WHERE attempts > 1 AND xyte_command_id IS NOT NULL", [], |r| r.get(0))
        .unwrap();
    let refused = subs.iter().filter(|s| s.refused.is_some()).count();
    eprintln!("crash: rounds {ROUNDS} (SIGKILL each), seed {seed}");
    eprintln!("crash: submissions {}, acknowledged {}, refused with a reason {refused}", subs.len(), acked.len());
    eprintln!("crash: acknowledged and delivered exactly once {delivered}");
    eprintln!("crash: acknowledged and ended with a reason, never delivered: expired {expired}, rejected {rejected}");
    eprintln!(
        "crash: unacknowledged (answer lost to the kill) {}, of which delivered once {unacked_delivered}",
        unacked.len()
    );
    eprintln!("crash: kills that landed mid-POST (a task left in 'sending') {mid_post_kills}");
    eprintln!("crash: deliveries reconciled from Xyte's command list instead of resent {reconciled}");
    eprintln!("crash: tasks delivered after more than one attempt {resent}");
    eprintln!("crash: total time {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!(delivered + expired + rejected, acked.len());
    drop(daemon);
}
