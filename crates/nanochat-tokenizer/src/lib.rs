//! # nanochat-tokenizer
//!
//! nanochat's tokenizer (upstream `nanochat/tokenizer.py`, `scripts/tok_train.py`,
//! `scripts/tok_eval.py`):
//!
//! - [`tok_train`]: byte-level BPE training that learns the same merges as upstream's rustbpe
//!   (see [`bpe_train`]), streamed from documents, with the nine special tokens last;
//! - [`Tokenizer`]: encoding and decoding through `tiktoken_rs::CoreBPE`, batch encoding on
//!   rayon, `token_bytes` for bits per byte, and its files (`tokenizer.tiktoken`,
//!   `tokenizer.json`, `token_bytes.json`, and `tokenizer_state.json`: its lifecycle, see
//!   [`state_file`]); [`pickle`] imports upstream's `tokenizer.pkl`;
//! - [`chat`]: rendering conversations into ids and training masks;
//! - [`stream`]: UTF-8-safe incremental decoding for streaming output;
//! - [`tok_eval`]: compression against GPT-2 and GPT-4;
//! - [`pretokenize`]: the exact fast splitter for upstream's regex.
//!
//! ```
//! use nanochat_tokenizer::{Tokenizer, tok_train::{train_tokenizer, TokTrainOptions}};
//!
//! let docs = ["the cat sat on the mat", "the dog sat on the log"].map(|d| Ok::<_, String>(d.to_string()));
//! let opts = TokTrainOptions { vocab_size: 256 + 9 + 10, ..Default::default() };
//! let (tok, report) = train_tokenizer(docs, &opts)?;
//! assert_eq!(report.merges, 10);
//! let ids = tok.encode_with("the cat", Some(tok.bos_token_id()), None);
//! assert_eq!(tok.decode(&ids[1..])?, "the cat");
//! # Ok::<(), nanochat_tokenizer::TokenizerError>(())
//! ```

#![warn(missing_docs)]

pub mod bpe_train;
pub mod chat;
pub mod error;
pub mod pickle;
pub mod pretokenize;
pub mod state_file;
pub mod stream;
pub mod tok_eval;
pub mod tok_train;
pub mod tokenizer;

pub use error::TokenizerError;
pub use nanochat_core::tokenizer_config::{SPECIAL_TOKENS, SPLIT_PATTERN};
pub use stream::StreamDecoder;
pub use tokenizer::Tokenizer;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
