//! The signal the daemon's trimmer acts on (`heap::trim_after_bursts`), in a process of its own so no other test's
//! allocations move it: memory freed after a burst shows as resident slack, and a trim gives it back.

#[test]
fn freed_memory_shows_as_slack_until_trimmed() {
    use xyte_edge::heap;
    let before = heap::slack_bytes().expect("glibc on Linux: the trimmer's signal is available");
    // A burst: 64 MiB in 4 KiB pieces, every page touched; then all but every sixteenth piece freed. The pieces
    // kept (as the daemon keeps a few long-lived allocations made during a burst) stop the allocator from giving the
    // free runs between them back by itself.
    let burst: Vec<Vec<u8>> = (0..16 * 1024).map(|i| vec![(i % 251) as u8; 4096]).collect();
    let kept: Vec<Vec<u8>> = burst.into_iter().enumerate().filter(|(i, _)| i % 16 == 15).map(|(_, v)| v).collect();
    let after_burst = heap::slack_bytes().unwrap();
    assert!(after_burst > before + 32 * 1024 * 1024, "slack {before} -> {after_burst} after freeing 60 MiB");
    heap::release_free_memory();
    let after_trim = heap::slack_bytes().unwrap();
    assert!(after_trim + 32 * 1024 * 1024 < after_burst, "slack {after_burst} -> {after_trim} after the trim");
    assert_eq!(kept.len(), 1024);
}
