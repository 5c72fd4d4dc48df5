//! The GPT (port of upstream `nanochat/gpt.py`, HEAD 92d63d4), generic over burn's backend.
//!
//! Notable features, as upstream's docstring lists them, each switchable by [`ModelConfig`]
//! so that the `v0` preset is the original release:
//! - rotary embeddings (no positional embeddings), half-split, base 100000 (v0: 10000);
//! - QK-norm, then q and k scaled by 1.2 (v0: 1);
//! - untied token embedding and lm_head; vocabulary padded to a multiple of 64, logits cropped;
//! - ReLU² MLP (4× wide); parameter-free RMSNorm, also right after the token embedding;
//! - no biases; grouped-query attention;
//! - sliding-window attention per layer from `window_pattern` (last layer full);
//! - value embeddings on alternating layers (the last always), gated per kv head;
//! - learnable per-layer `resid_lambdas` / `x0_lambdas` mixing the residual with the input;
//! - smear (previous token's embedding mixed in through a gate) and backout (a scaled copy of
//!   the middle layer's output subtracted before the final norm);
//! - logit soft cap 15 computed in float32; cross-entropy with ignore index −1.
//!
//! Parameter names map 1:1 to upstream's `state_dict` (`transformer.h.3.attn.c_q.weight`,
//! `value_embeds.1.weight`, …); burn's `Linear` stores `[in, out]`, the transpose of
//! PyTorch's `[out, in]`, which the checkpoint code converts.
//!
//! Layout, like candle's model files: the compute options, then the blocks, each with its own
//! `forward` as in upstream ([`Mlp`], [`CausalSelfAttention`], [`Block`]), then [`Gpt`] with its
//! KV cache, [`Gpt::forward`] and [`Gpt::forward_loss`].

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Embedding, Linear};
use burn::tensor::activation::sigmoid;
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Int, Tensor};
use nanochat_core::model_config::{SMEAR_GATE_CHANNELS, VE_GATE_CHANNELS};
use nanochat_core::{ModelConfig, ParamCounts, WindowSize};

use crate::kv_cache::KvCache;
use crate::ops::{self, FusedOps, rms_norm};
use crate::rotary::{rope_tables, rope_tables_at};

/// The dtype of activations and matmuls. Master weights stay float32 either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ComputeDtype {
    /// Float32 everywhere (upstream on CPU; what the parity tests use).
    #[default]
    F32,
    /// Bfloat16 activations and matmuls, weights cast per use (upstream on GPUs with SM ≥ 80).
    BF16,
}

impl ComputeDtype {
    /// The burn dtype.
    pub fn float_dtype(self) -> FloatDType {
        match self {
            ComputeDtype::F32 => FloatDType::F32,
            ComputeDtype::BF16 => FloatDType::BF16,
        }
    }

    /// Upstream's RMSNorm epsilon: the dtype's machine epsilon (`torch.finfo(dtype).eps`).
    pub fn norm_eps(self) -> f64 {
        match self {
            ComputeDtype::F32 => f32::EPSILON as f64,
            ComputeDtype::BF16 => 0.0078125,
        }
    }
}

/// `x @ W` with the float32 master weight cast to `x`'s dtype (upstream's `Linear`).
pub(crate) fn linear<B: FusedOps, const D: usize>(
    l: &Linear<B>,
    x: Tensor<B, D>,
    dtype: ComputeDtype,
) -> Tensor<B, D> {
    match dtype {
        ComputeDtype::F32 => ops::linear(x, l.weight.val()),
        ComputeDtype::BF16 => ops::linear(x, l.weight.val().cast(FloatDType::BF16)),
    }
}
/// `x * s` for a one-element `s` (a per-layer lambda), through a flat view of `x`: broadcast
/// against `[n]` every stride of `s` is 0, which the CPU backend runs as one SIMD scalar
/// multiply; broadcast against `[b, t, c]` it walked element by element (≈ 10× slower).
fn scale<B: Backend>(x: Tensor<B, 3>, s: Tensor<B, 1>) -> Tensor<B, 3> {
    let dims = x.dims();
    (x.reshape([-1]) * s).reshape(dims)
}

