//! The optimizer updates on the CPU, one pass per tensor instead of one op per term: AdamW
//! element-wise in parallel chunks, and Muon one matrix per task (momentum, MuonEq, Polar
//! Express through the `gemm` crate, Muon+, NorMuon, cautious weight decay), the matrices of a
//! group in parallel. Same formulas and float32 arithmetic as [`crate::ops::optim`].

use rayon::prelude::*;

use super::gemm::{MatMut, MatRef, matmul};
use super::simd::vectorized;
use crate::ops::optim::{AdamScalars, MuonHyper, POLAR_EXPRESS_COEFFS};

/// Elements per parallel AdamW task.
const CHUNK: usize = 1 << 14;

/// One AdamW step: returns `[param, exp_avg, exp_avg_sq]`.
pub fn adamw(p: &[f32], g: &[f32], m: &[f32], v: &[f32], h: &AdamScalars) -> [Vec<f32>; 3] {
    let [b1, b2] = h.betas;
    let decay = (1.0 - h.lr * h.weight_decay) as f32;
    let (w1, w2) = ((1.0 - b1) as f32, (1.0 - b2) as f32);
    let bias2 = (1.0 - b2.powi(h.step as i32)) as f32;
    let step_size = (h.lr / (1.0 - b1.powi(h.step as i32))) as f32;
    let eps = h.eps as f32;
    let n = p.len();
    let (mut po, mut mo, mut vo) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
    po.par_chunks_mut(CHUNK)
        .zip(mo.par_chunks_mut(CHUNK))
        .zip(vo.par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(c, ((po, mo), vo))| {
            let r = c * CHUNK..c * CHUNK + po.len();
            let (p, g, m, v) = (&p[r.clone()], &g[r.clone()], &m[r.clone()], &v[r]);
            vectorized(
                #[inline(always)]
                || {
                    for i in 0..po.len() {
                        let gi = g[i];
                        let mi = m[i] + (gi - m[i]) * w1;
                        let vi = v[i] + (gi * gi - v[i]) * w2;
                        let denom = (vi / bias2).sqrt() + eps;
                        po[i] = p[i] * decay - mi / denom * step_size;
                        mo[i] = mi;
                        vo[i] = vi;
                    }
                },
            )
        });
    [po, mo, vo]
}

/// Frobenius norm, accumulated in float64 (the norms scale whole matrices: their rounding
/// moves every element).
#[inline(always)]
fn fro(x: &[f32]) -> f32 {
    sum_sq(x).sqrt() as f32
}

/// `Σ x²` in float64.
#[inline(always)]
fn sum_sq(x: &[f32]) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] += f64::from(c[i]) * f64::from(c[i]);
        }
    }
    acc.iter().sum::<f64>()
        + tail
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
}

/// Polar Express on one `[m, n]` matrix, in place (upstream's `polar_express`, term by term:
/// each product on its own, then `B = b·A + c·(A·A)` and `X ← a·X + X·B` element-wise).
fn polar_express(x: &mut [f32], m: usize, n: usize, ns_steps: usize) {
    let k = m.min(n);
    let norm = fro(x) * 1.01 + 1e-6;
    for v in x.iter_mut() {
        *v /= norm;
    }
    let mut a_mat = vec![0.0f32; k * k];
    let mut aa = vec![0.0f32; k * k];
    let mut xb = vec![0.0f32; m * n];
    for &(a, b, c) in POLAR_EXPRESS_COEFFS.iter().take(ns_steps) {
        let (a, b, c) = (a as f32, b as f32, c as f32);
        let xv = MatRef::new(x, 0, (m, n), (n, 1));
        // A = Xᵀ·X (tall) or X·Xᵀ, k × k.
        let (lhs, rhs) = if m > n { (xv.t(), xv) } else { (xv, xv.t()) };
        matmul(MatMut::new(&mut a_mat, 0, (k, k), k), lhs, rhs, 1.0, false);
        let am = MatRef::new(&a_mat, 0, (k, k), (k, 1));
        matmul(MatMut::new(&mut aa, 0, (k, k), k), am, am, 1.0, false);
        // B = b·A + c·(A·A), into `aa`.
        for (bv, &av) in aa.iter_mut().zip(&a_mat) {
            *bv = av * b + *bv * c;
        }
        let bm = MatRef::new(&aa, 0, (k, k), (k, 1));
        let (lhs, rhs) = if m > n { (xv, bm) } else { (bm, xv) };
        matmul(MatMut::new(&mut xb, 0, (m, n), n), lhs, rhs, 1.0, false);
        // X ← a·X + X·B (tall) or a·X + B·X.
        for (xv, &p) in x.iter_mut().zip(&xb) {
            *xv = *xv * a + p;
        }
    }
}

