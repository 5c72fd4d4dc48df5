//! # nanochat-train
//!
//! nanochat's training stages: the combined MuonAdamW optimizer (upstream `optim.py`) and the
//! loops of `base_train.py`, midtraining (v0 `mid_train.py`), `chat_sft.py` and `chat_rl.py`.
//! Their data (shards, loaders, tasks) comes from `nanochat_data`, bits per byte from
//! `nanochat_eval::loss_eval`.
//!
//! Ported so far: [`optim::MuonAdamW`] ([`muon`], [`adamw`]), [`base_train()`](base_train::base_train) with
//! [`schedule::RunPlan`], midtraining and SFT ([`chat_train`](mod@chat_train)),
//! RL ([`chat_rl`](mod@chat_rl), [`pass_at_k`]); data parallelism on every stage ([`data_parallel`], over
//! `nanochat_model::distributed`); training throughput on random tokens ([`bench_train`]);
//! the GPU kernel caches filled for a run's shapes ahead of it ([`warmup`](mod@warmup)).

#![warn(missing_docs)]

pub mod adamw;
pub mod base_train;
pub mod bench_train;
pub mod chat_args;
pub mod chat_rl;
pub mod chat_train;
pub mod data_parallel;
pub mod error;
pub mod muon;
pub mod optim;
pub mod pass_at_k;
pub mod peak_flops;
pub mod run;
pub mod schedule;
pub mod stage_meta;
pub mod warmup;

pub use base_train::{BaseTrainArgs, TrainSummary, base_train};
pub use chat_rl::{ChatRlArgs, chat_rl};
pub use chat_train::{ChatStage, ChatTrainArgs, chat_train};
pub use error::TrainError;
pub use optim::{GroupLrs, MuonAdamW, OptimError, StepScalars};
pub use schedule::RunPlan;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
