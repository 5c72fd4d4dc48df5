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

use nanochat_model::{FusedOps, TrainBackend};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{ElementConversion, Int, Tensor};
use nanochat_core::CheckpointMetadata;
use nanochat_core::Validate;
use nanochat_core::checkpoint_manager::checkpoint_dir;
use nanochat_data::chat_loader::{ChatBatch, ChatLoader, ChatLoaderState, PackMode};
use nanochat_data::tasks::{TaskSplit, build_mixture};
use nanochat_eval::chat_eval::{ChatEvalOptions, load_tasks, run_chat_eval};
use nanochat_eval::loss_eval::{BpbSums, evaluate_bpb_sums, reduce_bpb, token_bytes_tensor};
use nanochat_infer::Engine;
use nanochat_model::distributed::{Rank, run_replicated};
use nanochat_model::{ComputeDtype, Gpt, Reduction};
use nanochat_tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};

pub use crate::chat_args::{ChatStage, ChatTrainArgs, lr_multiplier};
use crate::chat_args::{Inherited, inherit};
use crate::data_parallel::gather_states;
use crate::error::TrainError;
use crate::optim::{GroupLrs, MuonAdamW, StepScalars};
use crate::run::{
    Bar, Cadence, Run, SourceCheckpoint, StepMetrics, load_optimizer_state, smooth_loss,
};
use crate::schedule::B_REF;
use crate::stage_meta::{self, RankStates, RunMeta};

/// Loop state carried in the meta.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct ChatLoopState {
    /// EMA of the training loss.
    pub smooth_train_loss: f64,
    /// Training seconds.
    pub total_training_time: f64,
    /// Last validation bpb.
    pub val_bpb: Option<f64>,
    /// Last validation loss (nats per token).
    #[serde(default)]
    pub val_loss: Option<f64>,
}

/// `metrics.jsonl`'s lines (the stages share one type).
pub type ChatStepMetrics = StepMetrics;

/// The status line of a step.
fn status(m: &StepMetrics, trained: usize, ls: &ChatLoopState) -> String {
    let p = m.progress.unwrap_or(0.0);
    let eta = match p > 0.0 {
        true => ls.total_training_time * (1.0 - p).max(0.0) / p / 60.0,
        false => 0.0,
    };
    format!(
        "step {:05} ({:.2}%) | loss: {:.6} | lrm: {:.3} | dt: {:.2}ms | tok/sec: {:.0} | mfu: {} | trained tokens: {trained} | total time: {:.2}m | eta: {eta:.1}m",
        m.step,
        100.0 * p,
        m.smooth_loss,
        m.lrm,
        m.dt * 1000.0,
        m.tok_per_sec,
        m.mfu.map_or("-".to_string(), |m| format!("{m:.2}")),
        ls.total_training_time / 60.0,
    )
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
    pub metrics: Vec<StepMetrics>,
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
    // Read once at the end (each read waits for the device).
    let mut loss_sum = Vec::new();
    for mb in micro {
        let (x, y) = mb.to_tensors::<B>(device);
        let loss = model.forward_loss(x, y, Reduction::Sum) / n_valid.max(1) as f64;
        loss_sum.push(loss.clone().inner());
        let grads = loss.backward();
        accum.accumulate(model, GradientsParams::from_grads(grads, model));
    }
    let loss_sum = match loss_sum.len() {
        0 => 0.0,
        _ => Tensor::cat(loss_sum, 0).sum().into_scalar().elem::<f64>(),
    };
    (loss_sum, accum.grads())
}

/// Midtraining's and SFT's checkpoint meta.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatMeta {
    /// The pretraining configuration with this stage's batch (what the next stage inherits).
    #[serde(flatten)]
    pub run: RunMeta,
    /// This stage's settings.
    pub stage_config: ChatTrainArgs,
    /// Every rank's loader position.
    #[serde(flatten)]
    pub loaders: RankStates<ChatLoaderState>,
    /// The loop state.
    pub loop_state: ChatLoopState,
    /// The step of the checkpoint this stage started from.
    pub source_step: u64,
}

