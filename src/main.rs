//! The `nanochat` command: one binary whose subcommands mirror upstream's scripts
//! (`tok_train.py` → `nanochat tok-train`, …) and keep their flag names.

mod cli;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = cli::Cli::parse();
    cli::init_logging(args.verbose);
    cli::run(args)
}
