//! Midtraining and supervised fine-tuning on conversation mixtures (upstream v0
//! `scripts/mid_train.py` and HEAD `scripts/chat_sft.py`).
//!
//! Both stages load a checkpoint (mid: base; SFT: mid, else base), **inherit** its sequence
//! length, device batch, total batch and learning rates from the checkpoint's meta (flags
//! override), and train one epoch of a [`TaskMixture`](nanochat_data::TaskMixture) packed by the [`ChatLoader`]:
//! - **mid**: crop packing, all tokens trained; LR multiplier 1 for 80 % of the epoch, then
//!   linear to 0; writes `mid_checkpoints/<tag>/`;
//! - **SFT**: pad packing with assistant-only targets; LR multiplier `init_lr_frac` (0.8),
//!   constant, then linear to 0 over the last `warmdown_ratio` (0.5); optionally starts from
//!   the source's optimizer state; periodic validation bpb and ChatCORE; writes
//!   `chatsft_checkpoints/<tag>/`.
//!
//! The loss of one optimizer step is **token-weighted** across its micro-batches: every
//! micro-batch's summed loss is divided by the number of trained targets in the whole step,
//! so gradient accumulation gives the same gradient as one big batch. Muon momentum ramps
//! 0.85 → 0.95 over 300 steps; weight decay is 0. `--resume-from-step` restores the model,
//! the optimizer, the loader (exactly) and the loop state.

use nanochat_model::TrainBackend;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::ElementConversion;
use nanochat_core::checkpoint_manager::{checkpoint_dir, optim_file_name};
use nanochat_core::{CheckpointMetadata, OptimizerConfig};
use nanochat_data::chat_loader::{ChatBatch, ChatLoader, ChatLoaderState, PackMode};
use nanochat_data::tasks::{TaskSplit, build_mixture};
use nanochat_eval::chat_eval::{ChatEvalOptions, load_tasks, run_chat_eval};
use nanochat_eval::loss_eval::{evaluate_bpb_sums, reduce_bpb, token_bytes_tensor};
use nanochat_infer::Engine;
use nanochat_model::checkpoint::{load_model, save_checkpoint};
use nanochat_model::distributed::{Rank, run_replicated};
use nanochat_model::weights::to_safetensors;
use nanochat_model::{ComputeDtype, Gpt, Reduction};
use nanochat_tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};

pub use crate::chat_args::{ChatStage, ChatTrainArgs, lr_multiplier};
use crate::chat_args::{Inherited, inherit};
use crate::data_parallel::{CHAT_KEYS, gather_states, loader_state_fields, rank_state};
use crate::error::TrainError;
use crate::optim::{GroupLrs, MuonAdamW, StepScalars};
use crate::run_files::{
    load_optimizer_state, meta_field, meta_json, open_metrics, progress_bar, resume_or_source,
    truncate_metrics,
};
use crate::schedule::B_REF;

/// Loop state carried in the meta.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct ChatLoopState {
    /// EMA of the training loss.
    pub smooth_train_loss: f64,
    /// Training seconds.
    pub total_training_time: f64,
    /// Last validation bpb.
    pub val_bpb: Option<f64>,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatStepMetrics {
    /// Step.
    pub step: u64,
    /// Token-weighted loss of the step.
    pub loss: f64,
    /// Debiased EMA.
    pub smooth_loss: f64,
    /// LR multiplier.
    pub lrm: f64,
    /// Seconds.
    pub dt: f64,
    /// Trained targets per second.
    pub tok_per_sec: f64,
    /// Epoch progress.
    pub progress: f64,
    /// Validation bpb measured before this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_bpb: Option<f64>,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct ChatTrainSummary {
    /// Steps done.
    pub step: u64,
    /// Checkpoint folder.
    pub checkpoint_dir: PathBuf,
    /// Last validation bpb.
    pub val_bpb: Option<f64>,
    /// Last ChatCORE, if measured.
    pub chatcore: Option<f64>,
    /// This invocation's metrics.
    pub metrics: Vec<ChatStepMetrics>,
    /// Conversations per epoch.
    pub epoch_len: usize,
    /// Tokens per step.
    pub total_batch_size: u64,
    /// Training seconds.
    pub total_training_time: f64,
}

