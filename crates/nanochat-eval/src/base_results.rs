//! base-eval's results as the data model's [`EvaluationResult`]s (upstream `scripts/base_eval.py`
//! writes `base_eval/base_model_{step:06d}.csv` for CORE and prints bits per byte): one result
//! for CORE (per-task accuracy and centered accuracy, the CORE score as aggregate) and one for
//! bits per byte (`train` / `val` splits, [`Measure::BitsPerByte`]), each naming the checkpoint
//! folder and step and carrying its [`EvaluationConfig`]. [`BaseEvalReport::save`] writes them as
//! `<base>/base_eval/<tag>_<step>_{core,bpb}.json` (and CORE's CSV); the report card reads those
//! files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nanochat_core::fs::{IoError, write_atomic};
use nanochat_core::{EvaluationConfig, EvaluationResult, Measure, Validate, ValidationError};
use serde_json::json;

use serde::{Deserialize, Serialize};

/// One task's score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskScore {
    /// Label.
    pub label: String,
    /// Examples evaluated.
    pub examples: usize,
    /// Accuracy in [0, 1].
    pub accuracy: f64,
    /// Centered accuracy.
    pub centered: f64,
    /// Seconds spent.
    pub seconds: f64,
}

/// The CORE result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoreResult {
    /// `CORE` when all tasks ran, else `CORE-N`.
    pub label: String,
    /// Mean centered accuracy over the tasks that ran.
    pub core_metric: f64,
    /// Per task, in bundle order.
    pub tasks: Vec<TaskScore>,
    /// Tasks skipped because their data file is absent.
    pub skipped: Vec<String>,
    /// GPT-2 (124M) on the same tasks, when the reference file is there.
    pub gpt2_same_tasks: Option<f64>,
}

/// Extra key: examples evaluated per task.
pub const EXAMPLES_KEY: &str = "examples";
/// Extra key: seconds per task.
pub const SECONDS_KEY: &str = "seconds";
/// Extra key: tasks skipped because their data file is absent.
pub const SKIPPED_KEY: &str = "skipped";
/// Extra key: GPT-2 (124M)'s CORE on the same tasks.
pub const GPT2_KEY: &str = "gpt2_same_tasks";
/// The metric name of the bits-per-byte result.
pub const BPB_METRIC: &str = "bpb";

/// What a base model scored: CORE and bits per byte, each an [`EvaluationResult`] when it ran.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BaseEvalReport {
    /// CORE, when it ran.
    pub core: Option<EvaluationResult>,
    /// Bits per byte on the train and validation shards, when measured.
    pub bpb: Option<EvaluationResult>,
}

/// The checkpoint a base evaluation is about.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluated {
    /// Its folder (`<base>/base_checkpoints/<tag>`).
    pub checkpoint: PathBuf,
    /// Its step.
    pub step: u64,
}

impl Evaluated {
    /// The folder's name (the model tag).
    pub fn tag(&self) -> String {
        self.checkpoint
            .file_name()
            .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned())
    }

    /// A result about this checkpoint with nothing measured yet; `check` checks on disk that
    /// the checkpoint exists (see [`EvaluationResult::check_checkpoint`]).
    pub fn result(&self, metric: &str, config: EvaluationConfig) -> EvaluationResult {
        EvaluationResult {
            model: format!("base/{}@{}", self.tag(), self.step),
            checkpoint: Some(self.checkpoint.clone()),
            step: Some(self.step),
            config: Some(config),
            metric: metric.into(),
            created_at: chrono::Utc::now(),
            ..EvaluationResult::default()
        }
    }
}

/// CORE as an [`EvaluationResult`]: accuracies and centered accuracies per task, the CORE score
/// as aggregate, examples / seconds per task, skipped tasks and GPT-2's score in `extra`.
pub fn core_result(
    core: &CoreResult,
    of: &Evaluated,
    config: EvaluationConfig,
) -> Result<EvaluationResult, ValidationError> {
    let mut r = of.result(&core.label, config);
    let mut examples = BTreeMap::new();
    let mut seconds = BTreeMap::new();
    for t in &core.tasks {
        r.scores.insert(t.label.clone(), t.accuracy);
        r.centered.insert(t.label.clone(), t.centered);
        examples.insert(t.label.clone(), t.examples);
        seconds.insert(t.label.clone(), t.seconds);
    }
    r.aggregate = Some(core.core_metric);
    r.extra.insert(EXAMPLES_KEY.into(), json!(examples));
    r.extra.insert(SECONDS_KEY.into(), json!(seconds));
    r.extra.insert(SKIPPED_KEY.into(), json!(core.skipped));
    if let Some(g) = core.gpt2_same_tasks {
        r.extra.insert(GPT2_KEY.into(), json!(g));
    }
    r.validate()?;
    Ok(r)
}

