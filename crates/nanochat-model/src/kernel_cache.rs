//! Where the GPU backends keep what they learn about a GPU: CubeCL's autotune results (which
//! kernel variant is fastest for each shape) and compiled kernels, kept with the user's other
//! artifacts so that only the first run on a GPU pays for them.
//!
//! Left alone, CubeCL (burn 0.21's GPU runtime) writes its autotune cache under the `target/` of
//! the nearest folder above the working directory holding a `Cargo.toml` (else
//! `~/.cache/cubecl`) and keeps no compiled kernels at all; its folder names carry a device
//! index, not the GPU model, so a cache tuned on one card would be reused on another. Here the
//! root is `$NANOCHAT_KERNEL_CACHE`, else `<base dir>/kernel-cache`, with one sub-folder per GPU
//! model (`cuda-nvidia-h100-80gb-hbm3`, `wgpu`, …) holding CubeCL's `autotune/` and compiled
//! kernels, and `cuda-jit/` for the driver's own JIT cache (`CUDA_CACHE_PATH`, set by the
//! `nanochat` binary unless you set it).
//!
//! [`configure`] must run before the first GPU operation of the process; [`dispatch`] calls it
//! for CUDA and WGPU devices. A `cubecl.toml` of your own, or a configuration another part of the
//! program set first, takes precedence (then [`configure`] reports it and changes nothing).
//!
//! [`dispatch`]: crate::backend::dispatch

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The environment variable that moves the cache root.
pub const ENV: &str = "NANOCHAT_KERNEL_CACHE";

/// The base dir a program chose (`--base-dir`), for the default root.
static BASE: OnceLock<PathBuf> = OnceLock::new();

/// Remembers the program's base dir (the `nanochat` CLI calls this with `--base-dir`); without
/// it the root follows `$NANOCHAT_BASE_DIR` or `~/.cache/nanochat`.
pub fn set_base_dir(base: &Path) {
    let _ = BASE.set(base.to_path_buf());
}

/// The cache root: `$NANOCHAT_KERNEL_CACHE`, else `<base dir>/kernel-cache`.
pub fn root() -> PathBuf {
    if let Some(dir) = std::env::var_os(ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    BASE.get()
        .cloned()
        .unwrap_or_else(nanochat_core::paths::base_dir)
        .join("kernel-cache")
}

/// The folder for the driver's JIT cache (`CUDA_CACHE_PATH`).
pub fn cuda_jit_dir() -> PathBuf {
    root().join("cuda-jit")
}

/// A folder name for a GPU model: lower-case ASCII letters and digits, runs of anything else
/// as one `-`.
pub fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.trim().chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

/// The name of CUDA device `index` as `nvidia-smi` reports it (`None` without the tool).
pub fn cuda_device_name(index: usize) -> Option<String> {
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=name",
            "--format=csv,noheader",
            &format!("--id={index}"),
        ])
        .output()
        .ok()?;
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !name.is_empty()).then_some(name)
}

/// What [`configure`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Configured {
    /// CubeCL's caches now live in this folder.
    At(PathBuf),
    /// CubeCL's configuration was already in effect (a `cubecl.toml`, or set earlier in this
    /// process); it names this autotune cache root.
    Kept(PathBuf),
    /// No GPU backend is compiled in.
    NoGpuBackend,
}

