//! Downloading pretraining shards (upstream `nanochat/dataset.py`, `download_single_file` and
//! its `__main__`): `shard_{i:05}.parquet` from a Hugging Face dataset, in parallel, with
//! retries and exponential backoff, each written to a temporary file, checked (the byte count
//! the server announced, and a readable parquet footer) and only then renamed into place. A
//! shard already present and readable is skipped, so an interrupted download just resumes.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::Shard;

/// A dataset of numbered shards on Hugging Face.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardSource {
    /// Base URL; shard `i` is `{base_url}/shard_{i:05}.parquet`.
    pub base_url: String,
    /// Index of the last shard (the validation shard).
    pub max_shard: usize,
}

impl ShardSource {
    /// Upstream HEAD's data: `karpathy/climbmix-400b-shuffle` (shards 0…6542).
    pub fn climbmix() -> Self {
        Self {
            base_url: "https://huggingface.co/datasets/karpathy/climbmix-400b-shuffle/resolve/main"
                .into(),
            max_shard: 6542,
        }
    }

    /// The original release's data: `karpathy/fineweb-edu-100b-shuffle` (shards 0…1822).
    pub fn fineweb_edu() -> Self {
        Self {
            base_url:
                "https://huggingface.co/datasets/karpathy/fineweb-edu-100b-shuffle/resolve/main"
                    .into(),
            max_shard: 1822,
        }
    }

    /// URL of shard `index`.
    pub fn url(&self, index: usize) -> String {
        format!(
            "{}/{}",
            self.base_url.trim_end_matches('/'),
            shard_file_name(index)
        )
    }

    /// Upstream's selection for `-n num_files`: the first `n` train shards (all when `None`)
    /// plus the validation shard.
    pub fn indices(&self, num_files: Option<usize>) -> Vec<usize> {
        let n = num_files.map_or(self.max_shard, |n| n.min(self.max_shard));
        let mut v: Vec<usize> = (0..n).collect();
        v.push(self.max_shard);
        v
    }
}

/// `shard_{index:05}.parquet`.
pub fn shard_file_name(index: usize) -> String {
    format!("shard_{index:05}.parquet")
}

/// Download settings.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// Parallel downloads (upstream `-w`, default 4).
    pub workers: usize,
    /// Attempts per file (upstream: 5).
    pub attempts: u32,
    /// First backoff; doubles per attempt (upstream: 2 s, 4 s, 8 s, …).
    pub backoff: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        Self {
            workers: 4,
            attempts: 5,
            backoff: Duration::from_secs(2),
            timeout: Duration::from_secs(300),
        }
    }
}

/// A download that failed for good.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// Every attempt failed; the last reason is given.
    #[error("{url}: failed after {attempts} attempts: {reason}")]
    Failed {
        /// The URL.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        reason: String,
    },
    /// The destination folder cannot be created.
    #[error("cannot create {dir}: {source}")]
    Folder {
        /// The folder.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What a download run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DownloadReport {
    /// Shards fetched now.
    pub downloaded: Vec<usize>,
    /// Shards already present and readable.
    pub skipped: Vec<usize>,
    /// Failed attempts that were retried successfully.
    pub retries: usize,
}

fn fetch_once(agent: &ureq::Agent, url: &str, tmp: &Path) -> Result<(), String> {
    let response = agent.get(url).call().map_err(|e| e.to_string())?;
    let expected: Option<u64> = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let mut reader = response.into_body().into_reader();
    let mut file = std::fs::File::create(tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| format!("after {got} bytes: {e}"))?;
        if n == 0 {
            break;
        }
        std::io::Write::write_all(&mut file, &buf[..n])
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        got += n as u64;
    }
    file.sync_all()
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    if let Some(want) = expected
        && want != got
    {
        return Err(format!("truncated: got {got} of {want} bytes"));
    }
    Shard::open(tmp).map_err(|e| format!("not a readable parquet file: {e}"))?;
    Ok(())
}

/// Downloads one shard into `dir` (skipped if a readable copy is there). Returns the number of
/// failed attempts before success, or `None` when skipped.
pub fn download_shard(
    agent: &ureq::Agent,
    source: &ShardSource,
    index: usize,
    dir: &Path,
    opts: &DownloadOptions,
) -> Result<Option<usize>, DownloadError> {
    let name = shard_file_name(index);
    let dest = dir.join(&name);
    if dest.exists() && Shard::open(&dest).is_ok() {
        return Ok(None);
    }
    let url = source.url(index);
    let tmp = nanochat_core::fs::partial_path(&dest);
    let mut reason = String::new();
    let attempts = opts.attempts.max(1);
    for attempt in 1..=attempts {
        match fetch_once(agent, &url, &tmp) {
            Ok(()) => {
                nanochat_core::fs::publish(&tmp, &dest).map_err(|e| DownloadError::Failed {
                    url: url.clone(),
                    attempts: attempt,
                    reason: e.to_string(),
                })?;
                return Ok(Some(attempt as usize - 1));
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                tracing::warn!("attempt {attempt}/{attempts} for {name} failed: {e}");
                reason = e;
                if attempt < attempts {
                    std::thread::sleep(opts.backoff * 2u32.pow(attempt - 1));
                }
            }
        }
    }
    Err(DownloadError::Failed {
        url,
        attempts,
        reason,
    })
}

/// Downloads `indices` of `source` into `dir` with `opts.workers` threads and a progress bar.
/// Fails with the first shard that could not be fetched after all attempts (the others keep
/// going and stay on disk).
pub fn download_shards(
    source: &ShardSource,
    indices: &[usize],
    dir: &Path,
    opts: &DownloadOptions,
) -> Result<DownloadReport, DownloadError> {
    std::fs::create_dir_all(dir).map_err(|source| DownloadError::Folder {
        dir: dir.to_path_buf(),
        source,
    })?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(opts.timeout))
        .build()
        .into();
    let next = AtomicUsize::new(0);
    let report = Mutex::new(DownloadReport::default());
    let first_error = Mutex::new(None);
    let pb = indicatif::ProgressBar::new(indices.len() as u64);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} shards [{elapsed_precise} < {eta_precise}]",
        )
        .expect("static template"),
    );
    std::thread::scope(|s| {
        for _ in 0..opts.workers.max(1).min(indices.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&index) = indices.get(i) else { break };
                    match download_shard(&agent, source, index, dir, opts) {
                        Ok(None) => report.lock().expect("lock").skipped.push(index),
                        Ok(Some(retries)) => {
                            let mut r = report.lock().expect("lock");
                            r.downloaded.push(index);
                            r.retries += retries;
                        }
                        Err(e) => {
                            pb.suspend(|| tracing::error!("{e}"));
                            first_error.lock().expect("lock").get_or_insert(e);
                        }
                    }
                    pb.inc(1);
                }
            });
        }
    });
    pb.finish_and_clear();
    if let Some(e) = first_error.into_inner().expect("lock") {
        return Err(e);
    }
    let mut r = report.into_inner().expect("lock");
    r.downloaded.sort_unstable();
    r.skipped.sort_unstable();
    Ok(r)
}
