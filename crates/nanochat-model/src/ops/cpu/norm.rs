//! Row-wise and element-wise CPU kernels: RMSNorm, the rotary norm of queries and keys, ReLU²
//! and the logit soft cap, forward and backward, each one pass in parallel.
//!
//! RMSNorm of a row `x` (`C` wide): `r = 1/sqrt(mean(x²) + eps)`, `y = x·r`; backward
//! `dx = r·dy − r³·x·(dy·x)/C`. The rotary norm rotates first (`y1 = x1·cos + x2·sin`,
//! `y2 = x2·cos − x1·sin`), normalises the rotated row and scales it; its backward is the norm's
//! backward followed by the inverse rotation.

use rayon::prelude::*;

use super::simd::{self, vectorized};

/// Rows per parallel task.
const ROWS_PER_TASK: usize = 64;

/// `y = rms_norm(x)` over rows of `c`; returns `r` per row.
pub fn rms_norm(x: &[f32], y: &mut [f32], c: usize, eps: f32) -> Vec<f32> {
    let mut r = vec![0.0f32; x.len() / c.max(1)];
    x.par_chunks(c * ROWS_PER_TASK)
        .zip(y.par_chunks_mut(c * ROWS_PER_TASK))
        .zip(r.par_chunks_mut(ROWS_PER_TASK))
        .for_each(|((x, y), r)| {
            vectorized(
                #[inline(always)]
                || {
                    for ((x, y), r) in x.chunks(c).zip(y.chunks_mut(c)).zip(r) {
                        *r = 1.0 / (simd::dot(x, x) / c as f32 + eps).sqrt();
                        for (y, &x) in y.iter_mut().zip(x) {
                            *y = x * *r;
                        }
                    }
                },
            )
        });
    r
}

/// `dx` of [`rms_norm`], written over `dy`.
pub fn rms_norm_backward(x: &[f32], r: &[f32], dy: &mut [f32], c: usize) {
    x.par_chunks(c * ROWS_PER_TASK)
        .zip(dy.par_chunks_mut(c * ROWS_PER_TASK))
        .zip(r.par_chunks(ROWS_PER_TASK))
        .for_each(|((x, dy), r)| {
            vectorized(
                #[inline(always)]
                || {
                    for ((x, dy), &r) in x.chunks(c).zip(dy.chunks_mut(c)).zip(r) {
                        let k = r * r * r * simd::dot(dy, x) / c as f32;
                        for (d, &x) in dy.iter_mut().zip(x) {
                            *d = r * *d - k * x;
                        }
                    }
                },
            )
        });
}

/// The rotary tables and shape of a `[B, T, H, D]` input (rows of `D`, row `i` at position
/// `(i / H) % T`).
#[derive(Clone, Copy)]
pub struct Rotary<'a> {
    /// `cos` `[T, D/2]`.
    pub cos: &'a [f32],
    /// `sin` `[T, D/2]`.
    pub sin: &'a [f32],
    /// Positions.
    pub t: usize,
    /// Heads.
    pub h: usize,
    /// Head dimension.
    pub d: usize,
}

impl Rotary<'_> {
    #[inline(always)]
    fn tables(&self, row: usize) -> (&[f32], &[f32]) {
        let half = self.d / 2;
        let pos = (row / self.h) % self.t;
        (
            &self.cos[pos * half..(pos + 1) * half],
            &self.sin[pos * half..(pos + 1) * half],
        )
    }
}

/// `y = rms_norm(rotate(x)) · scale`; returns `r` per row.
pub fn rotary_norm(x: &[f32], y: &mut [f32], rot: Rotary<'_>, eps: f32, scale: f32) -> Vec<f32> {
    let d = rot.d;
    let half = d / 2;
    let mut r = vec![0.0f32; x.len() / d.max(1)];
    x.par_chunks(d * ROWS_PER_TASK)
        .zip(y.par_chunks_mut(d * ROWS_PER_TASK))
        .zip(r.par_chunks_mut(ROWS_PER_TASK))
        .enumerate()
        .for_each(|(task, ((x, y), r))| {
            vectorized(
                #[inline(always)]
                || {
                    for (i, ((x, y), r)) in x.chunks(d).zip(y.chunks_mut(d)).zip(r).enumerate() {
                        let (cos, sin) = rot.tables(task * ROWS_PER_TASK + i);
                        let (x1, x2) = x.split_at(half);
                        let (y1, y2) = y.split_at_mut(half);
                        for j in 0..half {
                            y1[j] = x1[j] * cos[j] + x2[j] * sin[j];
                            y2[j] = x2[j] * cos[j] - x1[j] * sin[j];
                        }
                        *r = 1.0 / (simd::dot(y, y) / d as f32 + eps).sqrt();
                        let k = *r * scale;
                        for y in y.iter_mut() {
                            *y *= k;
                        }
                    }
                },
            )
        });
    r
}

