//! The model's shape and architecture switches (upstream `GPTConfig` in `nanochat/gpt.py`), and
//! the depth dial of `scripts/base_train.py` (`build_model_meta`).
//!
//! The first seven fields carry upstream's names and defaults, so an upstream `meta_*.json`'s
//! `model_config` deserialises unchanged. The remaining fields switch the architecture features
//! upstream added after its first release; [`ModelConfig::v0`] turns them all off, giving the
//! original October 2025 model (RoPE base 10000, no value embeddings, smear, backout, per-layer
//! lambdas or sliding windows, v0 initialisation).

use serde::{Deserialize, Serialize};

use crate::validation::{
    Interval, Rule, VResult, Validate, ValidationError, check_non_negative, check_positive,
    check_positive_f, check_range,
};

const ENTITY: &str = "ModelConfig";

/// Channels of the residual stream read by the value-embedding gate (upstream `ve_gate_channels`).
pub const VE_GATE_CHANNELS: usize = 12;
/// Channels of the token embedding read by the smear gate (upstream `Linear(24, 1)`).
pub const SMEAR_GATE_CHANNELS: usize = 24;

/// Weight initialisation scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum InitScheme {
    /// Upstream HEAD `init_weights`: wte N(0, 0.8), lm_head N(0, 0.001), uniform block matrices,
    /// zero output projections, scheduled per-layer lambdas.
    #[default]
    Head,
    /// Upstream v0: every Linear N(0, 1/sqrt(fan_in)·min(1, sqrt(fan_out/fan_in))), wte N(0, 1),
    /// zero lm_head and output projections.
    V0,
}

/// Per-layer attention window, upstream's `(left, right)` pair: a token attends to itself and
/// the `left` tokens before it; `right` is always 0 (causal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSize {
    /// Tokens before the current one that can be attended to.
    pub left: usize,
    /// Tokens after the current one (always 0: causal).
    pub right: usize,
}

/// The GPT configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Context length the model is built for (the long window; RoPE tables cover 10× this).
    pub sequence_len: usize,
    /// Tokenizer vocabulary size (embeddings are padded up to `vocab_pad_multiple`).
    pub vocab_size: usize,
    /// Number of transformer blocks (the depth).
    pub n_layer: usize,
    /// Number of query heads.
    pub n_head: usize,
    /// Number of key/value heads (GQA when fewer than `n_head`, MQA at 1).
    pub n_kv_head: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    /// Sliding-window pattern tiled across layers: `L` = full context, `S` = a quarter of it
    /// (rounded up to a multiple of 128). The last layer is always `L`.
    pub window_pattern: String,
    /// Rotary embedding base θ (HEAD 100000, v0 10000).
    pub rope_base: f64,
    /// Value embeddings with their gate on alternating layers (the last layer always).
    pub value_embeds: bool,
    /// Smear: mix the previous token's embedding into the current one through a gate.
    pub smear: bool,
    /// Backout: subtract a scaled copy of the middle layer's residual before the final norm.
    pub backout: bool,
    /// Learnable per-layer `resid_lambdas` and `x0_lambdas`.
    pub layer_lambdas: bool,
    /// Scale applied to q and k after QK-norm (HEAD 1.2, v0 1.0).
    pub qk_scale: f64,
    /// Logit soft cap `c·tanh(logits/c)`; 0 disables it.
    pub logit_softcap: f64,
    /// Embedding and lm_head rows are padded to a multiple of this (HEAD 64, v0 1).
    pub vocab_pad_multiple: usize,
    /// Weight initialisation.
    pub init: InitScheme,
    /// Dropout on the attention and MLP outputs during training (nanochat uses 0).
    pub dropout: f64,
}

impl Default for ModelConfig {
    /// Upstream `GPTConfig()` defaults (a d12-shaped model) with every HEAD feature on.
    fn default() -> Self {
        Self {
            sequence_len: 2048,
            vocab_size: 32768,
            n_layer: 12,
            n_head: 6,
            n_kv_head: 6,
            n_embd: 768,
            window_pattern: "SSSL".to_string(),
            rope_base: 100_000.0,
            value_embeds: true,
            smear: true,
            backout: true,
            layer_lambdas: true,
            qk_scale: 1.2,
            logit_softcap: 15.0,
            vocab_pad_multiple: 64,
            init: InitScheme::Head,
            dropout: 0.0,
        }
    }
}

