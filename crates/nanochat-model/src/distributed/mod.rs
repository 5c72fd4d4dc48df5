//! Data parallelism on burn's collective engine (`burn::collective`): what torchrun and
//! `torch.distributed` do for upstream (`nanochat/common.py` `compute_init`, the all-reduces in
//! `optim.py`, `loss_eval.py` and `core_eval.py`).
//!
//! [`run_ranks`] (in `supervisor.rs`) starts one thread per local device, registers each as a
//! peer of the collective (node-major global ranks, multi-node through burn's orchestrator
//! when [`nanochat_core::DistributedConfig::num_nodes`] > 1) and hands the body a [`Rank`]. It stops the run
//! when a rank fails or waits too long in a collective operation.
//!
//! [`Rank`] carries the reductions the loops need: gradient averaging (flattened into
//! buckets, like DDP), sums of scalars (bits-per-byte numerators, CORE counts) and gathering
//! bytes (per-rank loader states). A [`Rank::single`] does no communication at all, which is
//! the default path. [`run_replicated`] chooses between the two for a loop that owns a model.

mod supervisor;

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use burn::collective::{CollectiveError, PeerId, ReduceOperation, all_reduce};
use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend, Device, DeviceOps};
use burn::tensor::{Shape, Tensor, TensorData, TensorPrimitive};

use supervisor::Watch;
pub use supervisor::{GRACE, run_ranks, run_replicated};

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
    /// The run could not start (an invalid layout); no rank ran.
    #[error("cannot start the data-parallel run: {0}")]
    Setup(String),
    /// A rank failed and the others were stopped.
    #[error(transparent)]
    Rank(#[from] RankFailure),
}

/// A rank that failed, as reported by [`run_ranks`].
#[derive(Debug, Clone, thiserror::Error)]
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
    /// Nodes in the run (for the error a dead node causes).
    num_nodes: usize,
    /// Where the supervisor sees how long this rank has been waiting in the collective.
    watch: Option<Arc<Watch>>,
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
            num_nodes: 1,
            watch: None,
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

    fn err(&self, op: &'static str) -> impl Fn(CollectiveError) -> DistError {
        let (rank, num_nodes, watch) = (self.rank, self.num_nodes, self.watch.clone());
        move |e| {
            let mut detail = format!("{e:?}");
            if matches!(e, CollectiveError::LocalServerMissing) {
                // Unless the supervisor reset the collective, burn's engine task has ended (it
                // panics on a broken connection to a peer): it must not be sent a reset, and
                // the user should know why.
                let ended = watch.as_ref().is_some_and(|w| w.engine_missing());
                if ended && num_nodes > 1 {
                    detail.push_str(
                        " (the collective engine stopped: in a multi-node run this means another \
                         node died or its connection broke; nothing was saved for this step, \
                         so resume from the last checkpoint)",
                    );
                }
            }
            DistError::Collective { rank, op, detail }
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
        // Every gradient flattened in module order, reduced in buckets, then put back.
        let mut take = TakeGrads::<A> {
            grads: &mut grads,
            taken: Vec::new(),
        };
        model.visit(&mut take);
        let taken = take.taken;
        let mut reduced: Vec<Tensor<B, 1>> = Vec::with_capacity(taken.len());
        let mut start = 0;
        while start < taken.len() {
            let mut end = start + 1;
            let mut numel = taken[start].1.num_elements();
            while end < taken.len() && numel + taken[end].1.num_elements() <= GRAD_BUCKET_ELEMENTS {
                numel += taken[end].1.num_elements();
                end += 1;
            }
            let bucket = &taken[start..end];
            let sizes = bucket.iter().map(|(_, s, _)| s.num_elements()).collect();
            let flat = Tensor::cat(bucket.iter().map(|(_, _, t)| t.clone()).collect(), 0);
            let flat = self.all_reduce_flat(flat, op, "gradient all-reduce")?;
            reduced.extend(flat.split_with_sizes(sizes, 0));
            start = end;
        }
        let mut put = PutGrads::<A> {
            grads: &mut grads,
            reduced: taken
                .into_iter()
                .zip(reduced)
                .map(|((id, shape, _), t)| (id, (shape, t)))
                .collect(),
        };
        model.visit(&mut put);
        Ok(grads)
    }

    /// All-reduces a flat tensor. One shorter than the world size is zero-padded first: burn's
    /// global ring all-reduce needs at least one element per node.
    fn all_reduce_flat(
        &self,
        t: Tensor<B, 1>,
        op: ReduceOperation,
        what: &'static str,
    ) -> Result<Tensor<B, 1>, DistError> {
        let n = t.dims()[0];
        let t = if n < self.world_size {
            let pad = Tensor::<B, 1>::zeros([self.world_size - n], &t.device()).cast(t.dtype());
            Tensor::cat(vec![t, pad], 0)
        } else {
            t
        };
        let _waiting = self.watch.as_ref().map(|w| w.enter(self.local_rank, what));
        let prim = all_reduce::<B>(PeerId(self.rank as u32), t.into_primitive().tensor(), op)
            .map_err(self.err(what))?;
        Ok(Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(prim)).narrow(0, 0, n))
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
        let summed = self.all_reduce_flat(t, ReduceOperation::Sum, "all-reduce")?;
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
            .all_reduce_flat(t, ReduceOperation::Sum, "all-reduce")?
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

/// Gradients travel in buckets of at most this many elements (256 MB in float32): flattened and
/// concatenated in module order, one collective operation per bucket (PyTorch DDP's buckets,
/// 25 MB by default) instead of one per parameter. Each global operation ends with a barrier
/// across the nodes, so fewer is faster; the sums are the same, element for element.
pub const GRAD_BUCKET_ELEMENTS: usize = 1 << 26;

/// Takes each parameter's gradient out of `grads`, flattened, in module order.
struct TakeGrads<'a, A: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    taken: Vec<(ParamId, Shape, Tensor<A::InnerBackend, 1>)>,
}

impl<A: AutodiffBackend> ModuleVisitor<A> for TakeGrads<'_, A> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<A, D>>) {
        if let Some(grad) = self.grads.remove::<A::InnerBackend, D>(param.id) {
            let shape = grad.shape();
            let n = shape.num_elements();
            self.taken.push((param.id, shape, grad.reshape([n])));
        }
    }
}

/// Puts the reduced gradients back, with their shapes.
struct PutGrads<'a, A: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    reduced: HashMap<ParamId, (Shape, Tensor<A::InnerBackend, 1>)>,
}

impl<A: AutodiffBackend> ModuleVisitor<A> for PutGrads<'_, A> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<A, D>>) {
        if let Some((shape, flat)) = self.reduced.remove(&param.id) {
            self.grads
                .register::<A::InnerBackend, D>(param.id, flat.reshape(shape.dims::<D>()));
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

#[cfg(all(test, any(feature = "flex", feature = "ndarray")))]
mod tests {
    use super::*;
    use crate::TestBackend;

    #[test]
    fn cpu_ranks_share_the_device() {
        let d = Default::default();
        assert_eq!(rank_device::<TestBackend>(&d, 3), d);
    }
}
