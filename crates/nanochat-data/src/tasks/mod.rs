//! Tasks: datasets of conversations with a way to grade an answer (upstream `tasks/common.py`,
//! `tasks/*.py`). Chat evaluation (`nanochat_eval::chat_eval`) asks a [`Task`] for prompts and
//! grades the model's replies with it; post-training (`nanochat_train::chat_train`) mixes tasks
//! into a training stream with [`TaskMixture`] ([`build_mixture`] reads `--mixture` entries).
//!
//! Every loader reads the offline data layout of `../shared/data` (see
//! [`TaskSpec::load`]) and reports bad input as a [`TaskError`] naming the file, the line and
//! the rule broken.

pub mod conversations;
pub mod gsm8k;
pub mod humaneval;
pub mod multiple_choice;
pub mod spelling;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use nanochat_core::{Conversation, ValidationError};

use crate::py_random::PyRandom;

pub use conversations::Conversations;
pub use gsm8k::Gsm8k;
pub use humaneval::HumanEval;
pub use multiple_choice::{MultipleChoice, render_mc};
pub use spelling::{SimpleSpelling, SpellingBee};

/// Why a task could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// Reading a file failed.
    #[error(transparent)]
    Io(#[from] nanochat_core::fs::IoError),
    /// A line (or record) of a data file is malformed.
    #[error("{path}:{line}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line (or record) number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A record parsed but broke a validation rule of the conversation entities.
    #[error("{path}:{line}: {error}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The rule broken.
        error: Box<ValidationError>,
    },
    /// An unknown task name.
    #[error("unknown task `{0}` (known: {known})", known = TaskSpec::KNOWN.join(", "))]
    Unknown(String),
    /// A `--mixture` that cannot be built (the entry and the reason, or no tasks).
    #[error("{0}")]
    Mixture(String),
    /// A data set that is empty or missing files.
    #[error("{path}: {reason}")]
    Missing {
        /// Where it was looked for.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
}

impl TaskError {
    pub(crate) fn parse(path: &Path, line: usize, reason: impl Into<String>) -> Self {
        TaskError::Parse {
            path: path.to_path_buf(),
            line,
            reason: reason.into(),
        }
    }
}

/// How a task is graded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalKind {
    /// Pick one of the answer letters from the logits at the end of the prompt.
    Categorical,
    /// Generate a reply and check it.
    Generative,
}

/// A dataset of conversations with a grader.
pub trait Task: Send + Sync {
    /// Display name, e.g. `ARC-Easy`.
    fn name(&self) -> &str;
    /// Number of examples.
    fn len(&self) -> usize;
    /// Whether the task has no examples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Example `index` (`index < len()`) as a conversation ending with the reference answer.
    fn get(&self, index: usize) -> Conversation;
    /// How the task is graded.
    fn eval_kind(&self) -> EvalKind {
        EvalKind::Generative
    }
    /// For categorical tasks: the answer letters of example `index`.
    fn letters(&self, _index: usize) -> Option<Vec<String>> {
        None
    }
    /// Whether `response` (the assistant's reply) answers example `index` correctly.
    fn evaluate(&self, index: usize, response: &str) -> bool;
    /// The chance accuracy ChatCORE centers on (0.25 for four-way multiple choice).
    fn baseline(&self) -> f64 {
        0.0
    }
}

/// Several tasks as one deterministic, shuffled stream (upstream `TaskMixture`: CPython
/// `random.Random(seed).shuffle` over `(task, index)` pairs, so the order matches upstream's
/// for the same task sizes). A task listed twice is seen twice per epoch.
#[derive(Clone)]
pub struct TaskMixture {
    tasks: Vec<Arc<dyn Task>>,
    order: Vec<(u32, u32)>,
}

impl TaskMixture {
    /// Mixes `tasks`, shuffled with `seed` (upstream uses 42).
    pub fn new(tasks: Vec<Arc<dyn Task>>, seed: u64) -> Self {
        let mut order = Self::pairs(&tasks);
        PyRandom::new(seed).shuffle(&mut order);
        Self { tasks, order }
    }

    /// Concatenates `tasks` in order without shuffling (upstream `TaskSequence`).
    pub fn sequence(tasks: Vec<Arc<dyn Task>>) -> Self {
        let order = Self::pairs(&tasks);
        Self { tasks, order }
    }

    fn pairs(tasks: &[Arc<dyn Task>]) -> Vec<(u32, u32)> {
        tasks
            .iter()
            .enumerate()
            .flat_map(|(t, task)| (0..task.len()).map(move |i| (t as u32, i as u32)))
            .collect()
    }

    /// Number of conversations per epoch.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether the mixture is empty.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Conversation `i` of the mixture (`i < len()`).
    pub fn get(&self, i: usize) -> Conversation {
        let (t, j) = self.order[i];
        self.tasks[t as usize].get(j as usize)
    }

    /// The mixed tasks with their sizes, for logs.
    pub fn describe(&self) -> String {
        self.tasks
            .iter()
            .map(|t| format!("{} ({})", t.name(), t.len()))
            .collect::<Vec<_>>()
            .join(" + ")
    }
}

