//! Data parallelism on burn's collective engine (`burn::collective`): what torchrun and
//! `torch.distributed` do for upstream (`nanochat/common.py` `compute_init`, the all-reduces in
//! `optim.py`, `loss_eval.py` and `core_eval.py`).
//!
//! [`run_ranks`] starts one thread per local device, registers each as a peer of the
//! collective (node-major global ranks, multi-node through burn's orchestrator when
//! [`DistributedConfig::num_nodes`] > 1) and hands the body a [`Rank`]. When a rank fails —
//! an error or a panic — the supervisor resets the collective so that the ranks waiting in an
//! all-reduce get an error instead of waiting forever, and it reports the first failure.
//!
//! [`Rank`] carries the reductions the loops need: gradient averaging, sums of scalars
//! (bits-per-byte numerators, CORE counts) and gathering bytes (per-rank loader states). A
//! [`Rank::single`] does no communication at all, which is the default path. [`run_replicated`]
//! chooses between the two for a loop that owns a model.

use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;

use burn::collective::{
    CollectiveConfig, PeerId, ReduceOperation, all_reduce, finish_collective, register,
    reset_collective,
};
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend, Device, DeviceOps};
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use nanochat_core::{DistributedConfig, Validate};

/// Why a collective operation or the rank layout failed.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// The collective engine returned an error (often: another rank failed and the collective
    /// was reset).
    #[error("rank {rank}: {op} failed in the collective engine: {detail}")]
    Collective {
        /// Global rank that saw the error.
        rank: usize,
        /// The operation (`register`, `all-reduce`, …).
        op: &'static str,
        /// The engine's error.
        detail: String,
    },
}

/// Why [`run_ranks`] returned without results.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The run could not start (an invalid layout, or multi-node refused); no rank ran.
    #[error("cannot start the data-parallel run: {0}")]
    Setup(String),
    /// A rank failed and the others were stopped.
    #[error(transparent)]
    Rank(#[from] RankFailure),
}

/// A rank that failed, as reported by [`run_ranks`].
#[derive(Debug, thiserror::Error)]
#[error("rank {rank} of {world_size} failed: {message}{}", others_suffix(.others))]
pub struct RankFailure {
    /// Global rank of the first failure.
    pub rank: usize,
    /// Ranks in the run.
    pub world_size: usize,
    /// Its error (or panic message).
    pub message: String,
    /// The ranks stopped because of it, with what they saw.
    pub others: Vec<(usize, String)>,
}

fn others_suffix(others: &[(usize, String)]) -> String {
    if others.is_empty() {
        String::new()
    } else {
        let ranks: Vec<String> = others.iter().map(|(r, _)| r.to_string()).collect();
        if ranks.len() == 1 {
            format!(" (rank {} was stopped)", ranks[0])
        } else {
            format!(" (ranks {} were stopped)", ranks.join(", "))
        }
    }
}

/// One data-parallel rank: its index, the world size and its device. `B` is the backend the
/// tensors being reduced live on (the inner backend under autodiff).
#[derive(Debug, Clone)]
pub struct Rank<B: Backend> {
    /// Global rank (upstream `ddp_rank`).
    pub rank: usize,
    /// Rank within this node (upstream `ddp_local_rank`).
    pub local_rank: usize,
    /// Ranks in the run (upstream `ddp_world_size`).
    pub world_size: usize,
    /// This rank's device.
    pub device: B::Device,
    collective: bool,
    _backend: PhantomData<B>,
}

impl<B: Backend> Rank<B> {
    /// A lone process: rank 0 of 1, every reduction is the identity, no collective.
    pub fn single(device: B::Device) -> Self {
        Self {
            rank: 0,
            local_rank: 0,
            world_size: 1,
            device,
            collective: false,
            _backend: PhantomData,
        }
    }

    /// Rank 0 logs, evaluates samples and writes the model (upstream `master_process`).
    pub fn is_master(&self) -> bool {
        self.rank == 0
    }

    /// Whether reductions go through the collective engine (also with one device when the
    /// run asked for `--devices`).
    pub fn uses_collective(&self) -> bool {
        self.collective
    }

    fn err(&self, op: &'static str) -> impl Fn(burn::collective::CollectiveError) -> DistError {
        let rank = self.rank;
        move |e| DistError::Collective {
            rank,
            op,
            detail: format!("{e:?}"),
        }
    }

