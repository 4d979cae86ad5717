//! A section of many parallel ops (a prediction, a training step) run with
//! rayon's other workers kept polling for work instead of going to sleep
//! between ops. It matters most where the ops are short (batch 1: some sixty
//! ops of well under a millisecond) or where serial work sits between them
//! (a training step's candle ops and bookkeeping).
//!
//! Called from outside the pool, every parallel op parks the calling thread
//! on a lock until the workers finish, and a worker idle for some tens of
//! microseconds (the gap between two ops) parks too: each op then pays for
//! waking threads through the kernel, which perf put at about a tenth of a
//! batch-1 inference (`__schedule`, `futex`, `sched_yield`). Here the section
//! runs on a worker thread, and each other worker runs a helper that takes
//! any pending pool work (`rayon::yield_now`) until the section ends, as
//! onnxruntime's spinning thread pool does (idle, it spins a little, then
//! yields its core to the OS between polls): batch-1 inference min 18.0 vs
//! 19.1 ms, a b16@128 training step median ~350 vs ~379 ms (interleaved
//! pairs). `CXR_KERNELS=-hot-pool` turns it off.

use super::plan::{settings, Toggle};
use candle_core::Device;
use std::sync::atomic::{AtomicBool, Ordering};

/// Idle polls a helper spins through before it starts yielding its core to
/// the OS at each poll: always yielding made batch-1 inference 1-2 % slower,
/// never yielding would keep other threads (a server's request handlers
/// while a job trains) off the core.
const SPINS: u32 = 256;

/// Runs `f`, whose ops run on `device`, on a rayon worker while the pool's
/// other workers poll for work; on another device than the CPU, as it is.
pub fn hot_pool<R: Send>(device: &Device, f: impl FnOnce() -> R + Send) -> R {
    let threads = rayon::current_num_threads();
    if !device.is_cpu() || threads < 2 || !settings().on(Toggle::HotPool) {
        return f();
    }
    let done = AtomicBool::new(false);
    rayon::scope(|s| {
        let owner = rayon::current_thread_index();
        for _ in 1..threads {
            let done = &done;
            s.spawn(move |_| {
                // The section's own worker may pop a helper while it waits
                // inside `f`; spinning there would never let `f` finish.
                if rayon::current_thread_index() == owner {
                    return;
                }
                let mut idle = 0u32;
                while !done.load(Ordering::Acquire) {
                    if rayon::yield_now() == Some(rayon::Yield::Executed) {
                        idle = 0;
                    } else if idle < SPINS {
                        idle += 1;
                        std::hint::spin_loop();
                    } else {
                        // Gives the core to any other runnable thread (the
                        // server's request handlers while a job trains).
                        std::thread::yield_now();
                    }
                }
            });
        }
        /// Ends the helpers however `f` ends (a panic too).
        struct Done<'a>(&'a AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
            }
        }
        let _done = Done(&done);
        f()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    /// The section's result comes back, nested parallel work inside it
    /// completes, and a panic inside it reaches the caller instead of
    /// leaving helpers spinning.
    #[test]
    fn runs_nested_parallel_work_and_ends_on_panic() {
        let cpu = &Device::Cpu;
        let sum: u64 = hot_pool(cpu, || (0..10_000u64).into_par_iter().map(|v| v * 2).sum());
        assert_eq!(sum, 99_990_000);
        let nested = hot_pool(cpu, || hot_pool(cpu, || rayon::join(|| 1, || 2)));
        assert_eq!(nested, (1, 2));
        let r = std::panic::catch_unwind(|| {
            hot_pool(cpu, || {
                (0..64)
                    .into_par_iter()
                    .for_each(|i| assert_ne!(i, 63, "boom"));
            })
        });
        assert!(r.is_err());
    }
}
