//! The key/value cache for incremental decoding (upstream `KVCache` in `nanochat/engine.py`).
//!
//! Logically a `(layers, batch, max_len, kv_heads, head_dim)` buffer per keys and values, held
//! as one `[batch, max_len, kv_heads, head_dim]` tensor per layer (upstream's layout, the one
//! the projections produce and the fused attention reads in place), in the model's compute
//! dtype. All rows advance together by one shared position. The cache also keeps
//! the last token's pre-smear embedding (smear mixes the previous token into the current one).

use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor};

/// Key/value cache of one model for a batch of rows.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    pub(crate) k: Vec<Tensor<B, 4>>,
    pub(crate) v: Vec<Tensor<B, 4>>,
    pos: usize,
    max_len: usize,
    /// The previous token's normalised embedding `[batch, 1, n_embd]`, for smear.
    pub(crate) prev_embedding: Option<Tensor<B, 3>>,
    dtype: FloatDType,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for `batch` rows of up to `max_len` tokens.
    pub fn new(
        num_layers: usize,
        batch: usize,
        num_kv_heads: usize,
        max_len: usize,
        head_dim: usize,
        dtype: FloatDType,
        device: &B::Device,
    ) -> Self {
        let zeros =
            || Tensor::<B, 4>::zeros([batch, max_len, num_kv_heads, head_dim], device).cast(dtype);
        Self {
            k: (0..num_layers).map(|_| zeros()).collect(),
            v: (0..num_layers).map(|_| zeros()).collect(),
            pos: 0,
            max_len,
            prev_embedding: None,
            dtype,
        }
    }

    /// Tokens already in the cache (the position of the next one).
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Capacity in tokens.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Rows.
    pub fn batch(&self) -> usize {
        self.k.first().map_or(0, |k| k.dims()[0])
    }

    /// Tokens that still fit.
    pub fn remaining(&self) -> usize {
        self.max_len - self.pos
    }

    /// The logical shape `(layers, batch, max_len, kv_heads, head_dim)`.
    pub fn shape(&self) -> (usize, usize, usize, usize, usize) {
        let [b, t, h, d] = self.k.first().map_or([0; 4], |k| k.dims());
        (self.k.len(), b, t, h, d)
    }

    /// Writes `k`, `v` (`[batch, t, kv_heads, head_dim]`) of `layer` at the current position
    /// and returns all keys and values up to and including them (views of the cache).
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let [b, t, h, d] = k.dims();
        let end = self.pos + t;
        let ck = std::mem::replace(&mut self.k[layer], Tensor::empty([0, 0, 0, 0], &k.device()));
        let cv = std::mem::replace(&mut self.v[layer], Tensor::empty([0, 0, 0, 0], &v.device()));
        self.k[layer] = ck.slice_assign([0..b, self.pos..end, 0..h, 0..d], k);
        self.v[layer] = cv.slice_assign([0..b, self.pos..end, 0..h, 0..d], v);
        (
            self.k[layer].clone().slice([0..b, 0..end, 0..h, 0..d]),
            self.v[layer].clone().slice([0..b, 0..end, 0..h, 0..d]),
        )
    }

    /// Moves the shared position forward after the last layer wrote `t` tokens.
    pub(crate) fn advance(&mut self, t: usize) {
        self.pos += t;
    }

    /// A cache of `rows` rows whose every row is a copy of this batch-1 cache, with capacity
    /// `max_len` (≥ its position): upstream's prefill-once-then-replicate for sampling several
    /// completions of one prompt.
    pub fn replicate(&self, rows: usize, max_len: usize) -> Self {
        assert_eq!(self.batch(), 1, "replicate expects a batch-1 cache");
        assert!(
            max_len >= self.pos,
            "the new cache must hold the prefilled tokens"
        );
        let grow = |t: &Tensor<B, 4>| {
            let [_, _, h, d] = t.dims();
            let filled = t
                .clone()
                .slice([0..1, 0..self.pos, 0..h, 0..d])
                .repeat_dim(0, rows);
            let out = Tensor::<B, 4>::zeros([rows, max_len, h, d], &t.device()).cast(self.dtype);
            if self.pos > 0 {
                out.slice_assign([0..rows, 0..self.pos, 0..h, 0..d], filled)
            } else {
                out
            }
        };
        Self {
            k: self.k.iter().map(grow).collect(),
            v: self.v.iter().map(grow).collect(),
            pos: self.pos,
            max_len,
            prev_embedding: self
                .prev_embedding
                .as_ref()
                .map(|p| p.clone().repeat_dim(0, rows)),
            dtype: self.dtype,
        }
    }

    /// Empties the cache (keeps its buffers).
    pub fn reset(&mut self) {
        self.pos = 0;
        self.prev_embedding = None;
    }
}