    /// Averages gradients over the ranks (upstream's DDP all-reduce, `ReduceOp.AVG`).
    /// Parameters are reduced in `model`'s module order, which every process agrees on
    /// (parameter ids are random per process, so burn's id-ordered
    /// `GradientsParams::all_reduce` would pair different tensors across nodes).
    pub fn all_reduce_grads<A, M>(
        &self,
        model: &M,
        grads: GradientsParams,
    ) -> Result<GradientsParams, DistError>
    where
        A: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<A>,
    {
        self.reduce_grads(model, grads, ReduceOperation::Mean)
    }

    /// Sums gradients over the ranks (for losses already divided by a global count, as SFT's
    /// token-weighted loss is), in module order like [`Rank::all_reduce_grads`].
    pub fn sum_grads<A, M>(
        &self,
        model: &M,
        grads: GradientsParams,
    ) -> Result<GradientsParams, DistError>
    where
        A: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<A>,
    {
        self.reduce_grads(model, grads, ReduceOperation::Sum)
    }

    fn reduce_grads<A, M>(
        &self,
        model: &M,
        mut grads: GradientsParams,
        op: ReduceOperation,
    ) -> Result<GradientsParams, DistError>
    where
        A: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<A>,
    {
        if !self.collective {
            return Ok(grads);
        }
        let mut visitor = ReduceGrads::<A> {
            grads: &mut grads,
            peer: PeerId(self.rank as u32),
            op,
            error: None,
            _backend: PhantomData,
        };
        model.visit(&mut visitor);
        match visitor.error {
            Some(e) => Err(self.err("gradient all-reduce")(e)),
            None => Ok(grads),
        }
    }

    fn all_reduce_tensor(
        &self,
        t: Tensor<B, 1>,
        op: ReduceOperation,
    ) -> Result<Tensor<B, 1>, DistError> {
        let prim = all_reduce::<B>(PeerId(self.rank as u32), t.into_primitive().tensor(), op)
            .map_err(self.err("all-reduce"))?;
        Ok(Tensor::from_primitive(TensorPrimitive::Float(prim)))
    }

    /// Sums `values` over the ranks. Each value travels as a float32 pair (value and rounding
    /// remainder), so sums of large counts keep about 14 significant digits.
    pub fn sum_f64(&self, values: &[f64]) -> Result<Vec<f64>, DistError> {
        if !self.collective || values.is_empty() {
            return Ok(values.to_vec());
        }
        let mut split = Vec::with_capacity(2 * values.len());
        for &v in values {
            let hi = v as f32;
            split.push(hi);
            split.push((v - hi as f64) as f32);
        }
        let n = split.len();
        let t = Tensor::<B, 1>::from_data(TensorData::new(split, [n]), &self.device);
        let summed = self.all_reduce_tensor(t, ReduceOperation::Sum)?;
        let back: Vec<f32> = summed
            .into_data()
            .convert::<f32>()
            .into_vec()
            .expect("float32 data");
        Ok(back.chunks(2).map(|p| p[0] as f64 + p[1] as f64).collect())
    }

    /// Every rank's `bytes`, in rank order (upstream `all_gather_object`). Built on the
    /// all-reduce: each rank fills its own slot of a zero tensor and the slots are summed; a
    /// byte is exact in float32.
    pub fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, DistError> {
        if !self.collective {
            return Ok(vec![bytes.to_vec()]);
        }
        let w = self.world_size;
        let mut lens = vec![0.0; w];
        lens[self.rank] = bytes.len() as f64;
        let lens: Vec<usize> = self.sum_f64(&lens)?.iter().map(|&l| l as usize).collect();
        let width = lens.iter().copied().max().unwrap_or(0).max(1);
        let mut slots = vec![0f32; w * width];
        for (i, &b) in bytes.iter().enumerate() {
            slots[self.rank * width + i] = b as f32;
        }
        let t = Tensor::<B, 1>::from_data(TensorData::new(slots, [w * width]), &self.device);
        let all: Vec<f32> = self
            .all_reduce_tensor(t, ReduceOperation::Sum)?
            .into_data()
            .convert::<f32>()
            .into_vec()
            .expect("float32 data");
        Ok((0..w)
            .map(|r| {
                all[r * width..r * width + lens[r]]
                    .iter()
                    .map(|&v| v as u8)
                    .collect()
            })
            .collect())
    }
}

/// All-reduces each parameter's gradient in module order.
struct ReduceGrads<'a, A: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    peer: PeerId,
    op: ReduceOperation,
    error: Option<burn::collective::CollectiveError>,
    _backend: PhantomData<A>,
}

