//! Training data descriptions: where data comes from ([`DataSource`]), in what format
//! ([`DataFormat`]), how it is turned into training rows ([`PreprocessingStep`]), and what a
//! tokenized dataset holds ([`DatasetMetadata`]). Upstream's pretraining data is a folder of
//! parquet shards `shard_00000.parquet …` whose last shard is the validation split
//! (`nanochat/dataset.py`).
//!
//! Pretraining builds its loader from a [`TrainingDataset`] (`nanochat_data::pretraining`):
//! [`Validate`] checks the description alone (at least one source, weights > 0, supported
//! formats, totals = sums of shards), [`TrainingDataset::check_files`] the disk (every listed
//! shard exists and *is* of its format, by its magic bytes: cheap, no full read).

use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::validation::{
    Rule, VResult, Validate, ValidationError, check_not_blank, check_positive, check_positive_f,
};

/// What a dataset is used for; decides which formats are supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    /// Raw documents for pretraining and the tokenizer.
    Pretraining,
    /// Chat conversations for midtraining and SFT.
    Conversations,
    /// Benchmark examples.
    Evaluation,
}

impl DatasetKind {
    /// The names of the formats a dataset of this kind can be read from.
    pub fn supported_formats(self) -> &'static [&'static str] {
        match self {
            DatasetKind::Pretraining => &["parquet", "jsonl", "text"],
            DatasetKind::Conversations => &["jsonl", "jsonl_gz", "json"],
            DatasetKind::Evaluation => &["jsonl", "jsonl_gz", "json", "csv"],
        }
    }
}

/// Where a source's files come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceType {
    /// A local folder.
    Local,
    /// A Hugging Face dataset repository (downloaded into the base dir first).
    HuggingFace,
    /// Files at HTTP(S) URLs.
    Http,
}

/// A file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataFormat {
    /// Apache Parquet with a `text` column (upstream's shards).
    Parquet,
    /// One JSON object per line.
    Jsonl,
    /// Gzip-compressed JSONL.
    JsonlGz,
    /// One JSON document.
    Json,
    /// Comma-separated values.
    Csv,
    /// Plain UTF-8 text, one document per file.
    Text,
}

impl DataFormat {
    /// Every format.
    pub const ALL: [DataFormat; 6] = [
        DataFormat::Parquet,
        DataFormat::Jsonl,
        DataFormat::JsonlGz,
        DataFormat::Json,
        DataFormat::Csv,
        DataFormat::Text,
    ];
    /// Every format's name, as written in configs.
    pub const NAMES: [&'static str; 6] = ["parquet", "jsonl", "jsonl_gz", "json", "csv", "text"];

    /// The format's name.
    pub fn as_str(self) -> &'static str {
        match self {
            DataFormat::Parquet => "parquet",
            DataFormat::Jsonl => "jsonl",
            DataFormat::JsonlGz => "jsonl_gz",
            DataFormat::Json => "json",
            DataFormat::Csv => "csv",
            DataFormat::Text => "text",
        }
    }

    /// The format of a file, from its name (`.parquet`, `.jsonl`, `.jsonl.gz`, `.json`, `.csv`,
    /// `.txt`).
    pub fn from_path(path: &Path) -> Result<Self, ValidationError> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let format = if name.ends_with(".jsonl.gz") {
            DataFormat::JsonlGz
        } else if name.ends_with(".parquet") {
            DataFormat::Parquet
        } else if name.ends_with(".jsonl") {
            DataFormat::Jsonl
        } else if name.ends_with(".json") {
            DataFormat::Json
        } else if name.ends_with(".csv") {
            DataFormat::Csv
        } else if name.ends_with(".txt") {
            DataFormat::Text
        } else {
            return Err(ValidationError::new(
                "DataSource",
                "format",
                path.display(),
                Rule::OneOf {
                    allowed: &[".parquet", ".jsonl", ".jsonl.gz", ".json", ".csv", ".txt"],
                },
            ));
        };
        Ok(format)
    }
}

/// Parquet files start and end with these four bytes.
pub const PARQUET_MAGIC: &[u8; 4] = b"PAR1";

impl DataFormat {
    /// Checks that the file at `path` looks like this format from a few bytes (no full read):
    /// parquet starts and ends with [`PARQUET_MAGIC`] (and holds at least a footer length
    /// besides), gzip starts with `1f 8b`; the text formats are not checked. `field` names the
    /// file in the error.
    pub fn check_magic(self, path: &Path, field: &str) -> VResult {
        let bad = |expected| {
            ValidationError::new(
                "DataSource",
                field,
                path.display(),
                Rule::Pattern { expected },
            )
        };
        match self {
            DataFormat::Parquet => {
                let expected = "a parquet file (PAR1 magic bytes at its start and end)";
                let (head, tail) = head_and_tail(path).ok_or_else(|| bad(expected))?;
                if head != *PARQUET_MAGIC || tail != *PARQUET_MAGIC {
                    return Err(bad(expected));
                }
            }
            DataFormat::JsonlGz => {
                let expected = "a gzip file (1f 8b magic bytes at its start)";
                let (head, _) = head_and_tail(path).ok_or_else(|| bad(expected))?;
                if head[..2] != [0x1f, 0x8b] {
                    return Err(bad(expected));
                }
            }
            DataFormat::Jsonl | DataFormat::Json | DataFormat::Csv | DataFormat::Text => {}
        }
        Ok(())
    }
}

