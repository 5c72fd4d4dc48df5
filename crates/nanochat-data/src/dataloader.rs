//! The BOS-aligned best-fit pretraining loader (upstream HEAD `nanochat/dataloader.py`,
//! `tokenizing_distributed_data_loader_with_state_bos_bestfit`), with **exact** resume.
//!
//! Documents stream from the parquet shards (row groups `rank, rank + world, …` of each file,
//! batches of 128 documents, infinite epochs) and are tokenized with BOS prepended on a worker
//! thread (rayon inside), ahead of the consumer. Each row of `T + 1` tokens is filled by taking
//! the largest buffered document that fits entirely, and when none fits, the shortest one
//! cropped to fill the row exactly: every row starts with BOS, nothing is padded.
//!
//! Upstream resumes approximately (it skips to the next row-group block and forgets its
//! document buffer). Here [`LoaderState`] records the stream position *and* which documents sit
//! in the buffer, in order; resuming re-reads and re-tokenizes those documents, so the batches
//! after a resume are exactly those an uninterrupted run would have produced.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use crate::dataset::{DataError, Shard};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use nanochat_tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};

/// A document's address: shard index (in the split's file list), row group, row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DocRef(pub u32, pub u32, pub u32);

/// Where the document stream stands: the next document to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPos {
    /// Shard index within the split (upstream `pq_idx`).
    pub pq_idx: usize,
    /// Row group within the shard (upstream `rg_idx`).
    pub rg_idx: usize,
    /// Pass over the data, from 1 (upstream `epoch`).
    pub epoch: u64,
    /// Next row within the row group.
    pub row: usize,
}

/// Everything needed to continue a loader exactly where it stopped (saved in the checkpoint's
/// meta as `dataloader_state_dict`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderState {
    /// Stream position after the last document batch the loader took.
    #[serde(flatten)]
    pub pos: StreamPos,
    /// Documents waiting in the best-fit buffer, in buffer order.
    pub buffer: Vec<DocRef>,
}

/// Loader settings (upstream's defaults: 128 documents per tokenizer batch, buffer 1000).
#[derive(Debug, Clone)]
pub struct LoaderOptions {
    /// Rows per batch (`B`, the device batch size).
    pub batch_size: usize,
    /// Tokens per row input (`T`); rows hold `T + 1`.
    pub seq_len: usize,
    /// This process's data-parallel rank.
    pub rank: usize,
    /// Number of data-parallel ranks.
    pub world_size: usize,
    /// Documents per tokenizer batch.
    pub tokenizer_batch_size: usize,
    /// The buffer is refilled while it holds fewer documents than this.
    pub buffer_size: usize,
    /// Tokenized document batches computed ahead by the worker.
    pub prefetch: usize,
}

impl LoaderOptions {
    /// Upstream's settings for `B × T` on one rank.
    pub fn new(batch_size: usize, seq_len: usize) -> Self {
        Self {
            batch_size,
            seq_len,
            rank: 0,
            world_size: 1,
            tokenizer_batch_size: 128,
            buffer_size: 1000,
            prefetch: 8,
        }
    }
}

/// Loader failures (the shard reader's, or an empty stream).
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// A shard could not be read.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The files hold no documents for this rank.
    #[error("no documents for rank {rank} of {world} in {files} shard(s)")]
    Empty {
        /// Rank.
        rank: usize,
        /// World size.
        world: usize,
        /// Number of files.
        files: usize,
    },
    /// A resume state that does not fit the files.
    #[error("loader state does not fit the data: {0}")]
    BadState(String),
    /// The tokenizer worker stopped.
    #[error("the tokenizer worker stopped")]
    WorkerGone,
}

/// The document stream of one rank (upstream `_document_batches`), resumable at any batch.
pub struct DocStream {
    files: Vec<PathBuf>,
    rank: usize,
    world: usize,
    batch: usize,
    pos: StreamPos,
    shard: Option<(usize, Shard)>,
    group: Option<(usize, usize, Vec<String>)>,
}

impl DocStream {
    /// A stream over `files` from `pos` (use [`DocStream::start`] for a fresh one).
    pub fn new(files: Vec<PathBuf>, opts: &LoaderOptions, pos: StreamPos) -> Self {
        Self {
            files,
            rank: opts.rank,
            world: opts.world_size.max(1),
            batch: opts.tokenizer_batch_size.max(1),
            pos,
            shard: None,
            group: None,
        }
    }

