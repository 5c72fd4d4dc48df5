//! Fused operations: the parts of the GPT's step that a backend may run as single kernels
//! instead of chains of element-wise tensor ops (burn's custom-op pattern, as in its
//! `examples/custom-*-kernel`: a backend extension trait, implemented for the backends and for
//! `Autodiff<B>` with its own backward).
//!
//! | op | the model's code | what the composition costs |
//! |---|---|---|
//! | [`linear`] | `nn.Linear` without bias | burn-flex's batched matmul: a copied zero buffer per output, transposed weight copies |
//! | [`cross_entropy`] | soft cap + log-softmax + pick (upstream `F.cross_entropy` on `15·tanh(z/15)`) | ~15 passes over the `[B·T, V]` logits and their gradient |
//! | [`linear_cross_entropy`] | `lm_head` + the above, summed: the training loss | the whole `[B·T, V]` float32 logits (8.6 GB for d12 at 32 × 2048) and their gradient |
//! | [`rms_norm`] | `F.rms_norm` | 5 ops forward, more backward |
//! | [`rotary_norm`] | `norm(apply_rotary_emb(q)) · 1.2` on queries and keys | narrows, a cat and the norm, each a copy |
//! | [`attention`] | causal, sliding-window, grouped-query SDPA | `B·H·T·T` scores, mask, softmax, their gradients |
//! | [`ragged_attention`] | decode of rows at different positions (continuous batching) | a `[B, H, 1, Tk]` mask and repeated kv heads |
//! | [`kv_write`] | the KV cache's `slice_assign` | burn-flex copies the whole cache for every write |
//! | [`relu_squared`] | `F.relu(x).square()` | two passes and two backward passes |
//! | [`adamw_step`], [`muon_step`] | `adamw_step_fused`, `muon_step_fused` (upstream compiles them) | ~15 passes per AdamW parameter, ~40 small ops per Muon group, one thread |
//!
//! Each op has a reference composition of burn tensor ops ([`reference`](mod@reference)): what every backend
//! computes unless it overrides the kernels, and the definition the fused kernels are tested
//! against. A backend that sets [`FusedOps::FUSED`] gets one autodiff node per op whose backward
//! calls its `*_backward` kernel; otherwise `Autodiff<B>` differentiates the reference
//! composition exactly as before. The CPU backend (burn-flex) has fused kernels (`cpu`, with
//! the `flex` feature); CUDA can run [`linear`]'s products through cuBLASLt (`cuda`, opt-in:
//! `NANOCHAT_CUBLASLT=1`); WGPU, CUDA and ndarray use the reference, except for two blocked
//! compositions every backend gets: the training loss ([`chunked_loss`]) and the training
//! attention ([`blocked_attention`]), each one autodiff node that never holds a `[B·T, V]` or
//! `B·H·T·T` tensor.
//!
//! Layouts: attention and the rotary norm take `[batch, time, heads, head_dim]` (upstream's
//! flash-attention layout, what the projections produce without a transpose).

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::{FloatTensor, IntTensor, ModuleOps};
use burn::tensor::{Int, Tensor, TensorMetadata, TensorPrimitive};

mod autodiff;
pub mod blocked_attention;
pub mod chunked_loss;
#[cfg(feature = "flex")]
mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(any(feature = "cuda", feature = "wgpu"))]
pub mod fusion_gemm;
pub mod gemm_plan;
pub mod optim;
pub mod reference;

pub use chunked_loss::LossHead;
pub use optim::{AdamScalars, MuonHyper};

/// A backend extended with nanochat's fused operations. Every method has a default: the
/// reference composition (forward) and a backward obtained by differentiating it.
///
/// The `*_forward` / `*_backward` methods are the kernels; the plain-named methods are the ops
/// the model calls (on an autodiff backend they record one node).
pub trait FusedOps: Backend {
    /// Runs `f`, a sequence of ops (a decode step), where this backend's kernels run best.
    /// The CPU backend runs it on a thread of its compute pool: each parallel kernel inside
    /// then shares the work with the other threads directly, instead of handing it over from
    /// the caller's thread and sleeping until it is done (two context switches per op, a fifth
    /// of a batch-32 decode step on 2 cores), while the pool's other threads wait for that work
    /// spinning rather than asleep (the `cpu::pool` module).
    fn run_ops<R: Send>(f: impl FnOnce() -> R + Send) -> R {
        f()
    }

