//! The rank supervisor: torchrun's process launch and torch.distributed's failure handling for
//! [`run_ranks`] (upstream runs one process per GPU under `torchrun`; here a node is one
//! process with one thread per device).
//!
//! Each rank runs in its own thread; the supervisor waits for their outcomes and acts on two
//! kinds of trouble:
//!
//! - **a rank fails** (an error or a panic): it resets the collective, so that the ranks
//!   waiting in an all-reduce get an error instead of waiting forever, and reports the first
//!   failure;
//! - **a rank waits too long** in one collective operation (registration included):
//!   [`DistributedConfig::collective_timeout_s`], torch.distributed's `timeout`. Another node
//!   is dead, hung or unreachable; the supervisor treats it as that rank's failure.
//!
//! Either way the other ranks get [`GRACE`] to return. A thread still blocked after that sits
//! inside burn's engine waiting for the network, and cannot be interrupted: the supervisor
//! then prints the failure and ends the process (status 1), as NCCL's watchdog aborts a
//! process whose collective timed out. Checkpoints are written atomically, so the last one on
//! disk stays whole either way.

use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use burn::collective::{CollectiveConfig, PeerId, finish_collective, register, reset_collective};
use burn::module::Module;
use burn::tensor::backend::Backend;
use nanochat_core::{DistributedConfig, Validate};

use super::{Rank, RankFailure, RunError, rank_device};

/// How long the other ranks get to return once the run has failed, before the process ends.
pub const GRACE: Duration = Duration::from_secs(10);

/// How often the supervisor looks at the ranks' waits.
const TICK: Duration = Duration::from_millis(200);

/// What the supervisor sees of its ranks while they run: since when, and in which operation,
/// each local rank has been waiting in the collective; whether burn's engine has stopped.
#[derive(Debug)]
pub(super) struct Watch {
    waiting: Mutex<Vec<Option<(Instant, &'static str)>>>,
    engine_stopped: AtomicBool,
    resetting: AtomicBool,
}

/// Marks a rank as waiting in the collective until dropped.
pub(super) struct Waiting<'a> {
    watch: &'a Watch,
    local_rank: usize,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Ok(mut w) = self.watch.waiting.lock() {
            w[self.local_rank] = None;
        }
    }
}

impl Watch {
    fn new(local_ranks: usize) -> Self {
        Self {
            waiting: Mutex::new(vec![None; local_ranks]),
            engine_stopped: AtomicBool::new(false),
            resetting: AtomicBool::new(false),
        }
    }

    /// `local_rank` enters collective operation `op`, until the guard is dropped.
    pub(super) fn enter(&self, local_rank: usize, op: &'static str) -> Waiting<'_> {
        if let Ok(mut w) = self.waiting.lock() {
            w[local_rank] = Some((Instant::now(), op));
        }
        Waiting {
            watch: self,
            local_rank,
        }
    }

    /// A rank saw `LocalServerMissing`. Unless the supervisor reset the collective (which
    /// drops the waiting ranks' replies), burn's engine task has ended: nothing can reset it.
    /// Returns whether it had ended.
    pub(super) fn engine_missing(&self) -> bool {
        if self.resetting.load(Ordering::SeqCst) {
            return false;
        }
        self.engine_stopped.store(true, Ordering::SeqCst);
        true
    }

    /// The local rank that has waited longest, if longer than `limit`: (rank, op, waited).
    fn overdue(&self, limit: Duration) -> Option<(usize, &'static str, Duration)> {
        let w = self.waiting.lock().ok()?;
        w.iter()
            .enumerate()
            .filter_map(|(r, s)| s.map(|(since, op)| (r, op, since.elapsed())))
            .filter(|(_, _, waited)| *waited > limit)
            .max_by_key(|(_, _, waited)| *waited)
    }
}

fn collective_config(cfg: &DistributedConfig) -> CollectiveConfig {
    let mut c = CollectiveConfig::default().with_num_devices(cfg.devices);
    if cfg.is_multi_node() {
        // burn's WebSocket client refuses an address without its `ws://` scheme.
        let addr = |s: &Option<String>| {
            let s = s.as_deref().unwrap_or_default();
            let url = if s.contains("://") {
                s.to_string()
            } else {
                format!("ws://{s}")
            };
            url.parse().expect("Address parsing is infallible")
        };
        c = c
            .with_num_nodes(cfg.num_nodes as u32)
            .with_global_address(addr(&cfg.orchestrator))
            .with_node_address(addr(&cfg.node_address))
            .with_data_service_port(cfg.data_port.unwrap_or_default());
    }
    c
}

/// Runs `body` with `model`: alone on `device` through [`Rank::single`] when `cfg` is `None`,
/// else once per local rank ([`run_ranks`]) with a copy of `model` moved to the rank's device
/// (same weights, same parameter ids). Returns local rank 0's result. `MB` is the model's
/// backend, `R` the one reductions run on (the inner backend under autodiff).
pub fn run_replicated<MB, R, M, T, E, F>(
    cfg: Option<&DistributedConfig>,
    device: &R::Device,
    model: M,
    body: F,
) -> Result<T, E>
where
    MB: Backend<Device = R::Device>,
    R: Backend,
    M: Module<MB> + Sync,
    T: Send,
    E: std::fmt::Display + From<RunError>,
    F: Fn(M, Rank<R>) -> Result<T, E> + Sync,
{
    match cfg {
        None => body(model, Rank::single(device.clone())),
        Some(cfg) => {
            let mut out = run_ranks::<R, T, E, _>(cfg, device, |rank| {
                body(model.clone().fork(&rank.device), rank)
            })?;
            Ok(out.swap_remove(0))
        }
    }
}

/// How a rank's thread ended.
enum Outcome<T> {
    Done(T),
    Failed(String),
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = p.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".to_string()
    }
}

