//! # nanochat-model
//!
//! nanochat's GPT (upstream `nanochat/gpt.py`) on burn 0.21, generic over `B: Backend`, so that
//! one model code runs on the CPU (burn-flex), WGPU and CUDA.
//!
//! Present today: [`backend`], which maps a user's `--device` choice to a compiled-in burn
//! backend and runs generic code on it. The model, KV cache and checkpoint I/O are ported next
//! (see the repository's issue tracker); this crate does not pretend to have them yet.

#![warn(missing_docs)]

pub mod backend;

pub use backend::{BackendError, BackendTask, compiled_backends, dispatch};