    /// Whether `Autodiff<Self>` records each op as one node backed by the kernels below
    /// (`true`), or differentiates the reference composition (`false`).
    const FUSED: bool = false;

    /// Whether `Autodiff<Self>` records [`linear`] as one node backed by `linear_forward` /
    /// `linear_backward` (default: [`FusedOps::FUSED`]). CUDA says so when its products go
    /// through cuBLASLt, its other ops keeping the reference composition.
    fn linear_node() -> bool {
        Self::FUSED
    }

    /// `x · w` without bias (x `[.., K]`, w `[K, N]`), see [`linear`].
    fn fused_linear(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::linear_forward(x, w)
    }

    /// The forward kernel of [`linear`] (default: the backend's own `ModuleOps::linear`).
    fn linear_forward(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        <Self as ModuleOps<Self>>::linear(x, w, None)
    }

    /// `(dx, dw)` of [`linear`] for the output gradient `dy`, each only when asked for.
    fn linear_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        need: [bool; 2],
    ) -> [Option<FloatTensor<Self>>; 2] {
        reference::linear_vjp::<Self>(x, w, dy, need)
    }

    /// Per-row cross-entropy of soft-capped logits (see [`cross_entropy`]).
    fn cross_entropy(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        vocab: usize,
        softcap: f64,
    ) -> FloatTensor<Self> {
        Self::cross_entropy_forward(logits, targets, vocab, softcap, false).0
    }

    /// The losses `[N]` and, when `with_grad`, the gradient of their sum with respect to
    /// `logits` (`[N, V_padded]`, zero in the padding and on ignored rows).
    fn cross_entropy_forward(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        vocab: usize,
        softcap: f64,
        with_grad: bool,
    ) -> (FloatTensor<Self>, Option<FloatTensor<Self>>) {
        reference::cross_entropy_forward::<Self>(logits, targets, vocab, softcap, with_grad)
    }

    /// The logits' gradient: `unit_grad` (from the forward) scaled row by row by `grad` (`[N]`).
    fn cross_entropy_backward(
        unit_grad: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        reference::scale_rows::<Self>(unit_grad, grad)
    }

    /// The weighted sum of the loss head's row losses on `x · w`, see [`linear_cross_entropy`].
    fn linear_cross_entropy(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        targets: IntTensor<Self>,
        weights: Option<FloatTensor<Self>>,
        head: LossHead,
    ) -> FloatTensor<Self> {
        Self::linear_cross_entropy_forward((x, w), targets, weights, head, [false; 2]).0
    }

    /// The sum (`[1]`) and the gradients of `x` and `w` asked for in `need`, computed in blocks
    /// of rows ([`chunked_loss`]).
    fn linear_cross_entropy_forward(
        xw: (FloatTensor<Self>, FloatTensor<Self>),
        targets: IntTensor<Self>,
        weights: Option<FloatTensor<Self>>,
        head: LossHead,
        need: [bool; 2],
    ) -> (FloatTensor<Self>, [Option<FloatTensor<Self>>; 2]) {
        let rows = chunked_loss::block_rows(xw.1.shape().dims::<2>()[1], chunked_loss::BLOCK_ELEMS);
        chunked_loss::forward::<Self>(xw, targets, weights, head, need, rows)
    }

    /// RMSNorm over the last dimension of `x` (`[N, C]`), see [`rms_norm`].
    fn rms_norm(x: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        Self::rms_norm_forward(x, eps).0
    }

    /// The output and what the backward keeps (a kernel's choice; the reference keeps none).
    fn rms_norm_forward(
        x: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, Option<FloatTensor<Self>>) {
        (reference::rms_norm_2d::<Self>(x, eps), None)
    }

    /// `dx` from the input, the forward's saved tensor and `dy`.
    fn rms_norm_backward(
        x: FloatTensor<Self>,
        saved: Option<FloatTensor<Self>>,
        dy: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        let _ = saved;
        reference::vjp1::<Self, 2>(x, dy, |x| reference::rms_norm(x, eps))
    }

    /// Rotary embedding, RMSNorm and scale of `x` (`[B, T, H, D]`), see [`rotary_norm`].
    fn rotary_norm(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        eps: f64,
        scale: f64,
    ) -> FloatTensor<Self> {
        Self::rotary_norm_forward(x, cos, sin, eps, scale).0
    }

    /// The output and what the backward keeps.
    fn rotary_norm_forward(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        eps: f64,
        scale: f64,
    ) -> (FloatTensor<Self>, Option<FloatTensor<Self>>) {
        (
            reference::rotary_norm_prim::<Self>(x, cos, sin, eps, scale),
            None,
        )
    }

    /// `dx` of the rotary norm.
    #[allow(clippy::too_many_arguments)]
    fn rotary_norm_backward(
        x: FloatTensor<Self>,
        saved: Option<FloatTensor<Self>>,
        dy: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        eps: f64,
        scale: f64,
    ) -> FloatTensor<Self> {
        let _ = saved;
        reference::rotary_norm_vjp::<Self>(x, dy, (cos, sin), eps, scale)
    }

    /// Causal sliding-window grouped-query attention without a gradient (inference), see
    /// [`attention`]: burn's `attention`, which the GPU backends run as a fused kernel.
    fn causal_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        window: usize,
    ) -> FloatTensor<Self> {
        reference::attention_prim::<Self>(q, k, v, window)
    }

    /// The training forward: the output and what the backward keeps (the rows' log-sum-exps,
    /// `[B, Tq, H]` float32). By default the blocked composition ([`blocked_attention`]),
    /// which never holds the `B·H·T·T` scores.
    fn attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        window: usize,
    ) -> (FloatTensor<Self>, Option<FloatTensor<Self>>) {
        let (out, lse) = blocked_attention::forward_blocks::<Self>(q, k, v, window);
        (out, Some(lse))
    }

    /// `(dq, dk, dv)` from the inputs, the output, the saved tensor and `dout` (without a
    /// saved tensor: by differentiating the reference).
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        out: FloatTensor<Self>,
        saved: Option<FloatTensor<Self>>,
        dout: FloatTensor<Self>,
        window: usize,
    ) -> [FloatTensor<Self>; 3] {
        let Some(lse) = saved else {
            return reference::attention_vjp::<Self>(q, k, v, dout, window);
        };
        blocked_attention::backward_blocks::<Self>((q, k, v), out, lse, dout, window)
    }

    /// One query per row at its own position over a KV cache's rows, see
    /// [`ragged_attention`] (inference only: differentiated through the reference).
    fn ragged_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        positions: &[usize],
        window: usize,
    ) -> FloatTensor<Self> {
        reference::ragged_attention_prim::<Self>(q, k, v, positions, window)
    }

    /// Writes `value` (`[R, T, H, D]`) into `cache` (`[B, L, H, D]`): value row `r` at cache
    /// row `at[r].0`, positions `at[r].1..at[r].1 + T`. See [`kv_write`].
    fn kv_write(
        cache: FloatTensor<Self>,
        value: FloatTensor<Self>,
        at: &[(usize, usize)],
    ) -> FloatTensor<Self> {
        reference::kv_write_prim::<Self>(cache, value, at)
    }

    /// `relu(x)²`, see [`relu_squared`].
    fn relu_squared(x: FloatTensor<Self>) -> FloatTensor<Self> {
        reference::relu_squared_prim::<Self>(x)
    }

    /// `dx = 2·relu(x)·dy`.
    fn relu_squared_backward(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        reference::relu_squared_backward_prim::<Self>(x, dy)
    }

    /// `cap · tanh(x / cap)`, element-wise, see [`softcap`].
    fn softcap(x: FloatTensor<Self>, cap: f64) -> FloatTensor<Self> {
        reference::softcap_prim::<Self>(x, cap)
    }

    /// `dx = dy · (1 − (y / cap)²)` from the output `y`.
    fn softcap_backward(
        y: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        cap: f64,
    ) -> FloatTensor<Self> {
        reference::softcap_backward_prim::<Self>(y, dy, cap)
    }

    /// One AdamW step on a flat parameter `[N]` and its moments: `[param, exp_avg,
    /// exp_avg_sq]`, see [`adamw_step`].
    fn adamw_update(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        exp_avg: FloatTensor<Self>,
        exp_avg_sq: FloatTensor<Self>,
        h: &AdamScalars,
    ) -> [FloatTensor<Self>; 3] {
        optim::adamw_update_prim::<Self>([param, grad, exp_avg, exp_avg_sq], h)
    }

    /// One Muon step on a `[K, m, n]` stack: `[params, momentum, second]`, see [`muon_step`].
    fn muon_update(
        params: FloatTensor<Self>,
        grads: FloatTensor<Self>,
        momentum: FloatTensor<Self>,
        second: FloatTensor<Self>,
        h: &MuonHyper,
    ) -> [FloatTensor<Self>; 3] {
        optim::muon_update_prim::<Self>([params, grads, momentum, second], h)
    }
}

