//! # nanochat
//!
//! nanochat (Karpathy's "best ChatGPT that $100 can buy") rebuilt in Rust: train a tokenizer,
//! pretrain, fine-tune, evaluate and chat with your own small LLM on a laptop CPU, any GPU
//! through WGPU, or NVIDIA through CUDA.
//!
//! This package re-exports the workspace's crates under short names and holds the runnable
//! examples. Pick a backend with Cargo features: `flex` (CPU, default), `ndarray`, `wgpu`,
//! `cuda`.

#![warn(missing_docs)]

pub use nanochat_core as core;
pub use nanochat_eval as eval;
pub use nanochat_infer as infer;
pub use nanochat_model as model;
pub use nanochat_tokenizer as tokenizer;
pub use nanochat_train as train;
