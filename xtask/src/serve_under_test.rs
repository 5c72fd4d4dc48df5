//! A `nanochat serve` for the checks that drive it from outside (`ui-test`, `api-test`):
//! built in release, started on loopback with a checkpoint, waited on until `/health` says
//! ready, and killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The running server; killed on drop.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:<port>` (no trailing slash).
    pub url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds the release binary, serves checkpoint `source`/`model_tag` on `127.0.0.1:port` on
/// the CPU and waits (up to 120 s) until it is ready.
pub fn start(root: &Path, source: &str, model_tag: Option<&str>, port: u16) -> Result<Server> {
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
        "--host",
        "127.0.0.1",
        "--source",
        source,
    ]);
    serve.args(["--port", &port.to_string()]);
    if let Some(tag) = model_tag {
        serve.args(["--model-tag", tag]);
    }
    let child = serve
        .stdout(Stdio::null())
        .spawn()
        .context("starting nanochat serve")?;
    wait_ready(Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    })
}

/// Serves checkpoint `source`/`model_tag` of base folder `base` with `bin` on a free port
/// (`--port 0`: the address is the first line it prints), on the CPU, and waits until ready.
pub fn start_on(bin: &Path, base: &Path, source: &str, model_tag: &str) -> Result<Server> {
    let mut child = Command::new(bin)
        .args(["serve", "-i", source, "-g", model_tag])
        .args(["--port", "0", "--device", "cpu"])
        .env("NANOCHAT_BASE_DIR", base)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .context("starting nanochat serve")?;
    let stdout = child.stdout.take().context("serve's stdout")?;
    let mut first = String::new();
    let read = BufReader::new(stdout).read_line(&mut first);
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .map(|u| u.trim_end_matches('/').to_string());
    let server = Server {
        child,
        url: url.unwrap_or_default(),
    };
    read?;
    if server.url.is_empty() {
        bail!("serve printed no address: {first:?}");
    }
    wait_ready(server)
}

/// Waits (up to 120 s) until `server` answers `/health` with 200; it is killed otherwise.
fn wait_ready(server: Server) -> Result<Server> {
    let start = Instant::now();
    loop {
        let ready = Command::new("curl")
            .args(["-sf", &format!("{}/health", server.url)])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            return Ok(server);
        }
        if start.elapsed() > Duration::from_secs(120) {
            bail!("the server did not become ready in 120 s");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}
