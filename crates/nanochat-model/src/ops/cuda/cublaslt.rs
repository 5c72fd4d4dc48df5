//! cuBLASLt matrix products on CubeCL's CUDA tensors (cudarc's `cublaslt` bindings, the
//! library loaded at run time). The product is enqueued on the CUDA stream CubeCL resolved the
//! operands' memory on (`GpuResource::stream`, the vendored cubecl-cuda's one addition): that
//! resolution has already ordered the kernels that wrote them before it, and CubeCL launches
//! this stream's later kernels after it, so no host synchronisation is needed. The handles
//! (`ManagedResource`s) are held until the product is enqueued; CubeCL frees and reuses memory
//! in stream order after that.
//!
//! bf16 and f16 inputs multiply with f32 accumulation (`CUBLAS_COMPUTE_32F`), f32 in full f32
//! (no TF32). A product cuBLASLt cannot run (library missing, no algorithm, a layout it
//! refuses) falls back to CubeCL's matmul, with one warning per process.
//!
//! The one module of the CUDA backend with `unsafe`: a C library's handles and raw device
//! pointers, each use with its `SAFETY` reason.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, OnceLock};

use burn::tensor::DType;
use burn::tensor::Shape;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::cuda::CudaRuntime;
use cudarc::cublaslt::result as lt;
use cudarc::cublaslt::sys;
use cudarc::driver::CudaContext;

use crate::ops::fusion_gemm::cubecl_gemm;
use crate::ops::gemm_plan::{ColMajor, RowMajor, row_major_product};

/// cuBLASLt's scratch space per product (NVIDIA recommends 32 MiB on Hopper).
const WORKSPACE: usize = 32 << 20;

/// One device's cuBLASLt handle and CUDA context (the primary context, which CubeCL uses too).
struct Lt {
    ctx: Arc<CudaContext>,
    handle: sys::cublasLtHandle_t,
}

// SAFETY: a cuBLASLt handle may be used from any thread (one at a time: the mutex below) with
// its device's context current, which every use binds first.
unsafe impl Send for Lt {}

/// `op(lhs) · op(rhs)`, `[M, N]` in the inputs' dtype.
pub(super) fn matmul(
    lhs: CubeTensor<CudaRuntime>,
    rhs: CubeTensor<CudaRuntime>,
    trans: [bool; 2],
) -> CubeTensor<CudaRuntime> {
    match product(&lhs, &rhs, trans) {
        Ok(y) => y,
        Err(e) => {
            static WARNED: OnceLock<()> = OnceLock::new();
            WARNED.get_or_init(|| {
                tracing::warn!("cuBLASLt: {e}; this product and others like it use CubeCL's matmul")
            });
            cubecl_gemm(lhs, rhs, trans)
        }
    }
}

/// `t` as a row-major operand: rank 2, unit column stride.
fn row_major(t: &CubeTensor<CudaRuntime>, trans: bool) -> Result<RowMajor, String> {
    let (shape, strides) = (t.meta.shape(), t.meta.strides());
    if shape.rank() != 2 || strides[1] != 1 && shape[1] > 1 {
        return Err(format!(
            "operand of shape {:?} with strides {:?} is not a row-major matrix",
            &shape[..],
            &strides[..]
        ));
    }
    Ok(RowMajor {
        rows: shape[0],
        cols: shape[1],
        // A single row's stride is arbitrary; cuBLASLt wants ≥ the row length.
        ld: if shape[0] > 1 { strides[0] } else { shape[1] }
            .max(shape[1])
            .max(1),
        trans,
    })
}

fn data_type(dtype: DType) -> Result<sys::cudaDataType, String> {
    Ok(match dtype {
        DType::F32 => sys::cudaDataType::CUDA_R_32F,
        DType::BF16 => sys::cudaDataType::CUDA_R_16BF,
        DType::F16 => sys::cudaDataType::CUDA_R_16F,
        other => return Err(format!("no cuBLASLt product for {other:?}")),
    })
}

/// The device's [`Lt`] (created on first use; a failure is remembered), locked for one
/// product.
fn with_lt<R>(device: usize, f: impl FnOnce(&Lt) -> Result<R, String>) -> Result<R, String> {
    static ALL: OnceLock<Mutex<HashMap<usize, Result<Lt, String>>>> = OnceLock::new();
    let mut all = ALL
        .get_or_init(Default::default)
        .lock()
        .map_err(|_| "a cuBLASLt call panicked earlier".to_string())?;
    let lt = all.entry(device).or_insert_with(|| {
        // SAFETY: only probes whether the shared library loads.
        if !unsafe { sys::is_culib_present() } {
            return Err(
                "libcublasLt not found (is the CUDA library folder in LD_LIBRARY_PATH?)".into(),
            );
        }
        let ctx = CudaContext::new(device).map_err(|e| format!("CUDA context {device}: {e}"))?;
        ctx.bind_to_thread()
            .map_err(|e| format!("binding CUDA context {device}: {e}"))?;
        let handle = lt::create_handle().map_err(|e| format!("cublasLtCreate: {e}"))?;
        Ok(Lt { ctx, handle })
    });
    let lt = lt.as_ref().map_err(Clone::clone)?;
    lt.ctx
        .bind_to_thread()
        .map_err(|e| format!("binding CUDA context {device}: {e}"))?;
    f(lt)
}

