//! Rotary position embeddings as upstream applies them (`_precompute_rotary_embeddings` and
//! `apply_rotary_emb` in `nanochat/gpt.py`): half-split layout (the first and second halves of
//! the head dimension form the rotated pairs, not interleaved neighbours), frequencies
//! `base^(−2i/d)`, and upstream's sign convention — a rotation by −θ:
//! `y1 = x1·cos + x2·sin`, `y2 = −x1·sin + x2·cos`.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

/// Cosine and sine tables for positions `start..start + len`, shaped `[len, head_dim/2]`.
/// Computed in f32 exactly as upstream.
pub fn rope_tables<B: Backend>(
    start: usize,
    len: usize,
    head_dim: usize,
    base: f64,
    device: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let positions: Vec<usize> = (start..start + len).collect();
    rope_tables_at(&positions, head_dim, base, device)
}

/// The tables for the given positions, one row each (`[positions.len(), head_dim/2]`): a
/// ragged decode step, each row's token at its own position. Row `i` equals row
/// `positions[i]` of [`rope_tables`].
pub fn rope_tables_at<B: Backend>(
    positions: &[usize],
    head_dim: usize,
    base: f64,
    device: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let half = head_dim / 2;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| 1.0 / (base as f32).powf((2 * i) as f32 / head_dim as f32))
        .collect();
    let mut cos = Vec::with_capacity(positions.len() * half);
    let mut sin = Vec::with_capacity(positions.len() * half);
    for &t in positions {
        for f in &inv_freq {
            let angle = t as f32 * f;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    let shape = [positions.len(), half];
    (
        Tensor::from_data(TensorData::new(cos, shape), device),
        Tensor::from_data(TensorData::new(sin, shape), device),
    )
}

/// Rotates `x` (`[batch, len, heads, head_dim]`) by the tables from [`rope_tables`].
pub fn apply_rotary_emb<B: Backend>(
    x: Tensor<B, 4>,
    cos: &Tensor<B, 2>,
    sin: &Tensor<B, 2>,
) -> Tensor<B, 4> {
    crate::ops::reference::apply_rotary(x, cos, sin)
}

#[cfg(all(test, any(feature = "flex", feature = "ndarray")))]
mod tests {
    use super::*;
    use crate::TestBackend as Flex;

    #[test]
    fn rotation_preserves_norm_and_position_zero_is_identity() {
        let device = Default::default();
        let x = Tensor::<Flex, 4>::from_data(
            TensorData::new((0..16).map(|i| i as f32 * 0.1).collect(), [1, 2, 1, 8]),
            &device,
        );
        let (cos, sin) = rope_tables::<Flex>(0, 2, 8, 10_000.0, &device);
        let y = apply_rotary_emb(x.clone(), &cos, &sin);
        let (xv, yv) = (
            x.to_data().to_vec::<f32>().unwrap(),
            y.to_data().to_vec::<f32>().unwrap(),
        );
        assert_eq!(&xv[..8], &yv[..8], "position 0 is not rotated");
        let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>();
        assert!((norm(&xv[8..]) - norm(&yv[8..])).abs() < 1e-5);
        // Upstream's sign: first component of position 1, first pair: x1·cos(1) + x2·sin(1).
        let expect = xv[8] * 1f32.cos() + xv[12] * 1f32.sin();
        assert!((yv[8] - expect).abs() < 1e-6);
    }
}
