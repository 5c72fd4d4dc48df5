//! Server-side conversations (`/v1/sessions`): the server keeps the history, so a client sends
//! only its new message. Each [`ConversationSession`] has an id, timestamps, the token count
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
//! follows the inference lifecycle (`ready` → `processing` → `streaming` → `complete`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use nanochat_core::conversation::{Conversation, Message, MessageRole, SessionStore};
use nanochat_core::lifecycle::InferenceState;
use nanochat_core::{ConversationSession, GenerationParams};
use serde::Deserialize;
use serde_json::json;

use crate::server::{ApiError, AppState, check_sampling, collect, finish_str, limits, start_job};

/// Sessions kept at most.
pub const MAX_SESSIONS: usize = 256;
/// Idle sessions are dropped after this long.
pub const MAX_IDLE_SECS: i64 = 3600;

/// The store and each session's lifecycle state.
pub struct Sessions {
    store: Mutex<(SessionStore, HashMap<String, InferenceState>)>,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new(MAX_SESSIONS, chrono::Duration::seconds(MAX_IDLE_SECS))
    }
}

impl Sessions {
    /// A store bounded by `max_sessions` and `max_idle`.
    pub fn new(max_sessions: usize, max_idle: chrono::Duration) -> Self {
        Self {
            store: Mutex::new((SessionStore::new(max_sessions, max_idle), HashMap::new())),
        }
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.store.lock().expect("sessions lock").0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no session {id:?} (expired or deleted?)"),
        Some("id"),
    )
}

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
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad("body", format!("invalid JSON request: {e}")))?
    };
    let window = req.context_window.unwrap_or(state.sequence_len);
    let id = format!("sess-{:016x}", rand_id(&state));
    let now = Utc::now();
    let session = ConversationSession::new(id.clone(), window, state.sequence_len, now)
        .map_err(|e| ApiError::bad("context_window", e.to_string()))?;
    let mut g = state.sessions.store.lock().expect("sessions lock");
    g.0.evict_idle(now);
    if let Some(evicted) =
        g.0.insert(session)
            .map_err(|e| ApiError::bad("id", e.to_string()))?
    {
        g.1.remove(&evicted);
    }
    g.1.insert(id.clone(), InferenceState::Ready);
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
    let mut g = state.sessions.store.lock().expect("sessions lock");
    g.0.evict_idle(Utc::now());
    let s = g.0.get(&id).ok_or_else(|| not_found(&id))?;
    let st = g.1.get(&id).copied().unwrap_or(InferenceState::Ready);
    let mut v = serde_json::to_value(s).expect("session serialises");
    v["tokens_used"] = s.tokens_used().into();
    v["remaining_context"] = s.remaining_context().into();
    v["state"] = serde_json::to_value(st).expect("state serialises");
    Ok(Json(v).into_response())
}

async fn delete(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let mut g = state.sessions.store.lock().expect("sessions lock");
    g.0.remove(&id).ok_or_else(|| not_found(&id))?;
    g.1.remove(&id);
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

fn set_state(state: &AppState, id: &str, s: InferenceState) {
    if let Some(v) = state
        .sessions
        .store
        .lock()
        .expect("sessions lock")
        .1
        .get_mut(id)
    {
        *v = s;
    }
}

async fn send(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: MessageRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad("body", format!("invalid JSON request: {e}")))?;
    let chars = req.content.chars().count();
    if chars > limits::MAX_MESSAGE_CHARS {
        return Err(ApiError::bad(
            "content",
            format!(
                "message too long: {chars} > {} characters",
                limits::MAX_MESSAGE_CHARS
            ),
        ));
    }
    let temperature = req.temperature.unwrap_or(0.8);
    let top_k = req.top_k.unwrap_or(50);
    let max_tokens = req.max_tokens.unwrap_or(512);
    check_sampling(temperature, top_k, max_tokens)?;
    let now = Utc::now();
    let mut user = Message::new(MessageRole::User, req.content.clone()).at(now);
    user.token_count = Some(message_tokens(&state, &user));
    // Take the history and mark the session busy.
    let (history, window) = {
        let mut g = state.sessions.store.lock().expect("sessions lock");
        g.0.evict_idle(now);
        let s = g.0.get(&id).ok_or_else(|| not_found(&id))?;
        let (history, window) = (s.messages.clone(), s.context_window);
        let st = g.1.entry(id.clone()).or_insert(InferenceState::Ready);
        if matches!(st, InferenceState::Processing | InferenceState::Streaming) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "this session is answering another message".into(),
                Some("id"),
            ));
        }
        *st = InferenceState::Processing;
        (history, window)
    };
    // Drop the oldest turns until prompt + reply fit the window.
    let mut messages = history.clone();
    messages.push(user.clone());
    let mut trimmed = 0;
    let prompt = loop {
        let mut conv = messages.clone();
        conv.push(Message::new(MessageRole::Assistant, String::new()));
        let prompt = state
            .tokenizer
            .render_for_completion(&Conversation { messages: conv }, usize::MAX)
            .map_err(|e| ApiError::bad("content", e.to_string()));
        let prompt = match prompt {
            Ok(p) => p,
            Err(e) => {
                set_state(&state, &id, InferenceState::Ready);
                return Err(e);
            }
        };
        // Keep room for the reply: max_tokens, but at most half the window.
        if prompt.len() + max_tokens.min(window / 2) <= window || messages.len() < 3 {
            break prompt;
        }
        messages.drain(..2);
        trimmed += 2;
    };
    let room = window.min(state.sequence_len).saturating_sub(prompt.len());
    if room == 0 {
        set_state(&state, &id, InferenceState::Ready);
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
    let mut rx = match start_job(&state, prompt, params) {
        Ok(rx) => rx,
        Err(e) => {
            set_state(&state, &id, InferenceState::Ready);
            return Err(e);
        }
    };
    set_state(&state, &id, InferenceState::Streaming);
    let answer = match collect(&mut rx).await {
        Ok(a) => a,
        Err(e) => {
            set_state(&state, &id, InferenceState::Error);
            return Err(e);
        }
    };
    let (text, finish, completion_tokens) = (answer.text, answer.finish, answer.completion_tokens);
    let done = Utc::now();
    let mut reply = Message::new(MessageRole::Assistant, text.clone()).at(done);
    reply.token_count = Some(completion_tokens + 2);
    let mut g = state.sessions.store.lock().expect("sessions lock");
    let Some(s) = g.0.get_mut(&id) else {
        return Err(not_found(&id)); // deleted or evicted while answering
    };
    s.messages.drain(..trimmed.min(s.messages.len()));
    let pushed = s.push(user, now).and_then(|()| {
        if text.trim().is_empty() {
            Ok(()) // An empty reply is returned but not kept (a message may not be blank).
        } else {
            s.push(reply, done)
        }
    });
    if let Err(e) = pushed {
        g.1.insert(id.clone(), InferenceState::Error);
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string(),
            None,
        ));
    }
    let (used, remaining) = (s.tokens_used(), s.remaining_context());
    g.1.insert(id.clone(), InferenceState::Complete);
    let body = json!({
        "id": id,
        "message": {"role": "assistant", "content": text},
        "finish_reason": finish_str(finish),
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
        "trimmed": trimmed,
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
