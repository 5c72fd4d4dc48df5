//! Pretraining (upstream HEAD `scripts/base_train.py`): the model from the depth dial, the
//! horizon and batch from [`RunPlan`], MuonAdamW with the LR / momentum / weight-decay
//! schedules, gradient accumulation to the total batch, val bits-per-byte every `eval_every`
//! steps, greedy samples from upstream's fixed prompts every `sample_every`, checkpoints every
//! `save_every` and at the end, and `resume_from_step` that continues **bit-identically** (model,
//! optimizer state, loader position and buffer, loop state).
//!
//! The data is a [`TrainingDataset`] checked by [`PretrainingData::prepare`] before the model is
//! built (rules, files, parquet magic bytes and footers); its description, with each shard's
//! rows, is stored in every checkpoint's meta (`dataset`).
//!
//! Each step prints `step | loss (debiased EMA) | lrm | dt | tok/s | MFU | epoch | total time |
//! ETA` under a progress bar and appends a JSON line to `metrics.jsonl` in the checkpoint
//! folder.

use nanochat_model::FusedOps;
use nanochat_model::TrainBackend;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use nanochat_core::checkpoint_manager::checkpoint_dir;
use nanochat_core::{
    CheckpointMeta, CheckpointMetadata, DistributedConfig, Source, TrainingConfiguration,
    TrainingDataset, Validate,
};
use nanochat_data::dataloader::{BestFitLoader, LoaderOptions, LoaderState};
use nanochat_data::pretraining::{PretrainingData, loader_steps};
use nanochat_eval::loss_eval::{BpbSums, evaluate_bpb_sums, reduce_bpb, token_bytes_tensor};
use nanochat_model::checkpoint::load_checkpoint;
use nanochat_model::distributed::{Rank, run_replicated};
use nanochat_model::{ComputeDtype, Gpt};
use nanochat_tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};

use crate::data_parallel::{gather_states, train_step};
use crate::error::TrainError;
use crate::optim::{GroupLrs, MuonAdamW, StepScalars};
pub use crate::run::StepMetrics;
use crate::run::{Bar, Cadence, Run, debiased, load_optimizer_state, smooth_loss};
use crate::schedule::RunPlan;
use crate::stage_meta::{self, RankStates, RunMeta};

/// Upstream's fixed sampling prompts.
pub const SAMPLE_PROMPTS: [&str; 7] = [
    "The capital of France is",
    "The chemical symbol of gold is",
    "If yesterday was Friday, then tomorrow will be",
    "The opposite of hot is",
    "The planets of the solar system are:",
    "My favorite color is",
    "If 5*x + 3 = 13, then x is",
];

/// Inputs of a pretraining run besides the tokenizer and device.
#[derive(Debug, Clone)]
pub struct BaseTrainArgs {
    /// The validated run configuration (CLI flags over a TOML preset).
    pub config: TrainingConfiguration,
    /// `$NANOCHAT_BASE_DIR`: checkpoints go to `<base>/base_checkpoints/<model_tag>/`.
    pub base_dir: PathBuf,
    /// The pretraining data: a folder of parquet shards, the last one validation
    /// ([`nanochat_data::pretraining::local_dataset`]), or the download source read from its
    /// download folder ([`nanochat_data::pretraining::localize`]). Checked before the model is
    /// built.
    pub dataset: TrainingDataset,
    /// Activations/matmul dtype (F32 on CPU, BF16 on GPUs that support it).
    pub compute_dtype: ComputeDtype,
    /// Peak FLOP/s of one device for MFU (`None`: MFU not shown).
    pub peak_flops: Option<f64>,
    /// Stop after this many steps (saving a checkpoint there) without finishing the schedule;
    /// resume later with `resume_from_step`.
    pub stop_after: Option<u64>,
    /// Draw a progress bar (status lines are logged either way).
    pub progress: bool,
    /// Data-parallel layout (`--devices`, `--num-nodes`, …); `None` trains on `device` alone
    /// without the collective engine.
    pub distributed: Option<DistributedConfig>,
    /// Test hook: `(rank, step)` makes that rank fail in the middle of that step, after its
    /// backward pass and before the gradient all-reduce.
    pub fail_at: Option<(usize, u64)>,
}

