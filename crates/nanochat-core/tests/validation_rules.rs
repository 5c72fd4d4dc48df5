//! Every validation rule of the data model: one passing and one failing case each, checking that
//! the error names the right field and rule.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use nanochat_core::checkpoint_manager::load_meta;
use nanochat_core::training_config::grad_accum_steps;
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

fn model() -> ModelConfig {
    ModelConfig::from_depth(4).unwrap()
}

#[test]
fn n_embd_divisible_by_n_head() {
    rule!(
        model().validate(),
        ModelConfig {
            n_head: 3,
            n_kv_head: 3,
            ..model()
        }
        .validate(),
        "n_embd",
        Rule::DivisibleBy {
            other: "n_head",
            ..
        }
    );
}

#[test]
fn n_head_divisible_by_n_kv_head() {
    let m = ModelConfig {
        n_embd: 384,
        n_head: 6,
        n_kv_head: 2,
        ..model()
    };
    rule!(
        m.validate(),
        ModelConfig {
            n_kv_head: 4,
            ..m.clone()
        }
        .validate(),
        "n_head",
        Rule::DivisibleBy {
            other: "n_kv_head",
            ..
        }
    );
}

#[test]
fn n_kv_head_at_most_n_head() {
    rule!(
        ModelConfig {
            n_kv_head: 1,
            ..model()
        }
        .validate(),
        ModelConfig {
            n_kv_head: 4,
            ..model()
        }
        .validate(),
        "n_kv_head",
        Rule::AtMost { .. }
    );
}

#[test]
fn sequence_len_positive() {
    rule!(
        ModelConfig {
            sequence_len: 1,
            ..model()
        }
        .validate(),
        ModelConfig {
            sequence_len: 0,
            ..model()
        }
        .validate(),
        "sequence_len",
        Rule::Positive
    );
}

#[test]
fn block_size_positive() {
    let c = TrainingConfiguration::default();
    rule!(
        TrainingConfiguration {
            max_seq_len: 256,
            ..c.clone()
        }
        .validate(),
        TrainingConfiguration {
            max_seq_len: 0,
            ..c
        }
        .validate(),
        "max_seq_len",
        Rule::Positive
    );
}

#[test]
fn dropout_in_unit_interval() {
    rule!(
        ModelConfig {
            dropout: 1.0,
            ..model()
        }
        .validate(),
        ModelConfig {
            dropout: 1.5,
            ..model()
        }
        .validate(),
        "dropout",
        Rule::InRange(_)
    );
    assert!(
        ModelConfig {
            dropout: -0.1,
            ..model()
        }
        .validate()
        .is_err()
    );
}

#[test]
fn batch_sizes_positive() {
    let c = TrainingConfiguration::default();
    rule!(
        TrainingConfiguration {
            device_batch_size: 1,
            ..c.clone()
        }
        .validate(),
        TrainingConfiguration {
            device_batch_size: 0,
            ..c.clone()
        }
        .validate(),
        "device_batch_size",
        Rule::Positive
    );
    rule!(
        TrainingConfiguration {
            total_batch_size: Some(524_288),
            ..c.clone()
        }
        .validate(),
        TrainingConfiguration {
            total_batch_size: Some(0),
            ..c
        }
        .validate(),
        "total_batch_size",
        Rule::Positive
    );
}

#[test]
fn grad_accum_steps_positive() {
    // 2 rows of 256 tokens on 2 devices = 1024 tokens per micro-step.
    rule!(
        grad_accum_steps(2048, 2, 256, 2),
        grad_accum_steps(0, 2, 256, 2),
        "total_batch_size",
        Rule::Positive
    );
    // Not a whole number of micro-steps.
    let e = grad_accum_steps(1500, 2, 256, 2).unwrap_err();
    assert!(matches!(e.rule, Rule::DivisibleBy { .. }), "{e}");
}

#[test]
fn learning_rates_positive() {
    let o = OptimizerConfig::default();
    rule!(
        OptimizerConfig {
            matrix_lr: 1e-4,
            ..o.clone()
        }
        .validate(),
        OptimizerConfig {
            matrix_lr: 0.0,
            ..o.clone()
        }
        .validate(),
        "matrix_lr",
        Rule::Positive
    );
    rule!(
        o.validate(),
        OptimizerConfig {
            embedding_lr: -0.3,
            ..o.clone()
        }
        .validate(),
        "embedding_lr",
        Rule::Positive
    );
}

