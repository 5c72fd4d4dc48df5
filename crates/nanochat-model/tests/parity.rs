//! Numerical parity with upstream PyTorch (float32, CPU) on every fixture pair
//! `<name>.safetensors` + `<name>.json` in `$NANOCHAT_FIXTURE_DIR` (default
//! `../shared/fixtures/model`): logits, loss, every gradient, KV-cache decode logits, counts.

use std::collections::BTreeMap;

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Int, Tensor, TensorData};
use nanochat_core::paths::fixture_dir;
use nanochat_model::fixture::Fixture;
use nanochat_model::weights::{load_named, named_grads};
use nanochat_model::{Gpt, Reduction};

type B = Autodiff<Flex>;

fn fixtures() -> Vec<Fixture> {
    let dir = fixture_dir();
    let out = Fixture::all(&dir).unwrap_or_else(|e| panic!("fixture dir {}: {e}", dir.display()));
    assert!(!out.is_empty(), "no fixtures in {}", dir.display());
    out
}

fn f32s(d: &TensorData) -> Vec<f32> {
    d.clone().convert::<f32>().to_vec::<f32>().unwrap()
}

/// max |a − b| / max |b|.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let err = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    let scale = b.iter().map(|y| y.abs()).fold(0.0, f32::max).max(1e-12);
    err / scale
}

fn model(f: &Fixture) -> Gpt<B> {
    model_with(f, "param.")
}

fn model_with(f: &Fixture, prefix: &str) -> Gpt<B> {
    let mut m = Gpt::<B>::init(&f.config, &Default::default()).unwrap();
    load_named(&mut m, f.prefixed(prefix), &f.path).unwrap();
    m
}

fn ints(f: &Fixture, name: &str) -> Tensor<B, 2, Int> {
    let d = f.tensors[name].clone();
    let shape = d.shape.clone();
    let v: Vec<i64> = d.to_vec::<i64>().unwrap();
    Tensor::from_data(
        TensorData::new(v, [shape[0], shape[1]]),
        &Default::default(),
    )
}

