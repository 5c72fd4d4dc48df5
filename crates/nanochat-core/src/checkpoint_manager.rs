//! Checkpoint directories on disk, byte level (upstream `nanochat/checkpoint_manager.py`).
//!
//! Layout, as upstream's but with safetensors for tensors:
//! `$NANOCHAT_BASE_DIR/{base,mid,chatsft,chatrl}_checkpoints/<model_tag>/` holding
//! `model_{step:06}.safetensors`, `optim_{step:06}_rank{r}.safetensors` and
//! `meta_{step:06}.json`. The tensor files are produced by `nanochat-model`; this module only
//! moves bytes.
//!
//! Writing is crash safe: every file goes to a `.partial` temp file that is fsynced, then all
//! are renamed into place, then the meta (which lists every file's size and CRC32) is written
//! the same way, last. A step exists only once its meta does, so a writer killed at any point
//! leaves the previous checkpoints loadable. Re-saving an existing step first removes its meta,
//! so a crash mid-way leaves that step absent rather than inconsistent.
//!
//! Reading verifies the format version, the meta's own CRC and, for every file read, its size
//! and CRC, with an error naming the file.
//!
//! Each checkpoint has a lifecycle ([`CheckpointState`]): a writer starts it at Created and
//! the meta it commits records Saved, with the history, under [`CHECKPOINT_STATE_KEY`]; a
//! [`Checkpoint`](crate::checkpoint_handle::Checkpoint) handle takes it on from there.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::checkpoint::{CheckpointMeta, FORMAT_VERSION, FileRecord};
pub use crate::checkpoint_find::{find_checkpoint, find_largest_model, find_last_step, list_steps};
pub use crate::checkpoint_handle::CHECKPOINT_STATE_KEY;
use crate::fs::{IoError, publish, sync_dir, write_atomic, write_partial};
use crate::lifecycle::{CheckpointState, Lifecycle, LifecycleError};
use crate::validation::{Rule, Validate, ValidationError};

/// An error reading or writing a checkpoint; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file-system operation failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// Nothing to load where one was expected.
    #[error("no checkpoint in {dir}: {reason}")]
    NotFound {
        /// The directory searched.
        dir: PathBuf,
        /// What was missing.
        reason: String,
    },
    /// The meta lists a file that is not on disk.
    #[error("checkpoint file {path} is missing (listed in its meta)")]
    MissingFile {
        /// The file.
        path: PathBuf,
    },
    /// A file was asked for that the meta does not list.
    #[error("{meta} does not list a file named {name}")]
    NotListed {
        /// The meta file.
        meta: PathBuf,
        /// The requested name.
        name: String,
    },
    /// A file's length differs from the meta's record.
    #[error(
        "checkpoint file {path} has {actual} bytes, its meta says {expected}: truncated or replaced"
    )]
    SizeMismatch {
        /// The file.
        path: PathBuf,
        /// Recorded length.
        expected: u64,
        /// Length on disk.
        actual: u64,
    },
    /// A file's CRC32 differs from the recorded one.
    #[error("checkpoint file {path} is corrupted: CRC32 {actual} but {expected} was recorded")]
    CrcMismatch {
        /// The file.
        path: PathBuf,
        /// Recorded CRC.
        expected: String,
        /// Computed CRC.
        actual: String,
    },
    /// The meta is not a nanochat-rs meta file.
    #[error("{path} is not a nanochat-rs checkpoint meta: {reason}")]
    BadMeta {
        /// The meta file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Written by a newer format.
    #[error(
        "{path} has checkpoint format version {found}; this build reads versions 1..={supported}: upgrade nanochat-rs"
    )]
    UnsupportedVersion {
        /// The meta file.
        path: PathBuf,
        /// Its version.
        found: u32,
        /// Newest version this build reads.
        supported: u32,
    },
    /// A step of the checkpoint's lifecycle out of order, or a recorded lifecycle that does
    /// not replay.
    #[error("{path}: {reason}")]
    Lifecycle {
        /// The meta file.
        path: PathBuf,
        /// The refused transition or the broken record.
        reason: String,
    },
    /// The meta's content breaks a rule.
    #[error("{path}: {source}")]
    Invalid {
        /// The meta file.
        path: PathBuf,
        /// The broken rule.
        #[source]
        source: Box<ValidationError>,
    },
}

impl CheckpointError {
    pub(crate) fn lifecycle(path: impl Into<PathBuf>, source: LifecycleError) -> Self {
        CheckpointError::Lifecycle {
            path: path.into(),
            reason: source.to_string(),
        }
    }

