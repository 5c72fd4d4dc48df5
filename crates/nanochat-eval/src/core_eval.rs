//! The CORE metric's per-example evaluation (upstream `nanochat/core_eval.py`, DCLM
//! arXiv 2406.11794): prompt rendering with the task's continuation delimiter and few-shot
//! examples (sampled with `random.Random(1234 + idx)`), BOS-prefixed tokenization, the
//! continuation span, one batched forward, and scoring:
//!
//! - **multiple choice**: the option whose continuation has the lowest mean loss;
//! - **schema**: the context option (shared continuation) with the lowest mean loss;
//! - **language modelling**: correct when greedy argmax reproduces every continuation token.

use burn::tensor::{Int, Tensor, TensorData};
use minijinja::{Environment, Value, context};
use nanochat_data::py_random::PyRandom;
use nanochat_model::FusedOps;
use nanochat_model::{Gpt, Reduction};
use nanochat_tokenizer::Tokenizer;
use serde_json::Value as Json;

/// The three CORE task types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskType {
    /// Pick the option with the lowest continuation loss.
    MultipleChoice,
    /// Pick the context with the lowest loss of the shared continuation.
    Schema,
    /// Greedy decoding must reproduce the continuation.
    LanguageModeling,
}

impl TaskType {
    /// From the bundle's `icl_task_type`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "multiple_choice" => Self::MultipleChoice,
            "schema" => Self::Schema,
            "language_modeling" => Self::LanguageModeling,
            _ => return None,
        })
    }
}

/// How a task is evaluated (upstream `task_meta`).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskMeta {
    /// Scoring rule.
    pub task_type: TaskType,
    /// Few-shot examples per prompt.
    pub num_fewshot: usize,
    /// Between context and continuation (default `" "`).
    pub continuation_delimiter: String,
}