/// The loss and gradient of one optimizer step over `micro`-batches, every trained target
/// weighted equally: each micro-batch contributes `Σ CE / N` with `N` the trained targets of
/// the whole step, so accumulating gives exactly the gradient of one batch holding them all.
pub fn token_weighted_grads<B: TrainBackend>(
    model: &Gpt<B>,
    micro: &[ChatBatch],
    device: &B::Device,
) -> (f64, GradientsParams) {
    let n_valid: usize = micro.iter().map(ChatBatch::valid_targets).sum();
    token_weighted_grads_over(model, micro, n_valid, device)
}

/// [`token_weighted_grads`] with the divisor given: with data parallelism, the trained
/// targets of every rank's micro-batches (the per-rank gradients are then summed).
pub fn token_weighted_grads_over<B: TrainBackend>(
    model: &Gpt<B>,
    micro: &[ChatBatch],
    n_valid: usize,
    device: &B::Device,
) -> (f64, GradientsParams) {
    let mut accum = GradientsAccumulator::<Gpt<B>>::new();
    let mut loss_sum = 0.0;
    for mb in micro {
        let (x, y) = mb.to_tensors::<B>(device);
        let loss = model.forward_loss(x, y, Reduction::None).sum() / n_valid.max(1) as f64;
        loss_sum += loss.clone().into_scalar().elem::<f64>();
        let grads = loss.backward();
        accum.accumulate(model, GradientsParams::from_grads(grads, model));
    }
    (loss_sum, accum.grads())
}

/// Runs (or resumes) midtraining or SFT.
pub fn chat_train<B: TrainBackend>(
    args: &ChatTrainArgs,
    tokenizer: Arc<Tokenizer>,
    device: &B::Device,
) -> Result<ChatTrainSummary, TrainError> {
    // The source checkpoint (for config inheritance, and the weights of a fresh run).
    let (src_model, src_meta, src_dir) = load_model::<B>(
        &args.base_dir,
        args.source,
        args.model_tag.as_deref(),
        args.model_step,
        device,
    )?;
    let tag = src_dir
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "d0".into());
    let inh = inherit(&src_meta.metadata, args)?;
    let (b, t) = (inh.device_batch_size, inh.max_seq_len);
    if t > src_meta.model_config.sequence_len {
        return Err(TrainError::Data(format!(
            "max_seq_len {t} exceeds the model's sequence_len {}",
            src_meta.model_config.sequence_len
        )));
    }
    let world = args.distributed.as_ref().map_or(1, |d| d.world_size());
    let grad_accum =
        nanochat_core::training_config::grad_accum_steps(inh.total_batch_size, b, t, world)?;
    let dir = checkpoint_dir(&args.base_dir, args.stage.source(), &tag);
    let mixture = build_mixture(&args.mixture, TaskSplit::Train, &args.data_dir, args.seed)?;
    tracing::info!(
        "{:?} from {} step {} | mixture: {} = {} conversations | {} tok/step ({} ranks × {} × {}×{}) → {}",
        args.stage,
        src_dir.display(),
        src_meta.metadata.step,
        mixture.describe(),
        mixture.len(),
        inh.total_batch_size,
        world,
        grad_accum,
        b,
        t,
        dir.display()
    );
    let batch_lr_scale = (inh.total_batch_size as f64 / B_REF as f64).sqrt();
    let lrs = GroupLrs::scaled(&inh.cfg.optimizer, batch_lr_scale);
    let optimizer: OptimizerConfig = inh.cfg.optimizer.clone();

    // The model is loaded once; every rank gets a copy (same weights, same parameter ids).
    let (model, resume_meta) = resume_or_source(src_model, &dir, args.resume_from_step, device)?;
    let run = ChatRun {
        args,
        tokenizer,
        inh,
        grad_accum,
        dir,
        tag,
        mixture,
        lrs,
        optimizer,
        src_meta,
        src_dir,
        resume_meta,
    };
    run_replicated::<B, _, _, _, _, _>(args.distributed.as_ref(), device, model, |model, rank| {
        chat_rank(&run, model, rank)
    })
}

