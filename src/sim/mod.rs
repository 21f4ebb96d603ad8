//! The Xyte Organization API simulator, used by `xyte-edge sim`, `serve --demo` and the tests.
//!
//! [`Simulator`] owns the seeded world and survives any number of [`Simulator::serve`] calls, so a test can take the
//! "WAN" down and bring it back on the same port while the world (and its clock) goes on.

mod catalog;
mod faults;
pub mod rng;
mod routes;
mod server;
mod world;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use faults::{CommandKey, Faults, Pagination};
pub use server::API_PREFIX;

#[derive(Debug, Clone)]
pub struct SimOptions {
    pub devices: usize,
    pub seed: u64,
    /// The organization API key (sent raw in `Authorization`).
    pub api_key: String,
    /// OAuth access tokens accepted as `Bearer …`.
    pub oauth_tokens: Vec<String>,
    pub faults: Faults,
    /// Length of one world-clock step.
    pub tick: Duration,
    /// Whether devices drop offline and recover on their own.
    pub churn: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            devices: 40,
            seed: 1,
            api_key: "demo-key".into(),
            oauth_tokens: vec!["xoat_demo".into()],
            faults: Faults::default(),
            tick: Duration::from_secs(1),
            churn: true,
        }
    }
}

/// One request as the simulator saw it (organization API only).
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Arrival time since the simulator was created.
    pub at: Duration,
    /// When the answer was sent (after the injected latency), on the same clock; equals `at`-plus-latency for most
    /// requests. Tests use it to check that nothing arrives too soon after a 429 was answered.
    pub answered: Duration,
    /// 0 when no answer was sent (dropped or hung).
    pub status: u16,
}

#[derive(Debug, Clone, Default)]
pub struct SimStats {
    pub total: u64,
    /// The most recent requests (up to 100,000), oldest first.
    pub requests: Vec<RequestRecord>,
    /// Every accepted `POST …/commands`: (device id, body), in arrival order.
    pub commands: Vec<(String, Value)>,
}

const MAX_RECORDS: usize = 100_000;

/// The `burst_429` fault: N requests get 429, then service resumes; with `burst_429_every`, the next burst of N
/// starts one period after the previous one started.
#[derive(Debug, Clone, PartialEq)]
struct Burst {
    left: u64,
    size: u64,
    every: Option<Duration>,
    /// When the next burst starts, on the simulator's clock.
    next: Duration,
}

impl Burst {
    fn new(f: &Faults, now: Duration) -> Self {
        let every = f.burst_429_every.filter(|_| f.burst_429 > 0);
        Burst { left: f.burst_429, size: f.burst_429, every, next: now + every.unwrap_or_default() }
    }

    fn take(&mut self, now: Duration) -> bool {
        if let Some(every) = self.every
            && now >= self.next
        {
            self.left = self.size;
            // Periods missed while nobody asked do not pile up into one long burst.
            while self.next <= now {
                self.next += every;
            }
        }
        if self.left == 0 {
            return false;
        }
        self.left -= 1;
        true
    }
}

pub struct Simulator {
    opts: SimOptions,
    world: Mutex<world::World>,
    faults: Mutex<Faults>,
    burst_429: Mutex<Burst>,
    fault_rng: Mutex<rng::Rng>,
    stats: Mutex<SimStats>,
    started: Instant,
    /// Cancelled when the simulator is dropped by its owner: ends hung requests.
    done: CancellationToken,
}

impl Simulator {
    pub fn new(opts: SimOptions) -> Arc<Simulator> {
        let world = world::World::new(opts.devices, opts.seed, opts.churn);
        Arc::new(Simulator {
            world: Mutex::new(world),
            burst_429: Mutex::new(Burst::new(&opts.faults, Duration::ZERO)),
            faults: Mutex::new(opts.faults.clone()),
            fault_rng: Mutex::new(rng::Rng::new(opts.seed.wrapping_add(0xFA17))),
            stats: Mutex::new(SimStats::default()),
            started: Instant::now(),
            done: CancellationToken::new(),
            opts,
        })
    }

