//! Log lines to stderr (the text and JSON formats) without making the runtime's worker threads wait for it.
//!
//! Every request and tool call logs a line. Written directly, each was a `write(2)` under the process-wide stderr
//! lock, taken by both workers: under load one worker slept on that lock while the other wrote (nearly every futex
//! call of a loaded daemon, `strace -f -e futex -k`), and a reader of stderr that stopped reading (a paused
//! terminal, a stuck log shipper, a full pipe) would have stopped every request. Here a line is copied into a
//! bounded buffer and one thread of its own writes the buffer out, in batches when lines come faster than it writes.
//! When the buffer is full, lines are dropped and counted, and the count is written once the writer catches up:
//! memory stays bounded and requests never wait for stderr.
//!
//! Warnings and errors are written at once, after what is buffered (so the order is kept): they are rare, and one
//! logged just before the process exits must not be lost. When the writer thread is writing at that moment, they
//! follow its batch instead of waiting for it. [`flush`] writes the rest at the end of `serve`.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, TryLockError};

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// At most this many bytes of lines wait for the writer thread (several thousand lines).
const BOUND: usize = 1024 * 1024;
/// How long the writer lets lines gather after a write: a line reaches stderr at most this late (warnings and errors
/// at once). At the bound's size, lines would have to come at more than 100 MB/s to be dropped.
const LINGER: std::time::Duration = std::time::Duration::from_millis(10);

struct Pending {
    bytes: Vec<u8>,
    /// Lines dropped since the writer last caught up.
    dropped: u64,
    /// The writer thread waits for lines (so the next line must wake it).
    waiting: bool,
}

struct Shared<W> {
    pending: Mutex<Pending>,
    wake: Condvar,
    /// The output, held while writing: a batch taken from `pending` is written before anyone takes a later one.
    out: Mutex<W>,
    bound: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<W: Write> Shared<W> {
    /// Queues one line; false when the buffer is full and the line was dropped.
    fn queue(&self, line: &[u8]) -> bool {
        let mut p = lock(&self.pending);
        if p.bytes.len() + line.len() > self.bound {
            p.dropped += 1;
            return false;
        }
        p.bytes.extend_from_slice(line);
        if std::mem::take(&mut p.waiting) {
            drop(p);
            self.wake.notify_one();
        }
        true
    }

    /// Writes what is buffered, then `line`, now; or, when the writer thread is writing at this moment (it may be
    /// stuck on a reader that stopped), queues `line` to follow its batch: a warning must not stop a worker either.
    fn write_now(&self, line: &[u8]) {
        let mut out = match self.out.try_lock() {
            Ok(out) => out,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => {
                self.queue(line);
                return;
            }
        };
        self.drain(&mut out);
        let _ = out.write_all(line);
    }

    /// Writes everything buffered so far.
    fn flush(&self) {
        let mut out = lock(&self.out);
        self.drain(&mut out);
        let _ = out.flush();
    }

    /// Takes what is buffered and writes it to `out` (held by the caller), with the count of lines dropped.
    fn drain(&self, out: &mut W) {
        let (bytes, dropped) = {
            let mut p = lock(&self.pending);
            (std::mem::take(&mut p.bytes), std::mem::take(&mut p.dropped))
        };
        let _ = out.write_all(&bytes);
        if dropped > 0 {
            let _ = writeln!(out, "xyte-edge: {dropped} log lines dropped: stderr was not read fast enough");
        }
    }

    /// The writer thread: waits for lines, writes whatever has gathered meanwhile in one go, then lets the next lines
    /// gather for [`LINGER`] before looking again. Waking the thread for every line cost more than the writes it
    /// saved (a futex wake and a context switch per line under load); lingering makes it one per batch.
    fn run(&self) {
        loop {
            {
                let mut p = lock(&self.pending);
                while p.bytes.is_empty() && p.dropped == 0 {
                    p.waiting = true;
                    p = self.wake.wait(p).unwrap_or_else(PoisonError::into_inner);
                }
            }
            self.flush();
            std::thread::sleep(LINGER);
        }
    }
}

/// The stderr writer the text and JSON log formats use ([`MakeWriter`]).
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared<std::io::Stderr>>,
}

static STDERR: OnceLock<LogWriter> = OnceLock::new();

/// The process's one stderr log writer; its thread starts with the first use.
pub fn stderr() -> LogWriter {
    STDERR.get_or_init(|| LogWriter { shared: start(std::io::stderr(), BOUND) }).clone()
}

/// Writes every buffered line (at the end of `serve`). Nothing to do when stderr logging was never used.
pub fn flush() {
    if let Some(w) = STDERR.get() {
        w.shared.flush();
    }
}

