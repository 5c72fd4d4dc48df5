//! What data parallelism adds to a training loop (upstream: torchrun + DDP, the gradient
//! reduction inside `nanochat/optim.py`, the loader's rank stride in `dataloader.py`, rank-0
//! checkpoints in `checkpoint_manager.py`).
//!
//! - [`train_step`]: one optimizer step over `grad_accum` micro-batches, with the gradients
//!   averaged over the ranks before the update. Every rank holds the whole optimizer state and
//!   applies the same averaged update (plain DDP): burn 0.21's collective offers all-reduce,
//!   reduce and broadcast but no reduce-scatter / all-gather, so upstream's ZeRO-2 sharding
//!   would cost an extra all-reduce of the parameters per step.
//! - [`gather_states`]: every rank's loader state, so that rank 0 can store them all in the
//!   checkpoint meta and each rank resumes exactly where it was.
//! - [`rank_state`]: the loader state of one rank from a checkpoint meta, checking that the
//!   run resumes with the world size that wrote it.

use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{ElementConversion, Int, Tensor};
use nanochat_model::TrainBackend;
use nanochat_model::distributed::Rank;
use nanochat_model::{Gpt, Reduction};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::TrainError;
use crate::optim::{MuonAdamW, StepScalars};

/// A micro-batch `(inputs, targets)`, both `[B, T]`.
pub type MicroBatch<B> = (Tensor<B, 2, Int>, Tensor<B, 2, Int>);

/// Meta key: ranks that wrote the checkpoint.
pub const WORLD_SIZE_KEY: &str = "world_size";

/// Where a stage keeps its loader states in the checkpoint meta.
#[derive(Debug, Clone, Copy)]
pub struct StateKeys {
    /// Rank 0's state (upstream's field).
    pub one: &'static str,
    /// Every rank's state, in rank order (runs on more than one rank).
    pub all: &'static str,
}

/// Pretraining: upstream's `dataloader_state_dict`.
pub const BASE_KEYS: StateKeys = StateKeys {
    one: "dataloader_state_dict",
    all: "dataloader_states",
};

/// Midtraining / SFT.
pub const CHAT_KEYS: StateKeys = StateKeys {
    one: "loader_state",
    all: "loader_states",
};

/// One optimizer step: `grad_accum` micro-batches from `next_batch` (mean loss, scaled by
/// `1/grad_accum`), the gradients averaged over the ranks, then the update. Returns the
/// updated model and the last micro-batch's loss.
///
/// `fail` makes the rank fail after its backward pass and before the reduction: the test
/// hook for a rank dying mid-step.
pub fn train_step<B: TrainBackend>(
    model: Gpt<B>,
    opt: &mut MuonAdamW<B::InnerBackend>,
    mut next_batch: impl FnMut() -> Result<MicroBatch<B>, TrainError>,
    grad_accum: u64,
    scalars: &StepScalars,
    rank: &Rank<B::InnerBackend>,
    fail: Option<u64>,
) -> Result<(Gpt<B>, f64), TrainError> {
    let mut accum = GradientsAccumulator::<Gpt<B>>::new();
    let mut loss_value = 0.0;
    for _ in 0..grad_accum {
        let (x, y) = next_batch()?;
        let loss = model.forward_loss(x, y, Reduction::Mean);
        loss_value = loss.clone().into_scalar().elem::<f64>();
        let grads = (loss / grad_accum as f64).backward();
        accum.accumulate(&model, GradientsParams::from_grads(grads, &model));
    }
    if let Some(step) = fail {
        return Err(TrainError::Injected { step });
    }
    let grads = rank.all_reduce_grads(&model, accum.grads())?;
    let model = opt.step(model, grads, scalars)?;
    Ok((model, loss_value))
}

/// Every rank's `state`, in rank order.
pub fn gather_states<S, B>(rank: &Rank<B>, state: &S) -> Result<Vec<S>, TrainError>
where
    S: Serialize + DeserializeOwned,
    B: burn::tensor::backend::Backend,
{
    let bytes = serde_json::to_vec(state).expect("loader state serialises");
    rank.all_gather_bytes(&bytes)?
        .iter()
        .enumerate()
        .map(|(r, b)| {
            serde_json::from_slice(b)
                .map_err(|e| TrainError::Data(format!("loader state of rank {r}: {e}")))
        })
        .collect()
}

/// The meta fields of the loader states: rank 0's under `keys.one`, all of them under
/// `keys.all` when there is more than one rank, and the world size.
pub fn loader_state_fields<S: Serialize>(
    keys: StateKeys,
    states: &[S],
) -> Vec<(String, serde_json::Value)> {
    let mut out = vec![
        (WORLD_SIZE_KEY.to_string(), states.len().into()),
        (
            keys.one.to_string(),
            crate::run_files::meta_json(&states[0]),
        ),
    ];
    if states.len() > 1 {
        out.push((keys.all.to_string(), crate::run_files::meta_json(&states)));
    }
    out
}

/// The loader state of `rank` in a checkpoint's meta `extra`, which must have been written
/// by `world_size` ranks (a meta without the field was written by one).
pub fn rank_state<S: DeserializeOwned>(
    extra: &std::collections::BTreeMap<String, serde_json::Value>,
    keys: StateKeys,
    rank: usize,
    world_size: usize,
    dir: &std::path::Path,
) -> Result<S, TrainError> {
    let written = extra
        .get(WORLD_SIZE_KEY)
        .and_then(|v| v.as_u64())
        .unwrap_or(1) as usize;
    if written != world_size {
        return Err(TrainError::Resume(format!(
            "{}: the checkpoint was written by {written} rank(s) and this run has {world_size}; \
             resume with the same --devices × --num-nodes",
            dir.display()
        )));
    }
    let value = if world_size == 1 {
        extra.get(keys.one).cloned()
    } else {
        extra.get(keys.all).and_then(|v| v.get(rank)).cloned()
    };
    let value = value.ok_or_else(|| {
        TrainError::Resume(format!(
            "{}: meta has no loader state for rank {rank}",
            dir.display()
        ))
    })?;
    serde_json::from_value(value)
        .map_err(|e| TrainError::Resume(format!("loader state of rank {rank}: {e}")))
}
