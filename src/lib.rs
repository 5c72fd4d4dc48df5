#![doc = include_str!("../README.md")]
//!
//! ## This package
//!
//! The `nanochat` package re-exports the workspace's crates under short names
//! ([`core`], [`tokenizer`], [`data`], [`model`], [`train`], [`eval`], [`infer`]) and holds the runnable
//! examples. Pick a backend with Cargo features: `flex` (CPU, default), `ndarray`, `wgpu`,
//! `cuda`.

#![warn(missing_docs)]

pub use nanochat_core as core;
pub use nanochat_data as data;
pub use nanochat_eval as eval;
pub use nanochat_infer as infer;
pub use nanochat_model as model;
pub use nanochat_tokenizer as tokenizer;
pub use nanochat_train as train;
