//! `nanochat base-eval`: evaluate a base model (upstream `scripts/base_eval.py`): the CORE
//! metric over the tasks of the eval bundle that are present (`CORE-N` beside GPT-2 on the same
//! tasks), and bits per byte on the train and validation shards. Results go to
//! `<base>/base_eval/<tag>_<step>.json`.

use nanochat::model::FusedOps;
use nanochat::model::TrainBackend;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nanochat::core::paths::{eval_bundle_dir, pretrain_data_dir};
use nanochat::core::{DeviceSpec, Source};
use nanochat::data::dataloader::{BestFitLoader, LoaderOptions};
use nanochat::data::dataset::{Split, list_parquet_files, split_files};
use nanochat::eval::loss_eval::{evaluate_bpb_sums, reduce_bpb, token_bytes_tensor};
use nanochat::eval::{Bundle, evaluate_core_ranked};
use nanochat::model::Gpt;
use nanochat::model::checkpoint::load_model;
use nanochat::model::distributed::{Rank, run_replicated};
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
    /// Shards for bits per byte (default as base-train).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Device: auto, cpu, wgpu[:N], cuda[:N] (with --devices: the first rank's device).
    #[arg(long, default_value = "auto")]
    device: DeviceSpec,
    #[command(flatten)]
    dist: super::distributed::DistArgs,
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
    type Output = anyhow::Result<serde_json::Value>;
    fn run<B: TrainBackend>(self, device: B::Device) -> Self::Output {
        let a = &self.args;
        let (model, meta, dir) = load_model::<B::InnerBackend>(
            &self.base,
            Source::Base,
            a.model_tag.as_deref(),
            a.step,
            &device,
        )?;
        let step = meta.step();
        println!("{} step {step}", dir.display());
        let out = serde_json::json!({ "checkpoint": dir, "step": step });
        // With --devices every rank scores its stride of the examples; the counts are summed.
        let dist = a.dist.config()?;
        run_replicated::<B::InnerBackend, _, _, _, _, _>(
            dist.as_ref(),
            &device,
            model,
            |model, rank| self.evaluate(model, &rank, out.clone()),
        )
    }
}

impl Task {
    fn evaluate<B: FusedOps>(
        &self,
        model: Gpt<B>,
        rank: &Rank<B>,
        mut out: serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let a = &self.args;
        let device = rank.device.clone();
        let say = |line: String| {
            if rank.is_master() {
                println!("{line}");
            }
        };
        let wants = |k: &str| a.eval.split(',').any(|e| e.trim() == k);
        if wants("bpb") {
            let shards = list_parquet_files(&a.data_dir.clone().unwrap_or_else(pretrain_data_dir))?;
            let t = model.config().sequence_len;
            let per_step = (a.device_batch_size * t * rank.world_size) as u64;
            let steps = (a.split_tokens / per_step).max(1) as usize;
            let tb = token_bytes_tensor::<B>(&self.tokenizer.token_bytes(), &device);
            let mut opts = LoaderOptions::new(a.device_batch_size, t);
            opts.rank = rank.rank;
            opts.world_size = rank.world_size;
            for (name, split) in [("train", Split::Train), ("val", Split::Val)] {
                let loader = BestFitLoader::new(
                    split_files(&shards, split).to_vec(),
                    self.tokenizer.clone(),
                    opts.clone(),
                    None,
                )?;
                let batches = loader.map(|b| b.map(|b| b.to_tensors::<B>(&device)));
                let sums = evaluate_bpb_sums(&model, batches, steps, &tb)?;
                let bpb = reduce_bpb(rank, sums)?.bpb();
                say(format!("{name} bpb: {bpb:.6}"));
                out[format!("{name}_bpb")] = bpb.into();
            }
        }
        if wants("core") {
            let bundle = Bundle::open(&a.bundle_dir.clone().unwrap_or_else(eval_bundle_dir))?;
            let max = (a.max_per_task > 0).then_some(a.max_per_task as usize);
            let r = evaluate_core_ranked(&model, &self.tokenizer, &bundle, max, rank, |t| {
                say(format!(
                    "{:<34} accuracy {:.4} | centered {:+.4} | {} examples | {:.1}s",
                    t.label, t.accuracy, t.centered, t.examples, t.seconds
                ))
            })?;
            if !r.skipped.is_empty() {
                say(format!("skipped (data absent): {}", r.skipped.join(", ")));
            }
            say(format!(
                "{}: {:.4}{}",
                r.label,
                r.core_metric,
                r.gpt2_same_tasks.map_or(String::new(), |g| format!(
                    " (GPT-2 124M on the same tasks: {g:.4})"
                ))
            ));
            out["core"] = serde_json::to_value(&r)?;
        }
        Ok(out)
    }
}

pub fn run(args: Args, base: &Path) -> anyhow::Result<()> {
    let task = Task {
        args: args.clone(),
        base: base.to_path_buf(),
        tokenizer: Arc::new(super::load_tokenizer(base)?),
    };
    let out = dispatch(args.device, task)??;
    let tag = out["checkpoint"]
        .as_str()
        .and_then(|p| Path::new(p).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let path = base.join("base_eval").join(format!(
        "{tag}_{:06}.json",
        out["step"].as_u64().unwrap_or(0)
    ));
    std::fs::create_dir_all(path.parent().expect("has parent"))?;
    nanochat::core::fs::write_atomic(&path, serde_json::to_string_pretty(&out)?.as_bytes())?;
    println!("wrote {}", path.display());
    let mut entries: Vec<(String, serde_json::Value)> = Vec::new();
    for k in ["train_bpb", "val_bpb"] {
        if let Some(v) = out.get(k) {
            entries.push((k.to_string(), v.clone()));
        }
    }
    if let Some(core) = out.get("core") {
        let label = core["label"].as_str().unwrap_or("CORE").to_string();
        entries.push((label, core["core_metric"].clone()));
        if let Some(g) = core.get("gpt2_same_tasks").filter(|g| !g.is_null()) {
            entries.push(("GPT-2 124M on the same tasks".into(), g.clone()));
        }
        for t in core["tasks"].as_array().into_iter().flatten() {
            let name = t["label"].as_str().unwrap_or("?");
            entries.push((format!("centered {name}"), t["centered"].clone()));
        }
    }
    let refs: Vec<(&str, serde_json::Value)> = entries
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    nanochat::eval::Report::new(base).log("base-model-evaluation", &refs)?;
    Ok(())
}
