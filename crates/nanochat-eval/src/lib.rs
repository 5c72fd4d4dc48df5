//! # nanochat-eval
//!
//! nanochat's evaluation: bits per byte (upstream `nanochat/loss_eval.py`, in
//! `nanochat_train::loss_eval` because training reports it), the CORE metric
//! ([`core_eval`] per example, [`base_eval`] over the bundle), chat evaluations with a sandbox
//! for generated code (`chat_eval.py`, `execution.py`), ChatCORE, and the report card (v0
//! `report.py`).
//!
//! Modules: CORE ([`base_eval::evaluate_core`]) with CPython-identical sampling
//! ([`py_random`]); [`tasks`] (ARC, MMLU, GSM8K, HumanEval, spelling, conversations, mixtures);
//! [`execution`] (the sandbox); [`chat_eval`] (categorical and generative scoring, ChatCORE);
//! [`report`] and [`plot`] (the report card and its PNG curves).

#![warn(missing_docs)]

pub mod base_eval;
pub mod chat_eval;
pub mod core_eval;
pub mod execution;
pub mod plot;
pub mod py_random;
pub mod report;
pub mod tasks;

pub use base_eval::{Bundle, CoreResult, evaluate_core, evaluate_core_ranked};
pub use chat_eval::{ChatEvalOptions, TaskOutcome, run_chat_eval};
pub use execution::{ExecutionResult, Sandbox, SandboxLimits};
pub use report::Report;
pub use tasks::{Task, TaskMixture, TaskSpec};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
