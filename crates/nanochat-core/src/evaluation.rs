//! The result of an evaluation (CORE, ChatCORE, bits per byte …): per-task accuracies in
//! [0, 1], centered scores, and the aggregate, saved as JSON or CSV (upstream writes
//! `base_eval/base_model_{step:06d}.csv` with `Task, Accuracy, Centered` rows and a CORE row).
//!
//! Every evaluation (base-eval's CORE and bits per byte, chat-eval) produces one, naming the
//! evaluated checkpoint by its folder and step ([`EvaluationResult::check_checkpoint`] checks
//! that it exists) and keeping its [`EvaluationConfig`]; the report card reads these files.
//! What the scores are is the [`Measure`]: accuracies in [0, 1], or bits per byte (>= 0,
//! lower is better, never centered).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::checkpoint_manager::meta_file_name;
use crate::evaluation_config::EvaluationConfig;
use crate::validation::{
    Interval, Rule, VResult, Validate, ValidationError, check_finite, check_non_negative,
    check_not_blank, check_range,
};

const ENTITY: &str = "EvaluationResult";

/// What an [`EvaluationResult`]'s scores measure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// Fraction correct, in [0, 1] (CORE, ChatCORE tasks).
    #[default]
    Accuracy,
    /// Bits per byte of text, >= 0, lower is better (`bpb` per split).
    BitsPerByte,
}

/// Scores of one model on one benchmark suite.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluationResult {
    /// What was evaluated, as a label, e.g. `base/d20@21400`.
    pub model: String,
    /// The evaluated checkpoint's folder, e.g. `~/.cache/nanochat/base_checkpoints/d20`
    /// (absent in results written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<PathBuf>,
    /// The evaluated checkpoint's step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
    /// How the evaluation was run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<EvaluationConfig>,
    /// The suite's name, e.g. `CORE-18`, `ChatCORE` or `bpb`.
    pub metric: String,
    /// What the scores are.
    #[serde(default)]
    pub measure: Measure,
    /// Per-task score: an accuracy in [0, 1], or bits per byte (per split) >= 0.
    pub scores: BTreeMap<String, f64>,
    /// Per-task centered score `(acc − baseline) / (1 − baseline)`: at most 1, negative below
    /// chance.
    #[serde(default)]
    pub centered: BTreeMap<String, f64>,
    /// The suite's aggregate (e.g. the mean centered score), when it has one.
    #[serde(default)]
    pub aggregate: Option<f64>,
    /// When the evaluation finished.
    pub created_at: DateTime<Utc>,
    /// Anything else worth keeping (settings, sample counts).
    #[serde(default)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl EvaluationResult {
    /// Checks on disk that the evaluated checkpoint exists: its folder and, when the step is
    /// known, that step's meta file (rule "the evaluated checkpoint exists").
    pub fn check_checkpoint(&self) -> VResult {
        let Some(dir) = &self.checkpoint else {
            return Ok(());
        };
        if !dir.is_dir() {
            return Err(ValidationError::new(
                ENTITY,
                "checkpoint",
                dir.display(),
                Rule::PathExists,
            ));
        }
        if let Some(step) = self.step {
            let meta = dir.join(meta_file_name(step));
            if !meta.is_file() {
                return Err(ValidationError::new(
                    ENTITY,
                    "step",
                    meta.display(),
                    Rule::PathExists,
                ));
            }
        }
        Ok(())
    }

    /// CSV like upstream's: `Task,Accuracy,Centered`, one row per task, then the aggregate row
    /// named after the metric.
    pub fn to_csv(&self) -> String {
        let mut out = String::from("Task,Accuracy,Centered\n");
        for (task, acc) in &self.scores {
            let centered = self
                .centered
                .get(task)
                .map(|c| format!("{c:.6}"))
                .unwrap_or_default();
            let _ = writeln!(out, "{},{acc:.6},{centered}", csv_field(task));
        }
        if let Some(agg) = self.aggregate {
            let _ = writeln!(out, "{},,{agg:.6}", csv_field(&self.metric));
        }
        out
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

impl Validate for EvaluationResult {
    fn validate(&self) -> VResult {
        check_not_blank(ENTITY, "model", &self.model)?;
        check_not_blank(ENTITY, "metric", &self.metric)?;
        if self.checkpoint.is_some() && self.step.is_none() {
            return Err(ValidationError::new(
                ENTITY,
                "step",
                "null",
                Rule::Pattern {
                    expected: "the checkpoint's step when the checkpoint is named",
                },
            ));
        }
        if let Some(c) = &self.config {
            c.validate().map_err(|e| e.within("config"))?;
        }
        for (task, &score) in &self.scores {
            let field = format!("scores[{task}]");
            match self.measure {
                Measure::Accuracy => {
                    check_range(ENTITY, &field, score, Interval::closed(0.0, 1.0))?
                }
                Measure::BitsPerByte => check_non_negative(ENTITY, &field, score)?,
            }
        }
        if self.measure == Measure::BitsPerByte
            && let Some(task) = self.centered.keys().next()
        {
            return Err(ValidationError::new(
                ENTITY,
                format!("centered[{task}]"),
                task,
                Rule::Pattern {
                    expected: "absent: bits per byte are not centered",
                },
            ));
        }
        for (task, &c) in &self.centered {
            let field = format!("centered[{task}]");
            check_finite(ENTITY, &field, c)?;
            if c > 1.0 {
                return Err(ValidationError::new(
                    ENTITY,
                    field,
                    c,
                    Rule::AtMost {
                        limit_name: "a perfect score".into(),
                        limit: "1".into(),
                    },
                ));
            }
            if !self.scores.contains_key(task) {
                return Err(ValidationError::new(
                    ENTITY,
                    field,
                    task,
                    Rule::Pattern {
                        expected: "a task that also has an accuracy in scores",
                    },
                ));
            }
        }
        if let Some(a) = self.aggregate {
            check_finite(ENTITY, "aggregate", a)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_has_upstream_columns() {
        let r = EvaluationResult {
            model: "base/d4@100".into(),
            metric: "CORE-2".into(),
            scores: [("arc_easy".into(), 0.5), ("copa".into(), 0.6)].into(),
            centered: [("arc_easy".into(), 1.0 / 3.0), ("copa".into(), 0.2)].into(),
            aggregate: Some(0.266667),
            created_at: DateTime::from_timestamp(0, 0).unwrap(),
            ..EvaluationResult::default()
        };
        r.validate().unwrap();
        assert_eq!(
            r.to_csv(),
            "Task,Accuracy,Centered\narc_easy,0.500000,0.333333\ncopa,0.600000,0.200000\nCORE-2,,0.266667\n"
        );
    }
}