/// Errors in a task's data.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// An example lacks a field or has the wrong shape.
    #[error("example {idx}: {reason}")]
    BadExample {
        /// Index in the (shuffled) task data.
        idx: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Python's `str.strip()` whitespace (Rust's plus the ASCII separators 0x1c–0x1f).
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()`.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(py_space)
}

const MC: &str = "{%- for example in fewshot_examples -%}\n{{ example.query }}{{ continuation_delimiter }}{{ example.choices[example.gold] }}\n\n{% endfor -%}\n{{ item.query }}{{ continuation_delimiter }}{{ choice }}";
const SCHEMA: &str = "{%- for example in fewshot_examples -%}\n{{ example.context_options[example.gold] }}{{ continuation_delimiter }}{{ example.continuation }}\n\n{% endfor -%}\n{{ context }}{{ continuation_delimiter }}{{ item.continuation }}";
const LM: &str = "{%- for example in fewshot_examples -%}\n{{ example.context | trim }}{{ continuation_delimiter }}{{ example.continuation }}\n\n{% endfor -%}\n{{ item.context | trim }}{{ continuation_delimiter }}{% if include_continuation %}{{ item.continuation }}{% endif %}";

/// The three templates, parsed once.
fn env() -> &'static Environment<'static> {
    static ENV: std::sync::OnceLock<Environment<'static>> = std::sync::OnceLock::new();
    ENV.get_or_init(build_env)
}

fn build_env() -> Environment<'static> {
    let mut env = Environment::new();
    env.add_filter("trim", |s: String| py_strip(&s).to_string());
    env.add_template("mc", MC).expect("static template");
    env.add_template("schema", SCHEMA).expect("static template");
    env.add_template("lm", LM).expect("static template");
    env
}

fn bad(idx: usize, reason: impl Into<String>) -> CoreError {
    CoreError::BadExample {
        idx,
        reason: reason.into(),
    }
}

fn render(env: &Environment, name: &str, ctx: Value, idx: usize) -> Result<String, CoreError> {
    env.get_template(name)
        .expect("registered")
        .render(ctx)
        .map_err(|e| bad(idx, format!("cannot render: {e}")))
}

fn strings(item: &Json, field: &str, idx: usize) -> Result<Vec<Json>, CoreError> {
    item[field]
        .as_array()
        .cloned()
        .ok_or_else(|| bad(idx, format!("`{field}` is not a list")))
}

/// The prompts of example `idx` (upstream `render_prompts_*`).
pub fn render_prompts(
    item: &Json,
    fewshot: &[Json],
    meta: &TaskMeta,
    idx: usize,
) -> Result<Vec<String>, CoreError> {
    let env = env();
    let delim = &meta.continuation_delimiter;
    let fewshot = Value::from_serialize(fewshot);
    let item_v = Value::from_serialize(item);
    match meta.task_type {
        TaskType::MultipleChoice => strings(item, "choices", idx)?
            .into_iter()
            .map(|choice| {
                let ctx = context! { fewshot_examples => fewshot.clone(), continuation_delimiter => delim, item => item_v.clone(), choice => Value::from_serialize(&choice) };
                render(env, "mc", ctx, idx)
            })
            .collect(),
        TaskType::Schema => strings(item, "context_options", idx)?
            .into_iter()
            .map(|option| {
                let ctx = context! { fewshot_examples => fewshot.clone(), continuation_delimiter => delim, item => item_v.clone(), context => Value::from_serialize(&option) };
                render(env, "schema", ctx, idx)
            })
            .collect(),
        TaskType::LanguageModeling => {
            let r = |with: bool| {
                let ctx = context! { fewshot_examples => fewshot.clone(), continuation_delimiter => delim, item => item_v.clone(), include_continuation => with };
                render(env, "lm", ctx, idx)
            };
            let without = r(false)?;
            Ok(vec![py_strip(&without).to_string(), r(true)?])
        }
    }
}

/// Length of the common prefix (`left`) or suffix of all sequences.
pub fn find_common_length(seqs: &[Vec<u32>], left: bool) -> usize {
    let min = seqs.iter().map(Vec::len).min().unwrap_or(0);
    for i in 0..min {
        let at = |s: &Vec<u32>| if left { s[i] } else { s[s.len() - 1 - i] };
        let first = at(&seqs[0]);
        if !seqs.iter().all(|s| at(s) == first) {
            return i;
        }
    }
    min
}

/// The rows fed to the model and each row's continuation span `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rows {
    /// BOS-prefixed token rows.
    pub tokens: Vec<Vec<u32>>,
    /// Continuation start per row.
    pub start: Vec<usize>,
    /// Continuation end per row.
    pub end: Vec<usize>,
}

/// Tokenizes prompts and locates the continuations (upstream `batch_sequences_*`).
pub fn batch_sequences(
    tokenizer: &Tokenizer,
    prompts: &[String],
    task_type: TaskType,
    idx: usize,
) -> Result<Rows, CoreError> {
    let tokens = tokenizer.encode_batch(prompts, Some(tokenizer.bos_token_id()), None);
    match task_type {
        TaskType::MultipleChoice => {
            let s = find_common_length(&tokens, true);
            let end = tokens.iter().map(Vec::len).collect();
            Ok(Rows {
                start: vec![s; tokens.len()],
                end,
                tokens,
            })
        }
        TaskType::Schema => {
            let suffix = find_common_length(&tokens, false);
            let end: Vec<usize> = tokens.iter().map(Vec::len).collect();
            Ok(Rows {
                start: end.iter().map(|e| e - suffix).collect(),
                end,
                tokens,
            })
        }
        TaskType::LanguageModeling => {
            let [without, with] =
                <[Vec<u32>; 2]>::try_from(tokens).map_err(|_| bad(idx, "expected two prompts"))?;
            if without.len() >= with.len() || with[..without.len()] != without[..] {
                return Err(bad(
                    idx,
                    "the prompt without the continuation is not a prefix of the prompt with it",
                ));
            }
            Ok(Rows {
                start: vec![without.len()],
                end: vec![with.len()],
                tokens: vec![with],
            })
        }
    }
}

