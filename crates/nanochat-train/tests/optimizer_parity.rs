//! MuonAdamW parity with upstream: from every fixture's `param.*` and `grad.*`, one step must
//! give `step1.*` and a second step (fresh backward of the same batch at the step-1 weights)
//! `step2.*`, within 1e-5 absolute, for every fixture pair in `$NANOCHAT_FIXTURE_DIR`.
//! Also: state save → load → step equals an uninterrupted step exactly.

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::backend::{Autodiff, Flex};
use burn::optim::GradientsParams;
use burn::tensor::{Int, Tensor, TensorData};
use nanochat_core::paths::fixture_dir;
use nanochat_core::{ModelConfig, OptimizerConfig};
use nanochat_model::weights::{load_named, named_tensors, param_infos, read_safetensors};
use nanochat_model::{Gpt, Reduction};
use nanochat_train::{GroupLrs, MuonAdamW, StepScalars};

type B = Autodiff<Flex>;

struct Fixture {
    name: String,
    config: ModelConfig,
    tensors: BTreeMap<String, TensorData>,
    path: PathBuf,
}

fn fixtures() -> Vec<Fixture> {
    let dir = fixture_dir();
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("safetensors")
            || !path.with_extension("json").exists()
        {
            continue;
        }
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path.with_extension("json")).unwrap()).unwrap();
        let tensors: BTreeMap<_, _> = read_safetensors(&std::fs::read(&path).unwrap(), "", &path)
            .unwrap()
            .into_iter()
            .collect();
        if !tensors.keys().any(|k| k.starts_with("step1.")) {
            continue;
        }
        out.push(Fixture {
            name: path.file_stem().unwrap().to_string_lossy().into_owned(),
            config: serde_json::from_value(json["config"].clone()).unwrap(),
            tensors,
            path,
        });
    }
    assert!(
        !out.is_empty(),
        "no optimizer fixtures in {}",
        dir.display()
    );
    out
}

fn prefixed(f: &Fixture, prefix: &str) -> Vec<(String, TensorData)> {
    f.tensors
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|n| (n.to_string(), v.clone())))
        .collect()
}

fn ints(f: &Fixture, name: &str) -> Tensor<B, 2, Int> {
    let d = f.tensors[name].clone();
    let s = d.shape.clone();
    Tensor::from_data(
        TensorData::new(d.to_vec::<i64>().unwrap(), [s[0], s[1]]),
        &Default::default(),
    )
}

/// The fixture's `setup_optimizer(unembedding_lr=0.004, embedding_lr=0.2, matrix_lr=0.02,
/// weight_decay=0.1, scalar_lr=0.5)` with the group defaults (momentum 0.95), multiplier 1.
fn fixture_optimizer(m: &Gpt<B>) -> (MuonAdamW<Flex>, StepScalars) {
    let cfg = OptimizerConfig {
        unembedding_lr: 0.004,
        embedding_lr: 0.2,
        matrix_lr: 0.02,
        scalar_lr: 0.5,
        ..OptimizerConfig::default()
    };
    let opt = MuonAdamW::new(m, &cfg, &GroupLrs::scaled(&cfg, 1.0)).unwrap();
    let s = StepScalars {
        lr_multiplier: 1.0,
        muon_momentum: 0.95,
        muon_weight_decay: 0.1,
    };
    (opt, s)
}

/// The fixture's gradients (PyTorch layout) registered under the model's parameter ids.
fn fixture_grads(f: &Fixture, m: &Gpt<B>) -> GradientsParams {
    let grads: BTreeMap<_, _> = prefixed(f, "grad.").into_iter().collect();
    let mut out = GradientsParams::new();
    let dev = Default::default();
    for info in param_infos(m) {
        let d = grads[&info.name].clone().convert::<f32>();
        match info.shape.len() {
            1 => out.register::<Flex, 1>(info.id, Tensor::from_data(d, &dev)),
            _ => {
                let t = Tensor::<Flex, 2>::from_data(d, &dev);
                out.register::<Flex, 2>(
                    info.id,
                    if info.transposed {
                        t.swap_dims(0, 1)
                    } else {
                        t
                    },
                )
            }
        }
    }
    out
}

fn backward_grads(f: &Fixture, m: &Gpt<B>) -> GradientsParams {
    let loss = m.forward_loss(
        ints(f, "input.idx"),
        ints(f, "input.targets"),
        Reduction::Mean,
    );
    GradientsParams::from_grads(loss.backward(), m)
}

/// Elements further than 1e-5 from upstream: `(name, index, ours, theirs)`, and the max error.
fn compare(f: &Fixture, m: &Gpt<B>, prefix: &str) -> (f32, Vec<(String, usize, f32, f32)>) {
    let want: BTreeMap<_, _> = prefixed(f, prefix).into_iter().collect();
    let got = named_tensors(m).unwrap();
    assert_eq!(got.len(), want.len(), "{}: parameter count", f.name);
    let mut worst = 0.0f32;
    let mut off = Vec::new();
    for (name, d) in got {
        let a = d.convert::<f32>().to_vec::<f32>().unwrap();
        let b = want[&name]
            .clone()
            .convert::<f32>()
            .to_vec::<f32>()
            .unwrap();
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            let e = (x - y).abs();
            worst = worst.max(e);
            if e > 1e-5 {
                off.push((name.clone(), i, *x, *y));
            }
        }
    }
    (worst, off)
}

