//! The optimizer's update rules as fused ops (upstream HEAD `nanochat/optim.py`:
//! `adamw_step_fused`, `muon_step_fused`, `polar_express_coeffs`): the reference compositions in
//! burn tensor ops, which [`FusedOps::adamw_update`](super::FusedOps::adamw_update) and
//! [`FusedOps::muon_update`](super::FusedOps::muon_update) default to. The state handling and
//! parameter groups are `nanochat-train`'s (`optim.rs`).
//!
//! Muon's matrices are in PyTorch layout (`[K, out, in]`): MuonEq equalises *rows*, the
//! tall/wide branch and NorMuon's reduction axis depend on `out` vs `in`, and the aspect-ratio
//! learning-rate factor is `max(1, out/in)^0.5`, exactly as upstream sees its `nn.Linear`
//! weights.

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Tensor, TensorPrimitive};

/// Polar Express coefficients `(a, b, c)` for 5 iterations (arXiv 2505.16932; safety factor
/// 2e-2, cushion 2), upstream's `polar_express_coeffs`.
pub const POLAR_EXPRESS_COEFFS: [(f64, f64, f64); 5] = [
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
];

/// Scalars of one Muon step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MuonHyper {
    /// Nesterov momentum (scheduled by base_train: 0.85 → 0.97 → 0.90).
    pub momentum: f64,
    /// Learning rate before the aspect-ratio factor.
    pub lr: f64,
    /// Cautious weight decay (scheduled).
    pub weight_decay: f64,
    /// NorMuon's second-moment decay (0.9).
    pub beta2: f64,
    /// Polar Express iterations (at most 5).
    pub ns_steps: usize,
    /// Run the orthogonalisation in bfloat16 (upstream does on GPU).
    pub bf16: bool,
}

/// Scalars of one AdamW step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamScalars {
    /// Learning rate (already multiplied by the schedule).
    pub lr: f64,
    /// `(beta1, beta2)`.
    pub betas: [f64; 2],
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// The step being taken (1 for the first), for the bias corrections.
    pub step: u64,
}

/// One AdamW step: decoupled weight decay, then the bias-corrected Adam update, in float32.
/// Returns `[param, exp_avg, exp_avg_sq]`.
pub fn adamw_update<B: Backend, const D: usize>(
    param: Tensor<B, D>,
    grad: Tensor<B, D>,
    exp_avg: Tensor<B, D>,
    exp_avg_sq: Tensor<B, D>,
    h: &AdamScalars,
) -> [Tensor<B, D>; 3] {
    let [b1, b2] = h.betas;
    let p = param * (1.0 - h.lr * h.weight_decay);
    let exp_avg = exp_avg.clone() + (grad.clone() - exp_avg) * (1.0 - b1);
    let exp_avg_sq = exp_avg_sq.clone() + (grad.square() - exp_avg_sq) * (1.0 - b2);
    let bias1 = 1.0 - b1.powi(h.step as i32);
    let bias2 = 1.0 - b2.powi(h.step as i32);
    let denom = (exp_avg_sq.clone() / bias2).sqrt() + h.eps;
    let p = p - exp_avg.clone() / denom * (h.lr / bias1);
    [p, exp_avg, exp_avg_sq]
}

/// Frobenius norm of each matrix of the stack, `[K, 1, 1]`.
fn fro<B: Backend>(x: &Tensor<B, 3>) -> Tensor<B, 3> {
    x.clone().square().sum_dims(&[1, 2]).sqrt()
}

/// `a + w·(b − a)`, torch's `lerp`.
fn lerp<B: Backend>(a: Tensor<B, 3>, b: Tensor<B, 3>, w: f64) -> Tensor<B, 3> {
    a.clone() + (b - a) * w
}

