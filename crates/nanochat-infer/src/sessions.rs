//! Server-side conversations (`/v1/sessions`; no upstream counterpart: upstream v0
//! `scripts/chat_web.py` is stateless): the server keeps the history, so a client sends only
//! its new message. Each [`ConversationSession`] has an id, timestamps, the token count
//! of every message (its content alone; the template's delimiters are counted on top), a
//! context budget and the [`GenerationParams`] its messages default to; when the rendered
//! history plus the reply's `max_tokens` would exceed the budget, the oldest turns are dropped
//! (and reported). The store is bounded in number (the least recently used session is evicted)
//! and in idle age.
//!
//! - `POST /v1/sessions` `{"context_window"?, "generation"?: {GenerationParams}}` → 201
//!   `{"id", "generation", "state", …}`
//! - `GET /v1/sessions/{id}` → the session with `tokens_used`, `remaining_context`, `state` and
//!   its `lifecycle` (every state entered, with when)
//! - `POST /v1/sessions/{id}/messages` `{"content", "temperature"?, "top_k"?, "top_p"?,
//!   "min_p"?, "repetition_penalty"?, "presence_penalty"?, "frequency_penalty"?,
//!   "max_tokens"?, "seed"?, "stop"?}` (each overriding the
//!   session's default for this message) → the assistant's reply, `usage`, `trimmed` (messages
//!   dropped) and `kept` (false when the reply was empty: the turn is not stored, so user and
//!   assistant keep alternating)
//! - `DELETE /v1/sessions/{id}` → 204
//!
//! A session answers one message at a time (a second concurrent one gets 409); its state
//! follows the inference lifecycle (Created → ModelLoaded → Ready at creation, then per
//! message Ready → Processing → Streaming → Complete | Error), moved by the session's own
//! methods through the busy guard of `session_store`. Requests are parsed and checked like the
//! chat endpoints' ([`crate::api`]) and answered through the same jobs (`jobs`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use nanochat_core::conversation::{Conversation, Message, MessageRole};
use nanochat_core::{ConversationSession, GenerationParams};
use serde::Deserialize;
use serde_json::json;

use crate::api::{ApiError, Stop, check_sampling, finish_str, limits, parse};
use crate::jobs::{AppState, collect, start_job};
use crate::session_store::{Begun, not_found};
pub use crate::session_store::{MAX_IDLE_SECS, MAX_SESSIONS, Sessions};
use crate::tool_text::ToolText;

/// A message's `token_count`: the tokenization of its content.
fn content_tokens(state: &AppState, m: &Message) -> usize {
    state.tokenizer.encode(&m.content.to_plain_text()).len()
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    context_window: Option<usize>,
    generation: Option<GenerationParams>,
}

/// Checks sampling parameters against the server's limits and the data model's rules; the
/// error names the field under `prefix` (`generation.top_p`, or `top_p` in a message).
fn check_params(state: &AppState, p: &GenerationParams, prefix: &str) -> Result<(), ApiError> {
    check_sampling(p.temperature, p.top_k.unwrap_or(0), p.max_tokens).map_err(|mut e| {
        e.param = e.param.map(|f| format!("{prefix}{f}"));
        e
    })?;
    // The context is checked per message (the reply is clamped to the room left).
    p.validate_for(state.tokenizer.vocab_size(), usize::MAX)
        .map_err(|e| ApiError::bad(&format!("{prefix}{}", e.field), e.to_string()))?;
    if let Some(format) = &p.response_format {
        let field = format!("{prefix}response_format");
        state
            .grammars
            .compile(format)
            .map_err(|e| ApiError::bad(&field, e.to_string()))?;
    }
    Ok(())
}

async fn create(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let req: CreateRequest = if body.is_empty() {
        CreateRequest::default()
    } else {
        parse(&body)?
    };
    let window = req.context_window.unwrap_or(state.sequence_len);
    let generation = req.generation.unwrap_or_default();
    check_params(&state, &generation, "generation.")?;
    if state.pool.get().is_none() {
        let message = "the model is not loaded (yet): see /health";
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            message,
            None,
        ));
    }
    let id = format!("sess-{:016x}", rand_id(&state));
    let now = Utc::now();
    let mut session = ConversationSession::with_generation(
        id.clone(),
        window,
        state.sequence_len,
        generation,
        now,
    )
    .map_err(|e| ApiError::bad(&e.field, e.to_string()))?;
    session.attach_model(now).map_err(ApiError::internal)?;
    let body = json!({"id": id, "object": "session", "created_at": now, "context_window": window,
                      "max_sequence_len": state.sequence_len, "generation": session.generation,
                      "state": session.state()});
    let mut g = state.sessions.lock();
    g.evict_idle(now);
    g.insert(session)
        .map_err(|e| ApiError::bad("id", e.to_string()))?;
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

