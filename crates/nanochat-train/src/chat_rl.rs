//! Reinforcement learning on GSM8K (upstream `scripts/chat_rl.py`: "GRPO" simplified to
//! on-policy REINFORCE).
//!
//! Per step, for each of `examples_per_step` training problems the engine samples
//! `num_samples` completions from the current policy (temperature 1, top-k 50, calculator
//! on). The reward is 1 for the exact `#### n` answer, else 0; the advantage is the reward
//! minus the mean reward of that problem's samples (no std normalisation, no KL, no ratio
//! clipping). The loss is token-level: `−Σ logp(token) · A / (sampled tokens of the problem ·
//! problems)`, over the tokens the model sampled (forced tool outputs excluded). The LR
//! multiplier is `init_lr_frac` (0.05) decaying linearly to 0 over the run. pass@1 and pass@k
//! on GSM8K test are measured every `eval_every` steps. Sampling seeds derive from the run
//! seed and the step, so `--resume-from-step` continues bit-identically.

use nanochat_model::{FusedOps, TrainBackend};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Tensor, TensorData};
use nanochat_core::checkpoint_manager::checkpoint_dir;
use nanochat_core::{CheckpointMetadata, GenerationParams, Source};
use nanochat_data::tasks::{Gsm8k, Task};
use nanochat_infer::Engine;
use nanochat_model::distributed::{Rank, run_replicated};
use nanochat_model::{ComputeDtype, Gpt};
use nanochat_tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};

use nanochat_core::validation::{VResult, check_non_negative, check_positive, check_range};
use nanochat_core::{Interval, Validate};

use crate::error::TrainError;
use crate::optim::{GroupLrs, MuonAdamW, StepScalars};
pub use crate::pass_at_k::{PassAtK, evaluate_pass_at_k};
use crate::run::{Bar, Cadence, Run, SourceCheckpoint, load_optimizer_state};
use crate::schedule::B_REF;
use crate::stage_meta::{self, LrOverrides, RunMeta, inherited_config};

/// Settings of an RL run (upstream's flag names); [`Default`] holds upstream's values.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct ChatRlArgs {
    /// `$NANOCHAT_BASE_DIR`.
    #[cfg_attr(feature = "cli", arg(skip))]
    pub base_dir: PathBuf,
    /// Offline data root.
    #[cfg_attr(feature = "cli", arg(skip))]
    pub data_dir: PathBuf,
    /// Checkpoints to start from.
    #[cfg_attr(feature = "cli", arg(short = 'i', long, default_value_t = Self::default().source))]
    pub source: Source,
    /// Model tag of the source (default: the largest, dN with the largest N).
    #[cfg_attr(feature = "cli", arg(short = 'g', long))]
    pub model_tag: Option<String>,
    /// Step of the source (default: the last).
    #[cfg_attr(feature = "cli", arg(short = 's', long))]
    pub model_step: Option<u64>,
    /// Epochs over GSM8K train.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = Self::default().num_epochs))]
    pub num_epochs: usize,
    /// Stop after this many steps (default: epochs × problems / examples per step).
    #[cfg_attr(feature = "cli", arg(long))]
    pub num_steps: Option<u64>,
    /// Problems per step.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = Self::default().examples_per_step))]
    pub examples_per_step: usize,
    /// Samples per problem.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = Self::default().num_samples))]
    pub num_samples: usize,
    /// Most new tokens per sample.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = Self::default().max_new_tokens))]
    pub max_new_tokens: usize,
    /// Sampling temperature.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = Self::default().temperature))]
    pub temperature: f64,
    /// Sampling top-k (0: off).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = Self::default().top_k))]
    pub top_k: usize,
    /// Rows per forward/backward.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = Self::default().device_batch_size))]
    pub device_batch_size: usize,
    /// Learning rates (default: the source's).
    #[serde(flatten)]
    #[cfg_attr(feature = "cli", command(flatten))]
    pub lrs: LrOverrides,
    /// Initial LR multiplier.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = Self::default().init_lr_frac))]
    pub init_lr_frac: f64,
    /// pass@k on GSM8K test every N steps (0 = only at the end).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = Self::default().eval_every))]
    pub eval_every: u64,
    /// Problems in that evaluation.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = Self::default().eval_examples))]
    pub eval_examples: usize,
    /// k of pass@k.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = Self::default().eval_k))]
    pub eval_k: usize,
    /// Save every N steps (the last step is always saved).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = Self::default().save_every))]
    pub save_every: u64,
    /// Resume this run at this step.
    #[cfg_attr(feature = "cli", arg(long))]
    pub resume_from_step: Option<u64>,
    /// Stop (saving a checkpoint) at this step.
    #[cfg_attr(feature = "cli", arg(long))]
    pub stop_after: Option<u64>,
    /// Seed of the sampling.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = Self::default().seed))]
    pub seed: u64,
    /// Compute dtype.
    #[serde(skip, default = "default_dtype")]
    #[cfg_attr(feature = "cli", arg(skip = ComputeDtype::F32))]
    pub compute_dtype: ComputeDtype,
    /// Progress bar.
    #[cfg_attr(feature = "cli", arg(skip))]
    pub progress: bool,
    /// Data-parallel layout; `None`: this device alone, no collective.
    #[serde(default)]
    #[cfg_attr(feature = "cli", arg(skip))]
    pub distributed: Option<nanochat_core::DistributedConfig>,
}

