//! Helpers shared by the pretraining test files.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use nanochat_core::tokenizer_config::Vocabulary;
use nanochat_tokenizer::{SPLIT_PATTERN, Tokenizer};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

/// Three shards of `docs` generated word documents each, row groups of 8 rows.
pub fn write_shards(dir: &Path, docs: usize) {
    let words = [
        "the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "away", "home",
    ];
    for s in 0..3 {
        let docs: Vec<String> = (0..docs)
            .map(|d| {
                let n = 5 + (d * 7 + s * 3) % 30;
                (0..n)
                    .map(|i| words[(i * 5 + d + s) % words.len()])
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        let array: ArrayRef = Arc::new(StringArray::from(docs));
        let batch = RecordBatch::try_from_iter([("text", array)]).unwrap();
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(8))
            .build();
        let f = std::fs::File::create(dir.join(format!("shard_{s:05}.parquet"))).unwrap();
        let mut w = ArrowWriter::try_new(f, batch.schema(), Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }
}

/// A byte-level tokenizer (no merges).
pub fn byte_tokenizer() -> Arc<Tokenizer> {
    Arc::new(Tokenizer::from_vocab(Vocabulary::from_merges(&[]).unwrap(), SPLIT_PATTERN).unwrap())
}
