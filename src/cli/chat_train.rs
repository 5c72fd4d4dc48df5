//! `nanochat mid-train` and `nanochat chat-sft` (upstream v0 `scripts/mid_train.py`, HEAD
//! `scripts/chat_sft.py`) and `nanochat chat-rl` (`scripts/chat_rl.py`): flags into
//! [`ChatTrainArgs`] / [`ChatRlArgs`], then the library loop; a report section at the end.

use nanochat::model::TrainBackend;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nanochat::core::{DeviceSpec, Source};
use nanochat::model::{BackendTask, ComputeDtype, dispatch};
use nanochat::tokenizer::Tokenizer;
use nanochat::train::chat_rl::RlSummary;
use nanochat::train::chat_train::ChatTrainSummary;
use nanochat::train::{ChatRlArgs, ChatStage, ChatTrainArgs, TrainError, chat_rl, chat_train};
use serde_json::json;

/// Flags of `mid-train` and `chat-sft`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Checkpoints to start from: base for mid-train; for chat-sft mid when present, else base.
    #[arg(short = 'i', long)]
    source: Option<Source>,
    /// Model tag of the source (default: the largest d<N>).
    #[arg(short = 'g', long)]
    model_tag: Option<String>,
    /// Step of the source (default: the last).
    #[arg(short = 's', long)]
    model_step: Option<u64>,
    /// Training mixture, comma-separated: task names (ARC-Easy, MMLU, MCExtra, GSM8K,
    /// SpellingBee, SimpleSpelling, Identity, HHRLHF), `NAME*k` for k epochs, `NAME:n` for n
    /// examples, or paths of .jsonl conversation files. Default: the stage's mixture.
    #[arg(long, value_delimiter = ',')]
    mixture: Option<Vec<String>>,
    /// Validation mixture (test splits), same syntax; empty string for none.
    #[arg(long, value_delimiter = ',')]
    val_mixture: Option<Vec<String>>,
    /// Rows per micro-batch (default: the source's).
    #[arg(long)]
    device_batch_size: Option<usize>,
    /// Sequence length (default: the source's).
    #[arg(long)]
    max_seq_len: Option<usize>,
    /// Tokens per optimizer step (default: the source's).
    #[arg(long)]
    total_batch_size: Option<u64>,
    /// Embedding learning rate (default: the source's).
    #[arg(long)]
    embedding_lr: Option<f64>,
    /// lm_head learning rate (default: the source's).
    #[arg(long)]
    unembedding_lr: Option<f64>,
    /// Muon learning rate (default: the source's).
    #[arg(long)]
    matrix_lr: Option<f64>,
    /// Initial LR multiplier (mid 1.0, SFT 0.8).
    #[arg(long)]
    init_lr_frac: Option<f64>,
    /// Fraction of the run decaying the LR to 0 (mid 0.2, SFT 0.5).
    #[arg(long)]
    warmdown_ratio: Option<f64>,
    /// Stop after this many steps instead of one epoch.
    #[arg(long)]
    num_iterations: Option<u64>,
    /// Start from the source's optimizer state (momentum buffers).
    #[arg(long)]
    load_optimizer: bool,
    /// Validation bpb every N steps (and at the end).
    #[arg(long)]
    eval_every: Option<u64>,
    /// Validation tokens.
    #[arg(long, default_value_t = 1 << 16)]
    eval_tokens: u64,
    /// ChatCORE every N steps (and at the end).
    #[arg(long)]
    chatcore_every: Option<u64>,
    /// Problems per task for that ChatCORE.
    #[arg(long, default_value_t = 24)]
    chatcore_max_problems: usize,
    /// Checkpoint every N steps (the last step is always saved).
    #[arg(long)]
    save_every: Option<u64>,
    /// Resume this stage's run from its checkpoint at this step.
    #[arg(long)]
    resume_from_step: Option<u64>,
    /// Stop (saving a checkpoint) at this step; resume later with --resume-from-step.
    #[arg(long)]
    stop_after: Option<u64>,
    /// Offline data root (default $NANOCHAT_DATA_DIR or ../shared/data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Device: auto, cpu, wgpu[:N], cuda[:N] (with --devices: the first rank's device).
    #[arg(long, default_value = "auto")]
    device: DeviceSpec,
    #[command(flatten)]
    dist: super::distributed::DistArgs,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