fn default_dtype() -> ComputeDtype {
    ComputeDtype::F32
}

impl Default for ChatRlArgs {
    /// Upstream's settings, with empty folders.
    fn default() -> Self {
        Self {
            base_dir: PathBuf::new(),
            data_dir: PathBuf::new(),
            source: Source::Sft,
            model_tag: None,
            model_step: None,
            num_epochs: 1,
            num_steps: None,
            examples_per_step: 16,
            num_samples: 16,
            max_new_tokens: 256,
            temperature: 1.0,
            top_k: 50,
            device_batch_size: 8,
            lrs: LrOverrides::default(),
            init_lr_frac: 0.05,
            eval_every: 60,
            eval_examples: 400,
            eval_k: 8,
            save_every: 60,
            resume_from_step: None,
            stop_after: None,
            seed: 42,
            compute_dtype: ComputeDtype::F32,
            progress: false,
            distributed: None,
        }
    }
}

impl Validate for ChatRlArgs {
    fn validate(&self) -> VResult {
        const E: &str = "ChatRlArgs";
        self.lrs.validate()?;
        let counts = [
            ("num_epochs", self.num_epochs),
            ("examples_per_step", self.examples_per_step),
            ("num_samples", self.num_samples),
            ("max_new_tokens", self.max_new_tokens),
            ("device_batch_size", self.device_batch_size),
            ("eval_k", self.eval_k),
        ];
        for (field, v) in counts {
            check_positive(E, field, v as u64)?;
        }
        check_range(
            E,
            "temperature",
            self.temperature,
            Interval::closed(0.0, 2.0),
        )?;
        check_non_negative(E, "init_lr_frac", self.init_lr_frac)
    }
}

