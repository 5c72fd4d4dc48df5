//! The fused ops on the CPU backend (burn-flex): float32 kernels on the tensors' storage,
//! parallel with rayon, vectorised at the CPU's width ([`simd`]), matrix products through the
//! `gemm` crate ([`gemm`]). Other dtypes (bf16 compute) take the reference path.

mod attention;
mod gemm;
mod loss;
mod norm;
mod optim;
mod pool;
mod simd;

use burn::backend::Flex;
use burn::backend::flex::{FlexTensor, Layout};
use burn::tensor::ops::{FloatTensor, IntTensor, ModuleOps};
use burn::tensor::{Bytes, DType, Shape};

use super::optim as optim_ref;
use super::{AdamScalars, FusedOps, LossHead, MuonHyper, chunked_loss, reference};

/// A new float32 tensor of `shape` holding `data`.
fn from_vec(data: Vec<f32>, shape: &[usize]) -> FlexTensor {
    FlexTensor::new(
        Bytes::from_elems(data),
        Layout::contiguous(Shape::from(shape.to_vec())),
        DType::F32,
    )
}

fn dims(t: &FlexTensor) -> Vec<usize> {
    t.layout().shape().to_vec()
}

/// The tensor in row-major order (a copy only when not contiguous). Consumes `t`, so that a
/// tensor nothing else holds stays unique (`to_contiguous` returns a second handle).
fn contiguous(t: FlexTensor) -> FlexTensor {
    let c = t.to_contiguous();
    drop(t);
    c
}

fn f32s(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("a contiguous float32 tensor (checked by the caller)")
}

/// The tensor's elements, row-major, in a buffer this kernel may overwrite: the tensor's own
/// when it is contiguous and nothing else holds it, else a copy.
fn owned_f32(t: FlexTensor) -> FlexTensor {
    let mut t = contiguous(t);
    if t.try_storage_mut::<f32>().is_none() || t.bytes().len() != t.layout().num_elements() * 4 {
        let data = f32s(&t).to_vec();
        t = from_vec(data, &dims(&t));
    }
    t
}

fn is_f32(ts: &[&FlexTensor]) -> bool {
    ts.iter().all(|t| t.dtype() == DType::F32)
}

/// Integer targets of any integer dtype as i64.
fn ints(t: FlexTensor) -> Vec<i64> {
    let t = contiguous(t);
    match t.dtype() {
        DType::I64 => t.as_slice::<i64>().map(<[i64]>::to_vec),
        DType::I32 => t
            .as_slice::<i32>()
            .map(|s| s.iter().map(|&x| i64::from(x)).collect()),
        DType::I16 => t
            .as_slice::<i16>()
            .map(|s| s.iter().map(|&x| i64::from(x)).collect()),
        DType::I8 => t
            .as_slice::<i8>()
            .map(|s| s.iter().map(|&x| i64::from(x)).collect()),
        DType::U32 => t
            .as_slice::<u32>()
            .map(|s| s.iter().map(|&x| i64::from(x)).collect()),
        other => panic!("cross-entropy targets must be integers, got {other:?}"),
    }
    .expect("contiguous after to_contiguous")
}

fn storage_mut(t: &mut FlexTensor) -> &mut [f32] {
    t.try_storage_mut::<f32>()
        .expect("a tensor this kernel owns (made by owned_f32 or from_vec)")
}

impl FusedOps for Flex {
    const FUSED: bool = true;

    fn run_ops<R: Send>(f: impl FnOnce() -> R + Send) -> R {
        pool::run_awake(f)
    }

    fn linear_forward(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        if !is_f32(&[&x, &w]) || dims(&w).len() != 2 {
            return <Self as ModuleOps<Self>>::linear(x, w, None);
        }
        let mut shape = dims(&x);
        let (k, n) = (dims(&w)[0], dims(&w)[1]);
        assert_eq!(shape.last(), Some(&k), "linear: x {shape:?} · w [{k}, {n}]");
        let m = x.layout().num_elements() / k.max(1);
        let (x, w) = (contiguous(x), contiguous(w));
        let mut y = vec![0.0f32; m * n];
        gemm::matmul_parallel(
            gemm::MatMut::new(&mut y, 0, (m, n), n),
            gemm::MatRef::new(f32s(&x), 0, (m, k), (k, 1)),
            gemm::MatRef::new(f32s(&w), 0, (k, n), (n, 1)),
        );
        if let Some(last) = shape.last_mut() {
            *last = n;
        }
        from_vec(y, &shape)
    }

