//! One AdamW step on a parameter (upstream HEAD `nanochat/optim.py`, `adamw_step_fused`):
//! decoupled weight decay first, then the bias-corrected Adam update, all in float32. The update
//! itself is a fused op ([`nanochat_model::ops::optim::adamw_update`] defines it).

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use nanochat_model::FusedOps;
use nanochat_model::ops::{self, AdamScalars};

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

/// One AdamW step ([`nanochat_model::ops::adamw_step`]); returns the new parameter and updates
/// `state`.
pub fn adamw_step<B: FusedOps>(
    param: Tensor<B, 1>,
    grad: Tensor<B, 1>,
    state: &mut AdamState<B, 1>,
    h: &AdamHyper,
) -> Tensor<B, 1> {
    state.step += 1;
    let scalars = AdamScalars {
        lr: h.lr,
        betas: h.betas,
        eps: h.eps,
        weight_decay: h.weight_decay,
        step: state.step,
    };
    let [p, m, v] = ops::adamw_step(
        param,
        grad,
        state.exp_avg.clone(),
        state.exp_avg_sq.clone(),
        &scalars,
    );
    state.exp_avg = m;
    state.exp_avg_sq = v;
    p
}
