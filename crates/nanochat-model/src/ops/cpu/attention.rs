//! Fused causal sliding-window grouped-query attention on the CPU, forward and backward, on
//! `[B, T, H, D]` row-major data (no transposes, no repeated kv heads, no `B·H·T·T` tensors).
//!
//! Queries are processed in blocks of [`BLOCK`] rows; a block only multiplies against the keys
//! some row of it can see (`[first − window, last]`), so causal masking also halves the work.
//! Per block: `S = Q·Kᵀ/√D` (gemm), the masked row softmax in place (its log-sum-exp kept for
//! the backward), `O = P·V` (gemm). The backward recomputes `P` from the kept log-sum-exps
//! (FlashAttention-2's recipe): `dV += Pᵀ·dO`, `dP = dO·Vᵀ`, `dS = P ⊙ (dP − rowsum(dO ⊙ O))`,
//! `dQ = dS·K/√D`, `dK += dSᵀ·Q/√D`. Work is split over (batch, query block) forward and over
//! (batch, kv head) backward, so that each task owns what it accumulates.

use rayon::prelude::*;

use super::gemm::{MatMut, MatRef, matmul};
use super::simd::{self, vectorized};

/// Query rows per block.
pub const BLOCK: usize = 64;

/// Where a `[b, tk, hkv, d]` key or value tensor lives in its buffer: rows of `hkv · d`
/// consecutive elements, batches `bstride` apart from `offset` (a KV cache's prefix, or a
/// contiguous tensor with `bstride = tk · hkv · d`).
#[derive(Clone, Copy, Debug)]
pub struct KvAt {
    /// First element.
    pub offset: usize,
    /// Elements between batches.
    pub bstride: usize,
}

/// A key or value buffer and where the tensor lives in it.
pub type KvRef<'a> = (&'a [f32], KvAt);

/// The problem's shape: `q` `[b, tq, h, d]`, `k`/`v` `[b, tk, hkv, d]`.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Batch.
    pub b: usize,
    /// Query positions (the last `tq` of the `tk`).
    pub tq: usize,
    /// Key positions.
    pub tk: usize,
    /// Query heads.
    pub h: usize,
    /// Key/value heads (divides `h`).
    pub hkv: usize,
    /// Head dimension.
    pub d: usize,
    /// Earlier positions a query sees besides its own.
    pub window: usize,
}

impl Shape {
    fn groups(&self) -> usize {
        self.h / self.hkv
    }

    fn scale(&self) -> f32 {
        1.0 / (self.d as f32).sqrt()
    }

    /// Keys `[lo, hi)` that query rows `[r0, r1)` may see.
    fn key_range(&self, r0: usize, r1: usize) -> (usize, usize) {
        let off = self.tk - self.tq;
        ((off + r0).saturating_sub(self.window), off + r1)
    }

    /// The visible keys of query row `r`, relative to `lo`: `[a, e]` inclusive.
    fn row_range(&self, r: usize, lo: usize) -> (usize, usize) {
        let p = self.tk - self.tq + r;
        (p.saturating_sub(self.window).max(lo) - lo, p - lo)
    }

    fn q_view<'a>(&self, q: &'a [f32], b: usize, h: usize, r0: usize, rows: usize) -> MatRef<'a> {
        let off = ((b * self.tq + r0) * self.h + h) * self.d;
        MatRef::new(q, off, (rows, self.d), (self.h * self.d, 1))
    }

    fn kv_view<'a>(
        &self,
        (k, at): KvRef<'a>,
        b: usize,
        g: usize,
        lo: usize,
        rows: usize,
    ) -> MatRef<'a> {
        let off = at.offset + b * at.bstride + (lo * self.hkv + g) * self.d;
        MatRef::new(k, off, (rows, self.d), (self.hkv * self.d, 1))
    }

    /// The layout of a contiguous key or value tensor.
    pub fn contiguous_kv(&self) -> KvAt {
        KvAt {
            offset: 0,
            bstride: self.tk * self.hkv * self.d,
        }
    }
}

