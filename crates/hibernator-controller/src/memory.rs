//! Hands memory the allocator holds free back to the system.

use std::time::Duration;

/// How often free memory is handed back.
const EVERY: Duration = Duration::from_secs(60);

/// glibc's allocator keeps what the program freed inside its heaps for reuse and, by itself,
/// returns only free memory at the top of a heap. After a burst (the first list of thousands
/// of plans, a crowded boundary) the pages freed below live data stay resident. After the
/// start-up of 1,000 plans in `cargo xtask bench`, a `malloc_trim(0)` called by hand (gdb)
/// gave back 2.3 MiB of a 17 MiB heap. It returns every whole free page, locking each heap
/// while it walks it, so it runs once a minute, not after every burst.
pub async fn hand_back_free_memory_now_and_then() {
    let mut ticks = tokio::time::interval(EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        trim();
    }
}

/// No crate offers `malloc_trim` without `unsafe`, hence the one call written here.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[expect(unsafe_code, reason = "the FFI call to glibc's malloc_trim")]
fn trim() {
    // SAFETY: malloc_trim takes no pointers and has no preconditions; glibc locks each heap
    // while it returns that heap's free pages, so it is safe beside other threads' allocations.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other allocators (musl, macOS) return free memory themselves.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    /// The call links and returns (the memory it frees is measured by `cargo xtask bench`).
    #[test]
    fn trimming_keeps_live_data() {
        let live: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 64 * 1024]).collect();
        drop((0..256).map(|_| vec![0u8; 64 * 1024]).collect::<Vec<_>>());
        super::trim();
        assert!(
            live.iter()
                .enumerate()
                .all(|(i, v)| v.iter().all(|b| *b == i as u8))
        );
    }
}
