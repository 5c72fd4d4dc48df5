//! A matrix product as a custom operation of burn's fusion graph on a CubeCL runtime (CUDA,
//! WGPU): registered like burn-vision's fusion ops (`CustomOpIr` + an `Operation` the fusion
//! server executes on the inner `CubeBackend` tensors, under the stream of the thread that
//! registered it). A custom operation is never fused; it ends the fused block before it.
//!
//! The product itself is a plain function of the inner tensors: cuBLASLt on CUDA
//! (`ops::cuda`), or [`cubecl_gemm`], CubeCL's own matmul, which is also what checks this
//! plumbing on WGPU in CI (`tests/wgpu_ops.rs`).

use burn::tensor::ops::FloatTensorOps;
use burn::tensor::{Shape, TensorMetadata};
use burn_cubecl::fusion::FusionCubeRuntime;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{CubeBackend, CubeRuntime};
use burn_fusion::stream::{Operation, OperationStreams};
use burn_fusion::{FusionRuntime, FusionTensor};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, OperationOutput, TensorIr};

/// The backend under fusion, for reading and registering float tensors (its int and bool
/// element types play no part in that).
pub type Inner<R> = CubeBackend<R, f32, i32, u8>;

/// A fused backend's float tensor on runtime `R`.
pub type Fused<R> = FusionTensor<FusionCubeRuntime<R>>;

/// `op(lhs) · op(rhs)` on the inner tensors, `op` transposing where the flags say; `[M, N]`
/// in the inputs' dtype.
pub type Kernel<R> = fn(CubeTensor<R>, CubeTensor<R>, [bool; 2]) -> CubeTensor<R>;

struct Gemm<R: CubeRuntime> {
    desc: CustomOpIr,
    trans: [bool; 2],
    kernel: Kernel<R>,
}

impl<R: CubeRuntime> std::fmt::Debug for Gemm<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gemm({:?}, trans {:?})", self.desc, self.trans)
    }
}

impl<R: CubeRuntime> Operation<FusionCubeRuntime<R>> for Gemm<R> {
    fn execute(
        &self,
        handles: &mut HandleContainer<<FusionCubeRuntime<R> as FusionRuntime>::FusionHandle>,
    ) {
        let ([lhs, rhs], [out]) = self.desc.as_fixed();
        let lhs = handles.get_float_tensor::<Inner<R>>(lhs);
        let rhs = handles.get_float_tensor::<Inner<R>>(rhs);
        let y = (self.kernel)(lhs, rhs, self.trans);
        handles.register_float_tensor::<Inner<R>>(&out.id, y);
    }
}

/// `op(lhs) · op(rhs)` for rank-2 `lhs`, `rhs` of one dtype through `kernel`, as one node of
/// the fusion graph: `[M, N]` in that dtype.
pub fn gemm<R: CubeRuntime>(
    lhs: Fused<R>,
    rhs: Fused<R>,
    trans: [bool; 2],
    kernel: Kernel<R>,
) -> Fused<R> {
    let (l, r) = (lhs.shape(), rhs.shape());
    let m = if trans[0] { l[1] } else { l[0] };
    let n = if trans[1] { r[0] } else { r[1] };
    let client = lhs.client.clone();
    let streams = OperationStreams::with_inputs([&lhs, &rhs]);
    let out = TensorIr::uninit(client.create_empty_handle(), Shape::new([m, n]), lhs.dtype);
    let desc = CustomOpIr::new("nanochat_gemm", &[lhs.into_ir(), rhs.into_ir()], &[out]);
    let op = Gemm {
        desc: desc.clone(),
        trans,
        kernel,
    };
    client
        .register(streams, OperationIr::Custom(desc), op)
        .output()
}

/// CubeCL's own matmul as a [`Kernel`] (transposes as stride swaps).
pub fn cubecl_gemm<R: CubeRuntime>(
    lhs: CubeTensor<R>,
    rhs: CubeTensor<R>,
    trans: [bool; 2],
) -> CubeTensor<R> {
    let op = |t: CubeTensor<R>, tr: bool| {
        if tr {
            <Inner<R> as FloatTensorOps<Inner<R>>>::float_transpose(t)
        } else {
            t
        }
    };
    <Inner<R> as FloatTensorOps<Inner<R>>>::float_matmul(op(lhs, trans[0]), op(rhs, trans[1]))
}
