//! `nanochat chat-eval` (upstream `scripts/chat_eval.py`): ARC, MMLU, GSM8K, HumanEval and
//! SpellingBee on a chat model, ChatCORE, results as JSON + CSV in
//! `<base>/chat_eval/<source>_<tag>_<step>.{json,csv}` (an `EvaluationResult` naming the
//! checkpoint, step and settings) and a report section naming that file.

use nanochat::model::TrainBackend;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nanochat::eval::chat_eval::{ChatEvalOptions, load_tasks, run_chat_eval_ranked, save_result};
use nanochat::infer::Engine;
use nanochat::model::distributed::run_replicated;
use nanochat::model::{BackendTask, dispatch};
use nanochat::tokenizer::Tokenizer;
use serde_json::json;

/// Flags of `chat-eval`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    checkpoint: super::CheckpointArgs,
    /// Tasks separated by `|` (default: ARC-Easy|ARC-Challenge|MMLU|GSM8K|HumanEval|SpellingBee).
    #[arg(short = 'a', long)]
    task_name: Option<String>,
    /// Sampling temperature for generative tasks (0 = greedy).
    #[arg(short = 't', long, default_value_t = 0.0)]
    temperature: f64,
    /// Most new tokens per answer.
    #[arg(short = 'm', long, default_value_t = 512)]
    max_new_tokens: usize,
    /// Samples per generative problem (pass@n).
    #[arg(short = 'n', long, default_value_t = 1)]
    num_samples: usize,
    /// Top-k for sampling.
    #[arg(short = 'k', long, default_value_t = 50)]
    top_k: usize,
    /// Rows per forward pass for categorical tasks.
    #[arg(short = 'b', long, default_value_t = 8)]
    batch_size: usize,
    /// At most this many problems per task.
    #[arg(short = 'x', long)]
    max_problems: Option<usize>,
    /// SpellingBee test examples.
    #[arg(long, default_value_t = 256)]
    spelling_size: usize,
    #[command(flatten)]
    run: super::run_args::RunArgs,
}

struct Task {
    args: Args,
    base: PathBuf,
    tokenizer: Arc<Tokenizer>,
}

impl BackendTask for Task {
    type Output = anyhow::Result<()>;
    fn run<B: TrainBackend>(self, device: B::Device) -> anyhow::Result<()> {
        let a = &self.args;
        let (model, meta, dir) = a.checkpoint.load::<B::InnerBackend>(&self.base, &device)?;
        let model = model.with_compute_dtype(a.run.compute_dtype(a.run.device()));
        let tag = dir
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let step = meta.step();
        let source = a.checkpoint.source.as_str();
        let opts = ChatEvalOptions {
            tasks: a
                .task_name
                .as_deref()
                .map(|s| s.split('|').map(|t| t.trim().to_string()).collect())
                .unwrap_or_default(),
            max_problems: a.max_problems,
            batch_size: a.batch_size,
            num_samples: a.num_samples,
            max_new_tokens: a.max_new_tokens,
            temperature: a.temperature,
            top_k: a.top_k,
            seed: 42,
            spelling_size: a.spelling_size,
            progress: a.run.progress(),
        };
        let tasks = load_tasks(&a.run.data_dir(), &opts)?;
        let label = format!("{source}/{tag}@{step}");
        // With --devices every rank scores its stride of each task's problems.
        let dist = a.run.distributed()?;
        let (outcomes, mut result) = run_replicated::<B::InnerBackend, _, _, _, _, _>(
            dist.as_ref(),
            &device,
            model,
            |model, rank| {
                let engine = Engine::new(model, self.tokenizer.clone())?;
                anyhow::Ok(run_chat_eval_ranked(&engine, &tasks, &opts, &label, &rank)?)
            },
        )?;
        for o in &outcomes {
            println!(
                "{:<14} {:>5}/{:<5} accuracy {:.4} | centered {:+.4} | {:.1}s",
                o.name,
                o.passed,
                o.total,
                o.accuracy(),
                o.centered(),
                o.seconds
            );
        }
        println!("{}: {:.4}", result.metric, result.aggregate.unwrap_or(0.0));
        (result.checkpoint, result.step) = (Some(dir.clone()), Some(step));
        result.check_checkpoint()?;
        if !a.run.writes_report() {
            return Ok(());
        }
        let stem = self
            .base
            .join("chat_eval")
            .join(format!("{source}_{tag}_{step:06}"));
        std::fs::create_dir_all(stem.parent().expect("has parent"))?;
        save_result(&result, &stem)?;
        println!("wrote {}.{{json,csv}}", stem.display());
        let entries = [
            (
                "source".to_string(),
                json!(format!("{source}/{tag}@{step}")),
            ),
            ("max problems per task".to_string(), json!(a.max_problems)),
        ];
        nanochat::eval::Report::new(&self.base).log_results(
            &format!("chat-evaluation-{source}"),
            &entries,
            &[stem.with_extension("json")],
        )?;
        Ok(())
    }
}

/// Runs `chat-eval`.
pub fn run(args: Args, base: &Path) -> anyhow::Result<()> {
    let device = args.run.device();
    let task = Task {
        args,
        base: base.to_path_buf(),
        tokenizer: Arc::new(super::load_tokenizer(base)?),
    };
    dispatch(device, task)?
}
