//! The language-model loss without the whole logits: `lm_head`, soft cap and cross-entropy
//! fused and run over blocks of rows, the gradients of `x` and `w` computed block by block in
//! the forward (the approach of Liger-Kernel's fused linear cross-entropy). Upstream computes
//! `logits = lm_head(x)` whole (`nanochat/gpt.py`); in float32 that is `[B·T, V]`: 8.6 GB for
//! d12 at 32 × 2048 rows and a 32 768 vocabulary, written and read again by the soft cap, the
//! log-softmax and their gradients. Here at most one block of rows exists at a time.
//!
//! The op's output is the weighted sum of the row losses (`[1]`): its gradient is then the
//! block gradients times one scalar, so nothing of size `[N, V]` is kept for the backward and
//! no matrix product is recomputed. A per-row gradient (an arbitrary function of the row
//! losses) would need the logits again; callers that want per-row losses without a gradient
//! (evaluation) use [`crate::ops::cross_entropy`].
//!
//! This composition runs on every backend through the [`FusedOps`] kernels of its parts (the
//! matrix products, the fused cross-entropy), so the GPU backends get the memory saving too;
//! the CPU backend runs its own blocked kernel.

use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{FloatDType, Int, Tensor, TensorPrimitive};

use super::FusedOps;

/// What the loss head computes on the logits: the first `vocab` columns (the rest is padding),
/// soft-capped as `softcap · tanh(z / softcap)` (none when `softcap ≤ 0`), in float32.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossHead {
    /// Real vocabulary size (≤ the logits' padded width).
    pub vocab: usize,
    /// Soft cap of the logits (≤ 0: none).
    pub softcap: f64,
}

/// Float32 elements of one block of logits in the composition: 256 MiB (d12 at a 32 768
/// vocabulary: 2 048 rows, 32 blocks for a 32 × 2048 batch instead of one 8.6 GB tensor). The
/// composition runs some ten kernels per block and its loss keeps a few block-sized
/// temporaries, so blocks stay large on a GPU; the CPU kernel takes smaller ones.
pub const BLOCK_ELEMS: usize = 1 << 26;

/// Rows per block for a padded vocabulary of `v_padded` and `elems` elements per block, at
/// least 8.
pub fn block_rows(v_padded: usize, elems: usize) -> usize {
    (elems / v_padded.max(1)).max(8)
}

fn tensor<B: FusedOps, const D: usize>(p: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

fn prim<B: FusedOps, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

/// `Σ_r weight_r · loss_r` (`[1]`, float32) of `x` (`[N, K]`) through `w` (`[K, V_padded]`)
/// for `targets` (`[N]`, −1 ignored), `weights` (`[N]`) 1 when absent; with the gradients of
/// that sum with respect to `x` and `w` for those asked for in `need`, in their dtypes. Rows go
/// `rows` at a time.
pub fn forward<B: FusedOps>(
    (x, w): (FloatTensor<B>, FloatTensor<B>),
    targets: IntTensor<B>,
    weights: Option<FloatTensor<B>>,
    head: LossHead,
    need: [bool; 2],
    rows: usize,
) -> (FloatTensor<B>, [Option<FloatTensor<B>>; 2]) {
    let (x, w) = (tensor::<B, 2>(x), tensor::<B, 2>(w));
    let targets = Tensor::<B, 1, Int>::from_primitive(targets);
    let weights = weights.map(tensor::<B, 1>);
    let ([n, k], v_padded, device) = (x.dims(), w.dims()[1], x.device());
    let (x_dtype, w_dtype) = (FloatDType::from(x.dtype()), FloatDType::from(w.dtype()));
    let with_grad = need[0] || need[1];
    let mut total = Tensor::<B, 1>::zeros([1], &device);
    let mut dx_blocks = Vec::new();
    let mut dw: Option<Tensor<B, 2>> = None;
    for r0 in (0..n).step_by(rows.max(1)) {
        let r = rows.max(1).min(n - r0);
        let xb = x.clone().narrow(0, r0, r);
        let logits = tensor::<B, 2>(B::linear_forward(prim(xb.clone()), prim(w.clone())))
            .cast(FloatDType::F32);
        let (losses, unit) = B::cross_entropy_forward(
            prim(logits),
            targets.clone().narrow(0, r0, r).into_primitive(),
            head.vocab,
            head.softcap,
            with_grad,
        );
        let (losses, unit) = match &weights {
            Some(weights) => {
                let wb = weights.clone().narrow(0, r0, r);
                let unit = unit.map(|u| B::cross_entropy_backward(u, prim(wb.clone())));
                (tensor::<B, 1>(losses) * wb, unit)
            }
            None => (tensor::<B, 1>(losses), unit),
        };
        total = total + losses.sum();
        let Some(unit) = unit else { continue };
        let unit = prim(tensor::<B, 2>(unit).cast(x_dtype));
        let [dxb, dwb] = B::linear_backward(prim(xb), prim(w.clone()), unit, need);
        dx_blocks.extend(dxb.map(tensor::<B, 2>));
        if let Some(dwb) = dwb.map(|g| tensor::<B, 2>(g).cast(FloatDType::F32)) {
            dw = Some(match dw {
                Some(acc) => acc + dwb,
                None => dwb,
            });
        }
    }
    let dx = need[0].then(|| {
        if dx_blocks.is_empty() {
            Tensor::<B, 2>::zeros([n, k], &device).cast(x_dtype)
        } else {
            Tensor::cat(dx_blocks, 0)
        }
    });
    let dw = need[1].then(|| {
        dw.unwrap_or_else(|| Tensor::zeros([k, v_padded], &device))
            .cast(w_dtype)
    });
    (prim(total), [dx.map(prim), dw.map(prim)])
}