/// What every rank of a mid/SFT run shares.
struct ChatRun<'a> {
    args: &'a ChatTrainArgs,
    tokenizer: Arc<Tokenizer>,
    inh: Inherited,
    grad_accum: u64,
    dir: PathBuf,
    tag: String,
    mixture: nanochat_data::TaskMixture,
    lrs: GroupLrs,
    optimizer: OptimizerConfig,
    src_meta: nanochat_core::CheckpointMeta,
    src_dir: PathBuf,
    resume_meta: Option<nanochat_core::CheckpointMeta>,
}

/// The loop of one rank.
fn chat_rank<B: TrainBackend>(
    run: &ChatRun<'_>,
    model: Gpt<B>,
    rank: Rank<B::InnerBackend>,
) -> Result<ChatTrainSummary, TrainError> {
    let ChatRun {
        args,
        inh,
        grad_accum,
        dir,
        tag,
        lrs,
        optimizer,
        src_meta,
        src_dir,
        ..
    } = run;
    let (args, grad_accum) = (*args, *grad_accum);
    let tokenizer = run.tokenizer.clone();
    let mixture = run.mixture.clone();
    let device = &rank.device;
    let master = rank.is_master();
    let (b, t) = (inh.device_batch_size, inh.max_seq_len);
    let mut opt = MuonAdamW::new(&model, optimizer, lrs)?;
    let (loader_state, mut ls, start) = match &run.resume_meta {
        None => {
            if args.load_optimizer {
                let step = src_meta.metadata.step;
                load_optimizer_state(&mut opt, src_dir, src_meta, step, device)?;
            }
            (None, ChatLoopState::default(), 0)
        }
        Some(meta) => {
            let step = meta.metadata.step;
            load_optimizer_state(&mut opt, dir, meta, step, device)?;
            let extra = &meta.metadata.extra;
            let st: ChatLoaderState =
                rank_state(extra, CHAT_KEYS, rank.rank, rank.world_size, dir)?;
            let ls: ChatLoopState = meta_field(meta, "loop_state", dir)?;
            if master {
                truncate_metrics(dir, step)?;
            }
            (Some(st), ls, step)
        }
    };
    let mut model = model;
    model = model.with_compute_dtype(args.compute_dtype);
    opt = opt.with_bf16_orthogonalization(args.compute_dtype == ComputeDtype::BF16);
    let mode = match args.stage {
        ChatStage::Mid => PackMode::Crop,
        ChatStage::Sft => PackMode::Pad,
    };
    let epoch_len = mixture.len();
    let mut loader = ChatLoader::for_rank(
        mixture,
        tokenizer.clone(),
        b,
        t,
        mode,
        loader_state.as_ref(),
        rank.rank,
        rank.world_size,
    )?;
    let val_mixture = if args.val_mixture.is_empty() {
        None
    } else {
        Some(build_mixture(
            &args.val_mixture,
            TaskSplit::Test,
            &args.data_dir,
            args.seed,
        )?)
    };
    let inner = device.clone();
    let world = rank.world_size;
    let token_bytes = token_bytes_tensor::<B::InnerBackend>(&tokenizer.token_bytes(), &inner);

    // One epoch unless capped: the horizon in steps is known only approximately (packing),
    // so the schedule runs on epoch progress; with --num-iterations on step / n.
    let progress_of = |step: u64, loader: &ChatLoader| match args.num_iterations {
        Some(n) => step as f64 / n.max(1) as f64,
        None => loader.progress(),
    };
    let pb = progress_bar(
        args.progress && master,
        1000,
        "{bar:40} {percent}% of the epoch [{elapsed_precise} < {eta_precise}]",
    );
    let log = |line: String| {
        if master {
            pb.suspend(|| tracing::info!("{line}"))
        }
    };
    let mut metrics_file = if master {
        Some(open_metrics(dir)?)
    } else {
        None
    };
    // The periodic ChatCORE's tasks, read once.
    let chatcore_tasks = match args.chatcore_every {
        Some(every) if every > 0 && master => {
            let opts = ChatEvalOptions {
                max_problems: Some(args.chatcore_max_problems),
                max_new_tokens: 128,
                ..ChatEvalOptions::default()
            };
            let tasks = load_tasks(&args.data_dir, &opts)?;
            Some((opts, tasks))
        }
        _ => None,
    };
    let mut metrics = Vec::new();
    let mut chatcore = None;
    let mut step = start;
    let mut pending_val = None;
    loop {
        // The ranks agree on the schedule: mean epoch progress, and stop when any rank has
        // finished its share (upstream's all_reduce MAX of `last_step`).
        let local = progress_of(step, &loader);
        let synced = rank.sum_f64(&[local, f64::from(u8::from(local >= 1.0))])?;
        let progress = synced[0] / world as f64;
        let last = synced[1] > 0.0 || args.num_iterations == Some(step);
        if let Some(vm) = &val_mixture {
            let every = args.eval_every.unwrap_or(0);
            if last || (every > 0 && step % every == 0) {
                let eval_model = model.valid();
                let steps = (args.eval_tokens / (b * t * world) as u64).max(1) as usize;
                let mut vl = ChatLoader::for_rank(
                    vm.clone(),
                    tokenizer.clone(),
                    b,
                    t,
                    PackMode::Pad,
                    None,
                    rank.rank,
                    world,
                )?;
                let batches = (0..steps).map(|_| {
                    vl.next_batch()
                        .map(|bt| bt.to_tensors::<B::InnerBackend>(&inner))
                });
                let sums = evaluate_bpb_sums(&eval_model, batches, steps, &token_bytes)?;
                let bpb = reduce_bpb(&rank, sums)?.bpb();
                if bpb.is_finite() {
                    ls.val_bpb = Some(bpb);
                    pending_val = Some(bpb);
                    log(format!("Step {step:05} | Validation bpb: {bpb:.6}"));
                } else {
                    log(format!(
                        "Step {step:05} | Validation bpb undefined: no assistant tokens within {t} tokens of the validation rows"
                    ));
                }
            }
        }
        if master
            && let Some(every) = args.chatcore_every
            && every > 0
            && (last || (step > 0 && step % every == 0))
        {
            let (opts, tasks) = chatcore_tasks
                .as_ref()
                .expect("loaded when chatcore_every is set");
            let engine = Engine::new(model.valid(), tokenizer.clone())?;
            let (_, res) = run_chat_eval(
                &engine,
                tasks,
                opts,
                &format!("{}/{tag}@{step}", args.stage.source().as_str()),
            )?;
            chatcore = res.aggregate;
            log(format!(
                "Step {step:05} | {}: {:.4}",
                res.metric,
                res.aggregate.unwrap_or(0.0)
            ));
        }
        let stop_here = args.stop_after == Some(step);
        let periodic = step > 0
            && Some(step) != args.resume_from_step
            && args.save_every.is_some_and(|e| e > 0 && step % e == 0);
        if last || periodic || (stop_here && Some(step) != args.resume_from_step) {
            let states = gather_states(&rank, &loader.state())?;
            if master {
                save_chat(
                    dir,
                    &model,
                    &opt,
                    args,
                    inh,
                    &states,
                    &ls,
                    step,
                    &src_meta.metadata,
                )?;
                log(format!("saved step {step} to {}", dir.display()));
            }
        }
        if last || stop_here {
            break;
        }

        // One optimizer step: gather the micro-batches, weight every trained token equally.
        let t0 = Instant::now();
        let mut micro = Vec::with_capacity(grad_accum as usize);
        for _ in 0..grad_accum {
            micro.push(loader.next_batch()?);
        }
        // Every trained target of every rank weighs the same: divide by the global count, then
        // sum the ranks' gradients.
        let local_valid: usize = micro.iter().map(|m| m.valid_targets()).sum();
        let n_valid = rank.sum_f64(&[local_valid as f64])?[0].round() as usize;
        let (local_loss, grads) = token_weighted_grads_over(&model, &micro, n_valid, device);
        let grads = rank.sum_grads(&model, grads)?;
        // The step's loss and the epoch progress after it, summed over the ranks in one go.
        let after = rank.sum_f64(&[local_loss, progress_of(step + 1, &loader)])?;
        let (loss_sum, p) = (after[0], after[1] / world as f64);
        let lrm = lr_multiplier(progress, args.init_lr_frac, args.warmdown_ratio);
        let frac = (step as f64 / 300.0).min(1.0);
        let scalars = StepScalars {
            lr_multiplier: lrm,
            muon_momentum: (1.0 - frac) * 0.85 + frac * 0.95,
            muon_weight_decay: 0.0,
        };
        model = opt.step(model, grads, &scalars)?;
        B::sync(device).ok();
        let dt = t0.elapsed().as_secs_f64();
        ls.smooth_train_loss = 0.9 * ls.smooth_train_loss + 0.1 * loss_sum;
        let smooth = ls.smooth_train_loss / (1.0 - 0.9f64.powi(step as i32 + 1));
        ls.total_training_time += dt;
        let tok_per_sec = (grad_accum as usize * b * t * world) as f64 / dt;
        let eta = if p > 0.0 {
            ls.total_training_time * (1.0 - p).max(0.0) / p / 60.0
        } else {
            0.0
        };
        let mfu = args.peak_flops.map_or("-".into(), |pk| {
            format!(
                "{:.2}",
                100.0 * model.estimate_flops() as f64 * tok_per_sec / (pk * world as f64)
            )
        });
        log(format!(
            "step {step:05} ({:.2}%) | loss: {smooth:.6} | lrm: {lrm:.3} | dt: {:.2}ms | tok/sec: {tok_per_sec:.0} | mfu: {mfu} | trained tokens: {n_valid} | total time: {:.2}m | eta: {eta:.1}m",
            100.0 * p,
            dt * 1000.0,
            ls.total_training_time / 60.0
        ));
        pb.set_position((p * 1000.0) as u64);
        let m = ChatStepMetrics {
            step,
            loss: loss_sum,
            smooth_loss: smooth,
            lrm,
            dt,
            tok_per_sec,
            progress: p,
            val_bpb: pending_val.take(),
        };
        if let Some((file, path)) = &mut metrics_file {
            writeln!(
                file,
                "{}",
                serde_json::to_string(&m).expect("metrics serialise")
            )
            .map_err(|e| nanochat_core::fs::IoError::new("append", &*path, e))?;
        }
        metrics.push(m);
        step += 1;
    }
    // The last evaluation has no step after it to ride on: record it on its own line.
    if let Some(v) = pending_val.take()
        && let Some((file, path)) = &mut metrics_file
    {
        writeln!(file, "{}", serde_json::json!({"step": step, "val_bpb": v}))
            .map_err(|e| nanochat_core::fs::IoError::new("append", &*path, e))?;
    }
    pb.finish_and_clear();
    Ok(ChatTrainSummary {
        step,
        checkpoint_dir: dir.clone(),
        val_bpb: ls.val_bpb,
        chatcore,
        metrics,
        epoch_len,
        total_batch_size: inh.total_batch_size,
        total_training_time: ls.total_training_time,
    })
}

