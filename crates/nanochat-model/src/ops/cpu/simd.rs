//! Element-wise math for the CPU kernels, written as plain loops that the compiler vectorises at
//! the width [`vectorized`] selects at run time (AVX-512, AVX2+FMA or the baseline, through
//! `pulp`'s dispatch), with `exp` and `tanh` as branch-free polynomials (Cephes' `expf` and
//! `tanhf`, ≤ 2 ulp on the ranges used) so that they vectorise too — libm's scalar `expf` /
//! `tanhf` were 14 % of a training step.

// The polynomial coefficients are Cephes' as published.
#![allow(clippy::excessive_precision)]

/// Runs `f` compiled for the widest SIMD instruction set this CPU has. Everything `f` calls
/// must be `#[inline(always)]` to be compiled that way too.
#[inline(always)]
pub fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    pulp::Arch::new().dispatch(f)
}

/// Lanes of the accumulators in reductions (one AVX-512 register of f32).
pub const LANES: usize = 16;

/// `e^x`, for `x` clamped to `[−87.3, 88.3]` (the range where `2^n` is a normal float).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.3, 88.3);
    let n = (x * LOG2E).round_ties_even();
    let r = x - n * C1 - n * C2;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5.000_000_1e-1;
    let p = p * r * r + r + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    p * scale
}

/// `tanh(x)`.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let a = x.abs();
    // |x| ≥ 0.625: 1 − 2 / (e^{2|x|} + 1), sign restored.
    let e = exp((2.0 * a).min(44.0));
    let big = 1.0 - 2.0 / (e + 1.0);
    // |x| < 0.625: odd polynomial.
    let z = x * x;
    let p = -5.704_988_7e-3_f32;
    let p = p * z + 2.063_908_9e-2;
    let p = p * z - 5.373_971_6e-2;
    let p = p * z + 1.333_144_2e-1;
    let p = p * z - 3.333_328_2e-1;
    let small = p * z * x + x;
    if a >= 0.625 { big.copysign(x) } else { small }
}

/// The maximum of `xs` (−∞ when empty), in `LANES` independent lanes.
#[inline(always)]
pub fn max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] = acc[i].max(c[i]);
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &x in tail.iter().chain(acc.iter()) {
        m = m.max(x);
    }
    m
}

/// `Σ f(x)` over `xs`, in `LANES` independent partial sums.
#[inline(always)]
pub fn sum_map(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += f(c[i]);
        }
    }
    let mut s = 0.0;
    for &x in tail {
        s += f(x);
    }
    s + acc.iter().sum::<f32>()
}

/// `Σ a·b`, in `LANES` independent partial sums.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f32; LANES];
    let ca = a.chunks_exact(LANES);
    let cb = b.chunks_exact(LANES);
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = 0.0;
    for (x, y) in ta.iter().zip(tb) {
        s += x * y;
    }
    s + acc.iter().sum::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_tanh_match_libm_within_a_few_ulp() {
        let mut worst_exp = 0.0f64;
        let mut worst_tanh = 0.0f64;
        for i in -200_000..=200_000 {
            let x = i as f32 * 4e-4; // −80 … 80
            let (want, got) = ((x as f64).exp(), exp(x) as f64);
            worst_exp = worst_exp.max(((got - want) / want).abs());
            let y = x / 8.0;
            let (want, got) = ((y as f64).tanh(), tanh(y) as f64);
            if want != 0.0 {
                worst_tanh = worst_tanh.max(((got - want) / want).abs());
            }
        }
        assert!(worst_exp < 4e-7, "exp: {worst_exp}");
        assert!(worst_tanh < 4e-7, "tanh: {worst_tanh}");
        assert_eq!(tanh(0.0), 0.0);
        assert_eq!(tanh(50.0), 1.0);
        assert_eq!(tanh(-50.0), -1.0);
        assert!(exp(-200.0) < 1e-37);
    }

    #[test]
    fn reductions_cover_tails() {
        let xs: Vec<f32> = (0..37).map(|i| (i as f32 - 20.0) * 0.5).collect();
        assert_eq!(max(&xs), 8.0);
        assert_eq!(max(&[]), f32::NEG_INFINITY);
        let s: f32 = xs.iter().map(|x| x * x).sum();
        assert!((sum_map(&xs, |x| x * x) - s).abs() < 1e-3);
        assert!((dot(&xs, &xs) - s).abs() < 1e-3);
    }
}
