//! # nanochat-eval
//!
//! nanochat's evaluation: bits per byte (upstream `nanochat/loss_eval.py`, in
//! `nanochat_train::loss_eval` because training reports it), the CORE metric
//! ([`core_eval`] per example, [`base_eval`] over the bundle), chat evaluations with a sandbox
//! for generated code (`chat_eval.py`, `execution.py`), ChatCORE, and the report card (v0
//! `report.py`).
//!
//! Ported so far: CORE ([`base_eval::evaluate_core`]) with CPython-identical sampling
//! ([`py_random`]). Chat evaluations and the report are next.

#![warn(missing_docs)]

pub mod base_eval;
pub mod core_eval;
pub mod py_random;

pub use base_eval::{Bundle, CoreResult, evaluate_core};