/// Bits per byte as an [`EvaluationResult`]: `scores` per split (`train`, `val`), the
/// validation value as aggregate.
pub fn bpb_result(
    train: Option<f64>,
    val: Option<f64>,
    of: &Evaluated,
    config: EvaluationConfig,
) -> Result<EvaluationResult, ValidationError> {
    let mut r = of.result(BPB_METRIC, config);
    r.measure = Measure::BitsPerByte;
    for (split, v) in [("train", train), ("val", val)] {
        if let Some(v) = v {
            r.scores.insert(split.into(), v);
        }
    }
    r.aggregate = val;
    r.validate()?;
    Ok(r)
}

impl BaseEvalReport {
    /// Writes each result to `<base_dir>/base_eval/<tag>_<step:06>_<core|bpb>.json` (and CORE's
    /// upstream-style CSV beside it) and returns the JSON paths, CORE first.
    pub fn save(&self, base_dir: &Path) -> Result<Vec<PathBuf>, IoError> {
        let dir = base_dir.join("base_eval");
        std::fs::create_dir_all(&dir).map_err(|e| IoError::new("create", &dir, e))?;
        let mut paths = Vec::new();
        for (kind, r) in [("core", &self.core), ("bpb", &self.bpb)] {
            let Some(r) = r else { continue };
            let tag = r
                .checkpoint
                .as_deref()
                .and_then(Path::file_name)
                .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned());
            let stem = dir.join(format!("{tag}_{:06}_{kind}", r.step.unwrap_or(0)));
            let path = stem.with_extension("json");
            let json = serde_json::to_vec_pretty(r)
                .map_err(|e| IoError::new("serialise", &path, e.into()))?;
            write_atomic(&path, &json)?;
            if r.measure == Measure::Accuracy {
                write_atomic(&stem.with_extension("csv"), r.to_csv().as_bytes())?;
            }
            paths.push(path);
        }
        Ok(paths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base_eval::TaskScore;

    #[test]
    fn core_and_bpb_results_save_as_validated_files() {
        let dir = tempfile::tempdir().unwrap();
        let of = Evaluated {
            checkpoint: dir.path().join("base_checkpoints/d4"),
            step: 7,
        };
        let core = CoreResult {
            label: "CORE-1".into(),
            core_metric: 0.1,
            tasks: vec![TaskScore {
                label: "hellaswag".into(),
                examples: 10,
                accuracy: 0.3,
                centered: 0.1,
                seconds: 1.0,
            }],
            skipped: vec!["jeopardy".into()],
            gpt2_same_tasks: Some(0.12),
        };
        let cfg = EvaluationConfig::Core {
            bundle_dir: "b".into(),
            max_per_task: Some(10),
            world_size: 1,
        };
        let core = core_result(&core, &of, cfg).unwrap();
        assert_eq!(core.model, "base/d4@7");
        assert_eq!(core.extra[GPT2_KEY], json!(0.12));
        let bpb_cfg = EvaluationConfig::Bpb {
            data_dir: "d".into(),
            split_tokens: 1024,
            device_batch_size: 2,
            seq_len: 32,
            world_size: 1,
        };
        // 1.5 bits per byte is no accuracy, and is valid as what it is.
        let bpb = bpb_result(Some(1.5), Some(1.6), &of, bpb_cfg).unwrap();
        assert_eq!(bpb.aggregate, Some(1.6));
        let report = BaseEvalReport {
            core: Some(core.clone()),
            bpb: Some(bpb.clone()),
        };
        let paths = report.save(dir.path()).unwrap();
        assert!(paths[0].ends_with("base_eval/d4_000007_core.json"));
        assert!(paths[1].ends_with("base_eval/d4_000007_bpb.json"));
        assert!(dir.path().join("base_eval/d4_000007_core.csv").exists());
        let back: EvaluationResult =
            serde_json::from_slice(&std::fs::read(&paths[1]).unwrap()).unwrap();
        assert_eq!(back, bpb);
    }
}
