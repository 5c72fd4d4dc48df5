//! The GPT's losses (upstream `GPT.forward` with targets, `nanochat/gpt.py`): the training loss
//! through the blocked loss head ([`ops::linear_cross_entropy`]), per-position losses for
//! evaluation in blocks of rows, and the cross-entropy of logits already computed.

use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Int, Tensor};

use crate::gpt::{ComputeDtype, Gpt, linear};
use crate::ops::{self, FusedOps, chunked_loss};

/// Cross-entropy reduction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduction {
    /// Mean over the targets that are not −1.
    Mean,
    /// Sum over the targets that are not −1 (`[1]`).
    Sum,
    /// One loss per position (0 where the target is −1): the whole logits exist at once, for
    /// evaluation; training takes [`Reduction::Mean`], [`Reduction::Sum`] or
    /// [`Gpt::forward_loss_weighted`], whose logits exist one block of rows at a time.
    None,
}

impl<B: FusedOps> Gpt<B> {
    /// Cross-entropy of next-token `targets` (`[batch, t]`, −1 = ignored) under the soft-capped
    /// logits. [`Reduction::Mean`] and [`Reduction::Sum`] go through the blocked loss head
    /// ([`ops::linear_cross_entropy`]: the logits never exist whole); [`Reduction::None`]
    /// through `lm_head` and the fused loss ([`ops::cross_entropy`]).
    pub fn forward_loss(
        &self,
        idx: Tensor<B, 2, Int>,
        targets: Tensor<B, 2, Int>,
        reduction: Reduction,
    ) -> Tensor<B, 1> {
        let x = self.hidden(idx, None);
        let [b, t, _] = x.dims();
        let targets = targets.reshape([b * t]);
        match reduction {
            Reduction::Sum => self.loss_head(x, targets, None),
            Reduction::Mean => {
                let kept = targets.clone().greater_equal_elem(0).float().sum();
                self.loss_head(x, targets, None) / kept
            }
            Reduction::None => {
                let v_padded = self.lm_head.weight.dims()[1];
                let rows = chunked_loss::block_rows(v_padded, chunked_loss::BLOCK_ELEMS);
                let c = x.dims()[2];
                self.row_losses(x.reshape([b * t, c]), targets, rows)
            }
        }
    }

    /// `Σ weight · loss` over the positions (`[1]`) of next-token `targets` (`[batch, t]`, −1 =
    /// ignored), `weights` `[batch · t]` being constants (chat RL's advantages), through the
    /// blocked loss head.
    pub fn forward_loss_weighted(
        &self,
        idx: Tensor<B, 2, Int>,
        targets: Tensor<B, 2, Int>,
        weights: Tensor<B, 1>,
    ) -> Tensor<B, 1> {
        let x = self.hidden(idx, None);
        let [b, t, _] = x.dims();
        self.loss_head(x, targets.reshape([b * t]), Some(weights))
    }

    /// The loss of each row of the hidden states `x` (`[N, C]`), `rows` rows at a time: when
    /// nothing records a graph (evaluation) only one block of logits exists at once; under
    /// autodiff each block keeps its logits' gradient, as the whole logits would.
    pub(crate) fn row_losses(
        &self,
        x: Tensor<B, 2>,
        targets: Tensor<B, 1, Int>,
        rows: usize,
    ) -> Tensor<B, 1> {
        let (n, c) = (x.dims()[0], self.config());
        let block = |r0: usize, r: usize| {
            let logits = linear(
                &self.lm_head,
                x.clone().narrow(0, r0, r),
                self.compute_dtype(),
            );
            let logits = logits.cast(FloatDType::F32);
            let t = targets.clone().narrow(0, r0, r);
            ops::cross_entropy(logits, t, c.vocab_size, c.logit_softcap)
        };
        let rows = rows.max(1);
        if n <= rows {
            return block(0, n);
        }
        let blocks = (0..n).step_by(rows).map(|r0| block(r0, rows.min(n - r0)));
        Tensor::cat(blocks.collect(), 0)
    }

    /// `lm_head` and the summed (weighted) loss of the hidden states `x`.
    fn loss_head(
        &self,
        x: Tensor<B, 3>,
        targets: Tensor<B, 1, Int>,
        weights: Option<Tensor<B, 1>>,
    ) -> Tensor<B, 1> {
        let [b, t, c] = x.dims();
        let w = self.lm_head.weight.val();
        let w = match self.compute_dtype() {
            ComputeDtype::F32 => w,
            ComputeDtype::BF16 => w.cast(FloatDType::BF16),
        };
        let head = ops::LossHead {
            vocab: self.config().vocab_size,
            softcap: self.config().logit_softcap,
        };
        ops::linear_cross_entropy(x.reshape([b * t, c]), w, targets, weights, head)
    }
}

/// Cross-entropy with ignore index −1 of logits that are already final (soft-capped, cropped):
/// mean over kept targets, or per position.
pub fn cross_entropy<B: Backend>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
    reduction: Reduction,
) -> Tensor<B, 1> {
    let [b, t, v] = logits.dims();
    let targets = targets.reshape([b * t]);
    let losses =
        ops::reference::cross_entropy_losses(logits.reshape([b * t, v]), targets.clone(), v, 0.0);
    match reduction {
        Reduction::None => losses,
        Reduction::Mean => losses.sum() / targets.greater_equal_elem(0).float().sum(),
        Reduction::Sum => losses.sum(),
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::backend::Flex;
    use burn::tensor::{Int, Tensor, TensorData};
    use nanochat_core::ModelConfig;

    use crate::gpt::Gpt;

    #[test]
    fn row_losses_in_blocks_equal_one_block_and_the_summed_loss() {
        let config = ModelConfig {
            sequence_len: 16,
            vocab_size: 70,
            n_layer: 1,
            n_head: 2,
            n_kv_head: 1,
            n_embd: 32,
            ..ModelConfig::default()
        };
        let device = Default::default();
        let model = Gpt::<Flex>::init(&config, &device).unwrap();
        let (b, t) = (2, 7);
        let ids: Vec<i64> = (0..(b * t) as i64).map(|i| (i * 13) % 70).collect();
        let ys: Vec<i64> = (0..(b * t) as i64)
            .map(|i| if i % 4 == 1 { -1 } else { (i * 5) % 70 })
            .collect();
        let idx = Tensor::<Flex, 2, Int>::from_data(TensorData::new(ids, [b, t]), &device);
        let targets = Tensor::<Flex, 1, Int>::from_data(TensorData::new(ys, [b * t]), &device);
        let x = model.hidden(idx, None);
        let x = x.reshape([b * t, config.n_embd]);
        let whole = model
            .row_losses(x.clone(), targets.clone(), b * t)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let blocked = model
            .row_losses(x.clone(), targets.clone(), 3)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(blocked.len(), b * t);
        for (i, (a, w)) in blocked.iter().zip(&whole).enumerate() {
            assert!(
                (a - w).abs() <= 1e-5 * w.abs().max(1.0),
                "row {i}: {a} vs {w}"
            );
        }
        assert_eq!(whole[1], 0.0, "an ignored row");
        let summed: f32 = model
            .loss_head(x.reshape([b, t, config.n_embd]), targets, None)
            .into_scalar();
        let total: f32 = whole.iter().sum();
        assert!(
            (summed - total).abs() <= 1e-4 * total.abs(),
            "{summed} vs {total}"
        );
    }
}
