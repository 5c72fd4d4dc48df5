//! `nanochat bench`: measurements of hot paths, printed as JSON for scripts
//! (`cargo xtask bench-tokenizer` compares them with upstream's tools in the same run).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use nanochat::core::paths::{pretrain_data_dir, tokenizer_dir};
use nanochat::data::dataset::{Split, iter_batches, list_parquet_files, split_files};
use nanochat::tokenizer::Tokenizer;

/// Flags of `bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand, Debug)]
enum What {
    /// Encode throughput of the trained tokenizer on the validation shard (single thread and
    /// batched on all cores); best of `--repeats`.
    Tokenizer {
        /// Folder of pretraining parquet shards.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Timed repetitions (the best is reported).
        #[arg(long, default_value_t = 3)]
        repeats: usize,
    },
    /// Inference speed (upstream infer_bench.py): prefill tok/s and TTFT for one prompt, then
    /// decode tok/s and ms/step per batch size. Uses a checkpoint when `--source` is given,
    /// else a freshly initialised model of `--depth` (weights do not change the speed).
    Infer(Box<InferArgs>),
    /// Training throughput (upstream's reference table): optimizer steps of a depth-d model
    /// on random tokens; prints the median step time, tok/s and MFU. With --devices, through
    /// the data-parallel path.
    Train(Box<TrainArgs>),
    /// Matrix products at the shapes of a training step, in the compute dtype (TFLOP/s).
    Matmul(Box<super::bench_kernels::MatmulArgs>),
    /// The model's causal attention, forward and forward + backward.
    Attention(Box<super::bench_kernels::AttentionArgs>),
    /// The forward of the PyTorch reference fixtures on this device, against the CPU backend
    /// and PyTorch's logits, and the training attention's output and gradients against the
    /// CPU kernel on random inputs (fails outside the dtype's tolerance).
    Parity(Box<super::bench_kernels::ParityArgs>),
    /// A server under concurrent clients: aggregate generated tok/s and p50/p99 time to first
    /// token at 1, 8 and 32 clients (starts `serve` on a checkpoint, or measures `--url`).
    Serve(Box<super::bench_serve::ServeBenchArgs>),
}

/// Flags of `bench train`.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    shape: super::bench_kernels::StepShape,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Untimed steps first (autotuning, allocation).
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Accelerator name for the MFU peak (e.g. "H100 SXM"); nvidia-smi on CUDA when unset.
    #[arg(long)]
    device_name: Option<String>,
    /// Measure the single-device cost of the data-parallel path instead: N rounds of (no
    /// collective, then one rank through the collective) in this one process, so that both
    /// sides use the same autotuned kernels; prints the step-time ratio.
    #[arg(long, value_name = "ROUNDS")]
    compare_collective: Option<usize>,
    /// Also time each step's forward, backward and optimizer separately (synchronising the
    /// device between them).
    #[arg(long)]
    phases: bool,
    #[command(flatten)]
    on: super::run_args::DeviceArgs,
}

struct OverheadTask(nanochat::train::bench_train::BenchTrainArgs, usize);

impl nanochat::model::BackendTask for OverheadTask {
    type Output =
        Result<nanochat::train::bench_train::CollectiveOverhead, nanochat::train::TrainError>;
    fn run<B: nanochat::model::TrainBackend>(self, device: B::Device) -> Self::Output {
        nanochat::train::bench_train::bench_collective_overhead::<B>(&self.0, &device, self.1)
    }
}

struct TrainTask(nanochat::train::bench_train::BenchTrainArgs);

impl nanochat::model::BackendTask for TrainTask {
    type Output =
        Result<nanochat::train::bench_train::BenchTrainResult, nanochat::train::TrainError>;
    fn run<B: nanochat::model::TrainBackend>(self, device: B::Device) -> Self::Output {
        nanochat::train::bench_train::bench_train::<B>(&self.0, &device)
    }
}

fn bench_train(a: TrainArgs) -> anyhow::Result<()> {
    let device = a.on.device();
    let compute_dtype = a.on.compute_dtype(device);
    let name = a
        .device_name
        .clone()
        .or_else(|| super::base_train::detected_gpu_name(device));
    let args = nanochat::train::bench_train::BenchTrainArgs {
        steps: a.steps,
        warmup: a.warmup,
        compute_dtype,
        peak_flops: name
            .as_deref()
            .and_then(nanochat::train::peak_flops::peak_flops),
        distributed: a.on.dist.config()?,
        phases: a.phases,
        ..a.shape.bench_args()
    };
    if let Some(rounds) = a.compare_collective {
        let o = nanochat::model::dispatch(device, OverheadTask(args, rounds))??;
        for (p, c) in o.plain.iter().zip(&o.collective) {
            println!(
                "no collective: median step {:.2} ms | through the collective (1 rank): {:.2} ms",
                p.median_step_s * 1e3,
                c.median_step_s * 1e3
            );
        }
        println!(
            "step time through the collective / without: {:.4} ({:+.2} %)",
            o.ratio,
            (o.ratio - 1.0) * 100.0
        );
        println!(
            "{}",
            serde_json::to_string(
                &serde_json::json!({"device": device.to_string(), "dtype": format!("{compute_dtype:?}"), "gpu": name, "overhead": o})
            )?
        );
        return Ok(());
    }
    let r = nanochat::model::dispatch(device, TrainTask(args))??;
    println!(
        "d{} ({} params) | {} rank(s){} | batch {}x{} per rank | median step {:.1} ms | {:.0} tok/s | MFU {} | page faults/step {}",
        r.depth,
        r.params,
        r.world_size,
        if r.collective { " via collective" } else { "" },
        a.shape.device_batch_size,
        a.shape.seq_len,
        r.median_step_s * 1e3,
        r.tok_per_sec,
        r.mfu.map_or("-".into(), |m| format!("{m:.1} %")),
        r.minor_faults_per_step
            .map_or("-".into(), |f| format!("{f:.0}")),
    );
    println!(
        "{}",
        serde_json::to_string(
            &serde_json::json!({"device": device.to_string(), "dtype": format!("{compute_dtype:?}"), "gpu": name, "result": r})
        )?
    );
    Ok(())
}

