//! Where things live on disk.
//!
//! - The base dir (`$NANOCHAT_BASE_DIR`, default `~/.cache/nanochat`) holds artifacts in
//!   upstream's layout: `tokenizer/`, `base_data/`, `base_checkpoints/<tag>/`, `report/` ….
//! - The offline data (`$NANOCHAT_DATA_DIR`, default `../shared/data`) and the parity fixtures
//!   (`$NANOCHAT_FIXTURE_DIR`, default `../shared/fixtures/model`) sit beside the checkout. A
//!   relative default is looked up from the current directory and its ancestors, so tests
//!   (which run inside a crate folder) and commands run from the repository root both find it.

use std::env;
use std::path::{Path, PathBuf};

/// Environment variable overriding the base dir.
pub const BASE_DIR_ENV: &str = "NANOCHAT_BASE_DIR";
/// Environment variable overriding the offline data dir.
pub const DATA_DIR_ENV: &str = "NANOCHAT_DATA_DIR";
/// Environment variable overriding the model fixture dir.
pub const FIXTURE_DIR_ENV: &str = "NANOCHAT_FIXTURE_DIR";
/// Environment variable overriding the tokenizer fixture dir.
pub const TOKENIZER_FIXTURE_DIR_ENV: &str = "NANOCHAT_TOKENIZER_FIXTURE_DIR";
/// Default tokenizer fixture dir, relative to the repository root.
pub const DEFAULT_TOKENIZER_FIXTURE_DIR: &str = "../shared/fixtures/tokenizer";
/// Environment variable overriding the CORE fixture dir.
pub const CORE_FIXTURE_DIR_ENV: &str = "NANOCHAT_CORE_FIXTURE_DIR";
/// Default CORE fixture dir, relative to the repository root.
pub const DEFAULT_CORE_FIXTURE_DIR: &str = "../shared/fixtures/core";
/// Default offline data dir, relative to the repository root.
pub const DEFAULT_DATA_DIR: &str = "../shared/data";
/// Default model fixture dir, relative to the repository root.
pub const DEFAULT_FIXTURE_DIR: &str = "../shared/fixtures/model";

/// The artifacts dir: `$NANOCHAT_BASE_DIR`, else `~/.cache/nanochat`.
pub fn base_dir() -> PathBuf {
    if let Some(dir) = env::var_os(BASE_DIR_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("nanochat")
}

/// Resolves a relative default against the current directory and its ancestors: the first
/// existing match wins; if none exists, the path relative to the current directory.
pub fn resolve_from_ancestors(relative: &Path) -> PathBuf {
    if relative.is_absolute() {
        return relative.to_path_buf();
    }
    let cwd = env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    cwd.ancestors()
        .map(|a| a.join(relative))
        .find(|p| p.exists())
        .unwrap_or_else(|| cwd.join(relative))
}

fn from_env_or(var: &str, default: &str) -> PathBuf {
    match env::var_os(var).filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => resolve_from_ancestors(Path::new(default)),
    }
}

/// The offline data dir: `$NANOCHAT_DATA_DIR`, else `../shared/data` (see the module docs).
pub fn data_dir() -> PathBuf {
    from_env_or(DATA_DIR_ENV, DEFAULT_DATA_DIR)
}

/// The model fixture dir: `$NANOCHAT_FIXTURE_DIR`, else `../shared/fixtures/model`.
pub fn fixture_dir() -> PathBuf {
    from_env_or(FIXTURE_DIR_ENV, DEFAULT_FIXTURE_DIR)
}

/// The tokenizer fixture dir: `$NANOCHAT_TOKENIZER_FIXTURE_DIR`, else
/// `../shared/fixtures/tokenizer`.
pub fn tokenizer_fixture_dir() -> PathBuf {
    from_env_or(TOKENIZER_FIXTURE_DIR_ENV, DEFAULT_TOKENIZER_FIXTURE_DIR)
}

/// The CORE fixture dir: `$NANOCHAT_CORE_FIXTURE_DIR`, else `../shared/fixtures/core`.
pub fn core_fixture_dir() -> PathBuf {
    from_env_or(CORE_FIXTURE_DIR_ENV, DEFAULT_CORE_FIXTURE_DIR)
}

/// The CORE eval bundle: `$NANOCHAT_DATA_DIR/eval_bundle` (default `../shared/data/eval_bundle`).
pub fn eval_bundle_dir() -> PathBuf {
    data_dir().join("eval_bundle")
}

/// Where pretraining shards are read from when no `--data-dir` is given:
/// `$NANOCHAT_DATA_DIR/pretrain` if that variable is set; else upstream's download folder
/// `<base dir>/base_data_climbmix` if it exists; else the offline bundle's
/// `../shared/data/pretrain`.
pub fn pretrain_data_dir() -> PathBuf {
    if env::var_os(DATA_DIR_ENV).is_some_and(|v| !v.is_empty()) {
        return data_dir().join("pretrain");
    }
    let downloaded = base_dir().join("base_data_climbmix");
    if downloaded.is_dir() {
        return downloaded;
    }
    data_dir().join("pretrain")
}

/// The tokenizer folder in the base dir.
pub fn tokenizer_dir(base: &Path) -> PathBuf {
    base.join("tokenizer")
}
