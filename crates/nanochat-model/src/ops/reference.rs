//! The reference compositions of the fused ops, in burn tensor ops on any backend: what a
//! backend without kernels computes (forward, and backward through autodiff), and the
//! definitions the kernels are tested against. These are the model's formulas as upstream
//! writes them (`nanochat/gpt.py`).

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor, ModuleOps};
use burn::tensor::{FloatDType, Int, Tensor, TensorPrimitive};

use crate::flash_attention::{causal_window_attention, ragged_window_attention};

fn tensor<B: Backend, const D: usize>(p: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

fn prim<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

/// Per-row losses of `targets` (`[N]`, −1 ignored) under `logits` (`[N, V_padded]`) cropped to
/// `vocab` columns, cast to float32 and soft-capped: upstream's
/// `F.cross_entropy(15·tanh(z/15), targets, ignore_index=-1, reduction='none')`.
pub fn cross_entropy_losses<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    vocab: usize,
    softcap: f64,
) -> Tensor<B, 1> {
    let [n, v_padded] = logits.dims();
    let z = if vocab < v_padded {
        logits.slice([0..n, 0..vocab])
    } else {
        logits
    };
    let z = z.cast(FloatDType::F32);
    let s = if softcap > 0.0 {
        (z / softcap).tanh() * softcap
    } else {
        z
    };
    let keep = targets.clone().greater_equal_elem(0).float();
    let idx = targets.clamp_min(0).reshape([n, 1]);
    let max = s.clone().max_dim(1);
    let lse = (s.clone() - max.clone()).exp().sum_dim(1).log() + max;
    let picked = s.gather(1, idx);
    (lse - picked).reshape([n]) * keep
}

/// [`cross_entropy_losses`] on primitives, with the gradient of the losses' sum when asked
/// (obtained by differentiating the composition).
pub fn cross_entropy_forward<B: Backend>(
    logits: FloatTensor<B>,
    targets: IntTensor<B>,
    vocab: usize,
    softcap: f64,
    with_grad: bool,
) -> (FloatTensor<B>, Option<FloatTensor<B>>) {
    let logits = tensor::<B, 2>(logits);
    let targets = Tensor::<B, 1, Int>::from_primitive(targets);
    if !with_grad {
        return (
            prim(cross_entropy_losses(logits, targets, vocab, softcap)),
            None,
        );
    }
    let x = Tensor::<Autodiff<B>, 2>::from_inner(logits).require_grad();
    let losses = cross_entropy_losses(x.clone(), Tensor::from_inner(targets), vocab, softcap);
    let grads = losses.clone().sum().backward();
    let unit = x
        .grad(&grads)
        .expect("the logits take part in the loss")
        .cast(FloatDType::F32);
    (prim(losses.inner()), Some(prim(unit)))
}

/// `unit` (`[N, V]`) with row `i` scaled by `grad[i]`.
pub fn scale_rows<B: Backend>(unit: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B> {
    let unit = tensor::<B, 2>(unit);
    let n = unit.dims()[0];
    let grad = tensor::<B, 1>(grad).reshape([n, 1]);
    prim(unit * grad)
}

/// Parameter-free RMSNorm over the last dimension: `x / sqrt(mean(x²) + eps)`.
pub fn rms_norm<B: Backend, const D: usize>(x: Tensor<B, D>, eps: f64) -> Tensor<B, D> {
    let ms = x.clone().square().mean_dim(D - 1);
    x * (ms + eps).sqrt().recip()
}

/// [`rms_norm`] of a `[N, C]` primitive.
pub fn rms_norm_2d<B: Backend>(x: FloatTensor<B>, eps: f64) -> FloatTensor<B> {
    prim(rms_norm(tensor::<B, 2>(x), eps))
}

/// Upstream's `apply_rotary_emb` on `[B, T, H, D]` with tables `[T, D/2]`: half-split pairs,
/// `y1 = x1·cos + x2·sin`, `y2 = x2·cos − x1·sin`.
pub fn apply_rotary<B: Backend>(
    x: Tensor<B, 4>,
    cos: &Tensor<B, 2>,
    sin: &Tensor<B, 2>,
) -> Tensor<B, 4> {
    let [_, t, _, d] = x.dims();
    let half = d / 2;
    let cos = cos.clone().reshape([1, t, 1, half]);
    let sin = sin.clone().reshape([1, t, 1, half]);
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.narrow(3, half, half);
    let y1 = x1.clone() * cos.clone() + x2.clone() * sin.clone();
    let y2 = x2 * cos - x1 * sin;
    Tensor::cat(vec![y1, y2], 3)
}

/// `rms_norm(apply_rotary(x)) · scale` (upstream: `norm(apply_rotary_emb(q, cos, sin)) * 1.2`).
pub fn rotary_norm<B: Backend>(
    x: Tensor<B, 4>,
    cos: &Tensor<B, 2>,
    sin: &Tensor<B, 2>,
    eps: f64,
    scale: f64,
) -> Tensor<B, 4> {
    rms_norm(apply_rotary(x, cos, sin), eps) * scale
}

/// [`rotary_norm`] on primitives.
pub fn rotary_norm_prim<B: Backend>(
    x: FloatTensor<B>,
    cos: FloatTensor<B>,
    sin: FloatTensor<B>,
    eps: f64,
    scale: f64,
) -> FloatTensor<B> {
    let (cos, sin) = (tensor::<B, 2>(cos), tensor::<B, 2>(sin));
    prim(rotary_norm(tensor::<B, 4>(x), &cos, &sin, eps, scale))
}

/// `dx` of [`rotary_norm`] for `dy`, by autodiff (tables `[T, D/2]`).
pub fn rotary_norm_vjp<B: Backend>(
    x: FloatTensor<B>,
    dy: FloatTensor<B>,
    (cos, sin): (FloatTensor<B>, FloatTensor<B>),
    eps: f64,
    scale: f64,
) -> FloatTensor<B> {
    let (cos, sin) = (tensor::<B, 2>(cos), tensor::<B, 2>(sin));
    vjp1::<B, 4>(x, dy, |x| {
        let (cos, sin) = (Tensor::from_inner(cos), Tensor::from_inner(sin));
        rotary_norm(x, &cos, &sin, eps, scale)
    })
}

/// `(dx, dw)` of `x · w` through the backend's own `ModuleOps` backward, each when asked for.
pub fn linear_vjp<B: Backend>(
    x: FloatTensor<B>,
    w: FloatTensor<B>,
    dy: FloatTensor<B>,
    need: [bool; 2],
) -> [Option<FloatTensor<B>>; 2] {
    let dx = need[0].then(|| <B as ModuleOps<B>>::linear_x_backward(w, dy.clone()));
    let dw = need[1].then(|| <B as ModuleOps<B>>::linear_weight_backward(x, dy));
    [dx, dw]
}

/// Attention on `[B, T, H, D]` tensors through [`causal_window_attention`] (`[B, H, T, D]`).
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    window: usize,
) -> Tensor<B, 4> {
    causal_window_attention(
        q.swap_dims(1, 2),
        k.swap_dims(1, 2),
        v.swap_dims(1, 2),
        window,
    )
    .swap_dims(1, 2)
}

