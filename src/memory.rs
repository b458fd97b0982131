//! Handing freed memory back to the operating system after a large build.
//!
//! A start, the first sync and a reload build a whole directory and then drop what they built it from (the
//! parsed state file, the index additions of each batch, part-full index blocks). glibc's allocator keeps
//! such pages mapped unless they happen to lie at the top of the heap, so the process went on holding a few
//! hundred MiB it no longer used; `malloc_trim` returns the free pages of every arena.

/// Give the allocator's free pages back to the OS (glibc; with other allocators there is nothing to do).
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer from us; it walks the allocator's own free lists, locking each
    // arena, and may run while other threads allocate.
    unsafe {
        libc::malloc_trim(0);
    }
}
