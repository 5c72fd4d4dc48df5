//! The `openai client` step of `cargo xtask ci`: the official `openai` Python client (from
//! PyPI into `target/api-venv` on first use) against `nanochat serve` on a tiny model trained
//! here (a 512-token tokenizer and a d1, two steps, seconds): streaming and not, `n`,
//! `logprobs`, text completions, and 400s naming the field (`xtask/src/scripts/openai_client.py`).
//! The bad-input battery and the load run in `cargo test` (`nanochat-infer/tests/battery.rs`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::nanochat_bin::{exec, tok_train};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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
    exec(
        &bin,
        &base,
        &[
            "base-train",
            "--depth",
            "1",
            "--max-seq-len",
            "128",
            "--device-batch-size",
            "1",
            "--total-batch-size",
            "128",
            "--num-iterations",
            "2",
            "--eval-every",
            "-1",
            "--sample-every",
            "-1",
            "--device",
            "cpu",
            "--no-progress",
        ],
    )?;
    let mut child = Command::new(&bin)
        .args([
            "serve", "-i", "base", "-g", "d1", "--port", "0", "--device", "cpu",
        ])
        .env("NANOCHAT_BASE_DIR", &base)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .context("starting nanochat serve")?;
    let stdout = child.stdout.take().context("serve's stdout")?;
    let _server = Killed(child);
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first)?;
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .with_context(|| format!("serve printed no address: {first:?}"))?
        .trim_end_matches('/')
        .to_string();
    let start = Instant::now();
    while !Command::new("curl")
        .args(["-sf", &format!("{url}/health")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        if start.elapsed() > Duration::from_secs(120) {
            bail!("serve did not become ready in 120 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let ok = Command::new(&python)
        .arg(root.join("xtask/src/scripts/openai_client.py"))
        .arg(format!("{url}/v1"))
        .status()?
        .success();
    if !ok {
        bail!("the openai client check failed");
    }
    Ok(())
}
