//! Training a tokenizer from a stream of documents (upstream `scripts/tok_train.py`): each
//! document is cut to its first `doc_cap` characters, documents are taken until more than
//! `max_chars` characters have been seen (the document that crosses the limit is included, as
//! upstream's iterator does), then BPE learns `vocab_size − 9 − 256` merges and the nine special
//! tokens take the last ids.
//!
//! Documents are consumed in batches, so the corpus is never held in memory: only the counts of
//! its unique chunks are.
//!
//! Training drives the tokenizer's lifecycle: Untrained once the options pass, Training while
//! chunks are counted and merges learned, Trained when the vocabulary is built; the returned
//! tokenizer carries that history and [`Tokenizer::save`] records it.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use nanochat_core::Vocabulary;
use nanochat_core::lifecycle::{Lifecycle, TokenizerState};
use nanochat_core::tokenizer_config::{SPECIAL_TOKENS, SPLIT_PATTERN};
use serde::{Deserialize, Serialize};

use crate::bpe_train::{ChunkCounts, learn_merges};
use crate::error::TokenizerError;
use crate::pretokenize::Splitter;
use crate::tokenizer::Tokenizer;

/// Tokenizer training options (upstream's flags).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokTrainOptions {
    /// Characters to train on.
    pub max_chars: u64,
    /// Characters kept per document.
    pub doc_cap: usize,
    /// Total vocabulary size, special tokens included.
    pub vocab_size: usize,
    /// Split pattern.
    pub pattern: String,
    /// Show progress bars.
    pub progress: bool,
}

impl Default for TokTrainOptions {
    fn default() -> Self {
        Self {
            max_chars: 2_000_000_000,
            doc_cap: 10_000,
            vocab_size: 32768,
            pattern: SPLIT_PATTERN.to_string(),
            progress: false,
        }
    }
}

/// What a training run did, for logs and the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokTrainReport {
    /// Documents used.
    pub documents: u64,
    /// Characters used (after the per-document cap).
    pub chars: u64,
    /// Unique chunks after splitting.
    pub unique_chunks: usize,
    /// Merges learned.
    pub merges: usize,
    /// Seconds reading and counting.
    pub count_seconds: f64,
    /// Seconds merging.
    pub merge_seconds: f64,
    /// Total seconds.
    pub train_seconds: f64,
}

/// Keeps the first `cap` characters (not bytes) of `s`.
pub fn cap_chars(s: &str, cap: usize) -> &str {
    match s.char_indices().nth(cap) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

const BATCH_CHARS: u64 = 16 << 20;
const BATCH_DOCS: usize = 8192;

fn bar(show: bool, len: u64, msg: &'static str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:>10} [{bar:40}] {human_pos}/{human_len} ({per_sec}, eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.set_message(msg);
    pb
}

/// Trains a tokenizer on `docs` (each item a document or a read error).
pub fn train_tokenizer<E: std::fmt::Display>(
    docs: impl IntoIterator<Item = Result<String, E>>,
    opts: &TokTrainOptions,
) -> Result<(Tokenizer, TokTrainReport), TokenizerError> {
    let base = 256 + SPECIAL_TOKENS.len();
    if opts.vocab_size < base {
        return Err(TokenizerError::Train(format!(
            "vocab_size {} is below {base} (256 bytes + {} special tokens)",
            opts.vocab_size,
            SPECIAL_TOKENS.len()
        )));
    }
    if opts.doc_cap == 0 || opts.max_chars == 0 {
        return Err(TokenizerError::Train(
            "doc_cap and max_chars must be > 0".into(),
        ));
    }
    let splitter = Splitter::new(&opts.pattern)?;
    let mut lifecycle = Lifecycle::<TokenizerState>::start();
    lifecycle.advance_now(TokenizerState::Training)?;
    let t0 = Instant::now();
    let pb = bar(opts.progress, opts.max_chars, "chars");
    let mut counts = ChunkCounts::new();
    let (mut nchars, mut ndocs) = (0u64, 0u64);
    let mut batch: Vec<String> = Vec::with_capacity(BATCH_DOCS);
    let mut batch_chars = 0u64;
    for doc in docs {
        let doc = doc.map_err(|e| TokenizerError::Data(e.to_string()))?;
        let capped = cap_chars(&doc, opts.doc_cap);
        let n = capped.chars().count() as u64;
        nchars += n;
        ndocs += 1;
        batch_chars += n;
        batch.push(if capped.len() == doc.len() {
            doc
        } else {
            capped.to_string()
        });
        let done = nchars > opts.max_chars;
        if done || batch.len() >= BATCH_DOCS || batch_chars >= BATCH_CHARS {
            counts.add_docs(&batch, &splitter)?;
            pb.inc(batch_chars);
            batch.clear();
            batch_chars = 0;
        }
        if done {
            break;
        }
    }
    if !batch.is_empty() {
        counts.add_docs(&batch, &splitter)?;
        pb.inc(batch_chars);
    }
    pb.finish_and_clear();
    if ndocs == 0 {
        return Err(TokenizerError::Train("no documents to train on".into()));
    }
    let count_seconds = t0.elapsed().as_secs_f64();
    let unique_chunks = counts.len();
    tracing::info!(
        documents = ndocs,
        chars = nchars,
        unique_chunks,
        "counted chunks in {count_seconds:.2}s"
    );

    let t1 = Instant::now();
    let num_merges = opts.vocab_size - base;
    let pb = bar(opts.progress, num_merges as u64, "merges");
    let merges = learn_merges(counts, num_merges, |done| {
        if done % 256 == 0 {
            pb.set_position(done as u64);
        }
    });
    pb.finish_and_clear();
    let merge_seconds = t1.elapsed().as_secs_f64();
    if merges.len() < num_merges {
        tracing::warn!(
            "only {} merges possible on this text (asked for {num_merges})",
            merges.len()
        );
    }
    let vocab =
        Vocabulary::from_merges(&merges).map_err(|e| TokenizerError::invalid("<trained>", e))?;
    let tokenizer = Tokenizer::from_vocab(vocab, &opts.pattern)?;
    lifecycle.advance_now(TokenizerState::Trained)?;
    let tokenizer = tokenizer.with_training(lifecycle);
    let report = TokTrainReport {
        documents: ndocs,
        chars: nchars,
        unique_chunks,
        merges: merges.len(),
        count_seconds,
        merge_seconds,
        train_seconds: t0.elapsed().as_secs_f64(),
    };
    Ok((tokenizer, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_by_characters_not_bytes() {
        assert_eq!(cap_chars("héllo", 2), "hé");
        assert_eq!(cap_chars("hi", 10), "hi");
        assert_eq!(cap_chars("", 3), "");
    }

    #[test]
    fn rejects_tiny_vocab() {
        let docs = vec![Ok::<_, String>("hello".to_string())];
        let opts = TokTrainOptions {
            vocab_size: 200,
            ..Default::default()
        };
        assert!(matches!(
            train_tokenizer(docs, &opts),
            Err(TokenizerError::Train(_))
        ));
    }
}
