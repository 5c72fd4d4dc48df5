//! The fused CPU kernels against the reference compositions: forward values and, through
//! `Autodiff<Flex>`, every input gradient, on shapes that exercise the edge cases (padding,
//! ignored targets, no soft cap, grouped heads, windows, partial blocks, queries after a
//! prefix of keys).

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Int, Tensor, TensorData};

use crate::ops::{self, reference};

type Ad = Autodiff<Flex>;

fn randn<const D: usize>(shape: [usize; D], seed: u64) -> Tensor<Ad, D> {
    let n: usize = shape.iter().product();
    // A small deterministic generator: the same inputs on every run.
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 3.0
        })
        .collect();
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

/// max |a − b| / max |b|.
fn rel<const D: usize>(a: Tensor<Ad, D>, b: Tensor<Ad, D>) -> f32 {
    let a = a.inner().into_data().to_vec::<f32>().unwrap();
    let b = b.inner().into_data().to_vec::<f32>().unwrap();
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
    a.iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

fn grad<const D: usize>(
    x: &Tensor<Ad, D>,
    g: &<Ad as burn::tensor::backend::AutodiffBackend>::Gradients,
) -> Tensor<Ad, D> {
    Tensor::from_inner(x.grad(g).expect("gradient"))
}

/// Targets of `n` rows over `vocab`, every fifth ignored.
fn some_targets(n: usize, vocab: usize) -> Tensor<Ad, 1, Int> {
    let t: Vec<i64> = (0..n as i64)
        .map(|i| {
            if i % 5 == 3 {
                -1
            } else {
                (i * 7) % vocab as i64
            }
        })
        .collect();
    Tensor::from_data(TensorData::new(t, [n]), &Default::default())
}

#[test]
fn cross_entropy_matches_reference_with_padding_ignores_and_without_cap() {
    let (n, vp, vocab) = (37, 70, 65);
    let targets = some_targets(n, vocab);
    for cap in [15.0, 0.0] {
        let x = (randn([n, vp], 1) * 4.0).require_grad();
        let w = randn([n], 2);
        let fused = ops::cross_entropy(x.clone(), targets.clone(), vocab, cap);
        let gf = (fused.clone() * w.clone()).sum().backward();
        let x2 = x.clone().detach().require_grad();
        let refr = reference::cross_entropy_losses(x2.clone(), targets.clone(), vocab, cap);
        let gr = (refr.clone() * w).sum().backward();
        assert!(rel(fused, refr) < 1e-5, "cap {cap}: losses");
        let (a, b) = (grad(&x, &gf), grad(&x2, &gr));
        assert!(rel(a.clone(), b) < 1e-5, "cap {cap}: gradient");
        // Padding columns and ignored rows get no gradient.
        let a = a.inner().into_data().to_vec::<f32>().unwrap();
        assert!(a[vocab..vp].iter().all(|&g| g == 0.0));
        assert!(a[3 * vp..4 * vp].iter().all(|&g| g == 0.0));
    }
}

#[test]
fn linear_cross_entropy_matches_the_unfused_loss_in_blocks_and_weighted() {
    // 37 rows in blocks of 8 (a partial last block), padding columns, ignored targets,
    // with and without the cap and row weights: the CPU kernel, the backend-generic blocked
    // composition and the op through autodiff against lm_head + the reference loss.
    let (n, k, vp, vocab) = (37, 24, 70, 65);
    let targets = some_targets(n, vocab);
    let x = randn([n, k], 11);
    let w = randn([k, vp], 12) * 0.5;
    for (cap, weighted) in [(15.0, false), (15.0, true), (0.0, true)] {
        let weights = weighted.then(|| randn([n], 13));
        let head = ops::LossHead {
            vocab,
            softcap: cap,
        };
        let (xr, wr) = (x.clone().require_grad(), w.clone().require_grad());
        let losses = reference::cross_entropy_losses(
            xr.clone().matmul(wr.clone()),
            targets.clone(),
            vocab,
            cap,
        );
        let want = match &weights {
            Some(wt) => (losses * wt.clone()).sum(),
            None => losses.sum(),
        };
        let gr = want.clone().backward();
        let (want_dx, want_dw) = (grad(&xr, &gr), grad(&wr, &gr));

        let (xf, wf) = (x.clone().require_grad(), w.clone().require_grad());
        let got = ops::linear_cross_entropy(
            xf.clone(),
            wf.clone(),
            targets.clone(),
            weights.clone(),
            head,
        );
        let gf = (got.clone() * 3.0).backward();
        let tag = format!("cap {cap}, weighted {weighted}");
        assert!(rel(got, want.clone()) < 1e-5, "{tag}: op sum");
        assert!(
            rel(grad(&xf, &gf), want_dx.clone() * 3.0) < 1e-5,
            "{tag}: op dx"
        );
        assert!(
            rel(grad(&wf, &gf), want_dw.clone() * 3.0) < 1e-5,
            "{tag}: op dw"
        );

        let (xv, wv) = (x.clone().inner().into_data(), w.clone().inner().into_data());
        let tv: Vec<i64> = targets
            .clone()
            .inner()
            .into_data()
            .convert::<i64>()
            .to_vec()
            .unwrap();
        let wtv = weights
            .as_ref()
            .map(|wt| wt.clone().inner().into_data().to_vec::<f32>().unwrap());
        let (xv, wv) = (xv.to_vec::<f32>().unwrap(), wv.to_vec::<f32>().unwrap());
        let (sum, [dx, dw]) = super::loss::linear_losses(
            (&xv, &wv),
            (k, vp),
            &tv,
            wtv.as_deref(),
            head,
            ([true, true], 8),
        );
        let back = |v: Vec<f32>, shape: [usize; 2]| {
            Tensor::<Ad, 2>::from_data(TensorData::new(v, shape), &Default::default())
        };
        assert!(
            rel(
                Tensor::<Ad, 1>::from_data([sum], &Default::default()),
                want.clone()
            ) < 1e-5,
            "{tag}: kernel sum"
        );
        assert!(
            rel(back(dx.expect("dx"), [n, k]), want_dx.clone()) < 1e-5,
            "{tag}: kernel dx"
        );
        assert!(
            rel(back(dw.expect("dw"), [k, vp]), want_dw.clone()) < 1e-5,
            "{tag}: kernel dw"
        );
        // Padding columns of lm_head get no gradient.
        let dwv = want_dw.clone().inner().into_data().to_vec::<f32>().unwrap();
        assert!(
            dwv.chunks(vp)
                .all(|row| row[vocab..].iter().all(|&g| g == 0.0))
        );

        let (sum, [dx, dw]) = ops::chunked_loss::forward::<Flex>(
            (
                x.clone().inner().into_primitive().tensor(),
                w.clone().inner().into_primitive().tensor(),
            ),
            targets.clone().inner().into_primitive(),
            weights
                .clone()
                .map(|wt| wt.inner().into_primitive().tensor()),
            head,
            [true, false],
            5,
        );
        assert!(dw.is_none(), "only what was asked for");
        let sum = Tensor::<Flex, 1>::from_primitive(burn::tensor::TensorPrimitive::Float(sum));
        let dx = Tensor::<Flex, 2>::from_primitive(burn::tensor::TensorPrimitive::Float(
            dx.expect("dx"),
        ));
        assert!(
            rel(Tensor::from_inner(sum), want) < 1e-5,
            "{tag}: blocked composition sum"
        );
        assert!(
            rel(Tensor::from_inner(dx), want_dx) < 1e-5,
            "{tag}: blocked composition dx"
        );
    }
}

#[test]
fn rms_norm_matches_reference() {
    let x = randn([5, 3, 48], 3).require_grad();
    let dy = randn([5, 3, 48], 4);
    let f = ops::rms_norm(x.clone(), 1e-6);
    let gf = (f.clone() * dy.clone()).sum().backward();
    let x2 = x.clone().detach().require_grad();
    let r = reference::rms_norm(x2.clone(), 1e-6);
    let gr = (r.clone() * dy).sum().backward();
    assert!(rel(f, r) < 1e-6);
    assert!(rel(grad(&x, &gf), grad(&x2, &gr)) < 1e-5);
}

#[test]
fn rotary_norm_matches_reference() {
    let (b, t, h, d) = (2, 7, 4, 16);
    let (cos, sin) = crate::rotary::rope_tables::<Ad>(3, t, d, 10_000.0, &Default::default());
    let x = randn([b, t, h, d], 5).require_grad();
    let dy = randn([b, t, h, d], 6);
    let f = ops::rotary_norm(x.clone(), &cos, &sin, 1e-6, 1.2);
    let gf = (f.clone() * dy.clone()).sum().backward();
    let x2 = x.clone().detach().require_grad();
    let r = reference::rotary_norm(x2.clone(), &cos, &sin, 1e-6, 1.2);
    let gr = (r.clone() * dy).sum().backward();
    assert!(rel(f, r) < 1e-6);
    assert!(rel(grad(&x, &gf), grad(&x2, &gr)) < 1e-5);
}

#[test]
fn attention_matches_reference_on_windows_groups_and_offsets() {
    // (b, tq, tk, h, hkv, d, window): two blocks with a partial one, grouped heads, a window
    // shorter than a block, queries after a prefix of keys.
    for (i, &(b, tq, tk, h, hkv, d, window)) in [
        (2, 70, 70, 4, 2, 16, 1000),
        (2, 70, 70, 4, 2, 16, 5),
        (1, 130, 130, 3, 3, 8, 64),
        (1, 3, 9, 2, 1, 8, 4),
    ]
    .iter()
    .enumerate()
    {
        let seed = 10 * i as u64;
        let q = randn([b, tq, h, d], seed).require_grad();
        let k = randn([b, tk, hkv, d], seed + 1).require_grad();
        let v = randn([b, tk, hkv, d], seed + 2).require_grad();
        let dy = randn([b, tq, h, d], seed + 3);
        let f = ops::attention(q.clone(), k.clone(), v.clone(), window);
        let gf = (f.clone() * dy.clone()).sum().backward();
        let [q2, k2, v2] = [&q, &k, &v].map(|x| x.clone().detach().require_grad());
        let r = reference::attention(q2.clone(), k2.clone(), v2.clone(), window);
        let gr = (r.clone() * dy).sum().backward();
        assert!(rel(f, r) < 1e-5, "case {i}: output");
        for (name, a, b) in [("q", &q, &q2), ("k", &k, &k2), ("v", &v, &v2)] {
            let e = rel(grad(a, &gf), grad(b, &gr));
            assert!(e < 1e-4, "case {i}: d{name} {e}");
        }
    }
}

#[test]
fn relu_squared_matches_reference() {
    let x = randn([3, 50], 7).require_grad();
    let dy = randn([3, 50], 8);
    let f = ops::relu_squared(x.clone());
    let gf = (f.clone() * dy.clone()).sum().backward();
    let x2 = x.clone().detach().require_grad();
    let r = burn::tensor::activation::relu(x2.clone()).square();
    let gr = (r.clone() * dy).sum().backward();
    assert!(rel(f, r) < 1e-7);
    assert!(rel(grad(&x, &gf), grad(&x2, &gr)) < 1e-6);
}

#[test]
fn inference_forward_without_autodiff_matches() {
    let (n, vp) = (9, 40);
    let x = randn([n, vp], 9).inner();
    let t = Tensor::<Flex, 1, Int>::from_data(
        TensorData::new((0..n as i64).collect::<Vec<_>>(), [n]),
        &Default::default(),
    );
    let a = ops::cross_entropy(x.clone(), t.clone(), 33, 15.0);
    let b = reference::cross_entropy_losses(x, t, 33, 15.0);
    let (a, b) = (
        a.into_data().to_vec::<f32>().unwrap(),
        b.into_data().to_vec::<f32>().unwrap(),
    );
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-5 * y.abs().max(1.0));
    }
}

