//! Training throughput on random tokens (the measurement of upstream's `dev/` benchmarks and
//! of the reference table in `docs/performance.md`): `steps` optimizer steps of a depth-`d`
//! model at a given device batch, after `warmup` untimed steps, through the same
//! [`train_step`] as pretraining — so `--devices` measures the data-parallel path too.
//! Reports the median step time, tokens per second and MFU (upstream's FLOPs formula).

use nanochat_model::TrainBackend;
use std::time::Instant;

use burn::optim::GradientsParams;
use burn::tensor::{Distribution, Int, Tensor};
use nanochat_core::{DistributedConfig, ModelConfig, TrainingConfiguration, Validate};
use nanochat_model::distributed::{Rank, run_replicated};
use nanochat_model::{ComputeDtype, Gpt, Reduction};
use serde::Serialize;

use crate::data_parallel::train_step;
use crate::error::TrainError;
use crate::optim::{GroupLrs, MuonAdamW, StepScalars};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchTrainArgs {
    /// Model depth (the depth dial: width, heads follow).
    pub depth: usize,
    /// Rows per device per step.
    pub device_batch_size: usize,
    /// Tokens per row.
    pub seq_len: usize,
    /// Sliding-window pattern (upstream's reference table uses `L`).
    pub window_pattern: String,
    /// Vocabulary size of the random tokens and the model.
    pub vocab_size: usize,
    /// Target head dimension (the model width is rounded up to a multiple of it).
    pub head_dim: usize,
    /// Timed steps.
    pub steps: usize,
    /// Untimed steps first (autotuning, allocation).
    pub warmup: usize,
    /// Activations/matmul dtype.
    pub compute_dtype: ComputeDtype,
    /// Peak FLOP/s of one device, for MFU.
    pub peak_flops: Option<f64>,
    /// Data-parallel layout; `None`: no collective.
    pub distributed: Option<DistributedConfig>,
    /// Also time the forward, backward and optimizer of each step separately (a device
    /// synchronisation between them; the step times then include those).
    pub phases: bool,
}

/// Median seconds of the phases of a step ([`BenchTrainArgs::phases`]).
#[derive(Debug, Clone, Serialize)]
pub struct Phases {
    /// Forward and loss.
    pub forward_s: f64,
    /// Backward (gradients of every parameter).
    pub backward_s: f64,
    /// Gradient all-reduce (ranks) and the MuonAdamW update.
    pub optimizer_s: f64,
}

/// The measurement (rank 0's clock; every step ends with the gradient all-reduce, so the
/// ranks move in lockstep).
#[derive(Debug, Clone, Serialize)]
pub struct BenchTrainResult {
    /// Model depth.
    pub depth: usize,
    /// Parameters.
    pub params: u64,
    /// Ranks.
    pub world_size: usize,
    /// Whether the step went through the collective engine.
    pub collective: bool,
    /// `device_batch_size × seq_len` per rank.
    pub tokens_per_rank: usize,
    /// Median step time (s).
    pub median_step_s: f64,
    /// Every timed step (s).
    pub step_s: Vec<f64>,
    /// Tokens per second, all ranks.
    pub tok_per_sec: f64,
    /// Model FLOPs utilisation (%), when the peak is known.
    pub mfu: Option<f64>,
    /// Minor page faults of the process per timed step (Linux; `None` elsewhere).
    pub minor_faults_per_step: Option<f64>,
    /// The phases of a step, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phases: Option<Phases>,
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The process's minor page faults so far (`/proc/self/stat`, field 10), on Linux.
fn minor_faults() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(7)?.parse().ok()
}

/// The model configuration `args` describes.
pub fn bench_model(args: &BenchTrainArgs) -> Result<ModelConfig, TrainError> {
    let cfg = TrainingConfiguration {
        depth: args.depth,
        max_seq_len: args.seq_len,
        window_pattern: args.window_pattern.clone(),
        head_dim: args.head_dim,
        ..TrainingConfiguration::default()
    };
    let model = cfg.depth_dial(args.vocab_size).build()?;
    model.validate()?;
    Ok(model)
}

/// Runs the benchmark on `device` (the first rank's device).
pub fn bench_train<B: TrainBackend>(
    args: &BenchTrainArgs,
    device: &B::Device,
) -> Result<BenchTrainResult, TrainError> {
    let config = bench_model(args)?;
    B::seed(device, 42);
    let model = Gpt::<B>::init(&config, device)?;
    run_replicated::<B, _, _, _, _, _>(args.distributed.as_ref(), device, model, |model, rank| {
        bench_rank(args, &config, model, rank)
    })
}

/// The single-device cost of the data-parallel path, measured in one process (so both sides
/// share the autotuned kernels): `rounds` × (no collective, then `--devices 1` through the
/// collective), each from the same initial weights.
#[derive(Debug, Clone, Serialize)]
pub struct CollectiveOverhead {
    /// Runs without the collective.
    pub plain: Vec<BenchTrainResult>,
    /// Runs through the collective with one rank.
    pub collective: Vec<BenchTrainResult>,
    /// Median step time through the collective over the median without (1.0 = no cost).
    pub ratio: f64,
}

