//! The `nanochat` binary as a user runs it: a tokenizer and a one-step model with a context
//! shorter than the CLI's default answer length, then the `chat-cli` and `serve` commands the
//! speedrun prints at its end (which must answer: their own default answer length may not turn
//! into an error), and an explicit `--max-tokens` beyond the context, which must be refused
//! clearly; along the way, `doctor` shows the lifecycles the tokenizer and the checkpoint went
//! through. `import` of an upstream checkpoint writes the configuration post-training
//! inherits; Ctrl-C during `base-train` saves and prints the command that resumes, and a
//! second one aborts at once leaving the checkpoints intact.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Running, command, nanochat, nanochat_args, ok, tiny_base_train, tok_train};

/// Starts `nanochat <args>` (a `serve` command), waits until it is ready, asks it the
/// speedrun's question through the OpenAI endpoint with the default answer length (longer than
/// the context: the server clamps it), and stops it.
fn serve_answers(base: &Path, args: &[&str]) {
    let mut child = command(base, args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("the nanochat binary runs");
    let stdout = child.stdout.take().unwrap();
    let _stop = Running(child);
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first).unwrap();
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .trim_end_matches('/')
        .to_string();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let start = Instant::now();
    while agent
        .get(&format!("{url}/health"))
        .call()
        .map_or(true, |r| r.status() != 200)
    {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "serve never got ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let body = r#"{"messages":[{"role":"user","content":"What is the capital of France?"}]}"#;
    let mut r = agent
        .post(&format!("{url}/v1/chat/completions"))
        .header("Content-Type", "application/json")
        .send(body)
        .unwrap();
    let text = r.body_mut().read_to_string().unwrap();
    assert_eq!(r.status(), 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(v["choices"][0]["message"]["content"].is_string(), "{text}");
    assert!(
        v["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{text}"
    );
}

/// `bench serve --vs-unbatched` on the model in `base`: each level (batched, then batching
/// off) sends `clients × --requests` requests, every one answered.
fn bench_serve_sends_every_level_its_pool(base: &Path) {
    let args = [
        "bench",
        "serve",
        "-i",
        "rl",
        "-g",
        "d1",
        "--clients",
        "1,3",
        "--requests",
        "2",
        "--max-tokens",
        "4",
        "--vs-unbatched",
    ];
    let out = ok(&nanochat(base, &args), "bench serve");
    let levels: Vec<serde_json::Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<(String, u64, u64)> = levels
        .iter()
        .map(|l| {
            let s = |k: &str| l[k].as_str().unwrap_or_default().to_string();
            (
                s("batching"),
                l["clients"].as_u64().unwrap(),
                l["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    let want = [("on", 1, 2), ("on", 3, 6), ("off", 1, 2), ("off", 3, 6)];
    let want: Vec<(String, u64, u64)> = want.iter().map(|&(b, c, r)| (b.into(), c, r)).collect();
    assert_eq!(got, want, "{out}");
    for l in &levels {
        assert!(l["tokens"].as_u64().unwrap() > 0, "{l}");
        assert!(l["aggregate_tok_per_s"].as_f64().unwrap() > 0.0, "{l}");
    }
    assert!(out.contains("batched / unbatched"), "{out}");
}

#[test]
fn chat_cli_answers_on_a_model_with_a_short_context() {
    let base = tempfile::tempdir().unwrap();
    let b = base.path();
    let out = tok_train(b);
    assert!(out.contains("untrained → training → trained"), "{out}");
    let train = nanochat_args(b, &tiny_base_train("1", &[]));
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
    // The speedrun ends with an RL model; this one stands in for it (same checkpoint format).
    let (from, to) = (
        b.join("base_checkpoints/d1"),
        b.join("chatrl_checkpoints/d1"),
    );
    std::fs::create_dir_all(&to).unwrap();
    for e in std::fs::read_dir(&from).unwrap().flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    // The speedrun's closing commands, on this model, exactly as printed (`serve` on a free
    // port instead of 8000).
    let chat = nanochat(
        b,
        &[
            "chat-cli",
            "-i",
            "rl",
            "-g",
            "d1",
            "-p",
            "What is the capital of France?",
        ],
    );
    ok(&chat, "chat-cli with the default --max-tokens");
    assert!(String::from_utf8_lossy(&chat.stderr).contains("answers are capped at"));
    serve_answers(b, &["serve", "-i", "rl", "-g", "d1", "--port", "0"]);
    bench_serve_sends_every_level_its_pool(b);
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

#[test]
fn ctrl_c_saves_and_says_how_to_resume_and_a_second_one_aborts_at_once() {
    let base = tempfile::tempdir().unwrap();
    let b = base.path();
    tok_train(b);
    let train_args = |extra: &[&str]| tiny_base_train("100000", extra);
    // Starts a long run and sends it `signals` SIGINTs once it is at step 3 or later; returns
    // how it ended and what it printed.
    let interrupt = |extra: &[&str], signals: usize| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nanochat"))
            .args(train_args(extra))
            .env("NANOCHAT_BASE_DIR", b)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // Status lines are logs (stdout); the final error is on stderr.
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = String::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            seen.push_str(&line);
            seen.push('\n');
            // The status line: `step 00003/100000 (0.00%) | loss: …`.
            let at = line
                .split("step ")
                .nth(1)
                .and_then(|r| r.split('/').next())
                .and_then(|n| n.parse::<u64>().ok());
            if at.is_some_and(|n| n >= 3) {
                break;
            }
        }
        for i in 0..signals {
            if i > 0 {
                // Apart, as a person presses twice (signals sent at once may arrive as one).
                std::thread::sleep(Duration::from_millis(100));
            }
            let status = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
        }
        for line in lines {
            seen.push_str(&line.unwrap());
            seen.push('\n');
        }
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        seen.push_str(&stderr);
        (child.wait().unwrap(), seen)
    };
    let dir = b.join("base_checkpoints/d1");
    // One Ctrl-C: the step finishes, a checkpoint is written, the run exits non-zero with the
    // command that continues it.
    let (status, said) = interrupt(&[], 1);
    assert!(
        !status.success() && status.code() != Some(130),
        "{status}: {said}"
    );
    let step: u64 = said
        .split("--resume-from-step ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no resume command in:\n{said}"));
    assert!(step >= 3, "{said}");
    nanochat::core::checkpoint_manager::verify_checkpoint(&dir, step).unwrap();
    // The command it printed continues the run (here only to the next step).
    let next = (step + 1).to_string();
    let resumed = nanochat_args(
        b,
        &train_args(&[
            "--resume-from-step",
            &step.to_string(),
            "--stop-after",
            &next,
        ]),
    );
    ok(&resumed, "the resume command");
    nanochat::core::checkpoint_manager::verify_checkpoint(&dir, step + 1).unwrap();
    // Two Ctrl-Cs: the second aborts at once (status 130); the checkpoints already written
    // stay intact.
    let (status, said) = interrupt(&["--resume-from-step", &next], 2);
    assert_eq!(status.code(), Some(130), "{said}");
    nanochat::core::checkpoint_manager::verify_checkpoint(&dir, step + 1).unwrap();
    nanochat::core::checkpoint_manager::verify_checkpoint(&dir, step).unwrap();
}
