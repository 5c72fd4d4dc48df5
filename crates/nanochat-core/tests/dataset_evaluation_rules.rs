//! The validation rules of the data model's datasets and evaluation results: one passing and
//! one failing case each, checking that the error names the right field and rule (split from
//! `validation_rules.rs`, whose `rule!` assertion this file repeats).

use chrono::{DateTime, Utc};
use nanochat_core::*;

fn t(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_750_000_000 + s, 0).unwrap()
}
/// Asserts `ok` passes and `bad` fails on `field` with a rule matching `rule`.
macro_rules! rule {
    ($ok:expr, $bad:expr, $field:expr, $rule:pat) => {{
        let ok: Result<_, ValidationError> = $ok;
        if let Err(e) = ok {
            panic!("passing case failed: {e}");
        }
        let bad: Result<_, ValidationError> = $bad;
        match bad {
            Ok(_) => panic!("failing case passed"),
            Err(e) => {
                assert_eq!(e.field, $field, "wrong field in: {e}");
                assert!(matches!(e.rule, $rule), "wrong rule in: {e}");
                // The message names field, value and rule.
                let msg = e.to_string();
                assert!(msg.contains(&e.field) && msg.contains(&e.value), "{msg}");
            }
        }
    }};
}

fn eval(score: f64) -> EvaluationResult {
    EvaluationResult {
        model: "base/d4@10".into(),
        metric: "CORE-1".into(),
        scores: [("copa".to_string(), score)].into(),
        centered: Default::default(),
        aggregate: None,
        created_at: t(0),
        ..Default::default()
    }
}

#[test]
fn benchmark_scores_in_unit_interval() {
    rule!(
        eval(1.0).validate(),
        eval(1.01).validate(),
        "scores[copa]",
        Rule::InRange(_)
    );
    assert!(eval(0.0).validate().is_ok());
    assert!(eval(-0.01).validate().is_err());
    assert!(eval(f64::NAN).validate().is_err());
}

#[test]
fn bits_per_byte_are_non_negative_and_never_centered() {
    let bpb = |v: f64| EvaluationResult {
        metric: "bpb".into(),
        measure: Measure::BitsPerByte,
        scores: [("train".to_string(), 1.2), ("val".to_string(), v)].into(),
        ..eval(0.5)
    };
    // Above 1 is fine for bits per byte (it is not an accuracy) …
    rule!(
        bpb(2.5).validate(),
        bpb(-0.1).validate(),
        "scores[val]",
        Rule::NonNegative
    );
    // … and a centered score makes no sense for it.
    let mut centered = bpb(2.5);
    centered.centered.insert("val".into(), 0.1);
    rule!(
        bpb(2.5).validate(),
        centered.validate(),
        "centered[val]",
        Rule::Pattern { .. }
    );
}

#[test]
fn evaluation_config_positive_settings() {
    let core = |max_per_task| EvaluationResult {
        config: Some(EvaluationConfig::Core {
            bundle_dir: "/data/eval_bundle".into(),
            max_per_task,
            world_size: 1,
        }),
        ..eval(0.5)
    };
    rule!(
        core(Some(4)).validate(),
        core(Some(0)).validate(),
        "config.max_per_task",
        Rule::Positive
    );
    let bpb = |split_tokens| EvaluationConfig::Bpb {
        data_dir: "/data/climbmix".into(),
        split_tokens,
        device_batch_size: 8,
        seq_len: 256,
        world_size: 1,
    };
    rule!(
        bpb(4096).validate(),
        bpb(0).validate(),
        "split_tokens",
        Rule::Positive
    );
    let chat = |temperature| EvaluationConfig::Chat {
        max_problems: None,
        batch_size: 8,
        num_samples: 1,
        max_new_tokens: 512,
        temperature,
        top_k: 50,
        seed: 42,
    };
    rule!(
        chat(0.0).validate(),
        chat(-1.0).validate(),
        "temperature",
        Rule::NonNegative
    );
}