/// A backend the model trains on: autodiff over a backend with fused ops.
pub trait TrainBackend: AutodiffBackend<InnerBackend: FusedOps> + FusedOps {}

impl<B> TrainBackend for B
where
    B: AutodiffBackend + FusedOps,
    B::InnerBackend: FusedOps,
{
}

impl<B: FusedOps, C: CheckpointStrategy> FusedOps for Autodiff<B, C> {
    fn fused_linear(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        autodiff::linear::<B, C>(x, w)
    }

    fn cross_entropy(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        vocab: usize,
        softcap: f64,
    ) -> FloatTensor<Self> {
        autodiff::cross_entropy::<B, C>(logits, targets, vocab, softcap)
    }

    fn linear_cross_entropy(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        targets: IntTensor<Self>,
        weights: Option<FloatTensor<Self>>,
        head: LossHead,
    ) -> FloatTensor<Self> {
        autodiff::linear_cross_entropy::<B, C>(x, w, targets, weights, head)
    }

    fn rms_norm(x: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        autodiff::rms_norm::<B, C>(x, eps)
    }

    fn rotary_norm(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        eps: f64,
        scale: f64,
    ) -> FloatTensor<Self> {
        autodiff::rotary_norm::<B, C>(x, cos, sin, eps, scale)
    }