    /// The position of a fresh stream for `rank`.
    pub fn start(rank: usize) -> StreamPos {
        StreamPos {
            pq_idx: 0,
            rg_idx: rank,
            epoch: 1,
            row: 0,
        }
    }

    /// The position of the next document.
    pub fn pos(&self) -> StreamPos {
        self.pos
    }

    /// The next batch of documents with their addresses.
    pub fn next_batch(&mut self) -> Result<(Vec<DocRef>, Vec<String>), LoaderError> {
        let mut empty_files = 0;
        loop {
            if self.pos.pq_idx >= self.files.len() {
                self.pos = StreamPos {
                    pq_idx: 0,
                    rg_idx: self.rank,
                    epoch: self.pos.epoch + 1,
                    row: 0,
                };
            }
            let pq = self.pos.pq_idx;
            if self.shard.as_ref().is_none_or(|(i, _)| *i != pq) {
                self.shard = Some((pq, Shard::open(&self.files[pq])?));
            }
            let shard = &self.shard.as_ref().expect("opened").1;
            if self.pos.rg_idx >= shard.num_row_groups() {
                empty_files += 1;
                if empty_files > self.files.len() + 1 {
                    return Err(LoaderError::Empty {
                        rank: self.rank,
                        world: self.world,
                        files: self.files.len(),
                    });
                }
                self.pos.pq_idx += 1;
                self.pos.rg_idx = self.rank;
                self.pos.row = 0;
                continue;
            }
            let rg = self.pos.rg_idx;
            if self
                .group
                .as_ref()
                .is_none_or(|(p, r, _)| (*p, *r) != (pq, rg))
            {
                self.group = Some((pq, rg, shard.read_row_group(rg)?));
            }
            let texts = &self.group.as_ref().expect("read").2;
            let start = self.pos.row.min(texts.len());
            let end = (start + self.batch).min(texts.len());
            let docs = texts[start..end].to_vec();
            let refs = (start..end)
                .map(|r| DocRef(pq as u32, rg as u32, r as u32))
                .collect();
            if end >= texts.len() {
                self.pos.rg_idx += self.world;
                self.pos.row = 0;
            } else {
                self.pos.row = end;
            }
            if !docs.is_empty() {
                return Ok((refs, docs));
            }
        }
    }
}

/// Reads the documents at `refs` (any order) and returns their texts in `refs` order.
pub fn read_docs(files: &[PathBuf], refs: &[DocRef]) -> Result<Vec<String>, LoaderError> {
    let mut by_group: BTreeMap<(u32, u32), Vec<String>> = BTreeMap::new();
    for r in refs {
        let key = (r.0, r.1);
        if by_group.contains_key(&key) {
            continue;
        }
        let path = files.get(r.0 as usize).ok_or_else(|| {
            LoaderError::BadState(format!("shard index {} of {}", r.0, files.len()))
        })?;
        let shard = Shard::open(path)?;
        if r.1 as usize >= shard.num_row_groups() {
            return Err(LoaderError::BadState(format!(
                "{} has no row group {}",
                path.display(),
                r.1
            )));
        }
        by_group.insert(key, shard.read_row_group(r.1 as usize)?);
    }
    refs.iter()
        .map(|r| {
            by_group[&(r.0, r.1)]
                .get(r.2 as usize)
                .cloned()
                .ok_or_else(|| {
                    LoaderError::BadState(format!(
                        "row {} missing in row group {} of shard {}",
                        r.2, r.1, r.0
                    ))
                })
        })
        .collect()
}

type Tokenized = Result<(Vec<DocRef>, Vec<Vec<u32>>, StreamPos), LoaderError>;

fn worker(mut stream: DocStream, tok: Arc<Tokenizer>, tx: SyncSender<Tokenized>) {
    let bos = tok.bos_token_id();
    loop {
        let item = stream.next_batch().map(|(refs, docs)| {
            let tokens = tok.encode_batch(&docs, Some(bos), None);
            (refs, tokens, stream.pos())
        });
        let failed = item.is_err();
        if tx.send(item).is_err() || failed {
            return;
        }
    }
}

/// One batch: `B` rows of `T + 1` tokens, and the state to resume after it.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Row-major `[B, T + 1]`.
    pub rows: Vec<u32>,
    /// `B`.
    pub batch_size: usize,
    /// `T`.
    pub seq_len: usize,
    /// Resume here to get the batch after this one.
    pub state: LoaderState,
}