/// The first failure: say so and reset the collective, so that the ranks waiting in it get an
/// error. A stopped engine cannot take a reset (its channel is closed: sending panics).
fn stop<B: Backend>(failure: &RankFailure, watch: &Watch) {
    tracing::error!(
        "rank {} failed: {}; stopping every rank",
        failure.rank,
        failure.message
    );
    watch.resetting.store(true, Ordering::SeqCst);
    if !watch.engine_stopped.load(Ordering::SeqCst) {
        let _ = catch_unwind(reset_collective::<B>);
    }
}

/// Runs `body` once per local device of `cfg`, each in its own thread with its [`Rank`], and
/// returns their results in local-rank order. `first` is local rank 0's device (see
/// [`rank_device`]).
///
/// The first rank to fail (error or panic), or to wait longer than
/// [`DistributedConfig::collective_timeout_s`] in one collective operation, makes the
/// supervisor reset the collective: ranks blocked in a reduction then fail too, every thread
/// ends, and the first failure is returned. When a thread is still blocked [`GRACE`] later (in
/// burn's engine, on the network), the process ends with the failure printed (see the module
/// header). Nothing is written on behalf of a failed step, so the last checkpoint stays as it
/// was.
pub fn run_ranks<B, T, E, F>(
    cfg: &DistributedConfig,
    first: &B::Device,
    body: F,
) -> Result<Vec<T>, RunError>
where
    B: Backend,
    T: Send,
    E: std::fmt::Display,
    F: Fn(Rank<B>) -> Result<T, E> + Sync,
{
    let world_size = cfg.world_size();
    let fail = |rank, message| RankFailure {
        rank,
        world_size,
        message,
        others: Vec::new(),
    };
    cfg.validate().map_err(|e| RunError::Setup(e.to_string()))?;
    reset_collective::<B>();
    let collective = collective_config(cfg);
    let timeout = Duration::from_secs(cfg.collective_timeout_s);
    let watch = Arc::new(Watch::new(cfg.devices));
    let (tx, rx) = mpsc::channel::<(usize, Outcome<T>)>();
    std::thread::scope(|scope| {
        for local in 0..cfg.devices {
            let tx = tx.clone();
            let body = &body;
            let collective = collective.clone();
            let rank = Rank::<B> {
                rank: cfg.global_rank(local),
                local_rank: local,
                world_size,
                device: rank_device::<B>(first, local),
                collective: true,
                num_nodes: cfg.num_nodes,
                watch: Some(watch.clone()),
                _backend: PhantomData,
            };
            std::thread::Builder::new()
                .name(format!("rank-{}", rank.rank))
                .spawn_scoped(scope, move || {
                    let id = PeerId(rank.rank as u32);
                    let global = rank.rank;
                    let watch = rank.watch.clone();
                    let waiting = |op| watch.as_ref().map(|w| w.enter(local, op));
                    let outcome = catch_unwind(AssertUnwindSafe(|| {
                        let registered = waiting("registration (every node joins the run)");
                        register::<B>(id, rank.device.clone(), collective)
                            .map_err(rank.err("register"))
                            .map_err(|e| e.to_string())?;
                        drop(registered);
                        let out = body(rank).map_err(|e| e.to_string())?;
                        let _finishing = waiting("finish");
                        finish_collective::<B>(id).ok();
                        Ok::<T, String>(out)
                    }));
                    let outcome = match outcome {
                        Ok(Ok(v)) => Outcome::Done(v),
                        Ok(Err(e)) => Outcome::Failed(e),
                        Err(p) => Outcome::Failed(panic_message(p)),
                    };
                    tx.send((global, outcome)).ok();
                })
                .expect("spawn a rank thread");
        }
        drop(tx);
        let mut done: Vec<(usize, T)> = Vec::new();
        let mut first_failure: Option<RankFailure> = None;
        let mut give_up_at: Option<Instant> = None;
        loop {
            match rx.recv_timeout(TICK) {
                Ok((rank, Outcome::Done(v))) => done.push((rank, v)),
                Ok((rank, Outcome::Failed(message))) => match &mut first_failure {
                    None => {
                        let f = fail(rank, message);
                        stop::<B>(&f, &watch);
                        first_failure = Some(f);
                        give_up_at = Some(Instant::now() + GRACE);
                    }
                    Some(f) => f.others.push((rank, message)),
                },
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if first_failure.is_none()
                        && let Some((local, op, waited)) = watch.overdue(timeout)
                    {
                        let message = format!(
                            "{op} did not complete in {:.0} s (--collective-timeout {}): \
                             another rank or node is dead, hung or unreachable",
                            waited.as_secs_f64(),
                            cfg.collective_timeout_s
                        );
                        let f = fail(cfg.global_rank(local), message);
                        stop::<B>(&f, &watch);
                        first_failure = Some(f);
                        give_up_at = Some(Instant::now() + GRACE);
                    }
                    if let (Some(at), Some(f)) = (give_up_at, &first_failure)
                        && Instant::now() >= at
                    {
                        // The rest are blocked inside burn's engine: end the process.
                        eprintln!(
                            "Error: {} (ranks still blocked in the collective after {} s: \
                             ending the process)",
                            RunError::from(f.clone()),
                            GRACE.as_secs()
                        );
                        std::process::exit(1);
                    }
                }
            }
        }
        match first_failure {
            Some(f) => Err(f.into()),
            None => {
                done.sort_by_key(|(r, _)| *r);
                Ok(done.into_iter().map(|(_, v)| v).collect())
            }
        }
    })
}

