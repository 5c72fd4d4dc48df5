//! Every task loads from the offline data with the expected sizes and renders.

use nanochat_core::paths::data_dir;
use nanochat_data::tasks::{EvalKind, TaskSpec, TaskSplit};

#[test]
fn offline_tasks_load() {
    let d = data_dir();
    let expect = [
        ("ARC-Easy", TaskSplit::Test, 2376),
        ("ARC-Challenge", TaskSplit::Test, 1172),
        ("MMLU", TaskSplit::Test, 14079),
        ("GSM8K", TaskSplit::Train, 7473),
        ("GSM8K", TaskSplit::Test, 1319),
        ("Identity", TaskSplit::Train, 500),
        ("SpellingBee", TaskSplit::Train, 100),
    ];
    for (name, split, n) in expect {
        let t = TaskSpec::load(name, split, &d, 100).unwrap();
        assert_eq!(t.len(), n, "{name}");
        let c = t.get(n - 1);
        assert!(c.messages.len() >= 2);
        if t.eval_kind() == EvalKind::Categorical {
            let ans = c.messages.last().unwrap().content.to_plain_text();
            assert!(t.evaluate(n - 1, &ans));
        }
    }
    let mmlu_train = TaskSpec::load("MMLU", TaskSplit::Train, &d, 0).unwrap();
    assert!(mmlu_train.len() > 1000);
    let extra = TaskSpec::load("MCExtra", TaskSplit::Train, &d, 0).unwrap();
    assert!(extra.len() > 10_000, "{}", extra.len());
    let hh = TaskSpec::load("HHRLHF", TaskSplit::Train, &d, 0).unwrap();
    assert!(hh.len() > 2000, "{}", hh.len());
    // GSM8K's reference answers grade as correct against themselves.
    let g = TaskSpec::load("GSM8K", TaskSplit::Test, &d, 0).unwrap();
    for i in 0..50 {
        let text = g.get(i).messages[1].content.to_plain_text();
        assert!(g.evaluate(i, &text));
    }
    let Err(e) = TaskSpec::load("nope", TaskSplit::Test, &d, 0) else {
        panic!("unknown task accepted")
    };
    assert!(e.to_string().contains("unknown task"));
}
