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

use nanochat_model::TrainBackend;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Tensor, TensorData};
use nanochat_core::checkpoint_manager::{checkpoint_dir, optim_file_name};
use nanochat_core::{CheckpointMetadata, GenerationParams, Source};
use nanochat_data::tasks::{Gsm8k, Task};
use nanochat_infer::Engine;
use nanochat_model::checkpoint::{load_model, save_checkpoint};
use nanochat_model::distributed::{Rank, run_replicated};
use nanochat_model::weights::to_safetensors;
use nanochat_model::{ComputeDtype, Gpt, Reduction};
use nanochat_tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};

use crate::error::TrainError;
use crate::optim::{GroupLrs, MuonAdamW, StepScalars};
pub use crate::pass_at_k::{PassAtK, evaluate_pass_at_k};
use crate::run_files::{
    STEPS_TEMPLATE, inherited_config, load_optimizer_state, meta_json, open_metrics, progress_bar,
    resume_or_source, truncate_metrics,
};
use crate::schedule::B_REF;

/// Settings of an RL run (upstream's flag names).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatRlArgs {
    /// `$NANOCHAT_BASE_DIR`.
    pub base_dir: PathBuf,
    /// Offline data root.
    pub data_dir: PathBuf,
    /// Start from this stage's checkpoint (`sft`).
    pub source: Source,
    /// Its tag.
    pub model_tag: Option<String>,
    /// Its step.
    pub model_step: Option<u64>,
    /// Epochs over GSM8K train.
    pub num_epochs: usize,
    /// Cap on steps (default: epochs × problems / examples_per_step).
    pub num_steps: Option<u64>,
    /// Problems per step.
    pub examples_per_step: usize,
    /// Samples per problem.
    pub num_samples: usize,
    /// Max new tokens per sample.
    pub max_new_tokens: usize,
    /// Sampling temperature.
    pub temperature: f64,
    /// Sampling top-k.
    pub top_k: usize,
    /// Rows per forward/backward.
    pub device_batch_size: usize,
    /// Learning rates (None: inherit).
    pub embedding_lr: Option<f64>,
    /// lm_head rate.
    pub unembedding_lr: Option<f64>,
    /// Muon rate.
    pub matrix_lr: Option<f64>,
    /// Initial LR multiplier.
    pub init_lr_frac: f64,
    /// pass@k evaluation every N steps (0 = only at the end).
    pub eval_every: u64,
    /// GSM8K test problems in that evaluation.
    pub eval_examples: usize,
    /// k of pass@k.
    pub eval_k: usize,
    /// Save every N steps (the last step is always saved).
    pub save_every: u64,
    /// Resume this run at this step.
    pub resume_from_step: Option<u64>,
    /// Stop (and save) here.
    pub stop_after: Option<u64>,
    /// Seed of the sampling.
    pub seed: u64,
    /// Compute dtype.
    #[serde(skip, default = "default_dtype")]
    pub compute_dtype: ComputeDtype,
    /// Progress bar.
    pub progress: bool,
    /// Data-parallel layout; `None`: this device alone, no collective.
    #[serde(default)]
    pub distributed: Option<nanochat_core::DistributedConfig>,
}

fn default_dtype() -> ComputeDtype {
    ComputeDtype::F32
}