/// Loop state carried in the checkpoint meta (upstream `loop_state`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    /// Best validation bpb so far (infinite before the first evaluation: `null` in JSON).
    #[serde(deserialize_with = "null_is_infinite")]
    pub min_val_bpb: f64,
    /// EMA of the training loss (not debiased).
    pub smooth_train_loss: f64,
    /// Training seconds, excluding the first 10 steps.
    pub total_training_time: f64,
}

/// JSON has no infinity: `serde_json` writes it as `null`, which reads back as infinity.
fn null_is_infinite<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
}

impl Default for LoopState {
    fn default() -> Self {
        LoopState {
            min_val_bpb: f64::INFINITY,
            smooth_train_loss: 0.0,
            total_training_time: 0.0,
        }
    }
}

impl LoopState {
    /// ` | eta: …m` after `step` of `n` (from the time of the steps after the first 10), or
    /// nothing before there is one.
    fn eta(&self, step: u64, n: u64) -> String {
        let done = step.saturating_sub(10);
        if done == 0 {
            return String::new();
        }
        let minutes = (n - step) as f64 * self.total_training_time / done as f64 / 60.0;
        format!(" | eta: {minutes:.1}m")
    }
}

/// The status line of a step of `n` (upstream's `print0` of each step).
fn status(m: &StepMetrics, n: u64, loader: &LoaderState, loop_state: &LoopState) -> String {
    let (step, p) = (m.step, loader.pos);
    format!(
        "step {step:05}/{n:05} ({:.2}%) | loss: {:.6} | lrm: {:.2} | dt: {:.2}ms | tok/sec: {:.0} | mfu: {} | epoch: {} pq: {} rg: {} | total time: {:.2}m{}",
        100.0 * step as f64 / n as f64,
        m.smooth_loss,
        m.lrm,
        m.dt * 1000.0,
        m.tok_per_sec,
        m.mfu.map_or("-".to_string(), |m| format!("{m:.2}")),
        p.epoch,
        p.pq_idx,
        p.rg_idx,
        loop_state.total_training_time / 60.0,
        loop_state.eta(step, n),
    )
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// Steps completed (the schedule's `num_iterations` when finished).
    pub step: u64,
    /// The plan it ran.
    pub plan: RunPlan,
    /// Per-step metrics of this invocation.
    pub metrics: Vec<StepMetrics>,
    /// Last validation bpb.
    pub val_bpb: Option<f64>,
    /// Loop state at the end.
    pub loop_state: LoopState,
    /// Checkpoint folder.
    pub checkpoint_dir: PathBuf,
}

/// Greedy continuation of `prompt` for `max_tokens` tokens with the KV cache.
pub fn sample_greedy<B: FusedOps>(
    model: &Gpt<B>,
    tokenizer: &Tokenizer,
    prompt: &str,
    max_tokens: usize,
) -> String {
    let device = model.device();
    let ids = tokenizer.encode_with(prompt, Some(tokenizer.bos_token_id()), None);
    let max_len = (ids.len() + max_tokens).min(model.config().sequence_len);
    if ids.len() >= max_len {
        return prompt.to_string();
    }
    let mut cache = model.new_kv_cache(1, max_len);
    let to_tensor = |v: &[u32]| {
        let v: Vec<i64> = v.iter().map(|&x| x as i64).collect();
        let n = v.len();
        Tensor::<B, 2, Int>::from_data(TensorData::new(v, [1, n]), &device)
    };
    let mut logits = model.forward(to_tensor(&ids), Some(&mut cache));
    let mut out = ids.clone();
    while out.len() < max_len {
        let t = logits.dims()[1];
        let next: i64 = logits.narrow(1, t - 1, 1).argmax(2).into_scalar().elem();
        out.push(next as u32);
        if out.len() == max_len {
            break;
        }
        logits = model.forward(to_tensor(&[next as u32]), Some(&mut cache));
    }
    tokenizer.decode(&out[1..]).unwrap_or_default()
}

