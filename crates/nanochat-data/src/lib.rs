//! # nanochat-data
//!
//! nanochat's data, in one place for training and evaluation alike (upstream
//! `nanochat/dataset.py`, `nanochat/dataloader.py`, `tasks/*.py`):
//!
//! - [`dataset`]: the pretraining parquet shards (listing, train/val split, reading a row group
//!   at a time) and their [`download`](dataset::download);
//! - [`pretraining`]: the shards as a validated `TrainingDataset`, checked before training;
//! - [`dataloader`]: the BOS-aligned best-fit pretraining loader with exact resume;
//! - [`chat_loader`]: conversations of a [`TaskMixture`] packed into training rows;
//! - [`tasks`]: ARC, MMLU, GSM8K, HumanEval, spelling, conversation files, and mixtures of
//!   them ([`tasks::build_mixture`] for `--mixture` entries);
//! - [`execution`]: the sandbox HumanEval grades model-written Python in;
//! - [`py_random`]: CPython's `random.Random`, for upstream-identical shuffles.

#![warn(missing_docs)]

pub mod chat_loader;
pub mod dataloader;
pub mod dataset;
pub mod execution;
pub mod pretraining;
pub mod py_random;
pub mod tasks;

pub use execution::{ExecutionResult, Sandbox, SandboxLimits};
pub use tasks::{Task, TaskMixture, TaskSpec};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
