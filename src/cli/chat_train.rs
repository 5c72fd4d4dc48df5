//! `nanochat mid-train` and `nanochat chat-sft` (upstream v0 `scripts/mid_train.py`, HEAD
//! `scripts/chat_sft.py`) and `nanochat chat-rl` (`scripts/chat_rl.py`): flags into
//! [`ChatTrainArgs`] / [`ChatRlArgs`], then the library loop; a report section at the end.

use nanochat::model::TrainBackend;
use std::path::Path;
use std::sync::Arc;

use nanochat::model::{BackendTask, dispatch};
use nanochat::tokenizer::Tokenizer;
use nanochat::train::chat_rl::RlSummary;
use nanochat::train::chat_train::ChatTrainSummary;
use nanochat::train::{ChatRlArgs, ChatStage, ChatTrainArgs, TrainError, chat_rl, chat_train};
use serde_json::json;

use super::run_args::RunArgs;

/// Flags of `mid-train` and `chat-sft`: the stage's settings and where it runs.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    stage: ChatTrainArgs,
    #[command(flatten)]
    run: RunArgs,
}

struct Task(ChatTrainArgs, Arc<Tokenizer>);

impl BackendTask for Task {
    type Output = Result<ChatTrainSummary, TrainError>;
    fn run<B: TrainBackend>(self, device: B::Device) -> Self::Output {
        chat_train::<B>(&self.0, self.1, &device)
    }
}

/// Runs `mid-train` or `chat-sft`.
pub fn run(args: Args, stage: ChatStage, base: &Path) -> anyhow::Result<()> {
    let device = args.run.device();
    let lib = ChatTrainArgs {
        stage,
        base_dir: base.to_path_buf(),
        data_dir: args.run.data_dir(),
        compute_dtype: args.run.compute_dtype(device),
        progress: args.run.progress(),
        distributed: args.run.distributed()?,
        ..args.stage
    }
    .resolve();
    let tokenizer = Arc::new(super::load_tokenizer(base)?);
    println!("{}", serde_json::to_string_pretty(&lib)?);
    let s = dispatch(device, Task(lib.clone(), tokenizer))??;
    println!(
        "Finished at step {} | val bpb {} | {:.2}m | {}",
        s.step,
        s.val_bpb.map_or("-".into(), |b| format!("{b:.6}")),
        s.total_training_time / 60.0,
        s.checkpoint_dir.display()
    );
    let (slug, title) = match stage {
        ChatStage::Mid => ("midtraining", "midtraining"),
        ChatStage::Sft => ("chat-sft", "SFT"),
    };
    if !args.run.writes_report() {
        return Ok(());
    }
    let report = nanochat::eval::Report::new(base);
    let plot = super::plot_run(&report, &s.checkpoint_dir, slug, title);
    let mut entries = vec![
        ("source", json!(lib.source().as_str())),
        ("mixture", json!(lib.mixture.join(", "))),
        ("conversations per epoch", json!(s.epoch_len)),
        ("tokens per step", json!(s.total_batch_size)),
        ("steps", json!(s.step)),
        ("init_lr_frac", json!(lib.init_lr_frac)),
        ("final val bpb", json!(s.val_bpb)),
        ("training time (min)", json!(s.total_training_time / 60.0)),
    ];
    if let Some(c) = s.chatcore {
        entries.push(("ChatCORE (subset)", json!(c)));
    }
    if let Some(p) = plot {
        entries.push(("curves", json!(p)));
    }
    report.log(slug, &entries)?;
    Ok(())
}

/// Flags of `chat-rl`.
#[derive(clap::Args, Debug, Clone)]
pub struct RlArgs {
    #[command(flatten)]
    stage: ChatRlArgs,
    #[command(flatten)]
    run: RunArgs,
}

struct RlTask(ChatRlArgs, Arc<Tokenizer>);

impl BackendTask for RlTask {
    type Output = Result<RlSummary, TrainError>;
    fn run<B: TrainBackend>(self, device: B::Device) -> Self::Output {
        chat_rl::<B>(&self.0, self.1, &device)
    }
}

/// Runs `chat-rl`.
pub fn run_rl(a: RlArgs, base: &Path) -> anyhow::Result<()> {
    let device = a.run.device();
    let lib = ChatRlArgs {
        base_dir: base.to_path_buf(),
        data_dir: a.run.data_dir(),
        compute_dtype: a.run.compute_dtype(device),
        progress: a.run.progress(),
        distributed: a.run.distributed()?,
        ..a.stage
    };
    let tokenizer = Arc::new(super::load_tokenizer(base)?);
    println!("{}", serde_json::to_string_pretty(&lib)?);
    let s = dispatch(device, RlTask(lib.clone(), tokenizer))??;
    let mean_reward = s.rewards.iter().sum::<f64>() / s.rewards.len().max(1) as f64;
    println!(
        "Finished at step {} | mean reward {mean_reward:.4} | {:.1}s | {}",
        s.step,
        s.seconds,
        s.checkpoint_dir.display()
    );
    if !a.run.writes_report() {
        return Ok(());
    }
    let report = nanochat::eval::Report::new(base);
    let mut entries = vec![
        ("source", json!(lib.source.as_str())),
        ("steps", json!(s.step)),
        ("problems per step", json!(lib.examples_per_step)),
        ("samples per problem", json!(lib.num_samples)),
        ("mean reward", json!(mean_reward)),
        ("time (min)", json!(s.seconds / 60.0)),
    ];
    if let Some(e) = s.eval {
        entries.push(("GSM8K pass@1", json!(e.pass1)));
        entries.push(("GSM8K pass@k", json!(e.pass_k)));
    }
    report.log("chat-rl", &entries)?;
    Ok(())
}