/// `S = scale·Q·Kᵀ` for query rows `[r0, r0 + rows)` of batch `b`, head `h`, into `s`
/// (`rows × n` over the block's keys `[lo, hi)`, which it returns).
fn scores(
    sh: &Shape,
    (q, k): (&[f32], KvRef<'_>),
    (b, h): (usize, usize),
    (r0, rows): (usize, usize),
    s: &mut [f32],
) -> (usize, usize) {
    let (lo, hi) = sh.key_range(r0, r0 + rows);
    let n = hi - lo;
    let g = h / sh.groups();
    matmul(
        MatMut::new(s, 0, (rows, n), n),
        sh.q_view(q, b, h, r0, rows),
        sh.kv_view(k, b, g, lo, n).t(),
        sh.scale(),
        false,
    );
    (lo, hi)
}

/// The forward: `o` `[b, tq, h, d]` and the log-sum-exps `lse` `[b, tq, h]`.
pub fn forward(
    sh: &Shape,
    q: &[f32],
    (k, v): (KvRef<'_>, KvRef<'_>),
    o: &mut [f32],
    lse: &mut [f32],
) {
    let (hd, tq) = (sh.h * sh.d, sh.tq);
    if tq == 0 || hd == 0 {
        return;
    }
    o.par_chunks_mut(tq * hd)
        .zip(lse.par_chunks_mut(tq * sh.h))
        .enumerate()
        .flat_map(|(b, (ob, lb))| {
            ob.par_chunks_mut(BLOCK * hd)
                .zip(lb.par_chunks_mut(BLOCK * sh.h))
                .enumerate()
                .map(move |(blk, (o, l))| (b, blk * BLOCK, o, l))
        })
        .for_each(|(b, r0, o, l)| {
            let rows = o.len() / hd;
            let (lo, hi) = sh.key_range(r0, r0 + rows);
            let n = hi - lo;
            let mut p = vec![0.0f32; rows * n];
            for h in 0..sh.h {
                scores(sh, (q, k), (b, h), (r0, rows), &mut p);
                vectorized(
                    #[inline(always)]
                    || {
                        for (i, row) in p.chunks_mut(n).enumerate() {
                            let (a, e) = sh.row_range(r0 + i, lo);
                            let m = simd::max(&row[a..=e]);
                            let mut sum = 0.0;
                            for x in &mut row[a..=e] {
                                *x = simd::exp(*x - m);
                                sum += *x;
                            }
                            let inv = 1.0 / sum;
                            for x in &mut row[a..=e] {
                                *x *= inv;
                            }
                            row[..a].fill(0.0);
                            row[e + 1..].fill(0.0);
                            l[i * sh.h + h] = m + sum.ln();
                        }
                    },
                );
                matmul(
                    MatMut::new(o, h * sh.d, (rows, sh.d), hd),
                    MatRef::new(&p, 0, (rows, n), (n, 1)),
                    sh.kv_view(v, b, h / sh.groups(), lo, n),
                    1.0,
                    false,
                );
            }
        });
}

/// A decode step (`sh.tq` = 1), every row at its own position: row `b`'s query sits at
/// `positions[b]` and sees that row's keys `[positions[b] − window, positions[b]]`. One query
/// against a few hundred keys is dot products and a weighted sum, not a matrix product: done
/// directly (the gemm crate's dispatch and packing cost more than the arithmetic here), in the
/// same order for every row, so a row's output does not depend on the other rows.
pub fn forward_ragged(
    sh: &Shape,
    q: &[f32],
    (k, v): (KvRef<'_>, KvRef<'_>),
    positions: &[usize],
    o: &mut [f32],
) {
    let (hd, d, groups, scale) = (sh.h * sh.d, sh.d, sh.groups(), sh.scale());
    assert!(
        sh.tq == 1 && positions.len() == sh.b && positions.iter().all(|&p| p < sh.tk),
        "ragged attention: one query per row, within the {} keys",
        sh.tk
    );
    if hd == 0 {
        return;
    }
    let row = |(b, (ob, &p)): (usize, (&mut [f32], &usize))| {
        let lo = p.saturating_sub(sh.window);
        let n = p + 1 - lo;
        let mut w = vec![0.0f32; n];
        vectorized(
            #[inline(always)]
            || {
                for h in 0..sh.h {
                    let g = h / groups;
                    let at = |kv: &KvAt, j: usize| {
                        let off = kv.offset + b * kv.bstride + ((lo + j) * sh.hkv + g) * d;
                        off..off + d
                    };
                    let qh = &q[b * hd + h * d..b * hd + (h + 1) * d];
                    for (j, wj) in w.iter_mut().enumerate() {
                        *wj = simd::dot(qh, &k.0[at(&k.1, j)]) * scale;
                    }
                    let m = simd::max(&w);
                    let mut sum = 0.0;
                    for x in w.iter_mut() {
                        *x = simd::exp(*x - m);
                        sum += *x;
                    }
                    let inv = 1.0 / sum;
                    let oh = &mut ob[h * d..(h + 1) * d];
                    oh.fill(0.0);
                    for (j, &wj) in w.iter().enumerate() {
                        let pj = wj * inv;
                        for (o, &x) in oh.iter_mut().zip(&v.0[at(&v.1, j)]) {
                            *o += pj * x;
                        }
                    }
                }
            },
        );
    };
    let rows = o.chunks_mut(hd).zip(positions.iter()).enumerate();
    // Parallel only when the rows hold enough work to pay for waking the other threads.
    let work: usize = positions.iter().map(|&p| (p.min(sh.window) + 1) * hd).sum();
    if work >= 1 << 16 {
        o.par_chunks_mut(hd)
            .zip(positions.par_iter())
            .enumerate()
            .for_each(row);
    } else {
        rows.for_each(row);
    }
}

/// One (batch, kv head)'s gradients: `dq` for its query heads `[groups, tq, d]`, `dk`, `dv`
/// `[tk, d]`.
struct HeadGrads {
    b: usize,
    g: usize,
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
}

/// Inputs of the backward (contiguous).
pub struct Saved<'a> {
    /// Queries.
    pub q: &'a [f32],
    /// Keys.
    pub k: &'a [f32],
    /// Values.
    pub v: &'a [f32],
    /// The forward's output.
    pub o: &'a [f32],
    /// The forward's log-sum-exps.
    pub lse: &'a [f32],
}