    fn causal_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        window: usize,
    ) -> FloatTensor<Self> {
        autodiff::attention::<B, C>(q, k, v, window)
    }

    fn relu_squared(x: FloatTensor<Self>) -> FloatTensor<Self> {
        autodiff::relu_squared::<B, C>(x)
    }

    fn softcap(x: FloatTensor<Self>, cap: f64) -> FloatTensor<Self> {
        autodiff::softcap::<B, C>(x, cap)
    }
}

#[cfg(feature = "ndarray")]
impl FusedOps for burn::backend::NdArray {}
#[cfg(feature = "wgpu")]
impl FusedOps for burn::backend::Wgpu {}

fn prim<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

fn tensor<B: Backend, const D: usize>(p: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

/// `x · w` (burn's `Linear` without bias: `x` `[.., in]`, `w` `[in, out]`); the model's
/// projections and `lm_head`, forward and both backward matrix products.
pub fn linear<B: FusedOps, const D: usize>(x: Tensor<B, D>, w: Tensor<B, 2>) -> Tensor<B, D> {
    tensor(B::fused_linear(prim(x), prim(w)))
}

/// Cross-entropy of next-token `targets` (`[N]`, −1 = ignored: loss 0) under the logits
/// `[N, V_padded]` cropped to the first `vocab` columns and soft-capped
/// (`softcap · tanh(z / softcap)`, none when `softcap ≤ 0`), computed in float32.
/// One loss per row (`[N]`).
pub fn cross_entropy<B: FusedOps>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    vocab: usize,
    softcap: f64,
) -> Tensor<B, 1> {
    tensor(B::cross_entropy(
        prim(logits),
        targets.into_primitive(),
        vocab,
        softcap,
    ))
}

/// The training loss from the last hidden states: `Σ_r weight_r · CE_r` (`[1]`), `CE_r` the
/// [`cross_entropy`] of row `r` of `x · w` (`x` `[N, K]`, `w` `[K, V_padded]`: `lm_head`) for
/// `targets` (`[N]`, −1 ignored) under `head`; `weights` (`[N]`, constants: no gradient flows
/// to them) are 1 when absent. The logits exist one block of rows at a time, and the gradients
/// of `x` and `w` are computed with them ([`chunked_loss`]).
pub fn linear_cross_entropy<B: FusedOps>(
    x: Tensor<B, 2>,
    w: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    weights: Option<Tensor<B, 1>>,
    head: LossHead,
) -> Tensor<B, 1> {
    tensor(B::linear_cross_entropy(
        prim(x),
        prim(w),
        targets.into_primitive(),
        weights.map(prim),
        head,
    ))
}

