//! The `openai client` step of `cargo xtask ci`: the official `openai` Python client (from
//! PyPI into `target/api-venv` on first use) against `nanochat serve` on a tiny model trained
//! here (a 512-token tokenizer and a d1, two steps, seconds): streaming and not, `n`,
//! `logprobs`, text completions, and 400s naming the field (`xtask/src/scripts/openai_client.py`).
//! The bad-input battery and the load run in `cargo test` (`nanochat-infer/tests/battery.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Result, bail};

use crate::nanochat_bin::{base_train, tok_train};

/// Runs the check with `bin` (CI passes the binary its test step built: a plain `cargo build`
/// resolves other features and would rebuild burn), else with a fresh dev build.
pub fn run(root: &Path, bin: Option<PathBuf>) -> Result<()> {
    let python = crate::venv::python(root, "api-venv", &["openai"], "openai")?;
    let bin = match bin {
        Some(b) => b,
        None => crate::nanochat_bin::build(root)?,
    };
    let base = root.join("target/openai-check");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base)?;
    tok_train(&bin, &base)?;
    base_train(
        &bin,
        &base,
        &[
            "--depth",
            "1",
            "--device-batch-size",
            "1",
            "--total-batch-size",
            "128",
            "--num-iterations",
            "2",
        ],
    )?;
    let server = crate::serve_under_test::start_on(&bin, &base, "base", "d1")?;
    let ok = Command::new(&python)
        .arg(root.join("xtask/src/scripts/openai_client.py"))
        .arg(format!("{}/v1", server.url))
        .status()?
        .success();
    if !ok {
        bail!("the openai client check failed");
    }
    Ok(())
}
