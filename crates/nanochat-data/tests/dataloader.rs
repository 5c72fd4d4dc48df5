//! The best-fit loader's invariants (property-tested on generated shards): every row starts
//! with BOS and holds exactly T+1 tokens, no token is invented (every BOS-delimited segment is a
//! prefix of a real document), data-parallel ranks read disjoint documents that together cover
//! the data, and a resumed loader continues with exactly the batches of an uninterrupted one.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use nanochat_core::tokenizer_config::Vocabulary;
use nanochat_data::dataloader::{BestFitLoader, DocStream, LoaderOptions, LoaderState};
use nanochat_tokenizer::{SPLIT_PATTERN, Tokenizer};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use proptest::prelude::*;

fn byte_tokenizer() -> Arc<Tokenizer> {
    Arc::new(Tokenizer::from_vocab(Vocabulary::from_merges(&[]).unwrap(), SPLIT_PATTERN).unwrap())
}

fn write_shard(path: &Path, docs: &[String], rows_per_group: usize) {
    let array: ArrayRef = Arc::new(StringArray::from(docs.to_vec()));
    let batch = RecordBatch::try_from_iter([("text", array)]).unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(rows_per_group.max(1)))
        .build();
    let file = std::fs::File::create(path).unwrap();
    let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn shards(dir: &Path, docs: &[Vec<String>], rows_per_group: usize) -> Vec<PathBuf> {
    docs.iter()
        .enumerate()
        .map(|(i, d)| {
            let p = dir.join(format!("shard_{i:05}.parquet"));
            write_shard(&p, d, rows_per_group);
            p
        })
        .collect()
}

fn opts(b: usize, t: usize, buffer: usize, tok_batch: usize) -> LoaderOptions {
    LoaderOptions {
        buffer_size: buffer,
        tokenizer_batch_size: tok_batch,
        prefetch: 2,
        ..LoaderOptions::new(b, t)
    }
}

fn corpus() -> impl Strategy<Value = Vec<Vec<String>>> {
    prop::collection::vec(prop::collection::vec("[a-z ]{0,40}", 1..12), 1..4)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn rows_are_bos_aligned_and_made_of_real_documents(
        docs in corpus(), rg in 1usize..5, b in 1usize..4, t in 2usize..48,
        buffer in 1usize..8, tok_batch in 1usize..4,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let files = shards(dir.path(), &docs, rg);
        let tok = byte_tokenizer();
        let bos = tok.bos_token_id();
        let all: Vec<Vec<u32>> = docs.iter().flatten().map(|d| tok.encode_with(d, Some(bos), None)).collect();
        let mut loader = BestFitLoader::new(files, tok.clone(), opts(b, t, buffer, tok_batch), None).unwrap();
        for _ in 0..4 {
            let batch = loader.next_batch().unwrap();
            prop_assert_eq!(batch.rows.len(), b * (t + 1));
            for row in batch.rows.chunks(t + 1) {
                prop_assert_eq!(row[0], bos);
                // Split at BOS: each segment is a prefix of some document.
                let mut starts: Vec<usize> = row.iter().enumerate().filter(|(_, v)| **v == bos).map(|(i, _)| i).collect();
                starts.push(row.len());
                for w in starts.windows(2) {
                    let seg = &row[w[0]..w[1]];
                    prop_assert!(all.iter().any(|d| d.starts_with(seg)), "segment {:?} is no document's prefix", seg);
                }
            }
        }
    }

    #[test]
    fn resume_gives_the_same_batches(
        docs in corpus(), rg in 1usize..5, b in 1usize..3, t in 2usize..32,
        buffer in 1usize..8, tok_batch in 1usize..4, n in 2usize..8,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let files = shards(dir.path(), &docs, rg);
        let tok = byte_tokenizer();
        let o = opts(b, t, buffer, tok_batch);
        let straight: Vec<Vec<u32>> = BestFitLoader::new(files.clone(), tok.clone(), o.clone(), None)
            .unwrap().take(n).map(|b| b.unwrap().rows).collect();
        let mut first = BestFitLoader::new(files.clone(), tok.clone(), o.clone(), None).unwrap();
        let mut resumed = Vec::new();
        let mut state: Option<LoaderState> = None;
        for _ in 0..n / 2 {
            let batch = first.next_batch().unwrap();
            state = Some(batch.state.clone());
            resumed.push(batch.rows);
        }
        drop(first);
        // The state survives JSON (it is stored in the checkpoint meta).
        let json = serde_json::to_string(&state).unwrap();
        let state: Option<LoaderState> = serde_json::from_str(&json).unwrap();
        let second = BestFitLoader::new(files, tok, o, state.as_ref()).unwrap();
        resumed.extend(second.take(n - n / 2).map(|b| b.unwrap().rows));
        prop_assert_eq!(straight, resumed);
    }

    #[test]
    fn ranks_read_disjoint_documents_covering_the_data(
        docs in corpus(), rg in 1usize..5, world in 1usize..4, tok_batch in 1usize..4,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let files = shards(dir.path(), &docs, rg);
        let total: usize = docs.iter().map(Vec::len).sum();
        let mut seen = BTreeSet::new();
        for rank in 0..world {
            let o = LoaderOptions { rank, world_size: world, ..opts(1, 4, 1, tok_batch) };
            let mut s = DocStream::new(files.clone(), &o, DocStream::start(rank));
            // Read one epoch (a batch returned with epoch 2 belongs to the next pass).
            while let Ok((refs, _)) = s.next_batch() {
                if s.pos().epoch > 1 {
                    break;
                }
                for r in refs {
                    prop_assert!((r.1 as usize) % world == rank, "rank {} read row group {}", rank, r.1);
                    prop_assert!(seen.insert(r), "document {:?} read twice", r);
                }
            }
        }
        prop_assert_eq!(seen.len(), total);
    }
}

#[test]
fn bad_state_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let files = shards(dir.path(), &[vec!["hello".to_string()]], 1);
    let mut state = BestFitLoader::new(files.clone(), byte_tokenizer(), opts(1, 4, 1, 1), None)
        .unwrap()
        .next_batch()
        .unwrap()
        .state;
    state
        .buffer
        .push(nanochat_data::dataloader::DocRef(7, 0, 0));
    let err = BestFitLoader::new(files, byte_tokenizer(), opts(1, 4, 1, 1), Some(&state))
        .err()
        .unwrap();
    assert!(err.to_string().contains("shard index 7"), "{err}");
}