/// The product through cuBLASLt, or why not.
fn product(
    lhs: &CubeTensor<CudaRuntime>,
    rhs: &CubeTensor<CudaRuntime>,
    trans: [bool; 2],
) -> Result<CubeTensor<CudaRuntime>, String> {
    if lhs.dtype != rhs.dtype {
        return Err(format!("operands in {:?} and {:?}", lhs.dtype, rhs.dtype));
    }
    let ty = data_type(lhs.dtype)?;
    let (l, r) = (row_major(lhs, trans[0])?, row_major(rhs, trans[1])?);
    let m = if l.trans { l.cols } else { l.rows };
    let n = if r.trans { r.rows } else { r.cols };
    let g = row_major_product(l, r, n.max(1))?;
    let client = lhs.client.clone();
    let out = empty_device_contiguous_dtype(
        client.clone(),
        lhs.device.clone(),
        Shape::new([m, n]),
        lhs.dtype,
    );
    if m == 0 || n == 0 {
        return Ok(out);
    }
    let workspace = client.empty(WORKSPACE);
    let resource = |h: &cubecl::server::Handle| {
        client
            .get_resource(h.clone())
            .map_err(|e| format!("resolving a buffer: {e:?}"))
    };
    // BLAS's A is the right operand, its B the left one (gemm_plan).
    let (a, b, c, ws) = (
        resource(&rhs.handle)?,
        resource(&lhs.handle)?,
        resource(&out.handle)?,
        resource(&workspace)?,
    );
    let stream = c.resource().stream;
    if stream.is_null() {
        return Err("cubecl-cuda did not report its stream (the vendored patch is missing)".into());
    }
    with_lt(lhs.device.index, |lt| {
        // SAFETY: the descriptors are created, used and destroyed here; the pointers are live
        // device buffers of the sizes the layouts describe (checked by `row_major_product`),
        // held by the resources above until after the call is enqueued.
        unsafe {
            enqueue(
                lt,
                &g,
                ty,
                [a.resource().ptr, b.resource().ptr, c.resource().ptr],
                ws.resource().ptr,
                stream as sys::cudaStream_t,
            )
        }
    })?;
    drop((a, b, c, ws));
    Ok(out)
}

/// The largest power of two (at most 256) that divides the address `ptr`.
fn alignment(ptr: u64) -> u32 {
    1u32 << ptr.trailing_zeros().min(8)
}

/// Builds the descriptors of `g`, picks cuBLASLt's first algorithm and enqueues
/// `D = A · B` (`[a, b, d]` device pointers, `C = D` with β = 0) on `stream`.
///
/// # Safety
/// The pointers must be live device buffers laid out as `g` says, `workspace` of
/// [`WORKSPACE`] bytes, on `lt`'s device whose context is current.
unsafe fn enqueue(
    lt: &Lt,
    g: &crate::ops::gemm_plan::Gemm,
    ty: sys::cudaDataType,
    [a, b, d]: [u64; 3],
    workspace: u64,
    stream: sys::cudaStream_t,
) -> Result<(), String> {
    let err = |what: &'static str| move |e: lt::CublasError| format!("{what}: {e}");
    let layout = |x: &ColMajor| lt::create_matrix_layout(ty, x.rows, x.cols, x.ld);
    let desc = lt::create_matmul_desc(
        sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
        sys::cudaDataType::CUDA_R_32F,
    )
    .map_err(err("cublasLtMatmulDescCreate"))?;
    let (la, lb, lc) = (layout(&g.a), layout(&g.b), layout(&g.c));
    let pref = lt::create_matmul_pref();
    let result = (|| {
        let (la, lb, lc) = (
            la.map_err(err("layout A"))?,
            lb.map_err(err("layout B"))?,
            lc.map_err(err("layout C"))?,
        );
        let pref = pref.map_err(err("cublasLtMatmulPreferenceCreate"))?;
        // SAFETY: valid descriptors; attribute values of the documented types and sizes.
        unsafe {
            for (attr, t) in [
                (
                    sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
                    g.a.trans,
                ),
                (
                    sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSB,
                    g.b.trans,
                ),
            ] {
                let op: i32 = t.into(); // cublasOperation_t: 0 = N, 1 = T
                lt::set_matmul_desc_attribute(desc, attr, (&op as *const i32).cast(), 4)
                    .map_err(err("transpose attribute"))?;
            }
            let bytes = WORKSPACE as u64;
            lt::set_matmul_pref_attribute(
                pref,
                sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                (&bytes as *const u64).cast(),
                8,
            )
            .map_err(err("workspace preference"))?;
            // cuBLASLt assumes 256-byte aligned operands unless told otherwise; a view into a
            // pooled buffer may start anywhere, so each operand's real alignment is declared.
            use sys::cublasLtMatmulPreferenceAttributes_t as P;
            for (attr, ptr) in [
                (P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, a),
                (P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, b),
                (P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, d),
                (P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, d),
            ] {
                let align = alignment(ptr);
                lt::set_matmul_pref_attribute(pref, attr, (&align as *const u32).cast(), 4)
                    .map_err(err("alignment preference"))?;
            }
            let heuristic = lt::get_matmul_algo_heuristic(lt.handle, desc, la, lb, lc, lc, pref)
                .map_err(err("no cuBLASLt algorithm"))?;
            let (alpha, beta) = (1.0f32, 0.0f32);
            lt::matmul(
                lt.handle,
                desc,
                (&alpha as *const f32).cast(),
                (&beta as *const f32).cast(),
                a as *const c_void,
                la,
                b as *const c_void,
                lb,
                d as *const c_void,
                lc,
                d as *mut c_void,
                lc,
                &heuristic.algo,
                workspace as *mut c_void,
                WORKSPACE,
                stream,
            )
            .map_err(err("cublasLtMatmul"))
        }
    })();
    // SAFETY: each descriptor created above is destroyed once.
    unsafe {
        for l in [la, lb, lc].into_iter().flatten() {
            let _ = lt::destroy_matrix_layout(l);
        }
        if let Ok(p) = pref {
            let _ = lt::destroy_matmul_pref(p);
        }
        let _ = lt::destroy_matmul_desc(desc);
    }
    result
}
