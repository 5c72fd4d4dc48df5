//! The CUDA backend's kernels. burn's `Cuda` is `Fusion<CubeBackend<CudaRuntime>>`; CubeCL 0.10
//! has no `wgmma` matmul, the instruction Hopper's full tensor-core rate needs
//! (docs/performance.md), so with `NANOCHAT_CUBLASLT=1` the linear layer's three products
//! (`x · w`, `dy · wᵀ`, `xᵀ · dy`; `lm_head`'s too, which the blocked loss computes with the
//! same two kernels) run through NVIDIA's cuBLASLt instead (`cublaslt`), as a custom op of the
//! fusion graph (`ops::fusion_gemm`) on CubeCL's own stream. Every other op is the reference
//! composition (and the blocked loss and attention every backend gets).
//!
//! Off by default until a device run has measured it against CubeCL's kernels and checked its
//! parity (`nanochat bench parity` and `xtask/scripts/gpu_profile.sh` run both); the switch is
//! read once per process.

mod cublaslt;

use std::sync::OnceLock;

use burn::backend::Cuda;
use burn::tensor::DType;
use burn::tensor::ops::{FloatTensor, FloatTensorOps, ModuleOps};
use burn::tensor::{Shape, TensorMetadata};

use super::{FusedOps, reference};

/// The environment variable that turns cuBLASLt on (`1`, `true` or `on`).
pub const ENV: &str = "NANOCHAT_CUBLASLT";

/// Whether the linear layer's products go through cuBLASLt in this process.
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        let on = std::env::var(ENV).is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "on"));
        if on {
            tracing::info!("{ENV}: the linear layers' matrix products run through cuBLASLt");
        }
        on
    })
}

/// cuBLASLt takes this product: switched on, one dtype it multiplies (f32, bf16, f16) on
/// both sides, and a rank-2 weight.
fn takes(x: &FloatTensor<Cuda>, w: &FloatTensor<Cuda>) -> bool {
    enabled()
        && x.dtype == w.dtype
        && matches!(x.dtype, DType::F32 | DType::BF16 | DType::F16)
        && w.shape().num_dims() == 2
        && x.shape().num_dims() >= 1
}

/// `x` (`[.., K]`) as `[M, K]`.
fn rows(x: FloatTensor<Cuda>) -> FloatTensor<Cuda> {
    let dims = x.shape().as_slice().to_vec();
    let k = dims.last().copied().unwrap_or(1);
    let m = dims.iter().product::<usize>() / k.max(1);
    <Cuda as FloatTensorOps<Cuda>>::float_reshape(x, Shape::new([m, k]))
}

/// `y` (`[M, N]`) back to `like`'s leading dimensions with `n` columns.
fn unrows(y: FloatTensor<Cuda>, like: &Shape, n: usize) -> FloatTensor<Cuda> {
    let mut dims = like.as_slice().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = n;
    }
    <Cuda as FloatTensorOps<Cuda>>::float_reshape(y, Shape::from(dims))
}

/// `op(lhs) · op(rhs)` through cuBLASLt as one node of the fusion graph.
fn lt_gemm(lhs: FloatTensor<Cuda>, rhs: FloatTensor<Cuda>, trans: [bool; 2]) -> FloatTensor<Cuda> {
    super::fusion_gemm::gemm(lhs, rhs, trans, cublaslt::matmul)
}

impl FusedOps for Cuda {
    fn linear_node() -> bool {
        enabled()
    }

    fn linear_forward(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        if !takes(&x, &w) {
            return <Self as ModuleOps<Self>>::linear(x, w, None);
        }
        let (shape, n) = (x.shape(), w.shape()[1]);
        unrows(lt_gemm(rows(x), w, [false, false]), &shape, n)
    }

    fn linear_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        need: [bool; 2],
    ) -> [Option<FloatTensor<Self>>; 2] {
        if !takes(&x, &w) || dy.dtype != x.dtype {
            return reference::linear_vjp::<Self>(x, w, dy, need);
        }
        let (shape, k) = (x.shape(), w.shape()[0]);
        let dy = rows(dy);
        let dx = need[0].then(|| unrows(lt_gemm(dy.clone(), w, [false, true]), &shape, k));
        let dw = need[1].then(|| lt_gemm(rows(x), dy, [true, false]));
        [dx, dw]
    }
}
