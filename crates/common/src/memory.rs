//! Giving memory back: after a burst (a backlog of messages drained), the
//! C allocator keeps the freed pages for later, so a daemon's resident
//! memory stays at its peak. Daemons call [`release_free`] once they have
//! been quiet for a while after heavy work.

/// Returns the allocator's free memory, in every thread's arena, to the
/// kernel. Takes milliseconds for a large heap: call it off the async
/// threads (`spawn_blocking`).
pub fn release_free() {
    // SAFETY: malloc_trim only walks the allocator's own free lists and
    // takes its locks; it has no preconditions on the caller.
    unsafe {
        libc::malloc_trim(0);
    }
}
