//! One Muon step on a stack of same-shape matrices (upstream HEAD `nanochat/optim.py`,
//! `muon_step_fused`): the per-group state and the call of the fused op
//! ([`nanochat_model::ops::optim::muon_update`] defines the update).

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use nanochat_model::FusedOps;
use nanochat_model::ops;
pub use nanochat_model::ops::MuonHyper;
pub use nanochat_model::ops::optim::{POLAR_EXPRESS_COEFFS, polar_express};

/// Muon's per-group state: the momentum buffer `[K, m, n]` and NorMuon's factored second moment
/// (`[K, m, 1]` when `m >= n`, else `[K, 1, n]`).
#[derive(Debug, Clone)]
pub struct MuonState<B: Backend> {
    /// First moment.
    pub momentum_buffer: Tensor<B, 3>,
    /// Factored second moment.
    pub second_momentum_buffer: Tensor<B, 3>,
}

impl<B: Backend> MuonState<B> {
    /// Zero state for `k` matrices of shape `[m, n]`.
    pub fn zeros(k: usize, m: usize, n: usize, device: &B::Device) -> Self {
        let second = if m >= n { [k, m, 1] } else { [k, 1, n] };
        Self {
            momentum_buffer: Tensor::zeros([k, m, n], device),
            second_momentum_buffer: Tensor::zeros(second, device),
        }
    }
}

/// One Muon step: Nesterov momentum → MuonEq → Polar Express → Muon+ → NorMuon → cautious
/// weight decay. Returns the new parameters; `state` is updated in place.
pub fn muon_step<B: FusedOps>(
    params: Tensor<B, 3>,
    grads: Tensor<B, 3>,
    state: &mut MuonState<B>,
    h: &MuonHyper,
) -> Tensor<B, 3> {
    let [p, m, v] = ops::muon_step(
        params,
        grads,
        state.momentum_buffer.clone(),
        state.second_momentum_buffer.clone(),
        h,
    );
    state.momentum_buffer = m;
    state.second_momentum_buffer = v;
    p
}