#[test]
fn linear_matches_burn_linear() {
    let x = randn([3, 5, 24], 11).require_grad();
    let w = randn([24, 40], 12).require_grad();
    let dy = randn([3, 5, 40], 13);
    let f = ops::linear(x.clone(), w.clone());
    let gf = (f.clone() * dy.clone()).sum().backward();
    let (x2, w2) = (
        x.clone().detach().require_grad(),
        w.clone().detach().require_grad(),
    );
    let r = burn::tensor::module::linear(x2.clone(), w2.clone(), None);
    let gr = (r.clone() * dy).sum().backward();
    assert!(rel(f, r) < 1e-6);
    assert!(rel(grad(&x, &gf), grad(&x2, &gr)) < 1e-5);
    assert!(rel(grad(&w, &gf), grad(&w2, &gr)) < 1e-5);
    // Only the weight takes part: no gradient is asked for x.
    let xc = x.clone().detach();
    let g = ops::linear(xc, w.clone()).sum().backward();
    assert!(w.grad(&g).is_some());
}

#[test]
fn optimizer_updates_match_the_reference() {
    use crate::ops::optim::{self, AdamScalars, MuonHyper};
    let f = |t: Tensor<Ad, 1>| t.inner();
    let h = AdamScalars {
        lr: 0.01,
        betas: [0.8, 0.95],
        eps: 1e-10,
        weight_decay: 0.1,
        step: 3,
    };
    let (p, g, m, v) = (
        f(randn([40_000], 20)),
        f(randn([40_000], 21)),
        f(randn([40_000], 22) * 0.1),
        f(randn([40_000], 23).abs() * 0.01),
    );
    let fused = ops::adamw_step(p.clone(), g.clone(), m.clone(), v.clone(), &h);
    let refr = optim::adamw_update(p, g, m, v, &h);
    for (a, b) in fused.into_iter().zip(refr) {
        assert!(rel(Tensor::from_inner(a), Tensor::from_inner(b)) < 1e-6);
    }
    let h = MuonHyper {
        momentum: 0.95,
        lr: 0.02,
        weight_decay: 0.1,
        beta2: 0.9,
        ns_steps: 5,
        bf16: false,
    };
    // Tall, wide and square stacks.
    for (i, &(k, m, n)) in [(3, 48, 16), (2, 16, 40), (2, 24, 24)].iter().enumerate() {
        let s = 30 + 10 * i as u64;
        let second = if m >= n { [k, m, 1] } else { [k, 1, n] };
        let t3 = |t: Tensor<Ad, 3>| t.inner();
        let (p, g, mo, sec) = (
            t3(randn([k, m, n], s)),
            t3(randn([k, m, n], s + 1)),
            t3(randn([k, m, n], s + 2) * 0.5),
            t3(randn(second, s + 3).abs() * 0.01),
        );
        let fused = ops::muon_step(p.clone(), g.clone(), mo.clone(), sec.clone(), &h);
        let refr = optim::muon_update(p, g, mo, sec, &h);
        for (j, (a, b)) in fused.into_iter().zip(refr).enumerate() {
            let e = rel(Tensor::<Ad, 3>::from_inner(a), Tensor::from_inner(b));
            assert!(e < 1e-5, "case {i}, output {j}: {e}");
        }
    }
}

