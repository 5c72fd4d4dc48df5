//! The settings of midtraining and SFT (upstream's flags of v0 `mid_train.py` and HEAD
//! `chat_sft.py`) and the LR schedule of both stages (`--mixture` entries are read by
//! `nanochat_data::tasks::build_mixture`).

use std::path::{Path, PathBuf};

use nanochat_core::{CheckpointMetadata, Source, TrainingConfiguration};
use nanochat_data::chat_loader::PackMode;
use nanochat_model::ComputeDtype;
use serde::{Deserialize, Serialize};

use crate::error::TrainError;
use nanochat_core::validation::{VResult, check_non_negative, check_positive, check_range};
use nanochat_core::{Interval, Validate};

use crate::stage_meta::{LrOverrides, RunMeta, inherited_config};

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

/// Settings of a mid/SFT run (upstream's flag names). `None` = inherit from the source
/// checkpoint, or the stage's default ([`ChatTrainArgs::resolve`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct ChatTrainArgs {
    /// Mid or SFT.
    #[cfg_attr(feature = "cli", arg(skip = ChatStage::Sft))]
    pub stage: ChatStage,
    /// `$NANOCHAT_BASE_DIR`.
    #[cfg_attr(feature = "cli", arg(skip))]
    pub base_dir: PathBuf,
    /// Offline data root (tasks, sft, words).
    #[cfg_attr(feature = "cli", arg(skip))]
    pub data_dir: PathBuf,
    /// Checkpoints to start from: base for mid-train; for chat-sft mid when present, else base.
    #[cfg_attr(feature = "cli", arg(short = 'i', long))]
    pub source: Option<Source>,
    /// Model tag of the source (default: the largest, dN with the largest N).
    #[cfg_attr(feature = "cli", arg(short = 'g', long))]
    pub model_tag: Option<String>,
    /// Step of the source (default: the last).
    #[cfg_attr(feature = "cli", arg(short = 's', long))]
    pub model_step: Option<u64>,
    /// Training mixture, comma-separated: task names (ARC-Easy, MMLU, MCExtra, GSM8K,
    /// SpellingBee, SimpleSpelling, Identity, HHRLHF), `NAME*k` for k epochs, `NAME:n` for n
    /// examples, or paths of .jsonl conversation files. Default: the stage's mixture.
    #[cfg_attr(feature = "cli", arg(long, value_delimiter = ','))]
    pub mixture: Vec<String>,
    /// Validation mixture (test splits), same syntax; empty string for none.
    #[cfg_attr(feature = "cli", arg(long, value_delimiter = ',', default_values = VAL_MIXTURE))]
    pub val_mixture: Vec<String>,
    /// Rows per micro-batch (default: the source's).
    #[cfg_attr(feature = "cli", arg(long))]
    pub device_batch_size: Option<usize>,
    /// Sequence length (default: the source's).
    #[cfg_attr(feature = "cli", arg(long))]
    pub max_seq_len: Option<usize>,
    /// Tokens per optimizer step (default: the source's).
    #[cfg_attr(feature = "cli", arg(long))]
    pub total_batch_size: Option<u64>,
    /// Learning rates (default: the source's).
    #[serde(flatten)]
    #[cfg_attr(feature = "cli", command(flatten))]
    pub lrs: LrOverrides,
    /// Initial LR multiplier (default: mid 1.0, SFT 0.8).
    #[cfg_attr(feature = "cli", arg(long))]
    pub init_lr_frac: Option<f64>,
    /// Fraction of the run decaying the LR to 0 (default: mid 0.2, SFT 0.5).
    #[cfg_attr(feature = "cli", arg(long))]
    pub warmdown_ratio: Option<f64>,
    /// Stop after this many steps instead of one epoch of the mixture.
    #[cfg_attr(feature = "cli", arg(long))]
    pub num_iterations: Option<u64>,
    /// Start from the source's optimizer state (momentum buffers; SFT `--load-optimizer 1`).
    #[cfg_attr(feature = "cli", arg(long))]
    pub load_optimizer: bool,
    /// Validation bpb every N steps (and at the end).
    #[cfg_attr(feature = "cli", arg(long))]
    pub eval_every: Option<u64>,
    /// Validation tokens.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = Self::EVAL_TOKENS))]
    pub eval_tokens: u64,
    /// ChatCORE every N steps (and at the end; SFT).
    #[cfg_attr(feature = "cli", arg(long))]
    pub chatcore_every: Option<u64>,
    /// Problems per task for that ChatCORE.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = Self::CHATCORE_MAX_PROBLEMS))]
    pub chatcore_max_problems: usize,
    /// Checkpoint every N steps (the last step is always saved).
    #[cfg_attr(feature = "cli", arg(long))]
    pub save_every: Option<u64>,
    /// Resume this stage's run from its checkpoint at this step.
    #[cfg_attr(feature = "cli", arg(long))]
    pub resume_from_step: Option<u64>,
    /// Stop (saving a checkpoint) at this step; resume later with --resume-from-step.
    #[cfg_attr(feature = "cli", arg(long))]
    pub stop_after: Option<u64>,
    /// Mixture shuffle seed.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = Self::SEED))]
    pub seed: u64,
    /// Compute dtype.
    #[serde(skip, default = "default_dtype")]
    #[cfg_attr(feature = "cli", arg(skip = ComputeDtype::F32))]
    pub compute_dtype: ComputeDtype,
    /// Peak FLOP/s for MFU.
    #[cfg_attr(feature = "cli", arg(skip))]
    pub peak_flops: Option<f64>,
    /// Progress bar.
    #[cfg_attr(feature = "cli", arg(skip))]
    pub progress: bool,
    /// Data-parallel layout; `None`: this device alone, no collective.
    #[serde(default)]
    #[cfg_attr(feature = "cli", arg(skip))]
    pub distributed: Option<nanochat_core::DistributedConfig>,
}

