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
//! (bits-per-byte numerators, CORE counts), gathering bytes (per-rank loader states) and a
//! barrier. A [`Rank::single`] does no communication at all, which is the default path.

use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;

use burn::collective::{
    CollectiveConfig, PeerId, ReduceOperation, all_reduce, finish_collective, register,
    reset_collective,
};
use burn::optim::GradientsParams;
use burn::tensor::backend::{Backend, Device, DeviceOps};
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use nanochat_core::{DistributedConfig, Validate, ValidationError};

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
    /// The layout flags are inconsistent.
    #[error(transparent)]
    Config(#[from] ValidationError),
    /// Ranks disagree on something that must be identical.
    #[error("rank {rank}: {detail}")]
    Mismatch {
        /// Global rank that noticed.
        rank: usize,
        /// What differs.
        detail: String,
    },
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
    pub fn all_reduce_grads(&self, grads: GradientsParams) -> Result<GradientsParams, DistError> {
        if !self.collective {
            return Ok(grads);
        }
        grads
            .all_reduce::<B>(PeerId(self.rank as u32), ReduceOperation::Mean)
            .map_err(self.err("gradient all-reduce"))
    }

    /// Sums gradients over the ranks (for losses already divided by a global count, as SFT's
    /// token-weighted loss is).
    pub fn sum_grads(&self, grads: GradientsParams) -> Result<GradientsParams, DistError> {
        if !self.collective {
            return Ok(grads);
        }
        grads
            .all_reduce::<B>(PeerId(self.rank as u32), ReduceOperation::Sum)
            .map_err(self.err("gradient all-reduce"))
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

    /// Waits until every rank gets here.
    pub fn barrier(&self) -> Result<(), DistError> {
        self.sum_f64(&[1.0]).map(|_| ())
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
        let addr = |s: &Option<String>| {
            s.as_deref()
                .unwrap_or_default()
                .parse()
                .expect("Address parsing is infallible")
        };
        c = c
            .with_num_nodes(cfg.num_nodes as u32)
            .with_global_address(addr(&cfg.orchestrator))
            .with_node_address(addr(&cfg.node_address))
            .with_data_service_port(cfg.data_port.unwrap_or_default());
    }
    c
}

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
) -> Result<Vec<T>, RankFailure>
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
    cfg.validate()
        .map_err(|e| fail(cfg.global_rank(0), e.to_string()))?;
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
                        reset_collective::<B>();
                    }
                    Some(f) => f.others.push((rank, message)),
                },
            }
        }
        match first_failure {
            Some(f) => Err(f),
            None => {
                done.sort_by_key(|(r, _)| *r);
                Ok(done.into_iter().map(|(_, v)| v).collect())
            }
        }
    })
}
