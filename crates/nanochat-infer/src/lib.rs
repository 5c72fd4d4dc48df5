//! # nanochat-infer
//!
//! nanochat's inference: the engine with KV cache, sampling and the calculator tool (upstream
//! `nanochat/engine.py`), the chat CLI (`chat_cli.py`), and an HTTP server with the web UI
//! (v0 `chat_web.py`) and an OpenAI-compatible API.
//!
//! **Status: skeleton.** Sampling parameters, sessions and the inference lifecycle are in
//! [`nanochat_core`]; the engine and servers are being ported here next.

#![warn(missing_docs)]
