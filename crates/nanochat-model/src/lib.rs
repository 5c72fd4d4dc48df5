//! # nanochat-model
//!
//! nanochat's GPT (upstream `nanochat/gpt.py`) on burn 0.21, generic over `B: Backend`, so that
//! one model code runs on the CPU (burn-flex), WGPU and CUDA.
//!
//! - [`gpt`]: the model and its forward pass, counts; [`loss`]: its losses;
//! - [`init`]: upstream's weight initialisation;
//! - [`kv_cache`]: the cache for incremental decoding;
//! - [`ops`]: the fused operations (loss, norms, attention) with CPU kernels;
//! - [`flash_attention`], [`rotary`]: attention with sliding windows, rotary embeddings;
//! - [`backend`]: choosing a backend and device at run time;
//! - [`kernel_cache`]: where the GPU backends keep autotune results and compiled kernels;
//! - [`alloc`]: a caching global allocator for CPU tensors (what the `nanochat` binary uses);
//! - [`distributed`]: data-parallel ranks on burn's collective engine;
//! - [`fixture`]: the PyTorch reference fixtures and the forward parity check;
//! - [`microbench`]: timings of matmuls and attention (the GPU profile).

#![warn(missing_docs)]

pub mod alloc;
pub mod backend;
pub mod checkpoint;
pub mod distributed;
pub mod fixture;
pub mod flash_attention;
pub mod gpt;
pub mod hf_export;
pub mod hf_import;
pub mod init;
pub mod kernel_cache;
pub mod kv_cache;
pub mod loss;
pub mod microbench;
pub mod op_parity;
pub mod ops;
pub mod rotary;
pub mod weights;

pub use backend::{BackendError, BackendTask, compiled_backends, dispatch};
/// The burn version this crate is built on, for code that names backend types.
pub use burn;
pub use gpt::{ComputeDtype, Gpt};
pub use kv_cache::KvCache;
pub use loss::{Reduction, cross_entropy};
pub use ops::{FusedOps, TrainBackend};

/// The CPU backend used by this crate's tests.
#[cfg(all(test, feature = "flex"))]
pub(crate) type TestBackend = burn::backend::Flex;
/// The CPU backend used by this crate's tests.
#[cfg(all(test, feature = "ndarray", not(feature = "flex")))]
pub(crate) type TestBackend = burn::backend::NdArray;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
