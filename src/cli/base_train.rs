//! `nanochat base-train`: pretraining (upstream `scripts/base_train.py`, same flag names).
//! Flags override a TOML/JSON preset given with `--config`; the result is validated as a
//! TrainingConfiguration before anything runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use nanochat::core::{DeviceSpec, TrainingConfiguration};
use nanochat::data::pretraining::local_dataset;
use nanochat::model::{BackendTask, dispatch};
use nanochat::tokenizer::Tokenizer;

use super::run_args::RunArgs;
use nanochat::model::backend::configure_kernel_cache;
use nanochat::model::kernel_cache::{self, Configured};
use nanochat::train::peak_flops::peak_flops;
use nanochat::train::warmup::{WarmupPhase, warmup};
use nanochat::train::{BaseTrainArgs, TrainSummary, base_train};

/// Flags of `base-train` (unset flags keep the preset's or upstream's default).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// TOML or JSON preset (a TrainingConfiguration); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// wandb-style run name ("dummy" = no external logging; metrics.jsonl is always written).
    #[arg(long)]
    run: Option<String>,
    #[command(flatten)]
    run_on: RunArgs,
    /// Accelerator name for the MFU peak-FLOPs table (e.g. "H100 SXM"); detected with
    /// nvidia-smi on CUDA when unset.
    #[arg(long)]
    device_name: Option<String>,
    /// Depth of the Transformer (the one dial: width, heads, horizon, batch follow).
    #[arg(long)]
    depth: Option<usize>,
    /// model_dim = depth × aspect_ratio (rounded up to head_dim).
    #[arg(long)]
    aspect_ratio: Option<usize>,
    /// Target head dimension.
    #[arg(long)]
    head_dim: Option<usize>,
    /// Context length.
    #[arg(long)]
    max_seq_len: Option<usize>,
    /// Sliding-window pattern tiled over layers (L = full, S = quarter context), e.g. SSSL.
    #[arg(long)]
    window_pattern: Option<String>,
    /// Architecture: `current` (upstream HEAD) or `v0` (upstream's original one, full
    /// attention, no value embeddings / smear / backout / lambdas), which transformers'
    /// built-in NanoChatForCausalLM loads without remote code (`nanochat export`).
    #[arg(long)]
    arch: Option<nanochat::core::Architecture>,
    /// Explicit number of optimizer steps (-1 = derive from FLOPs or data:param ratio).
    #[arg(long, allow_hyphen_values = true)]
    num_iterations: Option<i64>,
    /// Derive the steps from a FLOPs budget (-1 = off).
    #[arg(long, allow_hyphen_values = true)]
    target_flops: Option<f64>,
    /// Derive the steps from tokens = ratio × scaling params (default 12; -1 = off).
    #[arg(long, allow_hyphen_values = true)]
    target_param_data_ratio: Option<f64>,
    /// Rows per micro-batch (lower it if you run out of memory).
    #[arg(long)]
    device_batch_size: Option<usize>,
    /// Tokens per optimizer step (-1 = automatic from the depth).
    #[arg(long, allow_hyphen_values = true)]
    total_batch_size: Option<i64>,
    /// AdamW lr of the token embedding.
    #[arg(long)]
    embedding_lr: Option<f64>,
    /// AdamW lr of lm_head.
    #[arg(long)]
    unembedding_lr: Option<f64>,
    /// Cautious weight decay of Muon (scaled with batch and horizon).
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Muon lr of the block matrices.
    #[arg(long)]
    matrix_lr: Option<f64>,
    /// AdamW lr of the per-layer scalars.
    #[arg(long)]
    scalar_lr: Option<f64>,
    /// Linear LR warmup steps.
    #[arg(long)]
    warmup_steps: Option<u64>,
    /// Fraction of steps in the final linear warmdown.
    #[arg(long)]
    warmdown_ratio: Option<f64>,
    /// LR multiplier at the end of the warmdown.
    #[arg(long)]
    final_lr_frac: Option<f64>,
    /// Resume from this step's checkpoint (bit-identical continuation).
    #[arg(long)]
    resume_from_step: Option<u64>,
    /// Validation bpb every N steps (-1 = only at the end… of nothing: off).
    #[arg(long, allow_hyphen_values = true)]
    eval_every: Option<i64>,
    /// Tokens per validation.
    #[arg(long, value_parser = super::parse_count)]
    eval_tokens: Option<u64>,
    /// Greedy samples of the fixed prompts every N steps (-1 = off).
    #[arg(long, allow_hyphen_values = true)]
    sample_every: Option<i64>,
    /// Checkpoint every N steps (-1 = only at the end).
    #[arg(long, allow_hyphen_values = true)]
    save_every: Option<i64>,
    /// Checkpoint folder name (default d<depth>).
    #[arg(long)]
    model_tag: Option<String>,
    /// Seed of the initialisation.
    #[arg(long)]
    seed: Option<u64>,
    /// Stop after this step (with a checkpoint) without finishing the schedule.
    #[arg(long)]
    stop_after: Option<u64>,
    /// Fill the GPU's kernel caches for this run's shapes and exit: one optimizer step on
    /// random tokens, a validation forward and the samples, nothing trained or saved (the
    /// minutes a cold cache costs, spent and shown ahead of the run; the CPU has no cache).
    #[arg(long)]
    warmup_only: bool,
}

