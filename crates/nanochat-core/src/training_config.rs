//! The configuration of a training run (upstream `scripts/base_train.py` flags, with the same
//! names), and the batch arithmetic every stage shares.
//!
//! Upstream's `-1 = disabled` numbers are `Option`s here, written and read as `-1` in files.

use serde::{Deserialize, Serialize};

use crate::model_config::{Architecture, DepthDial};
use crate::optimizer_config::{LRSchedule, OptimizerConfig};
use crate::validation::{
    Rule, VResult, Validate, ValidationError, check_at_most, check_positive, check_positive_f,
};

const ENTITY: &str = "TrainingConfiguration";

/// A training run's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainingConfiguration {
    /// Run name for experiment tracking; `dummy` disables remote logging.
    pub run: String,
    /// Depth of the transformer (the one dial).
    pub depth: usize,
    /// `model_dim = depth · aspect_ratio` (rounded up to a multiple of `head_dim`).
    pub aspect_ratio: usize,
    /// Target attention head dimension.
    pub head_dim: usize,
    /// Context length of training rows (the block size).
    pub max_seq_len: usize,
    /// Sliding-window pattern.
    pub window_pattern: String,
    /// Architecture: upstream HEAD's (`current`) or the original one (`v0`, which
    /// transformers' built-in `NanoChatForCausalLM` loads).
    pub arch: Architecture,
    /// Explicit number of optimizer steps (highest precedence).
    #[serde(with = "crate::serde_util::minus_one_u64")]
    pub num_iterations: Option<u64>,
    /// Steps computed to reach this many FLOPs.
    #[serde(with = "crate::serde_util::minus_one_f64")]
    pub target_flops: Option<f64>,
    /// Steps computed so that tokens = ratio · scaling params (lowest precedence).
    #[serde(with = "crate::serde_util::minus_one_f64")]
    pub target_param_data_ratio: Option<f64>,
    /// Rows per device per micro-step.
    pub device_batch_size: usize,
    /// Tokens per optimizer step over all devices; `None` = upstream's Power-Lines rule.
    #[serde(with = "crate::serde_util::minus_one_u64")]
    pub total_batch_size: Option<u64>,
    /// Optimizer hyperparameters.
    pub optimizer: OptimizerConfig,
    /// LR schedule.
    pub schedule: LRSchedule,
    /// Resume from this step's checkpoint.
    #[serde(with = "crate::serde_util::minus_one_u64")]
    pub resume_from_step: Option<u64>,
    /// Evaluate val bpb every N steps.
    #[serde(with = "crate::serde_util::minus_one_u64")]
    pub eval_every: Option<u64>,
    /// Tokens of the val split per bpb evaluation.
    pub eval_tokens: u64,
    /// Evaluate CORE every N steps.
    #[serde(with = "crate::serde_util::minus_one_u64")]
    pub core_metric_every: Option<u64>,
    /// Examples per task for the periodic CORE metric.
    pub core_metric_max_per_task: usize,
    /// Sample from the model every N steps.
    #[serde(with = "crate::serde_util::minus_one_u64")]
    pub sample_every: Option<u64>,
    /// Save a checkpoint every N steps (always at the end).
    #[serde(with = "crate::serde_util::minus_one_u64")]
    pub save_every: Option<u64>,
    /// Checkpoint directory name (default `d{depth}`).
    pub model_tag: Option<String>,
    /// Seed of weight initialisation and anything else random.
    pub seed: u64,
}

impl Default for TrainingConfiguration {
    fn default() -> Self {
        Self {
            run: "dummy".into(),
            depth: 20,
            aspect_ratio: 64,
            head_dim: 128,
            max_seq_len: 2048,
            window_pattern: "SSSL".into(),
            arch: Architecture::Current,
            num_iterations: None,
            target_flops: None,
            target_param_data_ratio: Some(12.0),
            device_batch_size: 32,
            total_batch_size: None,
            optimizer: OptimizerConfig::default(),
            schedule: LRSchedule::default(),
            resume_from_step: None,
            eval_every: Some(250),
            eval_tokens: 80 * 524_288,
            core_metric_every: Some(2000),
            core_metric_max_per_task: 500,
            sample_every: Some(2000),
            save_every: None,
            model_tag: None,
            seed: 42,
        }
    }
}

