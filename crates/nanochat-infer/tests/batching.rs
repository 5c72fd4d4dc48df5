//! Continuous batching through the HTTP server: requests decoded together give exactly what
//! each gives alone (greedy, and sampled with a seed), `n` choices stream with their index,
//! and the batch really was shared (`/stats`: mean rows per decode step).
//!
//! The model has noisy weights (a random init's output projections are zero, so attention
//! would not matter) and sliding windows ("SL": the short window is 128 of 256 positions),
//! and the prompts have different lengths, so the rows decode at different positions past
//! the window: the model's ragged path.

mod common;

use std::collections::BTreeMap;

use common::{get_json, post, sse_data, start_with};
use serde_json::{Value, json};

/// Thirty-two raw prompts of 9 to 205 bytes (one token per byte in the test tokenizer; with
/// 24 new tokens they stay within the 256 positions).
fn prompts() -> Vec<String> {
    (0..32)
        .map(|i| {
            format!(
                "Story {i}: {}{}",
                "abcdefghij ".repeat(i % 16),
                "x".repeat(i)
            )
        })
        .collect()
}

fn complete(url: &str, prompt: &str, extra: &Value) -> Value {
    let mut body = json!({"model": "m", "prompt": prompt, "max_tokens": 24});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, text) = post(&format!("{url}/v1/completions"), &body.to_string());
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    v["choices"].clone()
}

/// Every prompt at once, from one thread each.
fn all_at_once(url: &str, prompts: &[String], extra: &Value) -> Vec<Value> {
    std::thread::scope(|s| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| s.spawn(move || complete(url, p, extra)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn batch_counters(url: &str) -> (f64, f64) {
    let s = get_json(&format!("{url}/stats"));
    let steps = s["decode_steps_total"].as_f64().unwrap();
    (steps, s["decode_batch_rows_avg"].as_f64().unwrap() * steps)
}

#[test]
fn answers_are_the_same_alone_and_batched_with_31_others() {
    let (url, _) = start_with(Some(0.2), "SL");
    let prompts = prompts();
    for extra in [
        json!({"temperature": 0}),
        json!({"temperature": 1.0, "seed": 7}),
    ] {
        let alone: Vec<Value> = prompts.iter().map(|p| complete(&url, p, &extra)).collect();
        let texts: std::collections::HashSet<String> = alone
            .iter()
            .map(|c| c[0]["text"].as_str().unwrap().to_string())
            .collect();
        assert!(
            texts.len() > 8,
            "the prompts should lead to different answers"
        );
        let (steps0, rows0) = batch_counters(&url);
        let together = all_at_once(&url, &prompts, &extra);
        let (steps1, rows1) = batch_counters(&url);
        for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
            assert_eq!(a, t, "prompt {i} ({extra}): alone vs batched");
        }
        let mean = (rows1 - rows0) / (steps1 - steps0);
        assert!(
            mean > 4.0,
            "the requests were not batched: {mean:.2} rows per step"
        );
        // Where the worker's time went: both kinds of forward were counted.
        let s = get_json(&format!("{url}/stats"));
        for k in ["prefill_seconds_total", "decode_seconds_total"] {
            assert!(s[k].as_f64().unwrap() > 0.0, "{k}: {}", s[k]);
        }
    }
}

#[test]
fn n_choices_stream_with_their_index_and_match_the_whole_answer() {
    let (url, _) = start_with(Some(0.2), "SL");
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "Hi there"}],
                      "n": 3, "max_tokens": 16, "temperature": 1.0, "seed": 3});
    let (status, whole) = post(&format!("{url}/v1/chat/completions"), &body.to_string());
    assert_eq!(status, 200, "{whole}");
    let whole: Value = serde_json::from_str(&whole).unwrap();
    let mut stream_body = body.clone();
    stream_body["stream"] = json!(true);
    stream_body["stream_options"] = json!({"include_usage": true});
    let (status, streamed) = post(
        &format!("{url}/v1/chat/completions"),
        &stream_body.to_string(),
    );
    assert_eq!(status, 200, "{streamed}");
    let frames = sse_data(&streamed);
    assert_eq!(frames.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = frames[..frames.len() - 1]
        .iter()
        .map(|f| serde_json::from_str(f).unwrap())
        .collect();
    let (mut texts, mut roles, mut finishes) = (BTreeMap::new(), 0, BTreeMap::new());
    for c in &chunks[..chunks.len() - 1] {
        let choice = &c["choices"][0];
        let i = choice["index"].as_u64().unwrap();
        roles += usize::from(choice["delta"]["role"] == "assistant");
        let text: &mut String = texts.entry(i).or_default();
        text.push_str(choice["delta"]["content"].as_str().unwrap_or(""));
        if let Some(f) = choice["finish_reason"].as_str() {
            finishes.insert(i, f.to_string());
        }
    }
    assert_eq!(roles, 3, "one role chunk per choice");
    for (i, c) in whole["choices"].as_array().unwrap().iter().enumerate() {
        let i = i as u64;
        assert_eq!(
            texts[&i],
            c["message"]["content"].as_str().unwrap(),
            "choice {i}"
        );
        assert_eq!(
            finishes[&i],
            c["finish_reason"].as_str().unwrap(),
            "choice {i}"
        );
    }
    let texts: std::collections::HashSet<&String> = texts.values().collect();
    assert!(texts.len() > 1, "three seeds, one text: {texts:?}");
    let usage = &chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"], whole["usage"]);
}
