//! Training attention without the `B·H·T·T` scores: causal, sliding-window, grouped-query
//! attention run over blocks of query rows, FlashAttention-2's algorithm (Dao 2023) on the
//! backend's own matrix products. The forward keeps each row's log-sum-exp; the backward
//! recomputes one block's probabilities from it and from `D = rowsum(dO ∘ O)`, so what an
//! autodiff step keeps per layer is `q, k, v, out` and one float per row and head.
//!
//! Upstream runs FlashAttention 3 (or SDPA) through `nanochat/flash_attention.py`; burn 0.21's
//! autodiff differentiates attention as its decomposition and keeps the scores and the
//! probabilities, `[B, H, T, T]` float32 each per layer (3.2 GB for d12 at 32 × 2048, twelve
//! layers). Here the largest temporary is one block's scores, at most [`BLOCK_ELEMS`] floats.
//!
//! - **Grouped heads without copies:** query head `h` uses kv head `h / G`; a block's queries
//!   are laid out `[B, H_kv, G · rows, D]`, so every product takes `k` and `v` as they are and
//!   the backward's `dk`, `dv` sum over the group inside the product.
//! - **Only the keys a block can see:** rows at absolute positions `a..a + rows` read keys
//!   `a − window ..= a + rows − 1`; the causal upper half outside the diagonal blocks (and,
//!   with a short window, most of the rest) is never multiplied. Masks are built on the device from two index ranges.
//! - **Precision:** products in the inputs' dtype (bf16 on a GPU: its tensor cores), scores,
//!   softmax statistics and the `dk`, `dv` accumulators in float32.
//!
//! This is what the GPU backends run for training, and the CPU in bf16 (its fused kernel is
//! float32); a fused CubeCL / cuDNN kernel would replace it behind
//! [`super::FusedOps::attention_forward`] and [`super::FusedOps::attention_backward`].

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{FloatDType, Tensor, TensorMetadata, TensorPrimitive};

use crate::flash_attention::block_mask;

/// Float32 scores per block: 256 MiB (d12 at 32 × 2048, 6 heads, full window: 128 rows per
/// block, 16 blocks per layer), the loss's block size.
pub const BLOCK_ELEMS: usize = 1 << 26;

/// The shape of one attention call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Batch rows.
    pub b: usize,
    /// Queries (the last `tq` of the `tk` positions).
    pub tq: usize,
    /// Keys and values.
    pub tk: usize,
    /// Query heads.
    pub h: usize,
    /// Key/value heads (divides `h`).
    pub h_kv: usize,
    /// Head dimension.
    pub d: usize,
    /// Earlier keys a query may see besides its own position.
    pub window: usize,
}

impl Shape {
    /// The shape of `q` (`[B, Tq, H, D]`) over `k` (`[B, Tk, H_kv, D]`).
    pub fn of(q: [usize; 4], k: [usize; 4], window: usize) -> Self {
        let ([b, tq, h, d], [_, tk, h_kv, _]) = (q, k);
        assert!(
            tq <= tk && h_kv > 0 && h % h_kv == 0,
            "attention of {tq} queries over {tk} keys with {h} heads over {h_kv} kv heads"
        );
        Self {
            b,
            tq,
            tk,
            h,
            h_kv,
            d,
            window,
        }
    }

    /// Query rows per block: the most (at least 1) whose scores over the keys they can see
    /// stay within `elems` floats, rounded down to a power of two when above 16 (all of
    /// them when they fit).
    pub fn block_rows(&self, elems: usize) -> usize {
        let scores = |rows: usize| self.b * self.h * rows * self.tk.min(rows + self.window);
        if scores(self.tq) <= elems {
            return self.tq.max(1);
        }
        let (mut lo, mut hi) = (1, self.tq);
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if scores(mid) <= elems {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        // A power of two: whole tiles of a GPU's matrix kernels, fewer distinct shapes.
        if lo > 16 { 1 << lo.ilog2() } else { lo }
    }

    /// The blocks of `rows` query rows (the last one partial): `(r0, n, keys)` for rows
    /// `r0..r0 + n` and the [`keys`](Self::keys) they see.
    fn blocks(&self, rows: usize) -> impl Iterator<Item = (usize, usize, Keys)> + '_ {
        let rows = rows.max(1);
        (0..self.tq).step_by(rows).map(move |r0| {
            let n = rows.min(self.tq - r0);
            (r0, n, self.keys(r0, n))
        })
    }