/// Per-position losses (target = next token; the last column is NaN) and argmax predictions
/// of the rows padded with BOS on the right (upstream `forward_model`).
pub fn forward_rows<B: FusedOps>(
    model: &Gpt<B>,
    rows: &[Vec<u32>],
    pad: u32,
) -> (Vec<Vec<f32>>, Vec<Vec<u32>>) {
    let device = model.device();
    let (b, t) = (rows.len(), rows.iter().map(Vec::len).max().unwrap_or(0));
    let mut input = vec![pad as i64; b * t];
    let mut target = vec![pad as i64; b * t];
    for (i, r) in rows.iter().enumerate() {
        for (j, &v) in r.iter().enumerate() {
            input[i * t + j] = v as i64;
        }
    }
    for i in 0..b {
        for j in 0..t {
            target[i * t + j] = input[i * t + (j + 1) % t];
        }
    }
    let x = Tensor::<B, 2, Int>::from_data(TensorData::new(input, [b, t]), &device);
    let y = Tensor::<B, 2, Int>::from_data(TensorData::new(target, [b, t]), &device);
    let logits = model.forward(x, None);
    let preds: Vec<i64> = logits
        .clone()
        .argmax(2)
        .into_data()
        .convert::<i64>()
        .to_vec()
        .expect("int data");
    let losses: Vec<f32> = nanochat_model::cross_entropy(logits, y, Reduction::None)
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("float data");
    let losses = losses
        .chunks(t)
        .map(|r| {
            let mut r = r.to_vec();
            r[t - 1] = f32::NAN;
            r
        })
        .collect();
    let preds = preds
        .chunks(t)
        .map(|r| r.iter().map(|&v| v as u32).collect())
        .collect();
    (losses, preds)
}

/// The outcome of one example.
#[derive(Debug, Clone, PartialEq)]
pub struct ExampleResult {
    /// Rows and spans that were scored.
    pub rows: Rows,
    /// Mean continuation loss per row (multiple choice and schema).
    pub mean_losses: Vec<f32>,
    /// Whether the model got it right.
    pub correct: bool,
}

/// Evaluates example `idx` of `data` (upstream `evaluate_example`).
pub fn evaluate_example<B: FusedOps>(
    idx: usize,
    model: &Gpt<B>,
    tokenizer: &Tokenizer,
    data: &[Json],
    meta: &TaskMeta,
) -> Result<ExampleResult, CoreError> {
    let item = &data[idx];
    let mut fewshot = Vec::new();
    if meta.num_fewshot > 0 {
        let mut rng = PyRandom::new(1234 + idx as u64);
        let available: Vec<usize> = (0..data.len()).filter(|&i| i != idx).collect();
        if meta.num_fewshot > available.len() {
            return Err(bad(
                idx,
                format!(
                    "{} few-shot examples wanted, {} available",
                    meta.num_fewshot,
                    available.len()
                ),
            ));
        }
        fewshot = rng
            .sample(&available, meta.num_fewshot)
            .into_iter()
            .map(|i| data[i].clone())
            .collect();
    }
    let prompts = render_prompts(item, &fewshot, meta, idx)?;
    let rows = batch_sequences(tokenizer, &prompts, meta.task_type, idx)?;
    let (losses, preds) = forward_rows(model, &rows.tokens, tokenizer.bos_token_id());
    let gold = match meta.task_type {
        TaskType::LanguageModeling => 0,
        _ => item["gold"]
            .as_u64()
            .ok_or_else(|| bad(idx, "`gold` is not an integer"))?,
    };
    let (mean_losses, correct) = score_rows(meta.task_type, &rows, &losses, &preds, gold);
    Ok(ExampleResult {
        rows,
        mean_losses,
        correct,
    })
}

