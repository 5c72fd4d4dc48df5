//! The settings of midtraining and SFT (upstream's flags of v0 `mid_train.py` and HEAD
//! `chat_sft.py`) and the LR schedule of both stages (`--mixture` entries are read by
//! `nanochat_data::tasks::build_mixture`).

use std::path::PathBuf;

use nanochat_core::{CheckpointMetadata, Source, TrainingConfiguration};
use nanochat_model::ComputeDtype;
use serde::{Deserialize, Serialize};

use crate::error::TrainError;
use crate::run_files::inherited_config;

/// Which conversation stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatStage {
    /// Midtraining (`mid_checkpoints`).
    Mid,
    /// Supervised fine-tuning (`chatsft_checkpoints`).
    Sft,
}

impl ChatStage {
    /// Where its checkpoints go.
    pub fn source(self) -> Source {
        match self {
            ChatStage::Mid => Source::Mid,
            ChatStage::Sft => Source::Sft,
        }
    }
}

/// Settings of a mid/SFT run (upstream's flag names). `None` = inherit from the source.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatTrainArgs {
    /// Mid or SFT.
    pub stage: ChatStage,
    /// `$NANOCHAT_BASE_DIR`.
    pub base_dir: PathBuf,
    /// Offline data root (tasks, sft, words).
    pub data_dir: PathBuf,
    /// Checkpoint to start from (`base` for mid; `mid` or `base` for SFT).
    pub source: Source,
    /// Its model tag (default: the largest model).
    pub model_tag: Option<String>,
    /// Its step (default: the last).
    pub model_step: Option<u64>,
    /// Training mixture entries: task names (`GSM8K`, `GSM8K*4` for 4 epochs,
    /// `SpellingBee:2000` for a size) or paths to `.jsonl` conversation files.
    pub mixture: Vec<String>,
    /// Validation entries (SFT), same syntax, test splits.
    pub val_mixture: Vec<String>,
    /// Device batch (rows per micro-batch).
    pub device_batch_size: Option<usize>,
    /// Sequence length.
    pub max_seq_len: Option<usize>,
    /// Tokens per optimizer step.
    pub total_batch_size: Option<u64>,
    /// Learning rates.
    pub embedding_lr: Option<f64>,
    /// lm_head learning rate.
    pub unembedding_lr: Option<f64>,
    /// Muon learning rate.
    pub matrix_lr: Option<f64>,
    /// Initial LR multiplier (mid 1.0, SFT 0.8).
    pub init_lr_frac: f64,
    /// Fraction of the run spent decaying the LR to 0 (mid 0.2, SFT 0.5).
    pub warmdown_ratio: f64,
    /// Stop after this many steps instead of one epoch of the mixture.
    pub num_iterations: Option<u64>,
    /// Start from the source's optimizer state (SFT `--load-optimizer 1`).
    pub load_optimizer: bool,
    /// Validation bpb every N steps (0/None = only at the end).
    pub eval_every: Option<u64>,
    /// Validation tokens.
    pub eval_tokens: u64,
    /// ChatCORE every N steps (SFT; None = never during training).
    pub chatcore_every: Option<u64>,
    /// Problems per task for the periodic ChatCORE.
    pub chatcore_max_problems: usize,
    /// Checkpoint every N steps (the last step is always saved).
    pub save_every: Option<u64>,
    /// Resume this stage's run from its checkpoint at this step.
    pub resume_from_step: Option<u64>,
    /// Stop (and save) at this step without finishing.
    pub stop_after: Option<u64>,
    /// Mixture shuffle seed (upstream 42).
    pub seed: u64,
    /// Compute dtype.
    #[serde(skip, default = "default_dtype")]
    pub compute_dtype: ComputeDtype,
    /// Peak FLOP/s for MFU.
    pub peak_flops: Option<f64>,
    /// Progress bar.
    pub progress: bool,
    /// Data-parallel layout; `None`: this device alone, no collective.
    #[serde(default)]
    pub distributed: Option<nanochat_core::DistributedConfig>,
}

fn default_dtype() -> ComputeDtype {
    ComputeDtype::F32
}

