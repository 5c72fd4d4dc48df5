//! The `nanochat` command: one binary whose subcommands mirror upstream's scripts
//! (`tok_train.py` → `nanochat tok-train`, …) and keep their flag names.

mod cli;

use clap::Parser;
use nanochat::model::alloc::CachingAllocator;

/// Large freed buffers are reused instead of being returned to the kernel and faulted in again
/// on the next step (see `nanochat_model::alloc`).
#[global_allocator]
static ALLOCATOR: CachingAllocator = CachingAllocator;

fn main() -> anyhow::Result<()> {
    let args = cli::Cli::parse();
    cli::init_logging(args.verbose);
    let base = cli::base_dir(&args);
    nanochat::model::kernel_cache::set_base_dir(&base);
    if cfg!(feature = "cuda") && std::env::var_os("CUDA_CACHE_PATH").is_none() {
        // The CUDA driver's JIT cache beside CubeCL's, unless the user chose one.
        #[allow(unsafe_code)]
        // SAFETY: no other thread exists yet (argument parsing and logging set-up start none),
        // so nothing reads the environment concurrently.
        unsafe {
            std::env::set_var(
                "CUDA_CACHE_PATH",
                nanochat::model::kernel_cache::cuda_jit_dir(),
            );
        }
    }
    cli::run(args)
}