#[test]
fn counts_match() {
    for f in fixtures() {
        let m = model(&f);
        let c = m.config();
        assert_eq!(
            c.padded_vocab_size() as u64,
            f.json["padded_vocab"].as_u64().unwrap(),
            "{}",
            f.name
        );
        let windows: Vec<u64> = c.window_sizes().iter().map(|w| w.left as u64).collect();
        let expect: Vec<u64> = f.json["window_sizes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w[0].as_u64().unwrap())
            .collect();
        assert_eq!(windows, expect, "{}", f.name);
        assert_eq!(
            m.estimate_flops(),
            f.json["flops_per_token"].as_u64().unwrap(),
            "{}",
            f.name
        );
        let counts = serde_json::to_value(m.num_scaling_params()).unwrap();
        assert_eq!(counts, f.json["num_scaling_params"], "{}", f.name);
        // The counts agree with the tensors actually built.
        let n: usize = nanochat_model::weights::named_tensors(&m)
            .unwrap()
            .iter()
            .map(|(_, d)| d.num_elements())
            .sum();
        assert_eq!(n as u64, m.num_scaling_params().total, "{}", f.name);
    }
}

#[test]
fn logits_loss_and_gradients_match() {
    for f in fixtures() {
        let m = model(&f);
        let idx = ints(&f, "input.idx");
        let targets = ints(&f, "input.targets");
        let logits = m.forward(idx.clone(), None);
        let e = rel_err(
            &f32s(&logits.into_data()),
            &f32s(&f.tensors["output.logits"]),
        );
        assert!(e < 1e-4, "{}: logits rel err {e}", f.name);
        let loss = m.forward_loss(idx, targets, Reduction::Mean);
        let got = f32s(&loss.to_data());
        let want = f32s(&f.tensors["output.loss"]);
        assert!(
            rel_err(&got, &want) < 1e-4,
            "{}: loss {got:?} vs {want:?}",
            f.name
        );
        let mut grads = loss.backward();
        let ours: BTreeMap<String, TensorData> =
            named_grads(&m, &mut grads).unwrap().into_iter().collect();
        let theirs = f.prefixed("grad.");
        assert_eq!(ours.len(), theirs.len(), "{}: gradient count", f.name);
        for (name, want) in theirs {
            let got = ours
                .get(&name)
                .unwrap_or_else(|| panic!("{}: no gradient for {name}", f.name));
            assert_eq!(got.shape, want.shape, "{}: {name}", f.name);
            let e = rel_err(&f32s(got), &f32s(&want));
            assert!(e < 1e-4, "{}: grad {name} rel err {e}", f.name);
        }
    }
}

/// The fixture generator ran its KV-cache decode after the two optimizer steps, so
/// `output.decode_logits` belong to the `step2.*` parameters (with `param.*` they differ by
/// 108 %, with `step2.*` by 3e-7); fixtures without optimizer steps use `param.*`.
#[test]
fn kv_cache_decode_matches() {
    for f in fixtures() {
        let has_step2 = f.tensors.keys().any(|k| k.starts_with("step2."));
        let m = model_with(&f, if has_step2 { "step2." } else { "param." });
        let prefill = f.json["decode_prefill"].as_u64().unwrap() as usize;
        let want = &f.tensors["output.decode_logits"];
        let steps = want.shape[1];
        let idx = ints(&f, "input.idx");
        let row: Tensor<B, 2, Int> = idx.clone().narrow(0, 0, 1);
        let mut cache = m.new_kv_cache(1, prefill + steps);
        let mut outs = Vec::new();
        let first = m.forward(row.clone().narrow(1, 0, prefill), Some(&mut cache));
        outs.push(first.narrow(1, prefill - 1, 1));
        for t in prefill..prefill + steps - 1 {
            outs.push(m.forward(row.clone().narrow(1, t, 1), Some(&mut cache)));
        }
        let got = Tensor::cat(outs, 1);
        let e = rel_err(&f32s(&got.into_data()), &f32s(want));
        assert!(e < 1e-4, "{}: decode logits rel err {e}", f.name);
        // The same cache equals a full forward at every position.
        let full = m.forward(row.narrow(1, 0, prefill + steps - 1), None);
        let tail = full.narrow(1, prefill - 1, steps);
        assert!(rel_err(&f32s(&tail.into_data()), &f32s(want)) < 1e-4);
    }
}

/// Continuous batching's decode: requests prefilled alone, copied into rows of one cache
/// (with a free row among them), then decoded together one token per row at their own
/// positions (past the short window), give each request's logits as decoding it alone does.
#[test]
fn ragged_batched_decode_matches_each_request_alone() {
    use burn::module::AutodiffModule;
    for f in fixtures() {
        let has_step2 = f.tensors.keys().any(|k| k.starts_with("step2."));
        let m = model_with(&f, if has_step2 { "step2." } else { "param." }).valid();
        let idx = ints(&f, "input.idx").inner();
        let (rows_in, t_in) = (idx.dims()[0], idx.dims()[1]);
        let steps = 12;
        // Prompt lengths around the short window; each request reads its own input row.
        let prompts: Vec<usize> = [t_in - steps, t_in / 3, t_in / 2]
            .into_iter()
            .filter(|&p| p > 0)
            .collect();
        let seq = |r: usize| idx.clone().narrow(0, r % rows_in, 1);
        let alone: Vec<Vec<f32>> = prompts
            .iter()
            .enumerate()
            .map(|(r, &p)| {
                let mut cache = m.new_kv_cache(1, p + steps);
                let mut out =
                    vec![
                        m.forward(seq(r).narrow(1, 0, p), Some(&mut cache))
                            .narrow(1, p - 1, 1),
                    ];
                for s in 0..steps - 1 {
                    out.push(m.forward(seq(r).narrow(1, p + s, 1), Some(&mut cache)));
                }
                f32s(&Tensor::cat(out, 1).into_data())
            })
            .collect();
        // Rows: request 0, a free row, request 1, request 2.
        let slots = [0usize, 2, 3];
        let max_len = prompts.iter().max().unwrap() + steps;
        let mut batch = m.new_kv_cache(4, max_len);
        let mut got: Vec<Vec<f32>> = vec![Vec::new(); prompts.len()];
        for (r, &p) in prompts.iter().enumerate() {
            let mut own = m.new_kv_cache(1, p);
            let logits = m.forward(seq(r).narrow(1, 0, p), Some(&mut own));
            got[r].extend(f32s(&logits.narrow(1, p - 1, 1).into_data()));
            batch.load_row(slots[r], &own, 0);
        }
        for s in 0..steps - 1 {
            let mut column = vec![0i64; 4];
            for (r, &p) in prompts.iter().enumerate() {
                let t = seq(r)
                    .narrow(1, p + s, 1)
                    .into_data()
                    .convert::<i64>()
                    .to_vec::<i64>()
                    .unwrap()[0];
                column[slots[r]] = t;
            }
            let ids = Tensor::from_data(TensorData::new(column, [4, 1]), &Default::default());
            let logits = m.forward(ids, Some(&mut batch));
            batch.clear_row(1);
            for (r, &slot) in slots.iter().enumerate() {
                got[r].extend(f32s(&logits.clone().narrow(0, slot, 1).into_data()));
            }
        }
        for (r, (a, g)) in alone.iter().zip(&got).enumerate() {
            let e = rel_err(g, a);
            assert!(e < 1e-5, "{}: request {r} rel err {e}", f.name);
        }
    }
}