#[test]
fn softcap_matches_reference() {
    let x = (randn([4, 300], 50) * 20.0).require_grad();
    let dy = randn([4, 300], 51);
    let f = ops::softcap(x.clone(), 15.0);
    let gf = (f.clone() * dy.clone()).sum().backward();
    let x2 = x.clone().detach().require_grad();
    let r = (x2.clone() / 15.0).tanh() * 15.0;
    let gr = (r.clone() * dy).sum().backward();
    assert!(rel(f, r) < 1e-6);
    assert!(rel(grad(&x, &gf), grad(&x2, &gr)) < 1e-5);
}

#[test]
fn attention_reads_a_kv_cache_prefix_in_place() {
    // Keys/values as a strided view (a cache of 12 positions, 7 filled) give what the same
    // values made contiguous give.
    let (b, h, hkv, d) = (2, 4, 2, 8);
    let cache_k = randn([b, 12, hkv, d], 60).inner();
    let cache_v = randn([b, 12, hkv, d], 61).inner();
    let q = randn([b, 3, h, d], 62).inner();
    let (k, v) = (cache_k.narrow(1, 0, 7), cache_v.narrow(1, 0, 7));
    let strided = ops::attention(q.clone(), k.clone(), v.clone(), 4);
    let copied = ops::attention(q.clone(), k.clone() * 1.0, v.clone() * 1.0, 4);
    let refr = reference::attention(q, k, v, 4);
    let (a, c) = (
        Tensor::<Ad, 4>::from_inner(strided),
        Tensor::from_inner(copied),
    );
    assert!(rel(a.clone(), c) < 1e-7);
    assert!(rel(a, Tensor::from_inner(refr)) < 1e-5);
}

