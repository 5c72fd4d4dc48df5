//! The `nanochat` binary's data and evaluation records, as a user runs them: `base-train`
//! refuses an empty data folder before step 0 naming it and the rule; `--warmup-only` has
//! nothing to do on the CPU and writes nothing; a tiny model trains and
//! `doctor` shows the dataset its checkpoint recorded; `base-eval` writes its bits per byte as
//! an `EvaluationResult` file, and `report generate` reads that file into the report card.

mod common;

use common::{nanochat, nanochat_args, ok, tiny_base_train, tok_train};

#[test]
fn dataset_and_evaluation_results_reach_doctor_and_the_report() {
    let base = tempfile::tempdir().unwrap();
    let b = base.path();
    tok_train(b);

    // An empty data folder is refused before step 0, naming the folder and the rule.
    let empty = tempfile::tempdir().unwrap();
    let empty_dir = empty.path().display().to_string();
    let refused = nanochat_args(b, &tiny_base_train("1", &["--data-dir", &empty_dir]));
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("must not be empty") && err.contains(&empty_dir),
        "{err}"
    );
    assert!(!b.join("base_checkpoints/d1").exists());

    // `--warmup-only` (the speedrun's kernel warm-up stage) has nothing to fill on the CPU:
    // it says so, succeeds, and trains or writes nothing.
    let warm = nanochat_args(b, &tiny_base_train("1", &["--warmup-only"]));
    let warm = ok(&warm, "base-train --warmup-only");
    assert!(warm.contains("nothing to warm up on cpu"), "{warm}");
    assert!(!b.join("base_checkpoints").exists());

    ok(&nanochat_args(b, &tiny_base_train("1", &[])), "base-train");
    let doctor = ok(&nanochat(b, &["doctor"]), "doctor");
    let line = doctor
        .lines()
        .find(|l| l.contains("d1@1 data"))
        .unwrap_or_else(|| panic!("no dataset line for d1@1:\n{doctor}"));
    assert!(
        line.starts_with("[ok]") && line.contains("documents in "),
        "{line}"
    );

    ok(&nanochat(b, &["report", "reset"]), "report reset");
    let eval = nanochat(
        b,
        &[
            "base-eval",
            "--eval",
            "bpb",
            "--split-tokens",
            "64",
            "--device-batch-size",
            "1",
            "-g",
            "d1",
            "--device",
            "cpu",
            "--no-progress",
        ],
    );
    ok(&eval, "base-eval");
    let result = b.join("base_eval/d1_000001_bpb.json");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&result).unwrap()).unwrap();
    assert_eq!(r["step"], 1);
    assert_eq!(r["measure"], "bits_per_byte");
    assert_eq!(r["config"]["kind"], "bpb");
    assert!(
        r["checkpoint"]
            .as_str()
            .unwrap()
            .ends_with("base_checkpoints/d1")
    );
    let val = r["scores"]["val"].as_f64().unwrap();

    let out = b.join("card.md");
    let out_arg = out.display().to_string();
    ok(
        &nanochat(b, &["report", "generate", "--out", &out_arg]),
        "report generate",
    );
    let card = std::fs::read_to_string(&out).unwrap();
    assert!(
        card.contains("- result: base_eval/d1_000001_bpb.json\n- train_bpb: "),
        "{card}"
    );
    assert!(card.contains(&format!("- val_bpb: {val:.4}")), "{card}");
}
