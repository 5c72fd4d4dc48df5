//! Pretrain a tiny model on the CPU from the offline shards and watch the loss fall:
//!
//! ```text
//! cargo run --release --example pretrain            # depth 4, 200 steps, ~minutes
//! cargo run --release --example pretrain -- 50      # fewer steps
//! ```
//!
//! Uses `$NANOCHAT_BASE_DIR/tokenizer` when present, else trains a 4096-token tokenizer on the
//! first shard and saves it there; writes `base_checkpoints/d4-example/`. Prints the unigram
//! baseline first so that the model's validation bits per byte have a yardstick.

use std::sync::Arc;

use nanochat::core::paths::{base_dir, pretrain_data_dir, tokenizer_dir};
use nanochat::core::{LRSchedule, TrainingConfiguration};
use nanochat::model::ComputeDtype;
use nanochat::model::backend::CpuBackend;
use nanochat::tokenizer::Tokenizer;
use nanochat::tokenizer::dataset::{Split, iter_batches, list_parquet_files, split_files};
use nanochat::tokenizer::tok_train::{TokTrainOptions, train_tokenizer};
use nanochat::train::dataloader::{BestFitLoader, LoaderOptions};
use nanochat::train::loss_eval::unigram_bpb;
use nanochat::train::{BaseTrainArgs, base_train};

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_target(false).init();
    let steps: u64 = std::env::args().nth(1).map_or(Ok(200), |s| s.parse())?;
    let (base, data) = (base_dir(), pretrain_data_dir());
    let shards = list_parquet_files(&data)?;
    let tokenizer = match Tokenizer::load(&tokenizer_dir(&base)) {
        Ok(t) => t,
        Err(_) => {
            let docs = iter_batches(&shards[..1], 0, 1)
                .flat_map(|b| b.map(|b| b.texts).unwrap_or_default())
                .map(Ok::<_, std::convert::Infallible>);
            let opts = TokTrainOptions {
                vocab_size: 4096,
                max_chars: 20_000_000,
                ..Default::default()
            };
            let (t, _) = train_tokenizer(docs, &opts)?;
            t.save(&tokenizer_dir(&base))?;
            t
        }
    };
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
    let opts = LoaderOptions::new(8, 256);
    let train = BestFitLoader::new(
        split_files(&shards, Split::Train).to_vec(),
        tokenizer.clone(),
        opts.clone(),
        None,
    )?;
    let val = BestFitLoader::new(
        split_files(&shards, Split::Val).to_vec(),
        tokenizer.clone(),
        opts,
        None,
    )?;
    let unigram = unigram_bpb(train.take(200), val.take(16), &tokenizer.token_bytes())?;
    println!("unigram baseline: {unigram:.4} bits per byte");
    let args = BaseTrainArgs {
        config,
        base_dir: base,
        data_dir: data,
        compute_dtype: ComputeDtype::F32,
        peak_flops: None,
        stop_after: None,
        progress: true,
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