/// Runs (or resumes) midtraining or SFT.
pub fn chat_train<B: TrainBackend>(
    args: &ChatTrainArgs,
    tokenizer: Arc<Tokenizer>,
    device: &B::Device,
) -> Result<ChatTrainSummary, TrainError> {
    let args = &args.clone().resolve();
    args.validate()?;
    // The source checkpoint's meta: what the run inherits is checked before any weights load.
    let (source, tag) = (args.source(), args.model_tag.as_deref());
    let src = SourceCheckpoint::find(&args.base_dir, source, tag, args.model_step)?;
    let (src_meta, src_dir, tag) = (src.meta.clone(), src.dir.clone(), src.tag.clone());
    let inh = inherit(&src_meta.metadata, &src_dir, args)?;
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
    let val_mixture = match args.val_mixture.is_empty() {
        true => None,
        false => Some(build_mixture(
            &args.val_mixture,
            TaskSplit::Test,
            &args.data_dir,
            args.seed,
        )?),
    };
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
    let lrs = GroupLrs::scaled(
        &inh.cfg.optimizer,
        (inh.total_batch_size as f64 / B_REF as f64).sqrt(),
    );

    // The model is loaded once; every rank gets a copy (same weights, same parameter ids).
    let (model, resume_meta) = src.start::<B>(&dir, args.resume_from_step, device)?;
    let resume = match resume_meta {
        Some(meta) => {
            let typed: ChatMeta = stage_meta::read(&meta.metadata, &dir)?;
            Some((meta, typed))
        }
        None => None,
    };
    let run = ChatRun {
        args,
        tokenizer,
        inh,
        grad_accum,
        dir,
        tag,
        mixture,
        val_mixture,
        lrs,
        src_meta,
        src_dir,
        resume,
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
    val_mixture: Option<nanochat_data::TaskMixture>,
    lrs: GroupLrs,
    src_meta: nanochat_core::CheckpointMeta,
    src_dir: PathBuf,
    resume: Option<(nanochat_core::CheckpointMeta, ChatMeta)>,
}

/// The loop of one rank (upstream `chat_sft.py` from `while True:`).
fn chat_rank<B: TrainBackend>(
    run: &ChatRun<'_>,
    model: Gpt<B>,
    rank: Rank<B::InnerBackend>,
) -> Result<ChatTrainSummary, TrainError> {
    let (args, inh, dir, grad_accum) = (run.args, &run.inh, &run.dir, run.grad_accum);
    let (tokenizer, device, world) = (run.tokenizer.clone(), &rank.device, rank.world_size);
    let (b, t) = (inh.device_batch_size, inh.max_seq_len);
    let (mut opt, loader_state, mut ls, start) = restore(run, &model, &rank)?;
    let mut model = model.with_compute_dtype(args.compute_dtype);
    let (mixture, mode) = (run.mixture.clone(), args.stage.packing());
    let st = loader_state.as_ref();
    let mut loader =
        ChatLoader::for_rank(mixture, tokenizer.clone(), b, t, mode, st, rank.rank, world)?;
    let val =
        (run.val_mixture.as_ref()).map(|vm| Validation::<B::InnerBackend>::new(run, vm, &rank));
    let chatcore = PeriodicChatCore::load(args, rank.is_master())?;
    // One epoch unless capped: the horizon in steps is known only approximately (packing),
    // so the schedule runs on epoch progress; with --num-iterations on step / n.
    let progress_of = |step: u64, loader: &ChatLoader| match args.num_iterations {
        Some(n) => step as f64 / n.max(1) as f64,
        None => loader.progress(),
    };
    let cadence = Cadence::new(args.save_every, args.resume_from_step, args.stop_after);
    let master = rank.is_master();
    let mut out = Run::open(dir, master, args.progress, Bar::Epoch, cadence, start)?;
    let (mut metrics, mut chatcore_value) = (Vec::new(), None);
    let mut step = start;
    loop {
        // The ranks agree on the schedule: mean epoch progress, and stop when any rank has
        // finished its share (upstream's all_reduce MAX of `last_step`).
        let local = progress_of(step, &loader);
        let synced = rank.sum_f64(&[local, f64::from(u8::from(local >= 1.0))])?;
        let progress = synced[0] / world as f64;
        let last = synced[1] > 0.0 || args.num_iterations == Some(step);
        if let Some(val) = &val
            && (last || Cadence::due(args.eval_every, step, last))
            && let Some(sums) = val.sums(&model.valid(), &rank, &mut out, step)?
        {
            (ls.val_bpb, ls.val_loss) = (Some(sums.bpb()), sums.loss());
        }
        if let Some(cc) = &chatcore
            && Cadence::due(args.chatcore_every, step, last)
            && (last || step > 0)
        {
            let name = format!("{}/{}@{step}", args.stage.source().as_str(), run.tag);
            chatcore_value = cc.evaluate(&model, &tokenizer, &name, (&out, step))?;
        }
        let (save, stop) = out.at_step(step, last, &rank)?;
        if save {
            let loaders = RankStates(gather_states(&rank, &loader.state())?);
            let (init_lr_frac, warmdown_ratio) = args.lr_schedule();
            let lrm = lr_multiplier(progress, init_lr_frac, warmdown_ratio);
            let mut meta = chat_meta(run, loaders, &ls, step)?;
            meta.learning_rate = Some(lrm);
            out.save(&model, &opt, meta)?;
        }
        if stop {
            break;
        }

        // One optimizer step: gather the micro-batches, weight every trained token equally.
        let t0 = Instant::now();
        let micro = (0..grad_accum)
            .map(|_| loader.next_batch())
            .collect::<Result<Vec<_>, _>>()?;
        // Every trained target of every rank weighs the same: divide by the global count, then
        // sum the ranks' gradients.
        let local_valid: usize = micro.iter().map(|m| m.valid_targets()).sum();
        let n_valid = rank.sum_f64(&[local_valid as f64])?[0].round() as usize;
        let (local_loss, grads) = token_weighted_grads_over(&model, &micro, n_valid, device);
        let grads = rank.sum_grads(&model, grads)?;
        // The step's loss and the epoch progress after it, summed over the ranks in one go.
        let after = rank.sum_f64(&[local_loss, progress_of(step + 1, &loader)])?;
        let (loss_sum, p) = (after[0], after[1] / world as f64);
        let (init_lr_frac, warmdown_ratio) = args.lr_schedule();
        let lrm = lr_multiplier(progress, init_lr_frac, warmdown_ratio);
        let frac = (step as f64 / 300.0).min(1.0);
        let scalars = StepScalars {
            lr_multiplier: lrm,
            muon_momentum: (1.0 - frac) * 0.85 + frac * 0.95,
            muon_weight_decay: 0.0,
        };
        model = opt.step(model, grads, &scalars)?;
        B::sync(device).ok();
        let dt = t0.elapsed().as_secs_f64();
        let smooth = smooth_loss(&mut ls.smooth_train_loss, loss_sum, step);
        ls.total_training_time += dt;
        let tok_per_sec = (grad_accum as usize * b * t * world) as f64 / dt;
        let mfu = args
            .peak_flops
            .map(|pk| 100.0 * model.estimate_flops() as f64 * tok_per_sec / (pk * world as f64));
        let (loss, progress, val_bpb) = (loss_sum, Some(p), out.take_val());
        let m = StepMetrics {
            step,
            loss,
            smooth_loss: smooth,
            lrm,
            dt,
            tok_per_sec,
            mfu,
            epoch: None,
            progress,
            val_bpb,
        };
        out.log(status(&m, n_valid, &ls));
        out.set_position((p * 1000.0) as u64);
        out.record(&m)?;
        metrics.push(m);
        step += 1;
    }
    out.finish(step)?;
    Ok(ChatTrainSummary {
        step,
        checkpoint_dir: dir.clone(),
        val_bpb: ls.val_bpb,
        chatcore: chatcore_value,
        metrics,
        epoch_len: run.mixture.len(),
        total_batch_size: inh.total_batch_size,
        total_training_time: ls.total_training_time,
    })
}

/// The optimizer (its state from the resumed checkpoint, or with `load_optimizer` from the
/// source), this rank's loader position, the loop state and the first step.
#[allow(clippy::type_complexity)]
fn restore<B: TrainBackend>(
    run: &ChatRun<'_>,
    model: &Gpt<B>,
    rank: &Rank<B::InnerBackend>,
) -> Result<
    (
        MuonAdamW<B::InnerBackend>,
        Option<ChatLoaderState>,
        ChatLoopState,
        u64,
    ),
    TrainError,
> {
    let (args, device) = (run.args, &rank.device);
    let mut opt = MuonAdamW::new(model, &run.inh.cfg.optimizer, &run.lrs)?
        .with_bf16_orthogonalization(args.compute_dtype == ComputeDtype::BF16);
    match &run.resume {
        None => {
            if args.load_optimizer {
                let step = run.src_meta.metadata.step;
                load_optimizer_state(&mut opt, &run.src_dir, &run.src_meta, step, device)?;
            }
            Ok((opt, None, ChatLoopState::default(), 0))
        }
        Some((meta, typed)) => {
            let step = meta.metadata.step;
            load_optimizer_state(&mut opt, &run.dir, meta, step, device)?;
            let st = typed
                .loaders
                .for_rank(rank.rank, rank.world_size, &run.dir)?;
            Ok((opt, Some(st), typed.loop_state, step))
        }
    }
}

/// Validation bits per byte over `eval_tokens` of the validation mixture (each rank its
/// stride, the sums added up).
struct Validation<'a, B: FusedOps> {
    run: &'a ChatRun<'a>,
    mixture: &'a nanochat_data::TaskMixture,
    token_bytes: Tensor<B, 1, Int>,
}