/// `dx` of [`rotary_norm`], written over `dy`.
pub fn rotary_norm_backward(x: &[f32], r: &[f32], dy: &mut [f32], rot: Rotary<'_>, scale: f32) {
    let d = rot.d;
    let half = d / 2;
    x.par_chunks(d * ROWS_PER_TASK)
        .zip(dy.par_chunks_mut(d * ROWS_PER_TASK))
        .zip(r.par_chunks(ROWS_PER_TASK))
        .enumerate()
        .for_each(|(task, ((x, dy), r))| {
            let mut y = vec![0.0f32; d];
            vectorized(
                #[inline(always)]
                || {
                    for (i, ((x, dy), &r)) in x.chunks(d).zip(dy.chunks_mut(d)).zip(r).enumerate() {
                        let (cos, sin) = rot.tables(task * ROWS_PER_TASK + i);
                        let (x1, x2) = x.split_at(half);
                        {
                            let (y1, y2) = y.split_at_mut(half);
                            for j in 0..half {
                                y1[j] = x1[j] * cos[j] + x2[j] * sin[j];
                                y2[j] = x2[j] * cos[j] - x1[j] * sin[j];
                            }
                        }
                        // Through the scale and the norm (dy ← d loss / d rotated).
                        let k = r * r * r * scale * simd::dot(dy, &y) / d as f32;
                        for (g, &y) in dy.iter_mut().zip(&y) {
                            *g = r * scale * *g - k * y;
                        }
                        // Through the rotation (its transpose).
                        let (g1, g2) = dy.split_at_mut(half);
                        for j in 0..half {
                            let (a, b) = (g1[j], g2[j]);
                            g1[j] = a * cos[j] - b * sin[j];
                            g2[j] = a * sin[j] + b * cos[j];
                        }
                    }
                },
            )
        });
}

/// `out[i] = f(a[i], out[i])` in parallel chunks, vectorised (`f` is inlined into the
/// dispatched loop: pass a closure).
#[inline(always)]
fn zip_map(a: &[f32], out: &mut [f32], f: impl Fn(f32, f32) -> f32 + Copy + Send + Sync) {
    const CHUNK: usize = 1 << 14;
    a.par_chunks(CHUNK)
        .zip(out.par_chunks_mut(CHUNK))
        .for_each(|(a, out)| {
            vectorized(
                #[inline(always)]
                || {
                    for (o, &a) in out.iter_mut().zip(a) {
                        *o = f(a, *o);
                    }
                },
            )
        });
}

/// `relu(x)²`.
pub fn relu_squared(x: &[f32], y: &mut [f32]) {
    zip_map(x, y, |x, _| {
        let r = x.max(0.0);
        r * r
    });
}

/// `dx = 2·relu(x)·dy`, written over `dy`.
pub fn relu_squared_backward(x: &[f32], dy: &mut [f32]) {
    zip_map(x, dy, |x, d| d * (2.0 * x.max(0.0)));
}

/// `y = cap · tanh(x / cap)`.
pub fn softcap(x: &[f32], y: &mut [f32], cap: f32) {
    let inv = 1.0 / cap;
    zip_map(x, y, |x, _| cap * simd::tanh(x * inv));
}

/// `dx = dy · (1 − (y / cap)²)`, written over `dy`.
pub fn softcap_backward(y: &[f32], dy: &mut [f32], cap: f32) {
    let inv = 1.0 / cap;
    zip_map(y, dy, |y, d| {
        let t = y * inv;
        d * (1.0 - t * t)
    });
}
