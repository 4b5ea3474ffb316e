//! The process's heap: giving freed memory back to the operating system.
//!
//! glibc returns memory only from the top of its heap on its own. A burst of
//! small allocations freed together (the events of a large `/sync`, 32
//! concurrent senders) otherwise stays resident as free memory between live
//! allocations, under whatever peak comes next. (After load.py's quick send
//! scenario, 12 s later: 7.0 MiB of anonymous memory resident without a
//! release, 5.2 MiB with one.)

/// Responses at least this large give the heap back once built: building
/// one allocates its events one by one, far more than the body it becomes.
pub const HEAP_RELEASE_AFTER_BYTES_MIN: usize = 1024 * 1024;

/// Gives the allocator's free heap pages back to the operating system
/// (glibc's `malloc_trim`; nothing elsewhere). Takes about as long as a
/// walk over the heap's free chunks: for occasional use, after a burst.
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the OS; it takes the
    // allocator's own locks and is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
