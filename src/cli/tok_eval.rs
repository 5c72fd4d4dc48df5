//! `nanochat tok-eval`: compression versus GPT-2 and GPT-4 (upstream `scripts/tok_eval.py`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use nanochat::core::paths::{pretrain_data_dir, tokenizer_dir};
use nanochat::data::dataset::{Shard, Split, iter_batches, list_parquet_files, split_files};
use nanochat::tokenizer::Tokenizer;
use nanochat::tokenizer::tok_eval::{EvalText, evaluate, format_table, sample_texts};

/// Flags of `tok-eval`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Folder of pretraining parquet shards (see `tok-train --help`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

pub fn run(args: Args, base: &Path) -> anyhow::Result<()> {
    let dir = tokenizer_dir(base);
    let tokenizer = Tokenizer::load(&dir).with_context(|| {
        format!(
            "loading the tokenizer from {} (run `nanochat tok-train` first)",
            dir.display()
        )
    })?;
    let data_dir = args.data_dir.unwrap_or_else(pretrain_data_dir);
    let files = list_parquet_files(&data_dir)?;
    let mut texts = sample_texts();
    // A sample the tokenizer was trained on (the first row group), and the whole val shard.
    let first = Shard::open(&split_files(&files, Split::Train)[0])?.read_row_group(0)?;
    texts.push(EvalText {
        name: "train-sample".into(),
        docs: first,
    });
    let mut val = Vec::new();
    for batch in iter_batches(split_files(&files, Split::Val), 0, 1) {
        val.extend(batch?.texts);
    }
    texts.push(EvalText {
        name: "val-shard".into(),
        docs: val,
    });
    let result = evaluate(&tokenizer, &texts)?;
    print!("{}", format_table(&result));
    nanochat::core::fs::write_atomic(
        &dir.join("tok_eval.json"),
        serde_json::to_string_pretty(&result)?.as_bytes(),
    )?;
    nanochat::eval::Report::new(base).log(
        "tokenizer-evaluation",
        &[(
            "comparison",
            format!("\n\n```\n{}```", format_table(&result)).into(),
        )],
    )?;
    Ok(())
}
