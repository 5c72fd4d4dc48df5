//! Parity with upstream (rustbpe 0.1.0 + tiktoken 0.14): the fixture's merges, encodings,
//! rendered conversations and pickled tokenizer.

mod common;

use std::path::PathBuf;

use nanochat_core::paths::{data_dir, tokenizer_fixture_dir};
use nanochat_core::{Conversation, SpecialTokens, TokenizerConfig};
use nanochat_tokenizer::pickle::import_pickle;
use nanochat_tokenizer::tok_train::{TokTrainOptions, train_tokenizer};
use nanochat_tokenizer::tokenizer::read_tiktoken;
use nanochat_tokenizer::{SPLIT_PATTERN, Tokenizer};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    tokenizer_fixture_dir().join(name)
}

fn meta() -> Value {
    serde_json::from_slice(&std::fs::read(fixture("meta.json")).unwrap()).unwrap()
}

/// The fixture tokenizer from `tokenizer.tiktoken` + `meta.json`.
fn fixture_tokenizer() -> Tokenizer {
    let meta = meta();
    let vocab = read_tiktoken(&fixture("tokenizer.tiktoken")).unwrap();
    let specials = meta["special_tokens"].as_object().unwrap();
    let config = TokenizerConfig {
        pattern: meta["pattern"].as_str().unwrap().to_string(),
        vocab_size: meta["vocab_size"].as_u64().unwrap() as usize,
        special_tokens: SpecialTokens {
            ids: specials
                .iter()
                .map(|(k, v)| (k.clone(), Some(v.as_u64().unwrap() as u32)))
                .collect(),
        },
    };
    Tokenizer::from_parts(config, vocab, &fixture("meta.json")).unwrap()
}

fn lines(name: &str) -> Vec<Value> {
    std::fs::read_to_string(fixture(name))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn training_learns_the_fixture_merges() {
    let meta = meta();
    assert_eq!(meta["pattern"].as_str().unwrap(), SPLIT_PATTERN);
    let shard = data_dir().join("pretrain").join("shard_00000.parquet");
    let docs = common::shard_docs(&shard).map(Ok::<_, String>);
    let opts = TokTrainOptions {
        max_chars: 4_000_000,
        doc_cap: 10_000,
        vocab_size: meta["vocab_size"].as_u64().unwrap() as usize,
        ..Default::default()
    };
    let (ours, report) = train_tokenizer(docs, &opts).unwrap();
    assert_eq!(
        report.documents,
        meta["trained_on"]["docs"].as_u64().unwrap(),
        "same documents taken"
    );
    let expected = read_tiktoken(&fixture("tokenizer.tiktoken")).unwrap();
    assert_eq!(ours.vocab().len(), expected.len());
    for (rank, (a, b)) in ours
        .vocab()
        .tokens()
        .iter()
        .zip(expected.tokens())
        .enumerate()
    {
        assert_eq!(
            a,
            b,
            "rank {rank} differs: ours {:?} upstream {:?}",
            String::from_utf8_lossy(a),
            String::from_utf8_lossy(b)
        );
    }
    assert_eq!(ours.config(), fixture_tokenizer().config());
}

#[test]
fn encodings_are_reproduced() {
    let tok = fixture_tokenizer();
    let cases = lines("encodings.jsonl");
    assert!(cases.len() > 10);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        assert_eq!(tok.encode(text), ids, "{text:?}");
        assert_eq!(tok.decode(&ids).unwrap(), text);
    }
}

#[test]
fn conversations_are_reproduced() {
    let tok = fixture_tokenizer();
    for case in lines("conversations.jsonl") {
        let conv: Conversation = serde_json::from_value(case["conversation"].clone()).unwrap();
        let ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        if case.get("for_completion").is_some() {
            assert_eq!(tok.render_for_completion(&conv, 2048).unwrap(), ids);
            continue;
        }
        let max_tokens = case["max_tokens"].as_u64().unwrap() as usize;
        let mask: Vec<u8> = serde_json::from_value(case["mask"].clone()).unwrap();
        let (got_ids, got_mask) = tok.render_conversation(&conv, max_tokens).unwrap();
        assert_eq!(got_ids, ids, "{conv:?}");
        assert_eq!(got_mask, mask, "{conv:?}");
    }
}

#[test]
fn pickle_import_gives_the_same_encoder() {
    let from_pkl = import_pickle(&fixture("tokenizer.pkl")).unwrap();
    let reference = fixture_tokenizer();
    assert_eq!(from_pkl.config(), reference.config());
    assert_eq!(from_pkl.vocab(), reference.vocab());
    for case in lines("encodings.jsonl") {
        let text = case["text"].as_str().unwrap();
        assert_eq!(from_pkl.encode(text), reference.encode(text));
    }
}

#[test]
fn save_and_load_round_trip() {
    let tok = fixture_tokenizer();
    let dir = tempfile::tempdir().unwrap();
    tok.save(dir.path()).unwrap();
    let back = Tokenizer::load(dir.path()).unwrap();
    assert_eq!(back.config(), tok.config());
    assert_eq!(back.vocab(), tok.vocab());
    assert_eq!(back.token_bytes(), tok.token_bytes());
    assert_eq!(back.token_bytes()[tok.bos_token_id() as usize], 0);
    assert_eq!(back.token_bytes()[b'a' as usize], 1);
}
