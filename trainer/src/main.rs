//! `seqrec`: the command-line tool. See `seqrec --help`.

fn main() {
    keep_freed_memory();
    std::process::exit(seqrec_trainer::cli::main());
}

/// A training step allocates and frees the same few megabytes of activations and gradients
/// every time. glibc serves blocks of that size with `mmap` and gives them back to the system
/// on `free` (or trims them off the heap's top), so every step paid for zeroed fresh pages:
/// about a tenth of an RL head's training time went to page faults. Keeping freed memory in the
/// process reuses the pages; the footprint stays that of the largest step. Blocks above 32 MiB
/// (glibc's largest mmap threshold) are still mapped and unmapped each time.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // SAFETY: mallopt only changes allocator parameters; it is called before any thread starts
    // and takes no pointers.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}