impl Validate for ChatTrainArgs {
    /// The stage's own settings (what it inherits is checked once merged, see `inherit`).
    fn validate(&self) -> VResult {
        const E: &str = "ChatTrainArgs";
        self.lrs.validate()?;
        let (init, warmdown) = self.lr_schedule();
        check_non_negative(E, "init_lr_frac", init)?;
        check_range(E, "warmdown_ratio", warmdown, Interval::closed(0.0, 1.0))?;
        let sizes = [
            ("device_batch_size", self.device_batch_size),
            ("max_seq_len", self.max_seq_len),
        ];
        for (field, v) in sizes {
            if let Some(v) = v {
                check_positive(E, field, v as u64)?;
            }
        }
        if let Some(v) = self.total_batch_size {
            check_positive(E, "total_batch_size", v)?;
        }
        check_positive(E, "eval_tokens", self.eval_tokens)?;
        check_positive(
            E,
            "chatcore_max_problems",
            self.chatcore_max_problems as u64,
        )
    }
}

/// The validation mixture of both stages.
pub const VAL_MIXTURE: [&str; 2] = ["GSM8K:420", "MMLU:520"];

fn default_dtype() -> ComputeDtype {
    ComputeDtype::F32
}

impl ChatStage {
    /// The stage's training mixture (upstream's, with the offline sizes of a small run).
    pub fn mixture(self) -> &'static [&'static str] {
        match self {
            ChatStage::Mid => &[
                "HHRLHF",
                "MCExtra",
                "GSM8K",
                "Identity*2",
                "SimpleSpelling:2000",
                "SpellingBee:1000",
            ],
            ChatStage::Sft => &[
                "HHRLHF",
                "MMLU*3",
                "GSM8K*4",
                "Identity*2",
                "SimpleSpelling:300",
                "SpellingBee:300",
            ],
        }
    }

    /// How conversations are packed into rows: mid crops (every token trained), SFT pads
    /// (assistant tokens only).
    pub fn packing(self) -> PackMode {
        match self {
            ChatStage::Mid => PackMode::Crop,
            ChatStage::Sft => PackMode::Pad,
        }
    }

    /// `(init_lr_frac, warmdown_ratio)`: mid (1.0, 0.2), SFT (0.8, 0.5).
    pub fn lr_schedule(self) -> (f64, f64) {
        match self {
            ChatStage::Mid => (1.0, 0.2),
            ChatStage::Sft => (0.8, 0.5),
        }
    }

    /// The checkpoints it starts from: mid from base; SFT from mid when `base_dir` has them,
    /// else base.
    pub fn default_source(self, base_dir: &Path) -> Source {
        match self {
            ChatStage::Sft if base_dir.join(Source::Mid.dir_name()).is_dir() => Source::Mid,
            ChatStage::Sft | ChatStage::Mid => Source::Base,
        }
    }
}

