//! # nanochat-infer
//!
//! nanochat's inference: the [`engine::Engine`] (upstream `nanochat/engine.py`: KV-cache
//! prefill and replicated decoding, the tool-use state machine, sampling), the safe
//! [`calculator`] tool, [`sampling`] (temperature, top-k, top-p, min-p, repetition penalty,
//! seeds) and a token-level [`chat::Chat`] used by `nanochat chat-cli`.
//!
//! Not yet here: the HTTP server with the web UI and the OpenAI-compatible API, and the
//! inference benchmark.

#![warn(missing_docs)]

pub mod calculator;
pub mod chat;
pub mod engine;
pub mod sampling;

pub use calculator::use_calculator;
pub use chat::Chat;
pub use engine::{Engine, EngineError, FinishReason, RowOutput, Step};
