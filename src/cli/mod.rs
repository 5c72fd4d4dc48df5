//! Argument parsing for the `nanochat` binary; each subcommand lives in its own file and only
//! turns flags into a call of a library function.

mod base_eval;
mod base_train;
mod bench;
mod bench_kernels;
mod bench_serve;
mod chat_cli;
mod chat_eval;
mod chat_train;
mod distributed;
mod doctor;
mod doctor_dataset;
mod download;
mod hf_reference;
mod interop;
mod report;
mod run_args;
mod serve;
mod tok_eval;
mod tok_train;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// nanochat in Rust: train, evaluate and chat with your own small LLM.
#[derive(Parser, Debug)]
#[command(name = "nanochat", version, about, long_about = None)]
pub struct Cli {
    /// Artifacts directory (tokenizer, checkpoints, report); default $NANOCHAT_BASE_DIR or
    /// ~/.cache/nanochat.
    #[arg(long, global = true, env = "NANOCHAT_BASE_DIR")]
    pub base_dir: Option<PathBuf>,
    /// More logging (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train the BPE tokenizer on the pretraining shards (upstream tok_train.py).
    TokTrain(tok_train::Args),
    /// Compare the tokenizer's compression with GPT-2's and GPT-4's (upstream tok_eval.py).
    TokEval(tok_eval::Args),
    /// Download pretraining shards (upstream `python -m nanochat.dataset`).
    Download(download::Args),
    /// Pretrain a base model (upstream base_train.py).
    BaseTrain(Box<base_train::Args>),
    /// Evaluate a base model: CORE and bits per byte (upstream base_eval.py).
    BaseEval(Box<base_eval::Args>),
    /// Midtrain a base model on conversations (upstream v0 mid_train.py).
    MidTrain(Box<chat_train::Args>),
    /// Supervised fine-tuning on conversations (upstream chat_sft.py).
    ChatSft(Box<chat_train::Args>),
    /// Reinforcement learning on GSM8K (upstream chat_rl.py).
    ChatRl(Box<chat_train::RlArgs>),
    /// Evaluate a chat model: ARC, MMLU, GSM8K, HumanEval, SpellingBee, ChatCORE (upstream
    /// chat_eval.py).
    ChatEval(Box<chat_eval::Args>),
    /// Start (reset) or write (generate) the report card (upstream v0 report.py).
    Report(report::Args),
    /// Chat with a model in the terminal (upstream chat_cli.py).
    ChatCli(Box<chat_cli::Args>),
    /// Serve the chat web UI and the OpenAI-compatible API (upstream chat_web.py).
    Serve(Box<serve::Args>),
    /// Import an upstream PyTorch checkpoint folder (model_XXXXXX.pt + meta_XXXXXX.json).
    Import(interop::ImportArgs),
    /// Export a checkpoint as a Hugging Face folder for transformers' NanoChat class.
    Export(interop::ExportArgs),
    /// What this build and machine can do, and what is missing (data, tokenizer, checkpoints).
    Doctor,
    /// Measure hot paths (tokenizer encode throughput, …) and print JSON.
    Bench(bench::Args),
    /// Run the meeting point of a multi-node data-parallel run (burn's collective
    /// orchestrator); every node's --orchestrator points at it.
    Orchestrator(distributed::OrchestratorArgs),
}

/// Sets up `tracing` logs (RUST_LOG overrides the level).
pub fn init_logging(verbose: u8) {
    // burn's collective logs every peer's registration config (a dozen lines) at info.
    let default = match verbose {
        0 => "info,burn_collective=warn",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}

/// The base dir: `--base-dir`, else `$NANOCHAT_BASE_DIR`, else `~/.cache/nanochat`.
pub fn base_dir(cli: &Cli) -> PathBuf {
    cli.base_dir
        .clone()
        .unwrap_or_else(nanochat::core::paths::base_dir)
}

/// Runs the chosen subcommand.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let base = base_dir(&cli);
    match cli.command {
        Command::TokTrain(a) => tok_train::run(a, &base),
        Command::TokEval(a) => tok_eval::run(a, &base),
        Command::Bench(a) => bench::run(a, &base),
        Command::Download(a) => download::run(a, &base),
        Command::BaseTrain(a) => base_train::run(*a, &base),
        Command::BaseEval(a) => base_eval::run(*a, &base),
        Command::MidTrain(a) => chat_train::run(*a, nanochat::train::ChatStage::Mid, &base),
        Command::ChatSft(a) => chat_train::run(*a, nanochat::train::ChatStage::Sft, &base),
        Command::ChatRl(a) => chat_train::run_rl(*a, &base),
        Command::ChatEval(a) => chat_eval::run(*a, &base),
        Command::Report(a) => report::run(a, &base),
        Command::ChatCli(a) => chat_cli::run(*a, &base),
        Command::Serve(a) => serve::run(*a, &base),
        Command::Doctor => doctor::run(&base),
        Command::Import(a) => interop::import(a, &base),
        Command::Export(a) => interop::export(a, &base),
        Command::Orchestrator(a) => distributed::orchestrator(a),
    }
}

