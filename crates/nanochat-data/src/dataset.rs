//! Pretraining shards on disk (upstream `nanochat/dataset.py`): a folder of parquet files
//! `shard_00000.parquet …` with a `text` column, read one row group at a time. The last shard
//! is the validation split, all others are train.
//!
//! Tokenizer training, the best-fit loader (`dataloader`), `tok-eval` and `base-eval`
//! read shards through these functions; [`download`] fetches them.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

pub mod download;

/// Errors reading shards; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The folder cannot be listed.
    #[error(
        "cannot list shard folder {dir}: {source} (point --data-dir or NANOCHAT_DATA_DIR at a folder of *.parquet shards)"
    )]
    List {
        /// The folder.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No shards where shards were expected.
    #[error(
        "no *.parquet shards in {dir} (set --data-dir or NANOCHAT_DATA_DIR, or run `nanochat download`)"
    )]
    NoShards {
        /// The folder.
        dir: PathBuf,
    },
    /// A shard cannot be opened or decoded.
    #[error("shard {path}: {reason}")]
    Shard {
        /// The shard.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

/// Which part of the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// All shards but the last.
    Train,
    /// The last shard.
    Val,
}

/// All `*.parquet` files in `dir`, sorted by name (temporary and partial downloads excluded).
pub fn list_parquet_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let list_err = |source| DataError::List {
        dir: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(list_err)? {
        let entry = entry.map_err(list_err)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".parquet") && !name.starts_with('.') {
            files.push(entry.path());
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(DataError::NoShards {
            dir: dir.to_path_buf(),
        });
    }
    Ok(files)
}

/// The shards of a split: the last file is validation, the rest train (a single shard serves
/// as both, with a warning left to the caller).
pub fn split_files(files: &[PathBuf], split: Split) -> &[PathBuf] {
    match (split, files.len()) {
        (_, 0 | 1) => files,
        (Split::Train, n) => &files[..n - 1],
        (Split::Val, n) => &files[n - 1..],
    }
}

fn shard_err(path: &Path, e: impl std::fmt::Display) -> DataError {
    DataError::Shard {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// One parquet shard, read a row group at a time.
pub struct Shard {
    path: PathBuf,
    num_row_groups: usize,
    num_rows: u64,
}

impl Shard {
    /// Opens a shard and reads its footer (only the footer: cheap).
    pub fn open(path: &Path) -> Result<Self, DataError> {
        let file = File::open(path).map_err(|e| shard_err(path, e))?;
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| shard_err(path, e))?;
        let num_row_groups = builder.metadata().num_row_groups();
        let num_rows = builder.metadata().file_metadata().num_rows().max(0) as u64;
        Ok(Self {
            path: path.to_path_buf(),
            num_row_groups,
            num_rows,
        })
    }

    /// Number of rows (documents), from the footer.
    pub fn num_rows(&self) -> u64 {
        self.num_rows
    }

    /// The shard's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of row groups.
    pub fn num_row_groups(&self) -> usize {
        self.num_row_groups
    }

    /// The `text` column of row group `rg`.
    pub fn read_row_group(&self, rg: usize) -> Result<Vec<String>, DataError> {
        let path = &self.path;
        let file = File::open(path).map_err(|e| shard_err(path, e))?;
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| shard_err(path, e))?;
        let schema = builder.parquet_schema();
        let Some(col) = (0..schema.num_columns()).find(|&i| schema.column(i).name() == "text")
        else {
            return Err(shard_err(path, "has no `text` column"));
        };
        let mask = ProjectionMask::leaves(schema, [col]);
        let reader = builder
            .with_row_groups(vec![rg])
            .with_projection(mask)
            .with_batch_size(1 << 16)
            .build()
            .map_err(|e| shard_err(path, e))?;
        let mut texts = Vec::new();
        for batch in reader {
            let batch = batch.map_err(|e| shard_err(path, format!("row group {rg}: {e}")))?;
            let column = batch.column(0);
            let text = |s: Option<&str>| s.unwrap_or_default().to_string();
            if let Some(a) = column.as_string_opt::<i32>() {
                texts.extend(a.iter().map(text));
            } else if let Some(a) = column.as_string_opt::<i64>() {
                texts.extend(a.iter().map(text));
            } else if let Some(a) = column.as_string_view_opt() {
                texts.extend(a.iter().map(text));
            } else {
                return Err(shard_err(
                    path,
                    format!(
                        "`text` column has type {}, expected strings",
                        column.data_type()
                    ),
                ));
            }
        }
        Ok(texts)
    }
}

/// A batch of documents and where it came from.
#[derive(Debug, Clone)]
pub struct DocBatch {
    /// Index of the shard in the file list.
    pub shard: usize,
    /// Row group within the shard.
    pub row_group: usize,
    /// The documents.
    pub texts: Vec<String>,
}

/// Iterates the documents of `files`, one row group per item, in file order; within each file
/// row groups `start, start + step, …` (upstream `parquets_iter_batched`; start/step stride
/// data-parallel ranks).
pub fn iter_batches(
    files: &[PathBuf],
    start: usize,
    step: usize,
) -> impl Iterator<Item = Result<DocBatch, DataError>> + '_ {
    let step = step.max(1);
    files.iter().enumerate().flat_map(move |(shard_idx, path)| {
        let shard = Shard::open(path);
        let groups: Box<dyn Iterator<Item = Result<DocBatch, DataError>>> =
            match shard {
                Err(e) => Box::new(std::iter::once(Err(e))),
                Ok(shard) => Box::new((start..shard.num_row_groups()).step_by(step).map(
                    move |rg| {
                        shard.read_row_group(rg).map(|texts| DocBatch {
                            shard: shard_idx,
                            row_group: rg,
                            texts,
                        })
                    },
                )),
            };
        groups
    })
}
