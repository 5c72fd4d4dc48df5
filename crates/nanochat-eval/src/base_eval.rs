//! The CORE benchmark over the DCLM eval bundle (upstream `scripts/base_eval.py`,
//! `evaluate_core`): `core.yaml` lists the tasks, `eval_meta_data.csv` their random baselines,
//! `eval_data/**.jsonl` the examples. Each task's examples are shuffled with
//! `random.Random(1337)` and optionally cut to `max_per_task`; accuracy is centered against the
//! random baseline and CORE is the mean centered accuracy.
//!
//! Tasks whose data file is absent are skipped and named; the score is then labelled
//! `CORE-N` (N tasks) and compared with GPT-2's centered scores on the same N tasks, read from
//! the bundle's `openai-community-gpt2*.csv` reference files.
//!
//! [`evaluate_base`] is the whole of `scripts/base_eval.py`: bits per byte on the train and
//! validation shards, then CORE, into a [`BaseEvalReport`] of two `EvaluationResult`s
//! ([`crate::base_results`]) saved as `<base>/base_eval/<tag>_<step>_{bpb,core}.json` and read
//! by the report card.

use nanochat_model::FusedOps;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use nanochat_core::{EvaluationConfig, ValidationError};
use nanochat_data::dataloader::{BestFitLoader, LoaderError, LoaderOptions};
use nanochat_data::dataset::{DataError, Split, list_parquet_files, split_files};
use nanochat_data::py_random::PyRandom;
use nanochat_model::Gpt;
use nanochat_model::distributed::{DistError, Rank};
use nanochat_tokenizer::Tokenizer;

pub use crate::base_results::{BaseEvalReport, CoreResult, Evaluated, TaskScore};
use crate::base_results::{bpb_result, core_result};
use crate::core_eval::{CoreError, TaskMeta, TaskType, centered, evaluate_example};
use crate::loss_eval::{evaluate_bpb_sums, reduce_bpb, token_bytes_tensor};