#[test]
fn warmup_at_most_max_steps() {
    let c = TrainingConfiguration {
        num_iterations: Some(100),
        ..Default::default()
    };
    rule!(
        c.validate(),
        TrainingConfiguration {
            schedule: LRSchedule {
                warmup_steps: 101,
                ..Default::default()
            },
            ..c.clone()
        }
        .validate(),
        "schedule.warmup_steps",
        Rule::AtMost { .. }
    );
    // Also when the horizon is resolved later (ratio- or FLOPs-derived).
    assert!(TrainingConfiguration::default().check_horizon(10).is_err());
}

#[test]
fn weight_decay_non_negative() {
    let o = OptimizerConfig::default();
    rule!(
        OptimizerConfig {
            weight_decay: 0.0,
            ..o.clone()
        }
        .validate(),
        OptimizerConfig {
            weight_decay: -0.1,
            ..o.clone()
        }
        .validate(),
        "weight_decay",
        Rule::NonNegative
    );
    let mut bad = o.clone();
    bad.wte.weight_decay = -1e-3;
    rule!(
        o.validate(),
        bad.validate(),
        "wte.weight_decay",
        Rule::NonNegative
    );
}

#[test]
fn betas_in_open_unit_interval() {
    let o = OptimizerConfig::default();
    let mut bad = o.clone();
    bad.lm_head.betas = [0.8, 1.0];
    rule!(
        o.validate(),
        bad.validate(),
        "lm_head.betas[1]",
        Rule::InRange(_)
    );
    let mut bad = o.clone();
    bad.x0_lambdas.betas = [0.0, 0.95];
    rule!(
        o.validate(),
        bad.validate(),
        "x0_lambdas.betas[0]",
        Rule::InRange(_)
    );
    rule!(
        o.validate(),
        OptimizerConfig {
            muon_momentum: 1.0,
            ..o.clone()
        }
        .validate(),
        "muon_momentum",
        Rule::InRange(_)
    );
}

#[test]
fn eps_positive() {
    let o = OptimizerConfig::default();
    rule!(
        OptimizerConfig {
            adam_eps: 1e-8,
            ..o.clone()
        }
        .validate(),
        OptimizerConfig { adam_eps: 0.0, ..o }.validate(),
        "adam_eps",
        Rule::Positive
    );
}

#[test]
fn checkpoint_path_exists() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("base_checkpoints").join("d4");
    let err = load_meta(&missing, 0).unwrap_err();
    match err {
        CheckpointError::Invalid { source, .. } => {
            assert_eq!(source.field, "path");
            assert!(matches!(source.rule, Rule::PathExists));
        }
        other => panic!("unexpected {other}"),
    }
    // The existing directory passes the path rule (and then reports the missing step).
    assert!(matches!(
        load_meta(dir.path(), 0).unwrap_err(),
        CheckpointError::NotFound { .. }
    ));
}

#[test]
fn context_window_at_most_max_sequence_len() {
    rule!(
        ConversationSession::new("s1", 2048, 2048, t(0)),
        ConversationSession::new("s1", 4096, 2048, t(0)),
        "context_window",
        Rule::AtMost { .. }
    );
}

#[test]
fn messages_chronological() {
    let mut s = ConversationSession::new("s1", 100, 100, t(0)).unwrap();
    rule!(
        s.push(Message::new(MessageRole::User, "hi").at(t(5)), t(5)),
        s.push(Message::new(MessageRole::Assistant, "hello").at(t(4)), t(6)),
        "messages[1].timestamp",
        Rule::Chronological { .. }
    );
    assert_eq!(s.messages.len(), 1, "a refused message is not kept");
}

#[test]
fn session_id_unique_in_store() {
    let mut store = SessionStore::new(10, Duration::hours(1));
    rule!(
        store.insert(ConversationSession::new("a", 10, 10, t(0)).unwrap()),
        store.insert(ConversationSession::new("a", 10, 10, t(1)).unwrap()),
        "id",
        Rule::Unique {
            within: "session store"
        }
    );
}

#[test]
fn message_content_non_empty() {
    rule!(
        Message::new(MessageRole::User, "x").validate(),
        Message::new(MessageRole::User, "  \n").validate(),
        "content",
        Rule::NotEmpty
    );
    let empty_parts = Message {
        content: MessageContent::Parts(vec![]),
        ..Message::new(MessageRole::Assistant, "x")
    };
    assert!(empty_parts.validate().is_err());
}

#[test]
fn role_is_user_assistant_or_system() {
    rule!(
        "assistant".parse::<MessageRole>(),
        "robot".parse::<MessageRole>(),
        "role",
        Rule::OneOf { .. }
    );
    assert_eq!(
        "system".parse::<MessageRole>().unwrap(),
        MessageRole::System
    );
}

