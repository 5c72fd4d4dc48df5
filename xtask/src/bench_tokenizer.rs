//! `cargo xtask bench-tokenizer`: trains the tokenizer at the given vocabulary size on every
//! train shard with `nanochat tok-train` and with upstream's `rustbpe` in the same run, checks
//! that the learned ranks are byte-identical, and compares encode throughput of `nanochat bench
//! tokenizer` with Python tiktoken (given our ranks). Timings are medians (training) and bests
//! (encoding) of `--repeats` runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

/// Flags.
#[derive(clap::Args)]
pub struct Args {
    /// Folder of parquet shards (default ../shared/data/pretrain).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Vocabulary size, special tokens included.
    #[arg(long, default_value_t = 32768)]
    vocab_size: usize,
    /// Repetitions per measurement.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
}

fn run_ok(cmd: &mut Command, what: &str) -> Result<String> {
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
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(root: &Path, args: Args) -> Result<()> {
    let data_dir = args
        .data_dir
        .unwrap_or_else(|| root.join("../shared/data/pretrain"));
    ensure!(
        data_dir.is_dir(),
        "no shard folder at {}",
        data_dir.display()
    );
    let python = crate::venv::python(
        root,
        "bench-venv",
        &["rustbpe==0.1.0", "tiktoken", "pyarrow"],
        "rustbpe, tiktoken, pyarrow",
    )?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    println!("Building nanochat (release) …");
    run_ok(
        Command::new(&cargo)
            .args(["build", "--release", "-q", "-p", "nanochat"])
            .current_dir(root),
        "cargo build",
    )?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let nanochat = target.join("release").join("nanochat");
    let base = tempfile_dir(root)?;

    println!(
        "Training ours ({} × vocab {}) …",
        args.repeats, args.vocab_size
    );
    let mut ours_times = Vec::new();
    for _ in 0..args.repeats {
        run_ok(
            Command::new(&nanochat)
                .args([
                    "tok-train",
                    "--no-progress",
                    "--vocab-size",
                    &args.vocab_size.to_string(),
                    "--data-dir",
                ])
                .arg(&data_dir)
                .env("NANOCHAT_BASE_DIR", &base),
            "nanochat tok-train",
        )?;
        let report: Value =
            serde_json::from_slice(&std::fs::read(base.join("tokenizer/tok_train.json"))?)?;
        ours_times.push(
            report["report"]["train_seconds"]
                .as_f64()
                .context("train_seconds")?,
        );
    }
    let ours_bench: Value = serde_json::from_str(&run_ok(
        Command::new(&nanochat)
            .args([
                "bench",
                "tokenizer",
                "--repeats",
                &args.repeats.to_string(),
                "--data-dir",
            ])
            .arg(&data_dir)
            .env("NANOCHAT_BASE_DIR", &base),
        "nanochat bench tokenizer",
    )?)?;

    println!(
        "Training upstream rustbpe ({} ×) and timing Python tiktoken …",
        args.repeats
    );
    let script = base.join("rustbpe_bench.py");
    std::fs::write(&script, include_str!("scripts/rustbpe_bench.py"))?;
    let upstream_ranks = base.join("rustbpe.tiktoken");
    let ours_ranks = base.join("tokenizer/tokenizer.tiktoken");
    let py: Value = serde_json::from_str(
        run_ok(
            Command::new(&python)
                .arg(&script)
                .arg(&data_dir)
                .arg(args.vocab_size.to_string())
                .arg(&upstream_ranks)
                .arg(&ours_ranks)
                .arg(args.repeats.to_string()),
            "rustbpe benchmark",
        )?
        .lines()
        .last()
        .unwrap_or("{}"),
    )?;

    let identical = std::fs::read(&ours_ranks)? == std::fs::read(&upstream_ranks)?;
    let ours_t = median(ours_times.clone());
    let theirs_t = py["train_seconds"].as_f64().context("train_seconds")?;
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "\nTokenizer training, vocab {} on {} (cores: {}):",
        args.vocab_size,
        data_dir.display(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("  nanochat-rs tok-train   {ours_t:>7.2} s  (runs: {ours_times:.2?})");
    let theirs_all: Vec<f64> = py["train_seconds_all"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_f64)
        .collect();
    println!("  rustbpe 0.1.0 (PyPI)    {theirs_t:>7.2} s  (runs: {theirs_all:.2?})");
    println!("  speed-up                {:>7.2}×", theirs_t / ours_t);
    println!(
        "  identical merges        {}",
        if identical { "yes" } else { "NO" }
    );
    println!(
        "\nEncoding the validation shard ({} bytes):",
        ours_bench["bytes"]
    );
    println!(
        "  nanochat-rs  single thread {:>7.1} MB/s   batch ({} threads) {:>7.1} MB/s",
        f(&ours_bench, "single_thread_mb_per_s"),
        ours_bench["threads"],
        f(&ours_bench, "batch_mb_per_s")
    );
    println!(
        "  tiktoken {}  single thread {:>7.1} MB/s   batch ({} threads) {:>7.1} MB/s",
        py["tiktoken"].as_str().unwrap_or("?"),
        f(&py, "single_thread_mb_per_s"),
        py["threads"],
        f(&py, "batch_mb_per_s")
    );
    ensure!(
        identical,
        "the merges differ from rustbpe's: compare {} and {}",
        ours_ranks.display(),
        upstream_ranks.display()
    );
    ensure!(
        ours_bench["tokens"] == py["encode_tokens"],
        "token counts differ: ours {} tiktoken {}",
        ours_bench["tokens"],
        py["encode_tokens"]
    );
    Ok(())
}

fn tempfile_dir(root: &Path) -> Result<PathBuf> {
    let dir = root.join("target").join("bench-tokenizer");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