fn rand_id(state: &AppState) -> u64 {
    let n = state.next_id();
    let t = Utc::now().timestamp_nanos_opt().unwrap_or(0) as u64;
    // Not a secret, only unique: a counter mixed with the time.
    (t ^ n.rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

async fn show(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let mut g = state.sessions.lock();
    g.evict_idle(Utc::now());
    let s = g.get(&id).ok_or_else(|| not_found(&id))?;
    let mut v = serde_json::to_value(s).map_err(ApiError::internal)?;
    v["tokens_used"] = s.tokens_used().into();
    v["remaining_context"] = s.remaining_context().into();
    v["state"] = serde_json::to_value(s.state()).map_err(ApiError::internal)?;
    Ok(Json(v).into_response())
}

async fn delete(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let mut g = state.sessions.lock();
    g.remove(&id).ok_or_else(|| not_found(&id))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageRequest {
    content: String,
    temperature: Option<f64>,
    top_k: Option<usize>,
    top_p: Option<f64>,
    min_p: Option<f64>,
    repetition_penalty: Option<f64>,
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    max_tokens: Option<usize>,
    seed: Option<u64>,
    stop: Option<Stop>,
}

impl MessageRequest {
    /// The session's defaults with this message's overrides.
    fn params(&self, defaults: &GenerationParams) -> GenerationParams {
        let d = defaults.clone();
        GenerationParams {
            temperature: self.temperature.unwrap_or(d.temperature),
            top_k: self.top_k.map_or(d.top_k, |k| (k > 0).then_some(k)),
            top_p: self.top_p.unwrap_or(d.top_p),
            min_p: self.min_p.unwrap_or(d.min_p),
            repetition_penalty: self.repetition_penalty.unwrap_or(d.repetition_penalty),
            presence_penalty: self.presence_penalty.unwrap_or(d.presence_penalty),
            frequency_penalty: self.frequency_penalty.unwrap_or(d.frequency_penalty),
            max_tokens: self.max_tokens.unwrap_or(d.max_tokens),
            seed: self.seed.or(d.seed),
            stop: self.stop.as_ref().map_or(d.stop, Stop::to_vec),
            ..d
        }
    }
}

async fn send(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: MessageRequest = parse(&body)?;
    // Refused before any generation: the session keeps no blank message.
    if req.content.trim().is_empty() {
        return Err(ApiError::bad("content", "a message may not be blank"));
    }
    let (chars, max) = (req.content.chars().count(), limits::MAX_MESSAGE_CHARS);
    if chars > max {
        return Err(ApiError::bad(
            "content",
            format!("message too long: {chars} > {max} characters"),
        ));
    }
    let now = Utc::now();
    let mut user = Message::new(MessageRole::User, req.content.clone()).at(now);
    user.token_count = Some(content_tokens(&state, &user));
    // Mark the session busy (Processing) until `busy` drops; take its history and defaults.
    let Begun {
        history,
        window,
        generation,
        mut busy,
    } = state.sessions.begin(&id, now)?;
    let mut params = req.params(&generation);
    check_params(&state, &params, "")?;
    // Drop the oldest turns until prompt + reply fit the window.
    let mut messages = history;
    messages.push(user.clone());
    let mut trimmed = 0;
    let prompt = loop {
        let mut conv = messages.clone();
        conv.push(Message::new(MessageRole::Assistant, String::new()));
        let prompt = state
            .tokenizer
            .render_for_completion(&Conversation { messages: conv }, usize::MAX)
            .map_err(|e| ApiError::bad("content", e.to_string()))?;
        // Keep room for the reply: max_tokens, but at most half the window.
        if prompt.len() + params.max_tokens.min(window / 2) <= window || messages.len() < 3 {
            break prompt;
        }
        messages.drain(..2);
        trimmed += 2;
    };
    let room = window.min(state.sequence_len).saturating_sub(prompt.len());
    if room == 0 {
        return Err(ApiError::bad(
            "content",
            format!(
                "the message ({} tokens with its template) does not fit the session's context window ({window})",
                prompt.len()
            ),
        ));
    }
    params.max_tokens = params.max_tokens.min(room);
    let prompt_tokens = prompt.len();
    let turn = state
        .sessions
        .lock()
        .get(&id)
        .map_or(0, |s| s.messages.len() / 2);
    let mut rx = start_job(&state, format!("{id}/{turn}"), prompt, params)?;
    busy.streaming();
    let answer = collect(&mut rx).await?;
    let choice = answer
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::internal("the worker returned no answer"))?;
    let (finish, completion_tokens) = (choice.finish, answer.completion_tokens);
    // Calculator calls as readable text, in the reply and in the history.
    let text = ToolText::rewrite(&choice.text);
    let done = Utc::now();
    let mut reply = Message::new(MessageRole::Assistant, text.clone()).at(done);
    reply.token_count = Some(content_tokens(&state, &reply));
    // Declared after `busy`, so dropped (unlocked) before it on every return.
    let mut g = state.sessions.lock();
    let Some(s) = g.get_mut(&id) else {
        return Err(not_found(&id)); // deleted or evicted while answering
    };
    // A turn is kept whole: an empty reply (a message may not be blank) is returned but
    // leaves the history as it was, so user and assistant keep alternating.
    let kept = !text.trim().is_empty();
    if kept {
        s.messages.drain(..trimmed.min(s.messages.len()));
        s.push(user, now).map_err(ApiError::internal)?;
        s.push(reply, done).map_err(ApiError::internal)?;
    }
    let (used, remaining) = (s.tokens_used(), s.remaining_context());
    busy.complete();
    let body = json!({
        "id": id,
        "message": {"role": "assistant", "content": text},
        "finish_reason": finish_str(finish),
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
        "trimmed": if kept { trimmed } else { 0 },
        "kept": kept,
        "tokens_used": used,
        "remaining_context": remaining,
    });
    Ok(Json(body).into_response())
}

/// The session routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/sessions", post(create))
        .route("/v1/sessions/{id}", get(show).delete(delete))
        .route("/v1/sessions/{id}/messages", post(send))
}
