//! Server-side conversations (`/v1/sessions`; no upstream counterpart: upstream v0
//! `scripts/chat_web.py` is stateless): the server keeps the history, so a client sends only
//! its new message. Each [`ConversationSession`] has an id, timestamps, the token count
//! of every message and a context budget; when the rendered history plus the reply's
//! `max_tokens` would exceed the budget, the oldest turns are dropped (and reported). The
//! store is bounded in number (the least recently used session is evicted) and in idle age.
//!
//! - `POST /v1/sessions` `{"context_window"?}` → 201 `{"id", …}`
//! - `GET /v1/sessions/{id}` → the session with `tokens_used`, `remaining_context`, `state`
//! - `POST /v1/sessions/{id}/messages` `{"content", "temperature"?, "top_k"?, "max_tokens"?,
//!   "seed"?}` → the assistant's reply, `usage` and `trimmed` (messages dropped)
//! - `DELETE /v1/sessions/{id}` → 204
//!
//! A session answers one message at a time (a second concurrent one gets 409); its state
//! follows the inference lifecycle (`ready` → `processing` → `streaming` → `complete`), held
//! by the busy guard of `session_store`. Requests are parsed and checked like the chat
//! endpoints' ([`crate::api`]) and answered through the same jobs (`jobs`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use nanochat_core::conversation::{Conversation, Message, MessageRole};
use nanochat_core::lifecycle::InferenceState;
use nanochat_core::{ConversationSession, GenerationParams};
use serde::Deserialize;
use serde_json::json;

use crate::api::{ApiError, check_sampling, finish_str, limits, parse};
use crate::jobs::{AppState, collect, start_job};
use crate::session_store::not_found;
pub use crate::session_store::{MAX_IDLE_SECS, MAX_SESSIONS, Sessions};

/// Tokens a message takes in the chat template (its text and its two delimiters).
fn message_tokens(state: &AppState, m: &Message) -> usize {
    state.tokenizer.encode(&m.content.to_plain_text()).len() + 2
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    context_window: Option<usize>,
}

async fn create(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let req: CreateRequest = if body.is_empty() {
        CreateRequest::default()
    } else {
        parse(&body)?
    };
    let window = req.context_window.unwrap_or(state.sequence_len);
    let id = format!("sess-{:016x}", rand_id(&state));
    let now = Utc::now();
    let session = ConversationSession::new(id.clone(), window, state.sequence_len, now)
        .map_err(|e| ApiError::bad("context_window", e.to_string()))?;
    let mut g = state.sessions.lock();
    g.store.evict_idle(now);
    let evicted = g
        .store
        .insert(session)
        .map_err(|e| ApiError::bad("id", e.to_string()))?;
    if let Some(evicted) = evicted {
        g.states.remove(&evicted);
    }
    g.states.insert(id.clone(), InferenceState::Ready);
    let body = json!({"id": id, "object": "session", "created_at": now, "context_window": window,
                      "max_sequence_len": state.sequence_len});
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
    g.store.evict_idle(Utc::now());
    let s = g.store.get(&id).ok_or_else(|| not_found(&id))?;
    let st = g.states.get(&id).copied().unwrap_or(InferenceState::Ready);
    let mut v = serde_json::to_value(s).map_err(ApiError::internal)?;
    v["tokens_used"] = s.tokens_used().into();
    v["remaining_context"] = s.remaining_context().into();
    v["state"] = serde_json::to_value(st).map_err(ApiError::internal)?;
    Ok(Json(v).into_response())
}

async fn delete(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let mut g = state.sessions.lock();
    g.store.remove(&id).ok_or_else(|| not_found(&id))?;
    g.states.remove(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageRequest {
    content: String,
    temperature: Option<f64>,
    top_k: Option<usize>,
    max_tokens: Option<usize>,
    seed: Option<u64>,
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
    let temperature = req.temperature.unwrap_or(0.8);
    let top_k = req.top_k.unwrap_or(50);
    let max_tokens = req.max_tokens.unwrap_or(512);
    check_sampling(temperature, top_k, max_tokens)?;
    let now = Utc::now();
    let mut user = Message::new(MessageRole::User, req.content.clone()).at(now);
    user.token_count = Some(message_tokens(&state, &user));
    // Take the history and mark the session busy until `busy` drops.
    let (history, window, mut busy) = state.sessions.begin(&id, now)?;
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
        if prompt.len() + max_tokens.min(window / 2) <= window || messages.len() < 3 {
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
    let params = GenerationParams {
        temperature,
        top_k: (top_k > 0).then_some(top_k),
        max_tokens: max_tokens.min(room),
        seed: req.seed,
        ..GenerationParams::default()
    };
    let prompt_tokens = prompt.len();
    let mut rx = start_job(&state, prompt, params)?;
    busy.streaming();
    let answer = collect(&mut rx).await?;
    let (text, finish, completion_tokens) = (answer.text, answer.finish, answer.completion_tokens);
    let done = Utc::now();
    let mut reply = Message::new(MessageRole::Assistant, text.clone()).at(done);
    reply.token_count = Some(completion_tokens + 2);
    // Declared after `busy`, so dropped (unlocked) before it on every return.
    let mut g = state.sessions.lock();
    let Some(s) = g.store.get_mut(&id) else {
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