    pub fn api_key(&self) -> &str {
        &self.opts.api_key
    }

    pub fn options(&self) -> &SimOptions {
        &self.opts
    }

    /// Serves HTTP on `listener` until `shutdown` is cancelled; open connections are closed then.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
        loop {
            let (stream, _) = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    // Running out of descriptors must not end the simulator; try again on the next connection.
                    Err(_) => continue,
                },
            };
            let sim = self.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| server::handle(sim.clone(), req));
                let conn = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = conn => {}
                }
            });
        }
    }

    /// Steps the world every `tick` until cancelled.
    pub async fn run_clock(self: Arc<Self>, shutdown: CancellationToken) {
        let mut interval = tokio::time::interval(self.opts.tick);
        interval.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = interval.tick() => self.step(),
            }
        }
    }

    pub fn step(&self) {
        if let Ok(mut w) = self.world.lock() {
            w.step();
        }
    }

    pub fn device_ids(&self) -> Vec<String> {
        self.world.lock().map(|w| w.devices.iter().map(|d| d.id.clone()).collect()).unwrap_or_default()
    }

    /// A presets file for the first `rooms` meeting rooms (see [`World::demo_presets`]).
    pub fn demo_presets(&self, rooms: usize) -> Value {
        self.world.lock().map(|w| w.demo_presets(rooms)).unwrap_or_default()
    }

    /// The device's current JSON, as `GET /devices/:id` would return it.
    pub fn device(&self, id: &str) -> Option<Value> {
        let w = self.world.lock().ok()?;
        w.device(id).map(|d| w.device_json(d))
    }

    /// Commands of a device, newest first, as `GET /devices/:id/commands` lists them.
    pub fn device_commands(&self, id: &str) -> Vec<Value> {
        self.world
            .lock()
            .map(|w| w.commands.get(id).map(|l| l.iter().map(|c| c.json()).collect()).unwrap_or_default())
            .unwrap_or_default()
    }

    /// Sets a device's status and keeps it there (the clock's churn leaves held devices alone).
    pub fn set_device_status(&self, id: &str, status: &str) -> bool {
        self.world.lock().map(|mut w| w.hold_device_status(id, status)).unwrap_or(false)
    }

    pub fn set_faults(&self, faults: Faults) {
        if let Ok(mut b) = self.burst_429.lock() {
            *b = Burst::new(&faults, self.started.elapsed());
        }
        if let Ok(mut f) = self.faults.lock() {
            *f = faults;
        }
    }

    fn faults(&self) -> Faults {
        self.faults.lock().map(|f| f.clone()).unwrap_or_default()
    }

    fn take_burst_429(&self) -> bool {
        let now = self.started.elapsed();
        self.burst_429.lock().map(|mut b| b.take(now)).unwrap_or(false)
    }

    fn roll(&self) -> f64 {
        self.fault_rng.lock().map(|mut r| r.unit()).unwrap_or(1.0)
    }

    fn roll_below(&self, n: usize) -> usize {
        self.fault_rng.lock().map(|mut r| r.below(n)).unwrap_or(0)
    }

    fn shutdown_signal(&self) -> &CancellationToken {
        &self.done
    }

    fn record(&self, r: RequestRecord) {
        if let Ok(mut s) = self.stats.lock() {
            s.total += 1;
            if s.requests.len() >= MAX_RECORDS {
                s.requests.drain(..MAX_RECORDS / 10);
            }
            // Kept in arrival order, as `SimStats` promises: requests are recorded when answered, and concurrent
            // ones are answered out of order (latency, faults), which made "oldest first" a lie under load.
            let at = s.requests.iter().rposition(|q| q.at <= r.at).map_or(0, |i| i + 1);
            s.requests.insert(at, r);
        }
    }

    fn record_commands(&self, received: Vec<(String, Value)>) {
        if received.is_empty() {
            return;
        }
        if let Ok(mut s) = self.stats.lock() {
            s.commands.extend(received);
        }
    }

    pub fn stats(&self) -> SimStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn reset_stats(&self) {
        if let Ok(mut s) = self.stats.lock() {
            *s = SimStats::default();
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.done.cancel();
    }
}

