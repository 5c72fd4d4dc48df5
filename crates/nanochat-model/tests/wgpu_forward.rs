//! The WGPU path for real: a forward of the smallest model fixture on a WGPU device (in CI,
//! Mesa's software Vulkan driver, lavapipe) must match the CPU backend's logits within float32
//! tolerance. Runs only with `--features wgpu`; a watchdog fails the test instead of letting a
//! stuck driver hang CI.
//!
//! The kernel caches too (`nanochat_model::kernel_cache`): the run's autotune results must land
//! in the configured folder, and a second process with the same folder must tune nothing
//! (the cache files are unchanged after it).
#![cfg(feature = "wgpu")]

use std::time::{Duration, Instant};

use burn::backend::wgpu::WgpuDevice;
use burn::backend::{Flex, Wgpu};
use nanochat_core::DeviceSpec;
use nanochat_core::paths::fixture_dir;
use nanochat_model::ComputeDtype;
use nanochat_model::backend::configure_kernel_cache;
use nanochat_model::fixture::Fixture;
use nanochat_model::kernel_cache::{self, Configured, GpuCache};

const LIMIT: Duration = Duration::from_secs(600);
/// Set in the second process: the base dir whose kernel cache it must reuse.
const CHILD: &str = "NANOCHAT_TEST_KERNEL_CACHE_BASE";

/// Every file under `dir` with its size, sorted.
fn files(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.display().to_string(), e.metadata().map_or(0, |m| m.len())));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn wgpu_forward_matches_cpu() {
    let watchdog = std::thread::spawn(|| {
        std::thread::sleep(LIMIT);
        eprintln!("wgpu forward did not finish within {LIMIT:?}: the WGPU driver is stuck");
        std::process::exit(101);
    });
    let _ = watchdog;
    // The kernel cache in a folder of this test's own, set before the first WGPU operation.
    let child_base = std::env::var_os(CHILD).map(std::path::PathBuf::from);
    let tmp = tempfile::tempdir().unwrap();
    let base = child_base
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    kernel_cache::set_base_dir(&base);
    let cache = base.join("kernel-cache").join("wgpu");
    assert_eq!(
        configure_kernel_cache(DeviceSpec::Wgpu(None)),
        Configured::At(cache.clone())
    );
    // The smallest fixture pair.
    let fixture = Fixture::all(&fixture_dir())
        .unwrap()
        .into_iter()
        .next()
        .expect("a model fixture");
    let logits = |device: &WgpuDevice| fixture.logits::<Wgpu>(device, ComputeDtype::F32).unwrap();

    if child_base.is_some() {
        // The second process: the same forward, from the first one's caches.
        let start = Instant::now();
        let _ = logits(&WgpuDevice::DefaultDevice);
        eprintln!(
            "wgpu forward with warm kernel caches took {:.1?}",
            start.elapsed()
        );
        return;
    }
    let cpu = fixture
        .logits::<Flex>(&Default::default(), ComputeDtype::F32)
        .unwrap();
    let start = Instant::now();
    let gpu = logits(&WgpuDevice::DefaultDevice);
    eprintln!(
        "wgpu forward of {} took {:.1?}",
        fixture.path.display(),
        start.elapsed()
    );
    let err = cpu
        .iter()
        .zip(&gpu)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    let scale = cpu.iter().map(|a| a.abs()).fold(0.0, f32::max);
    assert!(err / scale < 1e-4, "wgpu vs cpu rel err {}", err / scale);

    // The autotune results are in the configured folder …
    let tuned = files(&cache);
    assert!(
        tuned.iter().any(|(p, n)| p.contains("autotune") && *n > 0),
        "no autotune entries under {}: {tuned:?}",
        cache.display()
    );
    let summary = kernel_cache::summary(&base.join("kernel-cache"));
    assert!(matches!(&summary[..], [GpuCache { gpu, files, .. }] if gpu == "wgpu" && *files > 0));
    // … and a second process reuses them: it tunes nothing, so no file changes.
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "wgpu_forward_matches_cpu", "--nocapture"])
        .env(CHILD, &base)
        .status()
        .unwrap();
    assert!(status.success(), "the second process failed: {status}");
    assert_eq!(files(&cache), tuned, "the second process re-tuned kernels");
}
