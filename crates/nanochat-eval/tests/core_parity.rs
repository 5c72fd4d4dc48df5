//! Parity with upstream's CORE evaluation (`../shared/fixtures/core/`, produced by upstream's
//! unmodified `core_eval.evaluate_example`): for every example the same token rows and
//! continuation spans, option mean losses within 1e-4, the same correctness, and the same
//! per-task accuracy and centered score.

use std::collections::BTreeMap;

use burn::backend::Flex;
use nanochat_core::ModelConfig;
use nanochat_core::paths::{core_fixture_dir, eval_bundle_dir, tokenizer_fixture_dir};
use nanochat_eval::Bundle;
use nanochat_eval::core_eval::{centered, evaluate_example};
use nanochat_model::Gpt;
use nanochat_model::weights::{load_named, read_safetensors};
use nanochat_tokenizer::pickle::import_pickle;
use serde_json::Value;

#[test]
fn core_examples_match_upstream() {
    let dir = core_fixture_dir();
    let summary: Value =
        serde_json::from_slice(&std::fs::read(dir.join("core_summary.json")).unwrap()).unwrap();
    let config: ModelConfig = serde_json::from_value(summary["config"].clone()).unwrap();
    let path = dir.join("core_model.safetensors");
    let mut model = Gpt::<Flex>::init(&config, &Default::default()).unwrap();
    load_named(
        &mut model,
        read_safetensors(&std::fs::read(&path).unwrap(), "", &path).unwrap(),
        &path,
    )
    .unwrap();
    let tokenizer = import_pickle(&tokenizer_fixture_dir().join("tokenizer.pkl")).unwrap();
    let bundle = Bundle::open(&eval_bundle_dir()).unwrap();
    let max = summary["max_per_task"].as_u64().unwrap() as usize;

    let mut expected: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for line in std::fs::read_to_string(dir.join("core_examples.jsonl"))
        .unwrap()
        .lines()
    {
        let v: Value = serde_json::from_str(line).unwrap();
        expected
            .entry(v["task"].as_str().unwrap().to_string())
            .or_default()
            .push(v);
    }
    let mut worst = 0f64;
    for (label, examples) in &expected {
        let task = bundle.tasks.iter().find(|t| &t.label == label).unwrap();
        let data = bundle.load_task(task, Some(max)).unwrap();
        let mut correct = 0;
        for ex in examples {
            let idx = ex["idx"].as_u64().unwrap() as usize;
            let r = evaluate_example(idx, &model, &tokenizer, &data, &task.meta).unwrap();
            let want_tokens: Vec<Vec<u32>> = serde_json::from_value(ex["tokens"].clone()).unwrap();
            assert_eq!(r.rows.tokens, want_tokens, "{label}[{idx}]: token rows");
            let want_start: Vec<usize> = serde_json::from_value(ex["start_idxs"].clone()).unwrap();
            let want_end: Vec<usize> = serde_json::from_value(ex["end_idxs"].clone()).unwrap();
            assert_eq!(
                (r.rows.start.clone(), r.rows.end.clone()),
                (want_start, want_end),
                "{label}[{idx}]: spans"
            );
            if let Some(ml) = ex["mean_losses"].as_array() {
                assert_eq!(ml.len(), r.mean_losses.len());
                for (a, b) in r.mean_losses.iter().zip(ml) {
                    let b = b.as_f64().unwrap();
                    let e = (*a as f64 - b).abs() / b.abs().max(1e-12);
                    worst = worst.max(e);
                    assert!(e < 1e-4, "{label}[{idx}]: mean loss {a} vs {b}");
                }
            }
            assert_eq!(
                r.correct,
                ex["correct"].as_bool().unwrap(),
                "{label}[{idx}]: correctness"
            );
            correct += r.correct as usize;
        }
        let acc = correct as f64 / examples.len() as f64;
        let want = &summary["tasks"][label];
        assert!(
            (acc - want["accuracy"].as_f64().unwrap()).abs() < 1e-12,
            "{label}: accuracy"
        );
        let c = centered(acc, bundle.random_baselines[label]);
        assert!(
            (c - want["centered"].as_f64().unwrap()).abs() < 1e-9,
            "{label}: centered {c}"
        );
    }
    eprintln!(
        "CORE fixture: {} tasks, worst mean-loss relative error {worst:.2e}",
        expected.len()
    );
}