/// The ReLU² MLP.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// Up projection (4×).
    pub c_fc: Linear<B>,
    /// Down projection.
    pub c_proj: Linear<B>,
}

impl<B: FusedOps> Mlp<B> {
    /// `c_proj(relu(c_fc(x))²)` (upstream `MLP.forward`).
    fn forward(&self, x: Tensor<B, 3>, dtype: ComputeDtype) -> Tensor<B, 3> {
        let x = linear(&self.c_fc, x, dtype);
        linear(&self.c_proj, ops::relu_squared(x), dtype)
    }
}

/// Multi-head causal self-attention with grouped kv heads and an optional value embedding.
#[derive(Module, Debug)]
pub struct CausalSelfAttention<B: Backend> {
    /// Query projection.
    pub c_q: Linear<B>,
    /// Key projection.
    pub c_k: Linear<B>,
    /// Value projection.
    pub c_v: Linear<B>,
    /// Output projection.
    pub c_proj: Linear<B>,
    /// Value-embedding gate (layers with a value embedding only).
    pub ve_gate: Option<Linear<B>>,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
}

impl<B: Backend> CausalSelfAttention<B> {
    pub(crate) fn new(
        c_q: Linear<B>,
        c_k: Linear<B>,
        c_v: Linear<B>,
        c_proj: Linear<B>,
        ve_gate: Option<Linear<B>>,
        shape: (usize, usize, usize),
    ) -> Self {
        let (n_head, n_kv_head, head_dim) = shape;
        Self {
            c_q,
            c_k,
            c_v,
            c_proj,
            ve_gate,
            n_head,
            n_kv_head,
            head_dim,
        }
    }
}

/// Inputs every layer needs in one forward.
struct LayerCtx<'a, B: Backend> {
    /// Rotary tables: one row per position (`[t, D/2]`), or per row in a ragged step.
    cos: &'a Tensor<B, 2>,
    sin: &'a Tensor<B, 2>,
    qk_scale: f64,
    eps: f64,
    dtype: ComputeDtype,
    dropout: &'a Dropout,
    /// A ragged decode step (one token per row, rows at different lengths): each row's
    /// position.
    ragged: Option<&'a [usize]>,
}

impl<B: FusedOps> CausalSelfAttention<B> {
    /// Attention over `x` (already normalised), appending to layer `cache.1` of `cache.0`
    /// when given (upstream `CausalSelfAttention.forward`).
    fn forward(
        &self,
        x: Tensor<B, 3>,
        ve: Option<Tensor<B, 3>>,
        window: WindowSize,
        ctx: &LayerCtx<'_, B>,
        cache: Option<(&mut KvCache<B>, usize)>,
    ) -> Tensor<B, 3> {
        let [b, t, c] = x.dims();
        let (h, hkv, d) = (self.n_head, self.n_kv_head, self.head_dim);
        // [B, T, heads, D] throughout: the projections' own layout.
        let q = linear(&self.c_q, x.clone(), ctx.dtype).reshape([b, t, h, d]);
        let k = linear(&self.c_k, x.clone(), ctx.dtype).reshape([b, t, hkv, d]);
        let mut v = linear(&self.c_v, x.clone(), ctx.dtype).reshape([b, t, hkv, d]);
        if let (Some(ve), Some(gate)) = (ve, &self.ve_gate) {
            let g = sigmoid(linear(gate, x.narrow(2, 0, VE_GATE_CHANNELS), ctx.dtype)) * 3.0;
            // The full-size operand first: burn-flex's broadcast fast paths want it on the left.
            v = v + ve.reshape([b, t, hkv, d]) * g.unsqueeze_dim::<4>(3);
        }
        // A ragged step rotates row i by table row i: the rows as one sequence's time steps.
        let rotary = |x: Tensor<B, 4>, heads: usize| match ctx.ragged {
            None => ops::rotary_norm(x, ctx.cos, ctx.sin, ctx.eps, ctx.qk_scale),
            Some(_) => ops::rotary_norm(
                x.reshape([1, b, heads, d]),
                ctx.cos,
                ctx.sin,
                ctx.eps,
                ctx.qk_scale,
            )
            .reshape([b, 1, heads, d]),
        };
        let (q, k) = (rotary(q, h), rotary(k, hkv));
        let y = match cache {
            None => ops::attention(q, k, v, window.left),
            Some((cache, layer)) => {
                let (k_all, v_all) = cache.append(layer, k, v);
                if let Some(positions) = ctx.ragged {
                    let y = ops::ragged_attention(q, k_all, v_all, positions, window.left);
                    return linear(&self.c_proj, y.reshape([b, t, c]), ctx.dtype);
                }
                let tk = k_all.dims()[1];
                let (k_all, v_all) = if t == 1 && window.left + 1 < tk {
                    // Decode: only the last `window + 1` keys are visible.
                    let start = tk - (window.left + 1);
                    (
                        k_all.narrow(1, start, tk - start),
                        v_all.narrow(1, start, tk - start),
                    )
                } else {
                    (k_all, v_all)
                };
                ops::attention(q, k_all, v_all, window.left)
            }
        };
        linear(&self.c_proj, y.reshape([b, t, c]), ctx.dtype)
    }
}

