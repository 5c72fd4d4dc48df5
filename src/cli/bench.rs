//! `nanochat bench`: measurements of hot paths, printed as JSON for scripts
//! (`cargo xtask bench-tokenizer` compares them with upstream's tools in the same run).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use nanochat::core::paths::{pretrain_data_dir, tokenizer_dir};
use nanochat::tokenizer::Tokenizer;
use nanochat::tokenizer::dataset::{Split, iter_batches, list_parquet_files, split_files};

/// Flags of `bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand, Debug)]
enum What {
    /// Encode throughput of the trained tokenizer on the validation shard (single thread and
    /// batched on all cores); best of `--repeats`.
    Tokenizer {
        /// Folder of pretraining parquet shards.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Timed repetitions (the best is reported).
        #[arg(long, default_value_t = 3)]
        repeats: usize,
    },
}

fn best_of(repeats: usize, mut f: impl FnMut() -> usize) -> (f64, usize) {
    let mut best = f64::INFINITY;
    let mut out = 0;
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        out = f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    (best, out)
}

pub fn run(args: Args, base: &Path) -> anyhow::Result<()> {
    match args.what {
        What::Tokenizer { data_dir, repeats } => {
            let dir = tokenizer_dir(base);
            let tok =
                Tokenizer::load(&dir).with_context(|| format!("loading {}", dir.display()))?;
            let files = list_parquet_files(&data_dir.unwrap_or_else(pretrain_data_dir))?;
            let mut docs = Vec::new();
            for b in iter_batches(split_files(&files, Split::Val), 0, 1) {
                docs.extend(b?.texts);
            }
            let bytes: usize = docs.iter().map(String::len).sum();
            let (single, tokens) =
                best_of(repeats, || docs.iter().map(|d| tok.encode(d).len()).sum());
            let (batch, _) = best_of(repeats, || tok.encode_batch(&docs, None, None).len());
            let out = serde_json::json!({
                "documents": docs.len(),
                "bytes": bytes,
                "tokens": tokens,
                "single_thread_seconds": single,
                "batch_seconds": batch,
                "threads": rayon::current_num_threads(),
                "single_thread_mb_per_s": bytes as f64 / single / 1e6,
                "batch_mb_per_s": bytes as f64 / batch / 1e6,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
    }
    Ok(())
}