    fn linear_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        need: [bool; 2],
    ) -> [Option<FloatTensor<Self>>; 2] {
        if !is_f32(&[&x, &w, &dy]) || dims(&w).len() != 2 {
            return reference::linear_vjp::<Self>(x, w, dy, need);
        }
        let xshape = dims(&x);
        let (k, n) = (dims(&w)[0], dims(&w)[1]);
        let m = x.layout().num_elements() / k.max(1);
        let (x, w, dy) = (contiguous(x), contiguous(w), contiguous(dy));
        let dyv = gemm::MatRef::new(f32s(&dy), 0, (m, n), (n, 1));
        let dx = need[0].then(|| {
            let mut dx = vec![0.0f32; m * k];
            // dx = dy · wᵀ.
            gemm::matmul_parallel(
                gemm::MatMut::new(&mut dx, 0, (m, k), k),
                dyv,
                gemm::MatRef::new(f32s(&w), 0, (k, n), (n, 1)).t(),
            );
            from_vec(dx, &xshape)
        });
        let dw = need[1].then(|| {
            let mut dw = vec![0.0f32; k * n];
            // dw = xᵀ · dy.
            gemm::matmul_parallel(
                gemm::MatMut::new(&mut dw, 0, (k, n), n),
                gemm::MatRef::new(f32s(&x), 0, (m, k), (k, 1)).t(),
                dyv,
            );
            from_vec(dw, &[k, n])
        });
        [dx, dw]
    }

    fn cross_entropy_forward(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        vocab: usize,
        softcap: f64,
        with_grad: bool,
    ) -> (FloatTensor<Self>, Option<FloatTensor<Self>>) {
        if !is_f32(&[&logits]) {
            return reference::cross_entropy_forward::<Self>(
                logits, targets, vocab, softcap, with_grad,
            );
        }
        let [n, v_padded] = dims(&logits)[..] else {
            panic!("cross-entropy logits must be [rows, vocab]");
        };
        assert!(vocab <= v_padded, "vocab {vocab} > logits width {v_padded}");
        let targets = ints(targets);
        assert_eq!(targets.len(), n, "one target per row");
        let cap = softcap as f32;
        if with_grad {
            let mut grad = owned_f32(logits);
            let losses =
                loss::losses_and_grad(storage_mut(&mut grad), v_padded, vocab, &targets, cap);
            (from_vec(losses, &[n]), Some(grad))
        } else {
            let logits = contiguous(logits);
            let losses = loss::losses(f32s(&logits), v_padded, vocab, &targets, cap);
            (from_vec(losses, &[n]), None)
        }
    }

    fn linear_cross_entropy_forward(
        (x, w): (FloatTensor<Self>, FloatTensor<Self>),
        targets: IntTensor<Self>,
        weights: Option<FloatTensor<Self>>,
        head: LossHead,
        need: [bool; 2],
    ) -> (FloatTensor<Self>, [Option<FloatTensor<Self>>; 2]) {
        let weights_f32 = weights.as_ref().is_none_or(|wt| is_f32(&[wt]));
        if !is_f32(&[&x, &w]) || !weights_f32 || dims(&x).len() != 2 || dims(&w).len() != 2 {
            let v_padded = dims(&w).last().copied().unwrap_or(1);
            let rows = chunked_loss::block_rows(v_padded, chunked_loss::BLOCK_ELEMS);
            return chunked_loss::forward::<Self>((x, w), targets, weights, head, need, rows);
        }
        let (xs, ws) = (dims(&x), dims(&w));
        assert_eq!(xs[1], ws[0], "linear cross-entropy: x {xs:?} · w {ws:?}");
        assert!(
            head.vocab <= ws[1],
            "vocab {} > lm_head width {}",
            head.vocab,
            ws[1]
        );
        let (x, w) = (contiguous(x), contiguous(w));
        let weights = weights.map(contiguous);
        let targets = ints(targets);
        assert_eq!(targets.len(), xs[0], "one target per row");
        let rows = chunked_loss::block_rows(ws[1], loss::BLOCK_ELEMS);
        let (sum, [dx, dw]) = loss::linear_losses(
            (f32s(&x), f32s(&w)),
            (ws[0], ws[1]),
            &targets,
            weights.as_ref().map(f32s),
            head,
            (need, rows),
        );
        (
            from_vec(vec![sum], &[1]),
            [dx.map(|d| from_vec(d, &xs)), dw.map(|d| from_vec(d, &ws))],
        )
    }

    fn cross_entropy_backward(
        unit: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if !is_f32(&[&unit, &grad]) {
            return reference::scale_rows::<Self>(unit, grad);
        }
        let v = dims(&unit)[1];
        let grad = contiguous(grad);
        let mut unit = owned_f32(unit);
        loss::scale_rows(storage_mut(&mut unit), v, f32s(&grad));
        unit
    }

    fn rms_norm_forward(
        x: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, Option<FloatTensor<Self>>) {
        if !is_f32(&[&x]) {
            return (reference::rms_norm_2d::<Self>(x, eps), None);
        }
        let shape = dims(&x);
        let x = contiguous(x);
        let mut y = vec![0.0f32; x.layout().num_elements()];
        let r = norm::rms_norm(f32s(&x), &mut y, shape[1], eps as f32);
        (from_vec(y, &shape), Some(from_vec(r, &shape[..1])))
    }

    fn rms_norm_backward(
        x: FloatTensor<Self>,
        saved: Option<FloatTensor<Self>>,
        dy: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        let Some(r) = saved.filter(|r| is_f32(&[&x, r, &dy])) else {
            return reference::vjp1::<Self, 2>(x, dy, |x| reference::rms_norm(x, eps));
        };
        let c = dims(&x)[1];
        let (x, r) = (contiguous(x), contiguous(r));
        let mut dy = owned_f32(dy);
        norm::rms_norm_backward(f32s(&x), f32s(&r), storage_mut(&mut dy), c);
        dy
    }

    fn rotary_norm_forward(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        eps: f64,
        scale: f64,
    ) -> (FloatTensor<Self>, Option<FloatTensor<Self>>) {
        if !is_f32(&[&x, &cos, &sin]) {
            return (
                reference::rotary_norm_prim::<Self>(x, cos, sin, eps, scale),
                None,
            );
        }
        let shape = dims(&x);
        let (x, cos, sin) = (contiguous(x), contiguous(cos), contiguous(sin));
        let rot = norm::Rotary {
            cos: f32s(&cos),
            sin: f32s(&sin),
            t: shape[1],
            h: shape[2],
            d: shape[3],
        };
        let mut y = vec![0.0f32; x.layout().num_elements()];
        let r = norm::rotary_norm(f32s(&x), &mut y, rot, eps as f32, scale as f32);
        (from_vec(y, &shape), Some(from_vec(r, &shape[..3])))
    }

    fn rotary_norm_backward(
        x: FloatTensor<Self>,
        saved: Option<FloatTensor<Self>>,
        dy: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        eps: f64,
        scale: f64,
    ) -> FloatTensor<Self> {
        let Some(r) = saved.filter(|r| is_f32(&[&x, r, &dy, &cos, &sin])) else {
            return reference::rotary_norm_vjp::<Self>(x, dy, (cos, sin), eps, scale);
        };
        let shape = dims(&x);
        let (x, r, cos, sin) = (
            contiguous(x),
            contiguous(r),
            contiguous(cos),
            contiguous(sin),
        );
        let rot = norm::Rotary {
            cos: f32s(&cos),
            sin: f32s(&sin),
            t: shape[1],
            h: shape[2],
            d: shape[3],
        };
        let mut dy = owned_f32(dy);
        norm::rotary_norm_backward(f32s(&x), f32s(&r), storage_mut(&mut dy), rot, scale as f32);
        dy
    }

    fn causal_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        window: usize,
    ) -> FloatTensor<Self> {
        Self::attention_forward(q, k, v, window).0
    }

    fn attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        window: usize,
    ) -> (FloatTensor<Self>, Option<FloatTensor<Self>>) {
        if !is_f32(&[&q, &k, &v]) {
            // bf16 (the kernel is float32): the blocked composition, as on a GPU.
            let (out, lse) = super::blocked_attention::forward_blocks::<Self>(q, k, v, window);
            return (out, Some(lse));
        }
        let sh = attention_shape(&q, &k, window);
        // Keys and values are read where they are (a KV cache's prefix is a strided view).
        let (k, k_at) = kv_rows(k);
        let (v, v_at) = kv_rows(v);
        let q = contiguous(q);
        let mut o = vec![0.0f32; q.layout().num_elements()];
        let mut lse = vec![0.0f32; sh.b * sh.tq * sh.h];
        attention::forward(
            &sh,
            f32s(&q),
            ((k.storage::<f32>(), k_at), (v.storage::<f32>(), v_at)),
            &mut o,
            &mut lse,
        );
        (
            from_vec(o, &dims(&q)),
            Some(from_vec(lse, &[sh.b, sh.tq, sh.h])),
        )
    }

    fn ragged_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        positions: &[usize],
        window: usize,
    ) -> FloatTensor<Self> {
        if !is_f32(&[&q, &k, &v]) {
            return reference::ragged_attention_prim::<Self>(q, k, v, positions, window);
        }
        let sh = attention_shape(&q, &k, window);
        let (k, k_at) = kv_rows(k);
        let (v, v_at) = kv_rows(v);
        let q = contiguous(q);
        let mut o = vec![0.0f32; q.layout().num_elements()];
        attention::forward_ragged(
            &sh,
            f32s(&q),
            ((k.storage::<f32>(), k_at), (v.storage::<f32>(), v_at)),
            positions,
            &mut o,
        );
        from_vec(o, &dims(&q))
    }

    fn kv_write(
        cache: FloatTensor<Self>,
        value: FloatTensor<Self>,
        at: &[(usize, usize)],
    ) -> FloatTensor<Self> {
        if !is_f32(&[&cache, &value]) {
            return reference::kv_write_prim::<Self>(cache, value, at);
        }
        let (cs, vs) = (dims(&cache), dims(&value));
        let (len, row) = (cs[1], vs[1] * vs[2] * vs[3]);
        assert!(
            cs.len() == 4 && vs.len() == 4 && cs[2..] == vs[2..] && at.len() == vs[0],
            "kv_write: cache {cs:?}, value {vs:?}, {} rows",
            at.len()
        );
        let mut cache = owned_f32(cache);
        let value = contiguous(value);
        let (src, dst) = (f32s(&value), storage_mut(&mut cache));
        for (r, &(b, pos)) in at.iter().enumerate() {
            assert!(
                b < cs[0] && pos + vs[1] <= len,
                "kv_write: row {b} at {pos} outside {cs:?}"
            );
            let off = (b * len + pos) * cs[2] * cs[3];
            dst[off..off + row].copy_from_slice(&src[r * row..(r + 1) * row]);
        }
        cache
    }

    fn attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        out: FloatTensor<Self>,
        saved: Option<FloatTensor<Self>>,
        dout: FloatTensor<Self>,
        window: usize,
    ) -> [FloatTensor<Self>; 3] {
        let Some(lse) = saved else {
            return reference::attention_vjp::<Self>(q, k, v, dout, window);
        };
        if !is_f32(&[&q, &k, &v, &out, &lse, &dout]) {
            let qkv = (q, k, v);
            return super::blocked_attention::backward_blocks::<Self>(qkv, out, lse, dout, window);
        }
        let sh = attention_shape(&q, &k, window);
        let (qs, ks) = (dims(&q), dims(&k));
        let [q, k, v, out, lse, dout] = [q, k, v, out, lse, dout].map(contiguous);
        let saved = attention::Saved {
            q: f32s(&q),
            k: f32s(&k),
            v: f32s(&v),
            o: f32s(&out),
            lse: f32s(&lse),
        };
        let (dq, dk, dv) = attention::backward(&sh, &saved, f32s(&dout));
        [from_vec(dq, &qs), from_vec(dk, &ks), from_vec(dv, &ks)]
    }

    fn relu_squared(x: FloatTensor<Self>) -> FloatTensor<Self> {
        if !is_f32(&[&x]) {
            return reference::relu_squared_prim::<Self>(x);
        }
        let shape = dims(&x);
        let x = contiguous(x);
        let mut y = vec![0.0f32; x.layout().num_elements()];
        norm::relu_squared(f32s(&x), &mut y);
        from_vec(y, &shape)
    }

    fn relu_squared_backward(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        if !is_f32(&[&x, &dy]) || dims(&x) != dims(&dy) {
            return reference::relu_squared_backward_prim::<Self>(x, dy);
        }
        let x = contiguous(x);
        let mut dy = owned_f32(dy);
        norm::relu_squared_backward(f32s(&x), storage_mut(&mut dy));
        dy
    }

    fn softcap(x: FloatTensor<Self>, cap: f64) -> FloatTensor<Self> {
        if !is_f32(&[&x]) || cap <= 0.0 {
            return reference::softcap_prim::<Self>(x, cap);
        }
        let shape = dims(&x);
        let x = contiguous(x);
        let mut y = vec![0.0f32; x.layout().num_elements()];
        norm::softcap(f32s(&x), &mut y, cap as f32);
        from_vec(y, &shape)
    }

    fn softcap_backward(
        y: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        cap: f64,
    ) -> FloatTensor<Self> {
        if !is_f32(&[&y, &dy]) || dims(&y) != dims(&dy) {
            return reference::softcap_backward_prim::<Self>(y, dy, cap);
        }
        let y = contiguous(y);
        let mut dy = owned_f32(dy);
        norm::softcap_backward(f32s(&y), storage_mut(&mut dy), cap as f32);
        dy
    }

    fn adamw_update(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        exp_avg: FloatTensor<Self>,
        exp_avg_sq: FloatTensor<Self>,
        h: &AdamScalars,
    ) -> [FloatTensor<Self>; 3] {
        let shape = dims(&param);
        let same = [&grad, &exp_avg, &exp_avg_sq]
            .iter()
            .all(|t| dims(t) == shape);
        if !is_f32(&[&param, &grad, &exp_avg, &exp_avg_sq]) || !same {
            return optim_ref::adamw_update_prim::<Self>([param, grad, exp_avg, exp_avg_sq], h);
        }
        let [p, g, m, v] = [param, grad, exp_avg, exp_avg_sq].map(contiguous);
        optim::adamw(f32s(&p), f32s(&g), f32s(&m), f32s(&v), h).map(|v| from_vec(v, &shape))
    }

    fn muon_update(
        params: FloatTensor<Self>,
        grads: FloatTensor<Self>,
        momentum: FloatTensor<Self>,
        second: FloatTensor<Self>,
        h: &MuonHyper,
    ) -> [FloatTensor<Self>; 3] {
        let shape = dims(&params);
        let sshape = dims(&second);
        let fits = shape.len() == 3
            && dims(&grads) == shape
            && dims(&momentum) == shape
            && sshape.len() == 3
            && sshape[0] == shape[0]
            && sshape[1] * sshape[2] == shape[1].max(shape[2])
            && (if shape[1] >= shape[2] {
                sshape[2] == 1
            } else {
                sshape[1] == 1
            });
        if h.bf16 || !fits || !is_f32(&[&params, &grads, &momentum, &second]) {
            return optim_ref::muon_update_prim::<Self>([params, grads, momentum, second], h);
        }
        let [p, g, m, v] = [params, grads, momentum, second].map(contiguous);
        let [po, mo, so] = optim::muon(
            (f32s(&p), f32s(&g), f32s(&m), f32s(&v)),
            (shape[1], shape[2]),
            h,
        );
        [
            from_vec(po, &shape),
            from_vec(mo, &shape),
            from_vec(so, &sshape),
        ]
    }
}