    /// The softmax scale, `1/sqrt(D)`.
    fn scale(&self) -> f64 {
        1.0 / (self.d as f64).sqrt()
    }

    /// The keys `lo..hi` rows `r0..r0 + rows` see, and whether some of them are masked for
    /// some of those rows.
    fn keys(&self, r0: usize, rows: usize) -> Keys {
        // Row `a` sees `a − window ..= a`; consecutive rows see the union of theirs.
        let first = self.tk - self.tq + r0;
        let last = first + rows - 1;
        let lo = first.saturating_sub(self.window);
        (lo, last + 1, rows > 1 || last - lo > self.window)
    }
}

/// [`forward`] in blocks of [`Shape::block_rows`] for [`BLOCK_ELEMS`].
pub fn forward_blocks<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    window: usize,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let rows = Shape::of(q.shape().dims(), k.shape().dims(), window).block_rows(BLOCK_ELEMS);
    forward::<B>(q, k, v, window, rows)
}

/// [`backward`] in blocks of [`Shape::block_rows`] for [`BLOCK_ELEMS`].
pub fn backward_blocks<B: Backend>(
    qkv: (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>),
    out: FloatTensor<B>,
    lse: FloatTensor<B>,
    dout: FloatTensor<B>,
    window: usize,
) -> [FloatTensor<B>; 3] {
    let sh = Shape::of(qkv.0.shape().dims(), qkv.1.shape().dims(), window);
    backward::<B>(qkv, out, lse, dout, window, sh.block_rows(BLOCK_ELEMS))
}

/// The keys `lo..hi` a block reads, and whether a mask cuts inside them.
type Keys = (usize, usize, bool);

fn tensor<B: Backend, const D: usize>(p: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

fn prim<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

/// Rows `r0..r0 + rows` of `x` (`[B, T, H, D]`, `H = H_kv · G`) as `[B, H_kv, G · rows, D]`.
fn grouped<B: Backend>(x: &Tensor<B, 4>, sh: &Shape, r0: usize, rows: usize) -> Tensor<B, 4> {
    let [b, _, h, d] = x.dims();
    x.clone()
        .narrow(1, r0, rows)
        .swap_dims(1, 2)
        .reshape([b, sh.h_kv, (h / sh.h_kv) * rows, d])
}

/// The inverse of [`grouped`]: `[B, H_kv, G · rows, D]` back to `[B, rows, H, D]`.
fn ungrouped<B: Backend>(x: Tensor<B, 4>, sh: &Shape, rows: usize) -> Tensor<B, 4> {
    let d = x.dims()[3];
    x.reshape([sh.b, sh.h, rows, d]).swap_dims(1, 2)
}

/// Per-row statistics (`[B, T, H]`, rows `r0..r0 + rows`) as `[B, H_kv, G · rows, 1]`.
fn grouped_stat<B: Backend>(x: &Tensor<B, 3>, sh: &Shape, r0: usize, rows: usize) -> Tensor<B, 4> {
    grouped(&x.clone().unsqueeze_dim(3), sh, r0, rows)
}

/// Float32 scores of one block (`q` grouped, keys `lo..hi`), masked to `−∞` where a row may
/// not look.
fn scores<B: Backend>(
    qb: Tensor<B, 4>,
    kb: Tensor<B, 4>,
    sh: &Shape,
    (r0, rows): (usize, usize),
    (lo, hi, masked): Keys,
) -> Tensor<B, 4> {
    let s = qb
        .matmul(kb.transpose())
        .cast(FloatDType::F32)
        .mul_scalar(sh.scale());
    if !masked {
        return s;
    }
    // The block's mask over `[B, H_kv, G, rows, keys]`: the same for every group and head.
    let [b, h_kv, gr, kr] = s.dims();
    let groups = gr / rows;
    let first = sh.tk - sh.tq + r0;
    let mask = block_mask::<B>(first..first + rows, lo..hi, sh.window, &s.device())
        .reshape([1, 1, 1, rows, kr])
        .expand([b, h_kv, groups, rows, kr]);
    s.reshape([b, h_kv, groups, rows, kr])
        .mask_fill(mask, f32::NEG_INFINITY)
        .reshape([b, h_kv, gr, kr])
}

/// The output (`[B, Tq, H, D]`, the dtype of `q`) and the rows' log-sum-exps (`[B, Tq, H]`,
/// float32) of `q` over `k`, `v`, `rows` query rows at a time.
pub fn forward<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    window: usize,
    rows: usize,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let (q, k, v) = (tensor::<B, 4>(q), tensor::<B, 4>(k), tensor::<B, 4>(v));
    let sh = Shape::of(q.dims(), k.dims(), window);
    let dtype = FloatDType::from(q.dtype());
    let (mut out, mut lse) = (Vec::new(), Vec::new());
    for (r0, n, keys @ (lo, hi, _)) in sh.blocks(rows) {
        let (kb, vb) = (k_rows(&k, lo, hi), k_rows(&v, lo, hi));
        let s = scores(grouped(&q, &sh, r0, n), kb, &sh, (r0, n), keys);
        let max = s.clone().max_dim(3);
        let e = (s - max.clone()).exp();
        let sum = e.clone().sum_dim(3);
        let l = max + sum.clone().log();
        let p = (e / sum).cast(dtype);
        out.push(ungrouped(p.matmul(vb), &sh, n));
        lse.push(l.reshape([sh.b, sh.h, n]).swap_dims(1, 2));
    }
    (prim(Tensor::cat(out, 1)), prim(Tensor::cat(lse, 1)))
}

