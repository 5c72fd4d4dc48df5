//! What every training loop (pretraining, midtraining, SFT, RL) does the same way around its
//! steps: restoring optimizer state from a checkpoint, appending to `metrics.jsonl` (and
//! cutting it back on resume), the progress bar, and the learning rates a post-training stage
//! inherits from its source checkpoint.

use std::fs::File;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use indicatif::{ProgressBar, ProgressStyle};
use nanochat_core::checkpoint_manager::{self as files, optim_file_name};
use nanochat_core::fs::IoError;
use nanochat_core::{CheckpointMeta, CheckpointMetadata, TrainingConfiguration};
use nanochat_model::Gpt;
use nanochat_model::checkpoint::load_checkpoint;
use nanochat_model::weights::read_safetensors;

use crate::error::TrainError;
use crate::optim::MuonAdamW;

/// Loads `optim_<step>_rank0` of the checkpoint in `dir` into `opt`.
pub fn load_optimizer_state<B: Backend>(
    opt: &mut MuonAdamW<B>,
    dir: &Path,
    meta: &CheckpointMeta,
    step: u64,
    device: &B::Device,
) -> Result<(), TrainError> {
    let name = optim_file_name(step, 0);
    let bytes = files::read_file(dir, meta, &name)?;
    opt.load_state_tensors(read_safetensors(&bytes, "", &dir.join(&name))?, device)?;
    Ok(())
}

/// The model a post-training stage starts from: its own checkpoint at `resume_from_step` in
/// `dir` (with that checkpoint's meta), else `source`.
pub fn resume_or_source<B: Backend>(
    source: Gpt<B>,
    dir: &Path,
    resume_from_step: Option<u64>,
    device: &B::Device,
) -> Result<(Gpt<B>, Option<CheckpointMeta>), TrainError> {
    match resume_from_step {
        None => Ok((source, None)),
        Some(step) => {
            drop(source);
            let (model, meta) = load_checkpoint::<B>(dir, step, device)?;
            Ok((model, Some(meta)))
        }
    }
}

/// Field `key` of a checkpoint meta in `dir`, deserialised (`cannot resume` when absent or
/// malformed).
pub fn meta_field<T: serde::de::DeserializeOwned>(
    meta: &CheckpointMeta,
    key: &str,
    dir: &Path,
) -> Result<T, TrainError> {
    let value = meta
        .metadata
        .extra
        .get(key)
        .cloned()
        .ok_or_else(|| TrainError::Resume(format!("{}: meta has no `{key}`", dir.display())))?;
    serde_json::from_value(value).map_err(|e| TrainError::Resume(format!("{key}: {e}")))
}

/// `<dir>/metrics.jsonl`.
pub fn metrics_path(dir: &Path) -> PathBuf {
    dir.join("metrics.jsonl")
}

/// Creates `dir` and opens its `metrics.jsonl` for appending.
pub fn open_metrics(dir: &Path) -> Result<(File, PathBuf), TrainError> {
    std::fs::create_dir_all(dir).map_err(|e| IoError::new("create", dir, e))?;
    let path = metrics_path(dir);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| IoError::new("open", &path, e))?;
    Ok((file, path))
}

/// Keeps the metrics lines of steps before `step` (a resume rewrites what follows).
pub fn truncate_metrics(dir: &Path, step: u64) -> Result<(), TrainError> {
    let path = metrics_path(dir);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s < step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    nanochat_core::fs::write_atomic(&path, kept.as_bytes())?;
    Ok(())
}

/// A progress bar of `len` with `template`, or a hidden one when `show` is false.
pub fn progress_bar(show: bool, len: u64, template: &str) -> ProgressBar {
    let pb = if show {
        ProgressBar::new(len)
    } else {
        ProgressBar::hidden()
    };
    pb.set_style(ProgressStyle::with_template(template).expect("static template"));
    pb
}

/// The pretraining configuration stored in a checkpoint's meta (`user_config`), with the
/// given learning rates overriding its own and weight decay off, as post-training uses it.
pub fn inherited_config(
    meta: &CheckpointMetadata,
    embedding_lr: Option<f64>,
    unembedding_lr: Option<f64>,
    matrix_lr: Option<f64>,
) -> TrainingConfiguration {
    let mut cfg: TrainingConfiguration = meta
        .extra
        .get("user_config")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let o = &mut cfg.optimizer;
    o.embedding_lr = embedding_lr.unwrap_or(o.embedding_lr);
    o.unembedding_lr = unembedding_lr.unwrap_or(o.unembedding_lr);
    o.matrix_lr = matrix_lr.unwrap_or(o.matrix_lr);
    o.weight_decay = 0.0;
    cfg
}

/// The bar template of loops that know their step count.
pub const STEPS_TEMPLATE: &str = "{bar:40} {pos}/{len} steps [{elapsed_precise} < {eta_precise}]";

/// A value for a checkpoint meta field (`Null` if it cannot be serialised, which the plain
/// data stored there never is).
pub fn meta_json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}
