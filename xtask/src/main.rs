//! `cargo xtask`: the project's orchestration, in Rust rather than shell scripts.
//!
//! - `cargo xtask ci`: every check CI runs (format, lints, tests, docs, backend builds).
//! - `cargo xtask bench-tokenizer`: our tokenizer training and encoding against upstream's
//!   rustbpe and Python tiktoken on this machine, in one run.
//! - `cargo xtask bench-cpu-vs-torch`: our CPU training step against upstream's on PyTorch,
//!   same shapes, alternating rounds, with the ratio.
//! - `cargo xtask speedrun`: the pipeline, stage by stage, resumable.
//! - `cargo xtask ui-test`: the web chat page in headless Chromium against `nanochat serve`.
//! - `cargo xtask api-test`: the official `openai` client and a `wrk` load test against it.

mod api_test;
mod bench_cpu_vs_torch;
mod bench_tokenizer;
mod hf_check;
mod nanochat_bin;
mod openai_check;
mod serve_under_test;
mod speedrun;
mod ui_test;
mod venv;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

/// nanochat-rs developer tasks.
#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every check CI runs: fmt, clippy, tests, docs, a lint of the wgpu, cuda and ndarray
    /// backend builds, and a model forward on WGPU (software Vulkan) against the CPU.
    Ci {
        /// Skip the backend checks (burn's GPU stacks and the WGPU forward, several minutes).
        #[arg(long)]
        skip_backends: bool,
    },
    /// Train the tokenizer with ours and with upstream's rustbpe (PyPI) on the same shards, check
    /// the merges are identical, and compare encode throughput with Python tiktoken. Installs
    /// rustbpe, tiktoken and pyarrow into target/bench-venv on first use (needs PyPI).
    BenchTokenizer(bench_tokenizer::Args),
    /// Time our CPU training step against upstream nanochat's on PyTorch (same shapes, fresh
    /// random tokens, alternating rounds) and print the ratio; needs an upstream checkout and
    /// torch (installed into target/bench-torch-venv on first use).
    BenchCpuVsTorch(bench_cpu_vs_torch::Args),
    /// Run the whole pipeline stage by stage (resumable): tokenizer, base model, midtraining,
    /// SFT, RL, their evaluations and the report card.
    Speedrun(speedrun::Args),
    /// Check `nanochat serve` with the official openai Python client and a bounded wrk load
    /// test (needs python3-venv, wrk and a checkpoint).
    ApiTest(api_test::Args),
    /// Drive the web chat page in headless Chromium against a real `nanochat serve` (needs
    /// chromium, node/npm and a checkpoint).
    UiTest(ui_test::Args),
    /// Export a small model of each architecture to Hugging Face folders and check them in
    /// transformers (logits, greedy generate, tokenizer, chat template) and the round trip
    /// back; installs torch + transformers into target/hf-venv on first use (needs PyPI).
    HfCheck(hf_check::Args),
    /// The official openai Python client against `serve` on a tiny model trained on the spot
    /// (CI's `openai client` step; installs openai into target/api-venv on first use).
    OpenaiCheck,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

/// One step of a check run: a cargo invocation with optional environment.
struct Step {
    name: &'static str,
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
}

fn run_step(root: &Path, step: &Step) -> Result<f64> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    println!("\n==> {} (cargo {})", step.name, step.args.join(" "));
    let start = Instant::now();
    let status = Command::new(&cargo)
        .args(step.args)
        .envs(step.env.iter().copied())
        .current_dir(root)
        .status()
        .with_context(|| format!("cannot run {cargo}"))?;
    let secs = start.elapsed().as_secs_f64();
    if !status.success() {
        bail!("step `{}` failed after {secs:.0} s ({status})", step.name);
    }
    println!("<== {} ok in {secs:.0} s", step.name);
    Ok(secs)
}

fn ci(skip_backends: bool) -> Result<()> {
    let root = workspace_root();
    let mut steps = vec![
        Step {
            name: "fmt",
            args: &["fmt", "--all", "--", "--check"],
            env: &[],
        },
        Step {
            name: "clippy",
            args: &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
            env: &[],
        },
        Step {
            name: "test",
            args: &["test", "--workspace"],
            env: &[],
        },
        Step {
            name: "doc",
            args: &["doc", "--workspace", "--no-deps"],
            env: &[("RUSTDOCFLAGS", "-D warnings")],
        },
    ];
    if !skip_backends {
        // Lint (not just compile) every backend feature, so cfg-gated code stays warning-free.
        steps.push(Step {
            name: "check wgpu",
            args: &[
                "clippy",
                "-p",
                "nanochat",
                "--features",
                "wgpu",
                "--",
                "-D",
                "warnings",
            ],
            env: &[],
        });
        steps.push(Step {
            name: "check cuda",
            args: &[
                "clippy",
                "-p",
                "nanochat",
                "--features",
                "cuda",
                "--",
                "-D",
                "warnings",
            ],
            env: &[],
        });
        // The WGPU path for real: one fixture forward through Mesa's software Vulkan driver
        // (lavapipe; `.ci/run` installs it), compared with the CPU logits, and the blocked
        // training loss and attention with their gradients (the path CUDA takes too) against
        // the CPU kernels.
        steps.push(Step {
            name: "wgpu forward",
            args: &[
                "test",
                "-p",
                "nanochat-model",
                "--features",
                "wgpu",
                "--test",
                "wgpu_forward",
                "--test",
                "wgpu_ops",
            ],
            env: &[],
        });
        steps.push(Step {
            name: "check ndarray",
            args: &[
                "clippy",
                "-p",
                "nanochat",
                "--no-default-features",
                "--features",
                "ndarray",
                "--",
                "-D",
                "warnings",
            ],
            env: &[],
        });
    }
    let start = Instant::now();
    let mut times = Vec::new();
    for step in &steps {
        times.push((step.name, run_step(&root, step)?));
    }
    // The official openai Python client against `serve` (needs python3-venv and PyPI).
    println!("\n==> openai client (xtask/src/scripts/openai_client.py against nanochat serve)");
    let t = Instant::now();
    let target = std::env::var("CARGO_TARGET_DIR").map_or(root.join("target"), PathBuf::from);
    openai_check::run(&root, Some(target.join("debug/nanochat")))
        .context("step `openai client` failed")?;
    let secs = t.elapsed().as_secs_f64();
    println!("<== openai client ok in {secs:.0} s");
    times.push(("openai client", secs));
    println!("\nCI passed in {:.0} s:", start.elapsed().as_secs_f64());
    for (name, secs) in times {
        println!("  {name:<12} {secs:>6.0} s");
    }
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Ci { skip_backends } => ci(skip_backends),
        Cmd::BenchTokenizer(args) => bench_tokenizer::run(&workspace_root(), args),
        Cmd::BenchCpuVsTorch(args) => bench_cpu_vs_torch::run(&workspace_root(), args),
        Cmd::UiTest(args) => ui_test::run(&workspace_root(), args),
        Cmd::HfCheck(args) => hf_check::run(&workspace_root(), args),
        Cmd::OpenaiCheck => openai_check::run(&workspace_root(), None),
        Cmd::Speedrun(args) => speedrun::run(&workspace_root(), args),
        Cmd::ApiTest(args) => api_test::run(&workspace_root(), args),
    }
}