/// Parses counts written as integers, with `_` separators or in scientific notation (`2e9`).
pub fn parse_count(s: &str) -> Result<u64, String> {
    let clean = s.replace('_', "");
    if let Ok(n) = clean.parse::<u64>() {
        return Ok(n);
    }
    match clean.parse::<f64>() {
        Ok(f) if f >= 0.0 && f.fract() == 0.0 && f <= u64::MAX as f64 => Ok(f as u64),
        _ => Err(format!(
            "{s:?} is not a whole non-negative number (e.g. 2000000000 or 2e9)"
        )),
    }
}

/// Which checkpoint to load (upstream's `-i/--source`, `-g/--model-tag`, `-s/--step`).
#[derive(clap::Args, Debug, Clone)]
pub struct CheckpointArgs {
    /// Which checkpoints: base, mid, sft or rl.
    #[arg(short = 'i', long, default_value = "sft")]
    pub source: nanochat::core::Source,
    /// Model tag (folder under <source>_checkpoints/); default: the largest d<N>.
    #[arg(short = 'g', long)]
    pub model_tag: Option<String>,
    /// Checkpoint step; default: the last.
    #[arg(short = 's', long)]
    pub step: Option<u64>,
}

impl CheckpointArgs {
    /// Loads the model, its meta and its folder.
    pub fn load<B: nanochat::model::burn::tensor::backend::Backend>(
        &self,
        base: &std::path::Path,
        device: &B::Device,
    ) -> Result<
        (
            nanochat::model::Gpt<B>,
            nanochat::core::CheckpointMeta,
            PathBuf,
        ),
        nanochat::model::checkpoint::ModelError,
    > {
        nanochat::model::checkpoint::load_model::<B>(
            base,
            self.source,
            self.model_tag.as_deref(),
            self.step,
            device,
        )
    }
}

/// The trained tokenizer of `base`, with an error that says how to get one.
fn load_tokenizer(base: &std::path::Path) -> anyhow::Result<nanochat::tokenizer::Tokenizer> {
    use anyhow::Context;
    let dir = nanochat::core::paths::tokenizer_dir(base);
    nanochat::tokenizer::Tokenizer::load(&dir).with_context(|| {
        format!(
            "loading the tokenizer from {} (run `nanochat tok-train` first)",
            dir.display()
        )
    })
}

/// `--device auto` resolved to the device that will run.
fn resolve_device(spec: nanochat::core::DeviceSpec) -> nanochat::core::DeviceSpec {
    match spec {
        nanochat::core::DeviceSpec::Auto => nanochat::model::backend::resolve_auto(),
        d => d,
    }
}

/// Upstream's compute-dtype policy: bfloat16 on CUDA, float32 elsewhere.
fn default_dtype(device: nanochat::core::DeviceSpec) -> nanochat::model::ComputeDtype {
    if matches!(device, nanochat::core::DeviceSpec::Cuda(_)) {
        nanochat::model::ComputeDtype::BF16
    } else {
        nanochat::model::ComputeDtype::F32
    }
}

/// Draws `<checkpoint_dir>/metrics.jsonl` into `<report>/<slug>.png`; returns the file name
/// for the report section (None, with a warning, when there is nothing to draw).
fn plot_run(
    report: &nanochat::eval::Report,
    checkpoint_dir: &std::path::Path,
    slug: &str,
    title: &str,
) -> Option<String> {
    let name = format!("{slug}.png");
    if let Err(e) = std::fs::create_dir_all(report.dir()) {
        tracing::warn!("no plot: {e}");
        return None;
    }
    match nanochat::eval::plot::plot_metrics(
        &checkpoint_dir.join("metrics.jsonl"),
        title,
        &report.dir().join(&name),
    ) {
        Ok(()) => Some(name),
        Err(e) => {
            tracing::warn!("no plot: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn flags_are_consistent() {
        // Catches flags defined twice across flattened groups, bad defaults, …
        Cli::command().debug_assert();
    }

    #[test]
    fn shared_run_flags_reach_every_stage() {
        for stage in [
            "base-train",
            "mid-train",
            "chat-sft",
            "chat-rl",
            "chat-eval",
        ] {
            let cli = Cli::try_parse_from([
                "nanochat",
                stage,
                "--device",
                "cpu",
                "--dtype",
                "bf16",
                "--no-progress",
                "--devices",
                "2",
            ]);
            assert!(cli.is_ok(), "{stage}: {:?}", cli.err());
        }
        assert!(Cli::try_parse_from(["nanochat", "chat-sft", "--dtype", "f16"]).is_err());
    }
}