/// Pretraining's checkpoint meta (upstream's `meta_data` of `base_train.py`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BaseMeta {
    /// Configuration and batch.
    #[serde(flatten)]
    pub run: RunMeta,
    /// The horizon in steps.
    pub num_iterations: u64,
    /// Every rank's loader position.
    #[serde(flatten)]
    pub loaders: RankStates<LoaderState>,
    /// The loop state.
    pub loop_state: LoopState,
    /// The pretraining data, as checked before step 0 (absent in checkpoints written before
    /// it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<TrainingDataset>,
}

/// Runs (or resumes) pretraining: on `device` alone, or on `args.distributed`'s devices with
/// one thread per rank (rank `r` on the `r`-th device after `device`; see
/// [`nanochat_model::distributed::rank_device`]).
pub fn base_train<B: TrainBackend>(
    args: &BaseTrainArgs,
    tokenizer: Arc<Tokenizer>,
    device: &B::Device,
) -> Result<TrainSummary, TrainError> {
    let cfg = &args.config;
    cfg.validate()?;
    let world = args.distributed.as_ref().map_or(1, |d| d.world_size());
    let plan = RunPlan::new(cfg, tokenizer.vocab_size(), world)?;
    let dir = checkpoint_dir(&args.base_dir, Source::Base, &cfg.model_tag());
    let mut data = PretrainingData::prepare(args.dataset.clone())?;
    let opts = LoaderOptions::new(cfg.device_batch_size, cfg.max_seq_len);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    data.dataset.preprocessing = loader_steps(&opts, threads);
    tracing::info!("data {}", data.summary());
    tracing::info!(
        "d{} ({} params, {:.3e} FLOPs/token) | {} steps × {} tokens ({} ranks × {} micro-steps of {}×{}) | lr scale {:.4} | wd {:.6} | {}",
        cfg.depth,
        plan.model.param_counts().total,
        plan.flops_per_token as f64,
        plan.num_iterations,
        plan.total_batch_size,
        world,
        plan.grad_accum_steps,
        cfg.device_batch_size,
        cfg.max_seq_len,
        plan.batch_lr_scale,
        plan.weight_decay,
        dir.display()
    );
    // The model is built (or loaded) once, and every rank gets a copy: same weights, same
    // parameter ids (which order the gradient all-reduce).
    let (model, resume) = match cfg.resume_from_step {
        None => {
            B::seed(device, cfg.seed);
            (Gpt::<B>::init(&plan.model, device)?, None)
        }
        Some(step) => {
            let (model, meta) = load_checkpoint::<B>(&dir, step, device)?;
            if meta.model_config != plan.model {
                return Err(TrainError::Resume(format!(
                    "{}: the checkpoint's model config differs from this run's flags",
                    dir.display()
                )));
            }
            let typed: BaseMeta = stage_meta::read(&meta.metadata, &dir)?;
            warn_if_data_changed(typed.dataset.as_ref(), &data.dataset, &dir);
            (model, Some((meta, typed)))
        }
    };
    run_replicated::<B, _, _, _, _, _>(args.distributed.as_ref(), device, model, |model, rank| {
        train_rank(
            args,
            tokenizer.clone(),
            &plan,
            model,
            resume.as_ref(),
            &data,
            rank,
        )
    })
}

/// The loader's position counts shards by index: resuming on other shards continues, but not
/// where the run left off.
fn warn_if_data_changed(saved: Option<&TrainingDataset>, now: &TrainingDataset, dir: &Path) {
    let Some(saved) = saved else { return };
    if saved.shard_paths() != now.shard_paths() {
        tracing::warn!(
            "{}: the checkpoint was trained on other shards ({}) than this run's ({}); the loader resumes by shard index",
            dir.display(),
            saved.shard_paths().len(),
            now.shard_paths().len()
        );
    }
}

