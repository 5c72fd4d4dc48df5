//! Running a sequence of ops (a decode step) on the compute pool with its threads awake.
//!
//! A decode step is a chain of small kernels, some parallel (matrix products, attention),
//! some not (norms, residual adds). Between two parallel kernels rayon's idle threads go to
//! sleep, and every parallel kernel then wakes them through the kernel (a futex, an
//! inter-processor interrupt: 10–15 % of a batch-32 decode step on a 2-core VM, measured with
//! `perf`). OpenMP runtimes (`OMP_WAIT_POLICY=active`) and llama.cpp's thread pool spin
//! between ops instead; [`run_awake`] does the same for the length of one call: each other
//! thread of the pool runs a job that keeps taking the call's work (`rayon::yield_now`) until
//! the call returns.
//!
//! A waiting thread yields its core (`sched_yield`) between its looks for work rather than
//! spinning in place. On an idle machine the call returns at once (a system call where a
//! spin was a pause instruction); on a busy one (a server's network threads, its clients,
//! other programs) the scheduler runs the other ready threads on the waiting thread's core in
//! the step's serial stretches, instead of preempting whichever thread they land on, in the
//! middle of a parallel kernel whose other half then waits for it. `nanochat bench serve` on the speedrun's d4 at 32 clients
//! (2-core VM, 9 alternating pairs over two runs): yielding gave the higher tok/s in 6 pairs,
//! medians +9 % and +11 %; `bench infer` alone was 0–7 % slower at batch 32 (three runs of
//! 5–7 rounds).
//!
//! Deadlock freedom: a keeper never runs on the thread that runs the call (that thread may
//! meet it while waiting inside a join, and would then wait for itself), nor inside another
//! keeper; and a keeper that finds no work for [`IDLE_LIMIT`] ends early, so a keeper taken
//! up by a thread in the middle of someone else's wait only delays it.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long a keeper spins without finding work before it gives its thread back.
const IDLE_LIMIT: Duration = Duration::from_millis(2);

thread_local! {
    static KEEPING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` on a thread of rayon's pool while the pool's other threads wait for its work
/// awake (spinning) rather than asleep.
pub(super) fn run_awake<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let helpers = rayon::current_num_threads().saturating_sub(1);
    let done = AtomicBool::new(false);
    rayon::scope(|s| {
        let owner = rayon::current_thread_index();
        for _ in 0..helpers {
            let done = &done;
            s.spawn(move |_| keep_awake(done, owner));
        }
        let r = f();
        done.store(true, Ordering::Release);
        r
    })
}

/// Takes the pool's work until `done` (see the module docs for when it returns at once).
fn keep_awake(done: &AtomicBool, owner: Option<usize>) {
    if rayon::current_thread_index() == owner || KEEPING.with(Cell::get) {
        return;
    }
    KEEPING.with(|k| k.set(true));
    let mut idle_since = Instant::now();
    while !done.load(Ordering::Acquire) {
        match rayon::yield_now() {
            Some(rayon::Yield::Executed) => idle_since = Instant::now(),
            // No work: give the core to any other thread that is ready to run (see the
            // module docs); `sched_yield` returns at once when there is none.
            Some(rayon::Yield::Idle) if idle_since.elapsed() < IDLE_LIMIT => {
                std::thread::yield_now();
            }
            _ => break,
        }
    }
    KEEPING.with(|k| k.set(false));
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    #[test]
    fn runs_nested_parallel_work_and_returns() {
        // Parallel kernels inside the call, joins inside joins: the keepers take part and
        // end with the call.
        for _ in 0..50 {
            let sum: u64 = run_awake(|| {
                (0..64u64)
                    .into_par_iter()
                    .map(|i| {
                        let (a, b) = rayon::join(|| i * 2, || (0..i).into_par_iter().sum::<u64>());
                        a + b
                    })
                    .sum()
            });
            let want: u64 = (0..64u64)
                .map(|i| i * 2 + i * i.saturating_sub(1) / 2)
                .sum();
            assert_eq!(sum, want);
        }
    }

    #[test]
    fn nested_calls_do_not_wait_for_themselves() {
        let v: Vec<u64> = (0..8u64)
            .into_par_iter()
            .map(|i| run_awake(|| run_awake(|| i + 1)))
            .collect();
        assert_eq!(v, (1..=8).collect::<Vec<_>>());
    }
}
