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
    cli::run(args)
}