impl ChatTrainArgs {
    /// Upstream's defaults for `stage` with the offline mixtures (sizes for a small run).
    pub fn new(stage: ChatStage, base_dir: PathBuf, data_dir: PathBuf) -> Self {
        let (source, mixture, init, warmdown): (Source, &[&str], f64, f64) = match stage {
            ChatStage::Mid => (
                Source::Base,
                &[
                    "HHRLHF",
                    "MCExtra",
                    "GSM8K",
                    "Identity*2",
                    "SimpleSpelling:2000",
                    "SpellingBee:1000",
                ],
                1.0,
                0.2,
            ),
            ChatStage::Sft => (
                Source::Mid,
                &[
                    "HHRLHF",
                    "MMLU*3",
                    "GSM8K*4",
                    "Identity*2",
                    "SimpleSpelling:300",
                    "SpellingBee:300",
                ],
                0.8,
                0.5,
            ),
        };
        Self {
            stage,
            base_dir,
            data_dir,
            source,
            model_tag: None,
            model_step: None,
            mixture: mixture.iter().map(|s| s.to_string()).collect(),
            val_mixture: vec!["GSM8K:420".into(), "MMLU:520".into()],
            device_batch_size: None,
            max_seq_len: None,
            total_batch_size: None,
            embedding_lr: None,
            unembedding_lr: None,
            matrix_lr: None,
            init_lr_frac: init,
            warmdown_ratio: warmdown,
            num_iterations: None,
            load_optimizer: false,
            eval_every: None,
            eval_tokens: 1 << 16,
            chatcore_every: None,
            chatcore_max_problems: 24,
            save_every: None,
            resume_from_step: None,
            stop_after: None,
            seed: 42,
            compute_dtype: ComputeDtype::F32,
            peak_flops: None,
            progress: false,
            distributed: None,
        }
    }
}

/// The LR multiplier at `progress` ∈ [0, 1]: `init` until `1 − warmdown`, then linear to 0.
pub fn lr_multiplier(progress: f64, init: f64, warmdown: f64) -> f64 {
    let p = progress.clamp(0.0, 1.0);
    if warmdown <= 0.0 || p < 1.0 - warmdown {
        init
    } else {
        init * (1.0 - p) / warmdown
    }
}

/// What a mid/SFT run takes from its source checkpoint's meta (flags override).
pub(crate) struct Inherited {
    pub(crate) cfg: TrainingConfiguration,
    pub(crate) device_batch_size: usize,
    pub(crate) max_seq_len: usize,
    pub(crate) total_batch_size: u64,
}

pub(crate) fn inherit(
    meta: &CheckpointMetadata,
    args: &ChatTrainArgs,
) -> Result<Inherited, TrainError> {
    let extra = &meta.extra;
    let cfg = inherited_config(meta, args.embedding_lr, args.unembedding_lr, args.matrix_lr);
    let get = |k: &str| extra.get(k).and_then(|v| v.as_u64());
    let device_batch_size = args
        .device_batch_size
        .or(get("device_batch_size").map(|v| v as usize))
        .unwrap_or(32);
    let max_seq_len = args
        .max_seq_len
        .or(get("max_seq_len").map(|v| v as usize))
        .unwrap_or(2048);
    let total_batch_size = args
        .total_batch_size
        .or(get("total_batch_size"))
        .unwrap_or((device_batch_size * max_seq_len) as u64);
    Ok(Inherited {
        cfg,
        device_batch_size,
        max_seq_len,
        total_batch_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        assert_eq!(lr_multiplier(0.0, 0.8, 0.5), 0.8);
        assert_eq!(lr_multiplier(0.49, 0.8, 0.5), 0.8);
        assert!((lr_multiplier(0.75, 0.8, 0.5) - 0.4).abs() < 1e-12);
        assert_eq!(lr_multiplier(1.0, 0.8, 0.5), 0.0);
        assert_eq!(lr_multiplier(0.7, 1.0, 0.2), 1.0);
        assert!((lr_multiplier(0.9, 1.0, 0.2) - 0.5).abs() < 1e-12);
    }
}
