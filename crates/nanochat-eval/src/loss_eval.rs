//! Bits per byte (upstream `nanochat/loss_eval.py`, `evaluate_bpb`): summed cross-entropy in
//! nats over the summed byte length of the target tokens, so that models with different
//! vocabularies compare. Special tokens (0 bytes) and ignored targets (−1) count for nothing.
//! The same sums give the validation loss in nats per counted token.

use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use nanochat_model::FusedOps;
use nanochat_model::{Gpt, Reduction};

/// Byte lengths of every token id as a device tensor (0 for special tokens).
pub fn token_bytes_tensor<B: FusedOps>(
    token_bytes: &[u32],
    device: &B::Device,
) -> Tensor<B, 1, Int> {
    let v: Vec<i64> = token_bytes.iter().map(|&b| b as i64).collect();
    Tensor::from_data(TensorData::new(v, [token_bytes.len()]), device)
}

/// Running sums of an evaluation (mergeable across workers).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BpbSums {
    /// Σ loss over counted targets (nats).
    pub nats: f64,
    /// Σ bytes of counted targets.
    pub bytes: u64,
    /// Number of counted targets.
    pub tokens: u64,
}

impl BpbSums {
    /// `nats / (ln 2 · bytes)`; infinity when no byte was counted.
    pub fn bpb(&self) -> f64 {
        if self.bytes == 0 {
            f64::INFINITY
        } else {
            self.nats / (std::f64::consts::LN_2 * self.bytes as f64)
        }
    }

    /// Mean loss in nats per counted target token; `None` when none was counted.
    pub fn loss(&self) -> Option<f64> {
        (self.tokens > 0).then(|| self.nats / self.tokens as f64)
    }
}

/// Adds one batch `(x, y)` to `sums`.
pub fn accumulate_bpb<B: FusedOps>(
    model: &Gpt<B>,
    x: Tensor<B, 2, Int>,
    y: Tensor<B, 2, Int>,
    token_bytes: &Tensor<B, 1, Int>,
    sums: &mut BpbSums,
) {
    let [b, t] = y.dims();
    let y = y.reshape([b * t]);
    let losses = model.forward_loss(x, y.clone().reshape([b, t]), Reduction::None);
    let valid = y.clone().greater_equal_elem(0);
    let bytes = token_bytes
        .clone()
        .select(0, y.clamp_min(0))
        .mask_fill(valid.bool_not(), 0);
    let counted = bytes.clone().greater_elem(0).float();
    let n_counted: f32 = counted.clone().sum().into_scalar().elem();
    let nats: f32 = (losses * counted).sum().into_scalar().elem();
    let total: i64 = bytes.sum().into_scalar().elem();
    sums.nats += nats as f64;
    sums.bytes += total as u64;
    sums.tokens += n_counted.round() as u64;
}

/// The sums of bits per byte (upstream `evaluate_bpb`; [`BpbSums::bpb`] divides them) of `model`
/// over `steps` batches, for ranks that each evaluate their share of the batches and add their
/// sums up ([`reduce_bpb`]).
pub fn evaluate_bpb_sums<B: FusedOps, I, E>(
    model: &Gpt<B>,
    batches: I,
    steps: usize,
    token_bytes: &Tensor<B, 1, Int>,
) -> Result<BpbSums, E>
where
    I: IntoIterator<Item = Result<(Tensor<B, 2, Int>, Tensor<B, 2, Int>), E>>,
{
    let mut sums = BpbSums::default();
    for batch in batches.into_iter().take(steps) {
        let (x, y) = batch?;
        accumulate_bpb(model, x, y, token_bytes, &mut sums);
    }
    Ok(sums)
}

/// Adds every rank's sums (upstream's `all_reduce(SUM)` of `total_nats` and `total_bytes`, and
/// the counted tokens).
pub fn reduce_bpb<B: FusedOps>(
    rank: &nanochat_model::distributed::Rank<B>,
    sums: BpbSums,
) -> Result<BpbSums, nanochat_model::distributed::DistError> {
    let v = rank.sum_f64(&[sums.nats, sums.bytes as f64, sums.tokens as f64])?;
    Ok(BpbSums {
        nats: v[0],
        bytes: v[1].round() as u64,
        tokens: v[2].round() as u64,
    })
}

/// The unigram baseline: bits per byte on `val` batches of the token frequencies counted on
/// `train` batches (add-one smoothing; targets `row[1..]`; 0-byte tokens not counted). A model
/// that has learned anything beyond token frequencies scores below it.
pub fn unigram_bpb<E>(
    train: impl IntoIterator<Item = Result<nanochat_data::dataloader::Batch, E>>,
    val: impl IntoIterator<Item = Result<nanochat_data::dataloader::Batch, E>>,
    token_bytes: &[u32],
) -> Result<f64, E> {
    let vocab = token_bytes.len();
    let mut counts = vec![1u64; vocab];
    let targets = |b: &nanochat_data::dataloader::Batch| {
        let t = b.seq_len;
        b.rows
            .chunks(t + 1)
            .flat_map(|r| r[1..].to_vec())
            .collect::<Vec<u32>>()
    };
    for b in train {
        for y in targets(&b?) {
            if let Some(c) = counts.get_mut(y as usize) {
                *c += 1;
            }
        }
    }
    let total: u64 = counts.iter().sum();
    let mut sums = BpbSums::default();
    for b in val {
        for y in targets(&b?) {
            let bytes = token_bytes.get(y as usize).copied().unwrap_or(0);
            if bytes > 0 {
                sums.nats -= (counts[y as usize] as f64 / total as f64).ln();
                sums.bytes += bytes as u64;
            }
        }
    }
    Ok(sums.bpb())
}
