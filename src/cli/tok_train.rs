//! `nanochat tok-train`: train the tokenizer (upstream `scripts/tok_train.py`). Training drives
//! the tokenizer's lifecycle Untrained → Training → Trained, which is saved with it in
//! `tokenizer_state.json`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use nanochat::core::paths::{pretrain_data_dir, tokenizer_dir};
use nanochat::data::dataset::{Split, iter_batches, list_parquet_files, split_files};
use nanochat::tokenizer::tok_train::{TokTrainOptions, train_tokenizer};

/// Flags of `tok-train`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Maximum characters to train on.
    #[arg(long, default_value = "2000000000", value_parser = super::parse_count)]
    max_chars: u64,
    /// Maximum characters kept per document.
    #[arg(long, default_value_t = 10_000)]
    doc_cap: usize,
    /// Vocabulary size, the 9 special tokens included (2^15 by default).
    #[arg(long, default_value_t = 32768)]
    vocab_size: usize,
    /// Folder of pretraining parquet shards (the last one is validation and is not used);
    /// default $NANOCHAT_DATA_DIR/pretrain, else <base-dir>/base_data_climbmix, else
    /// ../shared/data/pretrain.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Hide progress bars.
    #[arg(long)]
    no_progress: bool,
}

pub fn run(args: Args, base: &Path) -> anyhow::Result<()> {
    let data_dir = args.data_dir.unwrap_or_else(pretrain_data_dir);
    let files = list_parquet_files(&data_dir)?;
    let train = split_files(&files, Split::Train);
    println!(
        "max_chars: {}\ndoc_cap: {}\nvocab_size: {}",
        args.max_chars, args.doc_cap, args.vocab_size
    );
    println!(
        "shards: {} train files in {}",
        train.len(),
        data_dir.display()
    );
    let docs = iter_batches(train, 0, 1).flat_map(|b| match b {
        Ok(b) => b.texts.into_iter().map(Ok).collect::<Vec<_>>(),
        Err(e) => vec![Err(e)],
    });
    let opts = TokTrainOptions {
        max_chars: args.max_chars,
        doc_cap: args.doc_cap,
        vocab_size: args.vocab_size,
        progress: !args.no_progress,
        ..Default::default()
    };
    let (tokenizer, report) = train_tokenizer(docs, &opts)?;
    println!(
        "Training time: {:.2}s ({} documents, {} chars, {} unique chunks; counting {:.2}s, merging {:.2}s)",
        report.train_seconds,
        report.documents,
        report.chars,
        report.unique_chunks,
        report.count_seconds,
        report.merge_seconds
    );
    let dir = tokenizer_dir(base);
    tokenizer
        .save(&dir)
        .with_context(|| format!("saving the tokenizer to {}", dir.display()))?;
    let report_json =
        serde_json::to_string_pretty(&serde_json::json!({ "options": opts, "report": report }))?;
    nanochat::core::fs::write_atomic(&dir.join("tok_train.json"), report_json.as_bytes())?;
    // The same sanity check as upstream: text round-trips.
    let test = "Hello world! This is a test.\nNumbers: 123, 4567, 89\nContractions: I'm, you're, it's\nSpecial chars: @#$%^&*()\nUnicode: 你好世界 🌍";
    anyhow::ensure!(
        tokenizer.decode(&tokenizer.encode(test))? == test,
        "round trip failed"
    );
    let tb = tokenizer.token_bytes();
    let nonzero: Vec<u32> = tb.iter().copied().filter(|&b| b > 0).collect();
    let mean = nonzero.iter().map(|&b| b as f64).sum::<f64>() / nonzero.len().max(1) as f64;
    let lifecycle = tokenizer.lifecycle().map_or_else(String::new, |l| l.path());
    println!(
        "Saved tokenizer.tiktoken, tokenizer.json, token_bytes.json, tokenizer_state.json ({lifecycle}; vocab {}, token bytes min {} max {} mean {:.2}) to {}",
        tokenizer.vocab_size(),
        nonzero.iter().min().unwrap_or(&0),
        nonzero.iter().max().unwrap_or(&0),
        mean,
        dir.display()
    );
    nanochat::eval::Report::new(base).log(
        "tokenizer-training",
        &[
            ("vocab_size", tokenizer.vocab_size().into()),
            ("documents", report.documents.into()),
            ("chars", report.chars.into()),
            ("train_time (s)", report.train_seconds.into()),
            (
                "token_bytes min",
                (*nonzero.iter().min().unwrap_or(&0)).into(),
            ),
            (
                "token_bytes max",
                (*nonzero.iter().max().unwrap_or(&0)).into(),
            ),
            ("token_bytes mean", mean.into()),
        ],
    )?;
    Ok(())
}
