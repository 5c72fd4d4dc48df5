//! The `nanochat` binary as a user runs it: a tokenizer and a one-step model with a context
//! shorter than the CLI's default answer length, then the `chat-cli` command the speedrun
//! prints at its end (which must answer: its own default `--max-tokens` may not turn into an
//! error), and an explicit `--max-tokens` beyond the context, which must be refused clearly.
//! Along the way, `doctor` shows the lifecycles the tokenizer and the checkpoint went through.

use std::path::Path;
use std::process::{Command, Output};

fn nanochat(base: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nanochat"))
        .args(args)
        .env("NANOCHAT_BASE_DIR", base)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the nanochat binary runs")
}

fn ok(out: &Output, what: &str) -> String {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{what} failed:\n{stdout}\n{stderr}");
    stdout.into_owned()
}

#[test]
fn chat_cli_answers_on_a_model_with_a_short_context() {
    let base = tempfile::tempdir().unwrap();
    let b = base.path();
    let tok = nanochat(
        b,
        &[
            "tok-train",
            "--vocab-size",
            "512",
            "--max-chars",
            "200000",
            "--no-progress",
        ],
    );
    let out = ok(&tok, "tok-train");
    assert!(out.contains("untrained → training → trained"), "{out}");
    let train = nanochat(
        b,
        &[
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
            "1",
            "--eval-every",
            "-1",
            "--sample-every",
            "-1",
            "--device",
            "cpu",
            "--no-progress",
        ],
    );
    ok(&train, "base-train");
    let doctor = ok(&nanochat(b, &["doctor"]), "doctor");
    let line = |what: &str| {
        doctor
            .lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what} line in\n{doctor}"))
            .to_string()
    };
    assert!(line("tokenizer").contains("— loaded (trained "), "{doctor}");
    assert!(
        line("base checkpoints").contains("d1 (step 1, created → saved → loaded, saved "),
        "{doctor}"
    );
    // The speedrun's closing command, on this model.
    let chat = nanochat(
        b,
        &[
            "chat-cli",
            "-i",
            "base",
            "-g",
            "d1",
            "-p",
            "What is the capital of France?",
            "--device",
            "cpu",
        ],
    );
    ok(&chat, "chat-cli with the default --max-tokens");
    assert!(String::from_utf8_lossy(&chat.stderr).contains("answers are capped at"));
    // What the user asks for explicitly is checked as given.
    let too_long = nanochat(
        b,
        &[
            "chat-cli",
            "-i",
            "base",
            "-g",
            "d1",
            "-p",
            "Hi",
            "--max-tokens",
            "500",
            "--device",
            "cpu",
        ],
    );
    assert!(!too_long.status.success());
    let err = String::from_utf8_lossy(&too_long.stderr);
    assert!(
        err.contains("max_tokens") && err.contains("remaining context"),
        "{err}"
    );
}
