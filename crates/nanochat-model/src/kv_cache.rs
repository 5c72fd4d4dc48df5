//! The key/value cache for incremental decoding (upstream `KVCache` in `nanochat/engine.py`).
//!
//! Logically a `(layers, batch, max_len, kv_heads, head_dim)` buffer per keys and values, held
//! as one `[batch, max_len, kv_heads, head_dim]` tensor per layer (upstream's layout, the one
//! the projections produce and the fused attention reads in place), in the model's compute
//! dtype. The cache also keeps the last token's pre-smear embedding (smear mixes the previous
//! token into the current one).
//!
//! Every row has its own length. Rows filled together by forward calls over all of them share
//! one (upstream's case: a prompt prefilled, then replicated to the samples). Continuous
//! batching uses the cache as slots: a request prefilled in a cache of its own is copied into a
//! free row ([`KvCache::load_row`]), rows at different lengths then decode one token each in one
//! forward (a "ragged" step: each row's rotary position, write position and visible keys are
//! its own), and a finished request's row is released ([`KvCache::clear_row`]).

use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor};

use crate::ops::{self, FusedOps};

/// Key/value cache of one model for a batch of rows.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    pub(crate) k: Vec<Tensor<B, 4>>,
    pub(crate) v: Vec<Tensor<B, 4>>,
    /// Tokens in each row.
    lens: Vec<usize>,
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
            lens: vec![0; batch],
            max_len,
            prev_embedding: None,
            dtype,
        }
    }

    /// Tokens already in row 0 (the position of its next one; every row's, when the rows were
    /// filled together).
    pub fn pos(&self) -> usize {
        self.lens.first().copied().unwrap_or(0)
    }

    /// Tokens already in each of the first `rows` rows.
    pub fn lens(&self, rows: usize) -> &[usize] {
        &self.lens[..rows]
    }

    /// Whether the first `rows` rows hold the same number of tokens (a forward over them may
    /// then take several tokens per row; otherwise one).
    pub fn is_aligned(&self, rows: usize) -> bool {
        self.lens[..rows].windows(2).all(|w| w[0] == w[1])
    }

    /// Capacity in tokens.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Rows.
    pub fn batch(&self) -> usize {
        self.k.first().map_or(0, |k| k.dims()[0])
    }

    /// Tokens that still fit in row 0 (every row, when they were filled together).
    pub fn remaining(&self) -> usize {
        self.max_len - self.pos()
    }

    /// The logical shape `(layers, batch, max_len, kv_heads, head_dim)`.
    pub fn shape(&self) -> (usize, usize, usize, usize, usize) {
        let [b, t, h, d] = self.k.first().map_or([0; 4], |k| k.dims());
        (self.k.len(), b, t, h, d)
    }

    /// Writes `k`, `v` (`[rows, t, kv_heads, head_dim]`, the first `rows` rows) of `layer`
    /// after each row's tokens and returns the keys and values of those rows up to the longest
    /// (views of the cache; a ragged step's attention masks each row's own).
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
    ) -> (Tensor<B, 4>, Tensor<B, 4>)
    where
        B: FusedOps,
    {
        let [b, t, h, d] = k.dims();
        let at: Vec<(usize, usize)> = self.lens[..b].iter().copied().enumerate().collect();
        let device = k.device();
        let ck = std::mem::replace(&mut self.k[layer], Tensor::empty([0, 0, 0, 0], &device));
        let cv = std::mem::replace(&mut self.v[layer], Tensor::empty([0, 0, 0, 0], &device));
        self.k[layer] = ops::kv_write(ck, k, &at);
        self.v[layer] = ops::kv_write(cv, v, &at);
        let end = self.lens[..b].iter().max().map_or(t, |&l| l + t);
        (
            self.k[layer].clone().slice([0..b, 0..end, 0..h, 0..d]),
            self.v[layer].clone().slice([0..b, 0..end, 0..h, 0..d]),
        )
    }

    /// Moves the first `rows` rows forward after the last layer wrote `t` tokens each.
    pub(crate) fn advance(&mut self, rows: usize, t: usize) {
        for l in &mut self.lens[..rows] {
            *l += t;
        }
    }

    /// Panics unless `t` more tokens fit in each of the first `rows` rows.
    pub(crate) fn check_room(&self, rows: usize, t: usize) {
        assert!(
            rows <= self.batch(),
            "{rows} rows > the cache's {}",
            self.batch()
        );
        if let Some(&longest) = self.lens[..rows].iter().max() {
            assert!(
                longest + t <= self.max_len,
                "KV cache full: {longest} + {t} > {}",
                self.max_len
            );
        }
    }

    /// The previous token's embedding for the first `rows` rows (none before the first token),
    /// keeping `last` (`[rows, 1, n_embd]`) as theirs for the next call.
    pub(crate) fn swap_prev_embedding(&mut self, last: Tensor<B, 3>) -> Option<Tensor<B, 3>> {
        let [rows, _, c] = last.dims();
        let fresh = self.lens[..rows].iter().all(|&l| l == 0);
        let stored = match self.prev_embedding.take() {
            Some(p) => p,
            None if rows == self.batch() => {
                self.prev_embedding = Some(last);
                return None;
            }
            None => Tensor::<B, 3>::zeros([self.batch(), 1, c], &last.device()).cast(self.dtype),
        };
        let prev = (!fresh).then(|| stored.clone().slice([0..rows, 0..1, 0..c]));
        self.prev_embedding = Some(stored.slice_assign([0..rows, 0..1, 0..c], last));
        prev
    }

    /// Copies row `src_row` of `src` (a request prefilled in a cache of its own) into row
    /// `row`, which then holds its tokens (and its last embedding, for smear).
    pub fn load_row(&mut self, row: usize, src: &KvCache<B>, src_row: usize)
    where
        B: FusedOps,
    {
        let n = src.lens[src_row];
        assert!(
            n <= self.max_len,
            "{n} tokens do not fit rows of {}",
            self.max_len
        );
        if n > 0 {
            for (dst, from) in [(&mut self.k, &src.k), (&mut self.v, &src.v)] {
                for (d, s) in dst.iter_mut().zip(from) {
                    let [_, _, h, hd] = s.dims();
                    let piece = s.clone().slice([src_row..src_row + 1, 0..n, 0..h, 0..hd]);
                    let full = std::mem::replace(d, Tensor::empty([0, 0, 0, 0], &piece.device()));
                    *d = ops::kv_write(full, piece, &[(row, 0)]);
                }
            }
        }
        self.lens[row] = n;
        if let Some(p) = &src.prev_embedding {
            let [_, _, c] = p.dims();
            let last = p.clone().slice([src_row..src_row + 1, 0..1, 0..c]);
            let stored = self.prev_embedding.take().unwrap_or_else(|| {
                Tensor::<B, 3>::zeros([self.batch(), 1, c], &last.device()).cast(self.dtype)
            });
            self.prev_embedding = Some(stored.slice_assign([row..row + 1, 0..1, 0..c], last));
        }
    }

    /// Adds empty rows up to `rows` in all (a copy of the cache; continuous batching grows
    /// its cache by doubling as more requests run at once).
    pub fn grow_rows(&mut self, rows: usize) {
        let have = self.batch();
        if rows <= have {
            return;
        }
        let extra = |t: &Tensor<B, 4>| {
            let [_, l, h, d] = t.dims();
            let zeros = Tensor::<B, 4>::zeros([rows - have, l, h, d], &t.device()).cast(self.dtype);
            Tensor::cat(vec![t.clone(), zeros], 0)
        };
        self.k = self.k.iter().map(extra).collect();
        self.v = self.v.iter().map(extra).collect();
        self.lens.resize(rows, 0);
        if let Some(p) = self.prev_embedding.take() {
            let [_, _, c] = p.dims();
            let zeros = Tensor::<B, 3>::zeros([rows - have, 1, c], &p.device()).cast(self.dtype);
            self.prev_embedding = Some(Tensor::cat(vec![p, zeros], 0));
        }
    }

    /// Empties row `row` (its slot is free for another request).
    pub fn clear_row(&mut self, row: usize) {
        self.lens[row] = 0;
    }

    /// A cache of `rows` rows whose every row is a copy of this batch-1 cache, with capacity
    /// `max_len` (≥ its position): upstream's prefill-once-then-replicate for sampling several
    /// completions of one prompt.
    pub fn replicate(&self, rows: usize, max_len: usize) -> Self {
        assert_eq!(self.batch(), 1, "replicate expects a batch-1 cache");
        let pos = self.pos();
        assert!(
            max_len >= pos,
            "the new cache must hold the prefilled tokens"
        );
        let grow = |t: &Tensor<B, 4>| {
            let [_, _, h, d] = t.dims();
            let filled = t
                .clone()
                .slice([0..1, 0..pos, 0..h, 0..d])
                .repeat_dim(0, rows);
            let out = Tensor::<B, 4>::zeros([rows, max_len, h, d], &t.device()).cast(self.dtype);
            if pos > 0 {
                out.slice_assign([0..rows, 0..pos, 0..h, 0..d], filled)
            } else {
                out
            }
        };
        Self {
            k: self.k.iter().map(grow).collect(),
            v: self.v.iter().map(grow).collect(),
            lens: vec![pos; rows],
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
        self.lens.fill(0);
        self.prev_embedding = None;
    }
}
