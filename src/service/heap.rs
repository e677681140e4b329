//! Hand freed heap memory back to the OS after each series, so that a service running for months
//! keeps a flat footprint on a 2–4 GiB board.
//!
//! Why: glibc's malloc raises its mmap threshold each time a large mmapped block is freed, so
//! after the first series tract's tensors and the decoded slices (hundreds of KiB to several
//! MiB) are served from the heap arenas, where fragmentation can keep freed pages resident. The
//! 300-series soak (`cargo test --test service -- --ignored --nocapture`) grew from about 130 to
//! 230–380 MiB in 4 of 8 runs, at this commit's parent and at the last session's (found when CI
//! failed on it). Pinning the threshold instead (`MALLOC_MMAP_THRESHOLD_`) kept RSS flat but
//! made a scan 1.2–1.6x slower (fresh zeroed pages for every large tensor; covid patient, 2
//! threads: 2.4 s → 2.9–3.8 s). `malloc_trim(0)` once per series releases the free pages of every
//! arena (madvise) and leaves the hot path alone.
//!
//! musl's allocator (the static aarch64 build) returns large blocks by itself: nothing to do.

/// Release free heap pages to the OS (glibc `malloc_trim(0)`); a no-op on other C libraries.
#[allow(unsafe_code)]
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and only walks glibc's own arenas, each under its
    // lock; glibc documents it as safe to call from any thread at any time (MT-Safe).
    unsafe {
        libc::malloc_trim(0);
    }
}