/// Polar Express orthogonalisation of each matrix (after MuonEq and normalisation).
pub fn polar_express<B: Backend>(x: Tensor<B, 3>, ns_steps: usize) -> Tensor<B, 3> {
    let [_, m, n] = x.dims();
    let mut x = x.clone() / (fro(&x) * 1.01 + 1e-6);
    for &(a, b, c) in POLAR_EXPRESS_COEFFS.iter().take(ns_steps) {
        if m > n {
            let xt = x.clone().swap_dims(1, 2);
            let am = xt.matmul(x.clone());
            let bm = am.clone() * b + am.clone().matmul(am) * c;
            x = x.clone() * a + x.matmul(bm);
        } else {
            let xt = x.clone().swap_dims(1, 2);
            let am = x.clone().matmul(xt);
            let bm = am.clone() * b + am.clone().matmul(am) * c;
            x = x.clone() * a + bm.matmul(x);
        }
    }
    x
}

/// One Muon step on `[K, m, n]` stacks: Nesterov momentum → MuonEq → Polar Express → Muon+ →
/// NorMuon → cautious weight decay. `second` is NorMuon's factored second moment (`[K, m, 1]`
/// when `m >= n`, else `[K, 1, n]`). Returns `[params, momentum, second]`.
pub fn muon_update<B: Backend>(
    params: Tensor<B, 3>,
    grads: Tensor<B, 3>,
    momentum: Tensor<B, 3>,
    second: Tensor<B, 3>,
    h: &MuonHyper,
) -> [Tensor<B, 3>; 3] {
    let [_, m, n] = params.dims();
    // Nesterov momentum.
    let momentum = lerp(momentum, grads.clone(), 1.0 - h.momentum);
    let g = lerp(grads, momentum.clone(), h.momentum);

    // MuonEq: every row to the mean row norm.
    let target = fro(&g) / (m as f64).sqrt();
    let row_norm = g.clone().square().sum_dim(2).sqrt().clamp_min(1e-6);
    let mut x = g * (target / row_norm);
    if h.bf16 {
        x = x.cast(DType::BF16);
    }
    let x = polar_express(x, h.ns_steps);
    let x = if h.bf16 { x.cast(DType::F32) } else { x };

    // Muon+: Frobenius norm of a semi-orthogonal matrix.
    let target_norm = (m.min(n) as f64).sqrt();
    let g = x.clone() * (fro(&x).clamp_min(1e-6).recip() * target_norm);

    // NorMuon: factored second moment over the larger dimension, total norm preserved.
    let red_dim = if m >= n { 2 } else { 1 };
    let red_size = if m >= n { n } else { m } as f64;
    let v_mean = g.clone().square().mean_dim(red_dim);
    let v_norm = (v_mean.clone().sum_dims(&[1, 2]) * red_size).sqrt();
    let second = lerp(second, v_mean.clone(), 1.0 - h.beta2);
    let step_size = second.clone().clamp_min(1e-10).sqrt().recip();
    let scaled_sq_sum = v_mean * red_size * step_size.clone().square();
    let v_norm_new = scaled_sq_sum.sum_dims(&[1, 2]).sqrt();
    let final_scale = step_size * (v_norm / v_norm_new.clamp_min(1e-10));
    let g = g * final_scale;

    // Cautious weight decay and the update, with the aspect-ratio learning-rate factor.
    let lr = h.lr * (m as f64 / n as f64).max(1.0).sqrt();
    let mask = (g.clone() * params.clone()).greater_equal_elem(0.0).float();
    let params = params.clone() - g * lr - params * mask * (lr * h.weight_decay);
    [params, momentum, second]
}

fn tensor<B: Backend, const D: usize>(p: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

/// [`adamw_update`] on flat primitives.
pub fn adamw_update_prim<B: Backend>(
    [p, g, m, v]: [FloatTensor<B>; 4],
    h: &AdamScalars,
) -> [FloatTensor<B>; 3] {
    adamw_update::<B, 1>(tensor(p), tensor(g), tensor(m), tensor(v), h)
        .map(|t| t.into_primitive().tensor())
}

/// [`muon_update`] on `[K, m, n]` primitives.
pub fn muon_update_prim<B: Backend>(
    [p, g, m, v]: [FloatTensor<B>; 4],
    h: &MuonHyper,
) -> [FloatTensor<B>; 3] {
    muon_update::<B>(tensor(p), tensor(g), tensor(m), tensor(v), h)
        .map(|t| t.into_primitive().tensor())
}
