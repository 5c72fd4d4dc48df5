//! `cargo xtask api-test`: the checks of `nanochat serve` that need outside tools, in one
//! command: the official `openai` Python client (installed with pip into
//! `target/api-test/venv` on first use) streams and non-streams a chat completion, and a
//! bounded `wrk` load test on loopback must see no error responses. Needs a checkpoint
//! (`--source`, `--model-tag`), python3 with venv, and wrk.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Flags.
#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint source (base, mid, sft, rl).
    #[arg(long, default_value = "sft")]
    source: String,
    /// Model tag.
    #[arg(long)]
    model_tag: Option<String>,
    /// Port for the server under test.
    #[arg(long, default_value_t = 8766)]
    port: u16,
    /// Seconds of load.
    #[arg(long, default_value_t = 20)]
    seconds: u32,
}

pub fn run(root: &Path, args: Args) -> Result<()> {
    let dir = root.join("target/api-test");
    std::fs::create_dir_all(&dir)?;
    let venv = dir.join("venv");
    let py = venv.join("bin/python");
    if !py.exists() {
        let ok = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()?
            .success()
            && Command::new(&py)
                .args(["-m", "pip", "install", "-q", "openai"])
                .status()?
                .success();
        if !ok {
            bail!("creating {} with openai failed", venv.display());
        }
    }
    let server =
        crate::serve_under_test::start(root, &args.source, args.model_tag.as_deref(), args.port)?;
    let url = server.url.clone();

    // 1. The official client.
    let ok = Command::new(&py)
        .arg(root.join("xtask/src/scripts/openai_client.py"))
        .arg(format!("{url}/v1"))
        .status()?
        .success();
    if !ok {
        bail!("the openai client check failed");
    }

    // 2. Load: 2 threads, 8 connections, short answers; wrk counts non-2xx responses.
    let lua = dir.join("post.lua");
    std::fs::write(
        &lua,
        r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"messages":[{"role":"user","content":"Hello"}],"max_tokens":8,"temperature":0}'
"#,
    )?;
    let out = Command::new("wrk")
        .args([
            "-t2",
            "-c8",
            &format!("-d{}s", args.seconds),
            "--latency",
            "-s",
        ])
        .arg(&lua)
        .arg(format!("{url}/v1/chat/completions"))
        .output()
        .context("wrk is needed for the load test")?;
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    if !out.status.success()
        || text.contains("Non-2xx or 3xx responses")
        || text.contains("Socket errors")
    {
        bail!("the load test saw errors");
    }
    let health = Command::new("curl")
        .args(["-sf", &format!("{url}/health")])
        .output()?;
    if !health.status.success() {
        bail!("the server stopped answering after the load test");
    }
    let metrics = Command::new("curl")
        .args(["-s", &format!("{url}/metrics")])
        .output()?;
    for line in String::from_utf8_lossy(&metrics.stdout).lines() {
        if line.starts_with("nanochat_") {
            println!("{line}");
        }
    }
    println!("api-test passed");
    Ok(())
}