impl TrainingConfiguration {
    /// The depth dial with this run's shape settings.
    pub fn depth_dial(&self, vocab_size: usize) -> DepthDial {
        DepthDial {
            depth: self.depth,
            aspect_ratio: self.aspect_ratio,
            head_dim: self.head_dim,
            max_seq_len: self.max_seq_len,
            vocab_size,
            window_pattern: self.window_pattern.clone(),
            arch: self.arch,
        }
    }

    /// The checkpoint directory name: `model_tag`, else `d{depth}`.
    pub fn model_tag(&self) -> String {
        self.model_tag
            .clone()
            .unwrap_or_else(|| format!("d{}", self.depth))
    }

    /// The data model's `block_size`: tokens per training row (`max_seq_len`).
    pub fn block_size(&self) -> usize {
        self.max_seq_len
    }

    /// The data model's `gradient_accumulation_steps` for `total_batch_size` tokens over
    /// `world_size` devices: `total / (device_batch_size · max_seq_len · world_size)`, which
    /// must divide exactly (`total_batch_size` is resolved by the caller: `-1` in the
    /// configuration means "from the scaling law", which needs the model).
    pub fn gradient_accumulation_steps(
        &self,
        total_batch_size: u64,
        world_size: usize,
    ) -> Result<u64, ValidationError> {
        grad_accum_steps(
            total_batch_size,
            self.device_batch_size,
            self.max_seq_len,
            world_size,
        )
    }

