//! The `nanochat` binary as a user runs it: a tokenizer and a one-step model with a context
//! shorter than the CLI's default answer length, then the `chat-cli` command the speedrun
//! prints at its end (which must answer: its own default `--max-tokens` may not turn into an
//! error), and an explicit `--max-tokens` beyond the context, which must be refused clearly;
//! `import` of an upstream checkpoint writes the configuration post-training inherits.

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
    ok(&tok, "tok-train");
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

#[test]
fn import_writes_the_configuration_post_training_inherits() {
    let base = tempfile::tempdir().unwrap();
    let b = base.path();
    // Upstream's checkpoint fixture, with the flags upstream's base_train.py stores.
    let up = b.join("upstream-d4");
    std::fs::create_dir_all(&up).unwrap();
    let fixture = nanochat::core::paths::fixture_dir().join("upstream_ckpt");
    for e in std::fs::read_dir(&fixture).unwrap().flatten() {
        std::fs::copy(e.path(), up.join(e.file_name())).unwrap();
    }
    let meta_path = up.join("meta_000000.json");
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    meta["user_config"] = serde_json::json!({"depth": 4, "matrix_lr": 0.03, "warmdown_ratio": 0.5,
                                             "num_iterations": -1, "fp8": false});
    meta["device_batch_size"] = 8.into();
    meta["max_seq_len"] = 512.into();
    std::fs::write(&meta_path, meta.to_string()).unwrap();
    let out = nanochat(b, &["import", up.to_str().unwrap(), "--model-tag", "up"]);
    ok(&out, "import");
    let dir =
        nanochat::core::checkpoint_manager::checkpoint_dir(b, nanochat::core::Source::Base, "up");
    let ours = nanochat::core::checkpoint_manager::load_meta(&dir, 0).unwrap();
    let extra = &ours.metadata.extra;
    let cfg: nanochat::core::TrainingConfiguration =
        serde_json::from_value(extra["user_config"].clone()).unwrap();
    assert_eq!((cfg.depth, cfg.optimizer.matrix_lr), (4, 0.03));
    assert_eq!(cfg.schedule.warmdown_ratio, 0.5);
    assert_eq!(cfg.num_iterations, None);
    assert_eq!(
        (&extra["device_batch_size"], &extra["max_seq_len"]),
        (&8.into(), &512.into())
    );
}
