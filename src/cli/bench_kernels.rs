//! `nanochat bench matmul | attention | parity`: the kernels of a training step on one device,
//! the forward against the PyTorch reference fixtures and the training attention against the
//! CPU kernel: what the GPU profile
//! (`xtask/scripts/gpu_profile.sh`) runs beside `torch.matmul` and
//! `scaled_dot_product_attention` on the same GPU.

use std::path::PathBuf;

use anyhow::Context;
use nanochat::model::backend::CpuBackend;
use nanochat::model::burn::tensor::backend::AutodiffBackend;
use nanochat::model::fixture::{Fixture, forward_parity};
use nanochat::model::{BackendTask, ComputeDtype, TrainBackend, dispatch};
use nanochat::model::{microbench, op_parity};
use nanochat::train::bench_train::{BenchTrainArgs, bench_model};

use super::run_args::DeviceArgs;

/// The model (the depth dial's) and batch of a training step.
#[derive(clap::Args, Debug, Clone)]
pub struct StepShape {
    /// Model depth.
    #[arg(long, default_value_t = 12)]
    depth: usize,
    /// Rows per device per step.
    #[arg(long, default_value_t = 32)]
    pub device_batch_size: usize,
    /// Tokens per row.
    #[arg(long, default_value_t = 2048)]
    pub seq_len: usize,
    /// Sliding-window pattern (L = full context everywhere, as the reference table).
    #[arg(long, default_value = "L")]
    window_pattern: String,
    /// Vocabulary size.
    #[arg(long, default_value_t = 32768)]
    vocab_size: usize,
    /// Target head dimension (upstream's `--head-dim`; `runcpu.sh` uses 64).
    #[arg(long, default_value_t = 128)]
    head_dim: usize,
}

impl StepShape {
    /// A `bench train` of this shape (no steps; float32; one device).
    pub fn bench_args(&self) -> BenchTrainArgs {
        BenchTrainArgs {
            depth: self.depth,
            device_batch_size: self.device_batch_size,
            seq_len: self.seq_len,
            window_pattern: self.window_pattern.clone(),
            vocab_size: self.vocab_size,
            head_dim: self.head_dim,
            steps: 0,
            warmup: 0,
            compute_dtype: ComputeDtype::F32,
            peak_flops: None,
            distributed: None,
            phases: false,
        }
    }
}

/// Flags of `bench matmul`.
#[derive(clap::Args, Debug)]
pub struct MatmulArgs {
    /// Products `MxKxN`, comma-separated (default: the forward GEMMs of a step of the model
    /// below: q/k/v/o, MLP in and out, lm_head).
    #[arg(long, value_delimiter = ',')]
    shapes: Vec<String>,
    #[command(flatten)]
    shape: StepShape,
    /// Timed products per shape.
    #[arg(long, default_value_t = 20)]
    iters: usize,
    #[command(flatten)]
    on: DeviceArgs,
}

/// Flags of `bench attention`.
#[derive(clap::Args, Debug)]
pub struct AttentionArgs {
    /// Batch.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Sequence length (full causal window).
    #[arg(long, default_value_t = 2048)]
    seq_len: usize,
    /// Heads.
    #[arg(long, default_value_t = 6)]
    heads: usize,
    /// Head dimension.
    #[arg(long, default_value_t = 128)]
    head_dim: usize,
    /// Timed calls.
    #[arg(long, default_value_t = 10)]
    iters: usize,
    #[command(flatten)]
    on: DeviceArgs,
}

/// Flags of `bench parity`.
#[derive(clap::Args, Debug)]
pub struct ParityArgs {
    /// Fixture folder (default $NANOCHAT_FIXTURE_DIR, else ../shared/fixtures/model).
    #[arg(long)]
    fixture_dir: Option<PathBuf>,
    #[command(flatten)]
    on: DeviceArgs,
}

/// `MxKxN` → `(m, k, n)`.
fn parse_shape(s: &str) -> anyhow::Result<(usize, usize, usize)> {
    let dims: Vec<usize> = s
        .split('x')
        .map(|d| d.trim().parse())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--shapes {s}: expected MxKxN"))?;
    match dims[..] {
        [m, k, n] => Ok((m, k, n)),
        _ => anyhow::bail!("--shapes {s}: expected MxKxN"),
    }
}

