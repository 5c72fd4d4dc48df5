//! `cargo xtask ui-test`: the web chat page in headless Chromium against a real `nanochat
//! serve` — type a message, watch the answer stream in, edit the message (regenerating from
//! it), change the temperature with a slash command, regenerate the answer, and save a
//! screenshot. Needs Debian's `chromium`, `node`/`npm` (playwright-core is installed into
//! `target/ui-test` on first use) and a checkpoint (`--source`, `--model-tag`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(&cargo)
        .args(["build", "--release", "--bin", "nanochat"])
        .current_dir(root)
        .status()?
        .success();
    if !built {
        bail!("building nanochat failed");
    }
    let target = std::env::var("CARGO_TARGET_DIR").map_or(root.join("target"), PathBuf::from);
    let mut serve = Command::new(target.join("release/nanochat"));
    serve.args([
        "serve",
        "--device",
        "cpu",
        "--source",
        &args.source,
        "--port",
        &args.port.to_string(),
    ]);
    if let Some(tag) = &args.model_tag {
        serve.args(["--model-tag", tag]);
    }
    let _server = Kill(
        serve
            .stdout(Stdio::null())
            .spawn()
            .context("starting nanochat serve")?,
    );
    let url = format!("http://127.0.0.1:{}/", args.port);
    let start = Instant::now();
    loop {
        let ready = Command::new("curl")
            .args(["-sf", &format!("{url}health")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            bail!("the server did not become ready in 120 s");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
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