/// Which of nanochat's architectures a model is built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// Upstream HEAD: value embeddings, smear, backout, per-layer lambdas, sliding windows,
    /// q/k scale 1.2, RoPE θ 100 000, a padded vocabulary.
    #[default]
    Current,
    /// Upstream's original architecture (v0, October 2025), the one transformers'
    /// `NanoChatForCausalLM` implements: [`ModelConfig::with_v0_features`], full attention in
    /// every layer.
    V0,
}

impl Architecture {
    /// Its name in flags and files (`current`, `v0`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Current => "current",
            Self::V0 => "v0",
        }
    }
}

impl std::str::FromStr for Architecture {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "current" => Ok(Self::Current),
            "v0" => Ok(Self::V0),
            _ => Err(ValidationError::new(
                "Architecture",
                "arch",
                s,
                Rule::OneOf {
                    allowed: &["current", "v0"],
                },
            )),
        }
    }
}

/// The depth dial (upstream `base_train.py` `build_model_meta`): one number sets the shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepthDial {
    /// Number of layers.
    pub depth: usize,
    /// `model_dim = depth · aspect_ratio`, rounded up to a multiple of `head_dim`.
    pub aspect_ratio: usize,
    /// Target head dimension.
    pub head_dim: usize,
    /// Context length.
    pub max_seq_len: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Window pattern (`L` whatever it says for [`Architecture::V0`]).
    pub window_pattern: String,
    /// Which architecture.
    #[serde(default)]
    pub arch: Architecture,
}

impl DepthDial {
    /// Upstream's defaults for a given depth: aspect ratio 64, head dim 128, sequence 2048,
    /// vocab 32768, window pattern `SSSL`.
    pub fn new(depth: usize) -> Self {
        Self {
            depth,
            aspect_ratio: 64,
            head_dim: 128,
            max_seq_len: 2048,
            vocab_size: 32768,
            window_pattern: "SSSL".to_string(),
            arch: Architecture::Current,
        }
    }

