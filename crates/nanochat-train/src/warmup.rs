//! Kernel warm-up ahead of a run (`nanochat base-train … --warmup-only`): the work of a
//! pretraining run's first step at its exact shapes, so that a GPU's kernel caches (CubeCL's
//! autotune results and compiled kernels, [`nanochat_model::kernel_cache`]) are full before
//! the run starts, and the minutes a cold cache costs are spent, and shown, up front.
//!
//! It runs the three kinds of work `base_train` does, each once, on random tokens: an
//! optimizer step of the plan's model and micro-batch (two micro-batches when the plan
//! accumulates gradients, so that the accumulation runs too; the update in the compute dtype,
//! with the same Muon orthogonalisation dtype), a validation forward (`accumulate_bpb`, per
//! position losses) and the greedy samples of upstream's fixed prompts through the KV cache.
//! Nothing is trained, saved or read from the dataset. The caller counts the tuned kernels
//! (the number of autotune results in the cache folder) before and after each phase.

use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::{Distribution, Int, Tensor};
use nanochat_core::{TrainingConfiguration, Validate};
use nanochat_eval::loss_eval::{BpbSums, accumulate_bpb};
use nanochat_model::distributed::Rank;
use nanochat_model::{ComputeDtype, Gpt, TrainBackend};
use nanochat_tokenizer::Tokenizer;
use serde::Serialize;

use crate::base_train::{SAMPLE_PROMPTS, sample_greedy};
use crate::data_parallel::train_step;
use crate::error::TrainError;
use crate::optim::{GroupLrs, MuonAdamW, StepScalars};
use crate::schedule::RunPlan;

/// One phase of the warm-up: what ran, how long it took, and how many kernels it tuned.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WarmupPhase {
    /// `training step`, `validation` or `samples`.
    pub name: &'static str,
    /// Wall time, the device's queue drained (s).
    pub seconds: f64,
    /// Autotune results added to the cache during the phase (`None`: no cache, the CPU).
    pub tuned: Option<u64>,
}

/// Runs the warm-up of the pretraining run `cfg` (its model from the depth dial and the
/// tokenizer's vocabulary, its micro-batch) in `compute_dtype` on `device`. `tuned` counts
/// the autotune results in the kernel cache (`None` without one); `report` sees each phase
/// as it ends.
pub fn warmup<B: TrainBackend>(
    cfg: &TrainingConfiguration,
    tokenizer: &Tokenizer,
    compute_dtype: ComputeDtype,
    device: &B::Device,
    tuned: &dyn Fn() -> Option<u64>,
    mut report: impl FnMut(&WarmupPhase),
) -> Result<Vec<WarmupPhase>, TrainError> {
    cfg.validate()?;
    let vocab = tokenizer.vocab_size();
    let plan = RunPlan::new(cfg, vocab, 1)?;
    let (b, t) = (cfg.device_batch_size, cfg.max_seq_len);
    B::seed(device, cfg.seed);
    let model = Gpt::<B>::init(&plan.model, device)?.with_compute_dtype(compute_dtype);
    let lrs = GroupLrs::scaled(&cfg.optimizer, plan.batch_lr_scale);
    let mut opt = MuonAdamW::new(&model, &cfg.optimizer, &lrs)?
        .with_bf16_orthogonalization(compute_dtype == ComputeDtype::BF16);
    let rank = Rank::single(device.clone());
    let dist = Distribution::Uniform(0.0, vocab as f64);
    let rows = || {
        let row = Tensor::<B, 2, Int>::random([b, t + 1], dist, device);
        (row.clone().narrow(1, 0, t), row.narrow(1, 1, t))
    };

    let mut phases = Vec::new();
    let mut phase = |name: &'static str, work: &mut dyn FnMut() -> Result<(), TrainError>| {
        let before = tuned();
        let clock = Instant::now();
        work()?;
        B::sync(device).ok();
        let p = WarmupPhase {
            name,
            seconds: clock.elapsed().as_secs_f64(),
            tuned: before.zip(tuned()).map(|(a, z)| z.saturating_sub(a)),
        };
        report(&p);
        phases.push(p);
        Ok::<(), TrainError>(())
    };

    let mut model = Some(model);
    phase("training step", &mut || {
        let scalars = StepScalars {
            lr_multiplier: 1.0,
            muon_momentum: plan.muon_momentum(0),
            muon_weight_decay: plan.muon_weight_decay(0),
        };
        let accum = plan.grad_accum_steps.min(2);
        let m = model
            .take()
            .ok_or(TrainError::Data("the model moved".into()))?;
        let next = || Ok(rows());
        model = Some(train_step(m, &mut opt, next, accum, &scalars, &rank, None)?.0);
        Ok(())
    })?;
    let eval = model
        .ok_or(TrainError::Data("the model moved".into()))?
        .valid();
    phase("validation", &mut || {
        let row = Tensor::<B::InnerBackend, 2, Int>::random([b, t + 1], dist, device);
        let (x, y) = (row.clone().narrow(1, 0, t), row.narrow(1, 1, t));
        let ones = Tensor::<B::InnerBackend, 1, Int>::ones([vocab], device);
        let mut sums = BpbSums::default();
        accumulate_bpb(&eval, x, y, &ones, &mut sums);
        Ok(())
    })?;
    phase("samples", &mut || {
        for prompt in SAMPLE_PROMPTS {
            sample_greedy(&eval, tokenizer, prompt, 16);
        }
        Ok(())
    })?;
    Ok(phases)
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use nanochat_core::tokenizer_config::Vocabulary;
    use nanochat_model::backend::CpuBackend;
    use nanochat_tokenizer::SPLIT_PATTERN;
    use std::cell::Cell;

    #[test]
    fn runs_the_three_phases_at_the_plan_shapes() {
        let tokenizer =
            Tokenizer::from_vocab(Vocabulary::from_merges(&[]).unwrap(), SPLIT_PATTERN).unwrap();
        let cfg = TrainingConfiguration {
            depth: 1,
            aspect_ratio: 32,
            head_dim: 32,
            max_seq_len: 32,
            window_pattern: "L".into(),
            device_batch_size: 2,
            total_batch_size: Some(128),
            num_iterations: Some(100),
            ..TrainingConfiguration::default()
        };
        // The cache counter is asked before and after each phase, and its difference is
        // reported: a counter that grows by one per call shows one kernel per phase.
        let calls = Cell::new(0u64);
        let tuned = || {
            calls.set(calls.get() + 1);
            Some(calls.get())
        };
        let mut seen = Vec::new();
        let phases = warmup::<CpuBackend>(
            &cfg,
            &tokenizer,
            ComputeDtype::F32,
            &Default::default(),
            &tuned,
            |p| seen.push(p.name),
        )
        .unwrap();
        assert_eq!(seen, ["training step", "validation", "samples"]);
        assert_eq!(calls.get(), 6);
        assert!(phases.iter().all(|p| p.tuned == Some(1) && p.seconds > 0.0));

        let bad = TrainingConfiguration {
            max_seq_len: 0,
            ..cfg
        };
        let err = warmup::<CpuBackend>(
            &bad,
            &tokenizer,
            ComputeDtype::F32,
            &Default::default(),
            &|| None,
            |_| {},
        );
        assert!(
            err.is_err(),
            "an invalid configuration is refused before any work"
        );
    }
}