/// Flags of `bench infer`.
#[derive(clap::Args, Debug)]
pub struct InferArgs {
    /// Checkpoint source (base, mid, sft, rl); none = a random model of --depth.
    #[arg(short = 'i', long)]
    source: Option<nanochat::core::Source>,
    /// Model tag (with --source).
    #[arg(short = 'g', long)]
    model_tag: Option<String>,
    /// Depth of the random model (without --source).
    #[arg(long, default_value_t = 12)]
    depth: usize,
    /// Prompt length for prefill.
    #[arg(long, default_value_t = 512)]
    prompt_tokens: usize,
    /// Tokens decoded per row.
    #[arg(long, default_value_t = 64)]
    decode_tokens: usize,
    /// Comma-separated decode batch sizes.
    #[arg(long, default_value = "1,8,32")]
    batch_sizes: String,
    /// Device: auto, cpu, wgpu[:N], cuda[:N].
    #[arg(long, default_value = "auto")]
    device: nanochat::core::DeviceSpec,
}

struct InferTask(InferArgs, PathBuf);

impl nanochat::model::BackendTask for InferTask {
    type Output = anyhow::Result<serde_json::Value>;
    fn run<B: nanochat::model::TrainBackend>(self, device: B::Device) -> Self::Output {
        let a = self.0;
        let sizes: Vec<usize> = a
            .batch_sizes
            .split(',')
            .map(|s| s.trim().parse())
            .collect::<Result<_, _>>()
            .context("--batch-sizes: comma-separated positive integers")?;
        let model = match a.source {
            Some(src) => {
                nanochat::model::checkpoint::load_model::<B::InnerBackend>(
                    &self.1,
                    src,
                    a.model_tag.as_deref(),
                    None,
                    &device,
                )?
                .0
            }
            None => {
                let cfg = nanochat::core::ModelConfig::from_depth(a.depth)?;
                nanochat::model::Gpt::<B::InnerBackend>::init(&cfg, &device)?
            }
        };
        let model = model.with_compute_dtype(super::default_dtype(a.device));
        let len = a.prompt_tokens.min(
            model
                .config()
                .sequence_len
                .saturating_sub(a.decode_tokens + 1),
        );
        let r = nanochat::infer::infer_bench::bench_inference(&model, len, a.decode_tokens, &sizes);
        Ok(
            serde_json::json!({"device": a.device.to_string(), "config": model.config(), "result": r}),
        )
    }
}

fn best_of(repeats: usize, mut f: impl FnMut() -> usize) -> (f64, usize) {
    let mut best = f64::INFINITY;
    let mut out = 0;
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        out = f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    (best, out)
}

pub fn run(args: Args, base: &Path) -> anyhow::Result<()> {
    match args.what {
        What::Train(a) => bench_train(*a)?,
        What::Matmul(a) => super::bench_kernels::matmul(*a)?,
        What::Attention(a) => super::bench_kernels::attention(*a)?,
        What::Parity(a) => super::bench_kernels::parity(*a)?,
        What::Serve(a) => super::bench_serve::run(*a)?,
        What::Infer(a) => {
            let device = super::resolve_device(a.device);
            let a = InferArgs { device, ..*a };
            let out = nanochat::model::dispatch(device, InferTask(a, base.to_path_buf()))??;
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        What::Tokenizer { data_dir, repeats } => {
            let dir = tokenizer_dir(base);
            let tok =
                Tokenizer::load(&dir).with_context(|| format!("loading {}", dir.display()))?;
            let files = list_parquet_files(&data_dir.unwrap_or_else(pretrain_data_dir))?;
            let mut docs = Vec::new();
            for b in iter_batches(split_files(&files, Split::Val), 0, 1) {
                docs.extend(b?.texts);
            }
            let bytes: usize = docs.iter().map(String::len).sum();
            let (single, tokens) =
                best_of(repeats, || docs.iter().map(|d| tok.encode(d).len()).sum());
            let (batch, _) = best_of(repeats, || tok.encode_batch(&docs, None, None).len());
            let out = serde_json::json!({
                "documents": docs.len(),
                "bytes": bytes,
                "tokens": tokens,
                "single_thread_seconds": single,
                "batch_seconds": batch,
                "threads": rayon::current_num_threads(),
                "single_thread_mb_per_s": bytes as f64 / single / 1e6,
                "batch_mb_per_s": bytes as f64 / batch / 1e6,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
    }
    Ok(())
}
