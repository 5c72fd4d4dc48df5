//! Backend selection: which burn backends this build has, and running generic code on the one
//! a user asked for (`--device cpu|wgpu[:N]|cuda[:N]|auto`).
//!
//! Code that works on any backend implements [`BackendTask`] once; [`dispatch`] picks the
//! backend type and device at run time and returns a clear error when the requested backend was
//! not compiled in (with the Cargo feature that enables it).
//!
//! Backends are `Autodiff<…>` so that training code can take gradients; inference code simply
//! uses `B::InnerBackend` or ignores the autodiff layer.

use nanochat_core::DeviceSpec;

use crate::ops::TrainBackend;

/// The CPU backend (burn-flex), with autodiff.
#[cfg(feature = "flex")]
pub type CpuBackend = burn::backend::Autodiff<burn::backend::Flex>;
/// The CPU backend (ndarray), used when `flex` is not compiled in.
#[cfg(all(feature = "ndarray", not(feature = "flex")))]
pub type CpuBackend = burn::backend::Autodiff<burn::backend::NdArray>;
/// The WGPU backend, with autodiff.
#[cfg(feature = "wgpu")]
pub type WgpuBackend = burn::backend::Autodiff<burn::backend::Wgpu>;
/// The CUDA backend, with autodiff.
#[cfg(feature = "cuda")]
pub type CudaBackend = burn::backend::Autodiff<burn::backend::Cuda>;

/// The requested backend cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend's Cargo feature was not enabled at build time.
    #[error(
        "device `{requested}` needs the `{feature}` backend, which this build does not include \
         (compiled in: {compiled}); rebuild with `--features {feature}`"
    )]
    NotCompiled {
        /// What the user asked for.
        requested: DeviceSpec,
        /// The Cargo feature that provides it.
        feature: &'static str,
        /// The backends this build has.
        compiled: String,
    },
}

/// Names of the backends compiled into this build, fastest CPU backend first.
pub fn compiled_backends() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "flex") {
        v.push("flex");
    }
    if cfg!(feature = "ndarray") {
        v.push("ndarray");
    }
    if cfg!(feature = "wgpu") {
        v.push("wgpu");
    }
    if cfg!(feature = "cuda") {
        v.push("cuda");
    }
    v
}

/// Work that runs on any autodiff backend; [`dispatch`] calls [`run`](Self::run) with the
/// backend type and device chosen at run time.
pub trait BackendTask {
    /// What the task returns.
    type Output;
    /// Runs the task on backend `B`, device `device`.
    fn run<B: TrainBackend>(self, device: B::Device) -> Self::Output;
}

fn not_compiled(requested: DeviceSpec, feature: &'static str) -> BackendError {
    BackendError::NotCompiled {
        requested,
        feature,
        compiled: compiled_backends().join(", "),
    }
}

#[cfg(any(feature = "cuda", feature = "wgpu"))]
/// Whether a backend works on this machine: runs one tiny operation, catching the panic a
/// backend raises when its driver or device is absent.
fn backend_works<B: TrainBackend>(device: &B::Device) -> bool {
    use burn::tensor::Tensor;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let ok = catch_unwind(AssertUnwindSafe(|| {
        let t = Tensor::<B, 1>::ones([2], device);
        t.sum().into_scalar();
    }))
    .is_ok();
    std::panic::set_hook(previous);
    ok
}

/// Resolves `auto` to a concrete device: CUDA if compiled in and working, then WGPU, then the
/// CPU.
pub fn resolve_auto() -> DeviceSpec {
    #[cfg(feature = "cuda")]
    {
        configure_kernel_cache(DeviceSpec::Cuda(0));
        if backend_works::<CudaBackend>(&Default::default()) {
            return DeviceSpec::Cuda(0);
        }
    }
    #[cfg(feature = "wgpu")]
    {
        configure_kernel_cache(DeviceSpec::Wgpu(None));
        if backend_works::<WgpuBackend>(&Default::default()) {
            return DeviceSpec::Wgpu(None);
        }
    }
    DeviceSpec::Cpu
}

/// Points the GPU runtime's caches at [`crate::kernel_cache`]'s folder for this device's GPU
/// model, before its first use (a no-op for the CPU and after the first call).
pub fn configure_kernel_cache(spec: DeviceSpec) -> crate::kernel_cache::Configured {
    use crate::kernel_cache::{Configured, configure, cuda_device_name, slug};
    match spec {
        DeviceSpec::Cuda(index) => {
            let name = cuda_device_name(index).unwrap_or_else(|| format!("device {index}"));
            configure(&format!("cuda-{}", slug(&name)))
        }
        DeviceSpec::Wgpu(_) => configure("wgpu"),
        DeviceSpec::Cpu | DeviceSpec::Auto => Configured::NoGpuBackend,
    }
}

/// Runs `task` on the backend and device `spec` names.
pub fn dispatch<T: BackendTask>(spec: DeviceSpec, task: T) -> Result<T::Output, BackendError> {
    match spec {
        DeviceSpec::Auto => dispatch(resolve_auto(), task),
        DeviceSpec::Cpu => {
            #[cfg(any(feature = "flex", feature = "ndarray"))]
            {
                Ok(task.run::<CpuBackend>(Default::default()))
            }
            #[cfg(not(any(feature = "flex", feature = "ndarray")))]
            {
                Err(not_compiled(spec, "flex"))
            }
        }
        DeviceSpec::Wgpu(index) => {
            #[cfg(feature = "wgpu")]
            {
                configure_kernel_cache(spec);
                use burn::backend::wgpu::WgpuDevice;
                let device = index.map_or(WgpuDevice::DefaultDevice, WgpuDevice::DiscreteGpu);
                Ok(task.run::<WgpuBackend>(device))
            }
            #[cfg(not(feature = "wgpu"))]
            {
                let _ = index;
                Err(not_compiled(spec, "wgpu"))
            }
        }
        DeviceSpec::Cuda(index) => {
            #[cfg(feature = "cuda")]
            {
                configure_kernel_cache(spec);
                Ok(task.run::<CudaBackend>(burn::backend::cuda::CudaDevice::new(index)))
            }
            #[cfg(not(feature = "cuda"))]
            {
                let _ = index;
                Err(not_compiled(spec, "cuda"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{ElementConversion, Tensor};

    struct SumTask(Vec<f32>);
    impl BackendTask for SumTask {
        type Output = f32;
        fn run<B: TrainBackend>(self, device: B::Device) -> f32 {
            let n = self.0.len();
            Tensor::<B, 1>::from_data(burn::tensor::TensorData::new(self.0, [n]), &device)
                .sum()
                .into_scalar()
                .elem()
        }
    }

    #[test]
    fn cpu_runs_generic_code() {
        let out = dispatch(DeviceSpec::Cpu, SumTask(vec![1.0, 2.0, 3.5])).unwrap();
        assert_eq!(out, 6.5);
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn missing_backend_names_the_feature() {
        let err = dispatch(DeviceSpec::Cuda(0), SumTask(vec![1.0])).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("--features cuda") && msg.contains("cuda:0"),
            "{msg}"
        );
    }
}
