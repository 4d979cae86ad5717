//! `cxr`: chest X-ray classification — train, evaluate, predict, interpret, serve.

mod cli;

/// candle allocates and frees multi-megabyte buffers on every op. glibc's
/// malloc either grows per-thread heaps it never gives back (a training run
/// passed 14 GB RSS) or, with a low mmap threshold, maps and unmaps every
/// buffer, and a third of a training step went to page faults. mimalloc
/// reuses freed pages across threads and returns idle ones: both go away.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
