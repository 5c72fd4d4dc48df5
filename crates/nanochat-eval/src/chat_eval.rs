//! Chat evaluation and ChatCORE (upstream `scripts/chat_eval.py`).
//!
//! - **Categorical** tasks (ARC, MMLU): the prompt (`render_for_completion`, ending in
//!   `<|assistant_start|>`) goes through one batched forward pass, BOS-padded on the right; at
//!   each row's last prompt position the logits are restricted to the answer letters' tokens
//!   and the arg-max letter is the answer.
//! - **Generative** tasks (GSM8K, HumanEval, SpellingBee): the engine samples
//!   `num_samples` replies (calculator tool on); a problem passes if any reply is graded
//!   correct (pass@k).
//! - **ChatCORE** = mean over tasks of `(acc − baseline) / (1 − baseline)` (0.25 for the
//!   four-way multiple-choice tasks, 0 for the others). It is only reported when every task
//!   of [`TaskSpec::CHAT_EVAL`] ran; a subset is named `ChatCORE-<tasks>`.

use nanochat_model::FusedOps;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use burn::tensor::{Int, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use nanochat_core::{
    EvaluationConfig, EvaluationResult, GenerationParams, Validate, ValidationError,
};
use nanochat_data::tasks::{EvalKind, Task, TaskError, TaskSpec, TaskSplit};
use nanochat_infer::{Engine, EngineError};
use nanochat_model::distributed::Rank;
use nanochat_tokenizer::TokenizerError;

/// Why a chat evaluation failed.
#[derive(Debug, thiserror::Error)]
pub enum ChatEvalError {
    /// A task could not be loaded.
    #[error(transparent)]
    Task(Box<TaskError>),
    /// Generation failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Rendering failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// A result broke a validation rule.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// An answer letter is not one token.
    #[error("{task}: answer letter `{letter}` is {n} tokens; categorical scoring needs one")]
    Letter {
        /// The task.
        task: String,
        /// The letter.
        letter: String,
        /// Its token count.
        n: usize,
    },
    /// Saving failed.
    #[error(transparent)]
    Io(#[from] nanochat_core::fs::IoError),
    /// Adding up the ranks' counts failed.
    #[error(transparent)]
    Dist(#[from] nanochat_model::distributed::DistError),
}

impl From<TaskError> for ChatEvalError {
    fn from(e: TaskError) -> Self {
        ChatEvalError::Task(Box::new(e))
    }
}

/// Settings of a chat evaluation (upstream's flags).
#[derive(Debug, Clone)]
pub struct ChatEvalOptions {
    /// Tasks to run (names of [`TaskSpec::KNOWN`]); empty = all of [`TaskSpec::CHAT_EVAL`].
    pub tasks: Vec<String>,
    /// At most this many problems per task (`-x`).
    pub max_problems: Option<usize>,
    /// Rows per forward pass for categorical tasks (`-b`).
    pub batch_size: usize,
    /// Samples per generative problem (`-n`, pass@n).
    pub num_samples: usize,
    /// Maximum new tokens per reply (`-m`).
    pub max_new_tokens: usize,
    /// Temperature (`-t`; 0 = greedy).
    pub temperature: f64,
    /// Top-k (`-k`).
    pub top_k: usize,
    /// Base seed; problem `i` samples with `seed + i`.
    pub seed: u64,
    /// SpellingBee test size.
    pub spelling_size: usize,
    /// Show progress bars.
    pub progress: bool,
}

impl Default for ChatEvalOptions {
    fn default() -> Self {
        Self {
            tasks: Vec::new(),
            max_problems: None,
            batch_size: 8,
            num_samples: 1,
            max_new_tokens: 512,
            temperature: 0.0,
            top_k: 50,
            seed: 42,
            spelling_size: 256,
            progress: false,
        }
    }
}

/// One task's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOutcome {
    /// Task name.
    pub name: String,
    /// Problems evaluated.
    pub total: usize,
    /// Problems passed.
    pub passed: usize,
    /// Chance level used for centering.
    pub baseline: f64,
    /// Seconds taken.
    pub seconds: f64,
}

impl TaskOutcome {
    /// passed / total.
    pub fn accuracy(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.passed as f64 / self.total as f64
        }
    }

    /// `(acc − baseline) / (1 − baseline)`.
    pub fn centered(&self) -> f64 {
        (self.accuracy() - self.baseline) / (1.0 - self.baseline)
    }
}

/// ChatCORE: the mean centered accuracy.
pub fn chatcore(outcomes: &[TaskOutcome]) -> f64 {
    outcomes.iter().map(TaskOutcome::centered).sum::<f64>() / outcomes.len().max(1) as f64
}

fn bar(progress: bool, n: usize, name: &str) -> ProgressBar {
    let pb = if progress {
        ProgressBar::new(n as u64)
    } else {
        ProgressBar::hidden()
    };
    pb.set_style(
        ProgressStyle::with_template("{msg:>14} {bar:30} {pos}/{len} [{elapsed} < {eta}]")
            .expect("static template"),
    );
    pb.set_message(name.to_string());
    pb
}

/// Categorical scoring of `task`'s `problems` (upstream `run_categorical_eval`): how many
/// are answered correctly.
pub fn run_categorical<B: FusedOps>(
    engine: &Engine<B>,
    task: &dyn Task,
    problems: &[usize],
    batch_size: usize,
    progress: bool,
) -> Result<usize, ChatEvalError> {
    let tok = engine.tokenizer();
    let model = engine.model();
    let device = model.device();
    let max_len = model.config().sequence_len;
    let bos = tok.bos_token_id();
    let pb = bar(progress, problems.len(), task.name());
    let mut passed = 0;
    for chunk in problems.chunks(batch_size.max(1)) {
        let mut prompts = Vec::new();
        for &i in chunk {
            let mut ids = tok.render_for_completion(&task.get(i), max_len)?;
            // Keep the end of over-long prompts (the question's options and the cue).
            if ids.len() > max_len {
                ids.drain(1..ids.len() - max_len + 1);
            }
            prompts.push(ids);
        }
        let width = prompts.iter().map(Vec::len).max().unwrap_or(1);
        let mut flat = Vec::with_capacity(prompts.len() * width);
        for p in &prompts {
            flat.extend(p.iter().map(|&x| x as i64));
            flat.extend(std::iter::repeat_n(bos as i64, width - p.len()));
        }
        let ids: Tensor<B, 2, Int> =
            Tensor::from_data(TensorData::new(flat, [prompts.len(), width]), &device);
        let logits = model.forward(ids, None);
        let vocab = logits.dims()[2];
        for (row, (&i, p)) in chunk.iter().zip(&prompts).enumerate() {
            let letters = task.letters(i).unwrap_or_default();
            let mut letter_ids = Vec::with_capacity(letters.len());
            for l in &letters {
                let t = tok.encode(l);
                if t.len() != 1 {
                    return Err(ChatEvalError::Letter {
                        task: task.name().into(),
                        letter: l.clone(),
                        n: t.len(),
                    });
                }
                letter_ids.push(t[0] as usize);
            }
            let last: Vec<f32> = logits
                .clone()
                .slice([row..row + 1, p.len() - 1..p.len(), 0..vocab])
                .into_data()
                .convert::<f32>()
                .to_vec()
                .expect("float logits");
            let best = letter_ids
                .iter()
                .enumerate()
                .max_by(|a, b| last[*a.1].total_cmp(&last[*b.1]))
                .map(|(k, _)| k)
                .unwrap_or(0);
            if let Some(letter) = letters.get(best)
                && task.evaluate(i, letter)
            {
                passed += 1;
            }
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    Ok(passed)
}

/// Generative scoring of `task`'s `problems` (upstream `run_generative_eval`): how many pass
/// at `num_samples`.
pub fn run_generative<B: FusedOps>(
    engine: &Engine<B>,
    task: &dyn Task,
    problems: &[usize],
    opts: &ChatEvalOptions,
) -> Result<usize, ChatEvalError> {
    let pb = bar(opts.progress, problems.len(), task.name());
    let params = GenerationParams {
        temperature: opts.temperature,
        top_k: (opts.top_k > 0).then_some(opts.top_k),
        max_tokens: opts.max_new_tokens,
        seed: Some(opts.seed),
        num_samples: opts.num_samples.max(1),
        ..GenerationParams::default()
    };
    let mut passed = 0;
    for &i in problems {
        if correct_samples(engine, task, i, &params)? > 0 {
            passed += 1;
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(passed)
}

/// Samples `params.num_samples` replies to problem `i` of `task` and returns how many are
/// graded correct. The seed is `params.seed + i` and `max_tokens` is capped by the room the
/// prompt leaves in the context; a prompt that leaves no room scores 0.
pub fn correct_samples<B: FusedOps>(
    engine: &Engine<B>,
    task: &dyn Task,
    i: usize,
    params: &GenerationParams,
) -> Result<usize, ChatEvalError> {
    let max_len = engine.model().config().sequence_len;
    let prompt = engine
        .tokenizer()
        .render_for_completion(&task.get(i), max_len)?;
    let room = max_len.saturating_sub(prompt.len());
    if room == 0 {
        return Ok(0);
    }
    let params = GenerationParams {
        max_tokens: params.max_tokens.min(room),
        seed: Some(params.seed.unwrap_or(0).wrapping_add(i as u64)),
        ..params.clone()
    };
    let rows = engine.generate_batch(&prompt, &params)?;
    Ok(rows.iter().filter(|r| task.evaluate(i, &r.text)).count())
}

/// Evaluates one task on one data-parallel rank: it scores problems `rank, rank + world, …`
/// and the passed counts are summed over the ranks (upstream's strided problems and
/// `all_reduce`); every rank returns the same outcome. [`Rank::single`] evaluates them all.
pub fn evaluate_task<B: FusedOps>(
    engine: &Engine<B>,
    task: &dyn Task,
    opts: &ChatEvalOptions,
    rank: &Rank<B>,
) -> Result<TaskOutcome, ChatEvalError> {
    let t0 = Instant::now();
    let n = opts.max_problems.map_or(task.len(), |m| m.min(task.len()));
    let mine: Vec<usize> = (rank.rank..n).step_by(rank.world_size).collect();
    let progress = opts.progress && rank.is_master();
    let passed = match task.eval_kind() {
        EvalKind::Categorical => run_categorical(engine, task, &mine, opts.batch_size, progress)?,
        EvalKind::Generative => run_generative(engine, task, &mine, opts)?,
    };
    let passed = rank.sum_f64(&[passed as f64])?[0].round() as usize;
    Ok(TaskOutcome {
        name: task.name().to_string(),
        total: n,
        passed,
        baseline: task.baseline(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Loads the requested tasks (test splits) from `data_dir`.
pub fn load_tasks(
    data_dir: &Path,
    opts: &ChatEvalOptions,
) -> Result<Vec<Arc<dyn Task>>, ChatEvalError> {
    let names: Vec<String> = if opts.tasks.is_empty() {
        TaskSpec::CHAT_EVAL.iter().map(|s| s.to_string()).collect()
    } else {
        opts.tasks.clone()
    };
    // `max_problems` is applied when each task is evaluated.
    names
        .iter()
        .map(|n| {
            Ok(TaskSpec::load(
                n,
                TaskSplit::Test,
                data_dir,
                opts.spelling_size,
            )?)
        })
        .collect()
}

/// Runs every task and assembles the validated [`EvaluationResult`] (`model` names what was
/// evaluated, e.g. `sft/d4@120`; the caller sets the checkpoint folder and step), with the
/// settings as its [`EvaluationConfig::Chat`].
pub fn run_chat_eval<B: FusedOps>(
    engine: &Engine<B>,
    tasks: &[Arc<dyn Task>],
    opts: &ChatEvalOptions,
    model: &str,
) -> Result<(Vec<TaskOutcome>, EvaluationResult), ChatEvalError> {
    let rank = Rank::single(engine.model().device());
    run_chat_eval_ranked(engine, tasks, opts, model, &rank)
}

/// [`run_chat_eval`] on one data-parallel rank (see [`evaluate_task`]); rank 0 logs.
pub fn run_chat_eval_ranked<B: FusedOps>(
    engine: &Engine<B>,
    tasks: &[Arc<dyn Task>],
    opts: &ChatEvalOptions,
    model: &str,
    rank: &Rank<B>,
) -> Result<(Vec<TaskOutcome>, EvaluationResult), ChatEvalError> {
    let mut outcomes = Vec::new();
    for task in tasks {
        let o = evaluate_task(engine, task.as_ref(), opts, rank)?;
        if rank.is_master() {
            tracing::info!(
                "{}: {}/{} = {:.2}% ({:.1}s)",
                o.name,
                o.passed,
                o.total,
                100.0 * o.accuracy(),
                o.seconds
            );
        }
        outcomes.push(o);
    }
    let all = TaskSpec::CHAT_EVAL
        .iter()
        .all(|n| outcomes.iter().any(|o| o.name == *n));
    let metric = if all {
        "ChatCORE".to_string()
    } else {
        format!(
            "ChatCORE-{}",
            outcomes
                .iter()
                .map(|o| o.name.as_str())
                .collect::<Vec<_>>()
                .join("+")
        )
    };
    let mut extra = BTreeMap::new();
    for o in &outcomes {
        extra.insert(
            format!("{}.passed", o.name),
            serde_json::json!([o.passed, o.total]),
        );
    }
    let config = EvaluationConfig::Chat {
        max_problems: opts.max_problems,
        batch_size: opts.batch_size,
        num_samples: opts.num_samples,
        max_new_tokens: opts.max_new_tokens,
        temperature: opts.temperature,
        top_k: opts.top_k,
        seed: opts.seed,
    };
    let result = EvaluationResult {
        model: model.to_string(),
        config: Some(config),
        metric,
        scores: outcomes
            .iter()
            .map(|o| (o.name.clone(), o.accuracy()))
            .collect(),
        centered: outcomes
            .iter()
            .map(|o| (o.name.clone(), o.centered()))
            .collect(),
        aggregate: (!outcomes.is_empty()).then(|| chatcore(&outcomes)),
        created_at: chrono::Utc::now(),
        extra,
        ..EvaluationResult::default()
    };
    result.validate()?;
    Ok((outcomes, result))
}

/// Writes `<stem>.json` and `<stem>.csv` atomically.
pub fn save_result(result: &EvaluationResult, stem: &Path) -> Result<(), ChatEvalError> {
    use nanochat_core::fs::write_atomic;
    let json = serde_json::to_vec_pretty(result).expect("EvaluationResult serialises");
    write_atomic(&stem.with_extension("json"), &json)?;
    write_atomic(&stem.with_extension("csv"), result.to_csv().as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centering_and_chatcore() {
        let o = |p, b| TaskOutcome {
            name: "t".into(),
            total: 100,
            passed: p,
            baseline: b,
            seconds: 0.0,
        };
        assert!((o(25, 0.25).centered()).abs() < 1e-12);
        assert!((o(100, 0.25).centered() - 1.0).abs() < 1e-12);
        assert!((o(10, 0.25).centered() + 0.2).abs() < 1e-12);
        assert!((o(30, 0.0).centered() - 0.3).abs() < 1e-12);
        assert!((chatcore(&[o(100, 0.25), o(0, 0.0)]) - 0.5).abs() < 1e-12);
    }
}
