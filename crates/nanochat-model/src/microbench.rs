//! Micro-benchmarks of what a training step is made of, on any backend (what `nanochat bench
//! matmul` and `nanochat bench attention` print, beside `torch.matmul` and PyTorch's
//! `scaled_dot_product_attention` in the GPU profile, `xtask/scripts/gpu_profile.sh`).
//!
//! Each measurement runs twice untimed first (on a GPU: autotuning, kernel compilation), then
//! `iters` times between two device synchronisations; the time is the mean.

use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, Tensor};
use serde::Serialize;

use crate::{ComputeDtype, FusedOps, ops};

/// One matrix product `[m, k] × [k, n]`.
#[derive(Debug, Clone, Serialize)]
pub struct MatmulTiming {
    /// Rows of the left operand.
    pub m: usize,
    /// The shared dimension.
    pub k: usize,
    /// Columns of the right operand.
    pub n: usize,
    /// Milliseconds per product.
    pub ms: f64,
    /// `2·m·k·n` per second, in TFLOP/s.
    pub tflops: f64,
}

/// Times `[m, k] × [k, n]` in `dtype` on `device`, as the model's linear layers run it
/// ([`crate::ops::linear`]: CUDA's cuBLASLt when `NANOCHAT_CUBLASLT=1`, the CPU's kernel).
pub fn matmul<B: FusedOps>(
    (m, k, n): (usize, usize, usize),
    dtype: ComputeDtype,
    iters: usize,
    device: &B::Device,
) -> MatmulTiming {
    let normal = Distribution::Normal(0.0, 1.0);
    let a = Tensor::<B, 2>::random([m, k], normal, device).cast(dtype.float_dtype());
    let b = Tensor::<B, 2>::random([k, n], normal, device).cast(dtype.float_dtype());
    // A scalar per product keeps every product needed without keeping the outputs.
    let run = |times: usize| {
        let mut acc = Tensor::<B, 1>::zeros([1], device);
        for _ in 0..times {
            let c = crate::ops::linear(a.clone(), b.clone());
            acc = acc
                + c.slice([0..1, 0..1])
                    .reshape([1])
                    .cast(burn::tensor::FloatDType::F32);
        }
        acc
    };
    let ms = timed::<B>(device, iters, run);
    let tflops = 2.0 * (m * k * n) as f64 / (ms * 1e-3) / 1e12;
    MatmulTiming {
        m,
        k,
        n,
        ms,
        tflops,
    }
}

/// Causal attention over `[batch, seq, heads, head_dim]`, forward and backward.
#[derive(Debug, Clone, Serialize)]
pub struct AttentionTiming {
    /// Batch, sequence length, heads, head dimension.
    pub shape: [usize; 4],
    /// Milliseconds of the forward.
    pub forward_ms: f64,
    /// Milliseconds of the forward and backward together.
    pub forward_backward_ms: f64,
    /// Causal forward FLOPs (`2·B·H·T²·D`: half of the `4·B·H·T²·D` of full attention) per
    /// second of the forward, in TFLOP/s.
    pub forward_tflops: f64,
}

/// Times the model's causal attention (the fused op, full window) in `dtype` on `device`,
/// forward alone and forward + backward.
pub fn attention<B: AutodiffBackend + FusedOps>(
    shape: [usize; 4],
    dtype: ComputeDtype,
    iters: usize,
    device: &B::Device,
) -> AttentionTiming
where
    B::InnerBackend: FusedOps,
{
    let [b, t, h, d] = shape;
    let normal = Distribution::Normal(0.0, 1.0);
    let input = || {
        Tensor::<B, 4>::random([b, t, h, d], normal, device)
            .cast(dtype.float_dtype())
            .require_grad()
    };
    let (q, k, v) = (input(), input(), input());
    let forward = |times: usize| {
        let mut acc = Tensor::<B::InnerBackend, 1>::zeros([1], device);
        for _ in 0..times {
            let y = ops::attention(q.clone().inner(), k.clone().inner(), v.clone().inner(), t);
            acc = acc
                + y.slice([0..1, 0..1, 0..1, 0..1])
                    .reshape([1])
                    .cast(burn::tensor::FloatDType::F32);
        }
        acc
    };
    let both = |times: usize| {
        let mut acc = Tensor::<B::InnerBackend, 1>::zeros([1], device);
        for _ in 0..times {
            let y = ops::attention(q.clone(), k.clone(), v.clone(), t);
            let grads = y.sum().backward();
            if let Some(g) = q.grad(&grads) {
                acc = acc
                    + g.slice([0..1, 0..1, 0..1, 0..1])
                        .reshape([1])
                        .cast(burn::tensor::FloatDType::F32);
            }
        }
        acc
    };
    let forward_ms = timed::<B::InnerBackend>(device, iters, forward);
    let forward_backward_ms = timed::<B::InnerBackend>(device, iters, both);
    let flops = 2.0 * (b * h * d) as f64 * (t * t) as f64;
    AttentionTiming {
        shape,
        forward_ms,
        forward_backward_ms,
        forward_tflops: flops / (forward_ms * 1e-3) / 1e12,
    }
}

/// Mean milliseconds of one of `iters` calls of `run(iters)`, after `run(2)` untimed.
fn timed<B: burn::tensor::backend::Backend>(
    device: &B::Device,
    iters: usize,
    run: impl Fn(usize) -> Tensor<B, 1>,
) -> f64 {
    let _ = run(2).into_data();
    B::sync(device).ok();
    let t0 = Instant::now();
    let _ = run(iters.max(1)).into_data();
    B::sync(device).ok();
    t0.elapsed().as_secs_f64() * 1e3 / iters.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestBackend;

    #[test]
    fn timings_are_positive_and_flops_follow_the_shape() {
        let dev = Default::default();
        let m = matmul::<TestBackend>((16, 8, 4), ComputeDtype::F32, 2, &dev);
        assert!(m.ms > 0.0 && m.tflops > 0.0);
        assert!((m.tflops * m.ms * 1e-3 * 1e12 - 2.0 * 16.0 * 8.0 * 4.0).abs() < 1e-6);
        type Ad = burn::backend::Autodiff<TestBackend>;
        let a = attention::<Ad>([1, 8, 2, 4], ComputeDtype::F32, 1, &dev);
        assert!(a.forward_ms > 0.0 && a.forward_backward_ms > 0.0 && a.forward_tflops > 0.0);
    }
}