/// One Muon step on a `[K, m, n]` stack (PyTorch layout) with NorMuon's second moment `second`
/// (`[K, m]` when `m >= n`, else `[K, n]`): returns `[params, momentum, second]`.
pub fn muon(
    (p, g, mom, second): (&[f32], &[f32], &[f32], &[f32]),
    (m, n): (usize, usize),
    h: &MuonHyper,
) -> [Vec<f32>; 3] {
    let mn = m * n;
    let red = if m >= n { m } else { n };
    let len = p.len();
    let (mut po, mut mo, mut so) = (
        vec![0.0f32; len],
        vec![0.0f32; len],
        vec![0.0f32; second.len()],
    );
    po.par_chunks_mut(mn)
        .zip(mo.par_chunks_mut(mn))
        .zip(so.par_chunks_mut(red))
        .enumerate()
        .for_each(|(k, ((po, mo), so))| {
            let r = k * mn..(k + 1) * mn;
            let (p, g, mom) = (&p[r.clone()], &g[r.clone()], &mom[r]);
            let second = &second[k * red..(k + 1) * red];
            let mut x = vec![0.0f32; mn];
            vectorized(
                #[inline(always)]
                || {
                    // Nesterov momentum.
                    let (w, mu) = ((1.0 - h.momentum) as f32, h.momentum as f32);
                    for i in 0..mn {
                        mo[i] = mom[i] + (g[i] - mom[i]) * w;
                        x[i] = g[i] + (mo[i] - g[i]) * mu;
                    }
                    // MuonEq: every row to the mean row norm.
                    let target = fro(&x) / (m as f64).sqrt() as f32;
                    for row in x.chunks_mut(n) {
                        let scale = target / fro(row).max(1e-6);
                        for v in row {
                            *v *= scale;
                        }
                    }
                },
            );
            polar_express(&mut x, m, n, h.ns_steps);
            vectorized(
                #[inline(always)]
                || {
                    // Muon+: the Frobenius norm of a semi-orthogonal matrix.
                    let scale = fro(&x).max(1e-6).recip() * (m.min(n) as f64).sqrt() as f32;
                    for v in x.iter_mut() {
                        *v *= scale;
                    }
                    // NorMuon: factored second moment over the larger dimension.
                    let red_size = if m >= n { n } else { m } as f32;
                    let mut v_mean = vec![0.0f32; red];
                    if m >= n {
                        for (vm, row) in v_mean.iter_mut().zip(x.chunks(n)) {
                            *vm = (sum_sq(row) / n as f64) as f32;
                        }
                    } else {
                        let mut acc = vec![0.0f64; n];
                        for row in x.chunks(n) {
                            for (a, &v) in acc.iter_mut().zip(row) {
                                *a += f64::from(v) * f64::from(v);
                            }
                        }
                        for (vm, a) in v_mean.iter_mut().zip(acc) {
                            *vm = (a / m as f64) as f32;
                        }
                    }
                    let v_norm = ((v_mean.iter().map(|&v| f64::from(v)).sum::<f64>() as f32)
                        * red_size)
                        .sqrt();
                    let w2 = (1.0 - h.beta2) as f32;
                    let mut scaled_sq_sum = 0.0f64;
                    for ((s, &so_in), &vm) in so.iter_mut().zip(second).zip(&v_mean) {
                        *s = so_in + (vm - so_in) * w2;
                        let step = s.max(1e-10).sqrt().recip();
                        scaled_sq_sum += f64::from(vm * red_size * (step * step));
                    }
                    let ratio = v_norm / (scaled_sq_sum as f32).sqrt().max(1e-10);
                    // Cautious weight decay and the update, aspect-ratio learning rate.
                    let lr64 = h.lr * (m as f64 / n as f64).max(1.0).sqrt();
                    let (lr, decay) = (lr64 as f32, (lr64 * h.weight_decay) as f32);
                    for (i, (po, &pv)) in po.iter_mut().zip(p).enumerate() {
                        let s = so[if m >= n { i / n } else { i % n }];
                        let gv = x[i] * (s.max(1e-10).sqrt().recip() * ratio);
                        let masked = if gv * pv >= 0.0 { pv * decay } else { 0.0 };
                        *po = pv - gv * lr - masked;
                    }
                },
            );
        });
    [po, mo, so]
}