impl ChatRlArgs {
    /// Upstream's defaults.
    pub fn new(base_dir: PathBuf, data_dir: PathBuf) -> Self {
        Self {
            base_dir,
            data_dir,
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
            embedding_lr: None,
            unembedding_lr: None,
            matrix_lr: None,
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
    let mut loss_sum = 0.0;
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
        let loss = (model.forward_loss(x, y, Reduction::None) * w).sum();
        loss_sum += loss.clone().into_scalar().elem_f64();
        let grads = loss.backward();
        accum.accumulate(model, GradientsParams::from_grads(grads, model));
    }
    (loss_sum, accum.grads())
}

/// Runs (or resumes) RL.
pub fn chat_rl<B: TrainBackend>(
    args: &ChatRlArgs,
    tokenizer: Arc<Tokenizer>,
    device: &B::Device,
) -> Result<RlSummary, TrainError> {
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
    let dir = checkpoint_dir(&args.base_dir, Source::Rl, &tag);
    let train = Gsm8k::load(&args.data_dir.join("tasks/gsm8k/train.jsonl"))
        .map_err(|e| TrainError::Data(e.to_string()))?;
    let test = Gsm8k::load(&args.data_dir.join("tasks/gsm8k/test.jsonl"))
        .map_err(|e| TrainError::Data(e.to_string()))?;
    let e = args.examples_per_step.max(1);
    let full = (train.len() / e * args.num_epochs) as u64;
    let num_steps = args.num_steps.unwrap_or(full);

    let extra = &src_meta.metadata.extra;
    let cfg = inherited_config(
        &src_meta.metadata,
        args.embedding_lr,
        args.unembedding_lr,
        args.matrix_lr,
    );
    let total = extra
        .get("total_batch_size")
        .and_then(|v| v.as_u64())
        .unwrap_or(B_REF);
    let lrs = GroupLrs::scaled(&cfg.optimizer, (total as f64 / B_REF as f64).sqrt());

    // The model is loaded once; every rank gets a copy (same weights, same parameter ids).
    let (model, resume_meta) = resume_or_source(src_model, &dir, args.resume_from_step, device)?;
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
        cfg,
        lrs,
        num_steps,
        resume_meta,
        extra: extra.clone(),
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
    cfg: nanochat_core::TrainingConfiguration,
    lrs: GroupLrs,
    num_steps: u64,
    resume_meta: Option<nanochat_core::CheckpointMeta>,
    extra: std::collections::BTreeMap<String, serde_json::Value>,
}

/// The loop of one rank: it samples its share of the step's problems (`rank, rank + world,
/// …`), and the ranks' gradients are summed (each rollout is already weighted by the whole
/// step's problem count).
fn rl_rank<B: TrainBackend>(
    run: &RlRun<'_>,
    model: Gpt<B>,
    rank: Rank<B::InnerBackend>,
) -> Result<RlSummary, TrainError> {
    let RlRun {
        args,
        dir,
        train,
        test,
        cfg,
        lrs,
        extra,
        ..
    } = run;
    let (args, num_steps) = (*args, run.num_steps);
    let tokenizer = run.tokenizer.clone();
    let device = &rank.device;
    let master = rank.is_master();
    let e = args.examples_per_step.max(1);
    let mut opt = MuonAdamW::new(&model, &cfg.optimizer, lrs)?;
    let start = match &run.resume_meta {
        None => 0,
        Some(meta) => {
            let step = meta.metadata.step;
            load_optimizer_state(&mut opt, dir, meta, step, device)?;
            if master {
                truncate_metrics(dir, step)?;
            }
            step
        }
    };
    let mut model = model.with_compute_dtype(args.compute_dtype);
    let mut metrics_file = if master {
        Some(open_metrics(dir)?)
    } else {
        None
    };
    let pb = progress_bar(args.progress && master, num_steps, STEPS_TEMPLATE);
    pb.set_position(start);
    let log = |line: String| {
        if master {
            pb.suspend(|| tracing::info!("{line}"))
        }
    };
    let t_run = Instant::now();
    let max_len = model.config().sequence_len;
    let bos = tokenizer.bos_token_id();
    let mut eval = None;
    let mut rewards_log = Vec::new();
    let mut step = start;
    loop {
        let last = step >= num_steps;
        if last || (args.eval_every > 0 && step % args.eval_every == 0) {
            let engine = Engine::new(model.valid(), tokenizer.clone())?;
            let r = evaluate_pass_at_k(
                &engine,
                test,
                args.eval_examples,
                args.eval_k,
                args.seed ^ 0xe7a1,
                args.max_new_tokens,
                &rank,
            )?;
            log(format!(
                "Step {step:05} | GSM8K pass@1: {:.4} | pass@{}: {:.4}",
                r.pass1, r.k, r.pass_k
            ));
            eval = Some(r);
        }
        let stop_here = args.stop_after == Some(step);
        let periodic = step > 0
            && Some(step) != args.resume_from_step
            && args.save_every > 0
            && step % args.save_every == 0;
        if master && (last || periodic || (stop_here && Some(step) != args.resume_from_step)) {
            let mut meta = CheckpointMetadata::new(step, chrono::Utc::now());
            meta.extra.insert("user_config".into(), meta_json(cfg));
            meta.extra.insert("stage_config".into(), meta_json(args));
            for k in ["device_batch_size", "max_seq_len", "total_batch_size"] {
                if let Some(v) = extra.get(k) {
                    meta.extra.insert(k.into(), v.clone());
                }
            }
            if let Some(r) = eval {
                meta.extra.insert("gsm8k".into(), meta_json(&r));
            }
            let optim = to_safetensors(&opt.state_tensors(), None)?;
            save_checkpoint(dir, &model, meta, &[(optim_file_name(step, 0), optim)])?;
            log(format!("saved step {step} to {}", dir.display()));
        }
        if last || stop_here {
            break;
        }

        // Rollouts with the current policy.
        let t0 = Instant::now();
        let engine = Engine::new(model.valid(), tokenizer.clone())?;
        let mut rollouts = Vec::new();
        let mut reward_sum = 0.0;
        let mut seq_len_sum = 0usize;
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
            reward_sum += mean;
            let sampled: usize = rows
                .iter()
                .map(|r| r.masks.iter().filter(|&&m| m == 1).count())
                .sum();
            for (r, reward) in rows.into_iter().zip(rewards) {
                seq_len_sum += r.tokens.len();
                let adv = reward - mean;
                if adv == 0.0 || r.tokens.is_empty() {
                    continue; // No gradient from this sample.
                }
                let mut ids = prompt.clone();
                ids.extend(&r.tokens);
                ids.truncate(max_len + 1);
                rollouts.push(Rollout {
                    prompt_len: prompt.len(),
                    masks: r.masks,
                    ids,
                    advantage: adv,
                    weight: 1.0 / (sampled.max(1) * e) as f64,
                });
            }
        }
        drop(engine);
        let sums = rank.sum_f64(&[reward_sum, seq_len_sum as f64, rollouts.len() as f64])?;
        let (reward_sum, seq_len_sum, updates) = (sums[0], sums[1], sums[2] as usize);
        if updates > 0 && rollouts.is_empty() {
            // Every rank must send gradients to the all-reduce: a zero-weighted row gives
            // this rank's zeros.
            rollouts.push(Rollout {
                ids: vec![bos, bos],
                prompt_len: 1,
                masks: vec![1],
                advantage: 0.0,
                weight: 0.0,
            });
        }

        // Policy gradient over the rollouts, device_batch_size rows at a time.
        let lrm = args.init_lr_frac * (1.0 - step as f64 / num_steps.max(1) as f64);
        let mut loss_sum = 0.0;
        if updates > 0 {
            let (loss, grads) =
                policy_gradient(&model, &rollouts, bos, args.device_batch_size, device);
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
        log(format!(
            "step {step:05}/{num_steps:05} | reward: {reward:.4} | mean len: {seq:.1} | updates: {updates} | lrm: {lrm:.4} | dt: {:.2}s",
            dt
        ));
        let line = serde_json::json!({
            "step": step, "reward": reward, "loss": loss_sum, "seq_len": seq, "lrm": lrm, "dt": dt,
        });
        if let Some((file, path)) = &mut metrics_file {
            writeln!(file, "{line}")
                .map_err(|e| nanochat_core::fs::IoError::new("append", &*path, e))?;
        }
        rewards_log.push(reward);
        step += 1;
        pb.set_position(step);
    }
    pb.finish_and_clear();
    Ok(RlSummary {
        step,
        checkpoint_dir: dir.clone(),
        eval,
        rewards: rewards_log,
        seconds: t_run.elapsed().as_secs_f64(),
    })
}

trait ElemF64 {
    fn elem_f64(self) -> f64;
}
impl<E: burn::tensor::ElementConversion> ElemF64 for E {
    fn elem_f64(self) -> f64 {
        self.elem::<f64>()
    }
}