impl<'a, B: FusedOps> Validation<'a, B> {
    fn new(run: &'a ChatRun<'a>, mixture: &'a nanochat_data::TaskMixture, rank: &Rank<B>) -> Self {
        let token_bytes = token_bytes_tensor::<B>(&run.tokenizer.token_bytes(), &rank.device);
        Validation {
            run,
            mixture,
            token_bytes,
        }
    }

    /// The bits per byte of `model`, logged for `step`; `None` when no row has an assistant
    /// token within the length.
    /// The validation sums (bits per byte, loss per token), logged; `None` when no byte was
    /// counted.
    fn sums(
        &self,
        model: &Gpt<B>,
        rank: &Rank<B>,
        out: &mut Run,
        step: u64,
    ) -> Result<Option<BpbSums>, TrainError> {
        let (b, t, world) = (
            self.run.inh.device_batch_size,
            self.run.inh.max_seq_len,
            rank.world_size,
        );
        let steps = (self.run.args.eval_tokens / (b * t * world) as u64).max(1) as usize;
        let (mixture, tok) = (self.mixture.clone(), self.run.tokenizer.clone());
        let mut vl =
            ChatLoader::for_rank(mixture, tok, b, t, PackMode::Pad, None, rank.rank, world)?;
        let batches =
            (0..steps).map(|_| vl.next_batch().map(|bt| bt.to_tensors::<B>(&rank.device)));
        let sums = evaluate_bpb_sums(model, batches, steps, &self.token_bytes)?;
        let sums = reduce_bpb(rank, sums)?;
        let bpb = sums.bpb();
        if !bpb.is_finite() {
            out.log(format!("Step {step:05} | Validation bpb undefined: no assistant tokens within {t} tokens of the validation rows"));
            return Ok(None);
        }
        out.validated(step, bpb);
        Ok(Some(sums))
    }
}

