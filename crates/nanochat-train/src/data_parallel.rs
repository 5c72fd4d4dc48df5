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
//!   checkpoint meta ([`crate::stage_meta::RankStates`]) and each rank resumes exactly where
//!   it was.

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
    // The loss is read once, after the update is queued: on a GPU every read waits for the
    // device, and a read per micro-batch would stall the host between forward and backward.
    let mut last_loss = None;
    for _ in 0..grad_accum {
        let (x, y) = next_batch()?;
        let loss = model.forward_loss(x, y, Reduction::Mean);
        last_loss = Some(loss.clone().inner());
        let grads = (loss / grad_accum as f64).backward();
        accum.accumulate(&model, GradientsParams::from_grads(grads, &model));
    }
    if let Some(step) = fail {
        return Err(TrainError::Injected { step });
    }
    let grads = rank.all_reduce_grads(&model, accum.grads())?;
    let model = opt.step(model, grads, scalars)?;
    let loss_value = last_loss.map_or(0.0, |l| l.into_scalar().elem::<f64>());
    Ok((model, loss_value))
}

/// Every rank's `state`, in rank order.
pub fn gather_states<S, B>(rank: &Rank<B>, state: &S) -> Result<Vec<S>, TrainError>
where
    S: Serialize + DeserializeOwned,
    B: burn::tensor::backend::Backend,
{
    let bytes = serde_json::to_vec(state)
        .map_err(|e| TrainError::Data(format!("loader state of rank {}: {e}", rank.rank)))?;
    rank.all_gather_bytes(&bytes)?
        .iter()
        .enumerate()
        .map(|(r, b)| {
            serde_json::from_slice(b)
                .map_err(|e| TrainError::Data(format!("loader state of rank {r}: {e}")))
        })
        .collect()
}