/// The loop of one rank (upstream `base_train.py` from `while True:`).
fn train_rank<B: TrainBackend>(
    args: &BaseTrainArgs,
    tokenizer: Arc<Tokenizer>,
    plan: &RunPlan,
    model: Gpt<B>,
    resume: Option<&(CheckpointMeta, BaseMeta)>,
    data: &PretrainingData,
    rank: Rank<B::InnerBackend>,
) -> Result<TrainSummary, TrainError> {
    let (cfg, device) = (&args.config, &rank.device);
    let dir = checkpoint_dir(&args.base_dir, Source::Base, &cfg.model_tag());
    let lrs = GroupLrs::scaled(&cfg.optimizer, plan.batch_lr_scale);
    let bf16 = args.compute_dtype == ComputeDtype::BF16;
    let mut model = model.with_compute_dtype(args.compute_dtype);
    let mut opt = MuonAdamW::new(&model, &cfg.optimizer, &lrs)?.with_bf16_orthogonalization(bf16);
    let (loader_state, mut loop_state, mut val, start) = match resume {
        None => (None, LoopState::default(), Val::default(), 0),
        Some((meta, typed)) => {
            let step = meta.metadata.step;
            load_optimizer_state(&mut opt, &dir, meta, step, device)?;
            let st = typed.loaders.for_rank(rank.rank, rank.world_size, &dir)?;
            let val = Val {
                bpb: meta.metadata.val_bpb,
                loss: meta.metadata.val_loss,
            };
            (Some(st), typed.loop_state, val, step)
        }
    };
    let mut opts = LoaderOptions::new(cfg.device_batch_size, cfg.max_seq_len);
    (opts.rank, opts.world_size) = (rank.rank, rank.world_size);
    let (tok, st) = (tokenizer.clone(), loader_state.as_ref());
    let mut loader = BestFitLoader::new(data.train.clone(), tok, opts.clone(), st)?;
    let mut loader_state = loader.state();
    let validation =
        Validation::<B::InnerBackend>::new(data.val.clone(), &tokenizer, opts, cfg, &rank);

    let n = plan.num_iterations;
    let cadence = Cadence::new(cfg.save_every, cfg.resume_from_step, args.stop_after);
    let master = rank.is_master();
    let mut run = Run::open(&dir, master, args.progress, Bar::Steps(n), cadence, start)?;
    let mut metrics = Vec::new();
    let mut step = start;
    loop {
        let last = step == n;
        if Cadence::due(cfg.eval_every, step, last) {
            let sums = validation.sums(&model.valid(), &rank)?;
            let bpb = sums.bpb();
            loop_state.min_val_bpb = loop_state.min_val_bpb.min(bpb);
            val = Val {
                bpb: Some(bpb),
                loss: sums.loss(),
            };
            run.validated(step, bpb);
        }
        if master && Cadence::due(cfg.sample_every, step, last) && (last || step > 0) {
            let eval_model = model.valid();
            for prompt in SAMPLE_PROMPTS {
                run.log(sample_greedy(&eval_model, &tokenizer, prompt, 16));
            }
        }
        let (save, stop) = run.at_step(step, last, &rank)?;
        if save {
            let loaders = RankStates(gather_states(&rank, &loader_state)?);
            let meta = base_meta(cfg, plan, step, val, loop_state, loaders, data)?;
            run.save(&model, &opt, meta)?;
        }
        if stop {
            break;
        }

        // One optimizer step: grad_accum micro-batches, gradients averaged over the ranks.
        let t0 = Instant::now();
        let lrm = cfg.schedule.multiplier(step, n);
        let scalars = StepScalars {
            lr_multiplier: lrm,
            muon_momentum: plan.muon_momentum(step),
            muon_weight_decay: plan.muon_weight_decay(step),
        };
        let fail = (args.fail_at == Some((rank.rank, step))).then_some(step);
        let next = || {
            let batch = loader.next_batch()?;
            loader_state = batch.state.clone();
            Ok(batch.to_tensors::<B>(device))
        };
        let accum = plan.grad_accum_steps;
        let (updated, train_loss) =
            train_step(model, &mut opt, next, accum, &scalars, &rank, fail)?;
        model = updated;
        B::sync(device).ok();
        let dt = t0.elapsed().as_secs_f64();
        let smooth = smooth_loss(&mut loop_state.smooth_train_loss, train_loss, step);
        let tok_per_sec = plan.total_batch_size as f64 / dt;
        let world_peak = args.peak_flops.map(|p| p * rank.world_size as f64);
        let mfu = world_peak.map(|p| 100.0 * plan.flops_per_token as f64 * tok_per_sec / p);
        if step > 10 {
            loop_state.total_training_time += dt;
        }
        let epoch = Some(loader_state.pos.epoch);
        let (loss, smooth_loss, val_bpb) = (train_loss, smooth, run.take_val());
        let m = StepMetrics {
            step,
            loss,
            smooth_loss,
            lrm,
            dt,
            tok_per_sec,
            mfu,
            epoch,
            progress: None,
            val_bpb,
        };
        run.log(status(&m, n, &loader_state, &loop_state));
        run.record(&m)?;
        metrics.push(m);
        step += 1;
        run.set_position(step);
    }
    run.finish(step)?;
    Ok(TrainSummary {
        step,
        metrics,
        val_bpb: val.bpb,
        loop_state,
        checkpoint_dir: dir,
        plan: plan.clone(),
    })
}

