//! What the binary's tests share: running `nanochat` on a base folder, checking it succeeded,
//! and the tiny tokenizer every one of them trains first.

#![allow(dead_code)] // each test file uses its own subset

use std::path::Path;
use std::process::{Child, Command, Output};

/// `nanochat <args>` with `base` as its base folder, run to completion.
pub fn nanochat(base: &Path, args: &[&str]) -> Output {
    command(base, args)
        .output()
        .expect("the nanochat binary runs")
}

/// The command `nanochat <args>` on `base` (warnings only in its log), not started.
pub fn command(base: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nanochat"));
    c.args(args)
        .env("NANOCHAT_BASE_DIR", base)
        .env("RUST_LOG", "warn");
    c
}

/// Its stdout, after asserting that it succeeded (both streams shown when it did not).
pub fn ok(out: &Output, what: &str) -> String {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{what} failed:\n{stdout}\n{stderr}");
    stdout.into_owned()
}

/// A vocabulary-512 tokenizer trained on 200 000 characters (seconds).
pub fn tok_train(base: &Path) -> String {
    ok(
        &nanochat(
            base,
            &[
                "tok-train",
                "--vocab-size",
                "512",
                "--max-chars",
                "200000",
                "--no-progress",
            ],
        ),
        "tok-train",
    )
}

/// `base-train` of a d1 on 64-token rows, one row per step, for `iterations` steps on the CPU
/// (no evaluation, samples or progress bar), then `extra`.
pub fn tiny_base_train(iterations: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "base-train",
        "--depth",
        "1",
        "--max-seq-len",
        "64",
        "--device-batch-size",
        "1",
        "--total-batch-size",
        "64",
        "--num-iterations",
        iterations,
        "--eval-every",
        "-1",
        "--sample-every",
        "-1",
        "--device",
        "cpu",
        "--no-progress",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// `nanochat <args>` with owned arguments.
pub fn nanochat_args(base: &Path, args: &[String]) -> Output {
    nanochat(base, &args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// A child process killed and reaped on every path out of a test, a failed assertion
/// included.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
