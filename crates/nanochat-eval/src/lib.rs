//! # nanochat-eval
//!
//! nanochat's evaluation: bits per byte (upstream `nanochat/loss_eval.py`), the CORE metric
//! (`core_eval.py`), chat evaluations with a sandbox for generated code (`chat_eval.py`,
//! `execution.py`), ChatCORE, and the report card (v0 `report.py`).
//!
//! **Status: skeleton.** The result entity, [`nanochat_core::EvaluationResult`], exists; the
//! evaluations are being ported here next.

#![warn(missing_docs)]