/// Measures [`CollectiveOverhead`] on `device`.
pub fn bench_collective_overhead<B: TrainBackend>(
    args: &BenchTrainArgs,
    device: &B::Device,
    rounds: usize,
) -> Result<CollectiveOverhead, TrainError> {
    let config = bench_model(args)?;
    B::seed(device, 42);
    let model = Gpt::<B>::init(&config, device)?;
    let one = DistributedConfig::local(1);
    let (mut plain, mut collective) = (Vec::new(), Vec::new());
    for _ in 0..rounds.max(1) {
        plain.push(bench_rank(
            args,
            &config,
            model.clone(),
            Rank::single(device.clone()),
        )?);
        collective.push(run_replicated::<B, _, _, _, _, _>(
            Some(&one),
            device,
            model.clone(),
            |model, rank| bench_rank(args, &config, model, rank),
        )?);
    }
    let all = |runs: &[BenchTrainResult]| -> Vec<f64> {
        runs.iter().flat_map(|r| r.step_s.iter().copied()).collect()
    };
    let ratio = median(&all(&collective)) / median(&all(&plain));
    Ok(CollectiveOverhead {
        plain,
        collective,
        ratio,
    })
}

fn bench_rank<B: TrainBackend>(
    args: &BenchTrainArgs,
    config: &ModelConfig,
    model: Gpt<B>,
    rank: Rank<B::InnerBackend>,
) -> Result<BenchTrainResult, TrainError> {
    let device = rank.device.clone();
    let opt_cfg = nanochat_core::OptimizerConfig::default();
    let mut model = model.with_compute_dtype(args.compute_dtype);
    let mut opt = MuonAdamW::new(&model, &opt_cfg, &GroupLrs::scaled(&opt_cfg, 1.0))?
        .with_bf16_orthogonalization(args.compute_dtype == ComputeDtype::BF16);
    let scalars = StepScalars {
        lr_multiplier: 1.0,
        muon_momentum: 0.95,
        muon_weight_decay: 0.0,
    };
    let (b, t) = (args.device_batch_size, args.seq_len);
    let mut times = Vec::with_capacity(args.steps);
    let mut phases: Vec<[f64; 3]> = Vec::new();
    let mut faults_at_warmup_end = None;
    for step in 0..args.warmup + args.steps {
        if step == args.warmup {
            faults_at_warmup_end = minor_faults();
        }
        // A fresh random batch every step, drawn before the clock starts.
        let dist = Distribution::Uniform(0.0, args.vocab_size as f64);
        let row = Tensor::<B, 2, Int>::random([b, t + 1], dist, &device);
        let mut batch = Some((row.clone().narrow(1, 0, t), row.narrow(1, 1, t)));
        B::sync(&device).ok();
        let t0 = Instant::now();
        let mut next = || {
            batch
                .take()
                .ok_or_else(|| TrainError::Data("one micro-batch per bench step".into()))
        };
        model = if args.phases {
            let (x, y) = next()?;
            let (updated, split) = phased_step(model, &mut opt, x, y, &scalars, &rank)?;
            if step >= args.warmup {
                phases.push(split);
            }
            updated
        } else {
            train_step(model, &mut opt, next, 1, &scalars, &rank, None)?.0
        };
        B::sync(&device).ok();
        let dt = t0.elapsed().as_secs_f64();
        if step >= args.warmup {
            times.push(dt);
        }
        if rank.is_master() {
            tracing::info!(
                "bench step {step} ({}): {:.1} ms",
                if step < args.warmup {
                    "warm-up"
                } else {
                    "timed"
                },
                dt * 1e3
            );
        }
    }
    let minor_faults_per_step = match (faults_at_warmup_end, minor_faults()) {
        (Some(a), Some(b)) if !times.is_empty() => Some((b - a) as f64 / times.len() as f64),
        _ => None,
    };
    let median_step = median(&times);
    let phase = |i: usize| median(&phases.iter().map(|p| p[i]).collect::<Vec<_>>());
    let phases = (!phases.is_empty()).then(|| Phases {
        forward_s: phase(0),
        backward_s: phase(1),
        optimizer_s: phase(2),
    });
    let tokens = (b * t * rank.world_size) as f64;
    let tok_per_sec = tokens / median_step;
    let flops = config.estimate_flops() as f64;
    Ok(BenchTrainResult {
        depth: args.depth,
        params: config.param_counts().total,
        world_size: rank.world_size,
        collective: rank.uses_collective(),
        tokens_per_rank: b * t,
        median_step_s: median_step,
        step_s: times,
        tok_per_sec,
        mfu: args
            .peak_flops
            .map(|p| 100.0 * flops * tok_per_sec / (p * rank.world_size as f64)),
        minor_faults_per_step,
        phases,
    })
}

/// One optimizer step like [`train_step`]'s, with the device synchronised after the forward,
/// the backward and the update: the updated model and the three durations (s).
fn phased_step<B: TrainBackend>(
    model: Gpt<B>,
    opt: &mut MuonAdamW<B::InnerBackend>,
    x: Tensor<B, 2, Int>,
    y: Tensor<B, 2, Int>,
    scalars: &StepScalars,
    rank: &Rank<B::InnerBackend>,
) -> Result<(Gpt<B>, [f64; 3]), TrainError> {
    let device = &rank.device;
    let clock = Instant::now();
    let loss = model.forward_loss(x, y, Reduction::Mean);
    B::sync(device).ok();
    let forward = clock.elapsed().as_secs_f64();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    B::sync(device).ok();
    let backward = clock.elapsed().as_secs_f64() - forward;
    let grads = rank.all_reduce_grads(&model, grads)?;
    let model = opt.step(model, grads, scalars)?;
    B::sync(device).ok();
    let optimizer = clock.elapsed().as_secs_f64() - forward - backward;
    Ok((model, [forward, backward, optimizer]))
}
