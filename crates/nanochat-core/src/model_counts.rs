//! Parameter counts and FLOP/memory estimates of a model configuration, with upstream's
//! formulas (`GPT.num_scaling_params`, `estimate_flops`, `estimate_decode_flops`,
//! `estimate_prefill_flops`, `kv_bytes_per_token`, `kv_read_bytes` in `nanochat/gpt.py`).
//! Pure arithmetic on the config: `nanochat-model` checks them against a real model's tensors.

use serde::{Deserialize, Serialize};

use crate::model_config::{ModelConfig, SMEAR_GATE_CHANNELS, VE_GATE_CHANNELS};

/// Parameter counts by group (upstream `num_scaling_params`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamCounts {
    /// Token embedding (padded vocabulary × width).
    pub wte: u64,
    /// Value embeddings.
    pub value_embeds: u64,
    /// Output projection.
    pub lm_head: u64,
    /// Everything inside the blocks (attention, MLP, value-embedding gates).
    pub transformer_matrices: u64,
    /// Per-layer lambdas, smear gate and lambda, backout lambda.
    pub scalars: u64,
    /// All of the above.
    pub total: u64,
}

impl ParamCounts {
    /// Upstream's "scaling parameters": transformer matrices + lm_head.
    pub fn scaling(&self) -> u64 {
        self.transformer_matrices + self.lm_head
    }
}

impl ModelConfig {
    /// Parameters of one block.
    fn block_params(&self, layer: usize) -> u64 {
        let c = self.n_embd as u64;
        let kv = self.kv_dim() as u64;
        let attn = c * c + 2 * c * kv + c * c;
        let ve_gate = if self.has_value_embed(layer) {
            (VE_GATE_CHANNELS * self.n_kv_head) as u64
        } else {
            0
        };
        let mlp = 8 * c * c;
        attn + ve_gate + mlp
    }

    /// Parameter counts by group.
    pub fn param_counts(&self) -> ParamCounts {
        let v = self.padded_vocab_size() as u64;
        let c = self.n_embd as u64;
        let wte = v * c;
        let lm_head = v * c;
        let n_ve = (0..self.n_layer)
            .filter(|&i| self.has_value_embed(i))
            .count() as u64;
        let value_embeds = n_ve * v * self.kv_dim() as u64;
        let transformer_matrices = (0..self.n_layer).map(|i| self.block_params(i)).sum();
        let mut scalars = 0;
        if self.layer_lambdas {
            scalars += 2 * self.n_layer as u64;
        }
        if self.smear {
            scalars += SMEAR_GATE_CHANNELS as u64 + 1;
        }
        if self.backout {
            scalars += 1;
        }
        let total = wte + value_embeds + lm_head + transformer_matrices + scalars;
        ParamCounts {
            wte,
            value_embeds,
            lm_head,
            transformer_matrices,
            scalars,
            total,
        }
    }

    /// Parameters that multiply the token stream (every Linear weight: blocks, lm_head, smear
    /// gate; embeddings and scalars excluded). Upstream `num_matmul_params`.
    pub fn num_matmul_params(&self) -> u64 {
        let counts = self.param_counts();
        let smear = if self.smear {
            SMEAR_GATE_CHANNELS as u64
        } else {
            0
        };
        counts.transformer_matrices + counts.lm_head + smear
    }

    fn attn_width(&self) -> u64 {
        (self.n_head * self.head_dim()) as u64
    }

    /// Training FLOPs per token (forward + backward): `6 · matmul params + Σ_layers 12 · h · d
    /// · min(window, T)`.
    pub fn estimate_flops(&self) -> u64 {
        let t = self.sequence_len as u64;
        let attn: u64 = self
            .window_sizes()
            .iter()
            .map(|w| 12 * self.attn_width() * (w.left as u64).min(t))
            .sum();
        6 * self.num_matmul_params() + attn
    }

    /// Forward FLOPs to decode one token with `context_len` tokens of context.
    pub fn estimate_decode_flops(&self, context_len: u64) -> u64 {
        let attn: u64 = self
            .window_sizes()
            .iter()
            .map(|w| 4 * self.attn_width() * context_len.min(w.left as u64))
            .sum();
        2 * self.num_matmul_params() + attn
    }

