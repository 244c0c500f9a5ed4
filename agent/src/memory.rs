//! glibc malloc settings for a long-running agent with a handful of threads.

/// Caps glibc's malloc arenas at [`ARENAS`] unless the operator chose a
/// value (`MALLOC_ARENA_MAX` or `GLIBC_TUNABLES` in the environment).
///
/// Why: glibc gives a thread that finds the main arena busy an arena of its
/// own (up to eight per core) and keeps what each arena freed resident. A
/// scrape runs on whichever Tokio worker picks it up, so after a while every
/// worker's arena holds its own copy of a scrape's transient buffers (the
/// encoded text, the gzip state): about 1 MiB of resident memory per arena
/// that buys nothing for a process whose threads rarely allocate at the
/// same moment. Backups do their heavy lifting in zstd's and age's large,
/// long-lived buffers, not in small allocations, so they do not contend.
pub fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some()
        || std::env::var_os("GLIBC_TUNABLES").is_some()
    {
        return;
    }
    set_arena_max(ARENAS);
}

/// Arenas the agent runs with. One: a node scrape's peak RSS measured 12.0
/// MiB with one arena, 13.3 with two and 13.4 unbounded (scripts/bench-node,
/// 2026-11-30); the threads that allocate at the same moment (a scrape and a
/// backup's stages) take the lock a few thousand times a second at most.
const ARENAS: i32 = 1;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_arena_max(arenas: i32) {
    // SAFETY: mallopt(3) only changes allocator parameters and takes no
    // pointers; it is called from `main` before any other thread exists,
    // and a value it rejects is ignored (it returns 0, nothing changes).
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_arena_max(_arenas: i32) {}