fn opt_u64(v: i64) -> Option<u64> {
    (v >= 0).then_some(v as u64)
}

fn opt_f64(v: f64) -> Option<f64> {
    (v >= 0.0).then_some(v)
}

impl Args {
    /// The preset (or defaults) with the flags applied.
    fn configuration(&self) -> anyhow::Result<TrainingConfiguration> {
        let mut c: TrainingConfiguration = match &self.config {
            Some(p) => nanochat::core::config_file::load(p)?,
            None => TrainingConfiguration::default(),
        };
        macro_rules! set {
            ($($flag:ident => $field:expr),* $(,)?) => {$(
                if let Some(v) = self.$flag.clone() { $field = v; }
            )*};
        }
        set!(run => c.run, depth => c.depth, aspect_ratio => c.aspect_ratio,
             head_dim => c.head_dim, max_seq_len => c.max_seq_len,
             window_pattern => c.window_pattern, arch => c.arch, device_batch_size => c.device_batch_size,
             embedding_lr => c.optimizer.embedding_lr, unembedding_lr => c.optimizer.unembedding_lr,
             weight_decay => c.optimizer.weight_decay, matrix_lr => c.optimizer.matrix_lr,
             scalar_lr => c.optimizer.scalar_lr, warmup_steps => c.schedule.warmup_steps,
             warmdown_ratio => c.schedule.warmdown_ratio, final_lr_frac => c.schedule.final_lr_frac,
             eval_tokens => c.eval_tokens, seed => c.seed);
        if let (nanochat::core::Architecture::V0, Some(p)) = (c.arch, &self.window_pattern)
            && p != "L"
        {
            anyhow::bail!(
                "--window-pattern {p} with --arch v0: the original architecture attends over the \
                 whole context in every layer (pattern L)"
            );
        }
        if let Some(v) = self.num_iterations {
            c.num_iterations = opt_u64(v);
        }
        if let Some(v) = self.target_flops {
            c.target_flops = opt_f64(v);
        }
        if let Some(v) = self.target_param_data_ratio {
            c.target_param_data_ratio = opt_f64(v);
        }
        if let Some(v) = self.total_batch_size {
            c.total_batch_size = opt_u64(v);
        }
        if let Some(v) = self.eval_every {
            c.eval_every = opt_u64(v);
        }
        if let Some(v) = self.sample_every {
            c.sample_every = opt_u64(v);
        }
        if let Some(v) = self.save_every {
            c.save_every = opt_u64(v);
        }
        if self.resume_from_step.is_some() {
            c.resume_from_step = self.resume_from_step;
        }
        if self.model_tag.is_some() {
            c.model_tag = self.model_tag.clone();
        }
        // A warm-up the user did not ask for never outlasts the steps they did ask for.
        if let (None, Some(n)) = (self.warmup_steps, c.num_iterations)
            && c.schedule.warmup_steps > n
        {
            tracing::info!(
                "warmup_steps {} > num_iterations {n}: warming up over {n} steps",
                c.schedule.warmup_steps
            );
            c.schedule.warmup_steps = n;
        }
        nanochat::core::Validate::validate(&c)?;
        Ok(c)
    }
}

/// The GPU's name from nvidia-smi on CUDA (None elsewhere or when absent).
pub(super) fn detected_gpu_name(device: DeviceSpec) -> Option<String> {
    match device {
        DeviceSpec::Cuda(_) => nvidia_name(),
        _ => None,
    }
}

/// The GPU's name from nvidia-smi (None when absent).
fn nvidia_name() -> Option<String> {
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader"])
        .output()
        .ok()?;
    String::from_utf8(out.stdout)
        .ok()?
        .lines()
        .next()
        .map(str::to_string)
}

struct Task(BaseTrainArgs, Arc<Tokenizer>);

impl BackendTask for Task {
    type Output = Result<TrainSummary, nanochat::train::TrainError>;
    fn run<B: nanochat::model::TrainBackend>(self, device: B::Device) -> Self::Output {
        base_train::<B>(&self.0, self.1, &device)
    }
}

struct WarmupTask {
    config: TrainingConfiguration,
    tokenizer: Tokenizer,
    compute_dtype: nanochat::model::ComputeDtype,
    cache: PathBuf,
}

