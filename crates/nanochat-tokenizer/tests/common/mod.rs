//! Documents of the offline pretraining shards, read with parquet directly: the shard reader
//! (`nanochat_data::dataset`) sits above this crate, so the tokenizer's own tests and bench
//! cannot use it.

use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use nanochat_core::paths::data_dir;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// `$NANOCHAT_DATA_DIR/pretrain/*.parquet`, sorted (the last one is the validation shard).
#[allow(dead_code)]
pub fn pretrain_shards() -> Vec<PathBuf> {
    let dir = data_dir().join("pretrain");
    let entries = std::fs::read_dir(&dir).expect("offline data (NANOCHAT_DATA_DIR)");
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    files.sort();
    files
}

/// The `text` column of `path`, in file order, read lazily.
pub fn shard_docs(path: &Path) -> impl Iterator<Item = String> {
    let file = std::fs::File::open(path).expect("offline data present (NANOCHAT_DATA_DIR)");
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let mask = ProjectionMask::columns(builder.parquet_schema(), ["text"]);
    let reader = builder.with_projection(mask).build().unwrap();
    reader.flat_map(|batch| {
        let batch = batch.unwrap();
        let col = batch.column(0);
        let texts: Vec<Option<&str>> = match col.as_string_opt::<i32>() {
            Some(a) => a.iter().collect(),
            None => match col.as_string_opt::<i64>() {
                Some(a) => a.iter().collect(),
                None => col.as_string_view().iter().collect(),
            },
        };
        texts
            .into_iter()
            .map(|t| t.unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    })
}
