//! The pretraining dataset is checked before training: a good folder passes with its rows
//! counted; a missing shard, an empty folder, a non-parquet file, a broken footer or a single
//! shard are refused with a message naming the file (or folder) and the rule.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use nanochat_core::{SourceType, Validate};
use nanochat_data::pretraining::{DatasetError, PretrainingData, local_dataset};
use parquet::arrow::ArrowWriter;

fn write_shard(path: &Path, docs: &[&str]) {
    let array: ArrayRef = Arc::new(StringArray::from(docs.to_vec()));
    let batch = RecordBatch::try_from_iter([("text", array)]).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut w = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// A folder with shards of 3, 2 and 4 documents.
fn good_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (i, n) in [3, 2, 4].into_iter().enumerate() {
        let docs: Vec<&str> = (0..n).map(|_| "some text").collect();
        write_shard(&dir.path().join(format!("shard_{i:05}.parquet")), &docs);
    }
    dir
}

fn refusal(dir: &Path) -> String {
    let ds = local_dataset(dir).unwrap();
    PretrainingData::prepare(ds).unwrap_err().to_string()
}

#[test]
fn good_folder_passes_with_rows_and_split() {
    let dir = good_folder();
    // A stray non-parquet file beside the shards is not part of the dataset.
    std::fs::write(dir.path().join("README.txt"), "notes").unwrap();
    let data = PretrainingData::prepare(local_dataset(dir.path()).unwrap()).unwrap();
    data.dataset.validate().unwrap();
    let meta = data.dataset.metadata.as_ref().unwrap();
    let rows: Vec<u64> = meta.shards.iter().map(|s| s.documents).collect();
    assert_eq!(rows, [3, 2, 4]);
    assert_eq!(meta.total_documents, 9);
    assert_eq!(data.train.len(), 2);
    assert!(data.val[0].ends_with("shard_00002.parquet"));
    assert_eq!(data.dataset.sources[0].source_type, SourceType::Local);
    assert!(
        data.summary()
            .contains("3 shards (2 train + 1 val), 9 documents")
    );
}

#[test]
fn missing_shard_is_refused_naming_it() {
    let dir = good_folder();
    let ds = local_dataset(dir.path()).unwrap();
    std::fs::remove_file(dir.path().join("shard_00001.parquet")).unwrap();
    let err = PretrainingData::prepare(ds).unwrap_err();
    assert!(matches!(err, DatasetError::Invalid { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("sources[0].shards[1]"), "{msg}");
    assert!(msg.contains("shard_00001.parquet"), "{msg}");
    assert!(msg.contains("path does not exist"), "{msg}");
}

#[test]
fn empty_or_absent_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a shard").unwrap();
    let msg = refusal(dir.path());
    assert!(msg.contains("sources[0].shards = [] (in "), "{msg}");
    assert!(msg.contains("must not be empty"), "{msg}");
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    let absent = dir.path().join("nope");
    let msg = refusal(&absent);
    assert!(msg.contains("sources[0].location"), "{msg}");
    assert!(msg.contains("path does not exist"), "{msg}");
}

#[test]
fn non_parquet_file_is_refused_naming_it() {
    let dir = good_folder();
    std::fs::write(
        dir.path().join("shard_00001.parquet"),
        "<html>404: this download went wrong</html>",
    )
    .unwrap();
    let msg = refusal(dir.path());
    assert!(msg.contains("sources[0].shards[1]"), "{msg}");
    assert!(msg.contains("shard_00001.parquet"), "{msg}");
    assert!(msg.contains("must be a parquet file"), "{msg}");
}

#[test]
fn broken_footer_is_refused_naming_it() {
    let dir = good_folder();
    // Right magic bytes at both ends, garbage in between: only the footer read catches it.
    std::fs::write(
        dir.path().join("shard_00002.parquet"),
        b"PAR1 not really parquet \xff\xff\xff\x7fPAR1",
    )
    .unwrap();
    let err = refusal(dir.path());
    assert!(err.contains("shard_00002.parquet"), "{err}");
}

#[test]
fn one_shard_is_too_few() {
    let dir = tempfile::tempdir().unwrap();
    write_shard(&dir.path().join("shard_00000.parquet"), &["only"]);
    let msg = refusal(dir.path());
    assert!(msg.contains("need at least 2 shards"), "{msg}");
    assert!(msg.contains("found 1"), "{msg}");
}
