//! The inference benchmark (upstream `scripts/infer_bench.py`): prefill throughput and
//! time to first token for one prompt, then decode throughput over a sweep of batch sizes
//! (batch-1 prefill replicated to every row, like the engine), with ms per decode step.
//! Every timing ends with the logits read back to the host, so the GPU work is included.

use nanochat_model::FusedOps;
use std::time::Instant;

use burn::tensor::Tensor;
use nanochat_model::Gpt;
use serde::Serialize;

use crate::engine::{last_logits, to_ids};
use crate::sampling::argmax;

/// One batch size's decode numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecodeRow {
    /// Rows decoded together.
    pub batch_size: usize,
    /// Tokens per second over all rows.
    pub tok_per_sec: f64,
    /// Milliseconds per decode step (one token for every row).
    pub ms_per_step: f64,
}

/// The benchmark's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InferBench {
    /// Prompt length.
    pub prompt_tokens: usize,
    /// Tokens decoded per row.
    pub decode_tokens: usize,
    /// Prefill tokens per second (batch 1).
    pub prefill_tok_per_sec: f64,
    /// Time to first token: the prefill of the prompt and its first sampled token (ms).
    pub ttft_ms: f64,
    /// Per batch size.
    pub decode: Vec<DecodeRow>,
}

/// The greedy next token of every row (the readback ends the timed work).
fn read_last<B: FusedOps>(logits: Tensor<B, 3>) -> Vec<u32> {
    last_logits(logits).iter().map(|row| argmax(row)).collect()
}

/// Runs the benchmark on `model` with a deterministic pseudo-random prompt (one warm-up pass
/// first, not timed).
pub fn bench_inference<B: FusedOps>(
    model: &Gpt<B>,
    prompt_tokens: usize,
    decode_tokens: usize,
    batch_sizes: &[usize],
) -> InferBench {
    let device = model.device();
    let vocab = model.config().vocab_size as u32;
    let prompt: Vec<u32> = (0..prompt_tokens as u32)
        .map(|i| (i * 7919 + 13) % vocab.saturating_sub(16).max(1))
        .collect();
    let prefill = |max_len: usize| {
        let mut cache = model.new_kv_cache(1, max_len);
        let next = read_last(model.forward(to_ids::<B>(&prompt, 1, &device), Some(&mut cache)));
        (cache, next[0])
    };
    let _ = prefill(prompt_tokens + 1); // warm-up (kernel compilation, autotune)
    let t = Instant::now();
    let _ = prefill(prompt_tokens + 1);
    let ttft = t.elapsed().as_secs_f64();
    let mut decode = Vec::new();
    for &b in batch_sizes {
        let (cache, first) = prefill(prompt_tokens);
        let mut cache = cache.replicate(b, prompt_tokens + decode_tokens + 1);
        let mut tokens = vec![first; b];
        // One untimed step per batch size (shapes change → kernels may compile).
        tokens = read_last(model.forward(to_ids::<B>(&tokens, b, &device), Some(&mut cache)));
        let t = Instant::now();
        for _ in 1..decode_tokens {
            tokens = B::run_ops(|| {
                read_last(model.forward(to_ids::<B>(&tokens, b, &device), Some(&mut cache)))
            });
        }
        let secs = t.elapsed().as_secs_f64();
        let steps = decode_tokens.saturating_sub(1).max(1) as f64;
        decode.push(DecodeRow {
            batch_size: b,
            tok_per_sec: steps * b as f64 / secs,
            ms_per_step: 1000.0 * secs / steps,
        });
    }
    InferBench {
        prompt_tokens,
        decode_tokens,
        prefill_tok_per_sec: prompt_tokens as f64 / ttft,
        ttft_ms: 1000.0 * ttft,
        decode,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use nanochat_core::ModelConfig;

    #[test]
    fn reports_every_batch_size() {
        let config = ModelConfig {
            sequence_len: 64,
            vocab_size: 300,
            n_layer: 2,
            n_head: 2,
            n_kv_head: 1,
            n_embd: 64,
            window_pattern: "L".into(),
            ..ModelConfig::from_depth(2).unwrap()
        };
        let model = Gpt::<Flex>::init(&config, &Default::default()).unwrap();
        let r = bench_inference(&model, 16, 4, &[1, 3]);
        assert_eq!(r.decode.len(), 2);
        assert_eq!(r.decode[1].batch_size, 3);
        assert!(r.prefill_tok_per_sec > 0.0 && r.decode.iter().all(|d| d.tok_per_sec > 0.0));
    }
}