/// A running simulator: its address, the shared world, and the token that stops its server and clock.
pub struct SimHandle {
    pub addr: SocketAddr,
    pub sim: Arc<Simulator>,
    pub shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl SimHandle {
    pub fn base_url(&self) -> String {
        format!("http://{}{API_PREFIX}", self.addr)
    }

    /// Stops serving (the port closes, connections drop) while the world keeps its state; see [`SimHandle::restart`].
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    /// Serves the same world again on the same address.
    pub async fn restart(&mut self) -> std::io::Result<()> {
        self.stop().await;
        let listener = TcpListener::bind(self.addr).await?;
        self.shutdown = CancellationToken::new();
        self.server = Some(tokio::spawn(self.sim.clone().serve(listener, self.shutdown.clone())));
        tokio::spawn(self.sim.clone().run_clock(self.shutdown.clone()));
        Ok(())
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.sim.done.cancel();
    }
}

/// Binds `addr` (port 0 for any), starts the server and the clock on the current runtime.
pub async fn spawn(addr: SocketAddr, opts: SimOptions) -> std::io::Result<SimHandle> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let sim = Simulator::new(opts);
    let shutdown = CancellationToken::new();
    let server = Some(tokio::spawn(sim.clone().serve(listener, shutdown.clone())));
    tokio::spawn(sim.clone().run_clock(shutdown.clone()));
    Ok(SimHandle { addr, sim, shutdown, server })
}

/// `xyte-edge sim`: serve until Ctrl-C or SIGTERM.
pub async fn run_standalone(listen: SocketAddr, opts: SimOptions) -> std::io::Result<()> {
    let (devices, seed) = (opts.devices, opts.seed);
    let handle = spawn(listen, opts).await?;
    println!(
        "xyte-edge sim listening on {} (api key: {}, {devices} devices, seed {seed}; control routes under http://{}/_sim/)",
        handle.base_url(),
        handle.sim.api_key(),
        handle.addr
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_listed_in_arrival_order_whatever_order_they_were_answered_in() {
        let sim = Simulator::new(SimOptions { devices: 1, ..Default::default() });
        let req = |at_ms: u64, answered_ms: u64| RequestRecord {
            method: "GET".into(),
            path: format!("/{at_ms}"),
            at: Duration::from_millis(at_ms),
            answered: Duration::from_millis(answered_ms),
            status: 200,
        };
        for (at, answered) in [(10, 2010), (20, 25), (5, 3000), (30, 31)] {
            sim.record(req(at, answered));
        }
        let order: Vec<String> = sim.stats().requests.into_iter().map(|r| r.path).collect();
        assert_eq!(order, ["/5", "/10", "/20", "/30"]);
    }

    #[test]
    fn bursts_of_429_once_or_recurring() {
        let secs = Duration::from_secs;
        let once: Faults = "burst_429=2".parse().unwrap();
        let mut b = Burst::new(&once, secs(0));
        let got: Vec<bool> = [0, 1, 2, 100].iter().map(|&t| b.take(secs(t))).collect();
        assert_eq!(got, [true, true, false, false], "one burst without a period");

        let storm: Faults = "burst_429=2,burst_429_every=10s".parse().unwrap();
        let mut b = Burst::new(&storm, secs(5));
        let got: Vec<bool> = [5, 6, 7, 14, 15, 15, 15, 16, 44, 44, 44].iter().map(|&t| b.take(secs(t))).collect();
        assert_eq!(
            got,
            [true, true, false, false, true, true, false, false, true, true, false],
            "a burst of 2 at 5 s, 15 s, …; a quiet spell (16 s → 44 s) does not save up bursts"
        );
    }
}