/// Parameter-free RMSNorm over the last dimension: `x / sqrt(mean(x²) + eps)`.
pub fn rms_norm<B: FusedOps, const D: usize>(x: Tensor<B, D>, eps: f64) -> Tensor<B, D> {
    let dims = x.dims();
    let c = dims[D - 1];
    let rows = x.shape().num_elements() / c.max(1);
    let y: Tensor<B, 2> = tensor(B::rms_norm(prim(x.reshape([rows, c])), eps));
    y.reshape(dims)
}

/// Upstream's query/key preparation on `x` (`[B, T, H, D]`): rotary embedding (half-split,
/// tables `cos`/`sin` `[T, D/2]` for the T positions), RMSNorm over `D`, times `scale`.
pub fn rotary_norm<B: FusedOps>(
    x: Tensor<B, 4>,
    cos: &Tensor<B, 2>,
    sin: &Tensor<B, 2>,
    eps: f64,
    scale: f64,
) -> Tensor<B, 4> {
    tensor(B::rotary_norm(
        prim(x),
        prim(cos.clone()),
        prim(sin.clone()),
        eps,
        scale,
    ))
}

/// Attention of `q` (`[B, Tq, H, D]`) over `k`, `v` (`[B, Tk, H_kv, D]`), the queries being the
/// last `Tq` of the `Tk` positions: query head `h` uses kv head `h / (H / H_kv)`, and sees its
/// own position and at most `window` earlier ones; scale `1/sqrt(D)`. Returns `[B, Tq, H, D]`.
pub fn attention<B: FusedOps>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    window: usize,
) -> Tensor<B, 4> {
    tensor(B::causal_attention(prim(q), prim(k), prim(v), window))
}

/// A ragged decode step: row `i`'s one query (`q` `[B, 1, H, D]`) sits at position
/// `positions[i]` and attends to that row's keys `k`, `v` (`[B, Tk, H_kv, D]`, from position 0)
/// up to its own, at most `window` back. Rows of a continuously batched decode each have
/// their own length; [`attention`] is the case where all rows share one.
pub fn ragged_attention<B: FusedOps>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    positions: &[usize],
    window: usize,
) -> Tensor<B, 4> {
    tensor(B::ragged_attention(
        prim(q),
        prim(k),
        prim(v),
        positions,
        window,
    ))
}

/// A KV cache's write: `value` (`[R, T, H, D]`) into `cache` (`[B, L, H, D]`), value row `r`
/// at cache row `at[r].0` from position `at[r].1`. The CPU kernel writes in place when nothing
/// else holds the cache (burn-flex's `slice_assign` copies the whole destination first: for a
/// batch of 32 rows of 2048 positions, tens of MB per layer and token).
pub fn kv_write<B: FusedOps>(
    cache: Tensor<B, 4>,
    value: Tensor<B, 4>,
    at: &[(usize, usize)],
) -> Tensor<B, 4> {
    tensor(B::kv_write(prim(cache), prim(value), at))
}

/// One AdamW step ([`optim::adamw_update`]) on a flat parameter: `[param, exp_avg, exp_avg_sq]`.
pub fn adamw_step<B: FusedOps>(
    param: Tensor<B, 1>,
    grad: Tensor<B, 1>,
    exp_avg: Tensor<B, 1>,
    exp_avg_sq: Tensor<B, 1>,
    h: &AdamScalars,
) -> [Tensor<B, 1>; 3] {
    B::adamw_update(prim(param), prim(grad), prim(exp_avg), prim(exp_avg_sq), h).map(tensor)
}

/// One Muon step ([`optim::muon_update`]) on `[K, m, n]` stacks in PyTorch layout:
/// `[params, momentum, second]`.
pub fn muon_step<B: FusedOps>(
    params: Tensor<B, 3>,
    grads: Tensor<B, 3>,
    momentum: Tensor<B, 3>,
    second: Tensor<B, 3>,
    h: &MuonHyper,
) -> [Tensor<B, 3>; 3] {
    B::muon_update(prim(params), prim(grads), prim(momentum), prim(second), h).map(tensor)
}

/// Upstream's logit soft cap `cap · tanh(x / cap)` (`cap > 0`).
pub fn softcap<B: FusedOps, const D: usize>(x: Tensor<B, D>, cap: f64) -> Tensor<B, D> {
    tensor(B::softcap(prim(x), cap))
}

/// `relu(x)²`, upstream's MLP activation.
pub fn relu_squared<B: FusedOps, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    tensor(B::relu_squared(prim(x)))
}