/// Keys or values `lo..hi` (`[B, T, H_kv, D]`) as `[B, H_kv, hi − lo, D]`.
fn k_rows<B: Backend>(x: &Tensor<B, 4>, lo: usize, hi: usize) -> Tensor<B, 4> {
    x.clone().narrow(1, lo, hi - lo).swap_dims(1, 2)
}

/// `(dq, dk, dv)` of [`forward`]'s output for the output gradient `dout`, from the inputs,
/// the output and the log-sum-exps it returned; `rows` query rows at a time.
pub fn backward<B: Backend>(
    (q, k, v): (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>),
    out: FloatTensor<B>,
    lse: FloatTensor<B>,
    dout: FloatTensor<B>,
    window: usize,
    rows: usize,
) -> [FloatTensor<B>; 3] {
    let (q, k, v) = (tensor::<B, 4>(q), tensor::<B, 4>(k), tensor::<B, 4>(v));
    let (out, lse, dout) = (
        tensor::<B, 4>(out),
        tensor::<B, 3>(lse),
        tensor::<B, 4>(dout),
    );
    let sh = Shape::of(q.dims(), k.dims(), window);
    let (q_dtype, k_dtype, v_dtype) = (
        FloatDType::from(q.dtype()),
        FloatDType::from(k.dtype()),
        FloatDType::from(v.dtype()),
    );
    // D = rowsum(dO ∘ O): the softmax's backward term, one float per row and head.
    let delta = (dout.clone().cast(FloatDType::F32) * out.cast(FloatDType::F32))
        .sum_dim(3)
        .reshape([sh.b, sh.tq, sh.h]);
    let device = q.device();
    let mut dk = Tensor::<B, 4>::zeros([sh.b, sh.h_kv, sh.tk, sh.d], &device);
    let mut dv = Tensor::<B, 4>::zeros([sh.b, sh.h_kv, sh.tk, sh.d], &device);
    let mut dq = Vec::new();
    for (r0, n, keys @ (lo, hi, _)) in sh.blocks(rows) {
        let (qb, dob) = (grouped(&q, &sh, r0, n), grouped(&dout, &sh, r0, n));
        let (kb, vb) = (k_rows(&k, lo, hi), k_rows(&v, lo, hi));
        let s = scores(qb.clone(), kb.clone(), &sh, (r0, n), keys);
        let p = (s - grouped_stat(&lse, &sh, r0, n)).exp();
        let dp = dob.clone().matmul(vb.transpose()).cast(FloatDType::F32);
        let ds = (p.clone() * (dp - grouped_stat(&delta, &sh, r0, n)))
            .mul_scalar(sh.scale())
            .cast(q_dtype);
        let dvb = p.cast(q_dtype).transpose().matmul(dob);
        let dkb = ds.clone().transpose().matmul(qb);
        dq.push(ungrouped(ds.matmul(kb), &sh, n));
        // Accumulated in place: the slice read is consumed before the write.
        let at = [0..sh.b, 0..sh.h_kv, lo..hi, 0..sh.d];
        let sum = dk.clone().slice(at.clone()) + dkb.cast(FloatDType::F32);
        dk = dk.slice_assign(at.clone(), sum);
        let sum = dv.clone().slice(at.clone()) + dvb.cast(FloatDType::F32);
        dv = dv.slice_assign(at, sum);
    }
    [
        prim(Tensor::cat(dq, 1)),
        prim(dk.swap_dims(1, 2).cast(k_dtype)),
        prim(dv.swap_dims(1, 2).cast(v_dtype)),
    ]
}