/// The first and last four bytes of a file of at least 12 bytes (`None`: shorter, or
/// unreadable).
fn head_and_tail(path: &Path) -> Option<([u8; 4], [u8; 4])> {
    let mut f = std::fs::File::open(path).ok()?;
    if f.metadata().ok()?.len() < 12 {
        return None;
    }
    let (mut head, mut tail) = ([0u8; 4], [0u8; 4]);
    f.read_exact(&mut head).ok()?;
    f.seek(SeekFrom::End(-4)).ok()?;
    f.read_exact(&mut tail).ok()?;
    Some((head, tail))
}

impl fmt::Display for DataFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DataFormat {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                ValidationError::new(
                    "DataSource",
                    "format",
                    format!("{s:?}"),
                    Rule::OneOf {
                        allowed: &Self::NAMES,
                    },
                )
            })
    }
}

/// One source of training data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSource {
    /// A short name (shown in logs).
    pub name: String,
    /// Where the files come from.
    pub source_type: SourceType,
    /// The files' format.
    pub format: DataFormat,
    /// A folder (local), a repository id (Hugging Face) or a base URL (HTTP).
    pub location: String,
    /// Relative weight when mixing sources.
    pub weight: f64,
    /// The files, relative to `location` for local sources.
    #[serde(default)]
    pub shards: Vec<PathBuf>,
}

impl DataSource {
    /// Paths of the local shard files.
    pub fn shard_paths(&self) -> Vec<PathBuf> {
        self.shards
            .iter()
            .map(|s| Path::new(&self.location).join(s))
            .collect()
    }

    /// Checks that a local source's folder exists and lists at least one shard, that every
    /// listed shard exists, and that each shard's extension and magic bytes match the declared
    /// format ([`DataFormat::check_magic`]).
    pub fn check_files(&self) -> VResult {
        if self.source_type != SourceType::Local {
            return Ok(());
        }
        if !Path::new(&self.location).is_dir() {
            return Err(ValidationError::new(
                "DataSource",
                "location",
                &self.location,
                Rule::PathExists,
            ));
        }
        if self.shards.is_empty() {
            return Err(ValidationError::new(
                "DataSource",
                "shards",
                format!("[] (in {})", self.location),
                Rule::NotEmpty,
            ));
        }
        for (i, path) in self.shard_paths().iter().enumerate() {
            if !path.is_file() {
                return Err(ValidationError::new(
                    "DataSource",
                    format!("shards[{i}]"),
                    path.display(),
                    Rule::PathExists,
                ));
            }
            let actual = DataFormat::from_path(path)?;
            if actual != self.format {
                return Err(ValidationError::new(
                    "DataSource",
                    format!("shards[{i}]"),
                    path.display(),
                    Rule::Equals {
                        what: "the declared format".into(),
                        expected: self.format.to_string(),
                    },
                ));
            }
            self.format.check_magic(path, &format!("shards[{i}]"))?;
        }
        Ok(())
    }
}

impl Validate for DataSource {
    fn validate(&self) -> VResult {
        check_not_blank("DataSource", "name", &self.name)?;
        check_not_blank("DataSource", "location", &self.location)?;
        check_positive_f("DataSource", "weight", self.weight)
    }
}

/// A transformation from raw files to training rows, in the order applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case", deny_unknown_fields)]
pub enum PreprocessingStep {
    /// Keep the first `max_chars` characters of each document (tokenizer training).
    DocCap {
        /// Characters kept.
        max_chars: usize,
    },
    /// Prepend `<|bos|>` to every document.
    PrependBos,
    /// Tokenize with the run's tokenizer on worker threads.
    Tokenize {
        /// Worker threads.
        threads: usize,
    },
    /// Pack documents into rows of `seq_len + 1` tokens with best-fit (crop or pad).
    BestFitPack {
        /// Row length minus one.
        seq_len: usize,
        /// Documents buffered for the best-fit choice.
        buffer_docs: usize,
        /// Pad with `<|bos|>` (targets ignored) instead of cropping (SFT).
        pad: bool,
    },
    /// Deterministic shuffle.
    Shuffle {
        /// Seed.
        seed: u64,
    },
}

