//! The training ops on one backend against the CPU kernels, on random inputs of the model's
//! shapes: what `nanochat bench parity` prints beside the fixture forward, so that a GPU run
//! (the device profile, `xtask/scripts/gpu_profile.sh`) checks the ops it trains with in its
//! own dtype. Today that is attention under autodiff, the blocked composition on WGPU and
//! CUDA ([`crate::ops::blocked_attention`]): its output and `dq`, `dk`, `dv` against the CPU's
//! fused kernel in float32.

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use serde::Serialize;

use crate::fixture::max_rel_diff;
use crate::{ComputeDtype, FusedOps, ops};

/// One attention case: `[batch, time, heads, kv heads, head dim]` and the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AttentionCase {
    /// `[B, T, H, H_kv, D]`.
    pub shape: [usize; 5],
    /// Earlier keys a query sees.
    pub window: usize,
}

/// The cases [`attention_parity`] checks: d12's heads (6 × 128) with the full window at an
/// odd length (several blocks' worth of rows is what matters, not T), grouped kv heads with
/// a short window (window pattern `S`), and a small odd one with one kv head.
pub const ATTENTION_CASES: [AttentionCase; 3] = [
    AttentionCase {
        shape: [2, 301, 6, 6, 128],
        window: 301,
    },
    AttentionCase {
        shape: [2, 301, 6, 2, 128],
        window: 75,
    },
    AttentionCase {
        shape: [3, 77, 4, 1, 64],
        window: 10,
    },
];

/// One op on one backend against the CPU in float32.
#[derive(Debug, Clone, Serialize)]
pub struct OpParity {
    /// The op.
    pub op: &'static str,
    /// Its case.
    pub case: AttentionCase,
    /// The compute dtype of the checked run.
    pub dtype: String,
    /// [`max_rel_diff`] of the output and of each input gradient (`out`, `dq`, `dk`, `dv`).
    pub max_rel: [f32; 4],
    /// The tolerance for `dtype`: float32 1e-3 (CUDA may run float32 products in TF32),
    /// bfloat16 3e-2 (as the forward; the CPU in bf16 is within 1e-2).
    pub tolerance: f32,
    /// All within the tolerance.
    pub ok: bool,
}

/// `n` deterministic inputs in `[-1.5, 1.5)` (a xorshift stream from `seed`).
pub(crate) fn inputs(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 3.0
        })
        .collect()
}

/// `ops::attention` through autodiff on `B` for `case`, in `dtype`: the output and
/// `(dq, dk, dv)` of `Σ out ∘ dy`, as float32 vectors (empty where a gradient is missing).
pub fn attention_values<B: AutodiffBackend + FusedOps>(
    case: AttentionCase,
    dtype: ComputeDtype,
    device: &B::Device,
) -> [Vec<f32>; 4] {
    let [b, t, h, h_kv, d] = case.shape;
    let x = |shape: [usize; 4], seed: u64| {
        let n = shape.iter().product();
        Tensor::<B, 4>::from_data(TensorData::new(inputs(n, seed), shape), device)
            .cast(dtype.float_dtype())
    };
    let q = x([b, t, h, d], 1).require_grad();
    let k = x([b, t, h_kv, d], 2).require_grad();
    let v = x([b, t, h_kv, d], 3).require_grad();
    let dy = x([b, t, h, d], 4);
    let out = ops::attention(q.clone(), k.clone(), v.clone(), case.window);
    let grads = (out.clone() * dy).sum().backward();
    let f32s = |t: Tensor<B::InnerBackend, 4>| {
        t.into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .unwrap_or_default()
    };
    let grad = |x: &Tensor<B, 4>| x.grad(&grads).map(f32s).unwrap_or_default();
    [f32s(out.inner()), grad(&q), grad(&k), grad(&v)]
}

/// Attention on `device` (backend `B`, in `dtype`) against the CPU backend `Cpu` in float32,
/// for each of [`ATTENTION_CASES`].
pub fn attention_parity<B, Cpu>(device: &B::Device, dtype: ComputeDtype) -> Vec<OpParity>
where
    B: AutodiffBackend + FusedOps,
    Cpu: AutodiffBackend + FusedOps,
{
    let tolerance = match dtype {
        ComputeDtype::F32 => 1e-3,
        ComputeDtype::BF16 => 3e-2,
    };
    ATTENTION_CASES
        .iter()
        .map(|&case| {
            let ours = attention_values::<B>(case, dtype, device);
            let cpu = attention_values::<Cpu>(case, ComputeDtype::F32, &Default::default());
            let max_rel = [0, 1, 2, 3].map(|i| max_rel_diff(&ours[i], &cpu[i]));
            OpParity {
                op: "attention",
                case,
                dtype: format!("{dtype:?}"),
                max_rel,
                tolerance,
                ok: max_rel.iter().all(|&e| e <= tolerance),
            }
        })
        .collect()
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use crate::backend::CpuBackend;

    #[test]
    fn bfloat16_attention_on_the_cpu_is_within_its_tolerance() {
        // The CPU's kernel is float32; in bf16 it runs the blocked composition, as WGPU and
        // CUDA do: this checks that composition in bf16 against the float32 kernel, and so
        // the tolerance a GPU run is held to.
        let r = attention_parity::<CpuBackend, CpuBackend>(&Default::default(), ComputeDtype::BF16);
        assert_eq!(r.len(), ATTENTION_CASES.len());
        for p in &r {
            assert!(p.ok, "{p:?}");
            assert!(
                p.max_rel.iter().all(|&e| e > 0.0),
                "bf16 differs somewhere: {p:?}"
            );
        }
    }
}
