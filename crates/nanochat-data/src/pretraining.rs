//! Pretraining data as a [`TrainingDataset`] (upstream `nanochat/dataset.py`: a folder of
//! parquet shards whose last shard is validation; `base_train.py` lists them with
//! `list_parquet_files`).
//!
//! The base-train loader is built from a dataset description, not from a directory listing:
//! [`local_dataset`] describes a folder of shards (or [`ShardSource::dataset`] the download
//! source, resolved to its download folder by [`localize`]), and [`PretrainingData::prepare`]
//! checks it *before* anything trains: the data model's rules ([`Validate`]: at least one
//! source, weights > 0, formats), every shard on disk ([`TrainingDataset::check_files`]: it
//! exists and starts and ends with the parquet magic bytes), and every footer (rows per shard,
//! cheap: no row group is read). The result is the validated description, with the shard row
//! counts as its [`DatasetMetadata`], which base-train stores in its checkpoint meta.

use std::path::{Path, PathBuf};

use nanochat_core::{
    DataFormat, DataSource, DatasetKind, DatasetMetadata, PreprocessingStep, ShardInfo, SourceType,
    TrainingDataset, Validate, ValidationError,
};

use crate::dataloader::LoaderOptions;
use crate::dataset::download::{ShardSource, shard_file_name};
use crate::dataset::{DataError, Shard, Split, split_files};

/// The name of the single source of a pretraining dataset.
pub const SOURCE_NAME: &str = "pretrain";

/// Why a pretraining dataset was refused; every message names the dataset and the file or
/// field and the rule.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// A rule of the data model is broken (the validation error names field, value and rule).
    #[error(
        "pretraining dataset {name:?} refused: {source} (point --data-dir or NANOCHAT_DATA_DIR at a folder of parquet shards, or run `nanochat download`)"
    )]
    Invalid {
        /// The dataset.
        name: String,
        /// The rule broken.
        #[source]
        source: Box<ValidationError>,
    },
    /// A shard passed the cheap checks but its footer cannot be read.
    #[error("pretraining dataset {name:?} refused: {source}")]
    Shard {
        /// The dataset.
        name: String,
        /// The shard and what failed.
        #[source]
        source: DataError,
    },
    /// Fewer than two shards: pretraining needs train shards and the last one for validation.
    #[error(
        "pretraining dataset {name:?} refused: need at least 2 shards (train + the last one for validation), found {found} in {location} (`nanochat download -n 8` fetches 8 train shards and the validation shard)"
    )]
    TooFewShards {
        /// The dataset.
        name: String,
        /// Shards found.
        found: usize,
        /// Where.
        location: String,
    },
    /// Something this loader does not do: a source that is not a local folder (download it
    /// first), or several sources (mixing by weight is not implemented).
    #[error("pretraining dataset {name:?} refused: {what}")]
    Unsupported {
        /// The dataset.
        name: String,
        /// What and what to do instead.
        what: String,
    },
    /// The folder cannot be listed.
    #[error(transparent)]
    List(DataError),
}

