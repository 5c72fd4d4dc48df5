//! Optimizer hyperparameters and the learning-rate schedule (upstream `GPT.setup_optimizer` in
//! `nanochat/gpt.py`, the `base_train.py` optimisation flags and `get_lr_multiplier`).
//!
//! The defaults are upstream HEAD's `base_train.py` flags. Per-group AdamW betas, eps and weight
//! decays are upstream's constants, kept here as data so that a run's meta records exactly what
//! was used.

use serde::{Deserialize, Serialize};

use crate::validation::{
    Interval, VResult, Validate, check_non_negative, check_positive_f, check_range,
};

const ENTITY: &str = "OptimizerConfig";

/// Which optimizer trains the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerType {
    /// Upstream HEAD's combined optimizer: Muon (Polar Express, MuonEq, Muon+, NorMuon, cautious
    /// weight decay) for the block matrices, AdamW for embeddings, lm_head and scalars.
    #[default]
    MuonAdamW,
    /// AdamW for every parameter (block matrices at `matrix_lr` with betas (0.9, 0.95)); a
    /// baseline for comparison.
    AdamW,
}

/// AdamW settings of one parameter group.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamGroup {
    /// β1 and β2.
    pub betas: [f64; 2],
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

/// The optimizer configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerConfig {
    /// Which optimizer.
    pub optimizer: OptimizerType,
    /// AdamW learning rate of the token embedding (`wte`; value embeddings get half).
    pub embedding_lr: f64,
    /// AdamW learning rate of the lm_head.
    pub unembedding_lr: f64,
    /// Muon learning rate of the block matrices.
    pub matrix_lr: f64,
    /// AdamW learning rate of the per-layer scalars (`x0_lambdas`; `resid_lambdas` get 1 %).
    pub scalar_lr: f64,
    /// AdamW learning rate of the smear gate, smear lambda and backout lambda (fixed).
    pub gate_lr: f64,
    /// Muon weight decay (cautious, scheduled).
    pub weight_decay: f64,
    /// AdamW ε (all groups).
    pub adam_eps: f64,
    /// lm_head group.
    pub lm_head: AdamGroup,
    /// wte group.
    pub wte: AdamGroup,
    /// value-embedding group.
    pub value_embeds: AdamGroup,
    /// resid_lambdas group.
    pub resid_lambdas: AdamGroup,
    /// x0_lambdas group.
    pub x0_lambdas: AdamGroup,
    /// smear/backout group.
    pub gates: AdamGroup,
    /// Muon Nesterov momentum (the schedule overrides it during training).
    pub muon_momentum: f64,
    /// Muon NorMuon second-moment decay.
    pub muon_beta2: f64,
    /// Polar Express iterations.
    pub ns_steps: usize,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            optimizer: OptimizerType::MuonAdamW,
            embedding_lr: 0.3,
            unembedding_lr: 0.008,
            matrix_lr: 0.02,
            scalar_lr: 0.5,
            gate_lr: 0.2,
            weight_decay: 0.28,
            adam_eps: 1e-10,
            lm_head: AdamGroup {
                betas: [0.8, 0.96],
                weight_decay: 0.01,
            },
            wte: AdamGroup {
                betas: [0.8, 0.995],
                weight_decay: 0.001,
            },
            value_embeds: AdamGroup {
                betas: [0.8, 0.995],
                weight_decay: 0.01,
            },
            resid_lambdas: AdamGroup {
                betas: [0.8, 0.95],
                weight_decay: 0.05,
            },
            x0_lambdas: AdamGroup {
                betas: [0.96, 0.95],
                weight_decay: 0.0,
            },
            gates: AdamGroup {
                betas: [0.8, 0.95],
                weight_decay: 0.0,
            },
            muon_momentum: 0.95,
            muon_beta2: 0.9,
            ns_steps: 5,
        }
    }
}