/// The first `n` examples of a task (upstream's `stop=` slicing, e.g. `GSM8K test[:420]`).
pub struct Take {
    inner: Arc<dyn Task>,
    n: usize,
}

impl Take {
    /// Wraps `inner`, keeping at most `n` examples.
    pub fn new(inner: Arc<dyn Task>, n: usize) -> Self {
        let n = n.min(inner.len());
        Self { inner, n }
    }
}

impl Task for Take {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn len(&self) -> usize {
        self.n
    }
    fn get(&self, index: usize) -> Conversation {
        self.inner.get(index)
    }
    fn eval_kind(&self) -> EvalKind {
        self.inner.eval_kind()
    }
    fn letters(&self, index: usize) -> Option<Vec<String>> {
        self.inner.letters(index)
    }
    fn evaluate(&self, index: usize, response: &str) -> bool {
        self.inner.evaluate(index, response)
    }
    fn baseline(&self) -> f64 {
        self.inner.baseline()
    }
}

/// Which split of a task to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskSplit {
    /// Training data.
    Train,
    /// Held-out evaluation data.
    Test,
}

/// Names the tasks the CLI and the training mixtures accept and loads them from the data dir.
pub struct TaskSpec;

impl TaskSpec {
    /// Names accepted by [`TaskSpec::load`].
    pub const KNOWN: [&'static str; 10] = [
        "ARC-Easy",
        "ARC-Challenge",
        "MMLU",
        "MCExtra",
        "GSM8K",
        "HumanEval",
        "SpellingBee",
        "SimpleSpelling",
        "Identity",
        "HHRLHF",
    ];

    /// The chat-eval tasks in upstream's order (ChatCORE is their mean centered score).
    pub const CHAT_EVAL: [&'static str; 6] = [
        "ARC-Easy",
        "ARC-Challenge",
        "MMLU",
        "GSM8K",
        "HumanEval",
        "SpellingBee",
    ];

    /// Loads task `name` (case-insensitive) from `data_dir` (the offline data root:
    /// `eval_bundle/`, `tasks/`, `sft/`, `words/`). `size` sets the example count of the
    /// synthetic spelling tasks.
    pub fn load(
        name: &str,
        split: TaskSplit,
        data_dir: &Path,
        size: usize,
    ) -> Result<Arc<dyn Task>, TaskError> {
        let lower = name.to_ascii_lowercase();
        let wk = data_dir.join("eval_bundle/eval_data/world_knowledge");
        Ok(match lower.as_str() {
            // ARC train/dev are not offline; the bundle holds the test split only, so the
            // training side uses the same questions (documented in docs/training.md).
            "arc-easy" => Arc::new(MultipleChoice::from_bundle_jsonl(
                "ARC-Easy",
                &wk.join("arc_easy.jsonl"),
            )?),
            "arc-challenge" => Arc::new(MultipleChoice::from_bundle_jsonl(
                "ARC-Challenge",
                &wk.join("arc_challenge.jsonl"),
            )?),
            "mmlu" => {
                let dirs: &[&str] = match split {
                    TaskSplit::Test => &["test"],
                    TaskSplit::Train => &["dev", "val"],
                };
                Arc::new(MultipleChoice::mmlu(&data_dir.join("tasks/mmlu"), dirs)?)
            }
            "mcextra" => Arc::new(MultipleChoice::mc_extra(&data_dir.join("sft/mc_extra"))?),
            "gsm8k" => {
                let file = match split {
                    TaskSplit::Train => "train.jsonl",
                    TaskSplit::Test => "test.jsonl",
                };
                Arc::new(Gsm8k::load(&data_dir.join("tasks/gsm8k").join(file))?)
            }
            "humaneval" => Arc::new(HumanEval::load(
                &data_dir.join("tasks/humaneval/HumanEval.jsonl.gz"),
            )?),
            "spellingbee" => Arc::new(SpellingBee::load(
                &data_dir.join("words/words_alpha.zip"),
                size,
                split,
            )?),
            "simplespelling" => Arc::new(SimpleSpelling::load(
                &data_dir.join("words/words_alpha.zip"),
                size,
                split,
            )?),
            "identity" => Arc::new(Conversations::identity(
                &data_dir.join("sft/fastchat_dummy_identity_conversation.json"),
            )?),
            "hhrlhf" => Arc::new(Conversations::hh_rlhf(
                &data_dir.join("sft/hh_rlhf_harmless_base_test.jsonl.gz"),
            )?),
            _ => return Err(TaskError::Unknown(name.to_string())),
        })
    }
}