#[test]
fn evaluated_checkpoint_exists() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("base_checkpoints").join("d4");
    std::fs::create_dir_all(&ckpt).unwrap();
    std::fs::write(ckpt.join("meta_000100.json"), b"{}").unwrap();
    let at = |path: &std::path::Path, step| EvaluationResult {
        checkpoint: Some(path.to_path_buf()),
        step: Some(step),
        ..eval(0.5)
    };
    rule!(
        at(&ckpt, 100).check_checkpoint(),
        at(&dir.path().join("base_checkpoints/d8"), 100).check_checkpoint(),
        "checkpoint",
        Rule::PathExists
    );
    rule!(
        at(&ckpt, 100).check_checkpoint(),
        at(&ckpt, 200).check_checkpoint(),
        "step",
        Rule::PathExists
    );
    // A named checkpoint needs its step.
    let no_step = EvaluationResult {
        step: None,
        ..at(&ckpt, 100)
    };
    rule!(
        at(&ckpt, 100).validate(),
        no_step.validate(),
        "step",
        Rule::Pattern { .. }
    );
}

#[test]
fn results_written_before_checkpoint_and_config_still_read() {
    // A chat-eval result as written before `checkpoint`, `step`, `config` and `measure` existed.
    let old = r#"{"model": "sft/d4@120", "metric": "ChatCORE-ARC-Easy", "scores": {"ARC-Easy": 0.25},
        "centered": {"ARC-Easy": 0.0}, "aggregate": 0.0, "created_at": "2026-01-01T00:00:00Z",
        "extra": {"settings": {"num_samples": 1}}}"#;
    let r: EvaluationResult = serde_json::from_str(old).unwrap();
    r.validate().unwrap();
    assert_eq!((r.checkpoint, r.step, r.config), (None, None, None));
    assert_eq!(r.measure, Measure::Accuracy);
}

fn source(dir: &str, shards: &[&str]) -> DataSource {
    DataSource {
        name: "pretrain".into(),
        source_type: SourceType::Local,
        format: DataFormat::Parquet,
        location: dir.into(),
        weight: 1.0,
        shards: shards.iter().map(Into::into).collect(),
    }
}

fn dataset(sources: Vec<DataSource>) -> TrainingDataset {
    TrainingDataset {
        name: "climbmix".into(),
        kind: DatasetKind::Pretraining,
        sources,
        preprocessing: vec![PreprocessingStep::PrependBos],
        metadata: None,
    }
}

#[test]
fn at_least_one_data_source() {
    rule!(
        dataset(vec![source("/tmp", &[])]).validate(),
        dataset(vec![]).validate(),
        "sources",
        Rule::NotEmpty
    );
}

/// The smallest file that passes the parquet magic check: `PAR1`, a footer length, `PAR1`.
const PARQUET_LIKE: &[u8] = b"PAR1\0\0\0\0\0\0\0\0PAR1";

#[test]
fn shard_files_exist() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("shard_00000.parquet"), PARQUET_LIKE).unwrap();
    let loc = dir.path().to_str().unwrap();
    rule!(
        dataset(vec![source(loc, &["shard_00000.parquet"])]).check_files(),
        dataset(vec![source(
            loc,
            &["shard_00000.parquet", "shard_00001.parquet"]
        )])
        .check_files(),
        "sources[0].shards[1]",
        Rule::PathExists
    );
}

#[test]
fn local_source_lists_a_shard() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("shard_00000.parquet"), PARQUET_LIKE).unwrap();
    let loc = dir.path().to_str().unwrap();
    let err = dataset(vec![source(loc, &[])]).check_files().unwrap_err();
    assert_eq!(err.field, "sources[0].shards");
    assert_eq!(err.rule, Rule::NotEmpty);
    assert!(err.value.contains(loc), "{err}");
    assert!(
        dataset(vec![source(loc, &["shard_00000.parquet"])])
            .check_files()
            .is_ok()
    );
}