impl BackendTask for WarmupTask {
    type Output = Result<Vec<WarmupPhase>, nanochat::train::TrainError>;
    fn run<B: nanochat::model::TrainBackend>(self, device: B::Device) -> Self::Output {
        let tuned = || Some(kernel_cache::tuned_keys(&self.cache));
        let (config, tokenizer) = (&self.config, &self.tokenizer);
        warmup::<B>(
            config,
            tokenizer,
            self.compute_dtype,
            &device,
            &tuned,
            |p| {
                println!(
                    "warm-up: {:<14} {:>8.1} s  {} kernels tuned",
                    p.name,
                    p.seconds,
                    p.tuned.unwrap_or(0)
                );
            },
        )
    }
}

/// `--warmup-only`: the run's first step, validation and samples on `device`, with the
/// kernels each tuned, then where the cache is.
fn warmup_only(args: &Args, config: TrainingConfiguration, base: &Path) -> anyhow::Result<()> {
    let device = args.run_on.device();
    let cache = match configure_kernel_cache(device) {
        Configured::At(dir) | Configured::Kept(dir) => dir,
        Configured::NoGpuBackend => {
            println!(
                "base-train --warmup-only: nothing to warm up on {device} (only the GPU \
                 backends tune and compile kernels; the CPU's are built in)"
            );
            return Ok(());
        }
    };
    let task = WarmupTask {
        config,
        tokenizer: super::load_tokenizer(base)?,
        compute_dtype: args.run_on.compute_dtype(device),
        cache: cache.clone(),
    };
    let phases = dispatch(device, task)??;
    let seconds: f64 = phases.iter().map(|p| p.seconds).sum();
    let tuned: u64 = phases.iter().filter_map(|p| p.tuned).sum();
    println!(
        "warm-up done in {seconds:.1} s: {tuned} kernels tuned now, {} in {} (base-train with \
         the same flags starts from them)",
        kernel_cache::tuned_keys(&cache),
        cache.display()
    );
    Ok(())
}

pub fn run(args: Args, base: &Path) -> anyhow::Result<()> {
    let config = args.configuration()?;
    if args.warmup_only {
        return warmup_only(&args, config, base);
    }
    let device = args.run_on.device();
    let compute_dtype = args.run_on.compute_dtype(device);
    let name = args
        .device_name
        .clone()
        .or_else(|| detected_gpu_name(device));
    let peak = name.as_deref().and_then(peak_flops);
    let tokenizer = super::load_tokenizer(base)?;
    tracing::info!(
        "device {device} ({}), compute {compute_dtype:?}, peak FLOP/s {}",
        name.as_deref().unwrap_or("unnamed"),
        peak.map_or("unknown (MFU not shown)".into(), |p| format!("{p:.3e}"))
    );
    let train_args = BaseTrainArgs {
        config,
        base_dir: base.to_path_buf(),
        dataset: local_dataset(&args.run_on.pretrain_data_dir())?,
        compute_dtype,
        peak_flops: peak,
        stop_after: args.stop_after,
        progress: args.run_on.progress(),
        distributed: args.run_on.distributed()?,
        fail_at: None,
    };
    let summary = dispatch(device, Task(train_args, Arc::new(tokenizer)))??;
    println!(
        "Finished at step {} of {} | val bpb {} (min {:.6}) | total training time {:.2}m | {}",
        summary.step,
        summary.plan.num_iterations,
        summary.val_bpb.map_or("-".into(), |b| format!("{b:.6}")),
        summary.loop_state.min_val_bpb,
        summary.loop_state.total_training_time / 60.0,
        summary.checkpoint_dir.display()
    );
    if !args.run_on.writes_report() {
        return Ok(());
    }
    let report = nanochat::eval::Report::new(base);
    let plot = super::plot_run(
        &report,
        &summary.checkpoint_dir,
        "base-model-training",
        "pretraining",
    );
    let p = &summary.plan;
    let mut entries = vec![
        ("depth", serde_json::json!(p.model.n_layer)),
        ("parameters", p.model.param_counts().total.into()),
        (
            "FLOPs per token",
            serde_json::json!(p.flops_per_token as f64),
        ),
        ("iterations", p.num_iterations.into()),
        ("tokens per step", p.total_batch_size.into()),
        (
            "training tokens",
            (p.num_iterations * p.total_batch_size).into(),
        ),
        ("final val bpb", serde_json::json!(summary.val_bpb)),
        ("min val bpb", summary.loop_state.min_val_bpb.into()),
        (
            "training time (min)",
            (summary.loop_state.total_training_time / 60.0).into(),
        ),
    ];
    if let Some(p) = plot {
        entries.push(("curves", p.into()));
    }
    report.log("base-model-training", &entries)?;
    Ok(())
}