/// Why a base evaluation stopped: the bundle, an example, the shards or a rank.
#[derive(Debug, thiserror::Error)]
pub enum BaseEvalError {
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
    Dist(#[from] DistError),
    /// The shards cannot be listed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The shards cannot be loaded.
    #[error(transparent)]
    Loader(#[from] LoaderError),
    /// A result or its checkpoint breaks a rule (e.g. the evaluated checkpoint does not exist).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
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

fn file_err(path: &Path, reason: impl ToString) -> BaseEvalError {
    BaseEvalError::File {
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
    pub fn open(dir: &Path) -> Result<Self, BaseEvalError> {
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
    ) -> Result<Vec<serde_json::Value>, BaseEvalError> {
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
    pub fn reference(&self, model: &str) -> Result<BTreeMap<String, f64>, BaseEvalError> {
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

/// Evaluates CORE on every task whose data is present (upstream `evaluate_core`) on one
/// data-parallel rank (`Rank::single` alone): it scores examples `rank, rank + world, …` of
/// each task and the correct counts are summed over the ranks (upstream's strided examples
/// and `all_reduce`). Every rank returns the same result. `progress` is called after each task.
pub fn evaluate_core<B: FusedOps>(
    model: &Gpt<B>,
    tokenizer: &Tokenizer,
    bundle: &Bundle,
    max_per_task: Option<usize>,
    rank: &Rank<B>,
    mut progress: impl FnMut(&TaskScore),
) -> Result<CoreResult, BaseEvalError> {
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
                    BaseEvalError::Example {
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

/// What [`evaluate_base`] measures (upstream `base_eval.py`'s flags).
#[derive(Debug, Clone)]
pub struct BaseEvalOptions {
    /// Run CORE over the bundle.
    pub core: bool,
    /// Measure bits per byte on the train and validation shards.
    pub bpb: bool,
    /// Examples per CORE task (`None`: all).
    pub max_per_task: Option<usize>,
    /// Tokens per split for bits per byte.
    pub split_tokens: u64,
    /// Rows per batch for bits per byte.
    pub device_batch_size: usize,
    /// The CORE eval bundle.
    pub bundle_dir: PathBuf,
    /// The pretraining shards.
    pub data_dir: PathBuf,
}

/// Upstream `scripts/base_eval.py` on one data-parallel rank (every rank returns the same
/// report) for the checkpoint `of` (checked to exist first): bits per byte on the train and
/// validation splits (each rank reads its stride of the row groups), then CORE
/// ([`evaluate_core`]), each as an `EvaluationResult` with its settings. `say` receives the
/// progress lines on the master rank.
pub fn evaluate_base<B: FusedOps>(
    model: &Gpt<B>,
    tokenizer: &Arc<Tokenizer>,
    opts: &BaseEvalOptions,
    rank: &Rank<B>,
    of: &Evaluated,
    say: impl Fn(&str),
) -> Result<BaseEvalReport, BaseEvalError> {
    let say = |line: String| {
        if rank.is_master() {
            say(&line);
        }
    };
    let core_config = EvaluationConfig::Core {
        bundle_dir: opts.bundle_dir.clone(),
        max_per_task: opts.max_per_task,
        world_size: rank.world_size,
    };
    let bpb_config = EvaluationConfig::Bpb {
        data_dir: opts.data_dir.clone(),
        split_tokens: opts.split_tokens,
        device_batch_size: opts.device_batch_size,
        seq_len: model.config().sequence_len,
        world_size: rank.world_size,
    };
    // The rules that need no evaluation first: the checkpoint exists, the settings are valid.
    let wanted = [(opts.core, &core_config), (opts.bpb, &bpb_config)];
    for (_, config) in wanted.into_iter().filter(|(on, _)| *on) {
        let r = of.result("check", config.clone());
        r.check_checkpoint()?;
        nanochat_core::Validate::validate(&r)?;
    }
    let mut report = BaseEvalReport::default();
    if opts.bpb {
        let shards = list_parquet_files(&opts.data_dir)?;
        let (device, t) = (rank.device.clone(), model.config().sequence_len);
        let per_step = (opts.device_batch_size * t * rank.world_size) as u64;
        let steps = (opts.split_tokens / per_step).max(1) as usize;
        let tb = token_bytes_tensor::<B>(&tokenizer.token_bytes(), &device);
        let mut lo = LoaderOptions::new(opts.device_batch_size, t);
        (lo.rank, lo.world_size) = (rank.rank, rank.world_size);
        let mut bpbs = [None, None];
        for (i, (name, split)) in [("train", Split::Train), ("val", Split::Val)]
            .into_iter()
            .enumerate()
        {
            let files = split_files(&shards, split).to_vec();
            let loader = BestFitLoader::new(files, tokenizer.clone(), lo.clone(), None)?;
            let batches = loader.map(|b| b.map(|b| b.to_tensors::<B>(&device)));
            let bpb = reduce_bpb(rank, evaluate_bpb_sums(model, batches, steps, &tb)?)?.bpb();
            say(format!("{name} bpb: {bpb:.6}"));
            bpbs[i] = Some(bpb);
        }
        report.bpb = Some(bpb_result(bpbs[0], bpbs[1], of, bpb_config)?);
    }
    if opts.core {
        let bundle = Bundle::open(&opts.bundle_dir)?;
        let r = evaluate_core(model, tokenizer, &bundle, opts.max_per_task, rank, |t| {
            say(format!(
                "{:<34} accuracy {:.4} | centered {:+.4} | {} examples | {:.1}s",
                t.label, t.accuracy, t.centered, t.examples, t.seconds
            ))
        })?;
        if !r.skipped.is_empty() {
            say(format!("skipped (data absent): {}", r.skipped.join(", ")));
        }
        let gpt2 = r.gpt2_same_tasks.map_or(String::new(), |g| {
            format!(" (GPT-2 124M on the same tasks: {g:.4})")
        });
        say(format!("{}: {:.4}{gpt2}", r.label, r.core_metric));
        report.core = Some(core_result(&r, of, core_config)?);
    }
    Ok(report)
}
