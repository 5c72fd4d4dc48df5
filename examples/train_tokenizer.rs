//! Train a BPE tokenizer on the pretraining shards and compare it with GPT-2's and GPT-4's:
//!
//! ```text
//! cargo run --release --example train_tokenizer              # vocab 8192, first 2 shards
//! cargo run --release --example train_tokenizer -- 32768 8
//! ```
//!
//! Saves nothing: `nanochat tok-train` is the command that writes `$NANOCHAT_BASE_DIR/tokenizer`.

use nanochat::core::paths::pretrain_data_dir;
use nanochat::data::dataset::{iter_batches, list_parquet_files};
use nanochat::tokenizer::tok_eval::{EvalText, evaluate, format_table};
use nanochat::tokenizer::tok_train::{TokTrainOptions, train_tokenizer};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let vocab_size: usize = args.next().map_or(Ok(8192), |s| s.parse())?;
    let shards: usize = args.next().map_or(Ok(2), |s| s.parse())?;
    let files = list_parquet_files(&pretrain_data_dir())?;
    let train = &files[..shards.min(files.len() - 1)];
    let docs = iter_batches(train, 0, 1)
        .flat_map(|b| b.map(|b| b.texts).unwrap_or_default())
        .map(Ok::<_, std::convert::Infallible>);
    let opts = TokTrainOptions {
        vocab_size,
        ..Default::default()
    };
    let (tokenizer, report) = train_tokenizer(docs, &opts)?;
    println!(
        "vocab {} from {} documents ({} chars) in {:.2}s",
        tokenizer.vocab_size(),
        report.documents,
        report.chars,
        report.train_seconds
    );
    let val = iter_batches(&files[files.len() - 1..], 0, 1)
        .flat_map(|b| b.map(|b| b.texts).unwrap_or_default())
        .collect();
    let texts = vec![EvalText {
        name: "val-shard".into(),
        docs: val,
    }];
    print!("{}", format_table(&evaluate(&tokenizer, &texts)?));
    Ok(())
}
