//! Pretraining (upstream HEAD `scripts/base_train.py`): the model from the depth dial, the
//! horizon and batch from [`RunPlan`], MuonAdamW with the LR / momentum / weight-decay
//! schedules, gradient accumulation to the total batch, val bits-per-byte every `eval_every`
//! steps, greedy samples from upstream's fixed prompts every `sample_every`, checkpoints every
//! `save_every` and at the end, and `resume_from_step` that continues **bit-identically** (model,
//! optimizer state, loader position and buffer, loop state).
//!
//! Each step prints `step | loss (debiased EMA) | lrm | dt | tok/s | MFU | epoch | total time |
//! ETA` under a progress bar and appends a JSON line to `metrics.jsonl` in the checkpoint
//! folder.

use nanochat_model::FusedOps;
use nanochat_model::TrainBackend;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use nanochat_core::checkpoint_manager::{checkpoint_dir, optim_file_name};
use nanochat_core::{
    CheckpointMetadata, DistributedConfig, Source, TrainingConfiguration, Validate,
};
use nanochat_data::dataloader::{BestFitLoader, LoaderOptions, LoaderState};
use nanochat_data::dataset::{Split, list_parquet_files, split_files};
use nanochat_eval::loss_eval::{evaluate_bpb_sums, reduce_bpb, token_bytes_tensor};
use nanochat_model::checkpoint::{load_checkpoint, save_checkpoint};
use nanochat_model::distributed::{Rank, run_replicated};
use nanochat_model::weights::to_safetensors;
use nanochat_model::{ComputeDtype, Gpt};
use nanochat_tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};

use crate::data_parallel::{BASE_KEYS, gather_states, loader_state_fields, rank_state, train_step};
use crate::error::TrainError;
use crate::optim::{GroupLrs, MuonAdamW, StepScalars};
use crate::run_files::{
    STEPS_TEMPLATE, load_optimizer_state, meta_field, meta_json, open_metrics, progress_bar,
    truncate_metrics,
};
use crate::schedule::RunPlan;

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
    /// Folder of parquet shards (the last one is validation).
    pub data_dir: PathBuf,
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
    /// Best validation bpb so far.
    pub min_val_bpb: f64,
    /// EMA of the training loss (not debiased).
    pub smooth_train_loss: f64,
    /// Training seconds, excluding the first 10 steps.
    pub total_training_time: f64,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// Step index (the optimizer step just taken).
    pub step: u64,
    /// Raw loss of the last micro-batch.
    pub loss: f64,
    /// Debiased EMA of the loss.
    pub smooth_loss: f64,
    /// LR multiplier.
    pub lrm: f64,
    /// Step time (s).
    pub dt: f64,
    /// Tokens per second.
    pub tok_per_sec: f64,
    /// Model FLOPs utilisation (%), when the device's peak is known.
    pub mfu: Option<f64>,
    /// Data epoch.
    pub epoch: u64,
    /// Validation bpb measured before this step, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_bpb: Option<f64>,
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