/// The checkpoint meta of `step`.
fn chat_meta(
    run: &ChatRun<'_>,
    loaders: RankStates<ChatLoaderState>,
    ls: &ChatLoopState,
    step: u64,
) -> Result<CheckpointMetadata, TrainError> {
    let inh = &run.inh;
    let mut md = CheckpointMetadata::new(step, chrono::Utc::now());
    md.val_bpb = ls.val_bpb;
    md.val_loss = ls.val_loss;
    md.timings.total_training_time = ls.total_training_time;
    // `user_config` stays the pretraining configuration (what SFT inherits from mid).
    let mut cfg = inh.cfg.clone();
    cfg.device_batch_size = inh.device_batch_size;
    cfg.max_seq_len = inh.max_seq_len;
    cfg.total_batch_size = Some(inh.total_batch_size);
    let typed = ChatMeta {
        run: RunMeta {
            user_config: cfg,
            device_batch_size: Some(inh.device_batch_size),
            max_seq_len: Some(inh.max_seq_len),
            total_batch_size: Some(inh.total_batch_size),
        },
        stage_config: run.args.clone(),
        loaders,
        loop_state: *ls,
        source_step: run.src_meta.metadata.step,
    };
    stage_meta::write(&mut md, &typed)?;
    Ok(md)
}

/// SFT's periodic ChatCORE: the tasks read once, on rank 0.
struct PeriodicChatCore {
    opts: ChatEvalOptions,
    tasks: Vec<Arc<dyn nanochat_data::tasks::Task>>,
}

impl PeriodicChatCore {
    fn load(args: &ChatTrainArgs, master: bool) -> Result<Option<Self>, TrainError> {
        if !master || args.chatcore_every.is_none_or(|e| e == 0) {
            return Ok(None);
        }
        let opts = ChatEvalOptions {
            max_problems: Some(args.chatcore_max_problems),
            max_new_tokens: 128,
            ..ChatEvalOptions::default()
        };
        let tasks = load_tasks(&args.data_dir, &opts)?;
        Ok(Some(PeriodicChatCore { opts, tasks }))
    }

    /// The aggregate for `model`, logged for `step`.
    fn evaluate<B: TrainBackend>(
        &self,
        model: &Gpt<B>,
        tokenizer: &Arc<Tokenizer>,
        name: &str,
        (out, step): (&Run, u64),
    ) -> Result<Option<f64>, TrainError> {
        let engine = Engine::new(model.valid(), tokenizer.clone())?;
        let (_, res) = run_chat_eval(&engine, &self.tasks, &self.opts, name)?;
        let value = res.aggregate.unwrap_or(0.0);
        out.log(format!("Step {step:05} | {}: {value:.4}", res.metric));
        Ok(res.aggregate)
    }
}