    fn invalid(path: impl Into<PathBuf>, source: ValidationError) -> Self {
        CheckpointError::Invalid {
            path: path.into(),
            source: Box::new(source),
        }
    }
}

/// The training stage a checkpoint comes from (upstream's `--source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Pretraining (`base_checkpoints`).
    Base,
    /// Midtraining (`mid_checkpoints`).
    Mid,
    /// Supervised fine-tuning (`chatsft_checkpoints`).
    Sft,
    /// Reinforcement learning (`chatrl_checkpoints`).
    Rl,
}

impl Source {
    /// Names accepted on the command line.
    pub const NAMES: [&'static str; 4] = ["base", "mid", "sft", "rl"];

    /// The stage's checkpoints folder under the base dir.
    pub fn dir_name(self) -> &'static str {
        match self {
            Source::Base => "base_checkpoints",
            Source::Mid => "mid_checkpoints",
            Source::Sft => "chatsft_checkpoints",
            Source::Rl => "chatrl_checkpoints",
        }
    }

    /// The name (`base`, `mid`, `sft`, `rl`).
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Source {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "base" => Ok(Source::Base),
            "mid" => Ok(Source::Mid),
            "sft" => Ok(Source::Sft),
            "rl" => Ok(Source::Rl),
            _ => Err(ValidationError::new(
                "Source",
                "source",
                format!("{s:?}"),
                Rule::OneOf {
                    allowed: &Self::NAMES,
                },
            )),
        }
    }
}

/// `model_{step:06}.safetensors`.
pub fn model_file_name(step: u64) -> String {
    format!("model_{step:06}.safetensors")
}

/// `optim_{step:06}_rank{rank}.safetensors`.
pub fn optim_file_name(step: u64, rank: usize) -> String {
    format!("optim_{step:06}_rank{rank}.safetensors")
}

/// `meta_{step:06}.json`.
pub fn meta_file_name(step: u64) -> String {
    format!("meta_{step:06}.json")
}

/// `<base>/<source dir>/<model_tag>`.
pub fn checkpoint_dir(base_dir: &Path, source: Source, model_tag: &str) -> PathBuf {
    base_dir.join(source.dir_name()).join(model_tag)
}

/// A `Write` that counts bytes and computes the CRC32 of what passes through.
struct CrcWriter<'a> {
    inner: &'a mut dyn Write,
    hasher: crc32fast::Hasher,
    bytes: u64,
}

impl Write for CrcWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes one checkpoint step. Files are staged as temp files by [`write_file`](Self::write_file),
/// renamed into place by [`publish_files`](Self::publish_files), and made visible by
/// [`commit`](Self::commit), which writes the meta last.
#[derive(Debug)]
pub struct CheckpointWriter {
    dir: PathBuf,
    step: u64,
    staged: Vec<(PathBuf, PathBuf)>,
    records: BTreeMap<String, FileRecord>,
    lifecycle: Lifecycle<CheckpointState>,
}