/// Validation bits per byte: each rank evaluates its stride of the validation shard, and the
/// sums are added up.
struct Validation<'a, B: FusedOps> {
    files: Vec<PathBuf>,
    tokenizer: &'a Arc<Tokenizer>,
    opts: LoaderOptions,
    steps: usize,
    token_bytes: Tensor<B, 1, Int>,
}

impl<'a, B: FusedOps> Validation<'a, B> {
    fn new(
        files: Vec<PathBuf>,
        tokenizer: &'a Arc<Tokenizer>,
        opts: LoaderOptions,
        cfg: &TrainingConfiguration,
        rank: &Rank<B>,
    ) -> Self {
        let per_step = (cfg.device_batch_size * cfg.max_seq_len * rank.world_size) as u64;
        let token_bytes = token_bytes_tensor(&tokenizer.token_bytes(), &rank.device);
        let steps = (cfg.eval_tokens / per_step).max(1) as usize;
        Validation {
            files,
            tokenizer,
            opts,
            steps,
            token_bytes,
        }
    }

    /// The validation sums, added up over the ranks (bits per byte and loss per token).
    fn sums(&self, model: &Gpt<B>, rank: &Rank<B>) -> Result<BpbSums, TrainError> {
        let (files, tok) = (self.files.clone(), self.tokenizer.clone());
        let val = BestFitLoader::new(files, tok, self.opts.clone(), None)?;
        let batches = val.map(|b| b.map(|b| b.to_tensors::<B>(&rank.device)));
        let sums = evaluate_bpb_sums(model, batches, self.steps, &self.token_bytes)?;
        Ok(reduce_bpb(rank, sums)?)
    }
}

/// The last validation: bits per byte and loss (nats per token), saved with each checkpoint.
#[derive(Debug, Clone, Copy, Default)]
struct Val {
    bpb: Option<f64>,
    loss: Option<f64>,
}

/// The checkpoint meta of `step`.
fn base_meta(
    cfg: &TrainingConfiguration,
    plan: &RunPlan,
    step: u64,
    val: Val,
    loop_state: LoopState,
    loaders: RankStates<LoaderState>,
    data: &PretrainingData,
) -> Result<CheckpointMetadata, TrainError> {
    let mut md = CheckpointMetadata::new(step, chrono::Utc::now());
    md.val_bpb = val.bpb;
    md.val_loss = val.loss;
    // The multiplier the schedule gives the step this checkpoint resumes at.
    md.learning_rate = Some(cfg.schedule.multiplier(step, plan.num_iterations));
    md.train_loss = Some(debiased(
        loop_state.smooth_train_loss,
        step.saturating_sub(1),
    ));
    md.timings.total_training_time = loop_state.total_training_time;
    let typed = BaseMeta {
        run: RunMeta {
            user_config: cfg.clone(),
            device_batch_size: Some(cfg.device_batch_size),
            max_seq_len: Some(cfg.max_seq_len),
            total_batch_size: Some(plan.total_batch_size),
        },
        num_iterations: plan.num_iterations,
        loaders,
        loop_state,
        dataset: Some(data.dataset.clone()),
    };
    stage_meta::write(&mut md, &typed)?;
    Ok(md)
}
