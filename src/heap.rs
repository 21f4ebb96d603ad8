//! The heap: building answers in one allocation, and giving freed memory back to the kernel after a burst.
//!
//! Answers (MCP messages, REST bodies) are serialised into a per-thread buffer and copied out at their exact size
//! ([`build_bytes`]). A buffer grown step by step is a `realloc` per step, and each takes the lock of the glibc arena
//! the block came from; tasks move between the two workers, so that lock was often the other worker's, held. Waiting
//! for it made four in five of the daemon's futex calls under concurrent MCP load (0.9 per call before, 0.04–0.10
//! after, BENCHMARKS.md).
//!
//! glibc's allocator returns memory to the kernel only from the top of each arena. A sync cycle parses every device,
//! incident and space at once (about 9 MiB of heap at its peak for 500 devices, 147 MiB for 10,000) and frees it
//! again, but a few long-lived allocations made meanwhile (cache copies, SQLite pages) pin the top, so the freed
//! pages below stayed resident: an idle daemon with 500 devices held 10.5 MiB of anonymous memory of which about
//! 2 MiB was live (measured with heaptrack and `/proc/PID/smaps_rollup`, BENCHMARKS.md). `malloc_trim(0)` hands
//! every whole free page back (`MADV_DONTNEED`), wherever it is. Its cost is a walk over the free lists under each
//! arena's lock, well below a millisecond for a heap this size, so it runs once per sync cycle (see
//! [`crate::sync::poller`]).
//!
//! A burst of requests (a load spike, a thousand SSE clients, a storm of TLS handshakes) leaves the same kind of
//! free-but-resident pages behind, and polling may be slow or off; [`trim_after_bursts`] notices that and trims
//! within seconds.

use std::cell::RefCell;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

thread_local! {
    /// This thread's buffers for [`build_bytes`]: what is built, and scratch space for the builder.
    static SCRATCH: RefCell<[Vec<u8>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
}

/// Capacity a thread keeps in each of its [`SCRATCH`] buffers; a larger one is given back once used.
const SCRATCH_KEPT: usize = 64 * 1024;

/// Builds bytes in this thread's buffers and returns them copied out at their exact size: one allocation, whatever
/// the steps. `build` appends to the first buffer (empty when it starts) and may use the second, also empty, as
/// scratch. It must not call `build_bytes` itself.
pub fn build_bytes(build: impl FnOnce(&mut Vec<u8>, &mut Vec<u8>)) -> Bytes {
    SCRATCH.with_borrow_mut(|buffers| {
        let [out, scratch] = buffers;
        out.clear();
        scratch.clear();
        build(out, scratch);
        let bytes = Bytes::copy_from_slice(out);
        for buffer in buffers.iter_mut().filter(|b| b.capacity() > SCRATCH_KEPT) {
            *buffer = Vec::new();
        }
        bytes
    })
}

/// How often [`trim_after_bursts`] looks.
const TRIM_CHECK: Duration = Duration::from_secs(5);
/// Free-but-resident memory grown by more than this since the last trim is worth a trim.
const TRIM_SLACK: u64 = 4 * 1024 * 1024;

/// Returns free heap pages to the kernel (glibc only; other C libraries keep their own policy).
#[allow(unsafe_code)]
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions: it takes each arena's lock itself and releases only free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Trims after a burst: every few seconds it compares the memory resident but not in use by the heap (the RSS less
/// what malloc has handed out) with what it was after the last trim, and trims when that grew by [`TRIM_SLACK`].
/// Under steady load the heap in use grows with the RSS and nothing is trimmed; when the load ends the heap in use
/// falls while its pages stay resident, and the next look gives them back (after `before_trim`, which frees what
/// caches hold only for speed: the daemon's SQLite page caches). Two small reads (`/proc/self/status`,
/// `mallinfo2`) per look; off where glibc is not the allocator.
pub async fn trim_after_bursts<F, Fut>(shutdown: CancellationToken, before_trim: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut tick = tokio::time::interval(TRIM_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut base: Option<u64> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(slack) = slack_bytes() else { return };
        match base {
            Some(b) if slack <= b + TRIM_SLACK => base = Some(b.min(slack)),
            _ => {
                before_trim().await;
                release_free_memory();
                base = slack_bytes();
            }
        }
    }
}

/// Resident bytes the heap does not account as in use: freed pages not yet returned, plus what is not heap at all
/// (code, stacks), which stays about the same.
pub fn slack_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some((kib * 1024).saturating_sub(heap_in_use()?))
}

/// Bytes malloc has handed out and not had back (arenas and mmapped chunks).
#[allow(unsafe_code)]
fn heap_in_use() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 takes no arguments and returns a struct by value; it locks each arena itself.
        let info = unsafe { libc::mallinfo2() };
        Some((info.uordblks + info.hblkhd) as u64)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_bytes_are_exact_and_large_buffers_are_not_kept() {
        let big = build_bytes(|out, scratch| {
            scratch.extend_from_slice(&[b'x'; 100_000]);
            out.extend_from_slice(&scratch[..90_000]);
        });
        assert_eq!(big.len(), 90_000);
        let small = build_bytes(|out, scratch| {
            assert!(out.is_empty() && scratch.is_empty(), "a build starts from empty buffers");
            out.extend_from_slice(b"{}");
        });
        assert_eq!(&small[..], b"{}");
        SCRATCH
            .with_borrow(|b| assert!(b.iter().all(|b| b.capacity() <= SCRATCH_KEPT), "the 100 KB buffers were kept"));
    }
}