#[test]
fn token_count_matches_tokenization() {
    // A stand-in tokenizer: one token per whitespace-separated word.
    let words = |c: &MessageContent| c.to_plain_text().split_whitespace().count();
    let m = Message {
        token_count: Some(3),
        ..Message::new(MessageRole::User, "one two three")
    };
    rule!(
        m.check_token_count(words),
        Message {
            token_count: Some(2),
            ..m.clone()
        }
        .check_token_count(words),
        "token_count",
        Rule::Equals { .. }
    );
}

#[test]
fn temperature_in_zero_two() {
    let p = GenerationParams::default();
    rule!(
        GenerationParams {
            temperature: 2.0,
            ..p.clone()
        }
        .validate(),
        GenerationParams {
            temperature: 2.1,
            ..p.clone()
        }
        .validate(),
        "temperature",
        Rule::InRange(_)
    );
    assert!(
        GenerationParams {
            temperature: 0.0,
            ..p
        }
        .validate()
        .is_ok()
    );
}

#[test]
fn top_k_between_one_and_vocab() {
    let p = GenerationParams::default();
    rule!(
        GenerationParams {
            top_k: Some(1),
            ..p.clone()
        }
        .validate_for(500, 1000),
        GenerationParams {
            top_k: Some(0),
            ..p.clone()
        }
        .validate_for(500, 1000),
        "top_k",
        Rule::Positive
    );
    rule!(
        GenerationParams {
            top_k: Some(500),
            ..p.clone()
        }
        .validate_for(500, 1000),
        GenerationParams {
            top_k: Some(501),
            ..p
        }
        .validate_for(500, 1000),
        "top_k",
        Rule::AtMost { .. }
    );
}

#[test]
fn top_p_in_zero_one() {
    let p = GenerationParams::default();
    rule!(
        GenerationParams {
            top_p: 1.0,
            ..p.clone()
        }
        .validate(),
        GenerationParams { top_p: 0.0, ..p }.validate(),
        "top_p",
        Rule::InRange(_)
    );
}

#[test]
fn max_tokens_positive_and_within_remaining_context() {
    let p = GenerationParams::default();
    rule!(
        GenerationParams {
            max_tokens: 100,
            ..p.clone()
        }
        .validate_for(500, 100),
        GenerationParams {
            max_tokens: 101,
            ..p.clone()
        }
        .validate_for(500, 100),
        "max_tokens",
        Rule::AtMost { .. }
    );
    rule!(
        p.validate(),
        GenerationParams {
            max_tokens: 0,
            ..p.clone()
        }
        .validate(),
        "max_tokens",
        Rule::Positive
    );
}

fn bytes_vocab() -> HashMap<Vec<u8>, u32> {
    (0u32..256).map(|b| (vec![b as u8], b)).collect()
}

#[test]
fn vocab_and_inverse_consistent() {
    let mut ok = bytes_vocab();
    ok.insert(b"ab".to_vec(), 256);
    let mut bad = ok.clone();
    bad.insert(b"cd".to_vec(), 256); // two tokens share rank 256, so rank 257 has no token
    rule!(
        Vocabulary::from_ranks(ok),
        Vocabulary::from_ranks(bad),
        "ranks",
        Rule::InverseConsistent { .. }
    );
}

#[test]
fn special_tokens_have_ids() {
    let ok = SpecialTokens::upstream(256);
    let mut bad = ok.clone();
    bad.ids.insert("<|bos|>".into(), None);
    rule!(ok.validate(), bad.validate(), "<|bos|>", Rule::HasId);
    let mut missing = ok.clone();
    missing.ids.remove("<|python_end|>");
    assert!(missing.validate().is_err());
}

#[test]
fn vocab_size_matches_map_size() {
    let vocab = Vocabulary::from_ranks(bytes_vocab()).unwrap();
    let ok = TokenizerConfig::upstream(256 + 9);
    rule!(
        ok.validate_with(&vocab),
        TokenizerConfig::upstream(256 + 10).validate_with(&vocab),
        "vocab_size",
        Rule::Equals { .. }
    );
}

#[test]
fn merges_valid() {
    rule!(
        Vocabulary::from_merges(&[(104, 105), (256, 33)]),
        Vocabulary::from_merges(&[(104, 105), (257, 33)]),
        "merges[1]",
        Rule::ValidMerge { .. }
    );
    // A rank file whose token is not a merge of two earlier tokens.
    let mut ranks = bytes_vocab();
    ranks.insert(b"abc".to_vec(), 256);
    let v = Vocabulary::from_ranks(ranks).unwrap();
    let e = v.recover_merges().unwrap_err();
    assert!(matches!(e.rule, Rule::ValidMerge { .. }), "{e}");
}
