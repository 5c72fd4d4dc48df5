//! The CORE benchmark over the DCLM eval bundle (upstream `scripts/base_eval.py`,
//! `evaluate_core`): `core.yaml` lists the tasks, `eval_meta_data.csv` their random baselines,
//! `eval_data/**.jsonl` the examples. Each task's examples are shuffled with
//! `random.Random(1337)` and optionally cut to `max_per_task`; accuracy is centered against the
//! random baseline and CORE is the mean centered accuracy.
//!
//! Tasks whose data file is absent are skipped and named; the score is then labelled
//! `CORE-N` (N tasks) and compared with GPT-2's centered scores on the same N tasks, read from
//! the bundle's `openai-community-gpt2*.csv` reference files.

use nanochat_model::FusedOps;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use nanochat_data::py_random::PyRandom;
use nanochat_model::Gpt;
use nanochat_model::distributed::Rank;
use nanochat_tokenizer::Tokenizer;
use serde::Serialize;

use crate::core_eval::{CoreError, TaskMeta, TaskType, centered, evaluate_example};

/// Problems with the bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A file cannot be read.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A reduction across data-parallel ranks failed.
    #[error(transparent)]
    Dist(#[from] nanochat_model::distributed::DistError),
    /// An example is malformed.
    #[error("task {task}: {source}")]
    Example {
        /// The task label.
        task: String,
        /// The problem.
        #[source]
        source: CoreError,
    },
}

fn file_err(path: &Path, reason: impl ToString) -> BundleError {
    BundleError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// One task of `core.yaml`.
#[derive(Debug, Clone, PartialEq)]
pub struct BundleTask {
    /// Label (`hellaswag_zeroshot`, `arc_easy`, …).
    pub label: String,
    /// Path under `eval_data/`.
    pub dataset_uri: String,
    /// How it is evaluated.
    pub meta: TaskMeta,
}

/// The bundle's task list and random baselines.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The bundle folder.
    pub dir: PathBuf,
    /// Tasks in `core.yaml` order.
    pub tasks: Vec<BundleTask>,
    /// Random baseline (percent) per label.
    pub random_baselines: BTreeMap<String, f64>,
}

impl Bundle {
    /// Reads `core.yaml` and `eval_meta_data.csv` from `dir`.
    pub fn open(dir: &Path) -> Result<Self, BundleError> {
        let yaml_path = dir.join("core.yaml");
        let text = std::fs::read_to_string(&yaml_path).map_err(|e| file_err(&yaml_path, e))?;
        let docs =
            yaml_rust2::YamlLoader::load_from_str(&text).map_err(|e| file_err(&yaml_path, e))?;
        let tasks_yaml = docs
            .first()
            .and_then(|d| d["icl_tasks"].as_vec())
            .ok_or_else(|| file_err(&yaml_path, "no `icl_tasks` list"))?;
        let mut tasks = Vec::new();
        for (i, t) in tasks_yaml.iter().enumerate() {
            let field = |k: &str| {
                t[k].as_str()
                    .map(str::to_string)
                    .ok_or_else(|| file_err(&yaml_path, format!("task {i}: missing `{k}`")))
            };
            let kind = field("icl_task_type")?;
            let task_type = TaskType::parse(&kind).ok_or_else(|| {
                file_err(
                    &yaml_path,
                    format!("task {i}: unknown icl_task_type {kind:?}"),
                )
            })?;
            let num_fewshot = t["num_fewshot"]
                .as_vec()
                .and_then(|v| v.first())
                .and_then(|v| v.as_i64())
                .ok_or_else(|| file_err(&yaml_path, format!("task {i}: missing `num_fewshot`")))?;
            tasks.push(BundleTask {
                label: field("label")?,
                dataset_uri: field("dataset_uri")?,
                meta: TaskMeta {
                    task_type,
                    num_fewshot: num_fewshot.max(0) as usize,
                    continuation_delimiter: t["continuation_delimiter"]
                        .as_str()
                        .unwrap_or(" ")
                        .to_string(),
                },
            });
        }
        let csv_path = dir.join("eval_meta_data.csv");
        let mut reader = csv::Reader::from_path(&csv_path).map_err(|e| file_err(&csv_path, e))?;
        let headers = reader
            .headers()
            .map_err(|e| file_err(&csv_path, e))?
            .clone();
        let col = |name: &str| {
            headers
                .iter()
                .position(|h| h == name)
                .ok_or_else(|| file_err(&csv_path, format!("no `{name}` column")))
        };
        let (task_col, rb_col) = (col("Eval Task")?, col("Random baseline")?);
        let mut random_baselines = BTreeMap::new();
        for row in reader.records() {
            let row = row.map_err(|e| file_err(&csv_path, e))?;
            if let (Some(t), Some(rb)) = (row.get(task_col), row.get(rb_col))
                && let Ok(rb) = rb.trim().parse::<f64>()
            {
                random_baselines.insert(t.trim().to_string(), rb);
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            tasks,
            random_baselines,
        })
    }