impl ChatTrainArgs {
    /// Validation tokens by default.
    pub const EVAL_TOKENS: u64 = 1 << 16;
    /// Problems per task of the periodic ChatCORE by default.
    pub const CHATCORE_MAX_PROBLEMS: usize = 24;
    /// Upstream's mixture seed.
    pub const SEED: u64 = 42;

    /// Upstream's defaults for `stage` with the offline mixtures (the source is chosen when
    /// the run starts, see [`ChatStage::default_source`]).
    pub fn new(stage: ChatStage, base_dir: PathBuf, data_dir: PathBuf) -> Self {
        let (init, warmdown) = stage.lr_schedule();
        Self {
            stage,
            base_dir,
            data_dir,
            source: None,
            model_tag: None,
            model_step: None,
            mixture: stage.mixture().iter().map(|s| s.to_string()).collect(),
            val_mixture: VAL_MIXTURE.map(String::from).to_vec(),
            device_batch_size: None,
            max_seq_len: None,
            total_batch_size: None,
            lrs: LrOverrides::default(),
            init_lr_frac: Some(init),
            warmdown_ratio: Some(warmdown),
            num_iterations: None,
            load_optimizer: false,
            eval_every: None,
            eval_tokens: Self::EVAL_TOKENS,
            chatcore_every: None,
            chatcore_max_problems: Self::CHATCORE_MAX_PROBLEMS,
            save_every: None,
            resume_from_step: None,
            stop_after: None,
            seed: Self::SEED,
            compute_dtype: ComputeDtype::F32,
            peak_flops: None,
            progress: false,
            distributed: None,
        }
    }

    /// The stage's defaults filled in where a setting is unset: source, mixture (empty entries
    /// dropped: `--val-mixture ""` means none), LR schedule.
    pub fn resolve(mut self) -> Self {
        self.source = Some(
            self.source
                .unwrap_or(self.stage.default_source(&self.base_dir)),
        );
        self.mixture.retain(|e| !e.is_empty());
        if self.mixture.is_empty() {
            self.mixture = self.stage.mixture().iter().map(|s| s.to_string()).collect();
        }
        self.val_mixture.retain(|e| !e.is_empty());
        let (init, warmdown) = self.stage.lr_schedule();
        self.init_lr_frac = Some(self.init_lr_frac.unwrap_or(init));
        self.warmdown_ratio = Some(self.warmdown_ratio.unwrap_or(warmdown));
        self
    }

    /// The checkpoints this run starts from.
    pub fn source(&self) -> Source {
        self.source
            .unwrap_or(self.stage.default_source(&self.base_dir))
    }

    /// `(init_lr_frac, warmdown_ratio)`, the stage's where unset.
    pub fn lr_schedule(&self) -> (f64, f64) {
        let (init, warmdown) = self.stage.lr_schedule();
        (
            self.init_lr_frac.unwrap_or(init),
            self.warmdown_ratio.unwrap_or(warmdown),
        )
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
    dir: &Path,
    args: &ChatTrainArgs,
) -> Result<Inherited, TrainError> {
    let source = RunMeta::of(meta);
    let cfg = inherited_config(meta, dir, &args.lrs)?;
    cfg.optimizer.validate()?;
    let device_batch_size = args
        .device_batch_size
        .or(source.device_batch_size)
        .unwrap_or(32);
    let max_seq_len = args.max_seq_len.or(source.max_seq_len).unwrap_or(2048);
    let total_batch_size = args
        .total_batch_size
        .or(source.total_batch_size)
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