    /// Reads upstream's `user_config` (the flat dict of `base_train.py`'s argparse flags that
    /// upstream stores in its checkpoint meta): every flag this configuration knows, at the
    /// top level or in its `optimizer` / `schedule` groups, is taken (`-` or `_` alike);
    /// the others are returned by name. Flags that upstream removed or renamed keep their
    /// default here.
    pub fn from_upstream_user_config(
        user_config: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(Self, Vec<String>), serde_json::Error> {
        let mut ours = serde_json::to_value(Self::default())?;
        let mut ignored = Vec::new();
        for (key, value) in user_config {
            let key = key.replace('-', "_");
            // The group that has this field: optimizer, schedule, or the top level.
            let group = ["optimizer", "schedule"]
                .into_iter()
                .find(|g| ours[*g].get(&key).is_some());
            let obj = match group {
                Some(g) => &mut ours[g],
                None => &mut ours,
            };
            match obj.as_object_mut().and_then(|m| m.get_mut(&key)) {
                Some(slot) if !matches!(key.as_str(), "optimizer" | "schedule") => {
                    *slot = value.clone();
                }
                _ => ignored.push(key),
            }
        }
        Ok((serde_json::from_value(ours)?, ignored))
    }

    /// Checks the warmup against the resolved horizon (`warmup_steps <= num_iterations`).
    pub fn check_horizon(&self, num_iterations: u64) -> VResult {
        check_positive(ENTITY, "num_iterations", num_iterations)?;
        check_at_most(
            ENTITY,
            "schedule.warmup_steps",
            self.schedule.warmup_steps,
            "num_iterations",
            num_iterations,
        )
    }
}

/// Gradient-accumulation steps so that `device_batch · seq_len · world · steps = total`.
pub fn grad_accum_steps(
    total_batch_size: u64,
    device_batch_size: usize,
    seq_len: usize,
    world_size: usize,
) -> Result<u64, ValidationError> {
    check_positive(ENTITY, "total_batch_size", total_batch_size)?;
    check_positive(ENTITY, "device_batch_size", device_batch_size as u64)?;
    check_positive(ENTITY, "max_seq_len", seq_len as u64)?;
    check_positive(ENTITY, "world_size", world_size as u64)?;
    let per_step = (device_batch_size * seq_len * world_size) as u64;
    if !total_batch_size.is_multiple_of(per_step) {
        return Err(ValidationError::new(
            ENTITY,
            "total_batch_size",
            total_batch_size,
            Rule::DivisibleBy {
                other: "device_batch_size·max_seq_len·world_size",
                divisor: per_step,
            },
        ));
    }
    let steps = total_batch_size / per_step;
    check_positive(ENTITY, "grad_accum_steps", steps)?;
    Ok(steps)
}

impl Validate for TrainingConfiguration {
    fn validate(&self) -> VResult {
        check_positive(ENTITY, "depth", self.depth as u64)?;
        check_positive(ENTITY, "max_seq_len", self.max_seq_len as u64)?;
        check_positive(ENTITY, "device_batch_size", self.device_batch_size as u64)?;
        if let Some(total) = self.total_batch_size {
            check_positive(ENTITY, "total_batch_size", total)?;
        }
        if let Some(n) = self.num_iterations {
            self.check_horizon(n)?;
        }
        if let Some(f) = self.target_flops {
            check_positive_f(ENTITY, "target_flops", f)?;
        }
        if let Some(r) = self.target_param_data_ratio {
            check_positive_f(ENTITY, "target_param_data_ratio", r)?;
        }
        if self.num_iterations.is_none()
            && self.target_flops.is_none()
            && self.target_param_data_ratio.is_none()
        {
            return Err(ValidationError::new(
                ENTITY,
                "num_iterations",
                "none",
                Rule::Pattern {
                    expected: "set, or target_flops or target_param_data_ratio set (a horizon)",
                },
            ));
        }
        for (field, every) in [
            ("eval_every", self.eval_every),
            ("core_metric_every", self.core_metric_every),
            ("sample_every", self.sample_every),
            ("save_every", self.save_every),
        ] {
            if let Some(n) = every {
                check_positive(ENTITY, field, n)?;
            }
        }
        if let Some(tag) = &self.model_tag {
            crate::validation::check_not_blank(ENTITY, "model_tag", tag)?;
            if tag.contains(['/', '\\']) || tag == "." || tag == ".." {
                return Err(ValidationError::new(
                    ENTITY,
                    "model_tag",
                    tag,
                    Rule::Pattern {
                        expected: "a plain directory name (no path separators)",
                    },
                ));
            }
        }
        self.optimizer
            .validate()
            .map_err(|e| e.within("optimizer"))?;
        self.schedule.validate().map_err(|e| e.within("schedule"))?;
        self.depth_dial(32768).build()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grad_accum_divides_exactly() {
        assert_eq!(grad_accum_steps(524_288, 32, 2048, 8).unwrap(), 1);
        assert_eq!(grad_accum_steps(524_288, 16, 2048, 8).unwrap(), 2);
        assert_eq!(grad_accum_steps(524_288, 32, 2048, 1).unwrap(), 8);
        let e = grad_accum_steps(500_000, 32, 2048, 1).unwrap_err();
        assert!(matches!(e.rule, Rule::DivisibleBy { .. }));
        // A batch smaller than one micro-step is not divisible either.
        assert!(grad_accum_steps(1024, 32, 2048, 1).is_err());
    }

    #[test]
    fn upstream_user_config_maps_onto_the_groups() {
        let upstream = serde_json::json!({
            "run": "speedrun", "depth": 20, "max_seq_len": 2048, "num_iterations": -1,
            "target_param_data_ratio": 20, "device_batch_size": 32, "total_batch_size": 524288,
            "embedding_lr": 0.3, "unembedding_lr": 0.004, "matrix_lr": 0.02, "weight_decay": 0.2,
            "warmdown_ratio": 0.4, "final_lr_frac": 0.0, "eval_every": 250, "model_tag": null,
            "fp8": false
        });
        let (cfg, ignored) =
            TrainingConfiguration::from_upstream_user_config(upstream.as_object().unwrap())
                .unwrap();
        assert_eq!((cfg.depth, cfg.run.as_str()), (20, "speedrun"));
        assert_eq!(cfg.num_iterations, None, "-1 is upstream's disabled");
        assert_eq!(cfg.optimizer.matrix_lr, 0.02);
        assert_eq!(cfg.optimizer.weight_decay, 0.2);
        assert_eq!(cfg.schedule.warmdown_ratio, 0.4);
        assert_eq!(cfg.eval_every, Some(250));
        assert_eq!(ignored, ["fp8"]);
        cfg.validate().unwrap();
        // A value of the wrong type is an error, not a silent default.
        let bad = serde_json::json!({"matrix_lr": "fast"});
        assert!(
            TrainingConfiguration::from_upstream_user_config(bad.as_object().unwrap()).is_err()
        );
    }

    #[test]
    fn defaults_are_valid() {
        TrainingConfiguration::default().validate().unwrap();
        assert_eq!(TrainingConfiguration::default().model_tag(), "d20");
    }
}
