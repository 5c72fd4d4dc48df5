//! # nanochat-infer
//!
//! nanochat's inference: the [`engine::Engine`] (upstream `nanochat/engine.py`: KV-cache
//! prefill and replicated decoding, the tool-use state machine, sampling), the safe
//! [`calculator`] tool, [`sampling`] (temperature, top-k, top-p, min-p, repetition penalty,
//! seeds), structured output ([`grammar`]: `response_format` through llguidance), a token-level [`chat::Chat`] used by `nanochat chat-cli`, and the HTTP
//! [`server`] (web chat page, upstream's streaming endpoint, OpenAI-compatible API, health,
//! stats and Prometheus metrics) used by `nanochat serve`, over the OpenAI-compatible request
//! types in [`api`], the job plumbing in `jobs`, the [`workers`], the [`sessions`] and the
//! lifecycle of the server and of every request ([`requests`]).
//! [`infer_bench`] measures prefill, time to first token and decode throughput per batch size.

#![warn(missing_docs)]

pub mod api;
mod auth;
mod batcher;
pub mod calculator;
pub mod chat;
mod completions;
pub mod engine;
pub mod grammar;
pub mod infer_bench;
mod jobs;
pub mod requests;
pub mod sampling;
pub mod sequence;
pub mod server;
mod session_store;
pub mod sessions;
pub mod tool_text;
pub mod workers;

pub use calculator::use_calculator;
pub use chat::Chat;
pub use engine::{Engine, EngineError, FinishReason, RowOutput, Step};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