impl OptimizerConfig {
    /// The AdamW groups by name, in upstream's order.
    pub fn adam_groups(&self) -> [(&'static str, &AdamGroup); 6] {
        [
            ("lm_head", &self.lm_head),
            ("wte", &self.wte),
            ("value_embeds", &self.value_embeds),
            ("resid_lambdas", &self.resid_lambdas),
            ("x0_lambdas", &self.x0_lambdas),
            ("gates", &self.gates),
        ]
    }
}

impl Validate for OptimizerConfig {
    fn validate(&self) -> VResult {
        for (field, lr) in [
            ("embedding_lr", self.embedding_lr),
            ("unembedding_lr", self.unembedding_lr),
            ("matrix_lr", self.matrix_lr),
            ("scalar_lr", self.scalar_lr),
            ("gate_lr", self.gate_lr),
        ] {
            check_positive_f(ENTITY, field, lr)?;
        }
        check_non_negative(ENTITY, "weight_decay", self.weight_decay)?;
        check_positive_f(ENTITY, "adam_eps", self.adam_eps)?;
        let beta_range = Interval::open(0.0, 1.0);
        for (name, g) in self.adam_groups() {
            check_range(ENTITY, &format!("{name}.betas[0]"), g.betas[0], beta_range)?;
            check_range(ENTITY, &format!("{name}.betas[1]"), g.betas[1], beta_range)?;
            check_non_negative(ENTITY, &format!("{name}.weight_decay"), g.weight_decay)?;
        }
        check_range(ENTITY, "muon_momentum", self.muon_momentum, beta_range)?;
        check_range(ENTITY, "muon_beta2", self.muon_beta2, beta_range)?;
        crate::validation::check_positive(ENTITY, "ns_steps", self.ns_steps as u64)?;
        Ok(())
    }
}

/// Learning-rate multiplier schedule: linear warmup, constant, linear warmdown to a final
/// fraction (upstream `get_lr_multiplier`). Midtraining is `warmup 0, warmdown 0.2, final 0`;
/// SFT `warmup 0, warmdown 0.5, final 0`; RL a full linear decay `warmdown 1.0, final 0`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LRSchedule {
    /// Steps of linear warmup from `1/warmup` to 1.
    pub warmup_steps: u64,
    /// Fraction of the run, at its end, over which the multiplier decays linearly.
    pub warmdown_ratio: f64,
    /// The multiplier reached at the last step.
    pub final_lr_frac: f64,
}

impl Default for LRSchedule {
    fn default() -> Self {
        Self {
            warmup_steps: 40,
            warmdown_ratio: 0.65,
            final_lr_frac: 0.05,
        }
    }
}

impl LRSchedule {
    /// Steps in the warmdown, `round(warmdown_ratio · num_iterations)`.
    pub fn warmdown_steps(&self, num_iterations: u64) -> u64 {
        (self.warmdown_ratio * num_iterations as f64).round() as u64
    }

    /// The LR multiplier at step `it` of `num_iterations` (exactly upstream's formula).
    pub fn multiplier(&self, it: u64, num_iterations: u64) -> f64 {
        let warmdown = self.warmdown_steps(num_iterations);
        if it < self.warmup_steps {
            (it + 1) as f64 / self.warmup_steps as f64
        } else if it + warmdown <= num_iterations {
            1.0
        } else {
            let progress = (num_iterations as f64 - it as f64) / warmdown as f64;
            progress + (1.0 - progress) * self.final_lr_frac
        }
    }
}

impl Validate for LRSchedule {
    fn validate(&self) -> VResult {
        check_range(
            "LRSchedule",
            "warmdown_ratio",
            self.warmdown_ratio,
            Interval::closed(0.0, 1.0),
        )?;
        check_range(
            "LRSchedule",
            "final_lr_frac",
            self.final_lr_frac,
            Interval::closed(0.0, 1.0),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_matches_upstream_formula() {
        let s = LRSchedule::default();
        let n = 1000;
        assert_eq!(s.multiplier(0, n), 1.0 / 40.0);
        assert_eq!(s.multiplier(39, n), 1.0);
        assert_eq!(s.multiplier(350, n), 1.0); // 1000 - 650 = 350 is still constant
        let m = s.multiplier(351, n);
        assert!((m - (649.0 / 650.0 + (1.0 / 650.0) * 0.05)).abs() < 1e-12);
        let last = s.multiplier(999, n);
        assert!((last - (1.0 / 650.0 + (649.0 / 650.0) * 0.05)).abs() < 1e-12);
        // The value at it == n would be exactly final_lr_frac.
        assert!((s.multiplier(n, n) - 0.05).abs() < 1e-12);
    }

    #[test]
    fn no_warmdown_means_constant() {
        let s = LRSchedule {
            warmup_steps: 0,
            warmdown_ratio: 0.0,
            final_lr_frac: 0.0,
        };
        assert!((0..10).all(|i| s.multiplier(i, 10) == 1.0));
    }

    #[test]
    fn defaults_are_valid_and_match_upstream_groups() {
        let c = OptimizerConfig::default();
        c.validate().unwrap();
        assert_eq!(c.x0_lambdas.betas, [0.96, 0.95]);
        assert_eq!(c.lm_head.weight_decay, 0.01);
    }
}