/// The `*.parquet` files of `dir` as a one-source pretraining dataset named after the folder
/// (hidden and partial files are left out). A folder that does not exist gives a dataset whose
/// check reports it; one that cannot be read is an error.
pub fn local_dataset(dir: &Path) -> Result<TrainingDataset, DatasetError> {
    let mut shards = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry.map_err(|source| list_err(dir, source))?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if name.ends_with(".parquet") && !name.starts_with('.') {
                    shards.push(PathBuf::from(name));
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(list_err(dir, source)),
    }
    shards.sort();
    let name = dir.file_name().map_or_else(
        || "pretraining".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    Ok(dataset(
        name,
        SourceType::Local,
        dir.display().to_string(),
        shards,
    ))
}

fn list_err(dir: &Path, source: std::io::Error) -> DatasetError {
    DatasetError::List(DataError::List {
        dir: dir.to_path_buf(),
        source,
    })
}

fn dataset(
    name: String,
    source_type: SourceType,
    location: String,
    shards: Vec<PathBuf>,
) -> TrainingDataset {
    TrainingDataset {
        name,
        kind: DatasetKind::Pretraining,
        sources: vec![DataSource {
            name: SOURCE_NAME.into(),
            source_type,
            format: DataFormat::Parquet,
            location,
            weight: 1.0,
            shards,
        }],
        preprocessing: Vec::new(),
        metadata: None,
    }
}

impl ShardSource {
    /// The download source as a dataset: shards `indices` (see [`ShardSource::indices`]) at
    /// the Hugging Face URL, named after the repository.
    pub fn dataset(&self, indices: &[usize]) -> TrainingDataset {
        let repo = self.base_url.trim_end_matches("/resolve/main");
        let name = repo.rsplit('/').next().unwrap_or("download").to_string();
        let shards = indices.iter().map(|&i| shard_file_name(i).into()).collect();
        dataset(name, SourceType::HuggingFace, self.base_url.clone(), shards)
    }
}

/// A dataset whose downloaded sources (Hugging Face, HTTP) are read from `download_dir`, where
/// `nanochat download` puts them; local sources are unchanged.
pub fn localize(dataset: &TrainingDataset, download_dir: &Path) -> TrainingDataset {
    let mut out = dataset.clone();
    for s in &mut out.sources {
        if s.source_type != SourceType::Local {
            s.source_type = SourceType::Local;
            s.location = download_dir.display().to_string();
        }
    }
    out
}

/// The preprocessing of the best-fit pretraining loader with `opts` (BOS prepended, tokenized,
/// packed into rows of `seq_len + 1` by best fit, cropping), recorded in the description.
pub fn loader_steps(opts: &LoaderOptions, threads: usize) -> Vec<PreprocessingStep> {
    vec![
        PreprocessingStep::PrependBos,
        PreprocessingStep::Tokenize {
            threads: threads.max(1),
        },
        PreprocessingStep::BestFitPack {
            seq_len: opts.seq_len,
            buffer_docs: opts.buffer_size,
            pad: false,
        },
    ]
}

/// A checked pretraining dataset: its description (with row counts) and its shards split into
/// train and validation.
#[derive(Debug, Clone)]
pub struct PretrainingData {
    /// The validated description, `metadata` holding each shard's rows.
    pub dataset: TrainingDataset,
    /// Train shards (all but the last).
    pub train: Vec<PathBuf>,
    /// The validation shard (the last).
    pub val: Vec<PathBuf>,
}

impl PretrainingData {
    /// Checks `dataset` for pretraining, in order: the description's rules, a single local
    /// parquet source, its files on disk (exist, magic bytes), at least 2 shards, every footer
    /// (rows). The first failure is returned, naming the file and the rule.
    pub fn prepare(mut dataset: TrainingDataset) -> Result<Self, DatasetError> {
        let name = dataset.name.clone();
        let invalid = |source| DatasetError::Invalid {
            name: name.clone(),
            source: Box::new(source),
        };
        dataset.validate().map_err(invalid)?;
        let unsupported = |what: String| DatasetError::Unsupported {
            name: name.clone(),
            what,
        };
        if dataset.kind != DatasetKind::Pretraining {
            return Err(unsupported(format!(
                "kind {:?}: the pretraining loader reads pretraining datasets",
                dataset.kind
            )));
        }
        let [source] = dataset.sources.as_slice() else {
            return Err(unsupported(format!(
                "{} sources: mixing sources by weight is not implemented, give one folder",
                dataset.sources.len()
            )));
        };
        if source.source_type != SourceType::Local {
            return Err(unsupported(format!(
                "source {:?} is {:?} at {}: download it first (`nanochat download`) and train from its folder",
                source.name, source.source_type, source.location
            )));
        }
        if source.format != DataFormat::Parquet {
            return Err(unsupported(format!(
                "source {:?} is {}: the pretraining loader reads parquet",
                source.name, source.format
            )));
        }
        let location = source.location.clone();
        dataset.check_files().map_err(invalid)?;
        let files = dataset.shard_paths();
        if files.len() < 2 {
            return Err(DatasetError::TooFewShards {
                name,
                found: files.len(),
                location,
            });
        }
        let mut shards = Vec::with_capacity(files.len());
        for path in &files {
            let shard = Shard::open(path).map_err(|source| DatasetError::Shard {
                name: name.clone(),
                source,
            })?;
            shards.push(ShardInfo {
                path: path.clone(),
                documents: shard.num_rows(),
                tokens: None,
            });
        }
        let metadata = DatasetMetadata {
            tokenizer: None,
            total_documents: shards.iter().map(|s| s.documents).sum(),
            shards,
            total_tokens: None,
            created_at: chrono::Utc::now(),
        };
        metadata.validate().map_err(invalid)?;
        dataset.metadata = Some(metadata);
        Ok(Self {
            train: split_files(&files, Split::Train).to_vec(),
            val: split_files(&files, Split::Val).to_vec(),
            dataset,
        })
    }

    /// The dataset in one line: name, shards (train + val), documents, location.
    pub fn summary(&self) -> String {
        describe(&self.dataset)
    }
}

/// A dataset in one line: `name: N shards (N-1 train + 1 val), D documents in <location>`.
pub fn describe(dataset: &TrainingDataset) -> String {
    let shards: usize = dataset.sources.iter().map(|s| s.shards.len()).sum();
    let docs = dataset.metadata.as_ref().map_or(String::new(), |m| {
        format!(", {} documents", m.total_documents)
    });
    let location: Vec<&str> = dataset
        .sources
        .iter()
        .map(|s| s.location.as_str())
        .collect();
    format!(
        "{}: {shards} shards ({} train + 1 val){docs} in {}",
        dataset.name,
        shards.saturating_sub(1),
        location.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_source_describes_and_localizes() {
        let src = ShardSource::climbmix();
        let ds = src.dataset(&src.indices(Some(2)));
        assert_eq!(ds.name, "climbmix-400b-shuffle");
        let s = &ds.sources[0];
        assert_eq!(s.source_type, SourceType::HuggingFace);
        let names: Vec<_> = s.shards.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            names,
            [
                "shard_00000.parquet",
                "shard_00001.parquet",
                "shard_06542.parquet"
            ]
        );
        ds.validate().unwrap();
        // Not downloaded: refused as such, naming the URL.
        let err = PretrainingData::prepare(ds.clone()).unwrap_err();
        assert!(err.to_string().contains("download it first"), "{err}");
        // Localized to an empty folder: the first missing shard is named.
        let dir = tempfile::tempdir().unwrap();
        let err = PretrainingData::prepare(localize(&ds, dir.path())).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("shard_00000.parquet") && msg.contains("does not exist"),
            "{msg}"
        );
    }
}