impl<A: AutodiffBackend> ModuleVisitor<A> for ReduceGrads<'_, A> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<A, D>>) {
        if self.error.is_some() {
            return;
        }
        let Some(grad) = self.grads.remove::<A::InnerBackend, D>(param.id) else {
            return;
        };
        match all_reduce::<A::InnerBackend>(self.peer, grad.into_primitive().tensor(), self.op) {
            Ok(t) => self.grads.register::<A::InnerBackend, D>(
                param.id,
                Tensor::from_primitive(TensorPrimitive::Float(t)),
            ),
            Err(e) => self.error = Some(e),
        }
    }
}

/// The device of local rank `local_rank`: the same backend's device `local_rank` places after
/// `first` (CUDA `cuda:N+r`, WGPU discrete GPU `N+r`), or `first` itself where a backend has
/// one device (the CPU: its ranks share the cores).
pub fn rank_device<B: Backend>(first: &B::Device, local_rank: usize) -> B::Device {
    let mut id = first.id();
    id.index_id += local_rank as u16;
    let device = B::Device::from_id(id);
    if device.id() == id {
        device
    } else {
        first.clone()
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

/// Set this environment variable to run multi-node anyway (with a burn whose collective
/// synchronisation is fixed).
pub const MULTI_NODE_OVERRIDE: &str = "NANOCHAT_UNSAFE_MULTI_NODE";

const MULTI_NODE_REFUSAL: &str = "multi-node runs hang in burn 0.21's collective: \
     `SyncService::sync` clears a copy of its list of synced peers instead of the list, so \
     every global all-reduce after the first waits forever (reproduced with 2 local nodes). \
     Set NANOCHAT_UNSAFE_MULTI_NODE=1 to try anyway with a patched burn-collective";

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

/// Runs `body` once per local device of `cfg`, each in its own thread with its [`Rank`], and
/// returns their results in local-rank order. `first` is local rank 0's device (see
/// [`rank_device`]).
///
/// The first rank to fail (error or panic) makes the supervisor reset the collective: ranks
/// blocked in a reduction then fail too, every thread ends, and the first failure is returned.
/// Nothing is written on behalf of a failed step, so the last checkpoint stays as it was.
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
    if cfg.is_multi_node() && std::env::var_os(MULTI_NODE_OVERRIDE).is_none() {
        return Err(RunError::Setup(MULTI_NODE_REFUSAL.to_string()));
    }
    reset_collective::<B>();
    let collective = collective_config(cfg);
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
                _backend: PhantomData,
            };
            std::thread::Builder::new()
                .name(format!("rank-{}", rank.rank))
                .spawn_scoped(scope, move || {
                    let id = PeerId(rank.rank as u32);
                    let global = rank.rank;
                    let outcome = catch_unwind(AssertUnwindSafe(|| {
                        register::<B>(id, rank.device.clone(), collective)
                            .map_err(rank.err("register"))
                            .map_err(|e| e.to_string())?;
                        let out = body(rank).map_err(|e| e.to_string())?;
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
        for (rank, outcome) in rx {
            match outcome {
                Outcome::Done(v) => done.push((rank, v)),
                Outcome::Failed(message) => match &mut first_failure {
                    None => {
                        tracing::error!("rank {rank} failed: {message}; stopping every rank");
                        first_failure = Some(fail(rank, message));
                        // The engine's server may be the one that died; then its channel is
                        // closed, the waiting ranks see that, and resetting panics.
                        let _ = catch_unwind(reset_collective::<B>);
                    }
                    Some(f) => f.others.push((rank, message)),
                },
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
    fn multi_node_is_refused_with_the_reason() {
        let cfg = DistributedConfig {
            devices: 1,
            num_nodes: 2,
            node_rank: 1,
            orchestrator: Some("10.0.0.1:3000".into()),
            node_address: Some("10.0.0.3:3001".into()),
            data_port: Some(3001),
        };
        let err = run_ranks::<TestBackend, (), String, _>(&cfg, &Default::default(), |_| Ok(()))
            .unwrap_err();
        assert!(
            matches!(&err, RunError::Setup(m) if m.contains("SyncService::sync")),
            "{err}"
        );
        let mut bad = cfg;
        bad.node_rank = 2;
        let err = run_ranks::<TestBackend, (), String, _>(&bad, &Default::default(), |_| Ok(()))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot start the data-parallel run: invalid DistributedConfig.node_rank = 2: must be <= num_nodes - 1 (= 1)"
        );
    }

    #[test]
    fn cpu_ranks_share_the_device() {
        let d = Default::default();
        assert_eq!(rank_device::<TestBackend>(&d, 3), d);
    }
}