impl CheckpointWriter {
    /// Starts a checkpoint of `step` in `dir` (created if needed).
    pub fn new(dir: &Path, step: u64) -> Result<Self, CheckpointError> {
        fs::create_dir_all(dir).map_err(|e| IoError::new("create directory", dir, e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            step,
            staged: Vec::new(),
            records: BTreeMap::new(),
            lifecycle: Lifecycle::new(chrono::Utc::now()),
        })
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn check_name(&self, name: &str) -> Result<(), CheckpointError> {
        let plain = !name.is_empty()
            && !name.contains(['/', '\\'])
            && !name.starts_with('.')
            && name != meta_file_name(self.step);
        if !plain || self.records.contains_key(name) {
            let rule = if plain {
                Rule::Unique {
                    within: "checkpoint",
                }
            } else {
                Rule::Pattern {
                    expected: "a plain file name, not hidden and not the meta's",
                }
            };
            return Err(CheckpointError::invalid(
                self.dir.join(name),
                ValidationError::new("ModelCheckpoint", "file", name, rule),
            ));
        }
        Ok(())
    }

    /// Streams a file of the checkpoint into a temp file (fsynced), recording its size and CRC.
    pub fn write_file(
        &mut self,
        name: &str,
        write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<FileRecord, CheckpointError> {
        self.check_name(name)?;
        let target = self.dir.join(name);
        let mut record = FileRecord { bytes: 0, crc32: 0 };
        let tmp = write_partial(&target, |w| {
            let mut cw = CrcWriter {
                inner: w,
                hasher: crc32fast::Hasher::new(),
                bytes: 0,
            };
            write(&mut cw)?;
            record = FileRecord {
                bytes: cw.bytes,
                crc32: cw.hasher.finalize(),
            };
            Ok(())
        })?;
        self.staged.push((tmp, target));
        self.records.insert(name.to_string(), record);
        Ok(record)
    }

    /// [`write_file`](Self::write_file) for bytes in memory.
    pub fn write_bytes(&mut self, name: &str, bytes: &[u8]) -> Result<FileRecord, CheckpointError> {
        self.write_file(name, |w| w.write_all(bytes))
    }

    /// Lists a file that another process (another rank) wrote and published itself.
    pub fn add_record(&mut self, name: &str, record: FileRecord) -> Result<(), CheckpointError> {
        self.check_name(name)?;
        self.records.insert(name.to_string(), record);
        Ok(())
    }

    /// Records of every file so far.
    pub fn records(&self) -> &BTreeMap<String, FileRecord> {
        &self.records
    }

    /// Renames the staged files into place. If a meta of this step already exists it is
    /// removed first: the step is invisible until [`commit`](Self::commit) writes the new one.
    pub fn publish_files(&mut self) -> Result<(), CheckpointError> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let meta = self.dir.join(meta_file_name(self.step));
        match fs::remove_file(&meta) {
            Ok(()) => sync_dir(&self.dir)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(IoError::new("remove", &meta, e).into()),
        }
        for (tmp, target) in self.staged.drain(..) {
            publish(&tmp, &target)?;
        }
        sync_dir(&self.dir)?;
        Ok(())
    }

    /// Publishes the files, then writes the meta listing them (atomically, last). `meta`'s
    /// step must be this writer's; its file list, version and lifecycle (Created → Saved, under
    /// [`CHECKPOINT_STATE_KEY`]) are filled in here.
    pub fn commit(mut self, mut meta: CheckpointMeta) -> Result<CheckpointMeta, CheckpointError> {
        let path = self.dir.join(meta_file_name(self.step));
        if meta.step() != self.step {
            return Err(CheckpointError::invalid(
                path,
                ValidationError::new(
                    "CheckpointMeta",
                    "step",
                    meta.step(),
                    Rule::Equals {
                        what: "the writer's step".into(),
                        expected: self.step.to_string(),
                    },
                ),
            ));
        }
        meta.format_version = FORMAT_VERSION;
        meta.files = self.records.clone();
        self.lifecycle
            .advance(CheckpointState::Saved, chrono::Utc::now())
            .map_err(|e| CheckpointError::lifecycle(&path, e))?;
        let recorded =
            serde_json::to_value(&self.lifecycle).map_err(|e| CheckpointError::BadMeta {
                path: path.clone(),
                reason: format!("{CHECKPOINT_STATE_KEY}: {e}"),
            })?;
        meta.metadata
            .extra
            .insert(CHECKPOINT_STATE_KEY.to_string(), recorded);
        meta.validate()
            .map_err(|e| CheckpointError::invalid(path.clone(), e))?;
        self.publish_files()?;
        let bytes = encode_meta(&mut meta);
        write_atomic(&path, &bytes)?;
        Ok(meta)
    }
}

const META_PREFIX: &[u8] = b"{\n  \"crc32\": \"";

/// Serialises a meta with its own CRC (sets `meta.crc32`).
pub fn encode_meta(meta: &mut CheckpointMeta) -> Vec<u8> {
    meta.crc32 = 0;
    let mut bytes = serde_json::to_vec_pretty(meta).expect("a meta always serialises");
    bytes.push(b'\n');
    debug_assert!(bytes.starts_with(META_PREFIX));
    let crc = crc32fast::hash(&bytes);
    let at = META_PREFIX.len();
    bytes[at..at + 8].copy_from_slice(format!("{crc:08x}").as_bytes());
    meta.crc32 = crc;
    bytes
}

/// Parses and checks a meta's bytes: its own CRC, JSON, version and rules.
pub fn decode_meta(path: &Path, bytes: &[u8]) -> Result<CheckpointMeta, CheckpointError> {
    let at = META_PREFIX.len();
    if !bytes.starts_with(META_PREFIX) || bytes.len() < at + 9 || bytes[at + 8] != b'"' {
        return Err(CheckpointError::BadMeta {
            path: path.to_path_buf(),
            reason:
                "it does not start with its \"crc32\" key (an upstream meta? use `nanochat import`)"
                    .into(),
        });
    }
    let mut zeroed = bytes.to_vec();
    zeroed[at..at + 8].copy_from_slice(b"00000000");
    let actual = format!("{:08x}", crc32fast::hash(&zeroed));
    if bytes[at..at + 8] != *actual.as_bytes() {
        return Err(CheckpointError::CrcMismatch {
            path: path.to_path_buf(),
            expected: String::from_utf8_lossy(&bytes[at..at + 8]).into_owned(),
            actual,
        });
    }
    let version: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| CheckpointError::BadMeta {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let found = version
        .get("format_version")
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    if found > FORMAT_VERSION as u64 {
        return Err(CheckpointError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: found as u32,
            supported: FORMAT_VERSION,
        });
    }
    let meta: CheckpointMeta =
        serde_json::from_value(version).map_err(|e| CheckpointError::BadMeta {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    meta.validate()
        .map_err(|e| CheckpointError::invalid(path.to_path_buf(), e))?;
    Ok(meta)
}

/// Reads and checks `meta_{step:06}.json` in `dir`.
pub fn load_meta(dir: &Path, step: u64) -> Result<CheckpointMeta, CheckpointError> {
    if !dir.is_dir() {
        return Err(CheckpointError::invalid(
            dir,
            ValidationError::new("ModelCheckpoint", "path", dir.display(), Rule::PathExists),
        ));
    }
    let path = dir.join(meta_file_name(step));
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(CheckpointError::NotFound {
                dir: dir.to_path_buf(),
                reason: format!(
                    "no {} (step {step} was never completed)",
                    meta_file_name(step)
                ),
            });
        }
        Err(e) => return Err(IoError::new("read", &path, e).into()),
    };
    decode_meta(&path, &bytes)
}

fn check_record(
    path: &Path,
    record: &FileRecord,
    bytes: u64,
    crc: u32,
) -> Result<(), CheckpointError> {
    if bytes != record.bytes {
        return Err(CheckpointError::SizeMismatch {
            path: path.to_path_buf(),
            expected: record.bytes,
            actual: bytes,
        });
    }
    if crc != record.crc32 {
        return Err(CheckpointError::CrcMismatch {
            path: path.to_path_buf(),
            expected: format!("{:08x}", record.crc32),
            actual: format!("{crc:08x}"),
        });
    }
    Ok(())
}

fn record_of<'m>(
    dir: &Path,
    meta: &'m CheckpointMeta,
    name: &str,
) -> Result<&'m FileRecord, CheckpointError> {
    meta.files
        .get(name)
        .ok_or_else(|| CheckpointError::NotListed {
            meta: dir.join(meta_file_name(meta.step())),
            name: name.to_string(),
        })
}