/// The forward GEMMs of a step of the depth-dial model `a` describes.
fn step_shapes(a: &MatmulArgs) -> anyhow::Result<Vec<(usize, usize, usize)>> {
    let cfg = bench_model(&a.shape.bench_args())?;
    let (rows, c) = (a.shape.device_batch_size * a.shape.seq_len, cfg.n_embd);
    let kv = cfg.n_kv_head * (c / cfg.n_head);
    Ok(vec![
        (rows, c, c),
        (rows, c, kv),
        (rows, c, 4 * c),
        (rows, 4 * c, c),
        (rows, c, cfg.vocab_size),
    ])
}

enum Kernel {
    Matmul(Vec<(usize, usize, usize)>, usize),
    Attention([usize; 4], usize),
    Parity(Vec<Fixture>),
}

struct KernelTask(Kernel, ComputeDtype);

type Cpu = <CpuBackend as AutodiffBackend>::InnerBackend;

impl BackendTask for KernelTask {
    type Output = anyhow::Result<serde_json::Value>;
    fn run<B: TrainBackend>(self, device: B::Device) -> Self::Output {
        let dtype = self.1;
        Ok(match self.0 {
            Kernel::Matmul(shapes, iters) => {
                let r: Vec<_> = shapes
                    .into_iter()
                    .map(|s| microbench::matmul::<B::InnerBackend>(s, dtype, iters, &device))
                    .collect();
                serde_json::json!({ "matmul": r })
            }
            Kernel::Attention(shape, iters) => {
                serde_json::json!({ "attention": microbench::attention::<B>(shape, dtype, iters, &device) })
            }
            Kernel::Parity(fixtures) => {
                let r = fixtures
                    .iter()
                    .map(|f| forward_parity::<B::InnerBackend, Cpu>(f, &device, dtype))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut ops = op_parity::attention_parity::<B, CpuBackend>(&device, dtype);
                ops.extend(op_parity::linear_parity::<B, CpuBackend>(&device, dtype));
                serde_json::json!({ "parity": r, "ops": ops })
            }
        })
    }
}

fn run_kernel(on: &DeviceArgs, kernel: Kernel) -> anyhow::Result<serde_json::Value> {
    let device = on.device();
    let dtype = on.compute_dtype(device);
    let mut out = dispatch(device, KernelTask(kernel, dtype))??;
    out["device"] = device.to_string().into();
    out["dtype"] = format!("{dtype:?}").into();
    println!("{}", serde_json::to_string(&out)?);
    Ok(out)
}

/// Runs `bench matmul`.
pub fn matmul(a: MatmulArgs) -> anyhow::Result<()> {
    let shapes = match a.shapes.is_empty() {
        true => step_shapes(&a)?,
        false => a
            .shapes
            .iter()
            .map(|s| parse_shape(s))
            .collect::<Result<_, _>>()?,
    };
    run_kernel(&a.on, Kernel::Matmul(shapes, a.iters)).map(drop)
}

/// Runs `bench attention`.
pub fn attention(a: AttentionArgs) -> anyhow::Result<()> {
    let shape = [a.batch, a.seq_len, a.heads, a.head_dim];
    run_kernel(&a.on, Kernel::Attention(shape, a.iters)).map(drop)
}

/// Runs `bench parity`; fails when a fixture is outside the dtype's tolerance.
pub fn parity(a: ParityArgs) -> anyhow::Result<()> {
    let dir = a
        .fixture_dir
        .clone()
        .unwrap_or_else(nanochat::core::paths::fixture_dir);
    let fixtures = Fixture::all(&dir)?;
    anyhow::ensure!(!fixtures.is_empty(), "no fixtures in {}", dir.display());
    let out = run_kernel(&a.on, Kernel::Parity(fixtures))?;
    let failed = |key: &str, name: &dyn Fn(&serde_json::Value) -> String| -> Vec<String> {
        out[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["ok"] != true)
            .map(name)
            .collect()
    };
    let forward = failed("parity", &|r| r["fixture"].to_string());
    let ops = failed("ops", &|r| format!("{} {}", r["op"], r["case"]));
    anyhow::ensure!(
        forward.is_empty() && ops.is_empty(),
        "outside tolerance: forward {forward:?}, ops {ops:?}"
    );
    Ok(())
}