fn ema_debiased(smooth: f64, step: u64) -> f64 {
    smooth / (1.0 - 0.9f64.powi(step as i32 + 1))
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

/// Where a run starts: the model (fresh or loaded) and, when resuming, what the checkpoint
/// holds besides it.
struct Start<B: TrainBackend> {
    model: Gpt<B>,
    resume: Option<Resumed>,
}

#[derive(Clone)]
struct Resumed {
    step: u64,
    meta: nanochat_core::CheckpointMeta,
    loop_state: LoopState,
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
    let start = match cfg.resume_from_step {
        None => {
            B::seed(device, cfg.seed);
            Start {
                model: Gpt::<B>::init(&plan.model, device)?,
                resume: None,
            }
        }
        Some(step) => {
            let (model, meta) = load_checkpoint::<B>(&dir, step, device)?;
            if meta.model_config != plan.model {
                return Err(TrainError::Resume(format!(
                    "{}: the checkpoint's model config differs from this run's flags",
                    dir.display()
                )));
            }
            let loop_state = meta_field(&meta, "loop_state", &dir)?;
            Start {
                model,
                resume: Some(Resumed {
                    step,
                    meta,
                    loop_state,
                }),
            }
        }
    };
    let Start { model, resume } = start;
    run_replicated::<B, _, _, _, _, _>(args.distributed.as_ref(), device, model, |model, rank| {
        let start = Start {
            model,
            resume: resume.clone(),
        };
        train_rank(args, tokenizer.clone(), &plan, start, rank)
    })
}

/// The loop of one rank.
fn train_rank<B: TrainBackend>(
    args: &BaseTrainArgs,
    tokenizer: Arc<Tokenizer>,
    plan: &RunPlan,
    start: Start<B>,
    rank: Rank<B::InnerBackend>,
) -> Result<TrainSummary, TrainError> {
    let cfg = &args.config;
    let device = &rank.device;
    let master = rank.is_master();
    let dir = checkpoint_dir(&args.base_dir, Source::Base, &cfg.model_tag());
    let shards = list_parquet_files(&args.data_dir)?;
    if shards.len() < 2 {
        return Err(TrainError::Data(format!(
            "{}: need at least 2 shards (train + the last one for validation), found {}",
            args.data_dir.display(),
            shards.len()
        )));
    }
    let train_files = split_files(&shards, Split::Train).to_vec();
    let val_files = split_files(&shards, Split::Val).to_vec();

    let lrs = GroupLrs::scaled(&cfg.optimizer, plan.batch_lr_scale);
    let bf16 = args.compute_dtype == ComputeDtype::BF16;
    let mut model = start.model.with_compute_dtype(args.compute_dtype);
    let mut opt = MuonAdamW::new(&model, &cfg.optimizer, &lrs)?.with_bf16_orthogonalization(bf16);
    let (loader_state, mut loop_state, mut val_bpb, start_step) = match &start.resume {
        None => {
            let ls = LoopState {
                min_val_bpb: f64::INFINITY,
                smooth_train_loss: 0.0,
                total_training_time: 0.0,
            };
            (None, ls, None, 0)
        }
        Some(r) => {
            load_optimizer_state(&mut opt, &dir, &r.meta, r.step, device)?;
            let st: LoaderState = rank_state(
                &r.meta.metadata.extra,
                BASE_KEYS,
                rank.rank,
                rank.world_size,
                &dir,
            )?;
            if master {
                truncate_metrics(&dir, r.step)?;
                tracing::info!("resuming from step {} of {}", r.step, dir.display());
            }
            (Some(st), r.loop_state, r.meta.metadata.val_bpb, r.step)
        }
    };
    let mut opts = LoaderOptions::new(cfg.device_batch_size, cfg.max_seq_len);
    opts.rank = rank.rank;
    opts.world_size = rank.world_size;
    let mut loader = BestFitLoader::new(
        train_files,
        tokenizer.clone(),
        opts.clone(),
        loader_state.as_ref(),
    )?;
    let mut loader_state = loader.state();
    let token_bytes = token_bytes_tensor::<B::InnerBackend>(&tokenizer.token_bytes(), device);

    let n = plan.num_iterations;
    let pb = progress_bar(args.progress && master, n, STEPS_TEMPLATE);
    pb.set_position(start_step);
    let log = |line: String| {
        if master {
            pb.suspend(|| tracing::info!("{line}"))
        }
    };
    let mut metrics_file = if master {
        Some(open_metrics(&dir)?)
    } else {
        None
    };
    let mut metrics = Vec::new();
    let mut step = start_step;
    let mut pending_val: Option<f64> = None;
    loop {
        let last = step == n;
        if let Some(every) = cfg.eval_every
            && every > 0
            && (last || step % every == 0)
        {
            // Each rank evaluates its stride of the validation shard; the sums are added up.
            let eval_model = model.valid();
            let per_rank = (cfg.device_batch_size * cfg.max_seq_len * rank.world_size) as u64;
            let steps = (cfg.eval_tokens / per_rank).max(1);
            let val = BestFitLoader::new(val_files.clone(), tokenizer.clone(), opts.clone(), None)?;
            let batches = val.map(|b| b.map(|b| b.to_tensors::<B::InnerBackend>(device)));
            let sums = evaluate_bpb_sums(&eval_model, batches, steps as usize, &token_bytes)?;
            let bpb = reduce_bpb(&rank, sums)?.bpb();
            loop_state.min_val_bpb = loop_state.min_val_bpb.min(bpb);
            val_bpb = Some(bpb);
            pending_val = Some(bpb);
            log(format!("Step {step:05} | Validation bpb: {bpb:.6}"));
        }
        if master
            && let Some(every) = cfg.sample_every
            && every > 0
            && (last || (step > 0 && step % every == 0))
        {
            let eval_model = model.valid();
            for prompt in SAMPLE_PROMPTS {
                let text = sample_greedy(&eval_model, &tokenizer, prompt, 16);
                log(text);
            }
        }
        let stop_here = args.stop_after == Some(step);
        let periodic = step > 0
            && Some(step) != cfg.resume_from_step
            && cfg.save_every.is_some_and(|e| e > 0 && step % e == 0);
        if last || periodic || (stop_here && Some(step) != cfg.resume_from_step) {
            let states = gather_states(&rank, &loader_state)?;
            if master {
                save(
                    &dir,
                    &model,
                    &opt,
                    cfg,
                    plan,
                    step,
                    val_bpb,
                    &loop_state,
                    &states,
                )?;
                log(format!("saved step {step} to {}", dir.display()));
            }
        }
        if last || stop_here {
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
        let (updated, train_loss) = train_step(
            model,
            &mut opt,
            next,
            plan.grad_accum_steps,
            &scalars,
            &rank,
            fail,
        )?;
        model = updated;
        B::sync(device).ok();
        let dt = t0.elapsed().as_secs_f64();
        loop_state.smooth_train_loss = 0.9 * loop_state.smooth_train_loss + 0.1 * train_loss;
        let smooth = ema_debiased(loop_state.smooth_train_loss, step);
        let tok_per_sec = plan.total_batch_size as f64 / dt;
        let mfu = args.peak_flops.map(|p| {
            100.0 * plan.flops_per_token as f64 * tok_per_sec / (p * rank.world_size as f64)
        });
        if step > 10 {
            loop_state.total_training_time += dt;
        }
        let done = step.saturating_sub(10);
        let eta = if done > 0 {
            format!(
                " | eta: {:.1}m",
                (n - step) as f64 * loop_state.total_training_time / done as f64 / 60.0
            )
        } else {
            String::new()
        };
        let mfu_s = mfu.map_or("-".to_string(), |m| format!("{m:.2}"));
        let p = loader_state.pos;
        log(format!(
            "step {step:05}/{n:05} ({:.2}%) | loss: {smooth:.6} | lrm: {lrm:.2} | dt: {:.2}ms | tok/sec: {:.0} | mfu: {mfu_s} | epoch: {} pq: {} rg: {} | total time: {:.2}m{eta}",
            100.0 * step as f64 / n as f64,
            dt * 1000.0,
            tok_per_sec,
            p.epoch,
            p.pq_idx,
            p.rg_idx,
            loop_state.total_training_time / 60.0
        ));
        let m = StepMetrics {
            step,
            loss: train_loss,
            smooth_loss: smooth,
            lrm,
            dt,
            tok_per_sec,
            mfu,
            epoch: p.epoch,
            val_bpb: pending_val.take(),
        };
        if let Some((file, path)) = &mut metrics_file {
            let line = serde_json::to_string(&m).expect("metrics serialise");
            writeln!(file, "{line}")
                .map_err(|e| nanochat_core::fs::IoError::new("append", &*path, e))?;
        }
        metrics.push(m);
        step += 1;
        pb.set_position(step);
    }
    // The last evaluation has no step after it to ride on: record it on its own line.
    if let Some(v) = pending_val.take()
        && let Some((file, path)) = &mut metrics_file
    {
        writeln!(file, "{}", serde_json::json!({"step": step, "val_bpb": v}))
            .map_err(|e| nanochat_core::fs::IoError::new("append", &*path, e))?;
    }
    pb.finish_and_clear();
    Ok(TrainSummary {
        step,
        metrics,
        val_bpb,
        loop_state,
        checkpoint_dir: dir,
        plan: plan.clone(),
    })
}

#[allow(clippy::too_many_arguments)]
fn save<B: TrainBackend>(
    dir: &std::path::Path,
    model: &Gpt<B>,
    opt: &MuonAdamW<B::InnerBackend>,
    cfg: &TrainingConfiguration,
    plan: &RunPlan,
    step: u64,
    val_bpb: Option<f64>,
    loop_state: &LoopState,
    loader_states: &[LoaderState],
) -> Result<(), TrainError> {
    let mut meta = CheckpointMetadata::new(step, chrono::Utc::now());
    meta.val_bpb = val_bpb;
    meta.train_loss = Some(ema_debiased(
        loop_state.smooth_train_loss,
        step.saturating_sub(1),
    ));
    meta.timings.total_training_time = loop_state.total_training_time;
    meta.extra.insert("user_config".into(), meta_json(cfg));
    meta.extra
        .insert("device_batch_size".into(), cfg.device_batch_size.into());
    meta.extra
        .insert("max_seq_len".into(), cfg.max_seq_len.into());
    meta.extra
        .insert("total_batch_size".into(), plan.total_batch_size.into());
    meta.extra
        .insert("num_iterations".into(), plan.num_iterations.into());
    for (key, value) in loader_state_fields(BASE_KEYS, loader_states) {
        meta.extra.insert(key, value);
    }
    meta.extra
        .insert("loop_state".into(), meta_json(loop_state));
    let optim = to_safetensors(&opt.state_tensors(), None)?;
    save_checkpoint(dir, model, meta, &[(optim_file_name(step, 0), optim)])?;
    Ok(())
}
