//! The training ops on one backend against the CPU kernels, on random inputs of the model's
//! shapes: what `nanochat bench parity` prints beside the fixture forward, so that a GPU run
//! (the device profile, `xtask/scripts/gpu_profile.sh`) checks the ops it trains with in its
//! own dtype: attention under autodiff, the blocked composition on WGPU and CUDA
//! ([`crate::ops::blocked_attention`]), its output and `dq`, `dk`, `dv` against the CPU's fused
//! kernel in float32; and the linear layer, its output and `dx`, `dw` (on CUDA through cuBLASLt
//! when `NANOCHAT_CUBLASLT=1`).

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

/// One linear case: `x` `[.., K]` (its dimensions but the last, then `K`) times `w` `[K, N]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LinearCase {
    /// `x`'s shape.
    pub x: [usize; 3],
    /// `N`.
    pub n: usize,
}

/// The cases [`linear_parity`] checks: d12's MLP input projection at an odd number of rows,
/// and odd sizes everywhere (no dimension a multiple of a tile).
pub const LINEAR_CASES: [LinearCase; 2] = [
    LinearCase {
        x: [1, 301, 768],
        n: 3072,
    },
    LinearCase {
        x: [2, 77, 383],
        n: 130,
    },
];

/// An op's case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum OpCase {
    /// [`ATTENTION_CASES`].
    Attention(AttentionCase),
    /// [`LINEAR_CASES`].
    Linear(LinearCase),
}

/// One op on one backend against the CPU in float32.
#[derive(Debug, Clone, Serialize)]
pub struct OpParity {
    /// The op.
    pub op: &'static str,
    /// Its case.
    pub case: OpCase,
    /// The compute dtype of the checked run.
    pub dtype: String,
    /// What [`OpParity::max_rel`] measures, in order: the output, then each input gradient.
    pub values: &'static [&'static str],
    /// [`max_rel_diff`] of each of [`OpParity::values`].
    pub max_rel: Vec<f32>,
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

/// `ops::linear` through autodiff on `B` for `case`, in `dtype`: the output and `(dx, dw)` of
/// `Σ out ∘ dy`, as float32 vectors (empty where a gradient is missing).
pub fn linear_values<B: AutodiffBackend + FusedOps>(
    case: LinearCase,
    dtype: ComputeDtype,
    device: &B::Device,
) -> [Vec<f32>; 3] {
    let [b, t, k] = case.x;
    let x = |shape: [usize; 3], seed: u64| {
        let n = shape.iter().product();
        Tensor::<B, 3>::from_data(TensorData::new(inputs(n, seed), shape), device)
            .cast(dtype.float_dtype())
    };
    let w = Tensor::<B, 2>::from_data(TensorData::new(inputs(k * case.n, 6), [k, case.n]), device)
        .cast(dtype.float_dtype())
        .require_grad();
    let xs = x(case.x, 5).require_grad();
    let dy = x([b, t, case.n], 7);
    let out = ops::linear(xs.clone(), w.clone());
    let grads = (out.clone() * dy).sum().backward();
    let f32s = |d: TensorData| d.convert::<f32>().to_vec::<f32>().unwrap_or_default();
    [
        f32s(out.inner().into_data()),
        xs.grad(&grads)
            .map(|g| f32s(g.into_data()))
            .unwrap_or_default(),
        w.grad(&grads)
            .map(|g| f32s(g.into_data()))
            .unwrap_or_default(),
    ]
}

/// The tolerance of a checked run in `dtype`: float32 1e-3 (CUDA may run float32 products in
/// TF32), bfloat16 3e-2.
fn tolerance(dtype: ComputeDtype) -> f32 {
    match dtype {
        ComputeDtype::F32 => 1e-3,
        ComputeDtype::BF16 => 3e-2,
    }
}

/// `ours` against `cpu`, value by value.
fn compare(
    op: &'static str,
    case: OpCase,
    dtype: ComputeDtype,
    values: &'static [&'static str],
    ours: &[Vec<f32>],
    cpu: &[Vec<f32>],
) -> OpParity {
    let tolerance = tolerance(dtype);
    let max_rel: Vec<f32> = ours
        .iter()
        .zip(cpu)
        .map(|(a, b)| max_rel_diff(a, b))
        .collect();
    OpParity {
        op,
        case,
        dtype: format!("{dtype:?}"),
        values,
        ok: max_rel.iter().all(|&e| e <= tolerance),
        max_rel,
        tolerance,
    }
}

/// Attention on `device` (backend `B`, in `dtype`) against the CPU backend `Cpu` in float32,
/// for each of [`ATTENTION_CASES`].
pub fn attention_parity<B, Cpu>(device: &B::Device, dtype: ComputeDtype) -> Vec<OpParity>
where
    B: AutodiffBackend + FusedOps,
    Cpu: AutodiffBackend + FusedOps,
{
    ATTENTION_CASES
        .iter()
        .map(|&case| {
            let ours = attention_values::<B>(case, dtype, device);
            let cpu = attention_values::<Cpu>(case, ComputeDtype::F32, &Default::default());
            let values = &["out", "dq", "dk", "dv"];
            compare(
                "attention",
                OpCase::Attention(case),
                dtype,
                values,
                &ours,
                &cpu,
            )
        })
        .collect()
}

/// The linear layer on `device` against `Cpu` in float32, for each of [`LINEAR_CASES`].
pub fn linear_parity<B, Cpu>(device: &B::Device, dtype: ComputeDtype) -> Vec<OpParity>
where
    B: AutodiffBackend + FusedOps,
    Cpu: AutodiffBackend + FusedOps,
{
    LINEAR_CASES
        .iter()
        .map(|&case| {
            let ours = linear_values::<B>(case, dtype, device);
            let cpu = linear_values::<Cpu>(case, ComputeDtype::F32, &Default::default());
            let values = &["out", "dx", "dw"];
            compare("linear", OpCase::Linear(case), dtype, values, &ours, &cpu)
        })
        .collect()
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use crate::backend::CpuBackend;

    #[test]
    fn bfloat16_attention_and_linear_on_the_cpu_are_within_their_tolerance() {
        // The CPU's attention kernel is float32; in bf16 it runs the blocked composition, as
        // WGPU and CUDA do: this checks that composition (and the linear layer) in bf16
        // against float32, and so the tolerance a GPU run is held to.
        let r = attention_parity::<CpuBackend, CpuBackend>(&Default::default(), ComputeDtype::BF16);
        assert_eq!(r.len(), ATTENTION_CASES.len());
        let linear =
            linear_parity::<CpuBackend, CpuBackend>(&Default::default(), ComputeDtype::BF16);
        assert_eq!(linear.len(), LINEAR_CASES.len());
        let r: Vec<_> = r.into_iter().chain(linear).collect();
        for p in &r {
            assert!(p.ok, "{p:?}");
            assert!(
                p.max_rel.iter().all(|&e| e > 0.0),
                "bf16 differs somewhere: {p:?}"
            );
        }
    }
}
