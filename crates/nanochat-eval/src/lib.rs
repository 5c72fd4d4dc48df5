//! # nanochat-eval
//!
//! nanochat's evaluation: bits per byte ([`loss_eval`], upstream `nanochat/loss_eval.py`; training
//! reports it too), the CORE metric ([`core_eval`] per example, [`base_eval`] over the bundle,
//! and `scripts/base_eval.py` as a whole), chat evaluations (`chat_eval.py`) and ChatCORE, and
//! the report card (v0 `report.py`). The tasks, their mixtures and the sandbox for generated
//! code are data, in `nanochat_data`.
//!
//! Modules: CORE ([`base_eval::evaluate_core`]); base-eval's results as `EvaluationResult`s
//! ([`base_results`]); [`chat_eval`] (categorical and generative
//! scoring, ChatCORE); [`report`] and [`plot`] (the report card and its PNG curves).

#![warn(missing_docs)]

pub mod base_eval;
pub mod base_results;
pub mod chat_eval;
pub mod core_eval;
pub mod loss_eval;
pub mod plot;
pub mod report;
pub mod report_results;

pub use base_eval::{
    BaseEvalOptions, BaseEvalReport, Bundle, CoreResult, Evaluated, evaluate_base, evaluate_core,
};
pub use chat_eval::{ChatEvalOptions, TaskOutcome, run_chat_eval};
pub use report::Report;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