impl<W> Shared<W> {
    fn new(out: W, bound: usize) -> Arc<Self> {
        Arc::new(Shared {
            pending: Mutex::new(Pending { bytes: Vec::new(), dropped: 0, waiting: false }),
            wake: Condvar::new(),
            out: Mutex::new(out),
            bound,
        })
    }
}

fn start<W: Write + Send + 'static>(out: W, bound: usize) -> Arc<Shared<W>> {
    let shared = Shared::new(out, bound);
    let writer = shared.clone();
    // If the thread cannot start, lines stay buffered up to the bound (then are counted as dropped), warnings and
    // errors are still written at once, and `flush` writes the rest.
    let _ = std::thread::Builder::new().name("log-writer".into()).spawn(move || writer.run());
    shared
}

/// One log line on its way: tracing-subscriber formats a whole event into its own buffer and writes it with one
/// `write_all`, so each `write` here is a line (or the whole of one).
pub struct Line<'a> {
    shared: &'a Shared<std::io::Stderr>,
    urgent: bool,
}

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.urgent {
            self.shared.write_now(buf);
        } else {
            self.shared.queue(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line { shared: &self.shared, urgent: true }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line<'a> {
        Line { shared: &self.shared, urgent: *meta.level() <= Level::WARN }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output the test can read back, and hold to play a reader that stopped reading.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn text(sink: &Sink) -> String {
        String::from_utf8(lock(&sink.0).clone()).unwrap()
    }

    #[test]
    fn lines_keep_their_order_and_urgent_ones_are_written_at_once() {
        let sink = Sink::default();
        // No writer thread: were it writing a batch at the moment of `write_now`, the warning would (rightly) follow
        // that batch instead of being written before `write_now` returns, which this test checks.
        let shared = Shared::new(sink.clone(), 1 << 20);
        for i in 0..1000 {
            assert!(shared.queue(format!("info {i}\n").as_bytes()));
        }
        shared.write_now(b"WARN now\n");
        // Written before write_now returned, after every line queued before it.
        let got = text(&sink);
        assert!(got.ends_with("info 999\nWARN now\n"), "{}", &got[got.len().saturating_sub(80)..]);
        shared.queue(b"info after\n");
        shared.flush();
        let lines: Vec<String> = text(&sink).lines().map(String::from).collect();
        let mut want: Vec<String> = (0..1000).map(|i| format!("info {i}")).collect();
        want.push("WARN now".into());
        want.push("info after".into());
        assert_eq!(lines, want);
    }

    /// An output whose reader has stopped: a write blocks until the gate opens, and says when one began.
    struct Stuck {
        sink: Sink,
        gate: Arc<(Mutex<bool>, Condvar)>,
        entered: std::sync::mpsc::Sender<()>,
    }

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.entered.send(());
            let (open, opened) = &*self.gate;
            let mut g = lock(open);
            while !*g {
                g = opened.wait(g).unwrap_or_else(PoisonError::into_inner);
            }
            self.sink.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_reader_that_stops_reading_costs_dropped_lines_not_waits_nor_memory() {
        let sink = Sink::default();
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let (entered, began) = std::sync::mpsc::channel();
        let shared = start(Stuck { sink: sink.clone(), gate: gate.clone(), entered }, 100);
        assert!(shared.queue(b"line first\n"));
        // The writer thread is now stuck in its write, holding the output.
        began.recv_timeout(std::time::Duration::from_secs(10)).expect("the writer thread writes");
        let mut queued = 1;
        for i in 0..1000 {
            // Never blocks, whatever the output does.
            if shared.queue(format!("line {i:04}\n").as_bytes()) {
                queued += 1;
            }
        }
        assert!(lock(&shared.pending).bytes.len() <= 100);
        assert!(queued < 1001, "the bound must have dropped lines");
        // Nor does a warning wait: it follows what the writer is stuck writing (or is counted when there is no room).
        let (done, returned) = std::sync::mpsc::channel();
        let warner = shared.clone();
        std::thread::spawn(move || {
            warner.write_now(b"line WARN\n");
            let _ = done.send(());
        });
        returned.recv_timeout(std::time::Duration::from_secs(10)).expect("a warning must not wait for a stuck reader");
        // The reader reads again.
        *lock(&gate.0) = true;
        gate.1.notify_all();
        shared.flush();
        let got = text(&sink);
        let dropped: u64 = got
            .lines()
            .filter_map(|l| l.strip_prefix("xyte-edge: "))
            .filter_map(|l| l.split(' ').next()?.parse::<u64>().ok())
            .sum();
        let kept = got.lines().filter(|l| l.starts_with("line ")).count() as u64;
        assert_eq!(kept + dropped, 1002, "every line is either written or counted: {got}");
        assert!(kept >= queued, "every line queued is written");
    }
}