/// One pre-norm transformer block.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// Attention.
    pub attn: CausalSelfAttention<B>,
    /// MLP.
    pub mlp: Mlp<B>,
}

impl<B: FusedOps> Block<B> {
    /// `x + attn(norm(x))`, then `x + mlp(norm(x))`, each through dropout (upstream
    /// `Block.forward`).
    fn forward(
        &self,
        x: Tensor<B, 3>,
        ve: Option<Tensor<B, 3>>,
        window: WindowSize,
        ctx: &LayerCtx<'_, B>,
        cache: Option<(&mut KvCache<B>, usize)>,
    ) -> Tensor<B, 3> {
        let a = self
            .attn
            .forward(rms_norm(x.clone(), ctx.eps), ve, window, ctx, cache);
        let x = x + ctx.dropout.forward(a);
        let m = self.mlp.forward(rms_norm(x.clone(), ctx.eps), ctx.dtype);
        x + ctx.dropout.forward(m)
    }
}

/// Token embedding and blocks (upstream's `transformer` ModuleDict).
#[derive(Module, Debug)]
pub struct Transformer<B: Backend> {
    /// Token embedding (padded vocabulary).
    pub wte: Embedding<B>,
    /// The blocks.
    pub h: Vec<Block<B>>,
}

/// The GPT.
#[derive(Module, Debug)]
pub struct Gpt<B: Backend> {
    /// Embedding and blocks.
    pub transformer: Transformer<B>,
    /// Output projection (untied).
    pub lm_head: Linear<B>,
    /// Per-layer residual scale (when `layer_lambdas`).
    pub resid_lambdas: Option<Param<Tensor<B, 1>>>,
    /// Per-layer input-embedding mix (when `layer_lambdas`).
    pub x0_lambdas: Option<Param<Tensor<B, 1>>>,
    /// Smear gate `Linear(24 → 1)` (when `smear`).
    pub smear_gate: Option<Linear<B>>,
    /// Smear strength (when `smear`).
    pub smear_lambda: Option<Param<Tensor<B, 1>>>,
    /// Backout strength (when `backout`).
    pub backout_lambda: Option<Param<Tensor<B, 1>>>,
    /// Value embeddings by layer (`None` on layers without one).
    pub value_embeds: Vec<Option<Embedding<B>>>,
    dropout: Dropout,
    config: ModelConfig,
    compute: ComputeDtype,
}

impl<B: Backend> Gpt<B> {
    /// The configuration the model was built from.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The compute dtype.
    pub fn compute_dtype(&self) -> ComputeDtype {
        self.compute
    }

    /// The same model computing in `dtype` (master weights unchanged).
    pub fn with_compute_dtype(mut self, dtype: ComputeDtype) -> Self {
        self.compute = dtype;
        self
    }

    /// The device of the weights.
    pub fn device(&self) -> B::Device {
        self.lm_head.weight.device()
    }

