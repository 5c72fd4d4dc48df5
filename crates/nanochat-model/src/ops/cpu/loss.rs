//! Fused soft-capped cross-entropy on the CPU: one pass per row block over the logits, in
//! parallel over rows, with the gradient written in place of the logits (the logits are
//! consumed: nothing else reads the lm_head output). Per row `z` (the first `vocab` columns):
//! `t = tanh(z/c)`, `s = c·t`, `loss = logsumexp(s) − s[target]`, and
//! `d loss / d z = (softmax(s) − onehot(target)) · (1 − t²)`; zero in the padding and on
//! ignored rows (target −1). Without a soft cap `t = z` and the factor is 1.
//!
//! [`linear_losses`] is the whole loss head (`lm_head` included) over blocks of rows, as in
//! [`crate::ops::chunked_loss`]: one block of logits in a buffer reused from block to block.

use rayon::prelude::*;

use super::gemm::{self, MatMut, MatRef};
use super::simd::{self, vectorized};
use crate::ops::LossHead;

/// Rows per parallel task (amortises dispatch and the scratch row).
const ROWS_PER_TASK: usize = 8;

/// Float32 elements of [`linear_losses`]' block of logits: 64 MiB, reused block to block.
pub const BLOCK_ELEMS: usize = 1 << 24;

/// The row's soft-capped logits `c·t` and the normalisation: `(t, max s, Σ e^{s − max})`.
#[inline(always)]
fn capped_row(z: &[f32], t: &mut [f32], cap: f32) -> (f32, f32) {
    if cap > 0.0 {
        let inv = 1.0 / cap;
        for (t, &z) in t.iter_mut().zip(z) {
            *t = simd::tanh(z * inv);
        }
    } else {
        t.copy_from_slice(z);
    }
    let c = if cap > 0.0 { cap } else { 1.0 };
    let m = c * simd::max(t);
    let sum = simd::sum_map(t, |t| simd::exp(c * t - m));
    (m, sum)
}

/// The loss of one row (`t`: scratch of `vocab` floats), and its `(max, sum)`.
#[inline(always)]
fn row_loss(z: &[f32], t: &mut [f32], target: usize, cap: f32) -> (f32, f32, f32) {
    let (m, sum) = capped_row(z, t, cap);
    let c = if cap > 0.0 { cap } else { 1.0 };
    (m + sum.ln() - c * t[target], m, sum)
}

/// Losses of `rows` (`[n, v_padded]` row-major) for `targets` (0 where the target is < 0).
pub fn losses(rows: &[f32], v_padded: usize, vocab: usize, targets: &[i64], cap: f32) -> Vec<f32> {
    let n = targets.len();
    assert_eq!(rows.len(), n * v_padded, "logits shape");
    let mut losses = vec![0.0f32; n];
    rows.par_chunks(v_padded * ROWS_PER_TASK)
        .zip(losses.par_chunks_mut(ROWS_PER_TASK))
        .zip(targets.par_chunks(ROWS_PER_TASK))
        .for_each(|((block, losses), targets)| {
            let mut t = vec![0.0f32; vocab];
            vectorized(
                #[inline(always)]
                || {
                    for ((row, loss), &target) in block.chunks(v_padded).zip(losses).zip(targets) {
                        if let Ok(target) = usize::try_from(target) {
                            *loss = row_loss(&row[..vocab], &mut t, target, cap).0;
                        }
                    }
                },
            );
        });
    losses
}

/// [`losses`], overwriting `rows` with `d loss / d z`.
pub fn losses_and_grad(
    rows: &mut [f32],
    v_padded: usize,
    vocab: usize,
    targets: &[i64],
    cap: f32,
) -> Vec<f32> {
    let n = targets.len();
    assert_eq!(rows.len(), n * v_padded, "logits shape");
    let mut losses = vec![0.0f32; n];
    let softcapped = cap > 0.0;
    let c = if softcapped { cap } else { 1.0 };
    rows.par_chunks_mut(v_padded * ROWS_PER_TASK)
        .zip(losses.par_chunks_mut(ROWS_PER_TASK))
        .zip(targets.par_chunks(ROWS_PER_TASK))
        .for_each(|((block, losses), targets)| {
            let mut t = vec![0.0f32; vocab];
            vectorized(
                #[inline(always)]
                || {
                    for ((row, loss), &target) in
                        block.chunks_mut(v_padded).zip(losses).zip(targets)
                    {
                        let Ok(target) = usize::try_from(target) else {
                            row.fill(0.0);
                            continue;
                        };
                        let (l, m, sum) = row_loss(&row[..vocab], &mut t, target, cap);
                        *loss = l;
                        let inv_sum = 1.0 / sum;
                        for (z, &t) in row[..vocab].iter_mut().zip(&t) {
                            let p = simd::exp(c * t - m) * inv_sum;
                            *z = if softcapped { p * (1.0 - t * t) } else { p };
                        }
                        let tt = t[target];
                        row[target] -= if softcapped { 1.0 - tt * tt } else { 1.0 };
                        row[vocab..].fill(0.0);
                    }
                },
            );
        });
    losses
}