    /// The model configuration for this dial setting.
    pub fn build(&self) -> Result<ModelConfig, ValidationError> {
        check_positive("DepthDial", "depth", self.depth as u64)?;
        check_positive("DepthDial", "aspect_ratio", self.aspect_ratio as u64)?;
        check_positive("DepthDial", "head_dim", self.head_dim as u64)?;
        let base_dim = self.depth * self.aspect_ratio;
        let model_dim = base_dim.div_ceil(self.head_dim) * self.head_dim;
        let n_head = model_dim / self.head_dim;
        let cfg = ModelConfig {
            sequence_len: self.max_seq_len,
            vocab_size: self.vocab_size,
            n_layer: self.depth,
            n_head,
            n_kv_head: n_head,
            n_embd: model_dim,
            window_pattern: self.window_pattern.clone(),
            ..ModelConfig::default()
        };
        let cfg = match self.arch {
            Architecture::Current => cfg,
            Architecture::V0 => cfg.with_v0_features(),
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

impl ModelConfig {
    /// Upstream's depth dial with its defaults (see [`DepthDial::new`]): d12 → 768 wide, 6
    /// heads; d20 → 1280/10; d24 → 1536/12; d26 → 1664/13.
    pub fn from_depth(depth: usize) -> Result<Self, ValidationError> {
        DepthDial::new(depth).build()
    }

    /// The original release (upstream v0, 3a5e0bc): `model_dim = 64·depth`,
    /// `heads = ceil(model_dim/128)`, sequence 2048, vocab 65536, full attention everywhere,
    /// RoPE base 10000, no value embeddings, smear, backout or lambdas, q/k scale 1, v0 init.
    pub fn v0(depth: usize) -> Result<Self, ValidationError> {
        check_positive("ModelConfig", "n_layer", depth as u64)?;
        let n_embd = depth * 64;
        let n_head = n_embd.div_ceil(128).max(1);
        let cfg = Self {
            sequence_len: 2048,
            vocab_size: 65536,
            n_layer: depth,
            n_head,
            n_kv_head: n_head,
            n_embd,
            ..Self::default()
        }
        .with_v0_features();
        cfg.validate()?;
        Ok(cfg)
    }

    /// The same shape with every post-v0 feature switched off.
    pub fn with_v0_features(mut self) -> Self {
        self.window_pattern = "L".to_string();
        self.rope_base = 10_000.0;
        self.value_embeds = false;
        self.smear = false;
        self.backout = false;
        self.layer_lambdas = false;
        self.qk_scale = 1.0;
        self.logit_softcap = 15.0;
        self.vocab_pad_multiple = 1;
        self.init = InitScheme::V0;
        self
    }

    /// The data model's `block_size`: the longest sequence the model attends over
    /// (`sequence_len`).
    pub fn block_size(&self) -> usize {
        self.sequence_len
    }

    /// `n_embd / n_head`.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head.max(1)
    }

    /// Width of the key/value projections, `n_kv_head · head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_head * self.head_dim()
    }

    /// Rows of the embedding and lm_head matrices: `vocab_size` rounded up to
    /// `vocab_pad_multiple`.
    pub fn padded_vocab_size(&self) -> usize {
        let m = self.vocab_pad_multiple.max(1);
        self.vocab_size.div_ceil(m) * m
    }

    /// Whether layer `i` has a value embedding (alternating, the last layer always; upstream
    /// `has_ve`). Always false when value embeddings are off.
    pub fn has_value_embed(&self, layer: usize) -> bool {
        self.value_embeds && layer % 2 == (self.n_layer.saturating_sub(1)) % 2
    }

    /// The long window: the full sequence length.
    pub fn long_window(&self) -> usize {
        self.sequence_len
    }

    /// The short window: a quarter of the sequence, rounded up to a multiple of 128 (upstream
    /// `-(-long_window // 4 // 128) * 128`; 512 at T = 2048).
    pub fn short_window(&self) -> usize {
        self.sequence_len.div_ceil(4).div_ceil(128) * 128
    }

    /// Per-layer windows: the pattern tiled across layers, the last layer forced to `L`
    /// (upstream `_compute_window_sizes`). Call on a validated config.
    pub fn window_sizes(&self) -> Vec<WindowSize> {
        let pattern: Vec<char> = self.window_pattern.to_ascii_uppercase().chars().collect();
        let long = WindowSize {
            left: self.long_window(),
            right: 0,
        };
        let short = WindowSize {
            left: self.short_window(),
            right: 0,
        };
        let mut sizes: Vec<WindowSize> = (0..self.n_layer)
            .map(|i| match pattern.get(i % pattern.len().max(1)) {
                Some('S') => short,
                _ => long,
            })
            .collect();
        if let Some(last) = sizes.last_mut() {
            *last = long;
        }
        sizes
    }

    /// The layer whose output backout subtracts (`n_layer // 2`).
    pub fn backout_layer(&self) -> usize {
        self.n_layer / 2
    }

    /// A short tag like upstream's checkpoint directory names: `d{n_layer}`.
    pub fn model_tag(&self) -> String {
        format!("d{}", self.n_layer)
    }
}

impl Validate for ModelConfig {
    fn validate(&self) -> VResult {
        for (field, v) in [
            ("sequence_len", self.sequence_len),
            ("vocab_size", self.vocab_size),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_kv_head", self.n_kv_head),
            ("n_embd", self.n_embd),
            ("vocab_pad_multiple", self.vocab_pad_multiple),
        ] {
            check_positive(ENTITY, field, v as u64)?;
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(ValidationError::new(
                ENTITY,
                "n_embd",
                self.n_embd,
                Rule::DivisibleBy {
                    other: "n_head",
                    divisor: self.n_head as u64,
                },
            ));
        }
        crate::validation::check_at_most(
            ENTITY,
            "n_kv_head",
            self.n_kv_head as u64,
            "n_head",
            self.n_head as u64,
        )?;
        if !self.n_head.is_multiple_of(self.n_kv_head) {
            return Err(ValidationError::new(
                ENTITY,
                "n_head",
                self.n_head,
                Rule::DivisibleBy {
                    other: "n_kv_head",
                    divisor: self.n_kv_head as u64,
                },
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(ValidationError::new(
                ENTITY,
                "n_embd",
                self.n_embd,
                Rule::Pattern {
                    expected: "such that n_embd / n_head is even (rotary embeddings rotate pairs)",
                },
            ));
        }
        let pattern = &self.window_pattern;
        if pattern.is_empty() || !pattern.chars().all(|c| matches!(c, 'S' | 'L' | 's' | 'l')) {
            return Err(ValidationError::new(
                ENTITY,
                "window_pattern",
                format!("{pattern:?}"),
                Rule::Pattern {
                    expected: "a non-empty string of S (short) and L (long)",
                },
            ));
        }
        if self.value_embeds && self.n_embd < VE_GATE_CHANNELS {
            return Err(ValidationError::new(
                ENTITY,
                "n_embd",
                self.n_embd,
                Rule::AtLeast {
                    limit_name: "the value-embedding gate's input channels".into(),
                    limit: VE_GATE_CHANNELS.to_string(),
                },
            ));
        }
        if self.smear && self.n_embd < SMEAR_GATE_CHANNELS {
            return Err(ValidationError::new(
                ENTITY,
                "n_embd",
                self.n_embd,
                Rule::AtLeast {
                    limit_name: "the smear gate's input channels".into(),
                    limit: SMEAR_GATE_CHANNELS.to_string(),
                },
            ));
        }
        check_positive_f(ENTITY, "rope_base", self.rope_base)?;
        check_positive_f(ENTITY, "qk_scale", self.qk_scale)?;
        check_non_negative(ENTITY, "logit_softcap", self.logit_softcap)?;
        check_range(ENTITY, "dropout", self.dropout, Interval::closed(0.0, 1.0))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_dial_matches_upstream_table() {
        // reference/nanochat.md §4: d12 768/6, d20 1280/10, d24 1536/12, d26 1664/13, d32 2048/16.
        for (depth, width, heads) in [
            (12, 768, 6),
            (20, 1280, 10),
            (24, 1536, 12),
            (26, 1664, 13),
            (32, 2048, 16),
        ] {
            let c = ModelConfig::from_depth(depth).unwrap();
            assert_eq!(
                (c.n_embd, c.n_head, c.n_kv_head),
                (width, heads, heads),
                "d{depth}"
            );
            assert_eq!(c.head_dim(), 128);
            assert_eq!((c.sequence_len, c.vocab_size), (2048, 32768));
            assert_eq!(c.window_pattern, "SSSL");
        }
        // Width rounds up to a multiple of the head dim: d3 → 192 → 256.
        assert_eq!(ModelConfig::from_depth(3).unwrap().n_embd, 256);
    }

    #[test]
    fn v0_preset_is_the_original_release() {
        let c = ModelConfig::v0(20).unwrap();
        assert_eq!((c.n_embd, c.n_head, c.vocab_size), (1280, 10, 65536));
        assert_eq!(c.rope_base, 10_000.0);
        assert!(!c.value_embeds && !c.smear && !c.backout && !c.layer_lambdas);
        assert_eq!(c.init, InitScheme::V0);
        assert!(c.window_sizes().iter().all(|w| w.left == 2048));
    }

    #[test]
    fn window_sizes_match_fixture() {
        // The model fixture: sequence 512, 4 layers, SSSL → [[128,0],[128,0],[128,0],[512,0]].
        let c = ModelConfig {
            sequence_len: 512,
            vocab_size: 500,
            n_layer: 4,
            n_head: 4,
            n_kv_head: 2,
            n_embd: 128,
            ..ModelConfig::default()
        };
        let w: Vec<usize> = c.window_sizes().iter().map(|w| w.left).collect();
        assert_eq!(w, vec![128, 128, 128, 512]);
        assert_eq!(c.padded_vocab_size(), 512);
        // T = 2048 → 512; T = 1000 → 256 (ceil(250 / 128) · 128).
        assert_eq!(ModelConfig::default().short_window(), 512);
        assert_eq!(
            ModelConfig {
                sequence_len: 1000,
                ..c.clone()
            }
            .short_window(),
            256
        );
        // The last layer is always long, even with an all-S pattern.
        let s = ModelConfig {
            window_pattern: "s".into(),
            n_layer: 3,
            ..c
        };
        let w: Vec<usize> = s.window_sizes().iter().map(|w| w.left).collect();
        assert_eq!(w, vec![128, 128, 512]);
    }

    #[test]
    fn value_embeds_alternate_and_include_last_layer() {
        let c = ModelConfig {
            n_layer: 5,
            ..ModelConfig::default()
        };
        let ve: Vec<bool> = (0..5).map(|i| c.has_value_embed(i)).collect();
        assert_eq!(ve, vec![true, false, true, false, true]);
        let c = ModelConfig {
            n_layer: 4,
            ..ModelConfig::default()
        };
        let ve: Vec<bool> = (0..4).map(|i| c.has_value_embed(i)).collect();
        assert_eq!(ve, vec![false, true, false, true]);
    }

    #[test]
    fn upstream_model_config_json_loads() {
        let json = r#"{"sequence_len": 512, "vocab_size": 500, "n_layer": 4, "n_head": 4,
                       "n_kv_head": 2, "n_embd": 128, "window_pattern": "SSSL"}"#;
        let c: ModelConfig = serde_json::from_str(json).unwrap();
        c.validate().unwrap();
        assert_eq!(c.rope_base, 100_000.0);
        assert!(c.value_embeds);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = serde_json::from_str::<ModelConfig>(r#"{"n_layers": 4}"#).unwrap_err();
        assert!(err.to_string().contains("n_layers"), "{err}");
    }
}