impl ChatRlArgs {
    /// Upstream's defaults with these folders.
    pub fn new(base_dir: PathBuf, data_dir: PathBuf) -> Self {
        Self {
            base_dir,
            data_dir,
            ..Self::default()
        }
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RlSummary {
    /// Steps done.
    pub step: u64,
    /// Checkpoint folder.
    pub checkpoint_dir: PathBuf,
    /// Last evaluation.
    pub eval: Option<PassAtK>,
    /// Mean reward per step of this invocation.
    pub rewards: Vec<f64>,
    /// Seconds.
    pub seconds: f64,
}

/// One sampled completion ready for the policy-gradient step.
#[derive(Debug, Clone)]
pub struct Rollout {
    /// Prompt then generated tokens.
    pub ids: Vec<u32>,
    /// Index of the first generated token in `ids`.
    pub prompt_len: usize,
    /// Per generated token: 1 sampled (trained), 0 forced by the tool (not trained).
    pub masks: Vec<u8>,
    /// Reward minus the mean reward of its problem.
    pub advantage: f64,
    /// Normalisation: 1 / (sampled tokens of its problem · problems in the step).
    pub weight: f64,
}

/// Loss `Σ −logp · A · weight` over the sampled tokens of `rollouts` and its gradient,
/// `batch` rows per forward pass (BOS-padded).
pub fn policy_gradient<B: TrainBackend>(
    model: &Gpt<B>,
    rollouts: &[Rollout],
    bos: u32,
    batch: usize,
    device: &B::Device,
) -> (f64, GradientsParams) {
    let mut accum = GradientsAccumulator::<Gpt<B>>::new();
    // Read once at the end (each read waits for the device).
    let mut loss_sum = Vec::new();
    for chunk in rollouts.chunks(batch.max(1)) {
        let t = chunk.iter().map(|r| r.ids.len() - 1).max().unwrap_or(1);
        let mut x = Vec::with_capacity(chunk.len() * t);
        let mut y = Vec::with_capacity(chunk.len() * t);
        let mut w = Vec::with_capacity(chunk.len() * t);
        for r in chunk {
            for j in 0..t {
                x.push(*r.ids.get(j).unwrap_or(&bos) as i64);
                // Target j is token j+1; generated tokens start at prompt_len.
                let g = (j + 1).checked_sub(r.prompt_len);
                let trained =
                    j + 1 < r.ids.len() && g.is_some_and(|g| r.masks.get(g).copied() == Some(1));
                y.push(if trained { r.ids[j + 1] as i64 } else { -1 });
                w.push(if trained {
                    (r.advantage * r.weight) as f32
                } else {
                    0.0
                });
            }
        }
        let shape = [chunk.len(), t];
        let x = Tensor::from_data(TensorData::new(x, shape), device);
        let y = Tensor::from_data(TensorData::new(y, shape), device);
        let w = Tensor::<B, 1>::from_data(TensorData::new(w, [chunk.len() * t]), device);
        // CE = −logp, so minimising Σ CE·A·w maximises Σ logp·A·w.
        let loss = model.forward_loss_weighted(x, y, w);
        loss_sum.push(loss.clone().inner());
        let grads = loss.backward();
        accum.accumulate(model, GradientsParams::from_grads(grads, model));
    }
    let loss_sum = match loss_sum.len() {
        0 => 0.0,
        _ => Tensor::cat(loss_sum, 0).sum().into_scalar().elem_f64(),
    };
    (loss_sum, accum.grads())
}

/// RL's checkpoint meta.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RlMeta {
    /// The source's configuration and batch, passed on.
    #[serde(flatten)]
    pub run: RunMeta,
    /// This stage's settings.
    pub stage_config: ChatRlArgs,
    /// The last pass@k evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gsm8k: Option<PassAtK>,
}

/// Runs (or resumes) RL.
pub fn chat_rl<B: TrainBackend>(
    args: &ChatRlArgs,
    tokenizer: Arc<Tokenizer>,
    device: &B::Device,
) -> Result<RlSummary, TrainError> {
    args.validate()?;
    let train = Gsm8k::load(&args.data_dir.join("tasks/gsm8k/train.jsonl"))
        .map_err(|e| TrainError::Data(e.to_string()))?;
    let test = Gsm8k::load(&args.data_dir.join("tasks/gsm8k/test.jsonl"))
        .map_err(|e| TrainError::Data(e.to_string()))?;
    // The source checkpoint's meta: what the run inherits is checked before any weights load.
    let (source, tag) = (args.source, args.model_tag.as_deref());
    let src = SourceCheckpoint::find(&args.base_dir, source, tag, args.model_step)?;
    let (src_meta, src_dir, tag) = (src.meta.clone(), src.dir.clone(), src.tag.clone());
    let dir = checkpoint_dir(&args.base_dir, Source::Rl, &tag);
    let e = args.examples_per_step.max(1);
    let num_steps = args
        .num_steps
        .unwrap_or((train.len() / e * args.num_epochs) as u64);

    let mut source = RunMeta::of(&src_meta.metadata);
    source.user_config = inherited_config(&src_meta.metadata, &src_dir, &args.lrs)?;
    source.user_config.optimizer.validate()?;
    let total = source.total_batch_size.unwrap_or(B_REF);
    let lrs = GroupLrs::scaled(
        &source.user_config.optimizer,
        (total as f64 / B_REF as f64).sqrt(),
    );

    // The model is loaded once; every rank gets a copy (same weights, same parameter ids).
    let (model, resume_meta) = src.start::<B>(&dir, args.resume_from_step, device)?;
    tracing::info!(
        "RL from {} | {} steps × {} problems × {} samples → {}",
        src_dir.display(),
        num_steps,
        e,
        args.num_samples,
        dir.display()
    );
    let run = RlRun {
        args,
        tokenizer,
        dir,
        train,
        test,
        source,
        lrs,
        num_steps,
        resume_meta,
    };
    run_replicated::<B, _, _, _, _, _>(args.distributed.as_ref(), device, model, |model, rank| {
        rl_rank(&run, model, rank)
    })
}

/// What every rank of an RL run shares.
struct RlRun<'a> {
    args: &'a ChatRlArgs,
    tokenizer: Arc<Tokenizer>,
    dir: PathBuf,
    train: Gsm8k,
    test: Gsm8k,
    source: RunMeta,
    lrs: GroupLrs,
    num_steps: u64,
    resume_meta: Option<nanochat_core::CheckpointMeta>,
}