    /// The data file of `task`.
    pub fn data_path(&self, task: &BundleTask) -> PathBuf {
        self.dir.join("eval_data").join(&task.dataset_uri)
    }

    /// A task's examples, shuffled with `random.Random(1337)` and cut to `max_per_task`.
    pub fn load_task(
        &self,
        task: &BundleTask,
        max_per_task: Option<usize>,
    ) -> Result<Vec<serde_json::Value>, BundleError> {
        let path = self.data_path(task);
        let text = std::fs::read_to_string(&path).map_err(|e| file_err(&path, e))?;
        let mut data = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l.trim())
                    .map_err(|e| file_err(&path, format!("line {}: {e}", i + 1)))
            })
            .collect::<Result<Vec<serde_json::Value>, _>>()?;
        PyRandom::new(1337).shuffle(&mut data);
        if let Some(m) = max_per_task {
            data.truncate(m);
        }
        Ok(data)
    }

    /// GPT-2's centered score per task from `openai-community-<model>.csv`.
    pub fn reference(&self, model: &str) -> Result<BTreeMap<String, f64>, BundleError> {
        let path = self.dir.join(format!("openai-community-{model}.csv"));
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_path(&path)
            .map_err(|e| file_err(&path, e))?;
        let mut out = BTreeMap::new();
        for row in reader.records() {
            let row = row.map_err(|e| file_err(&path, e))?;
            if let (Some(t), Some(c)) = (row.get(0), row.get(2))
                && let Ok(c) = c.parse::<f64>()
            {
                out.insert(t.to_string(), c);
            }
        }
        Ok(out)
    }
}

/// One task's score.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize)]
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

/// Evaluates CORE on every task whose data is present (upstream `evaluate_core`). `progress`
/// is called after each task.
pub fn evaluate_core<B: FusedOps>(
    model: &Gpt<B>,
    tokenizer: &Tokenizer,
    bundle: &Bundle,
    max_per_task: Option<usize>,
    progress: impl FnMut(&TaskScore),
) -> Result<CoreResult, BundleError> {
    let rank = Rank::single(model.device());
    evaluate_core_ranked(model, tokenizer, bundle, max_per_task, &rank, progress)
}

/// [`evaluate_core`] on one data-parallel rank: it scores examples `rank, rank + world, …` of
/// each task and the correct counts are summed over the ranks (upstream's strided examples
/// and `all_reduce`). Every rank returns the same result.
pub fn evaluate_core_ranked<B: FusedOps>(
    model: &Gpt<B>,
    tokenizer: &Tokenizer,
    bundle: &Bundle,
    max_per_task: Option<usize>,
    rank: &Rank<B>,
    mut progress: impl FnMut(&TaskScore),
) -> Result<CoreResult, BundleError> {
    let mut tasks = Vec::new();
    let mut skipped = Vec::new();
    for task in &bundle.tasks {
        if !bundle.data_path(task).exists() {
            skipped.push(task.label.clone());
            continue;
        }
        let start = Instant::now();
        let full = bundle.load_task(task, None)?;
        let n = max_per_task.map_or(full.len(), |m| m.min(full.len()));
        // Upstream draws few-shot examples from the kept examples (`data[:max_per_task]`);
        // when they are too few for the task's shots (upstream would crash), draw from the
        // whole shuffled task instead. The evaluated items are the same either way.
        let data: &[serde_json::Value] = if task.meta.num_fewshot < n {
            &full[..n]
        } else {
            &full
        };
        let mut correct = 0usize;
        for idx in (rank.rank..n).step_by(rank.world_size) {
            let r =
                evaluate_example(idx, model, tokenizer, data, &task.meta).map_err(|source| {
                    BundleError::Example {
                        task: task.label.clone(),
                        source,
                    }
                })?;
            correct += r.correct as usize;
        }
        let correct = rank.sum_f64(&[correct as f64])?[0];
        let accuracy = correct / n.max(1) as f64;
        let rb = bundle
            .random_baselines
            .get(&task.label)
            .copied()
            .unwrap_or(0.0);
        let score = TaskScore {
            label: task.label.clone(),
            examples: n,
            accuracy,
            centered: centered(accuracy, rb),
            seconds: start.elapsed().as_secs_f64(),
        };
        progress(&score);
        tasks.push(score);
    }
    let n = tasks.len();
    let core_metric = tasks.iter().map(|t| t.centered).sum::<f64>() / n.max(1) as f64;
    let gpt2_same_tasks = bundle.reference("gpt2").ok().and_then(|r| {
        let vals: Option<Vec<f64>> = tasks.iter().map(|t| r.get(&t.label).copied()).collect();
        vals.map(|v| v.iter().sum::<f64>() / v.len().max(1) as f64)
    });
    Ok(CoreResult {
        label: if skipped.is_empty() {
            "CORE".into()
        } else {
            format!("CORE-{n}")
        },
        core_metric,
        tasks,
        skipped,
        gpt2_same_tasks,
    })
}
