//! Model checkpoints (upstream `nanochat/checkpoint_manager.py`) on top of the byte-level
//! format of `nanochat_core::checkpoint_manager`: `model_{step:06}.safetensors` with upstream's
//! tensor names in PyTorch layout, `meta_{step:06}.json` with the config and the CRC32 of every
//! file, optional `optim_{step:06}_rank{r}.safetensors`.
//!
//! Loading drives the checkpoint's lifecycle ([`Checkpoint`], nanochat-core
//! `checkpoint_handle`): the meta read back → Loaded; [`build_model`] checks the model file's
//! CRC, builds the model from the config and checks every tensor against it → Validated;
//! [`open_checkpoint`] hands the model over for training or serving → InUse, and
//! [`load_checkpoint`] logs that history.
//!
//! Also imports an upstream checkpoint directory (`model_XXXXXX.pt` + `meta_XXXXXX.json`,
//! written by PyTorch) without Python, with upstream's own patches for older checkpoints
//! (missing `window_pattern` → `L`, missing `resid_lambdas` → 1, `x0_lambdas` → 0), bf16 weights
//! upcast to float32 and `_orig_mod.` prefixes (torch.compile) stripped.

use std::path::{Path, PathBuf};

use burn::tensor::TensorData;
use burn::tensor::backend::Backend;
use burn_store::{ModuleStore, PytorchStore};
use nanochat_core::checkpoint_handle::Checkpoint;
use nanochat_core::checkpoint_manager::{
    self as files, CheckpointError, CheckpointWriter, Source, model_file_name,
};
use nanochat_core::{CheckpointMeta, CheckpointMetadata, ModelConfig, Validate, ValidationError};

use crate::gpt::Gpt;
use crate::weights::{WeightsError, load_named, load_safetensors, model_to_safetensors};

/// Failure saving, loading or importing a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The checkpoint files (missing, corrupted, wrong version …).
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The tensors do not fit the config.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// The config is invalid.
    #[error("{path}: {source}")]
    Config {
        /// Where the config came from.
        path: PathBuf,
        /// The rule.
        #[source]
        source: Box<ValidationError>,
    },
    /// An upstream file could not be read.
    #[error("{path}: {reason}")]
    Upstream {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Extra files (optimizer shards …) to write with a model: `(file name, bytes)`.
pub type ExtraFiles<'a> = &'a [(String, Vec<u8>)];

/// Saves `model` as step `metadata.step` in `dir`, with any extra files, crash-safely.
pub fn save_checkpoint<B: Backend>(
    dir: &Path,
    model: &Gpt<B>,
    metadata: CheckpointMetadata,
    extra: ExtraFiles<'_>,
) -> Result<CheckpointMeta, ModelError> {
    let step = metadata.step;
    let mut writer = CheckpointWriter::new(dir, step)?;
    writer.write_bytes(&model_file_name(step), &model_to_safetensors(model)?)?;
    for (name, bytes) in extra {
        writer.write_bytes(name, bytes)?;
    }
    Ok(writer.commit(CheckpointMeta::new(model.config().clone(), metadata))?)
}

/// Builds the model of a loaded checkpoint (upstream `build_model`): reads the model file
/// (size and CRC32 checked), builds a model from the config and checks every tensor against
/// it; only then is the checkpoint Validated. On error it stays Loaded.
pub fn build_model<B: Backend>(
    checkpoint: &mut Checkpoint,
    device: &B::Device,
) -> Result<Gpt<B>, ModelError> {
    let name = model_file_name(checkpoint.step());
    checkpoint.validate(&[&name], |c, files| {
        let bytes = files.first().map(Vec::as_slice).unwrap_or_default();
        let mut model =
            Gpt::<B>::skeleton(&c.meta().model_config, device).map_err(|e| ModelError::Config {
                path: c.meta_path(),
                source: Box::new(e),
            })?;
        load_safetensors(&mut model, bytes, &c.dir().join(&name))?;
        Ok(model)
    })
}

/// Loads step `step` of `dir` into a model for training or serving: the checkpoint goes
/// Loaded → Validated ([`build_model`]) → InUse, and the handle keeps its history.
pub fn open_checkpoint<B: Backend>(
    dir: &Path,
    step: u64,
    device: &B::Device,
) -> Result<(Gpt<B>, Checkpoint), ModelError> {
    let mut checkpoint = Checkpoint::load(dir, step)?;
    let model = build_model(&mut checkpoint, device)?;
    checkpoint.put_in_use()?;
    Ok((model, checkpoint))
}

/// [`open_checkpoint`], logging the checkpoint's lifecycle, for callers that need the meta.
pub fn load_checkpoint<B: Backend>(
    dir: &Path,
    step: u64,
    device: &B::Device,
) -> Result<(Gpt<B>, CheckpointMeta), ModelError> {
    let (model, checkpoint) = open_checkpoint(dir, step, device)?;
    tracing::info!(
        "checkpoint {}: {}",
        checkpoint.meta_path().display(),
        checkpoint.describe()
    );
    Ok((model, checkpoint.into_meta()))
}

/// Loads a model the way upstream's `load_model(source, …)` does: from
/// `<base>/<source>_checkpoints/<model_tag>/`, the largest `d<N>` tag and the last step unless
/// given.
pub fn load_model<B: Backend>(
    base_dir: &Path,
    source: Source,
    model_tag: Option<&str>,
    step: Option<u64>,
    device: &B::Device,
) -> Result<(Gpt<B>, CheckpointMeta, PathBuf), ModelError> {
    let (dir, _, step) = files::find_checkpoint(base_dir, source, model_tag, step)?;
    let (model, meta) = load_checkpoint(&dir, step, device)?;
    Ok((model, meta, dir))
}

/// What an upstream checkpoint's meta holds that matters here.
#[derive(Debug, Clone)]
pub struct UpstreamMeta {
    /// The step.
    pub step: u64,
    /// The model config (patched like upstream for old checkpoints).
    pub model_config: ModelConfig,
    /// The whole meta JSON.
    pub raw: serde_json::Value,
}

fn upstream_err(path: &Path, reason: impl Into<String>) -> ModelError {
    ModelError::Upstream {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The steps of upstream `model_XXXXXX.pt` files in `dir`, ascending.
pub fn upstream_steps(dir: &Path) -> Result<Vec<u64>, ModelError> {
    let entries = std::fs::read_dir(dir).map_err(|e| upstream_err(dir, e.to_string()))?;
    let mut steps: Vec<u64> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("model_")?
                .strip_suffix(".pt")?
                .parse()
                .ok()
        })
        .collect();
    steps.sort_unstable();
    Ok(steps)
}

/// Reads an upstream `meta_XXXXXX.json`, applying upstream's patch for old checkpoints.
pub fn read_upstream_meta(dir: &Path, step: u64) -> Result<UpstreamMeta, ModelError> {
    let path = dir.join(format!("meta_{step:06}.json"));
    let bytes = std::fs::read(&path).map_err(|e| upstream_err(&path, e.to_string()))?;
    let raw: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| upstream_err(&path, e.to_string()))?;
    let mut cfg = raw
        .get("model_config")
        .cloned()
        .ok_or_else(|| upstream_err(&path, "no model_config"))?;
    let obj = cfg
        .as_object_mut()
        .ok_or_else(|| upstream_err(&path, "model_config is not an object"))?;
    // Upstream `_patch_missing_config_keys`: old models used full context.
    obj.entry("window_pattern").or_insert_with(|| "L".into());
    let known = [
        "sequence_len",
        "vocab_size",
        "n_layer",
        "n_head",
        "n_kv_head",
        "n_embd",
        "window_pattern",
    ];
    obj.retain(|k, _| known.contains(&k.as_str()));
    let model_config: ModelConfig =
        serde_json::from_value(cfg).map_err(|e| upstream_err(&path, e.to_string()))?;
    model_config.validate().map_err(|e| ModelError::Config {
        path: path.clone(),
        source: Box::new(e),
    })?;
    Ok(UpstreamMeta {
        step,
        model_config,
        raw,
    })
}