/// Points CubeCL's autotune and compiled-kernel caches at `<root>/<gpu>` (once per process;
/// see the module docs).
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub fn configure(gpu: &str) -> Configured {
    static DONE: OnceLock<Configured> = OnceLock::new();
    DONE.get_or_init(|| {
        let configured = point_caches(gpu);
        if let Configured::At(dir) | Configured::Kept(dir) = &configured {
            watch_tuning(dir.clone(), std::time::Duration::from_secs(5));
        }
        configured
    })
    .clone()
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn point_caches(gpu: &str) -> Configured {
    use cubecl::config::cache::CacheConfig;
    use cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
    {
        let storage = CubeClRuntimeConfig::storage();
        let mut state = storage.lock();
        if let Some(cfg) = state.as_ref() {
            return Configured::Kept(cfg.autotune.cache.root());
        }
        // A cubecl.toml (or Burn.toml section) of the user's own wins.
        let has_file = std::env::current_dir().ok().is_some_and(|mut dir| {
            loop {
                let found = CubeClRuntimeConfig::file_names()
                    .iter()
                    .map(|n| dir.join(n))
                    .chain(
                        CubeClRuntimeConfig::section_file_names()
                            .iter()
                            .map(|(n, _)| dir.join(n)),
                    )
                    .any(|p| p.is_file());
                if found || !dir.pop() {
                    break found;
                }
            }
        });
        drop(state);
        if has_file {
            return Configured::Kept(CubeClRuntimeConfig::get().autotune.cache.root());
        }
        let dir = root().join(gpu);
        let mut cfg = CubeClRuntimeConfig::default().override_from_env();
        cfg.autotune.cache = CacheConfig::File(dir.clone());
        cfg.compilation.cache = Some(CacheConfig::File(dir.clone()));
        state = storage.lock();
        if let Some(cfg) = state.as_ref() {
            return Configured::Kept(cfg.autotune.cache.root());
        }
        *state = Some(std::sync::Arc::new(cfg));
        Configured::At(dir)
    }
}

/// The autotune results (one JSON line per tuned kernel key) in the cache folder `dir`.
pub fn tuned_keys(dir: &Path) -> u64 {
    let mut lines = 0;
    walk_files(dir, &mut |path, _| {
        if path.components().any(|c| c.as_os_str() == "autotune") {
            let bytes = std::fs::read(path).unwrap_or_default();
            lines += bytes.iter().filter(|&&b| b == b'\n').count() as u64;
        }
    });
    lines
}

/// Calls `f` with every file under `dir` (at any depth) and its size.
fn walk_files(dir: &Path, f: &mut dyn FnMut(&Path, u64)) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk_files(&entry.path(), f),
            Ok(t) if t.is_file() => f(&entry.path(), entry.metadata().map_or(0, |m| m.len())),
            _ => {}
        }
    }
}

/// Says what a first run on a GPU is doing while CubeCL tunes kernels (minutes on a cold
/// cache): a background thread that counts the autotune results in `dir` every `every` and
/// logs a line whenever the count grew. It runs as long as the process.
pub fn watch_tuning(dir: PathBuf, every: std::time::Duration) {
    let start = std::time::Instant::now();
    let spawned = std::thread::Builder::new()
        .name("kernel-tuning".into())
        .spawn(move || {
            let before = tuned_keys(&dir);
            let mut seen = before;
            loop {
                std::thread::sleep(every);
                let now = tuned_keys(&dir);
                if now > seen {
                    tracing::info!(
                        "tuning GPU kernels: {} new shapes in {:.0} s ({} cached in {}; later runs reuse them)",
                        now - before,
                        start.elapsed().as_secs_f64(),
                        now,
                        dir.display()
                    );
                    seen = now;
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("no kernel-tuning progress: {e}");
    }
}

/// Without a GPU backend there is nothing to configure.
#[cfg(not(any(feature = "wgpu", feature = "cuda")))]
pub fn configure(_gpu: &str) -> Configured {
    Configured::NoGpuBackend
}

/// One GPU's cache folder: its name, files and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuCache {
    /// The sub-folder (the GPU model's slug).
    pub gpu: String,
    /// Files in it.
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
}

/// The GPUs that have a cache under `root`, with their sizes.
pub fn summary(root: &Path) -> Vec<GpuCache> {
    let mut out: Vec<GpuCache> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| {
            let (mut files, mut bytes) = (0, 0);
            walk_files(&e.path(), &mut |_, size| {
                files += 1;
                bytes += size;
            });
            GpuCache {
                gpu: e.file_name().to_string_lossy().into_owned(),
                files,
                bytes,
            }
        })
        .collect();
    out.sort_by(|a, b| a.gpu.cmp(&b.gpu));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_names_become_folder_names() {
        assert_eq!(slug("NVIDIA H100 80GB HBM3"), "nvidia-h100-80gb-hbm3");
        assert_eq!(
            slug("  llvmpipe (LLVM 15.0.6, 256 bits) "),
            "llvmpipe-llvm-15-0-6-256-bits"
        );
        assert_eq!(slug("--"), "");
    }

    #[test]
    fn summary_counts_each_gpu_folder() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("cuda-a/autotune/0.10.0");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::write(a.join("x.json.log"), b"12345").unwrap();
        std::fs::write(dir.path().join("cuda-a/y"), b"1").unwrap();
        std::fs::create_dir_all(dir.path().join("wgpu")).unwrap();
        std::fs::write(dir.path().join("loose-file"), b"ignored").unwrap();
        std::fs::write(a.join("z.json.log"), b"{}\n{}\n").unwrap();
        assert_eq!(
            tuned_keys(dir.path()),
            2,
            "only autotune files, one key a line"
        );
        std::fs::remove_file(a.join("z.json.log")).unwrap();
        let s = summary(dir.path());
        assert_eq!(
            s,
            [
                GpuCache {
                    gpu: "cuda-a".into(),
                    files: 2,
                    bytes: 6
                },
                GpuCache {
                    gpu: "wgpu".into(),
                    files: 0,
                    bytes: 0
                }
            ]
        );
    }
}