/// The loop of one rank (upstream `chat_rl.py` from `for step in range(num_steps):`): it
/// samples its share of the step's problems (`rank, rank + world, …`), and the ranks'
/// gradients are summed (each rollout is already weighted by the whole step's problem count).
fn rl_rank<B: TrainBackend>(
    run: &RlRun<'_>,
    model: Gpt<B>,
    rank: Rank<B::InnerBackend>,
) -> Result<RlSummary, TrainError> {
    let (args, num_steps, dir) = (run.args, run.num_steps, &run.dir);
    let tokenizer = run.tokenizer.clone();
    let device = &rank.device;
    let e = args.examples_per_step.max(1);
    let mut opt = MuonAdamW::new(&model, &run.source.user_config.optimizer, &run.lrs)?;
    let start = match &run.resume_meta {
        None => 0,
        Some(meta) => {
            let step = meta.metadata.step;
            load_optimizer_state(&mut opt, dir, meta, step, device)?;
            step
        }
    };
    let mut model = model.with_compute_dtype(args.compute_dtype);
    let (save_every, master, bar) = (
        Some(args.save_every),
        rank.is_master(),
        Bar::Steps(num_steps),
    );
    let cadence = Cadence::new(save_every, args.resume_from_step, args.stop_after);
    let mut out = Run::open(dir, master, args.progress, bar, cadence, start)?;
    let t_run = Instant::now();
    let bos = tokenizer.bos_token_id();
    let (mut eval, mut rewards_log) = (None, Vec::new());
    let mut step = start;
    loop {
        let last = step >= num_steps;
        if last || Cadence::due(Some(args.eval_every), step, last) {
            let engine = Engine::new(model.valid(), tokenizer.clone())?;
            let seed = args.seed ^ 0xe7a1;
            let (n, k) = (args.eval_examples, args.eval_k);
            let r = evaluate_pass_at_k(&engine, &run.test, n, k, seed, args.max_new_tokens, &rank)?;
            out.log(format!(
                "Step {step:05} | GSM8K pass@1: {:.4} | pass@{}: {:.4}",
                r.pass1, r.k, r.pass_k
            ));
            eval = Some(r);
        }
        let (save, stop) = out.at_step(step, last, &rank)?;
        if save {
            let typed = RlMeta {
                run: run.source.clone(),
                stage_config: args.clone(),
                gsm8k: eval,
            };
            let mut md = CheckpointMetadata::new(step, chrono::Utc::now());
            md.learning_rate = Some(lr_multiplier(args.init_lr_frac, step, num_steps));
            stage_meta::write(&mut md, &typed)?;
            out.save(&model, &opt, md)?;
        }
        if stop {
            break;
        }

        // Rollouts with the current policy.
        let t0 = Instant::now();
        let engine = Engine::new(model.valid(), tokenizer.clone())?;
        let mut batch = rollouts(&engine, &run.train, args, step, &rank)?;
        drop(engine);
        let sums = rank.sum_f64(&[
            batch.reward_sum,
            batch.seq_len_sum,
            batch.rollouts.len() as f64,
        ])?;
        let (reward_sum, seq_len_sum, updates) = (sums[0], sums[1], sums[2] as usize);
        if updates > 0 && batch.rollouts.is_empty() {
            // Every rank must send gradients to the all-reduce: a zero-weighted row gives
            // this rank's zeros.
            batch.rollouts.push(Rollout {
                ids: vec![bos, bos],
                prompt_len: 1,
                masks: vec![1],
                advantage: 0.0,
                weight: 0.0,
            });
        }

        // Policy gradient over the rollouts, device_batch_size rows at a time.
        let lrm = lr_multiplier(args.init_lr_frac, step, num_steps);
        let mut loss_sum = 0.0;
        if updates > 0 {
            let (loss, grads) =
                policy_gradient(&model, &batch.rollouts, bos, args.device_batch_size, device);
            let grads = rank.sum_grads(&model, grads)?;
            loss_sum = rank.sum_f64(&[loss])?[0];
            let scalars = StepScalars {
                lr_multiplier: lrm,
                muon_momentum: 0.95,
                muon_weight_decay: 0.0,
            };
            model = opt.step(model, grads, &scalars)?;
        }
        let dt = t0.elapsed().as_secs_f64();
        let reward = reward_sum / e as f64;
        let seq = seq_len_sum / (e * args.num_samples).max(1) as f64;
        out.log(format!(
            "step {step:05}/{num_steps:05} | reward: {reward:.4} | mean len: {seq:.1} | updates: {updates} | lrm: {lrm:.4} | dt: {dt:.2}s"
        ));
        out.record(&serde_json::json!({
            "step": step, "reward": reward, "loss": loss_sum, "seq_len": seq, "lrm": lrm, "dt": dt,
        }))?;
        rewards_log.push(reward);
        step += 1;
        out.set_position(step);
    }
    out.finish(step)?;
    Ok(RlSummary {
        step,
        checkpoint_dir: dir.clone(),
        eval,
        rewards: rewards_log,
        seconds: t_run.elapsed().as_secs_f64(),
    })
}

