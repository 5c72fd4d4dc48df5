//! A matrix product as a custom operation of burn's fusion graph on CUDA: registered like
//! burn-vision's fusion ops (`CustomOpIr` + an `Operation` the fusion server executes on the
//! inner `CubeBackend` tensors, under the stream of the thread that registered it). A custom
//! operation is never fused; it ends the fused block before it.

use burn::backend::Cuda;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Shape, TensorMetadata};
use burn_cubecl::CubeBackend;
use burn_fusion::stream::{Operation, OperationStreams};
use burn_fusion::{FusionBackend, FusionRuntime};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, OperationOutput, TensorIr};
use cubecl::cuda::CudaRuntime;

/// The backend under `Cuda`'s fusion.
pub(super) type Inner = CubeBackend<CudaRuntime, f32, i32, u8>;
type Runtime = <Inner as FusionBackend>::FusionRuntime;

/// `op(lhs) · op(rhs)` through cuBLASLt, `op` transposing where `trans` says.
#[derive(Debug, Clone)]
struct Gemm {
    desc: CustomOpIr,
    trans: [bool; 2],
}

impl Operation<Runtime> for Gemm {
    fn execute(&self, handles: &mut HandleContainer<<Runtime as FusionRuntime>::FusionHandle>) {
        let ([lhs, rhs], [out]) = self.desc.as_fixed();
        let lhs = handles.get_float_tensor::<Inner>(lhs);
        let rhs = handles.get_float_tensor::<Inner>(rhs);
        let y = super::cublaslt::matmul(lhs, rhs, self.trans);
        handles.register_float_tensor::<Inner>(&out.id, y);
    }
}

/// `op(lhs) · op(rhs)` for rank-2 `lhs`, `rhs` of one dtype (`op` = transpose where `trans`
/// says), `[M, N]` in that dtype.
pub(super) fn gemm(
    lhs: FloatTensor<Cuda>,
    rhs: FloatTensor<Cuda>,
    trans: [bool; 2],
) -> FloatTensor<Cuda> {
    let (l, r) = (
        lhs.shape().as_slice().to_vec(),
        rhs.shape().as_slice().to_vec(),
    );
    let m = if trans[0] { l[1] } else { l[0] };
    let n = if trans[1] { r[0] } else { r[1] };
    let client = lhs.client.clone();
    let streams = OperationStreams::with_inputs([&lhs, &rhs]);
    let out = TensorIr::uninit(client.create_empty_handle(), Shape::new([m, n]), lhs.dtype);
    let desc = CustomOpIr::new(
        "nanochat_cublaslt_gemm",
        &[lhs.into_ir(), rhs.into_ir()],
        &[out],
    );
    client
        .register(
            streams,
            OperationIr::Custom(desc.clone()),
            Gemm { desc, trans },
        )
        .output()
}
