//! The result of an evaluation (CORE, ChatCORE, bits per byte …): per-task accuracies in
//! [0, 1], centered scores, and the aggregate, saved as JSON or CSV (upstream writes
//! `base_eval/base_model_{step:06d}.csv` with `Task, Accuracy, Centered` rows and a CORE row).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::validation::{
    Interval, Rule, VResult, Validate, ValidationError, check_finite, check_not_blank, check_range,
};

const ENTITY: &str = "EvaluationResult";

/// Scores of one model on one benchmark suite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluationResult {
    /// What was evaluated, e.g. `base/d20@21400`.
    pub model: String,
    /// The suite's name, e.g. `CORE-18` or `ChatCORE`.
    pub metric: String,
    /// Per-task accuracy, each in [0, 1].
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
        for (task, &acc) in &self.scores {
            check_range(
                ENTITY,
                &format!("scores[{task}]"),
                acc,
                Interval::closed(0.0, 1.0),
            )?;
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
            extra: BTreeMap::new(),
        };
        r.validate().unwrap();
        assert_eq!(
            r.to_csv(),
            "Task,Accuracy,Centered\narc_easy,0.500000,0.333333\ncopa,0.600000,0.200000\nCORE-2,,0.266667\n"
        );
    }
}
