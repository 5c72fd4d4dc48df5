//! `cargo xtask bench-cpu-vs-torch`: our CPU training step against upstream nanochat's on
//! PyTorch, same shapes, on this machine, back to back and alternating (rounds A, B, A, B…), so
//! that the ratio is not skewed by whatever else the machine is doing. Ours is `nanochat bench
//! train --device cpu`; upstream's is `xtask/scripts/bench_torch_train.py` (its `GPT`,
//! `init_weights()`, `setup_optimizer()`; float32, eager). Both draw fresh random tokens every
//! step. A benchmark, not a test: it prints the table and writes
//! `target/bench-cpu-vs-torch.json`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

/// Flags.
#[derive(clap::Args)]
pub struct Args {
    /// Upstream nanochat checkout (the folder holding `nanochat/gpt.py`; commit 92d63d4).
    #[arg(long, default_value = "target/upstream-nanochat")]
    upstream: PathBuf,
    /// A Python with torch and numpy; default: a venv in target/bench-torch-venv, created with
    /// `pip install torch numpy filelock` on first use (needs PyPI).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Shapes to run: `d4` (depth 4, 8 × 256 tokens, vocab 8192, head dim 128) and/or
    /// `runcpu` (upstream's runs/runcpu.sh: depth 6, 32 × 512, vocab 32768, head dim 64).
    #[arg(long, value_delimiter = ',', default_value = "d4,runcpu")]
    shapes: Vec<String>,
    /// Timed steps per round (the median over all rounds is reported).
    #[arg(long, default_value_t = 6)]
    steps: usize,
    /// Untimed steps first in every round (torch.compile of the optimizer, allocation).
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Alternating rounds per side.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
}

/// One benchmark shape.
struct Shape {
    name: &'static str,
    depth: usize,
    batch: usize,
    seq_len: usize,
    vocab: usize,
    head_dim: usize,
}

const SHAPES: [Shape; 2] = [
    Shape {
        name: "d4",
        depth: 4,
        batch: 8,
        seq_len: 256,
        vocab: 8192,
        head_dim: 128,
    },
    Shape {
        name: "runcpu",
        depth: 6,
        batch: 32,
        seq_len: 512,
        vocab: 32768,
        head_dim: 64,
    },
];

fn run_json(cmd: &mut Command, what: &str) -> Result<Value> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("{what} printed no JSON line:\n{stdout}"))?;
    serde_json::from_str(last).with_context(|| format!("{what}: bad JSON {last}"))
}

fn torch_python(root: &Path, given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p);
    }
    let venv = root.join("target").join("bench-torch-venv");
    let python = venv.join("bin").join("python");
    let ready = python.exists()
        && Command::new(&python)
            .args(["-c", "import torch, numpy, filelock"])
            .output()
            .is_ok_and(|o| o.status.success());
    if !ready {
        println!(
            "Installing torch, numpy, filelock into {} …",
            venv.display()
        );
        let ok = |c: &mut Command| c.status().is_ok_and(|s| s.success());
        ensure!(
            ok(Command::new("python3").args(["-m", "venv"]).arg(&venv)),
            "python3 -m venv {} failed",
            venv.display()
        );
        ensure!(
            ok(Command::new(&python)
                .args(["-m", "pip", "install", "-q", "torch", "numpy", "filelock"])),
            "pip install torch numpy filelock failed (pass --python to use an existing one)"
        );
    }
    Ok(python)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Every step time of a JSON result (ours nests it under `result`).
fn step_times(v: &Value) -> Vec<f64> {
    let v = v.get("result").unwrap_or(v);
    v["step_s"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

pub fn run(root: &Path, args: Args) -> Result<()> {
    let upstream = root.join(&args.upstream);
    ensure!(
        upstream.join("nanochat").join("gpt.py").is_file(),
        "no upstream nanochat at {} (clone https://github.com/karpathy/nanochat there and check \
         out 92d63d4, or pass --upstream DIR)",
        upstream.display()
    );
    let python = torch_python(root, args.python)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    println!("Building nanochat (release) …");
    ensure!(
        Command::new(&cargo)
            .args(["build", "--release", "-q", "-p", "nanochat"])
            .current_dir(root)
            .status()
            .is_ok_and(|s| s.success()),
        "cargo build failed"
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let nanochat = target.join("release").join("nanochat");
    let script = root
        .join("xtask")
        .join("scripts")
        .join("bench_torch_train.py");

    let mut rows = Vec::new();
    for shape in SHAPES
        .iter()
        .filter(|s| args.shapes.iter().any(|n| n == s.name))
    {
        let common = |c: &mut Command| {
            c.args(["--depth", &shape.depth.to_string()])
                .args(["--device-batch-size", &shape.batch.to_string()])
                .args(["--seq-len", &shape.seq_len.to_string()])
                .args(["--vocab-size", &shape.vocab.to_string()])
                .args(["--head-dim", &shape.head_dim.to_string()])
                .args(["--window-pattern", "L"])
                .args(["--steps", &args.steps.to_string()])
                .args(["--warmup", &args.warmup.to_string()]);
        };
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for round in 0..args.rounds.max(1) {
            println!(
                "{}: round {} of {}: ours …",
                shape.name,
                round + 1,
                args.rounds
            );
            let mut c = Command::new(&nanochat);
            c.args(["bench", "train", "--device", "cpu"]);
            common(&mut c);
            ours.extend(step_times(&run_json(&mut c, "nanochat bench train")?));
            println!(
                "{}: round {} of {}: PyTorch …",
                shape.name,
                round + 1,
                args.rounds
            );
            let mut c = Command::new(&python);
            c.arg(&script).arg("--nanochat").arg(&upstream);
            common(&mut c);
            theirs.extend(step_times(&run_json(&mut c, "bench_torch_train.py")?));
        }
        let tokens = (shape.batch * shape.seq_len) as f64;
        let (a, b) = (median(ours.clone()), median(theirs.clone()));
        rows.push(json!({
            "shape": shape.name,
            "depth": shape.depth,
            "batch": shape.batch,
            "seq_len": shape.seq_len,
            "vocab": shape.vocab,
            "head_dim": shape.head_dim,
            "ours_step_s": ours,
            "torch_step_s": theirs,
            "ours_median_s": a,
            "torch_median_s": b,
            "ours_tok_per_sec": tokens / a,
            "torch_tok_per_sec": tokens / b,
            "ratio": b / a,
        }));
    }
    println!(
        "\n| shape | ours ms/step | ours tok/s | PyTorch ms/step | PyTorch tok/s | ours / PyTorch |"
    );
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | **{:.2}×** |",
            r["shape"].as_str().unwrap_or("?"),
            r["ours_median_s"].as_f64().unwrap_or(f64::NAN) * 1e3,
            r["ours_tok_per_sec"].as_f64().unwrap_or(f64::NAN),
            r["torch_median_s"].as_f64().unwrap_or(f64::NAN) * 1e3,
            r["torch_tok_per_sec"].as_f64().unwrap_or(f64::NAN),
            r["ratio"].as_f64().unwrap_or(f64::NAN),
        );
    }
    let out = target.join("bench-cpu-vs-torch.json");
    std::fs::write(
        &out,
        serde_json::to_string_pretty(&json!({ "rows": rows }))?,
    )
    .with_context(|| format!("cannot write {}", out.display()))?;
    println!("\n(all step times in {})", out.display());
    Ok(())
}
