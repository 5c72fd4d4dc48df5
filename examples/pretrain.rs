//! Pretrain a tiny model on the CPU from the offline shards and watch the loss fall:
//!
//! ```text
//! cargo run --release --example pretrain            # depth 4, 200 steps, ~minutes
//! cargo run --release --example pretrain -- 50      # fewer steps
//! ```
//!
//! Uses `$NANOCHAT_BASE_DIR/tokenizer` (`nanochat tok-train`), writes
//! `base_checkpoints/d4-example/`, and prints the unigram bits per byte as a yardstick.

use std::sync::Arc;

use anyhow::Context;

use nanochat::core::paths::{base_dir, pretrain_data_dir, tokenizer_dir};
use nanochat::core::{LRSchedule, TrainingConfiguration};
use nanochat::data::dataloader::{BestFitLoader, LoaderOptions};
use nanochat::data::dataset::{Split, list_parquet_files, split_files};
use nanochat::eval::loss_eval::unigram_bpb;
use nanochat::model::ComputeDtype;
use nanochat::model::backend::CpuBackend;
use nanochat::tokenizer::Tokenizer;
use nanochat::train::{BaseTrainArgs, base_train};

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_target(false).init();
    let steps: u64 = std::env::args().nth(1).map_or(Ok(200), |s| s.parse())?;
    let (base, data) = (base_dir(), pretrain_data_dir());
    let shards = list_parquet_files(&data)?;
    let tokenizer = Tokenizer::load(&tokenizer_dir(&base))
        .context("no tokenizer: run `cargo run --release -- tok-train` first")?;
    let tokenizer = Arc::new(tokenizer);
    let config = TrainingConfiguration {
        depth: 4,
        max_seq_len: 256,
        window_pattern: "L".into(),
        device_batch_size: 8,
        total_batch_size: Some(8 * 256),
        num_iterations: Some(steps),
        schedule: LRSchedule {
            warmup_steps: 10.min(steps),
            ..LRSchedule::default()
        },
        eval_every: Some(50),
        eval_tokens: 16 * 8 * 256,
        sample_every: Some(steps),
        model_tag: Some("d4-example".into()),
        ..TrainingConfiguration::default()
    };
    let loader = |split| {
        let files = split_files(&shards, split).to_vec();
        BestFitLoader::new(files, tokenizer.clone(), LoaderOptions::new(8, 256), None)
    };
    let (train, val) = (
        loader(Split::Train)?.take(200),
        loader(Split::Val)?.take(16),
    );
    let unigram = unigram_bpb(train, val, &tokenizer.token_bytes())?;
    println!("unigram baseline: {unigram:.4} bits per byte");
    let args = BaseTrainArgs {
        config,
        base_dir: base,
        dataset: nanochat::data::pretraining::local_dataset(&data)?,
        compute_dtype: ComputeDtype::F32,
        peak_flops: None,
        stop_after: None,
        progress: true,
        distributed: None, // Some(DistributedConfig::local(n)): n data-parallel ranks
        fail_at: None,
    };
    let s = base_train::<CpuBackend>(&args, tokenizer, &Default::default())?;
    println!(
        "val bpb {:.4} (unigram {unigram:.4}); first loss {:.3}, last {:.3}; checkpoint in {}",
        s.val_bpb.unwrap_or(f64::NAN),
        s.metrics.first().map_or(f64::NAN, |m| m.loss),
        s.metrics.last().map_or(f64::NAN, |m| m.smooth_loss),
        s.checkpoint_dir.display()
    );
    Ok(())
}
