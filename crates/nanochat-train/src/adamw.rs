//! One AdamW step on a parameter (upstream HEAD `nanochat/optim.py`, `adamw_step_fused`):
//! decoupled weight decay first, then the bias-corrected Adam update, all in float32.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// Scalars of one AdamW step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamHyper {
    /// Learning rate (already multiplied by the schedule).
    pub lr: f64,
    /// `(beta1, beta2)`.
    pub betas: [f64; 2],
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

/// AdamW moments of one parameter and its step count.
#[derive(Debug, Clone)]
pub struct AdamState<B: Backend, const D: usize> {
    /// Number of steps taken (the next step is `step + 1`).
    pub step: u64,
    /// First moment.
    pub exp_avg: Tensor<B, D>,
    /// Second moment.
    pub exp_avg_sq: Tensor<B, D>,
}

impl<B: Backend, const D: usize> AdamState<B, D> {
    /// Zero moments shaped like `param`.
    pub fn zeros_like(param: &Tensor<B, D>) -> Self {
        Self {
            step: 0,
            exp_avg: param.zeros_like(),
            exp_avg_sq: param.zeros_like(),
        }
    }
}

/// One AdamW step; returns the new parameter and updates `state`.
pub fn adamw_step<B: Backend, const D: usize>(
    param: Tensor<B, D>,
    grad: Tensor<B, D>,
    state: &mut AdamState<B, D>,
    h: &AdamHyper,
) -> Tensor<B, D> {
    state.step += 1;
    let [b1, b2] = h.betas;
    let p = param * (1.0 - h.lr * h.weight_decay);
    state.exp_avg = state.exp_avg.clone() + (grad.clone() - state.exp_avg.clone()) * (1.0 - b1);
    state.exp_avg_sq =
        state.exp_avg_sq.clone() + (grad.square() - state.exp_avg_sq.clone()) * (1.0 - b2);
    let bias1 = 1.0 - b1.powi(state.step as i32);
    let bias2 = 1.0 - b2.powi(state.step as i32);
    let denom = (state.exp_avg_sq.clone() / bias2).sqrt() + h.eps;
    p - state.exp_avg.clone() / denom * (h.lr / bias1)
}