fn values(f: &Fixture, key: &str) -> Vec<f32> {
    f.tensors[key]
        .clone()
        .convert::<f32>()
        .to_vec::<f32>()
        .unwrap()
}

fn load(f: &Fixture) -> Gpt<B> {
    let mut m = Gpt::<B>::init(&f.config, &Default::default()).unwrap();
    load_named(&mut m, prefixed(f, "param."), &f.path).unwrap();
    m
}

/// Step 1 (upstream's own gradients) must match everywhere within 1e-5.
///
/// Step 2 runs on *our* fresh backward at the step-1 weights (the fixture holds no step-2
/// gradients), which differs from PyTorch's by float32 rounding (~1e-7). Two rules of the update
/// are discontinuous in the gradient and turn such rounding into visible differences in a
/// handful of elements: cautious weight decay (the mask `g·p ≥ 0` flips where `g·p ≈ 0`, moving
/// the element by exactly `lr_eff·wd·|p|`), and AdamW where two steps' gradients nearly cancel
/// (`m/√v` becomes ill-conditioned). Step 2 therefore must match within 1e-5 everywhere
/// except: Muon elements whose difference *is* the decay term (a flip), and at most 0.05 % of
/// an AdamW tensor's elements, each within 1e-4.
#[test]
fn one_and_two_steps_match_upstream() {
    for f in fixtures() {
        let m = load(&f);
        let (mut opt, s) = fixture_optimizer(&m);
        let grads = fixture_grads(&f, &m);
        let m = opt.step(m, grads, &s).unwrap();
        let (e1, off1) = compare(&f, &m, "step1.");
        assert!(
            off1.is_empty(),
            "{}: step 1 max abs err {e1}: {:?}",
            f.name,
            &off1[..off1.len().min(5)]
        );
        let grads = backward_grads(&f, &m);
        let m = opt.step(m, grads, &s).unwrap();
        let (e2, off2) = compare(&f, &m, "step2.");
        let shapes: BTreeMap<String, Vec<usize>> = param_infos(&m)
            .into_iter()
            .map(|i| (i.name, i.shape))
            .collect();
        let mut flips = 0;
        let mut per_tensor: BTreeMap<String, usize> = BTreeMap::new();
        for (name, i, ours, theirs) in &off2 {
            let shape = &shapes[name];
            if name.starts_with("transformer.h.") {
                let lr_eff = 0.02 * (shape[0] as f32 / shape[1] as f32).max(1.0).sqrt();
                let p1 = values(&f, &format!("step1.{name}"))[*i];
                let decay = lr_eff * s.muon_weight_decay as f32 * p1.abs();
                assert!(
                    ((ours - theirs).abs() - decay).abs() < 1e-6,
                    "{}: {name}[{i}] differs by {} which is not a cautious-decay flip ({decay})",
                    f.name,
                    (ours - theirs).abs()
                );
                flips += 1;
            } else {
                assert!(
                    (ours - theirs).abs() < 1e-4,
                    "{}: {name}[{i}]: {ours} vs {theirs}",
                    f.name
                );
                *per_tensor.entry(name.clone()).or_default() += 1;
            }
        }
        for (name, n) in &per_tensor {
            let total: usize = shapes[name].iter().product();
            assert!(
                *n as f64 <= 0.0005 * total as f64,
                "{}: {name}: {n} of {total} elements off",
                f.name
            );
        }
        eprintln!(
            "{}: step 1 max abs err {e1:.2e}; step 2 max abs err {e2:.2e}, {} element(s) > 1e-5 ({flips} cautious-decay flips, AdamW {per_tensor:?})",
            f.name,
            off2.len()
        );
    }
}

#[test]
fn state_round_trip_resumes_exactly() {
    let f = fixtures().into_iter().next().unwrap();
    let m = load(&f);
    let (mut opt, s) = fixture_optimizer(&m);
    let grads = fixture_grads(&f, &m);
    let m = opt.step(m, grads, &s).unwrap();
    // Restore the state into a fresh optimizer and take step 2 on both.
    let saved = opt.state_tensors();
    let (mut fresh, _) = fixture_optimizer(&m);
    fresh
        .load_state_tensors(saved, &Default::default())
        .unwrap();
    assert_eq!(fresh.steps_taken(), 1);
    let a = opt.step(m.clone(), backward_grads(&f, &m), &s).unwrap();
    let b = fresh.step(m.clone(), backward_grads(&f, &m), &s).unwrap();
    assert_eq!(named_tensors(&a).unwrap(), named_tensors(&b).unwrap());
    // State that does not fit is refused with the offending name.
    let mut bad = opt.state_tensors();
    bad.push((
        "adamw.nope.exp_avg".into(),
        TensorData::new(vec![0f32], [1]),
    ));
    let err = fresh
        .load_state_tensors(bad, &Default::default())
        .unwrap_err();
    assert!(err.to_string().contains("adamw.nope.exp_avg"), "{err}");
}
