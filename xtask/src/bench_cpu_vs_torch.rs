//! `cargo xtask bench-cpu-vs-torch`: our CPU training step against upstream nanochat's on
//! PyTorch, same shapes, on this machine, back to back and alternating (rounds A, B, A, B…), so
//! that the ratio is not skewed by whatever else the machine is doing. Ours is `nanochat bench
//! train --device cpu`; upstream's is `xtask/scripts/bench_torch_train.py` (its `GPT`,
//! `init_weights()`, `setup_optimizer()`; float32, eager). Both draw fresh random tokens every
//! step. With `--infer`, also decode: `nanochat bench infer --device cpu` against upstream's
//! `Engine` (`xtask/scripts/bench_torch_infer.py`), random d4 model, vocab 32768, a 128-token
//! prompt, batch 1 and 8. A benchmark, not a test: it prints the tables and writes
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
    /// Also compare decoding (time to first token, tok/s at batch 1 and 8).
    #[arg(long)]
    infer: bool,
    /// Skip the training shapes (with `--infer`: decoding only).
    #[arg(long)]
    no_train: bool,
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
    // One JSON line last (train, the Python scripts) or a pretty-printed document (infer).
    let last = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'));
    if let Some(v) = last.and_then(|l| serde_json::from_str(l).ok()) {
        return Ok(v);
    }
    let start = stdout
        .find("\n{")
        .map(|i| i + 1)
        .or_else(|| stdout.starts_with('{').then_some(0))
        .with_context(|| format!("{what} printed no JSON:\n{stdout}"))?;
    serde_json::from_str(&stdout[start..]).with_context(|| format!("{what}: bad JSON in\n{stdout}"))
}

fn torch_python(root: &Path, given: Option<PathBuf>) -> Result<PathBuf> {
    match given {
        Some(p) => Ok(p),
        // rustbpe and tiktoken: upstream's engine imports its tokenizer module.
        None => crate::venv::python(
            root,
            "bench-torch-venv",
            &["torch", "numpy", "filelock", "rustbpe", "tiktoken"],
            "torch, numpy, filelock, rustbpe, tiktoken",
        )
        .context("setting up PyTorch (pass --python to use an existing one)"),
    }
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
        .filter(|s| !args.no_train && args.shapes.iter().any(|n| n == s.name))
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
    if !rows.is_empty() {
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
    }
    let infer = if args.infer {
        Some(bench_infer(
            root,
            &nanochat,
            &python,
            &upstream,
            args.rounds,
        )?)
    } else {
        None
    };
    let out = target.join("bench-cpu-vs-torch.json");
    std::fs::write(
        &out,
        serde_json::to_string_pretty(&json!({ "rows": rows, "infer": infer }))?,
    )
    .with_context(|| format!("cannot write {}", out.display()))?;
    println!("\n(all timings in {})", out.display());
    Ok(())
}

/// Decode on both sides, alternating rounds; the best round of each (decode speed is a
/// capability, and the machine's noise only ever slows a round down).
fn bench_infer(
    root: &Path,
    nanochat: &Path,
    python: &Path,
    upstream: &Path,
    rounds: usize,
) -> Result<Value> {
    let script = root
        .join("xtask")
        .join("scripts")
        .join("bench_torch_infer.py");
    let common = [
        "--depth",
        "4",
        "--prompt-tokens",
        "128",
        "--decode-tokens",
        "64",
        "--batch-sizes",
        "1,8",
    ];
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..rounds.max(1) {
        println!("decode: round {} of {rounds}: ours …", round + 1);
        let mut c = Command::new(nanochat);
        c.args(["bench", "infer", "--device", "cpu"]).args(common);
        ours.push(run_json(&mut c, "nanochat bench infer")?["result"].clone());
        println!("decode: round {} of {rounds}: PyTorch …", round + 1);
        let mut c = Command::new(python);
        c.arg(&script).arg("--nanochat").arg(upstream).args(common);
        theirs.push(run_json(&mut c, "bench_torch_infer.py")?);
    }
    let best = |runs: &[Value], f: &dyn Fn(&Value) -> Option<f64>, lower: bool| {
        runs.iter()
            .filter_map(f)
            .fold(None, |acc: Option<f64>, x| {
                Some(acc.map_or(x, |a| if lower { a.min(x) } else { a.max(x) }))
            })
            .unwrap_or(f64::NAN)
    };
    let ttft = |v: &Value| v["ttft_ms"].as_f64();
    let tps = |b: u64| {
        move |v: &Value| {
            v["decode"]
                .as_array()?
                .iter()
                .find(|d| d["batch_size"].as_u64() == Some(b))?["tok_per_sec"]
                .as_f64()
        }
    };
    let (o_ttft, t_ttft) = (best(&ours, &ttft, true), best(&theirs, &ttft, true));
    let (o1, t1) = (best(&ours, &tps(1), false), best(&theirs, &tps(1), false));
    let (o8, t8) = (best(&ours, &tps(8), false), best(&theirs, &tps(8), false));
    println!("\n| decode (d4, vocab 32768, 128-token prompt) | ours | PyTorch | ours / PyTorch |");
    println!("|---|---|---|---|");
    println!(
        "| time to first token | {o_ttft:.1} ms | {t_ttft:.1} ms | **{:.2}×** |",
        t_ttft / o_ttft
    );
    println!(
        "| batch 1 | {o1:.0} tok/s | {t1:.0} tok/s | **{:.2}×** |",
        o1 / t1
    );
    println!(
        "| batch 8 | {o8:.0} tok/s | {t8:.0} tok/s | **{:.2}×** |",
        o8 / t8
    );
    Ok(json!({ "ours": ours, "torch": theirs }))
}