/// The backward: `(dq, dk, dv)` in the inputs' layouts.
pub fn backward(sh: &Shape, x: &Saved<'_>, dout: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (d, groups, scale) = (sh.d, sh.groups(), sh.scale());
    let (k, v) = ((x.k, sh.contiguous_kv()), (x.v, sh.contiguous_kv()));
    let heads: Vec<HeadGrads> = (0..sh.b * sh.hkv)
        .into_par_iter()
        .map(|task| {
            let (b, g) = (task / sh.hkv, task % sh.hkv);
            let mut hg = HeadGrads {
                b,
                g,
                dq: vec![0.0; groups * sh.tq * d],
                dk: vec![0.0; sh.tk * d],
                dv: vec![0.0; sh.tk * d],
            };
            let mut p = Vec::new();
            let mut dp = Vec::new();
            for gi in 0..groups {
                let h = g * groups + gi;
                for r0 in (0..sh.tq).step_by(BLOCK) {
                    let rows = BLOCK.min(sh.tq - r0);
                    let (lo, hi) = sh.key_range(r0, r0 + rows);
                    let n = hi - lo;
                    p.resize(rows * n, 0.0);
                    dp.resize(rows * n, 0.0);
                    scores(sh, (x.q, k), (b, h), (r0, rows), &mut p);
                    let dout_blk = sh.q_view(dout, b, h, r0, rows);
                    // dP = dO·Vᵀ.
                    matmul(
                        MatMut::new(&mut dp, 0, (rows, n), n),
                        dout_blk,
                        sh.kv_view(v, b, g, lo, n).t(),
                        1.0,
                        false,
                    );
                    vectorized(
                        #[inline(always)]
                        || {
                            for (i, (prow, dprow)) in
                                p.chunks_mut(n).zip(dp.chunks_mut(n)).enumerate()
                            {
                                let r = r0 + i;
                                let (a, e) = sh.row_range(r, lo);
                                let base = ((b * sh.tq + r) * sh.h + h) * d;
                                let delta = simd::dot(&dout[base..base + d], &x.o[base..base + d]);
                                let lse = x.lse[(b * sh.tq + r) * sh.h + h];
                                for (s, dpv) in prow[a..=e].iter_mut().zip(&mut dprow[a..=e]) {
                                    *s = simd::exp(*s - lse);
                                    *dpv = *s * (*dpv - delta) * scale;
                                }
                                prow[..a].fill(0.0);
                                prow[e + 1..].fill(0.0);
                                dprow[..a].fill(0.0);
                                dprow[e + 1..].fill(0.0);
                            }
                        },
                    );
                    let pm = MatRef::new(&p, 0, (rows, n), (n, 1));
                    let dsm = MatRef::new(&dp, 0, (rows, n), (n, 1));
                    // dV += Pᵀ·dO, dK += dSᵀ·Q, dQ = dS·K.
                    matmul(
                        MatMut::new(&mut hg.dv, lo * d, (n, d), d),
                        pm.t(),
                        dout_blk,
                        1.0,
                        true,
                    );
                    matmul(
                        MatMut::new(&mut hg.dk, lo * d, (n, d), d),
                        dsm.t(),
                        sh.q_view(x.q, b, h, r0, rows),
                        1.0,
                        true,
                    );
                    matmul(
                        MatMut::new(&mut hg.dq, (gi * sh.tq + r0) * d, (rows, d), d),
                        dsm,
                        sh.kv_view(k, b, g, lo, n),
                        1.0,
                        false,
                    );
                }
            }
            hg
        })
        .collect();
    // Scatter the per-head buffers into the [b, t, heads, d] layouts.
    let mut dq = vec![0.0f32; sh.b * sh.tq * sh.h * d];
    let mut dk = vec![0.0f32; sh.b * sh.tk * sh.hkv * d];
    let mut dv = vec![0.0f32; sh.b * sh.tk * sh.hkv * d];
    for hg in &heads {
        for gi in 0..groups {
            let h = hg.g * groups + gi;
            for r in 0..sh.tq {
                let dst = ((hg.b * sh.tq + r) * sh.h + h) * d;
                let src = (gi * sh.tq + r) * d;
                dq[dst..dst + d].copy_from_slice(&hg.dq[src..src + d]);
            }
        }
        for r in 0..sh.tk {
            let dst = ((hg.b * sh.tk + r) * sh.hkv + hg.g) * d;
            dk[dst..dst + d].copy_from_slice(&hg.dk[r * d..(r + 1) * d]);
            dv[dst..dst + d].copy_from_slice(&hg.dv[r * d..(r + 1) * d]);
        }
    }
    (dq, dk, dv)
}