#[test]
fn shard_is_of_its_format_by_magic_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| std::fs::write(dir.path().join(name), bytes).unwrap();
    write("good.parquet", PARQUET_LIKE);
    write(
        "text.parquet",
        b"this is plain text, not a parquet file at all",
    );
    write("short.parquet", b"PAR1PAR1");
    write("half.parquet", b"PAR1 truncated download....");
    let loc = dir.path().to_str().unwrap();
    for bad in ["text.parquet", "short.parquet", "half.parquet"] {
        rule!(
            dataset(vec![source(loc, &["good.parquet"])]).check_files(),
            dataset(vec![source(loc, &["good.parquet", bad])]).check_files(),
            "sources[0].shards[1]",
            Rule::Pattern { .. }
        );
        let err = dataset(vec![source(loc, &[bad])])
            .check_files()
            .unwrap_err();
        assert!(err.to_string().contains(bad), "{err}");
        assert!(err.to_string().contains("parquet file"), "{err}");
    }
    let gz = dir.path().join("x.jsonl.gz");
    write("x.jsonl.gz", b"\x1f\x8b\x08\0\0\0\0\0\0\0\0\0");
    assert!(DataFormat::JsonlGz.check_magic(&gz, "f").is_ok());
    write("x.jsonl.gz", b"{\"not\": \"gzip at all\"}");
    assert!(DataFormat::JsonlGz.check_magic(&gz, "f").is_err());
}

#[test]
fn total_documents_is_sum_of_shards() {
    let shard = |documents| ShardInfo {
        path: "s.parquet".into(),
        documents,
        tokens: None,
    };
    let meta = |total| DatasetMetadata {
        tokenizer: None,
        shards: vec![shard(3), shard(4)],
        total_documents: total,
        total_tokens: None,
        created_at: t(0),
    };
    rule!(
        meta(7).validate(),
        meta(8).validate(),
        "total_documents",
        Rule::Equals { .. }
    );
}

#[test]
fn total_tokens_is_sum_of_shards() {
    let shard = |tokens| ShardInfo {
        path: "s.parquet".into(),
        documents: 1,
        tokens,
    };
    let meta = |total, second| DatasetMetadata {
        tokenizer: Some("tokenizer.tiktoken".into()),
        shards: vec![shard(Some(10)), shard(second)],
        total_documents: 2,
        total_tokens: total,
        created_at: t(0),
    };
    rule!(
        meta(Some(42), Some(32)).validate(),
        meta(Some(43), Some(32)).validate(),
        "total_tokens",
        Rule::Equals { .. }
    );
    // A total needs every shard's count, and the tokenizer they were counted with.
    rule!(
        meta(None, None).validate(),
        meta(Some(10), None).validate(),
        "shards[1].tokens",
        Rule::Pattern { .. }
    );
    let mut no_tokenizer = meta(Some(42), Some(32));
    no_tokenizer.tokenizer = None;
    rule!(
        meta(Some(42), Some(32)).validate(),
        no_tokenizer.validate(),
        "tokenizer",
        Rule::Pattern { .. }
    );
}

#[test]
fn source_weight_positive() {
    rule!(
        source("/tmp", &[]).validate(),
        DataSource {
            weight: 0.0,
            ..source("/tmp", &[])
        }
        .validate(),
        "weight",
        Rule::Positive
    );
}

#[test]
fn format_supported() {
    rule!(
        "parquet".parse::<DataFormat>(),
        "xlsx".parse::<DataFormat>(),
        "format",
        Rule::OneOf { .. }
    );
    // Supported in general but not for this kind of dataset: conversations can't be parquet.
    let mut convs = dataset(vec![source("/tmp", &[])]);
    convs.kind = DatasetKind::Conversations;
    rule!(
        dataset(vec![source("/tmp", &[])]).validate(),
        convs.validate(),
        "sources[0].format",
        Rule::OneOf { .. }
    );
    assert!(DataFormat::from_path("a/b.docx".as_ref()).is_err());
    assert_eq!(
        DataFormat::from_path("a/b.jsonl.gz".as_ref()).unwrap(),
        DataFormat::JsonlGz
    );
}
