//! `nanochat import` (an upstream PyTorch checkpoint directory, as upstream's runs and its
//! Hugging Face uploads lay it out, or a Hugging Face folder in either format `export` writes →
//! our checkpoint format, so such models can be evaluated, chatted with and served here) and
//! `nanochat export` (our checkpoint → a Hugging Face folder transformers loads; docs/interop.md).

use std::path::{Path, PathBuf};

use anyhow::Context;
use nanochat::core::checkpoint_manager::checkpoint_dir;
use nanochat::core::{CheckpointMetadata, Source, TrainingConfiguration};
use nanochat::model::backend::CpuBackend as Cpu;
use nanochat::model::checkpoint::{import_upstream, save_checkpoint};
use nanochat::model::hf_export::{HfFormat, export_hf};
use nanochat::model::hf_import::{hf_tokenizer, import_hf, is_hf_folder};
use nanochat::tokenizer::Tokenizer;
use nanochat::tokenizer::pickle::import_pickle;

/// Flags of `import`.
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// Upstream checkpoint folder (`model_XXXXXX.pt` + `meta_XXXXXX.json`, optionally
    /// `tokenizer.pkl`), or a Hugging Face folder (`config.json` + safetensors +
    /// `tokenizer.json`) of transformers' NanoChat or of `nanochat export`.
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
    /// builtin: transformers' own NanoChatForCausalLM (original architecture only);
    /// remote-code: this project's transformers code in the folder (any architecture, loaded
    /// with trust_remote_code=True). Default: builtin when the model fits it.
    #[arg(long, value_parser = ["builtin", "remote-code"])]
    format: Option<String>,
    /// Also write our model's logits, greedy continuations and chat rendering for a few
    /// prompts to this JSON file, for `cargo xtask hf-check` to compare with transformers.
    #[arg(long)]
    reference: Option<PathBuf>,
    #[command(flatten)]
    checkpoint: super::CheckpointArgs,
}

fn model_tag(args: &ImportArgs) -> anyhow::Result<String> {
    match &args.model_tag {
        Some(t) => Ok(t.clone()),
        None => args
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .context("give --model-tag"),
    }
}

/// Makes `tok` the base folder's tokenizer: saved when there is none yet; when there is one,
/// it must be the same (else the imported model would be read with the wrong ids).
fn adopt_tokenizer(base: &Path, tok: &Tokenizer, from: &Path) -> anyhow::Result<()> {
    let dir = nanochat::core::paths::tokenizer_dir(base);
    if !dir.join("tokenizer_config.json").exists() && !dir.exists() {
        tok.save(&dir)?;
        println!("tokenizer of {} saved to {}", from.display(), dir.display());
        return Ok(());
    }
    let ours = super::load_tokenizer(base)?;
    anyhow::ensure!(
        ours.config() == tok.config() && ours.vocab().ranks() == tok.vocab().ranks(),
        "{}: its tokenizer differs from the one in {}; import into another base folder \
         (NANOCHAT_BASE_DIR=… nanochat import …)",
        from.display(),
        dir.display()
    );
    Ok(())
}

/// A Hugging Face folder: its model, and its `tokenizer.json` as this base folder's tokenizer.
fn import_hf_folder(args: &ImportArgs, base: &Path) -> anyhow::Result<()> {
    let (model, format) = import_hf::<Cpu>(&args.dir, &Default::default())?;
    let tok_path = args.dir.join("tokenizer.json");
    if tok_path.is_file() {
        let hf = hf_tokenizer(&tok_path)?;
        let tok = Tokenizer::from_vocab(hf.vocabulary, &hf.pattern)?;
        for (name, id) in &hf.special_tokens {
            anyhow::ensure!(
                tok.config().special_tokens.id(name) == Some(*id),
                "{}: special token {name} has id {id}; nanochat's come right after the \
                 ranks in upstream's order",
                tok_path.display()
            );
        }
        anyhow::ensure!(
            tok.vocab_size() == model.config().vocab_size,
            "{}: {} tokens but config.json says vocab_size {}",
            tok_path.display(),
            tok.vocab_size(),
            model.config().vocab_size
        );
        adopt_tokenizer(base, &tok, &args.dir)?;
    } else {
        tracing::warn!(
            "{}: no tokenizer.json: the model is read with {}'s tokenizer",
            args.dir.display(),
            nanochat::core::paths::tokenizer_dir(base).display()
        );
    }
    let dir = checkpoint_dir(base, args.source, &model_tag(args)?);
    let step = args.step.unwrap_or(0);
    let mut m = CheckpointMetadata::new(step, chrono::Utc::now());
    m.extra.insert(
        "imported_from".into(),
        args.dir.display().to_string().into(),
    );
    m.extra
        .insert("hf_format".into(), format.as_str().to_string().into());
    save_checkpoint(&dir, &model, m, &[])?;
    println!(
        "imported {} ({} format) into {} as step {step}",
        args.dir.display(),
        format.as_str(),
        dir.display()
    );
    Ok(())
}

pub fn import(args: ImportArgs, base: &Path) -> anyhow::Result<()> {
    if is_hf_folder(&args.dir) {
        return import_hf_folder(&args, base);
    }
    let (model, meta) = import_upstream::<Cpu>(&args.dir, args.step, &Default::default())?;
    // Upstream's Hugging Face uploads carry the tokenizer beside the checkpoint.
    let pickle = args.dir.join("tokenizer.pkl");
    if pickle.is_file() {
        let tok = import_pickle(&pickle)?;
        anyhow::ensure!(
            tok.vocab_size() == model.config().vocab_size,
            "{}: {} tokens but the model's vocab_size is {}",
            pickle.display(),
            tok.vocab_size(),
            model.config().vocab_size
        );
        adopt_tokenizer(base, &tok, &args.dir)?;
    }
    let tag = model_tag(&args)?;
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
    let format = args.format.as_deref().map(|f| match f {
        "builtin" => HfFormat::Builtin,
        _ => HfFormat::RemoteCode,
    });
    let format = export_hf(&model, tok.config(), tok.vocab(), &args.out, format)?;
    println!(
        "exported {} step {} to {} ({} format{})",
        dir.display(),
        meta.step(),
        args.out.display(),
        format.as_str(),
        match format {
            HfFormat::Builtin => ": transformers' NanoChatForCausalLM",
            HfFormat::RemoteCode => ": load it with trust_remote_code=True",
        }
    );
    if let Some(path) = &args.reference {
        let reference = super::hf_reference::reference(&model, &tok)?;
        nanochat::core::fs::write_atomic(path, reference.to_string().as_bytes())?;
        println!("wrote our reference outputs to {}", path.display());
    }
    Ok(())
}