    /// Parameter counts by group (upstream `num_scaling_params`).
    pub fn num_scaling_params(&self) -> ParamCounts {
        self.config.param_counts()
    }

    /// Training FLOPs per token (upstream `estimate_flops`).
    pub fn estimate_flops(&self) -> u64 {
        self.config.estimate_flops()
    }

    /// An empty KV cache for this model.
    pub fn new_kv_cache(&self, batch: usize, max_len: usize) -> KvCache<B> {
        let c = &self.config;
        KvCache::new(
            c.n_layer,
            batch,
            c.n_kv_head,
            max_len,
            c.head_dim(),
            self.compute.float_dtype(),
            &self.device(),
        )
    }
}

impl<B: FusedOps> Gpt<B> {
    /// The final normalised hidden states `[rows, t, n_embd]` for tokens `idx` (`[rows, t]`),
    /// appending to the first `rows` rows of `cache` when given. Rows of the cache at different
    /// lengths (continuous batching) take one token each, each at its own position.
    pub fn hidden(
        &self,
        idx: Tensor<B, 2, Int>,
        mut cache: Option<&mut KvCache<B>>,
    ) -> Tensor<B, 3> {
        let c = &self.config;
        let [rows, t] = idx.dims();
        let device = idx.device();
        let eps = self.compute.norm_eps();
        // Decoding one token per row: each row at its own position (rows of a continuous batch
        // have different lengths), through the decode attention kernel whether they do or not,
        // so that a row's numbers never depend on the other rows.
        let ragged = match cache.as_deref() {
            Some(kv) => {
                kv.check_room(rows, t);
                assert!(
                    t == 1 || kv.is_aligned(rows),
                    "rows of different lengths take one token each"
                );
                (t == 1).then(|| kv.lens(rows).to_vec())
            }
            None => None,
        };
        let pos0 = cache.as_ref().map_or(0, |kv| kv.pos());
        let (cos, sin) = match &ragged {
            Some(positions) => rope_tables_at::<B>(positions, c.head_dim(), c.rope_base, &device),
            None => rope_tables::<B>(pos0, t, c.head_dim(), c.rope_base, &device),
        };
        let dt = self.compute.float_dtype();
        let (cos, sin) = (cos.cast(dt), sin.cast(dt));
        let x = rms_norm(self.transformer.wte.forward(idx.clone()).cast(dt), eps);
        let mut x = self.smear(x, cache.as_deref_mut());
        let x0 = x.clone();
        let ctx = LayerCtx {
            cos: &cos,
            sin: &sin,
            qk_scale: c.qk_scale,
            eps,
            dtype: self.compute,
            dropout: &self.dropout,
            ragged: ragged.as_deref(),
        };
        let windows = c.window_sizes();
        let mut backout = None;
        for (i, block) in self.transformer.h.iter().enumerate() {
            if let (Some(r), Some(x0l)) = (&self.resid_lambdas, &self.x0_lambdas) {
                let (ri, xi) = (r.val().narrow(0, i, 1), x0l.val().narrow(0, i, 1));
                x = scale(x, ri.cast(dt)) + scale(x0.clone(), xi.cast(dt));
            }
            let ve = self
                .value_embeds
                .get(i)
                .and_then(Option::as_ref)
                .map(|e| e.forward(idx.clone()).cast(dt));
            let layer_cache = cache.as_deref_mut().map(|kv| (kv, i));
            x = block.forward(x, ve, windows[i], &ctx, layer_cache);
            if i == c.backout_layer() && self.backout_lambda.is_some() {
                backout = Some(x.clone());
            }
        }
        if let Some(kv) = cache {
            kv.advance(rows, t);
        }
        if let (Some(xb), Some(l)) = (backout, &self.backout_lambda) {
            x = x - scale(xb, l.val().cast(dt));
        }
        rms_norm(x, eps)
    }

