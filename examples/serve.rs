//! Serve a model over HTTP (web UI at `/`, OpenAI API at `/v1`) from library code:
//!
//! ```text
//! cargo run --release --example serve            # newest sft model on 127.0.0.1:8000
//! curl -N localhost:8000/v1/chat/completions -d '{"messages":[{"role":"user","content":"Hi"}],"stream":true}'
//! ```

use std::sync::Arc;

use nanochat::core::Source;
use nanochat::core::paths::{base_dir, tokenizer_dir};
use nanochat::infer::Engine;
use nanochat::infer::server::{AppState, DEFAULT_MAX_BATCH, WorkerPool, serve};
use nanochat::model::burn::backend::Flex;
use nanochat::model::checkpoint::load_model;
use nanochat::tokenizer::Tokenizer;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_target(false).init();
    let source: Source = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("sft")
        .parse()?;
    let base = base_dir();
    let tokenizer = Arc::new(Tokenizer::load(&tokenizer_dir(&base))?);
    let (model, _meta, dir) = load_model::<Flex>(&base, source, None, None, &Default::default())?;
    let state = AppState::new(
        format!("nanochat-{}", source.as_str()),
        tokenizer.clone(),
        model.config().sequence_len,
    );
    // One worker; the `serve` subcommand starts one per device.
    let engine = Engine::new(model, tokenizer)?;
    state.set_pool(WorkerPool::start(
        vec![engine],
        state.stats.clone(),
        DEFAULT_MAX_BATCH,
    ));
    let rt = tokio::runtime::Runtime::new()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:8000"))?;
    println!("serving {} at http://127.0.0.1:8000/", dir.display());
    rt.block_on(serve(state, listener, async {
        let _ = tokio::signal::ctrl_c().await;
    }))?;
    Ok(())
}