#[cfg(all(test, any(feature = "flex", feature = "ndarray")))]
mod tests {
    use super::*;
    use crate::TestBackend;

    #[test]
    fn a_bad_layout_is_refused_before_any_rank_starts() {
        let mut bad = DistributedConfig::local(1);
        bad.num_nodes = 2;
        bad.node_rank = 2;
        let err = run_ranks::<TestBackend, (), String, _>(&bad, &Default::default(), |_| Ok(()))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot start the data-parallel run: invalid DistributedConfig.node_rank = 2: must be <= num_nodes - 1 (= 1)"
        );
    }

    /// Rank 1 never joins the all-reduce rank 0 waits in (as a hung node would): past the
    /// timeout the supervisor stops the run, rank 0 gets an error instead of waiting forever,
    /// and the failure says what waited and for how long.
    #[test]
    fn a_rank_waiting_past_the_timeout_stops_the_run() {
        let mut cfg = DistributedConfig::local(2);
        cfg.collective_timeout_s = 1;
        let start = Instant::now();
        let err = run_ranks::<TestBackend, (), String, _>(&cfg, &Default::default(), |rank| {
            if rank.rank == 0 {
                rank.sum_f64(&[1.0]).map_err(|e| e.to_string())?;
            } else {
                std::thread::sleep(Duration::from_secs(3));
            }
            Ok(())
        })
        .unwrap_err();
        let RunError::Rank(f) = &err else {
            panic!("{err}")
        };
        assert_eq!(f.rank, 0, "{err}");
        assert!(
            f.message
                .starts_with("all-reduce did not complete in 1 s (--collective-timeout 1)"),
            "{err}"
        );
        assert!(start.elapsed() < GRACE, "{:?}", start.elapsed());
    }
}
