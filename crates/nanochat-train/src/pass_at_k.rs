//! pass@1 and pass@k on GSM8K for RL (upstream `scripts/chat_rl.py`'s `run_gsm8k_eval`):
//! `k` samples per problem at temperature 1, top-k 50, the problems strided over the
//! data-parallel ranks and the counts summed.

use nanochat_core::GenerationParams;
use nanochat_data::tasks::Task;
use nanochat_eval::chat_eval::correct_samples;
use nanochat_infer::Engine;
use nanochat_model::distributed::Rank;
use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// pass@1 and pass@k of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PassAtK {
    /// Fraction of samples correct (the expected pass@1).
    pub pass1: f64,
    /// Fraction of problems with any of k samples correct.
    pub pass_k: f64,
    /// k.
    pub k: usize,
}

/// pass@1 / pass@k of `engine` on the first `n` problems of `task`. This rank samples
/// problems `rank, rank + world, …`; the counts are summed over the ranks (upstream's
/// `all_reduce` of the records), so every rank returns the same result.
pub fn evaluate_pass_at_k<B: nanochat_model::FusedOps>(
    engine: &Engine<B>,
    task: &dyn Task,
    n: usize,
    k: usize,
    seed: u64,
    max_new_tokens: usize,
    rank: &Rank<B>,
) -> Result<PassAtK, TrainError> {
    let params = GenerationParams {
        temperature: 1.0,
        top_k: Some(50),
        max_tokens: max_new_tokens,
        seed: Some(seed),
        num_samples: k,
        ..GenerationParams::default()
    };
    let n = n.min(task.len());
    let (mut correct, mut any) = (0usize, 0usize);
    for i in (rank.rank..n).step_by(rank.world_size) {
        let ok = correct_samples(engine, task, i, &params)?;
        correct += ok;
        any += usize::from(ok > 0);
    }
    let sums = rank.sum_f64(&[correct as f64, any as f64])?;
    Ok(PassAtK {
        pass1: sums[0] / (n * k).max(1) as f64,
        pass_k: sums[1] / n.max(1) as f64,
        k,
    })
}