    /// Smear (when configured): each position mixes in the previous token's embedding through
    /// a gate; with a `cache`, the first position takes the one cached by the previous call,
    /// and the last position's is cached for the next.
    fn smear(&self, mut x: Tensor<B, 3>, cache: Option<&mut KvCache<B>>) -> Tensor<B, 3> {
        let (Some(gate), Some(lambda)) = (&self.smear_gate, &self.smear_lambda) else {
            return x;
        };
        let (t, dt) = (x.dims()[1], self.compute.float_dtype());
        let prev = cache.and_then(|kv| kv.swap_prev_embedding(x.clone().narrow(1, t - 1, 1)));
        let gate_of = |x: Tensor<B, 3>| {
            sigmoid(linear(
                gate,
                x.narrow(2, 0, SMEAR_GATE_CHANNELS),
                self.compute,
            )) * lambda.val().cast(dt).reshape([1, 1, 1])
        };
        // Previous-token embedding for every position: the cached one (if any) for the first.
        let mut shifted = Vec::with_capacity(2);
        if let Some(p) = prev {
            shifted.push(p);
        }
        if t > 1 {
            shifted.push(x.clone().narrow(1, 0, t - 1));
        }
        if !shifted.is_empty() {
            let prevs = Tensor::cat(shifted, 1);
            let n = prevs.dims()[1];
            let tail = x.clone().narrow(1, t - n, n);
            let mixed = tail.clone() + prevs * gate_of(tail);
            x = if n == t {
                mixed
            } else {
                Tensor::cat(vec![x.narrow(1, 0, 1), mixed], 1)
            };
        }
        x
    }

    /// Logits `[batch, t, vocab_size]` in float32, after the soft cap.
    pub fn forward(&self, idx: Tensor<B, 2, Int>, cache: Option<&mut KvCache<B>>) -> Tensor<B, 3> {
        let x = self.hidden(idx, cache);
        self.logits(x)
    }

    /// Logits `[batch, 1, vocab_size]` of the last position only: a prefill that only needs
    /// the next token runs `lm_head` on one row per sequence instead of `t`.
    pub fn forward_last(
        &self,
        idx: Tensor<B, 2, Int>,
        cache: Option<&mut KvCache<B>>,
    ) -> Tensor<B, 3> {
        let x = self.hidden(idx, cache);
        let t = x.dims()[1];
        self.logits(x.narrow(1, t - 1, 1))
    }

    /// lm_head, crop to the vocabulary, float32, soft cap.
    fn logits(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, _] = x.dims();
        let logits =
            linear(&self.lm_head, x, self.compute).slice([0..b, 0..t, 0..self.config.vocab_size]);
        let logits = logits.cast(FloatDType::F32);
        let cap = self.config.logit_softcap;
        if cap > 0.0 {
            ops::softcap(logits, cap)
        } else {
            logits
        }
    }
}

/// Two per-layer scalar vectors (resid and x0 lambdas).
type ScalarPair<B> = (Param<Tensor<B, 1>>, Param<Tensor<B, 1>>);

impl<B: Backend> Gpt<B> {
    pub(crate) fn assemble(
        config: ModelConfig,
        transformer: Transformer<B>,
        lm_head: Linear<B>,
        lambdas: Option<ScalarPair<B>>,
        smear: Option<(Linear<B>, Param<Tensor<B, 1>>)>,
        backout_lambda: Option<Param<Tensor<B, 1>>>,
        value_embeds: Vec<Option<Embedding<B>>>,
    ) -> Self {
        let (resid_lambdas, x0_lambdas) = lambdas.map_or((None, None), |(r, x)| (Some(r), Some(x)));
        let (smear_gate, smear_lambda) = smear.map_or((None, None), |(g, l)| (Some(g), Some(l)));
        Self {
            transformer,
            lm_head,
            resid_lambdas,
            x0_lambdas,
            smear_gate,
            smear_lambda,
            backout_lambda,
            value_embeds,
            dropout: DropoutConfig::new(config.dropout).init(),
            config,
            compute: ComputeDtype::F32,
        }
    }

    pub(crate) fn attention_shape(config: &ModelConfig) -> (usize, usize, usize) {
        (config.n_head, config.n_kv_head, config.head_dim())
    }
}
