//! Chat with a trained model in a few lines of library code:
//!
//! ```text
//! cargo run --release --example chat -- "Why is the sky blue?"      # newest sft model
//! cargo run --release --example chat -- "Hello" base                 # or base / mid / rl
//! ```

use std::io::Write;
use std::sync::Arc;

use nanochat::core::paths::{base_dir, tokenizer_dir};
use nanochat::core::{GenerationParams, Source};
use nanochat::infer::{Chat, Engine};
use nanochat::model::burn::backend::Flex;
use nanochat::model::checkpoint::load_model;
use nanochat::tokenizer::Tokenizer;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let question = args.next().unwrap_or_else(|| "Hello! Who are you?".into());
    let source: Source = args.next().as_deref().unwrap_or("sft").parse()?;
    let base = base_dir();
    let tokenizer = Arc::new(Tokenizer::load(&tokenizer_dir(&base))?);
    let (model, meta, dir) = load_model::<Flex>(&base, source, None, None, &Default::default())?;
    println!("{} (step {})", dir.display(), meta.step());
    let engine = Engine::new(model, tokenizer)?;
    let mut chat = Chat::new(&engine);
    let params = GenerationParams {
        temperature: 0.6,
        max_tokens: 256,
        seed: Some(42),
        ..GenerationParams::default()
    };
    print!("> {question}\n< ");
    chat.send(&question, &params, |piece| {
        print!("{piece}");
        let _ = std::io::stdout().flush();
    })?;
    println!();
    Ok(())
}
