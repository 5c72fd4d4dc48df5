//! The arithmetic of a pretraining run (upstream HEAD `scripts/base_train.py`): model from the
//! depth dial, horizon (`--num-iterations` > `--target-flops` > `--target-param-data-ratio`),
//! automatic total batch size (Power Lines: `B = 2^round(log2(2^19 · (D/D_ref)^0.383))`), the
//! √(B/B_ref) learning-rate scaling, weight-decay scaling `wd·√(B/B_ref)·(D_ref/D)`, gradient
//! accumulation, and the per-step schedules (LR multiplier, Muon momentum, cosine weight decay).

use nanochat_core::{DepthDial, ModelConfig, TrainingConfiguration, ValidationError};

/// Reference batch size at d12 (tokens).
pub const B_REF: u64 = 1 << 19;

/// Everything derived from a [`TrainingConfiguration`] before step 0.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPlan {
    /// The model.
    pub model: ModelConfig,
    /// Optimizer steps.
    pub num_iterations: u64,
    /// Tokens per optimizer step (all ranks, all micro-steps).
    pub total_batch_size: u64,
    /// Micro-steps per optimizer step.
    pub grad_accum_steps: u64,
    /// `√(B/B_ref)`, applied to the batch-scaled learning rates.
    pub batch_lr_scale: f64,
    /// Muon weight decay at step 0 (before the cosine schedule).
    pub weight_decay: f64,
    /// `ratio · scaling params` (the compute-optimal horizon in tokens).
    pub target_tokens: u64,
    /// `estimate_flops()` of the model.
    pub flops_per_token: u64,
    /// Warmdown length in steps.
    pub warmdown_steps: u64,
}

fn scaling_params(c: &ModelConfig) -> u64 {
    c.param_counts().scaling()
}

impl RunPlan {
    /// Derives the plan for `cfg` with a tokenizer of `vocab_size` on `world_size` ranks.
    pub fn new(
        cfg: &TrainingConfiguration,
        vocab_size: usize,
        world_size: usize,
    ) -> Result<Self, ValidationError> {
        let model = cfg.depth_dial(vocab_size).build()?;
        let ratio = cfg.target_param_data_ratio.unwrap_or(12.0);
        let target_tokens = (ratio * scaling_params(&model) as f64) as u64;
        let d12 = DepthDial {
            depth: 12,
            ..cfg.depth_dial(vocab_size)
        }
        .build()?;
        let d_ref = ratio * scaling_params(&d12) as f64;
        let total_batch_size = match cfg.total_batch_size {
            Some(b) => b,
            None => {
                let predicted = B_REF as f64 * (target_tokens as f64 / d_ref).powf(0.383);
                1u64 << predicted.log2().round().max(0.0) as u32
            }
        };
        let batch_ratio = total_batch_size as f64 / B_REF as f64;
        let batch_lr_scale = if batch_ratio != 1.0 {
            batch_ratio.sqrt()
        } else {
            1.0
        };
        let weight_decay =
            cfg.optimizer.weight_decay * batch_ratio.sqrt() * (d_ref / target_tokens.max(1) as f64);
        let flops_per_token = model.estimate_flops();
        let num_iterations = if let Some(n) = cfg.num_iterations {
            n
        } else if let Some(f) = cfg.target_flops {
            (f / (flops_per_token as f64 * total_batch_size as f64)).round() as u64
        } else {
            target_tokens / total_batch_size
        };
        cfg.check_horizon(num_iterations)?;
        let grad_accum_steps = cfg.gradient_accumulation_steps(total_batch_size, world_size)?;
        Ok(Self {
            warmdown_steps: cfg.schedule.warmdown_steps(num_iterations),
            model,
            num_iterations,
            total_batch_size,
            grad_accum_steps,
            batch_lr_scale,
            weight_decay,
            target_tokens,
            flops_per_token,
        })
    }

    /// Muon momentum at `it`: 0.85 → 0.97 over the first 400 steps, 0.97, then 0.97 → 0.90
    /// across the warmdown (upstream `get_muon_momentum`).
    pub fn muon_momentum(&self, it: u64) -> f64 {
        let warmdown_start = self.num_iterations - self.warmdown_steps;
        if it < 400 {
            let frac = it as f64 / 400.0;
            (1.0 - frac) * 0.85 + frac * 0.97
        } else if it >= warmdown_start {
            let progress = (it - warmdown_start) as f64 / self.warmdown_steps.max(1) as f64;
            0.97 * (1.0 - progress) + 0.90 * progress
        } else {
            0.97
        }
    }