#[test]
fn ragged_attention_matches_reference_and_each_row_alone() {
    // Four cache rows of 20 positions, the queries at positions 3, 0, 19 and 11, window 6,
    // two query heads per kv head; keys read in place from the cache.
    let (b, tk, h, hkv, d, window) = (4, 20, 4, 2, 8, 6);
    let positions = [3, 0, 19, 11];
    let cache_k = randn([b, 24, hkv, d], 70).inner();
    let cache_v = randn([b, 24, hkv, d], 71).inner();
    let q = randn([b, 1, h, d], 72).inner();
    let (k, v) = (cache_k.narrow(1, 0, tk), cache_v.narrow(1, 0, tk));
    let fused = ops::ragged_attention(q.clone(), k.clone(), v.clone(), &positions, window);
    let refr = Tensor::<Flex, 4>::from_primitive(burn::tensor::TensorPrimitive::Float(
        reference::ragged_attention_prim::<Flex>(
            q.clone().into_primitive().tensor(),
            k.clone().into_primitive().tensor(),
            v.clone().into_primitive().tensor(),
            &positions,
            window,
        ),
    ));
    let fused_ad = Tensor::<Ad, 4>::from_inner(fused.clone());
    assert!(rel(fused_ad, Tensor::from_inner(refr)) < 1e-5);
    // Row r alone: the same kernel on that row gives the same bits; the prefill kernel (its
    // query as the last of its own positions[r] + 1 keys) the same values.
    let got = fused.into_data().to_vec::<f32>().unwrap();
    for (r, &p) in positions.iter().enumerate() {
        let row = |t: &Tensor<Flex, 4>| t.clone().narrow(0, r, 1);
        let alone = ops::ragged_attention(row(&q), row(&k), row(&v), &[p], window)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(&got[r * h * d..(r + 1) * h * d], &alone[..], "row {r}");
        let prefill = ops::attention(
            row(&q),
            row(&k).narrow(1, 0, p + 1),
            row(&v).narrow(1, 0, p + 1),
            window,
        )
        .into_data()
        .to_vec::<f32>()
        .unwrap();
        for (a, b) in alone.iter().zip(&prefill) {
            assert!((a - b).abs() < 1e-5, "row {r}: {a} vs {b}");
        }
    }
}
