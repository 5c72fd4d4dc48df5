//! The `nanochat` binary for the xtasks that drive it on small models (`hf-check`,
//! `openai-check`): built in the dev profile (the models are tiny) and run on a base folder.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Builds `nanochat` (dev profile) and returns its path.
pub fn build(root: &Path) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    if !Command::new(&cargo)
        .args(["build", "--bin", "nanochat"])
        .current_dir(root)
        .status()?
        .success()
    {
        bail!("building nanochat failed");
    }
    let target = std::env::var("CARGO_TARGET_DIR").map_or(root.join("target"), PathBuf::from);
    Ok(target.join("debug/nanochat"))
}

/// Runs `nanochat <args>` on base folder `base` (warnings only in its log); its stdout, or an
/// error with both streams.
pub fn exec(bin: &Path, base: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(bin)
        .args(args)
        .env("NANOCHAT_BASE_DIR", base)
        .env("RUST_LOG", "warn")
        .output()
        .with_context(|| format!("starting {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "nanochat {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A small base model trained in seconds on the CPU: `shape` gives the depth, batch, steps
/// and anything else (`--arch`, `--model-tag`); no evaluation or samples, 128-token rows.
pub fn base_train(bin: &Path, base: &Path, shape: &[&str]) -> Result<()> {
    let mut args = vec!["base-train", "--max-seq-len", "128"];
    args.extend_from_slice(shape);
    args.extend([
        "--eval-every",
        "-1",
        "--sample-every",
        "-1",
        "--device",
        "cpu",
        "--no-progress",
    ]);
    exec(bin, base, &args).map(|_| ())
}

/// The tiny tokenizer both checks train first (vocabulary 512, 200 000 characters: seconds).
pub fn tok_train(bin: &Path, base: &Path) -> Result<()> {
    exec(
        bin,
        base,
        &[
            "tok-train",
            "--vocab-size",
            "512",
            "--max-chars",
            "200000",
            "--no-progress",
        ],
    )
    .map(|_| ())
}
