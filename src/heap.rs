//! Giving freed heap memory back to the kernel after a burst of allocations.
//!
//! glibc's allocator returns memory to the kernel only from the top of each arena. A sync cycle parses every device,
//! incident and space at once (about 9 MiB of heap at its peak for 500 devices, 147 MiB for 10,000) and frees it
//! again, but a few long-lived allocations made meanwhile (cache copies, SQLite pages) pin the top, so the freed
//! pages below stayed resident: an idle daemon with 500 devices held 10.5 MiB of anonymous memory of which about
//! 2 MiB was live (measured with heaptrack and `/proc/PID/smaps_rollup`, BENCHMARKS.md). `malloc_trim(0)` hands
//! every whole free page back (`MADV_DONTNEED`), wherever it is. Its cost is a walk over the free lists under each
//! arena's lock, well below a millisecond for a heap this size, so it runs once per sync cycle (see
//! [`crate::sync::poller`]), which also bounds how long memory left by any other burst (a load spike, a storm of
//! TLS handshakes) stays resident.

/// Returns free heap pages to the kernel (glibc only; other C libraries keep their own policy).
#[allow(unsafe_code)]
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions: it takes each arena's lock itself and releases only free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}
