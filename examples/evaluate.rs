//! Evaluate a chat model on a few problems of every chat task and print ChatCORE:
//!
//! ```text
//! cargo run --release --example evaluate            # newest sft model, 20 problems per task
//! cargo run --release --example evaluate -- rl 100
//! ```

use std::sync::Arc;

use nanochat::core::Source;
use nanochat::core::paths::{base_dir, data_dir, tokenizer_dir};
use nanochat::eval::chat_eval::{ChatEvalOptions, load_tasks, run_chat_eval};
use nanochat::infer::Engine;
use nanochat::model::burn::backend::Flex;
use nanochat::model::checkpoint::load_model;
use nanochat::tokenizer::Tokenizer;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let source: Source = args.next().as_deref().unwrap_or("sft").parse()?;
    let n: usize = args.next().map_or(Ok(20), |s| s.parse())?;
    let base = base_dir();
    let tokenizer = Arc::new(Tokenizer::load(&tokenizer_dir(&base))?);
    let (model, meta, _) = load_model::<Flex>(&base, source, None, None, &Default::default())?;
    let engine = Engine::new(model, tokenizer)?;
    let opts = ChatEvalOptions {
        max_problems: Some(n),
        max_new_tokens: 128,
        spelling_size: n,
        ..ChatEvalOptions::default()
    };
    let tasks = load_tasks(&data_dir(), &opts)?;
    let name = format!("{}@{}", source.as_str(), meta.step());
    let (outcomes, result) = run_chat_eval(&engine, &tasks, &opts, &name)?;
    for o in &outcomes {
        println!(
            "{:<14} {}/{} = {:.3}",
            o.name,
            o.passed,
            o.total,
            o.accuracy()
        );
    }
    println!("{}: {:.4}", result.metric, result.aggregate.unwrap_or(0.0));
    Ok(())
}