/// [`attention`] on primitives.
pub fn attention_prim<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    window: usize,
) -> FloatTensor<B> {
    prim(attention(tensor::<B, 4>(q), tensor(k), tensor(v), window))
}

/// A ragged decode step on `[B, 1, H, D]` / `[B, Tk, H_kv, D]` tensors through
/// [`ragged_window_attention`].
pub fn ragged_attention_prim<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    positions: &[usize],
    window: usize,
) -> FloatTensor<B> {
    let t = |p| tensor::<B, 4>(p).swap_dims(1, 2);
    prim(ragged_window_attention(t(q), t(k), t(v), positions, window).swap_dims(1, 2))
}

/// [`crate::ops::kv_write`] by `slice_assign`, one per value row.
pub fn kv_write_prim<B: Backend>(
    cache: FloatTensor<B>,
    value: FloatTensor<B>,
    at: &[(usize, usize)],
) -> FloatTensor<B> {
    let mut cache = tensor::<B, 4>(cache);
    let value = tensor::<B, 4>(value);
    let [_, t, h, d] = value.dims();
    for (r, &(row, pos)) in at.iter().enumerate() {
        let piece = value.clone().slice([r..r + 1, 0..t, 0..h, 0..d]);
        cache = cache.slice_assign([row..row + 1, pos..pos + t, 0..h, 0..d], piece);
    }
    prim(cache)
}

/// `(dq, dk, dv)` of [`attention`] for the output gradient `dout`, by autodiff.
pub fn attention_vjp<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    dout: FloatTensor<B>,
    window: usize,
) -> [FloatTensor<B>; 3] {
    let lift = |p: FloatTensor<B>| Tensor::<Autodiff<B>, 4>::from_inner(tensor(p)).require_grad();
    let (q, k, v) = (lift(q), lift(k), lift(v));
    let out = attention(q.clone(), k.clone(), v.clone(), window);
    let grads = (out * Tensor::from_inner(tensor::<B, 4>(dout)))
        .sum()
        .backward();
    [q, k, v].map(|x| prim(x.grad(&grads).expect("the input takes part in the output")))
}

/// The vector-Jacobian product of a one-input function `f` at `x` for the output gradient
/// `dy`, by autodiff: the default backward of the fused ops.
pub fn vjp1<B: Backend, const D: usize>(
    x: FloatTensor<B>,
    dy: FloatTensor<B>,
    f: impl FnOnce(Tensor<Autodiff<B>, D>) -> Tensor<Autodiff<B>, D>,
) -> FloatTensor<B> {
    let x = Tensor::<Autodiff<B>, D>::from_inner(tensor(x)).require_grad();
    let y = f(x.clone());
    let grads = (y * Tensor::from_inner(tensor::<B, D>(dy)))
        .sum()
        .backward();
    prim(x.grad(&grads).expect("the input takes part in the output"))
}

/// `relu(x)²` (element-wise, any rank).
pub fn relu_squared_prim<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let r = B::relu(x);
    B::float_mul(r.clone(), r)
}

/// `2·relu(x)·dy` (element-wise, any rank).
pub fn relu_squared_backward_prim<B: Backend>(
    x: FloatTensor<B>,
    dy: FloatTensor<B>,
) -> FloatTensor<B> {
    let r = B::float_mul_scalar(B::relu(x), 2.0f32.into());
    B::float_mul(r, dy)
}

/// `cap · tanh(x / cap)` (element-wise, any rank).
pub fn softcap_prim<B: Backend>(x: FloatTensor<B>, cap: f64) -> FloatTensor<B> {
    let t = B::float_tanh(B::float_div_scalar(x, (cap as f32).into()));
    B::float_mul_scalar(t, (cap as f32).into())
}

/// `dy · (1 − (y / cap)²)` (element-wise, any rank).
pub fn softcap_backward_prim<B: Backend>(
    y: FloatTensor<B>,
    dy: FloatTensor<B>,
    cap: f64,
) -> FloatTensor<B> {
    let t = B::float_div_scalar(y, (cap as f32).into());
    let one_minus = B::float_add_scalar(B::float_neg(B::float_mul(t.clone(), t)), 1.0f32.into());
    B::float_mul(dy, one_minus)
}