    /// Forward FLOPs to prefill a prompt of `num_tokens` (causal: token t sees min(t, window)).
    pub fn estimate_prefill_flops(&self, num_tokens: u64) -> u64 {
        let attn: u64 = self
            .window_sizes()
            .iter()
            .map(|w| {
                let w = (w.left as u64).min(num_tokens);
                let attended = w * (w + 1) / 2 + (num_tokens - w) * w;
                4 * self.attn_width() * attended
            })
            .sum();
        2 * self.num_matmul_params() * num_tokens + attn
    }

    /// Bytes of KV cache stored per token per row, all layers, at `dtype_bytes` per element.
    pub fn kv_bytes_per_token(&self, dtype_bytes: u64) -> u64 {
        (self.n_layer * 2 * self.n_kv_head * self.head_dim()) as u64 * dtype_bytes
    }

    /// Bytes of KV cache read by one decode step at `context_len`, per row (sliding-window
    /// layers read only their window).
    pub fn kv_read_bytes(&self, context_len: u64, dtype_bytes: u64) -> u64 {
        let per_token = (2 * self.n_kv_head * self.head_dim()) as u64 * dtype_bytes;
        self.window_sizes()
            .iter()
            .map(|w| per_token * context_len.min(w.left as u64))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> ModelConfig {
        ModelConfig {
            sequence_len: 512,
            vocab_size: 500,
            n_layer: 4,
            n_head: 4,
            n_kv_head: 2,
            n_embd: 128,
            ..ModelConfig::default()
        }
    }

    #[test]
    fn counts_match_the_model_fixture() {
        // ../shared/fixtures/model/gpt_sssl_gqa.json
        let c = fixture().param_counts();
        assert_eq!(
            c,
            ParamCounts {
                wte: 65536,
                value_embeds: 65536,
                lm_head: 65536,
                transformer_matrices: 720944,
                scalars: 34,
                total: 917586
            }
        );
        assert_eq!(fixture().estimate_flops(), 6_095_280);
    }

    #[test]
    fn counts_match_upstream_table() {
        // reference/nanochat.md §4: d12 total 286,261,730 (community-reported); d20 FLOPs/token
        // 2.886e9, d24 4.775e9 (SSSL, T = 2048).
        assert_eq!(
            ModelConfig::from_depth(12).unwrap().param_counts().total,
            286_261_730
        );
        let d20 = ModelConfig::from_depth(20).unwrap().estimate_flops() as f64;
        assert!((d20 / 2.886e9 - 1.0).abs() < 1e-3, "{d20}");
        let d24 = ModelConfig::from_depth(24).unwrap().estimate_flops() as f64;
        assert!((d24 / 4.7752e9 - 1.0).abs() < 1e-4, "{d24}");
        let l24 = ModelConfig {
            window_pattern: "L".into(),
            ..ModelConfig::from_depth(24).unwrap()
        };
        assert!((l24.estimate_flops() as f64 / 5.2848e9 - 1.0).abs() < 1e-4);
    }

    #[test]
    fn v0_d20_matches_the_published_count() {
        // The original release's d20: 560,988,160 parameters, 3.4918e9 FLOPs/token.
        let c = ModelConfig::v0(20).unwrap();
        assert_eq!(c.param_counts().total, 560_988_160);
        assert!((c.estimate_flops() as f64 / 3.4918e9 - 1.0).abs() < 1e-4);
    }

    #[test]
    fn decode_and_prefill_estimates() {
        let c = fixture();
        let mm = c.num_matmul_params();
        // Decode at context 10: every window ≥ 10.
        assert_eq!(c.estimate_decode_flops(10), 2 * mm + 4 * 128 * 10 * 4);
        // Prefill of 1 token equals decode at context 1.
        assert_eq!(c.estimate_prefill_flops(1), c.estimate_decode_flops(1));
        assert_eq!(c.kv_bytes_per_token(4), 4 * 2 * 2 * 32 * 4);
        assert_eq!(c.kv_read_bytes(1000, 2), 2 * 2 * 32 * 2 * (128 * 3 + 512));
    }
}
