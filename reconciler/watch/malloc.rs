//! The daemon's memory over months. glibc gives a thread that meets
//! contention on malloc its own arena (up to eight per core) and keeps the
//! pages an arena once held; tokio's blocking pool starts and ends threads
//! all the time, so each new thread can bring a fresh arena. In the fault
//! soak the daemon's heap (`RssAnon`) crept up by about 0.4 MiB a minute
//! with nothing live to show for it (heaptrack: a peak of 3 MiB of live
//! allocations). Two arenas keep it flat at no measurable cost for a
//! daemon that runs a few blocking jobs at once. An operator's own
//! `MALLOC_ARENA_MAX` wins; other C libraries are left alone.

/// The arenas the daemon allows: the main one and one for its threads.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS: libc::c_int = 2;

/// Caps glibc's malloc arenas unless the environment already does.
pub(super) fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: `mallopt` only sets one of glibc's malloc parameters and
        // takes malloc's own lock to do so; M_ARENA_MAX bounds the arenas
        // created from then on, so it is sound with threads running.
        let _ = unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENAS) };
    }
}