#[allow(clippy::too_many_arguments)]
fn save_chat<B: TrainBackend>(
    dir: &Path,
    model: &Gpt<B>,
    opt: &MuonAdamW<B::InnerBackend>,
    args: &ChatTrainArgs,
    inh: &Inherited,
    loaders: &[ChatLoaderState],
    ls: &ChatLoopState,
    step: u64,
    source_meta: &CheckpointMetadata,
) -> Result<(), TrainError> {
    let mut meta = CheckpointMetadata::new(step, chrono::Utc::now());
    meta.val_bpb = ls.val_bpb;
    meta.timings.total_training_time = ls.total_training_time;
    // `user_config` stays the pretraining configuration (what SFT inherits from mid).
    let mut cfg = inh.cfg.clone();
    cfg.device_batch_size = inh.device_batch_size;
    cfg.max_seq_len = inh.max_seq_len;
    cfg.total_batch_size = Some(inh.total_batch_size);
    meta.extra.insert("user_config".into(), meta_json(&cfg));
    meta.extra.insert("stage_config".into(), meta_json(args));
    meta.extra
        .insert("device_batch_size".into(), inh.device_batch_size.into());
    meta.extra
        .insert("max_seq_len".into(), inh.max_seq_len.into());
    meta.extra
        .insert("total_batch_size".into(), inh.total_batch_size.into());
    for (key, value) in loader_state_fields(CHAT_KEYS, loaders) {
        meta.extra.insert(key, value);
    }
    meta.extra.insert("loop_state".into(), meta_json(ls));
    meta.extra
        .insert("source_step".into(), source_meta.step.into());
    let optim = to_safetensors(&opt.state_tensors(), None)?;
    save_checkpoint(dir, model, meta, &[(optim_file_name(step, 0), optim)])?;
    Ok(())
}