/// Imports upstream's checkpoint of `step` (the last one if `None`) from `dir`: the model with
/// its weights, and the meta. Checkpoints of upstream HEAD's architecture load exactly; one
/// without value embeddings and smear is taken as the original (v0) architecture.
pub fn import_upstream<B: Backend>(
    dir: &Path,
    step: Option<u64>,
    device: &B::Device,
) -> Result<(Gpt<B>, UpstreamMeta), ModelError> {
    let step = match step {
        Some(s) => s,
        None => *upstream_steps(dir)?
            .last()
            .ok_or_else(|| upstream_err(dir, "no model_*.pt files"))?,
    };
    let meta = read_upstream_meta(dir, step)?;
    let pt = dir.join(format!("model_{step:06}.pt"));
    let mut store = PytorchStore::from_file(&pt).map_indices_contiguous(false);
    let snapshots = store
        .get_all_snapshots()
        .map_err(|e| upstream_err(&pt, e.to_string()))?;
    let mut tensors: Vec<(String, TensorData)> = Vec::with_capacity(snapshots.len());
    for (name, snap) in snapshots {
        let data = snap
            .to_data()
            .map_err(|e| upstream_err(&pt, format!("{name}: {e:?}")))?;
        tensors.push((
            name.strip_prefix("_orig_mod.").unwrap_or(name).to_string(),
            data,
        ));
    }
    let has = |t: &[(String, TensorData)], n: &str| t.iter().any(|(k, _)| k == n);
    let mut meta = meta;
    if !has(&tensors, "smear_gate.weight")
        && !tensors.iter().any(|(k, _)| k.starts_with("value_embeds."))
    {
        // A checkpoint from before value embeddings and smear: the original architecture
        // (RoPE base 10000, q/k scale 1), keeping its window pattern.
        let pattern = meta.model_config.window_pattern.clone();
        meta.model_config = ModelConfig {
            window_pattern: pattern,
            ..meta.model_config.clone().with_v0_features()
        };
        meta.model_config.layer_lambdas = true;
    }
    let config = &meta.model_config;
    // Upstream `_patch_missing_keys`: lambdas absent in old checkpoints are neutral.
    let l = config.n_layer;
    if !has(&tensors, "resid_lambdas") {
        tensors.push(("resid_lambdas".into(), TensorData::new(vec![1f32; l], [l])));
    }
    if !has(&tensors, "x0_lambdas") {
        tensors.push(("x0_lambdas".into(), TensorData::new(vec![0f32; l], [l])));
    }
    let mut model = Gpt::<B>::skeleton(config, device).map_err(|e| ModelError::Config {
        path: pt.clone(),
        source: Box::new(e),
    })?;
    load_named(&mut model, tensors, &pt)?;
    Ok((model, meta))
}
