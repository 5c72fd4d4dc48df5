//! `cargo xtask ui-test`: the web chat page in headless Chromium against a real `nanochat
//! serve` — type a message, watch the answer stream in, edit the message (regenerating from
//! it), change the temperature with a slash command, regenerate the answer, and save a
//! screenshot. Needs Debian's `chromium`, `node`/`npm` (playwright-core is installed into
//! `target/ui-test` on first use) and a checkpoint (`--source`, `--model-tag`).

use std::path::{Path, PathBuf};
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
    #[arg(long, default_value_t = 8765)]
    port: u16,
    /// Where to write the screenshot.
    #[arg(long, default_value = "target/ui-test/ui.png")]
    screenshot: PathBuf,
}

pub fn run(root: &Path, args: Args) -> Result<()> {
    let dir = root.join("target/ui-test");
    std::fs::create_dir_all(&dir)?;
    if !dir.join("node_modules/playwright-core").exists() {
        let ok = Command::new("npm")
            .args(["install", "--prefix"])
            .arg(&dir)
            .arg("playwright-core@1")
            .status()
            .context("npm is needed for the UI test")?
            .success();
        if !ok {
            bail!("npm install playwright-core failed");
        }
    }
    let server =
        crate::serve_under_test::start(root, &args.source, args.model_tag.as_deref(), args.port)?;
    let url = format!("{}/", server.url);
    let ok = Command::new("node")
        .arg(root.join("xtask/src/scripts/ui_test.js"))
        .arg(&url)
        .arg(root.join(&args.screenshot))
        .env("NODE_PATH", dir.join("node_modules"))
        .status()
        .context("node is needed for the UI test")?
        .success();
    if !ok {
        bail!("the UI test failed");
    }
    println!("screenshot: {}", root.join(&args.screenshot).display());
    Ok(())
}