impl Validate for PreprocessingStep {
    fn validate(&self) -> VResult {
        match self {
            PreprocessingStep::DocCap { max_chars } => {
                check_positive("PreprocessingStep", "max_chars", *max_chars as u64)
            }
            PreprocessingStep::Tokenize { threads } => {
                check_positive("PreprocessingStep", "threads", *threads as u64)
            }
            PreprocessingStep::BestFitPack {
                seq_len,
                buffer_docs,
                ..
            } => {
                check_positive("PreprocessingStep", "seq_len", *seq_len as u64)?;
                check_positive("PreprocessingStep", "buffer_docs", *buffer_docs as u64)
            }
            PreprocessingStep::PrependBos | PreprocessingStep::Shuffle { .. } => Ok(()),
        }
    }
}

/// One shard of a dataset: its documents (rows: cheap, from a parquet footer) and, once
/// tokenized, its tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardInfo {
    /// The shard file.
    pub path: PathBuf,
    /// Documents (rows) in it.
    pub documents: u64,
    /// Tokens it tokenizes to (BOS included), once counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
}

/// Statistics of a dataset: documents per shard, and tokens once tokenized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetMetadata {
    /// The tokenizer the token counts are of (a path or a name), once tokenized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
    /// Per-shard counts.
    pub shards: Vec<ShardInfo>,
    /// Total documents over all shards.
    pub total_documents: u64,
    /// Total tokens over all shards, once every shard is tokenized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_tokens: Option<u64>,
    /// When computed.
    pub created_at: DateTime<Utc>,
}

impl Validate for DatasetMetadata {
    fn validate(&self) -> VResult {
        let docs: u64 = self.shards.iter().map(|s| s.documents).sum();
        if docs != self.total_documents {
            return Err(ValidationError::new(
                "DatasetMetadata",
                "total_documents",
                self.total_documents,
                Rule::Equals {
                    what: "the sum of shard documents".into(),
                    expected: docs.to_string(),
                },
            ));
        }
        let Some(total) = self.total_tokens else {
            return Ok(());
        };
        if let Some(i) = self.shards.iter().position(|s| s.tokens.is_none()) {
            return Err(ValidationError::new(
                "DatasetMetadata",
                format!("shards[{i}].tokens"),
                "null",
                Rule::Pattern {
                    expected: "a token count on every shard when total_tokens is set",
                },
            ));
        }
        if self.tokenizer.is_none() {
            return Err(ValidationError::new(
                "DatasetMetadata",
                "tokenizer",
                "null",
                Rule::Pattern {
                    expected: "the tokenizer the token counts are of, when total_tokens is set",
                },
            ));
        }
        let sum: u64 = self.shards.iter().filter_map(|s| s.tokens).sum();
        if sum != total {
            return Err(ValidationError::new(
                "DatasetMetadata",
                "total_tokens",
                total,
                Rule::Equals {
                    what: "the sum of shard tokens".into(),
                    expected: sum.to_string(),
                },
            ));
        }
        Ok(())
    }
}

/// A dataset: its sources, how they are processed, and (once tokenized) its statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingDataset {
    /// Name.
    pub name: String,
    /// What it is for.
    pub kind: DatasetKind,
    /// Where the data comes from (at least one).
    pub sources: Vec<DataSource>,
    /// Processing, in order.
    #[serde(default)]
    pub preprocessing: Vec<PreprocessingStep>,
    /// Statistics, once computed.
    #[serde(default)]
    pub metadata: Option<DatasetMetadata>,
}

impl TrainingDataset {
    /// Every local source's shard paths, in source order.
    pub fn shard_paths(&self) -> Vec<PathBuf> {
        self.sources
            .iter()
            .filter(|s| s.source_type == SourceType::Local)
            .flat_map(DataSource::shard_paths)
            .collect()
    }

    /// Checks every local source's files on disk (see [`DataSource::check_files`]).
    pub fn check_files(&self) -> VResult {
        for (i, s) in self.sources.iter().enumerate() {
            s.check_files()
                .map_err(|e| e.within(&format!("sources[{i}]")))?;
        }
        Ok(())
    }
}

impl Validate for TrainingDataset {
    fn validate(&self) -> VResult {
        check_not_blank("TrainingDataset", "name", &self.name)?;
        if self.sources.is_empty() {
            return Err(ValidationError::new(
                "TrainingDataset",
                "sources",
                "[]",
                Rule::NotEmpty,
            ));
        }
        for (i, s) in self.sources.iter().enumerate() {
            s.validate()
                .map_err(|e| e.within(&format!("sources[{i}]")))?;
            let supported = self.kind.supported_formats();
            if !supported.contains(&s.format.as_str()) {
                return Err(ValidationError::new(
                    "TrainingDataset",
                    format!("sources[{i}].format"),
                    s.format,
                    Rule::OneOf { allowed: supported },
                ));
            }
        }
        for (i, p) in self.preprocessing.iter().enumerate() {
            p.validate()
                .map_err(|e| e.within(&format!("preprocessing[{i}]")))?;
        }
        if let Some(m) = &self.metadata {
            m.validate().map_err(|e| e.within("metadata"))?;
        }
        Ok(())
    }
}