impl Args {
    fn to_lib(
        &self,
        stage: ChatStage,
        base: &Path,
        device: DeviceSpec,
    ) -> anyhow::Result<ChatTrainArgs> {
        let data = self
            .data_dir
            .clone()
            .unwrap_or_else(nanochat::core::paths::data_dir);
        let mut a = ChatTrainArgs::new(stage, base.to_path_buf(), data);
        a.source = self.source.unwrap_or(match stage {
            ChatStage::Mid => Source::Base,
            ChatStage::Sft if base.join(Source::Mid.dir_name()).is_dir() => Source::Mid,
            ChatStage::Sft => Source::Base,
        });
        a.model_tag = self.model_tag.clone();
        a.model_step = self.model_step;
        if let Some(m) = &self.mixture {
            a.mixture = m.iter().filter(|s| !s.is_empty()).cloned().collect();
        }
        if let Some(m) = &self.val_mixture {
            a.val_mixture = m.iter().filter(|s| !s.is_empty()).cloned().collect();
        }
        a.device_batch_size = self.device_batch_size;
        a.max_seq_len = self.max_seq_len;
        a.total_batch_size = self.total_batch_size;
        a.embedding_lr = self.embedding_lr;
        a.unembedding_lr = self.unembedding_lr;
        a.matrix_lr = self.matrix_lr;
        if let Some(v) = self.init_lr_frac {
            a.init_lr_frac = v;
        }
        if let Some(v) = self.warmdown_ratio {
            a.warmdown_ratio = v;
        }
        a.num_iterations = self.num_iterations;
        a.load_optimizer = self.load_optimizer;
        a.eval_every = self.eval_every;
        a.eval_tokens = self.eval_tokens;
        a.chatcore_every = self.chatcore_every;
        a.chatcore_max_problems = self.chatcore_max_problems;
        a.save_every = self.save_every;
        a.resume_from_step = self.resume_from_step;
        a.stop_after = self.stop_after;
        a.compute_dtype = super::default_dtype(device);
        a.progress = !self.no_progress;
        a.distributed = self.dist.config()?;
        Ok(a)
    }
}

struct Task(ChatTrainArgs, Arc<Tokenizer>);

impl BackendTask for Task {
    type Output = Result<ChatTrainSummary, TrainError>;
    fn run<B: TrainBackend>(self, device: B::Device) -> Self::Output {
        chat_train::<B>(&self.0, self.1, &device)
    }
}

/// Runs `mid-train` or `chat-sft`.
pub fn run(args: Args, stage: ChatStage, base: &Path) -> anyhow::Result<()> {
    let device = super::resolve_device(args.device);
    let lib = args.to_lib(stage, base, device)?;
    let tokenizer = Arc::new(super::load_tokenizer(base)?);
    println!("{}", serde_json::to_string_pretty(&lib)?);
    let s = dispatch(device, Task(lib.clone(), tokenizer))??;
    println!(
        "Finished at step {} | val bpb {} | {:.2}m | {}",
        s.step,
        s.val_bpb.map_or("-".into(), |b| format!("{b:.6}")),
        s.total_training_time / 60.0,
        s.checkpoint_dir.display()
    );
    let (slug, title) = match stage {
        ChatStage::Mid => ("midtraining", "midtraining"),
        ChatStage::Sft => ("chat-sft", "SFT"),
    };
    let report = nanochat::eval::Report::new(base);
    let plot = super::plot_run(&report, &s.checkpoint_dir, slug, title);
    let mut entries = vec![
        ("source", json!(lib.source.as_str())),
        ("mixture", json!(lib.mixture.join(", "))),
        ("conversations per epoch", json!(s.epoch_len)),
        ("tokens per step", json!(s.total_batch_size)),
        ("steps", json!(s.step)),
        ("init_lr_frac", json!(lib.init_lr_frac)),
        ("final val bpb", json!(s.val_bpb)),
        ("training time (min)", json!(s.total_training_time / 60.0)),
    ];
    if let Some(c) = s.chatcore {
        entries.push(("ChatCORE (subset)", json!(c)));
    }
    if let Some(p) = plot {
        entries.push(("curves", json!(p)));
    }
    report.log(slug, &entries)?;
    Ok(())
}