/// A `[B, T, H, D]` tensor whose rows of `H · D` are contiguous, with where it starts and its
/// batch stride (a copy when its layout is anything else).
fn kv_rows(t: FlexTensor) -> (FlexTensor, attention::KvAt) {
    let shape = dims(&t);
    let l = t.layout();
    let st = l.strides();
    let (tk, h, d) = (shape[1], shape[2], shape[3]);
    let rows_ok = (d <= 1 || st[3] == 1)
        && (h <= 1 || st[2] == d as isize)
        && (tk <= 1 || st[1] == (h * d) as isize)
        && st[0] >= 0;
    if rows_ok {
        let at = attention::KvAt {
            offset: l.start_offset(),
            bstride: if shape[0] <= 1 { 0 } else { st[0] as usize },
        };
        return (t, at);
    }
    let t = contiguous(t);
    let at = attention::KvAt {
        offset: 0,
        bstride: tk * h * d,
    };
    (t, at)
}

fn attention_shape(q: &FlexTensor, k: &FlexTensor, window: usize) -> attention::Shape {
    let [b, tq, h, d] = <[usize; 4]>::try_from(dims(q)).expect("q is [B, T, H, D]");
    let [bk, tk, hkv, dk] = <[usize; 4]>::try_from(dims(k)).expect("k is [B, T, H_kv, D]");
    assert!(
        b == bk && d == dk && hkv > 0 && h % hkv == 0 && tq <= tk,
        "attention shapes q {:?} k {:?}",
        dims(q),
        dims(k)
    );
    attention::Shape {
        b,
        tq,
        tk,
        h,
        hkv,
        d,
        window,
    }
}

#[cfg(test)]
mod tests;
