//! The blocked training ops on a backend without fused kernels, the path CUDA takes too: on
//! WGPU (in CI, Mesa's lavapipe) the training loss (`ops::linear_cross_entropy`) and the
//! training attention (`ops::attention` under autodiff: `ops::blocked_attention`) must give the
//! CPU's values and gradients, and the fusion graph's custom matmul node that CUDA's cuBLASLt
//! products go through must give the CPU's product. Runs only with `--features wgpu`, in a
//! process of its own (the forward test checks that a second process tunes no kernel, so
//! nothing else may tune beside it), with its kernel cache in a temporary folder (CubeCL's
//! default is a `target/` beside the crate's `Cargo.toml`: the source tree).
#![cfg(feature = "wgpu")]

use std::sync::OnceLock;
use std::time::Duration;

use burn::backend::wgpu::WgpuDevice;
use burn::backend::{Autodiff, Flex, Wgpu};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData, TensorPrimitive};
use nanochat_core::DeviceSpec;
use nanochat_model::ComputeDtype;
use nanochat_model::backend::configure_kernel_cache;
use nanochat_model::fixture::max_rel_diff;
use nanochat_model::kernel_cache;
use nanochat_model::op_parity::{AttentionCase, attention_values};
use nanochat_model::ops::{self, LossHead, blocked_attention, chunked_loss};

const LIMIT: Duration = Duration::from_secs(600);

/// `n` values of `sin(i · f)`.
fn wave(n: usize, f: f32) -> Vec<f32> {
    (0..n).map(|i| ((i as f32) * f).sin()).collect()
}

/// The inputs: x `[37, 24]`, lm_head `[24, 70]` (vocab 65 + padding), every fifth target
/// ignored, row weights.
fn inputs() -> (Vec<f32>, Vec<f32>, Vec<i64>, Vec<f32>) {
    let targets = (0..37i64)
        .map(|i| if i % 5 == 3 { -1 } else { (i * 7) % 65 })
        .collect();
    (
        wave(37 * 24, 0.37),
        wave(24 * 70, 0.91),
        targets,
        wave(37, 1.3),
    )
}

/// The op through `Autodiff<B>`: `(3 · sum, dx, dw)` as float vectors.
fn through_autodiff<B: ops::FusedOps>(device: &B::Device) -> (f32, Vec<f32>, Vec<f32>) {
    let (x, w, t, wt) = inputs();
    let x =
        Tensor::<Autodiff<B>, 2>::from_data(TensorData::new(x, [37, 24]), device).require_grad();
    let w =
        Tensor::<Autodiff<B>, 2>::from_data(TensorData::new(w, [24, 70]), device).require_grad();
    let t = Tensor::<Autodiff<B>, 1, Int>::from_data(TensorData::new(t, [37]), device);
    let wt = Tensor::<Autodiff<B>, 1>::from_data(TensorData::new(wt, [37]), device);
    let head = LossHead {
        vocab: 65,
        softcap: 15.0,
    };
    let loss = ops::linear_cross_entropy(x.clone(), w.clone(), t, Some(wt), head) * 3.0;
    let grads = loss.clone().backward();
    let v = |t: Tensor<B, 2>| t.into_data().convert::<f32>().to_vec::<f32>().unwrap();
    (
        loss.into_scalar().elem::<f32>(),
        v(x.grad(&grads).unwrap()),
        v(w.grad(&grads).unwrap()),
    )
}