    /// Muon weight decay at `it`: cosine from the scaled value to 0 (upstream
    /// `get_weight_decay`).
    pub fn muon_weight_decay(&self, it: u64) -> f64 {
        self.weight_decay
            * 0.5
            * (1.0 + (std::f64::consts::PI * it as f64 / self.num_iterations as f64).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(depth: usize, ratio: f64) -> RunPlan {
        let cfg = TrainingConfiguration {
            depth,
            target_param_data_ratio: Some(ratio),
            ..TrainingConfiguration::default()
        };
        RunPlan::new(&cfg, 32768, 1).unwrap()
    }

    #[test]
    fn auto_batch_follows_the_power_law_table() {
        // nanochat.md §5: d≤8 → 2^18, d10–16 → 2^19, d18–26 → 2^20 (ratio 12).
        assert_eq!(plan(8, 12.0).total_batch_size, 1 << 18);
        assert_eq!(plan(12, 12.0).total_batch_size, 1 << 19);
        assert_eq!(plan(16, 12.0).total_batch_size, 1 << 19);
        assert_eq!(plan(20, 12.0).total_batch_size, 1 << 20);
        assert_eq!(plan(26, 12.0).total_batch_size, 1 << 20);
    }

    #[test]
    fn speedrun_d24_ratio_8_matches_upstream() {
        // nanochat.md §5: d24, ratio 8 → B = 2^20, √2 LR scale, wd ≈ 0.0597, 5,568 steps.
        let p = plan(24, 8.0);
        assert_eq!(p.total_batch_size, 1 << 20);
        assert!((p.batch_lr_scale - 2f64.sqrt()).abs() < 1e-12);
        assert!((p.weight_decay - 0.0597).abs() < 5e-4, "{}", p.weight_decay);
        assert_eq!(p.num_iterations, 5568);
        // 16 × 2048 per rank on 8 ranks → 4 micro-steps.
        let cfg = TrainingConfiguration {
            depth: 24,
            device_batch_size: 16,
            target_param_data_ratio: Some(8.0),
            ..TrainingConfiguration::default()
        };
        assert_eq!(RunPlan::new(&cfg, 32768, 8).unwrap().grad_accum_steps, 4);
    }

    #[test]
    fn schedules_match_upstream_formulas() {
        let p = plan(12, 12.0);
        let n = p.num_iterations;
        assert!((p.muon_momentum(0) - 0.85).abs() < 1e-12);
        assert!((p.muon_momentum(200) - 0.91).abs() < 1e-12);
        assert!((p.muon_momentum(400) - 0.97).abs() < 1e-12);
        assert!((p.muon_momentum(n) - 0.90).abs() < 1e-12);
        assert!((p.muon_weight_decay(0) - p.weight_decay).abs() < 1e-15);
        assert!(p.muon_weight_decay(n).abs() < 1e-15);
        assert!((p.muon_weight_decay(n / 2) - p.weight_decay * 0.5).abs() < 1e-3 * p.weight_decay);
    }

    #[test]
    fn horizon_precedence() {
        let base = TrainingConfiguration {
            depth: 4,
            max_seq_len: 256,
            device_batch_size: 1,
            total_batch_size: Some(2048),
            ..TrainingConfiguration::default()
        };
        let flops = RunPlan::new(&base, 1000, 1).unwrap().flops_per_token as f64;
        let by_flops = TrainingConfiguration {
            target_flops: Some(flops * 2048.0 * 100.0),
            ..base.clone()
        };
        assert_eq!(
            RunPlan::new(&by_flops, 1000, 1).unwrap().num_iterations,
            100
        );
        let explicit = TrainingConfiguration {
            num_iterations: Some(77),
            ..by_flops
        };
        assert_eq!(RunPlan::new(&explicit, 1000, 1).unwrap().num_iterations, 77);
        assert_eq!(
            RunPlan::new(&explicit, 1000, 1).unwrap().grad_accum_steps,
            8
        );
    }
}