/// Scores one example from the model's outputs on its rows (upstream `evaluate_example`'s
/// tail). `losses[i][j]` is the loss of predicting token `j + 1` of row `i`, `preds[i][j]` the
/// arg-max prediction there. Multiple choice and schema: the option with the lowest **mean**
/// loss over its continuation span wins (the first on ties, like Python's
/// `list.index(min(...))`) and must equal `gold`; language modelling: every continuation token
/// must be the arg-max prediction. Returns the mean losses (empty for LM) and correctness.
pub fn score_rows(
    task_type: TaskType,
    rows: &Rows,
    losses: &[Vec<f32>],
    preds: &[Vec<u32>],
    gold: u64,
) -> (Vec<f32>, bool) {
    match task_type {
        TaskType::LanguageModeling => {
            let (s, e) = (rows.start[0], rows.end[0]);
            let ok = (s..e).all(|j| preds[0][j - 1] == rows.tokens[0][j]);
            (Vec::new(), ok)
        }
        TaskType::MultipleChoice | TaskType::Schema => {
            let means: Vec<f32> = rows
                .start
                .iter()
                .zip(&rows.end)
                .enumerate()
                .map(|(i, (&s, &e))| {
                    let span = &losses[i][s - 1..e - 1];
                    span.iter().sum::<f32>() / span.len() as f32
                })
                .collect();
            let best = means
                .iter()
                .enumerate()
                .fold(
                    (0, f32::INFINITY),
                    |(bi, bv), (i, &v)| if v < bv { (i, v) } else { (bi, bv) },
                )
                .0;
            (means, best as u64 == gold)
        }
    }
}

