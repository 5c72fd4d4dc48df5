//! `nanochat serve`: the chat web UI and the HTTP API (upstream v0 `scripts/chat_web.py`, plus
//! OpenAI-compatible endpoints). Listens at once (health says 503 until the model is loaded),
//! loads one model worker per `--num-workers`, and shuts down gracefully on Ctrl-C.

use nanochat::model::TrainBackend;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use nanochat::core::DeviceSpec;
use nanochat::infer::Engine;
use nanochat::infer::server::{AppState, DEFAULT_MAX_BATCH, WorkerPool, serve};
use nanochat::model::{BackendTask, ComputeDtype, dispatch};
use nanochat::tokenizer::Tokenizer;

/// Flags of `serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    checkpoint: super::CheckpointArgs,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port.
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Model workers (each holds a copy of the model; one per GPU, or more on a big CPU).
    #[arg(long, default_value_t = 1)]
    num_workers: usize,
    /// Sequences each worker decodes together (continuous batching; requests join and leave
    /// between steps). 1 turns batching off: one request at a time per worker.
    #[arg(long, default_value_t = DEFAULT_MAX_BATCH, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    max_batch: usize,
    /// Device: auto, cpu, wgpu[:N], cuda[:N].
    #[arg(long, default_value = "auto")]
    device: DeviceSpec,
    /// Require `Authorization: Bearer <KEY>` on every route but /health and the page.
    #[arg(long, env = "NANOCHAT_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

struct Load {
    args: Args,
    base: PathBuf,
    tokenizer: Arc<Tokenizer>,
    state: Arc<AppState>,
    dtype: ComputeDtype,
}

impl BackendTask for Load {
    type Output = anyhow::Result<()>;
    fn run<B: TrainBackend>(self, device: B::Device) -> anyhow::Result<()> {
        let mut engines = Vec::new();
        for _ in 0..self.args.num_workers.max(1) {
            let (model, meta, dir) = self
                .args
                .checkpoint
                .load::<B::InnerBackend>(&self.base, &device)?;
            tracing::info!(
                "worker {} loaded {} step {}",
                engines.len(),
                dir.display(),
                meta.step()
            );
            engines.push(Engine::new(
                model.with_compute_dtype(self.dtype),
                self.tokenizer.clone(),
            )?);
        }
        self.state.set_pool(WorkerPool::start(
            engines,
            self.state.stats.clone(),
            self.args.max_batch,
        ));
        tracing::info!("ready");
        Ok(())
    }
}

pub fn run(mut args: Args, base: &Path) -> anyhow::Result<()> {
    let tokenizer = Arc::new(super::load_tokenizer(base)?);
    // The model config (for the context length and the model id) comes from the meta.
    let (source, c) = (args.checkpoint.source, &args.checkpoint);
    let (dir, tag, step) = nanochat::core::checkpoint_manager::find_checkpoint(
        base,
        source,
        c.model_tag.as_deref(),
        c.step,
    )?;
    let meta = nanochat::core::checkpoint_manager::load_meta(&dir, step)?;
    let state = AppState::new(
        format!("nanochat-{tag}-{}", source.as_str()),
        tokenizer.clone(),
        meta.model_config.sequence_len,
    );
    if let Some(key) = args.api_key.clone() {
        state
            .require_api_key(key)
            .map_err(|e| anyhow::anyhow!("--api-key / NANOCHAT_API_KEY: {e}"))?;
    }
    let device = super::resolve_device(args.device);
    let dtype = super::default_dtype(device);
    let addr = format!("{}:{}", args.host, args.port);
    let rt = tokio::runtime::Runtime::new()?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(&addr))
        .with_context(|| format!("binding {addr}"))?;
    // The address bound (with `--port 0`, the port the system picked).
    let addr = listener.local_addr().map_or(addr, |a| a.to_string());
    println!("nanochat serving at http://{addr}/ (OpenAI API at http://{addr}/v1)");
    // Every worker loads the checkpoint resolved above, even if a newer one appears meanwhile.
    args.checkpoint.model_tag = Some(tag);
    args.checkpoint.step = Some(step);
    let load = Load {
        args,
        base: base.to_path_buf(),
        tokenizer,
        state: state.clone(),
        dtype,
    };
    let loading = state.clone();
    std::thread::spawn(move || {
        let result = dispatch(device, load)
            .map_err(anyhow::Error::from)
            .and_then(|r| r);
        if let Err(e) = result {
            tracing::error!("model loading failed (the server keeps answering 503): {e:#}");
            loading.load_failed(format!("{e:#}"));
        }
    });
    rt.block_on(serve(state, listener, async {
        let _ = tokio::signal::ctrl_c().await;
    }))?;
    Ok(())
}