/// The composition itself in blocks of 8 rows (a partial last block): `(sum, dx, dw)`.
fn blocked<B: ops::FusedOps>(device: &B::Device) -> (f32, Vec<f32>, Vec<f32>) {
    let (x, w, t, wt) = inputs();
    let p = |t: Tensor<B, 2>| t.into_primitive().tensor();
    let (sum, [dx, dw]) = chunked_loss::forward::<B>(
        (
            p(Tensor::from_data(TensorData::new(x, [37, 24]), device)),
            p(Tensor::from_data(TensorData::new(w, [24, 70]), device)),
        ),
        Tensor::<B, 1, Int>::from_data(TensorData::new(t, [37]), device).into_primitive(),
        Some(
            Tensor::<B, 1>::from_data(TensorData::new(wt, [37]), device)
                .into_primitive()
                .tensor(),
        ),
        LossHead {
            vocab: 65,
            softcap: 15.0,
        },
        [true, true],
        8,
    );
    let v = |t: TensorPrimitive<B>| {
        Tensor::<B, 2>::from_primitive(t)
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .unwrap()
    };
    let sum = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(sum)).into_scalar();
    (
        sum.elem::<f32>(),
        v(TensorPrimitive::Float(dx.unwrap())),
        v(TensorPrimitive::Float(dw.unwrap())),
    )
}

fn close(what: &str, got: (f32, Vec<f32>, Vec<f32>), want: (f32, Vec<f32>, Vec<f32>)) {
    let rel = max_rel_diff;
    assert!(
        rel(&[got.0], &[want.0]) < 1e-4,
        "{what}: sum {} vs {}",
        got.0,
        want.0
    );
    assert!(rel(&got.1, &want.1) < 1e-4, "{what}: dx");
    assert!(rel(&got.2, &want.2) < 1e-4, "{what}: dw");
}

/// Once per process: a watchdog (a stuck driver fails the test instead of hanging CI) and the
/// kernel cache in a temporary folder, before the first device use.
fn setup() -> WgpuDevice {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        std::thread::spawn(|| {
            std::thread::sleep(LIMIT);
            eprintln!("wgpu ops did not finish within {LIMIT:?}: the WGPU driver is stuck");
            std::process::exit(101);
        });
        let tmp = tempfile::tempdir().unwrap();
        kernel_cache::set_base_dir(tmp.path());
        let _ = configure_kernel_cache(DeviceSpec::Wgpu(None));
        tmp
    });
    WgpuDevice::DefaultDevice
}

#[test]
fn wgpu_blocked_loss_matches_cpu() {
    let gpu = setup();
    let cpu = through_autodiff::<Flex>(&Default::default());
    close(
        "autodiff on wgpu",
        through_autodiff::<Wgpu>(&gpu),
        cpu.clone(),
    );
    let cpu_sum = cpu.0 / 3.0;
    let blocked_cpu = blocked::<Flex>(&Default::default());
    assert!(
        (blocked_cpu.0 - cpu_sum).abs() <= 1e-4 * cpu_sum.abs(),
        "blocked cpu sum"
    );
    close("blocked on wgpu", blocked::<Wgpu>(&gpu), blocked_cpu);
}

/// The blocked composition itself in blocks of 8 rows (6 blocks, a partial last one) on `B`,
/// for q `[2, 45, 4, 16]` over k, v `[2, 45, 2, 16]` with `window`: the output and
/// `(dq, dk, dv)` for the output gradient `dy`, as float vectors.
fn attention_in_blocks<B: ops::FusedOps>(device: &B::Device, window: usize) -> [Vec<f32>; 4] {
    let x = |v: Vec<f32>, shape: [usize; 4]| {
        Tensor::<B, 4>::from_data(TensorData::new(v, shape), device)
            .into_primitive()
            .tensor()
    };
    let (qs, ks) = ([2, 45, 4, 16], [2, 45, 2, 16]);
    let q = x(wave(2 * 45 * 64, 0.37), qs);
    let k = x(wave(2 * 45 * 32, 0.91), ks);
    let v = x(wave(2 * 45 * 32, 1.3), ks);
    let dy = x(wave(2 * 45 * 64, 0.53), qs);
    let (out, lse) = blocked_attention::forward::<B>(q.clone(), k.clone(), v.clone(), window, 8);
    let [dq, dk, dv] = blocked_attention::backward::<B>((q, k, v), out.clone(), lse, dy, window, 8);
    [out, dq, dk, dv].map(|t| {
        Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(t))
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .unwrap()
    })
}

