//! `cxr`: chest X-ray classification — train, evaluate, predict, interpret, serve.

mod cli;

/// candle allocates and frees multi-megabyte buffers on every op. glibc's
/// malloc either grows per-thread heaps it never gives back (a training run
/// passed 14 GB RSS) or, with a low mmap threshold, maps and unmaps every
/// buffer, and a third of a training step went to page faults. mimalloc
/// reuses freed pages across threads and returns idle ones: both go away.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (the same index in its v2 and v3 headers).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// By default mimalloc hands freed pages back to the OS after 10 ms, and the
/// next op's fresh buffer faults them in again, zeroed by the kernel: perf
/// put a sixth of an inference step in `clear_page`. A command that runs to
/// its end (train, bench, evaluate, ...) never hands pages back: with any
/// finite delay, 1 s or 10 s alike, `clear_page` still took 5 % of a b16@128
/// training step, 2.4 % without purging. The server (`long_running`) does
/// after 1 s, so its idle RSS falls back (never purging kept it at its
/// start-up peak, 186 vs 118 MB). An explicit MIMALLOC_PURGE_DELAY wins.
fn configure_allocator(long_running: bool) {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        let delay = if long_running { 1000 } else { -1 };
        // SAFETY: sets a plain integer option; mimalloc reads it on its next purge.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, delay) };
    }
}

/// candle's element-wise CPU ops (its adds, in every backward) split over
/// a pool of their own whose workers spin for a while after each op, on the
/// cores that rayon's workers run cxr's kernels on; with three threads on
/// two cores the steps spread. One thread for candle's ops (they are a
/// small part of a step): train b16@128 median step 382 vs 424 ms (5
/// interleaved pairs of 8 steps). An explicit CANDLE_NUM_THREADS wins, and
/// with `CXR_KERNELS=candle` (candle's ops only, for comparison) candle keeps
/// its own default.
fn configure_candle_threads() {
    if cxr_models::kernels::enabled() && std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // Before any other thread exists: nothing reads the environment concurrently.
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

fn main() -> std::process::ExitCode {
    // An invalid CXR_KERNELS stops the program before anything runs.
    if let Err(e) = cxr_models::kernels::init_from_env() {
        eprintln!("error: {e}");
        return std::process::ExitCode::from(2);
    }
    configure_candle_threads();
    cli::main(configure_allocator)
}