/// Centered accuracy `(acc − rb/100) / (1 − rb/100)` for a random baseline `rb` in percent.
pub fn centered(accuracy: f64, random_baseline_pct: f64) -> f64 {
    let rb = 0.01 * random_baseline_pct;
    (accuracy - rb) / (1.0 - rb)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Per-position losses and arg-max predictions from handcrafted logits `[t][vocab]`, the
    /// way the model's outputs are reduced (cross-entropy against the next token).
    fn outputs(rows: &[Vec<u32>], logits: &[Vec<Vec<f32>>]) -> (Vec<Vec<f32>>, Vec<Vec<u32>>) {
        let mut losses = Vec::new();
        let mut preds = Vec::new();
        for (row, lg) in rows.iter().zip(logits) {
            let mut l = Vec::new();
            let mut p = Vec::new();
            for (j, v) in lg.iter().enumerate() {
                let max = v.iter().cloned().fold(f32::MIN, f32::max);
                let lse = v.iter().map(|x| (x - max).exp()).sum::<f32>().ln() + max;
                let next = row.get(j + 1).copied().unwrap_or(0) as usize;
                l.push(lse - v[next]);
                let arg = v
                    .iter()
                    .enumerate()
                    .fold(
                        (0, f32::MIN),
                        |(bi, bv), (i, &x)| if x > bv { (i, x) } else { (bi, bv) },
                    )
                    .0;
                p.push(arg as u32);
            }
            losses.push(l);
            preds.push(p);
        }
        (losses, preds)
    }

    /// Logits that put `weight` on token `favour[j]` at position `j` (vocab 4).
    fn favouring(favour: &[u32], weight: f32) -> Vec<Vec<f32>> {
        favour
            .iter()
            .map(|&f| (0..4).map(|k| if k == f { weight } else { 0.0 }).collect())
            .collect()
    }

    #[test]
    fn multiple_choice_picks_the_lowest_mean_continuation_loss() {
        // Shared context [0, 1], continuations [2, 3] (option 0) and [3] (option 1).
        let rows = Rows {
            tokens: vec![vec![0, 1, 2, 3], vec![0, 1, 3]],
            start: vec![2, 2],
            end: vec![4, 3],
        };
        // Option 0's tokens are predicted confidently, option 1's not.
        let logits = vec![favouring(&[1, 2, 3, 0], 5.0), favouring(&[1, 2, 0], 5.0)];
        let (losses, preds) = outputs(&rows.tokens, &logits);
        let (means, ok) = score_rows(TaskType::MultipleChoice, &rows, &losses, &preds, 0);
        assert!(means[0] < means[1] && ok);
        let (_, ok) = score_rows(TaskType::MultipleChoice, &rows, &losses, &preds, 1);
        assert!(!ok);
        // The mean, not the sum: a long continuation is not penalised for its length.
        let rows_len = Rows {
            tokens: vec![vec![0, 1, 2, 2, 2, 2], vec![0, 1, 3]],
            start: vec![2, 2],
            end: vec![6, 3],
        };
        let logits = vec![
            favouring(&[1, 2, 2, 2, 2, 0], 1.0),
            favouring(&[1, 3, 0], 0.3),
        ];
        let (losses, preds) = outputs(&rows_len.tokens, &logits);
        let (means, ok) = score_rows(TaskType::MultipleChoice, &rows_len, &losses, &preds, 0);
        let sum0: f32 = losses[0][1..5].iter().sum();
        assert!(sum0 > losses[1][1] && means[0] < means[1] && ok);
        // Ties go to the first option.
        let tie = vec![favouring(&[1, 0, 0, 0], 0.0), favouring(&[1, 0, 0], 0.0)];
        let rows_tie = Rows {
            tokens: vec![vec![0, 1, 2], vec![0, 1, 3]],
            start: vec![2, 2],
            end: vec![3, 3],
        };
        let (losses, preds) = outputs(&rows_tie.tokens, &tie);
        assert!(score_rows(TaskType::MultipleChoice, &rows_tie, &losses, &preds, 0).1);
    }

    #[test]
    fn schema_scores_the_shared_continuation_under_each_context() {
        // Contexts [0, 1] and [0, 2, 2]; shared continuation [3, 3].
        let rows = Rows {
            tokens: vec![vec![0, 1, 3, 3], vec![0, 2, 2, 3, 3]],
            start: vec![2, 3],
            end: vec![4, 5],
        };
        // Under context 1 the continuation is likely; under context 2 it is not.
        let logits = vec![
            favouring(&[1, 3, 3, 0], 4.0),
            favouring(&[2, 2, 0, 0, 0], 4.0),
        ];
        let (losses, preds) = outputs(&rows.tokens, &logits);
        let (means, ok) = score_rows(TaskType::Schema, &rows, &losses, &preds, 0);
        assert!(means[0] < means[1] && ok, "{means:?}");
        assert!(!score_rows(TaskType::Schema, &rows, &losses, &preds, 1).1);
    }

    #[test]
    fn language_modelling_needs_every_continuation_token_as_argmax() {
        let rows = Rows {
            tokens: vec![vec![0, 1, 2, 3]],
            start: vec![2],
            end: vec![4],
        };
        let good = vec![favouring(&[1, 2, 3, 0], 2.0)];
        let (losses, preds) = outputs(&rows.tokens, &good);
        assert!(score_rows(TaskType::LanguageModeling, &rows, &losses, &preds, 0).1);
        // One wrong prediction inside the continuation fails the example…
        let bad = vec![favouring(&[1, 2, 1, 0], 2.0)];
        let (losses, preds) = outputs(&rows.tokens, &bad);
        assert!(!score_rows(TaskType::LanguageModeling, &rows, &losses, &preds, 0).1);
        // …one in the context does not.
        let ctx = vec![favouring(&[3, 2, 3, 0], 2.0)];
        let (losses, preds) = outputs(&rows.tokens, &ctx);
        assert!(score_rows(TaskType::LanguageModeling, &rows, &losses, &preds, 0).1);
    }

    #[test]
    fn centering() {
        assert_eq!(centered(0.25, 25.0), 0.0);
        assert_eq!(centered(1.0, 25.0), 1.0);
        assert!((centered(0.5, 50.0)).abs() < 1e-12);
        assert!((centered(0.1, 25.0) + 0.2).abs() < 1e-12);
        assert_eq!(centered(0.3, 0.0), 0.3);
    }
}