#[test]
fn wgpu_blocked_attention_matches_cpu() {
    let gpu = setup();
    // A full window (the causal diagonal masked inside each block) and a short one (blocks
    // that skip the oldest keys), through the autodiff node (one block at these sizes).
    for window in [1000, 7] {
        let case = AttentionCase {
            shape: [2, 45, 4, 2, 16],
            window,
        };
        let cpu = attention_values::<Autodiff<Flex>>(case, ComputeDtype::F32, &Default::default());
        let wgpu = attention_values::<Autodiff<Wgpu>>(case, ComputeDtype::F32, &gpu);
        for (i, name) in ["out", "dq", "dk", "dv"].iter().enumerate() {
            let e = max_rel_diff(&wgpu[i], &cpu[i]);
            assert!(e < 1e-4, "window {window}: {name} differs by {e}");
        }
    }
    // The composition itself in blocks of 8 rows with the short window: overlapping key
    // ranges, so dk and dv are accumulated across blocks in place (one key-range length, so
    // few new shapes to tune on lavapipe; the full window in blocks is checked on the CPU).
    let cpu = attention_in_blocks::<Flex>(&Default::default(), 7);
    let wgpu = attention_in_blocks::<Wgpu>(&gpu, 7);
    for (i, name) in ["out", "dq", "dk", "dv"].iter().enumerate() {
        let e = max_rel_diff(&wgpu[i], &cpu[i]);
        assert!(e < 1e-4, "blocks of 8: {name} differs by {e}");
    }
}

/// `op(l) · op(r) + 1` for `l = 2 · rows[3..]` of `lhs` (an offset view with element-wise work
/// before it) on `B`; `product` multiplies the two primitives.
fn product_around<B: burn::tensor::backend::Backend>(
    device: &B::Device,
    (lhs, ls): (&[f32], [usize; 2]),
    (rhs, rs): (&[f32], [usize; 2]),
    product: impl FnOnce(Tensor<B, 2>, Tensor<B, 2>) -> Tensor<B, 2>,
) -> Vec<f32> {
    let l = Tensor::<B, 2>::from_data(TensorData::new(lhs.to_vec(), ls), device);
    let l = l.narrow(0, 3, ls[0] - 3) * 2.0;
    let r = Tensor::<B, 2>::from_data(TensorData::new(rhs.to_vec(), rs), device);
    (product(l, r) + 1.0)
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .unwrap()
}

#[test]
fn wgpu_fusion_gemm_matches_cpu() {
    // The custom node of the fusion graph that CUDA's cuBLASLt products go through
    // (`ops::fusion_gemm`), here with CubeCL's matmul inside: every transpose combination, an
    // offset input view (as the blocked loss passes its blocks of rows), and fused element-wise
    // work on both sides of the node, against the CPU.
    use cubecl::wgpu::WgpuRuntime;
    use nanochat_model::ops::fusion_gemm::{cubecl_gemm, gemm};
    let gpu = setup();
    let (m, k, n) = (13, 24, 10);
    for trans in [[false, false], [false, true], [true, false], [true, true]] {
        let ls = if trans[0] { [k + 3, m] } else { [m + 3, k] };
        let rs = if trans[1] { [n, k] } else { [k, n] };
        let (lhs, rhs) = (wave(ls[0] * ls[1], 0.37), wave(rs[0] * rs[1], 0.91));
        let want = product_around::<Flex>(&Default::default(), (&lhs, ls), (&rhs, rs), |l, r| {
            let l = if trans[0] { l.transpose() } else { l };
            let r = if trans[1] { r.transpose() } else { r };
            l.matmul(r)
        });
        let got = product_around::<Wgpu>(&gpu, (&lhs, ls), (&rhs, rs), |l, r| {
            let (l, r) = (l.into_primitive().tensor(), r.into_primitive().tensor());
            let y = gemm::<WgpuRuntime>(l, r, trans, cubecl_gemm::<WgpuRuntime>);
            Tensor::from_primitive(TensorPrimitive::Float(y))
        });
        assert_eq!(got.len(), m * n, "{trans:?}: shape");
        let e = max_rel_diff(&got, &want);
        assert!(e < 1e-5, "{trans:?}: differs by {e}");
    }
}
