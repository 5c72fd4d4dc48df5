//! `nanochat import` (an upstream PyTorch checkpoint directory → our checkpoint format, so
//! models trained with upstream can be evaluated, chatted with and served here) and
//! `nanochat export` (our checkpoint → a Hugging Face folder for transformers' `NanoChat`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use nanochat::core::checkpoint_manager::checkpoint_dir;
use nanochat::core::{CheckpointMetadata, Source};
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
