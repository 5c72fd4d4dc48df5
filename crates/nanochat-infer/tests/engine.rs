//! Engine behaviour on a small random model: cached greedy decoding equals greedy decoding by
//! full forwards, seeds reproduce, several samples share one prefill, streamed text is exactly
//! the decoded tokens, the calculator's result is injected as forced tokens, and the calculator
//! survives fuzzing while refusing anything outside its grammar.

use std::sync::Arc;

use burn::backend::Flex;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use nanochat_core::tokenizer_config::Vocabulary;
use nanochat_core::{GenerationParams, ModelConfig};
use nanochat_infer::sampling::argmax;
use nanochat_infer::{Chat, Engine, use_calculator};
use nanochat_model::Gpt;
use nanochat_tokenizer::{SPLIT_PATTERN, Tokenizer};
use proptest::prelude::*;

type B = Flex;

fn engine() -> Engine<B> {
    let tok = Arc::new(
        Tokenizer::from_vocab(Vocabulary::from_merges(&[]).unwrap(), SPLIT_PATTERN).unwrap(),
    );
    let config = ModelConfig {
        sequence_len: 128,
        vocab_size: tok.vocab_size(),
        n_layer: 3,
        n_head: 2,
        n_kv_head: 1,
        n_embd: 64,
        window_pattern: "SL".into(),
        ..ModelConfig::from_depth(2).unwrap()
    };
    B::seed(&Default::default(), 3);
    let model = Gpt::<B>::init(&config, &Default::default()).unwrap();
    Engine::new(model, tok).unwrap()
}

#[test]
fn cached_greedy_equals_full_forward_greedy() {
    let e = engine();
    let tok = e.tokenizer().clone();
    let prompt = tok.encode_with("The capital of France is", Some(tok.bos_token_id()), None);
    let out = e
        .generate_batch(&prompt, &GenerationParams::greedy(24))
        .unwrap()
        .remove(0);
    let end = tok.encode_special("<|assistant_end|>").unwrap();
    let mut seq = prompt.clone();
    let mut naive = Vec::new();
    for _ in 0..24 {
        let ids: Vec<i64> = seq.iter().map(|&t| t as i64).collect();
        let n = ids.len();
        let x = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, n]), &Default::default());
        let logits = e.model().forward(x, None);
        let v = logits.dims()[2];
        let last: Vec<f32> = logits
            .narrow(1, n - 1, 1)
            .reshape([v])
            .into_data()
            .to_vec()
            .unwrap();
        let t = argmax(&last);
        if t == end || t == tok.bos_token_id() {
            break;
        }
        naive.push(t);
        seq.push(t);
    }
    assert!(!naive.is_empty());
    assert_eq!(out.tokens, naive);
}

#[test]
fn seeds_reproduce_and_samples_differ() {
    let e = engine();
    let prompt = vec![e.tokenizer().bos_token_id(), 72, 105];
    let p = GenerationParams {
        temperature: 1.0,
        top_k: None,
        max_tokens: 16,
        seed: Some(11),
        num_samples: 3,
        ..GenerationParams::default()
    };
    let a = e.generate_batch(&prompt, &p).unwrap();
    let b = e.generate_batch(&prompt, &p).unwrap();
    assert_eq!(a, b, "same seed, same samples");
    assert_eq!(a.len(), 3);
    assert!(
        a[0].tokens != a[1].tokens || a[1].tokens != a[2].tokens,
        "rows sample independently"
    );
    let c = e
        .generate_batch(
            &prompt,
            &GenerationParams {
                seed: Some(12),
                ..p
            },
        )
        .unwrap();
    assert_ne!(a, c);
}

#[test]
fn streamed_text_is_the_decoded_reply() {
    let e = engine();
    let mut chat = Chat::new(&e);
    let mut streamed = String::new();
    let p = GenerationParams {
        temperature: 1.0,
        max_tokens: 40,
        seed: Some(5),
        ..GenerationParams::default()
    };
    let row = chat
        .send("héllo wörld ✓", &p, |s| streamed.push_str(s))
        .unwrap();
    assert_eq!(streamed, e.tokenizer().decode(&row.tokens).unwrap());
    assert_eq!(streamed, row.text);
    // The conversation holds the turn and ends with <|assistant_end|>.
    let end = e.tokenizer().encode_special("<|assistant_end|>").unwrap();
    assert_eq!(*chat.tokens().last().unwrap(), end);
    chat.clear();
    assert_eq!(chat.tokens(), &[e.tokenizer().bos_token_id()]);
}

#[test]
fn calculator_result_is_forced() {
    let e = engine();
    let tok = e.tokenizer();
    let forced = e.tool_response(&tok.encode("12*3 + 1")).unwrap();
    let s = |n: &str| tok.encode_special(n).unwrap();
    let mut want = vec![s("<|output_start|>")];
    want.extend(tok.encode("37"));
    want.push(s("<|output_end|>"));
    assert_eq!(forced, want);
    assert!(
        e.tool_response(&tok.encode("__import__('os')"))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn prompts_longer_than_the_context_are_refused() {
    let e = engine();
    let prompt = vec![65u32; 120];
    let err = e
        .generate_batch(&prompt, &GenerationParams::greedy(20))
        .unwrap_err();
    assert!(err.to_string().contains("max_tokens"), "{err}");
}

proptest! {
    #[test]
    fn calculator_never_panics(s in ".{0,40}") {
        let _ = use_calculator(&s);
    }

    #[test]
    fn calculator_refuses_foreign_characters(a in "[0-9+*/() ]{0,10}", bad in "[;\\[\\]{}<>=!@#$%^&|~`\\\\]", b in "[0-9+*/() ]{0,10}") {
        prop_assert_eq!(use_calculator(&format!("{a}{bad}{b}")), None);
    }

    #[test]
    fn integer_arithmetic_is_exact(x in -10_000i64..10_000, y in -10_000i64..10_000, z in 1i64..100) {
        prop_assert_eq!(use_calculator(&format!("{x} + {y} * {z}")), Some((x + y * z).to_string()));
        prop_assert_eq!(use_calculator(&format!("({x} - {y}) * {z}")), Some(((x - y) * z).to_string()));
    }
}