/// Reads a whole file into a string, naming the file on failure.
/// Builds a mixture from entries like `GSM8K*4`, `SpellingBee:2000` or `mine.jsonl`.
pub fn build_mixture(
    entries: &[String],
    split: TaskSplit,
    data_dir: &Path,
    seed: u64,
) -> Result<TaskMixture, TaskError> {
    let mut tasks: Vec<Arc<dyn Task>> = Vec::new();
    for e in entries {
        let bad = |why: &str| TaskError::Mixture(format!("mixture entry `{e}`: {why}"));
        let (spec, times) = match e.rsplit_once('*') {
            Some((s, k)) => (
                s,
                k.parse::<usize>().map_err(|_| bad("`*k` needs a count"))?,
            ),
            None => (e.as_str(), 1),
        };
        let (name, size) = match spec.rsplit_once(':') {
            Some((s, n)) if !s.ends_with(".jsonl") && n.chars().all(|c| c.is_ascii_digit()) => (
                s,
                Some(n.parse::<usize>().map_err(|_| bad("`:n` needs a size"))?),
            ),
            _ => (spec, None),
        };
        let task: Arc<dyn Task> = if name.ends_with(".jsonl") || name.ends_with(".jsonl.gz") {
            Arc::new(Conversations::jsonl(Path::new(name))?)
        } else {
            let t = TaskSpec::load(name, split, data_dir, size.unwrap_or(1000))?;
            // The spelling tasks are generated with `n` examples already; for them `Take` is
            // a no-op.
            match size {
                Some(n) => Arc::new(Take::new(t, n)),
                None => t,
            }
        };
        for _ in 0..times {
            tasks.push(task.clone());
        }
    }
    if tasks.is_empty() {
        return Err(TaskError::Mixture("the mixture is empty".into()));
    }
    Ok(TaskMixture::new(tasks, seed))
}

/// The non-blank lines of the JSONL `text` read from `path`, parsed, with their 0-based indexes.
pub(crate) fn jsonl<'a, T: serde::de::DeserializeOwned>(
    path: &'a Path,
    text: &'a str,
) -> impl Iterator<Item = Result<(usize, T), TaskError>> + 'a {
    let lines = text.lines().enumerate();
    let lines = lines.filter(|(_, l)| !l.trim().is_empty());
    lines.map(move |(i, l)| {
        let bad = |e: serde_json::Error| TaskError::parse(path, i + 1, format!("bad JSON: {e}"));
        serde_json::from_str(l).map(|r| (i, r)).map_err(bad)
    })
}

pub(crate) fn read_text(path: &Path) -> Result<String, TaskError> {
    let bytes = nanochat_core::fs::read(path)?;
    String::from_utf8(bytes).map_err(|e| TaskError::parse(path, 0, format!("not UTF-8: {e}")))
}

/// Reads a gzip-compressed text file.
pub(crate) fn read_gz(path: &Path) -> Result<String, TaskError> {
    use std::io::Read;
    let bytes = nanochat_core::fs::read(path)?;
    let mut out = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut out)
        .map_err(|e| TaskError::parse(path, 0, format!("bad gzip: {e}")))?;
    Ok(out)
}

/// Extracts the final answer after `#### ` (upstream GSM8K `extract_answer`: the number with
/// commas removed), or `None`.
pub fn extract_answer(text: &str) -> Option<String> {
    // Upstream: re.search(r"#### (\-?[0-9\.\,]+)"), then commas removed.
    let mut from = 0;
    while let Some(pos) = text[from..].find("#### ") {
        let rest = &text[from + pos + 5..];
        let (sign, body) = match rest.strip_prefix('-') {
            Some(b) => ("-", b),
            None => ("", rest),
        };
        let num: String = body
            .chars()
            .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | ','))
            .collect();
        if !num.is_empty() {
            return Some(format!("{sign}{}", num.replace(',', "")));
        }
        from += pos + 5;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use nanochat_core::{Message, MessageRole};

    struct Fixed(usize);
    impl Task for Fixed {
        fn name(&self) -> &str {
            "fixed"
        }
        fn len(&self) -> usize {
            self.0
        }
        fn get(&self, index: usize) -> Conversation {
            Conversation {
                messages: vec![
                    Message::new(MessageRole::User, format!("{index}")),
                    Message::new(MessageRole::Assistant, "x"),
                ],
            }
        }
        fn evaluate(&self, _: usize, _: &str) -> bool {
            false
        }
    }

    #[test]
    fn answer_extraction_matches_upstream_regex() {
        assert_eq!(extract_answer("so #### 1,234").as_deref(), Some("1234"));
        assert_eq!(extract_answer("#### -3.5").as_deref(), Some("-3.5"));
        assert_eq!(extract_answer("#### x #### 7").as_deref(), Some("7"));
        assert_eq!(extract_answer("#### x"), None);
        assert_eq!(extract_answer("no marker 42"), None);
    }

    #[test]
    fn mixture_is_a_seeded_permutation_of_all_pairs() {
        let a: Arc<dyn Task> = Arc::new(Fixed(5));
        let b: Arc<dyn Task> = Arc::new(Fixed(3));
        let m1 = TaskMixture::new(vec![a.clone(), b.clone()], 42);
        let m2 = TaskMixture::new(vec![a.clone(), b.clone()], 42);
        let m3 = TaskMixture::new(vec![a.clone(), b.clone()], 7);
        assert_eq!(m1.order, m2.order);
        assert_ne!(m1.order, m3.order);
        let mut sorted = m1.order.clone();
        sorted.sort();
        assert_eq!(sorted, TaskMixture::sequence(vec![a, b]).order);
        assert_eq!(m1.len(), 8);
    }
}
