//! `nanochat base-eval`: evaluate a base model (upstream `scripts/base_eval.py`): the CORE
//! metric over the tasks of the eval bundle that are present (`CORE-N` beside GPT-2 on the same
//! tasks), and bits per byte on the train and validation shards. Results are
//! `EvaluationResult`s in `<base>/base_eval/<tag>_<step>_{core,bpb}.json` (and CORE's CSV),
//! named in the report card's `base-model-evaluation` section. The evaluation is
//! `nanochat_eval::evaluate_base`; this command loads the checkpoint, runs it on the ranks and
//! saves and logs its results.

use nanochat::model::TrainBackend;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nanochat::core::Source;
use nanochat::core::paths::eval_bundle_dir;
use nanochat::eval::{BaseEvalOptions, BaseEvalReport, Evaluated, evaluate_base};
use nanochat::model::checkpoint::load_model;
use nanochat::model::distributed::run_replicated;
use nanochat::model::{BackendTask, dispatch};
use nanochat::tokenizer::Tokenizer;

/// Flags of `base-eval`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// What to run, comma-separated: core, bpb.
    #[arg(long, default_value = "core,bpb")]
    eval: String,
    /// Examples per CORE task (-1 = all).
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    max_per_task: i64,
    /// Model tag under base_checkpoints/ (default: the largest d<N>).
    #[arg(short = 'g', long)]
    model_tag: Option<String>,
    /// Checkpoint step (default: the last).
    #[arg(short = 's', long)]
    step: Option<u64>,
    /// Tokens per split for bits per byte.
    #[arg(long, default_value = "40*524288", value_parser = parse_tokens)]
    split_tokens: u64,
    /// Rows per batch for bits per byte.
    #[arg(long, default_value_t = 8)]
    device_batch_size: usize,
    /// The CORE eval bundle (default $NANOCHAT_DATA_DIR/eval_bundle).
    #[arg(long)]
    bundle_dir: Option<PathBuf>,
    #[command(flatten)]
    run: super::run_args::RunArgs,
}

fn parse_tokens(s: &str) -> Result<u64, String> {
    s.split('*')
        .map(|p| super::parse_count(p.trim()))
        .try_fold(1u64, |acc, v| v.map(|v| acc * v))
}

struct Task {
    args: Args,
    base: PathBuf,
    tokenizer: Arc<Tokenizer>,
}

impl BackendTask for Task {
    type Output = anyhow::Result<BaseEvalReport>;
    fn run<B: TrainBackend>(self, device: B::Device) -> Self::Output {
        let a = &self.args;
        let (model, meta, dir) = load_model::<B::InnerBackend>(
            &self.base,
            Source::Base,
            a.model_tag.as_deref(),
            a.step,
            &device,
        )?;
        let model = model.with_compute_dtype(a.run.compute_dtype(a.run.device()));
        let step = meta.step();
        println!("{} step {step}", dir.display());
        let of = Evaluated {
            checkpoint: dir,
            step,
        };
        let wants = |k: &str| a.eval.split(',').any(|e| e.trim() == k);
        let opts = BaseEvalOptions {
            core: wants("core"),
            bpb: wants("bpb"),
            max_per_task: (a.max_per_task > 0).then_some(a.max_per_task as usize),
            split_tokens: a.split_tokens,
            device_batch_size: a.device_batch_size,
            bundle_dir: a.bundle_dir.clone().unwrap_or_else(eval_bundle_dir),
            data_dir: a.run.pretrain_data_dir(),
        };
        // With --devices every rank scores its stride of the examples; the counts are summed.
        let dist = a.run.distributed()?;
        run_replicated::<B::InnerBackend, _, _, _, _, _>(
            dist.as_ref(),
            &device,
            model,
            |model, rank| {
                let say = |line: &str| println!("{line}");
                let r = evaluate_base(&model, &self.tokenizer, &opts, &rank, &of, say);
                anyhow::Ok(r?)
            },
        )
    }
}

/// Runs `base-eval`.
pub fn run(args: Args, base: &Path) -> anyhow::Result<()> {
    let task = Task {
        args: args.clone(),
        base: base.to_path_buf(),
        tokenizer: Arc::new(super::load_tokenizer(base)?),
    };
    let report = dispatch(args.run.device(), task)??;
    if !args.run.writes_report() {
        return Ok(());
    }
    let files = report.save(base)?;
    for f in &files {
        println!("wrote {}", f.display());
    }
    nanochat::eval::Report::new(base).log_results("base-model-evaluation", &[], &files)?;
    Ok(())
}
