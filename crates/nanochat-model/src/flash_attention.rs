//! Causal attention with a per-layer sliding window and grouped key/value heads (upstream
//! `nanochat/flash_attention.py`, whose SDPA fallback defines the semantics): query row `r`
//! (at absolute position `Tk − Tq + r`) attends to key `c` iff `c ≤ Tk − Tq + r` and
//! `Tk − Tq + r − c ≤ window`, i.e. itself and at most `window` earlier tokens.
//!
//! Uses `burn::tensor::module::attention`, which backends may implement with fused kernels; when
//! the window does not cut anything the mask is left out in favour of `is_causal`.

use std::ops::Range;

use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Int, Tensor, TensorData};

/// Expands `[b, h_kv, t, d]` to `[b, h_kv · groups, t, d]`: query head `i` uses key/value
/// head `i / groups` (PyTorch's `enable_gqa` / `repeat_interleave` order).
pub fn repeat_kv<B: Backend>(x: Tensor<B, 4>, groups: usize) -> Tensor<B, 4> {
    if groups == 1 {
        return x;
    }
    let [b, h, t, d] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .expand([b, h, groups, t, d])
        .reshape([b, h * groups, t, d])
}

/// The boolean mask (true = masked) for `tq` queries ending at the last of `tk` keys.
pub fn window_mask<B: Backend>(
    tq: usize,
    tk: usize,
    window: usize,
    device: &B::Device,
) -> Tensor<B, 2, Bool> {
    block_mask::<B>(tk - tq..tk, 0..tk, window, device)
}

/// The boolean mask (true = masked) of the queries at absolute positions `rows` over the keys
/// at positions `cols`: key `c` is masked for query `a` iff `c > a` or `a − c > window`. Built
/// on the device from two ranges (no `rows × cols` upload).
pub fn block_mask<B: Backend>(
    rows: Range<usize>,
    cols: Range<usize>,
    window: usize,
    device: &B::Device,
) -> Tensor<B, 2, Bool> {
    let (n, m) = (rows.len(), cols.len());
    let rows = Tensor::<B, 1, Int>::arange(rows.start as i64..rows.end as i64, device)
        .reshape([n, 1])
        .expand([n, m]);
    let cols = Tensor::<B, 1, Int>::arange(cols.start as i64..cols.end as i64, device)
        .reshape([1, m])
        .expand([n, m]);
    let future = cols.clone().greater(rows.clone());
    let too_old = (rows - cols).greater_elem(window as i64);
    future.bool_or(too_old)
}

/// Attention of `q` (`[b, h, tq, d]`) over `k`, `v` (`[b, h_kv, tk, d]`), the queries being the
/// last `tq` of the `tk` positions, with scale `1/sqrt(d)`.
pub fn causal_window_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    window: usize,
) -> Tensor<B, 4> {
    let [b, h, tq, _] = q.dims();
    let [_, h_kv, tk, _] = k.dims();
    let groups = h / h_kv;
    let (k, v) = (repeat_kv(k, groups), repeat_kv(v, groups));
    let opts = |is_causal| AttentionModuleOptions {
        scale: None,
        softcap: None,
        is_causal,
    };
    if tq == 1 {
        // Decode: the newest token sees the last `window + 1` keys (the caller trims them).
        return attention(q, k, v, None, None, opts(false));
    }
    if tq == tk && window + 1 >= tk {
        return attention(q, k, v, None, None, opts(true));
    }
    let mask = window_mask::<B>(tq, tk, window, &q.device())
        .unsqueeze::<4>()
        .expand([b, h, tq, tk]);
    attention(q, k, v, Some(mask), None, opts(false))
}

/// A ragged decode step: one query per row (`q` `[b, h, 1, d]`), row `i`'s at position
/// `positions[i]`, over `k`, `v` (`[b, h_kv, tk, d]`, each row's keys from position 0): row
/// `i` sees keys `c` with `c ≤ positions[i]` and `positions[i] − c ≤ window`.
pub fn ragged_window_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    positions: &[usize],
    window: usize,
) -> Tensor<B, 4> {
    let [b, h, tq, _] = q.dims();
    let [_, h_kv, tk, _] = k.dims();
    assert!(
        tq == 1 && positions.len() == b,
        "a ragged step has one query per row"
    );
    let masked: Vec<bool> = positions
        .iter()
        .flat_map(|&p| (0..tk).map(move |c| c > p || p - c > window))
        .collect();
    let mask = Tensor::<B, 4, Bool>::from_data(TensorData::new(masked, [b, 1, 1, tk]), &q.device())
        .expand([b, h, 1, tk]);
    let groups = h / h_kv;
    let opts = AttentionModuleOptions {
        scale: None,
        softcap: None,
        is_causal: false,
    };
    attention(
        q,
        repeat_kv(k, groups),
        repeat_kv(v, groups),
        Some(mask),
        None,
        opts,
    )
}

#[cfg(all(test, any(feature = "flex", feature = "ndarray")))]
mod tests {
    use super::*;
    use crate::TestBackend as B;

    #[test]
    fn mask_allows_self_and_window_earlier_tokens() {
        let m = window_mask::<B>(4, 4, 1, &Default::default())
            .into_data()
            .to_vec::<bool>()
            .unwrap();
        // row r may see r-1 and r only.
        #[rustfmt::skip]
        let expect = [
            false, true,  true,  true,
            false, false, true,  true,
            true,  false, false, true,
            true,  true,  false, false,
        ];
        assert_eq!(m, expect);
        // Two new queries after two cached keys, window 8: plain causal with an offset.
        let m = window_mask::<B>(2, 4, 8, &Default::default())
            .into_data()
            .to_vec::<bool>()
            .unwrap();
        assert_eq!(m, [false, false, false, true, false, false, false, false]);
    }

    #[test]
    fn kv_heads_repeat_in_groups() {
        let x = Tensor::<B, 1, Int>::arange(0..2, &Default::default())
            .float()
            .reshape([1, 2, 1, 1]);
        let r = repeat_kv(x, 3).into_data().to_vec::<f32>().unwrap();
        assert_eq!(r, [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
    }
}
