//! `nanochat import` (an upstream PyTorch checkpoint directory → our checkpoint format, so
//! models trained with upstream can be evaluated, chatted with and served here) and
//! `nanochat export` (our checkpoint → a Hugging Face folder for transformers' `NanoChat`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use nanochat::core::checkpoint_manager::checkpoint_dir;
use nanochat::core::{CheckpointMetadata, Source, TrainingConfiguration};
use nanochat::model::backend::CpuBackend as Cpu;
use nanochat::model::checkpoint::{import_upstream, save_checkpoint};
use nanochat::model::hf_export::export_hf;

/// Flags of `import`.
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// Upstream checkpoint folder (`model_XXXXXX.pt` + `meta_XXXXXX.json`).
    dir: PathBuf,
    /// Step to import (default: the last).
    #[arg(long)]
    step: Option<u64>,
    /// Stage it belongs to here: base, mid, sft or rl.
    #[arg(long, default_value = "base")]
    source: Source,
    /// Model tag here (default: the upstream folder's name).
    #[arg(long)]
    model_tag: Option<String>,
}

/// Flags of `export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Output folder (config.json, model.safetensors, tokenizer files, chat template).
    out: PathBuf,
    #[command(flatten)]
    checkpoint: super::CheckpointArgs,
}

pub fn import(args: ImportArgs, base: &Path) -> anyhow::Result<()> {
    let (model, meta) = import_upstream::<Cpu>(&args.dir, args.step, &Default::default())?;
    let tag = match args.model_tag {
        Some(t) => t,
        None => args
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .context("give --model-tag")?,
    };
    let dir = checkpoint_dir(base, args.source, &tag);
    let mut m = CheckpointMetadata::new(meta.step, chrono::Utc::now());
    m.extra.insert(
        "imported_from".into(),
        args.dir.display().to_string().into(),
    );
    m.extra.insert("upstream_meta".into(), meta.raw.clone());
    // What post-training inherits, in our terms: upstream's flags as a training configuration,
    // and the batch its run used.
    match meta.raw.get("user_config").and_then(|v| v.as_object()) {
        Some(user) => {
            let (cfg, ignored) = TrainingConfiguration::from_upstream_user_config(user)
                .with_context(|| {
                    format!("{}: user_config of step {}", args.dir.display(), meta.step)
                })?;
            if !ignored.is_empty() {
                tracing::info!(
                    "upstream flags with no counterpart here (kept in upstream_meta): {ignored:?}"
                );
            }
            m.extra
                .insert("user_config".into(), serde_json::to_value(&cfg)?);
        }
        // Chat, evaluation and serving do not need it; post-training will say it is missing.
        None => tracing::warn!(
            "{}: no user_config in the meta of step {}: mid-train / chat-sft / chat-rl cannot start from this checkpoint",
            args.dir.display(),
            meta.step
        ),
    }
    for key in ["device_batch_size", "max_seq_len", "total_batch_size"] {
        if let Some(v) = meta.raw.get(key) {
            m.extra.insert(key.into(), v.clone());
        }
    }
    save_checkpoint(&dir, &model, m, &[])?;
    println!(
        "imported step {} of {} into {}",
        meta.step,
        args.dir.display(),
        dir.display()
    );
    Ok(())
}

pub fn export(args: ExportArgs, base: &Path) -> anyhow::Result<()> {
    let (model, meta, dir) = args.checkpoint.load::<Cpu>(base, &Default::default())?;
    let tok = super::load_tokenizer(base)?;
    export_hf(&model, tok.config(), tok.vocab(), &args.out)?;
    println!(
        "exported {} step {} to {}",
        dir.display(),
        meta.step(),
        args.out.display()
    );
    Ok(())
}