/// Flags of `chat-rl`.
#[derive(clap::Args, Debug, Clone)]
pub struct RlArgs {
    /// Checkpoints to start from.
    #[arg(short = 'i', long, default_value = "sft")]
    source: Source,
    /// Model tag of the source.
    #[arg(short = 'g', long)]
    model_tag: Option<String>,
    /// Step of the source.
    #[arg(short = 's', long)]
    model_step: Option<u64>,
    /// Epochs over GSM8K train.
    #[arg(long, default_value_t = 1)]
    num_epochs: usize,
    /// Stop after this many steps.
    #[arg(long)]
    num_steps: Option<u64>,
    /// Problems per step.
    #[arg(long, default_value_t = 16)]
    examples_per_step: usize,
    /// Samples per problem.
    #[arg(long, default_value_t = 16)]
    num_samples: usize,
    /// Most new tokens per sample.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Sampling temperature.
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Top-k.
    #[arg(long, default_value_t = 50)]
    top_k: usize,
    /// Rows per forward/backward.
    #[arg(long, default_value_t = 8)]
    device_batch_size: usize,
    /// Initial LR multiplier.
    #[arg(long, default_value_t = 0.05)]
    init_lr_frac: f64,
    /// pass@k on GSM8K test every N steps.
    #[arg(long, default_value_t = 60)]
    eval_every: u64,
    /// Problems in that evaluation.
    #[arg(long, default_value_t = 400)]
    eval_examples: usize,
    /// k of pass@k.
    #[arg(long, default_value_t = 8)]
    eval_k: usize,
    /// Save every N steps.
    #[arg(long, default_value_t = 60)]
    save_every: u64,
    /// Resume at this step.
    #[arg(long)]
    resume_from_step: Option<u64>,
    /// Stop (saving) at this step.
    #[arg(long)]
    stop_after: Option<u64>,
    /// Offline data root.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Device: auto, cpu, wgpu[:N], cuda[:N] (with --devices: the first rank's device).
    #[arg(long, default_value = "auto")]
    device: DeviceSpec,
    #[command(flatten)]
    dist: super::distributed::DistArgs,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

struct RlTask(ChatRlArgs, Arc<Tokenizer>);

impl BackendTask for RlTask {
    type Output = Result<RlSummary, TrainError>;
    fn run<B: TrainBackend>(self, device: B::Device) -> Self::Output {
        chat_rl::<B>(&self.0, self.1, &device)
    }
}

/// Runs `chat-rl`.
pub fn run_rl(a: RlArgs, base: &Path) -> anyhow::Result<()> {
    let device = super::resolve_device(a.device);
    let data = a
        .data_dir
        .clone()
        .unwrap_or_else(nanochat::core::paths::data_dir);
    let mut lib = ChatRlArgs::new(base.to_path_buf(), data);
    lib.source = a.source;
    lib.model_tag = a.model_tag;
    lib.model_step = a.model_step;
    lib.num_epochs = a.num_epochs;
    lib.num_steps = a.num_steps;
    lib.examples_per_step = a.examples_per_step;
    lib.num_samples = a.num_samples;
    lib.max_new_tokens = a.max_new_tokens;
    lib.temperature = a.temperature;
    lib.top_k = a.top_k;
    lib.device_batch_size = a.device_batch_size;
    lib.init_lr_frac = a.init_lr_frac;
    lib.eval_every = a.eval_every;
    lib.eval_examples = a.eval_examples;
    lib.eval_k = a.eval_k;
    lib.save_every = a.save_every;
    lib.resume_from_step = a.resume_from_step;
    lib.stop_after = a.stop_after;
    lib.distributed = a.dist.config()?;
    lib.compute_dtype = match super::default_dtype(device) {
        ComputeDtype::BF16 => ComputeDtype::BF16,
        d => d,
    };
    lib.progress = !a.no_progress;
    let tokenizer = Arc::new(super::load_tokenizer(base)?);
    println!("{}", serde_json::to_string_pretty(&lib)?);
    let s = dispatch(device, RlTask(lib.clone(), tokenizer))??;
    let mean_reward = s.rewards.iter().sum::<f64>() / s.rewards.len().max(1) as f64;
    println!(
        "Finished at step {} | mean reward {mean_reward:.4} | {:.1}s | {}",
        s.step,
        s.seconds,
        s.checkpoint_dir.display()
    );
    let report = nanochat::eval::Report::new(base);
    let mut entries = vec![
        ("source", json!(lib.source.as_str())),
        ("steps", json!(s.step)),
        ("problems per step", json!(lib.examples_per_step)),
        ("samples per problem", json!(lib.num_samples)),
        ("mean reward", json!(mean_reward)),
        ("time (min)", json!(s.seconds / 60.0)),
    ];
    if let Some(e) = s.eval {
        entries.push(("GSM8K pass@1", json!(e.pass1)));
        entries.push(("GSM8K pass@k", json!(e.pass_k)));
    }
    report.log("chat-rl", &entries)?;
    Ok(())
}