fn open_listed(path: &Path) -> Result<File, CheckpointError> {
    File::open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            CheckpointError::MissingFile {
                path: path.to_path_buf(),
            }
        } else {
            IoError::new("open", path, e).into()
        }
    })
}

/// Reads a file listed in `meta`, checking its size and CRC.
pub fn read_file(
    dir: &Path,
    meta: &CheckpointMeta,
    name: &str,
) -> Result<Vec<u8>, CheckpointError> {
    let record = record_of(dir, meta, name)?;
    let path = dir.join(name);
    let mut bytes = Vec::with_capacity(record.bytes as usize);
    open_listed(&path)?
        .read_to_end(&mut bytes)
        .map_err(|e| IoError::new("read", &path, e))?;
    check_record(&path, record, bytes.len() as u64, crc32fast::hash(&bytes))?;
    Ok(bytes)
}

/// Checks a listed file's size and CRC by streaming it (for files too big to hold twice).
pub fn verify_file(dir: &Path, meta: &CheckpointMeta, name: &str) -> Result<(), CheckpointError> {
    let record = record_of(dir, meta, name)?;
    let path = dir.join(name);
    let mut reader = BufReader::with_capacity(1 << 20, open_listed(&path)?);
    let mut hasher = crc32fast::Hasher::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| IoError::new("read", &path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    check_record(&path, record, total, hasher.finalize())
}

/// Loads the meta of `step` and verifies every file it lists.
pub fn verify_checkpoint(dir: &Path, step: u64) -> Result<CheckpointMeta, CheckpointError> {
    let meta = load_meta(dir, step)?;
    for name in meta.files.keys() {
        verify_file(dir, &meta, name)?;
    }
    Ok(meta)
}