/// Row `i` of `unit` (`[n, v]`) times `grad[i]`, in place.
pub fn scale_rows(unit: &mut [f32], v: usize, grad: &[f32]) {
    unit.par_chunks_mut(v * ROWS_PER_TASK)
        .zip(grad.par_chunks(ROWS_PER_TASK))
        .for_each(|(block, grad)| {
            vectorized(
                #[inline(always)]
                || {
                    for (row, &g) in block.chunks_mut(v).zip(grad) {
                        for x in row {
                            *x *= g;
                        }
                    }
                },
            )
        });
}

/// The loss head over blocks of `rows` rows: `Σ_r weight_r · loss_r` of `x` (`[n, k]`) through
/// `w` (`[k, v_padded]`), and `dx` (`[n, k]`), `dw` (`[k, v_padded]`) of that sum for those
/// asked for in `need`. Per block: the logits (one matrix product into the reused buffer),
/// [`losses_and_grad`] over them, then `dx` of the block's rows and `dw += xᵀ · grad`.
pub fn linear_losses(
    (x, w): (&[f32], &[f32]),
    (k, v_padded): (usize, usize),
    targets: &[i64],
    weights: Option<&[f32]>,
    head: LossHead,
    (need, rows): ([bool; 2], usize),
) -> (f32, [Option<Vec<f32>>; 2]) {
    let n = targets.len();
    assert_eq!(x.len(), n * k, "x shape");
    assert_eq!(w.len(), k * v_padded, "w shape");
    assert!(weights.is_none_or(|wt| wt.len() == n), "one weight per row");
    let (cap, rows) = (head.softcap as f32, rows.max(1));
    let mut dx = need[0].then(|| vec![0.0f32; n * k]);
    let mut dw = need[1].then(|| vec![0.0f32; k * v_padded]);
    let mut block = vec![0.0f32; rows.min(n) * v_padded];
    let mut total = 0.0f64;
    for r0 in (0..n).step_by(rows) {
        let r = rows.min(n - r0);
        let logits = &mut block[..r * v_padded];
        let xb = MatRef::new(x, r0 * k, (r, k), (k, 1));
        gemm::matmul_parallel(
            MatMut::new(logits, 0, (r, v_padded), v_padded),
            xb,
            MatRef::new(w, 0, (k, v_padded), (v_padded, 1)),
        );
        let targets = &targets[r0..r0 + r];
        let losses = if need.contains(&true) {
            losses_and_grad(logits, v_padded, head.vocab, targets, cap)
        } else {
            losses(logits, v_padded, head.vocab, targets, cap)
        };
        match weights.map(|wt| &wt[r0..r0 + r]) {
            Some(wt) => {
                total += losses
                    .iter()
                    .zip(wt)
                    .map(|(&l, &w)| f64::from(l * w))
                    .sum::<f64>();
                if need.contains(&true) {
                    scale_rows(logits, v_padded, wt);
                }
            }
            None => total += losses.iter().map(|&l| f64::from(l)).sum::<f64>(),
        }
        let grad = MatRef::new(logits, 0, (r, v_padded), (v_padded, 1));
        if let Some(dx) = dx.as_mut() {
            // dx = grad · wᵀ for the block's rows.
            gemm::matmul_parallel(
                MatMut::new(dx, r0 * k, (r, k), k),
                grad,
                MatRef::new(w, 0, (k, v_padded), (v_padded, 1)).t(),
            );
        }
        if let Some(dw) = dw.as_mut() {
            // dw += xᵀ · grad.
            gemm::matmul_parallel_into(
                MatMut::new(dw, 0, (k, v_padded), v_padded),
                xb.t(),
                grad,
                r0 > 0,
            );
        }
    }
    (total as f32, [dx, dw])
}
