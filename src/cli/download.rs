//! `nanochat download`: fetch pretraining shards (upstream `python -m nanochat.dataset -n N -w W`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use nanochat::data::dataset::download::{DownloadOptions, ShardSource, download_shards};

/// Flags of `download`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Number of train shards (-1 = all); the validation shard is always added.
    #[arg(short = 'n', long, default_value_t = -1, allow_hyphen_values = true)]
    num_files: i64,
    /// Parallel downloads.
    #[arg(short = 'w', long, default_value_t = 4)]
    num_workers: usize,
    /// Dataset: climbmix (upstream HEAD) or fineweb-edu (the original release).
    #[arg(long, default_value = "climbmix")]
    dataset: String,
    /// Destination; default <base-dir>/base_data_climbmix (or base_data for fineweb-edu).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Attempts per shard (exponential backoff from 2 s).
    #[arg(long, default_value_t = 5)]
    attempts: u32,
}

pub fn run(args: Args, base: &Path) -> anyhow::Result<()> {
    let (source, default_dir) = match args.dataset.as_str() {
        "climbmix" => (ShardSource::climbmix(), "base_data_climbmix"),
        "fineweb-edu" => (ShardSource::fineweb_edu(), "base_data"),
        other => anyhow::bail!("--dataset {other}: expected climbmix or fineweb-edu"),
    };
    let dir = args.data_dir.unwrap_or_else(|| base.join(default_dir));
    let indices = source.indices((args.num_files >= 0).then_some(args.num_files as usize));
    let opts = DownloadOptions {
        workers: args.num_workers,
        attempts: args.attempts,
        backoff: Duration::from_secs(2),
        ..DownloadOptions::default()
    };
    println!(
        "Downloading {} shards to {} with {} workers",
        indices.len(),
        dir.display(),
        opts.workers
    );
    let r = download_shards(&source, &indices, &dir, &opts)?;
    println!(
        "Done: {} downloaded, {} already present, {} retried attempts",
        r.downloaded.len(),
        r.skipped.len(),
        r.retries
    );
    Ok(())
}