/// The learning-rate multiplier of `step` (upstream: `init_lr_frac` decaying linearly to 0 at
/// `num_steps`), also saved as the checkpoint's `learning_rate`.
fn lr_multiplier(init_lr_frac: f64, step: u64, num_steps: u64) -> f64 {
    init_lr_frac * (1.0 - step as f64 / num_steps.max(1) as f64).max(0.0)
}

/// One rank's rollouts of a step, with its summed rewards and sampled lengths.
struct RolloutBatch {
    rollouts: Vec<Rollout>,
    reward_sum: f64,
    seq_len_sum: f64,
}

/// Samples `num_samples` completions of this rank's share of the step's problems and scores
/// them (upstream `get_batch`): advantages are rewards minus the problem's mean; samples with
/// no advantage give no gradient and are dropped.
fn rollouts<B: FusedOps>(
    engine: &Engine<B>,
    train: &Gsm8k,
    args: &ChatRlArgs,
    step: u64,
    rank: &Rank<B>,
) -> Result<RolloutBatch, TrainError> {
    let tokenizer = engine.tokenizer();
    let max_len = engine.model().config().sequence_len;
    let e = args.examples_per_step.max(1);
    let mut out = RolloutBatch {
        rollouts: Vec::new(),
        reward_sum: 0.0,
        seq_len_sum: 0.0,
    };
    for k in (rank.rank..e).step_by(rank.world_size) {
        let idx = ((step as usize) * e + k) % train.len();
        let prompt = tokenizer.render_for_completion(&train.get(idx), max_len)?;
        let room = max_len.saturating_sub(prompt.len());
        if room == 0 {
            continue;
        }
        let params = GenerationParams {
            temperature: args.temperature,
            top_k: (args.top_k > 0).then_some(args.top_k),
            max_tokens: args.max_new_tokens.min(room),
            seed: Some(
                args.seed
                    .wrapping_mul(1_000_003)
                    .wrapping_add(step * 1000 + k as u64),
            ),
            num_samples: args.num_samples,
            ..GenerationParams::default()
        };
        let rows = engine.generate_batch(&prompt, &params)?;
        let rewards: Vec<f64> = rows
            .iter()
            .map(|r| f64::from(u8::from(train.evaluate(idx, &r.text))))
            .collect();
        let mean = rewards.iter().sum::<f64>() / rewards.len().max(1) as f64;
        out.reward_sum += mean;
        let sampled: usize = rows
            .iter()
            .map(|r| r.masks.iter().filter(|&&m| m == 1).count())
            .sum();
        for (r, reward) in rows.into_iter().zip(rewards) {
            out.seq_len_sum += r.tokens.len() as f64;
            let adv = reward - mean;
            if adv == 0.0 || r.tokens.is_empty() {
                continue; // No gradient from this sample.
            }
            let mut ids = prompt.clone();
            ids.extend(&r.tokens);
            ids.truncate(max_len + 1);
            out.rollouts.push(Rollout {
                prompt_len: prompt.len(),
                masks: r.masks,
                ids,
                advantage: adv,
                weight: 1.0 / (sampled.max(1) * e) as f64,
            });
        }
    }
    Ok(out)
}

trait ElemF64 {
    fn elem_f64(self) -> f64;
}
impl<E: burn::tensor::ElementConversion> ElemF64 for E {
    fn elem_f64(self) -> f64 {
        self.elem::<f64>()
    }
}
