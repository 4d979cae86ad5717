//! `cxr`: chest X-ray classification — train, evaluate, predict, interpret, serve.

mod cli;

fn main() -> std::process::ExitCode {
    limit_heap_growth();
    cli::main()
}

/// candle allocates and frees multi-megabyte buffers on every op. glibc then
/// raises its mmap threshold and serves them from per-thread heaps that it
/// never gives back: a training run grew past 14 GB RSS. A fixed 128 KiB
/// threshold keeps big buffers on mmap (returned on free): the same run stays
/// under 2 GB.
fn limit_heap_growth() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