impl Batch {
    /// `(inputs, targets)` = `(row[..T], row[1..])` as `[B, T]` int tensors.
    pub fn to_tensors<B: Backend>(
        &self,
        device: &B::Device,
    ) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
        let (b, t) = (self.batch_size, self.seq_len);
        let mut x = Vec::with_capacity(b * t);
        let mut y = Vec::with_capacity(b * t);
        for row in self.rows.chunks(t + 1) {
            x.extend(row[..t].iter().map(|&v| v as i64));
            y.extend(row[1..].iter().map(|&v| v as i64));
        }
        (
            Tensor::from_data(TensorData::new(x, [b, t]), device),
            Tensor::from_data(TensorData::new(y, [b, t]), device),
        )
    }
}

/// The best-fit loader (an iterator of [`Batch`]es).
pub struct BestFitLoader {
    opts: LoaderOptions,
    rx: Receiver<Tokenized>,
    buffer: Vec<(DocRef, Vec<u32>)>,
    pos: StreamPos,
}

impl BestFitLoader {
    /// A loader over `files` (one split), fresh or resumed from `state`.
    pub fn new(
        files: Vec<PathBuf>,
        tokenizer: Arc<Tokenizer>,
        opts: LoaderOptions,
        state: Option<&LoaderState>,
    ) -> Result<Self, LoaderError> {
        let (pos, buffer) = match state {
            None => (DocStream::start(opts.rank), Vec::new()),
            Some(s) => {
                let texts = read_docs(&files, &s.buffer)?;
                let bos = tokenizer.bos_token_id();
                let tokens = tokenizer.encode_batch(&texts, Some(bos), None);
                (s.pos, s.buffer.iter().copied().zip(tokens).collect())
            }
        };
        let stream = DocStream::new(files, &opts, pos);
        let (tx, rx) = sync_channel(opts.prefetch.max(1));
        std::thread::Builder::new()
            .name("nanochat-tokenize".into())
            .spawn(move || worker(stream, tokenizer, tx))
            .map_err(|_| LoaderError::WorkerGone)?;
        Ok(Self {
            opts,
            rx,
            buffer,
            pos,
        })
    }

    fn refill(&mut self) -> Result<(), LoaderError> {
        let (refs, tokens, pos) = self.rx.recv().map_err(|_| LoaderError::WorkerGone)??;
        self.buffer.extend(refs.into_iter().zip(tokens));
        self.pos = pos;
        Ok(())
    }

    /// The next batch.
    pub fn next_batch(&mut self) -> Result<Batch, LoaderError> {
        let cap = self.opts.seq_len + 1;
        let mut rows = Vec::with_capacity(self.opts.batch_size * cap);
        for _ in 0..self.opts.batch_size {
            let mut pos = 0;
            while pos < cap {
                while self.buffer.len() < self.opts.buffer_size.max(1) {
                    self.refill()?;
                }
                let remaining = cap - pos;
                // Largest document that fits entirely (first one on ties).
                let mut best: Option<(usize, usize)> = None;
                for (i, (_, doc)) in self.buffer.iter().enumerate() {
                    let len = doc.len();
                    if len <= remaining && best.is_none_or(|(_, b)| len > b) {
                        best = Some((i, len));
                    }
                }
                match best {
                    Some((i, len)) => {
                        let (_, doc) = self.buffer.remove(i);
                        rows.extend_from_slice(&doc);
                        pos += len;
                    }
                    None => {
                        // Nothing fits: crop the shortest (first one on ties).
                        let i = (0..self.buffer.len())
                            .min_by_key(|&i| self.buffer[i].1.len())
                            .expect("buffer is non-empty");
                        let (_, doc) = self.buffer.remove(i);
                        rows.extend_from_slice(&doc[..remaining]);
                        pos += remaining;
                    }
                }
            }
        }
        Ok(Batch {
            rows,
            batch_size: self.opts.batch_size,
            seq_len: self.opts.seq_len,
            state: self.state(),
        })
    }

    /// The state to resume from to get the next batch.
    pub fn state(&self) -> LoaderState {
        LoaderState {
            pos: self.pos,
            buffer: self.buffer.iter().map(|(r, _)| *r).collect(),
        }
    }
}

impl Iterator for BestFitLoader {
    type Item = Result<Batch, LoaderError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.next_batch())
    }
}
