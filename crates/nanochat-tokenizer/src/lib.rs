//! # nanochat-tokenizer
//!
//! nanochat's tokenizer (upstream `nanochat/tokenizer.py`, `scripts/tok_train.py`,
//! `scripts/tok_eval.py`): byte-level BPE trained exactly like upstream's rustbpe, inference with
//! tiktoken-rs, conversation rendering with training masks, and an incremental UTF-8-safe
//! decoder for streaming.
//!
//! **Status: skeleton.** The tokenizer's data types and their rules (split pattern, special
//! tokens, vocabulary, merges) already live in [`nanochat_core::tokenizer_config`]; training,
//! encoding and rendering are being ported in this crate next.

#![warn(missing_docs)]

pub use nanochat_core::tokenizer_config::{SPECIAL_TOKENS, SPLIT_PATTERN};