#[cfg(all(test, any(feature = "flex", feature = "ndarray")))]
mod tests {
    use super::*;
    use crate::TestBackend as B;
    use crate::op_parity::inputs;
    use crate::ops::reference;
    use burn::tensor::TensorData;

    fn randn(shape: [usize; 4], seed: u64) -> Tensor<B, 4> {
        let v = inputs(shape.iter().product(), seed);
        Tensor::from_data(TensorData::new(v, shape), &Default::default())
    }

    /// max |a − b| / max |b| (at least 1e-2: with a window of 0, `dq` is 0 up to rounding).
    fn rel(a: FloatTensor<B>, b: FloatTensor<B>) -> f32 {
        let v = |t| tensor::<B, 4>(t).into_data().to_vec::<f32>().unwrap();
        let (a, b) = (v(a), v(b));
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-2);
        let diff = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        diff / scale
    }

    #[test]
    fn blocks_match_the_reference_and_its_gradients() {
        // (b, tq, tk, h, h_kv, d, window, rows): grouped heads with a partial last block, a
        // window shorter than a block, a window of exactly T − 1, queries after a prefix of
        // keys, a window of 0 (each query sees itself), one block for everything.
        let cases = [
            (2, 37, 37, 4, 2, 8, 1000, 16),
            (2, 37, 37, 4, 2, 8, 5, 8),
            (1, 13, 13, 3, 3, 8, 12, 4),
            (1, 5, 13, 6, 2, 8, 4, 2),
            (1, 9, 9, 2, 2, 4, 0, 3),
            (2, 11, 11, 4, 1, 8, 3, 11),
        ];
        for (i, &(b, tq, tk, h, h_kv, d, window, rows)) in cases.iter().enumerate() {
            let seed = 10 * i as u64;
            let [q, k, v, dout] = [
                randn([b, tq, h, d], seed),
                randn([b, tk, h_kv, d], seed + 1),
                randn([b, tk, h_kv, d], seed + 2),
                randn([b, tq, h, d], seed + 3),
            ]
            .map(prim);
            let (out, lse) = forward::<B>(q.clone(), k.clone(), v.clone(), window, rows);
            let want = reference::attention_prim::<B>(q.clone(), k.clone(), v.clone(), window);
            let e = rel(out.clone(), want);
            assert!(e < 1e-5, "case {i}: output {e}");
            assert_eq!(tensor::<B, 3>(lse.clone()).dims(), [b, tq, h]);
            let got = backward::<B>(
                (q.clone(), k.clone(), v.clone()),
                out,
                lse,
                dout.clone(),
                window,
                rows,
            );
            let want = reference::attention_vjp::<B>(q, k, v, dout, window);
            for ((name, g), w) in ["dq", "dk", "dv"].iter().zip(got).zip(want) {
                let e = rel(g, w);
                assert!(e < 1e-4, "case {i}: {name} {e}");
            }
        }
    }

    #[test]
    fn block_rows_fill_the_budget_and_keys_cover_what_rows_see() {
        let sh = Shape::of([32, 2048, 6, 128], [32, 2048, 6, 128], 2048);
        let rows = sh.block_rows(BLOCK_ELEMS);
        let scores = |r: usize| sh.b * sh.h * r * sh.tk.min(r + sh.window);
        assert!(rows.is_power_of_two() && scores(rows) <= BLOCK_ELEMS);
        assert!(scores(2 * rows) > BLOCK_ELEMS);
        assert_eq!(rows, 128, "d12: 16 blocks of 128 rows");
        // A short window lets blocks grow; a small call is one block.
        let short = Shape::of([32, 2048, 6, 128], [32, 2048, 6, 128], 511);
        assert!(short.block_rows(BLOCK_ELEMS) > rows);
        let small = Shape::of([1, 9, 2, 4], [1, 9, 2, 4], 3);
        assert_eq!(small.block_rows(BLOCK_ELEMS), 9);
        assert_eq!(sh.block_rows(1), 1);
        // Keys of a block: from the first row's window start to the last row itself.
        let sh = Shape::of([1, 5, 2, 4], [1, 13, 2, 4], 4);
        assert_eq!(sh.keys(0, 1), (4, 9, false));
        assert_eq!(sh.keys(2, 3), (6, 13, true));
        let sh = Shape::of([1, 20, 2, 4], [1, 20, 2, 4], 100);
        assert_eq!(sh.keys(8, 4), (0, 12, true));
    }
}
