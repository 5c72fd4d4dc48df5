//! The HTTP server (upstream v0 `scripts/chat_web.py`, plus the OpenAI-compatible API users
//! expect): axum on tokio, a pool of model workers (one thread per engine) fed by a queue.
//!
//! - `GET /` the chat page ([`UI_HTML`]); `GET /health` (503 until a model is loaded);
//!   `GET /stats`; `GET /metrics` (Prometheus text);
//! - `POST /chat/completions`: upstream's SSE stream `data: {"token": …, "gpu": n}` … `{"done": true}`;
//! - `POST /v1/chat/completions` (OpenAI shape, `stream` true → `chat.completion.chunk` SSE
//!   frames and `data: [DONE]`, false → one JSON with `usage`); `GET /v1/models`;
//! - `/v1/sessions`: server-side conversations ([`crate::sessions`]).
//!
//! Requests are checked against upstream's limits (≤ 500 messages, ≤ 8000 characters per
//! message, ≤ 32000 in all, temperature 0–2, top_k 0–200, max_tokens 1–4096); a violation is a
//! 400 whose JSON names the field. Bodies over 1 MiB get 413. The worker stops generating when
//! the client disconnects.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use nanochat_core::GenerationParams;
use nanochat_core::conversation::{Conversation, Message, MessageRole};
use nanochat_tokenizer::Tokenizer;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::engine::FinishReason;
pub(crate) use crate::workers::{GenEvent, Job};
pub use crate::workers::{Stats, WorkerPool};

/// The bundled chat page.
pub const UI_HTML: &str = include_str!("ui.html");

/// Upstream's request limits.
pub mod limits {
    /// Messages per request.
    pub const MAX_MESSAGES: usize = 500;
    /// Characters per message.
    pub const MAX_MESSAGE_CHARS: usize = 8000;
    /// Characters over all messages.
    pub const MAX_TOTAL_CHARS: usize = 32000;
    /// Largest top_k.
    pub const MAX_TOP_K: usize = 200;
    /// Largest max_tokens.
    pub const MAX_TOKENS: usize = 4096;
    /// Largest request body (bytes).
    pub const MAX_BODY: usize = 1 << 20;
}

/// Shared server state.
pub struct AppState {
    /// The model's name in `/v1/models`.
    pub model_id: String,
    /// The tokenizer (rendering requests).
    pub tokenizer: Arc<Tokenizer>,
    /// Context length of the model.
    pub sequence_len: usize,
    /// Set once the model is loaded.
    pub pool: OnceLock<WorkerPool>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Set during shutdown.
    pub closing: AtomicBool,
    /// Server-side conversations (`/v1/sessions`).
    pub sessions: crate::sessions::Sessions,
    ids: AtomicU64,
}

impl AppState {
    /// State for a model called `model_id` (workers attached later with [`AppState::set_pool`]).
    pub fn new(model_id: String, tokenizer: Arc<Tokenizer>, sequence_len: usize) -> Arc<Self> {
        Arc::new(Self {
            model_id,
            tokenizer,
            sequence_len,
            pool: OnceLock::new(),
            stats: Arc::new(Stats::default()),
            closing: AtomicBool::new(false),
            sessions: crate::sessions::Sessions::default(),
            ids: AtomicU64::new(0),
        })
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Attaches the workers; `/health` turns ready.
    pub fn set_pool(&self, pool: WorkerPool) {
        let _ = self.pool.set(pool);
    }
}

/// A 4xx/5xx with an OpenAI-style JSON body naming the offending field.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    param: Option<&'static str>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: String, param: Option<&'static str>) -> Self {
        Self {
            status,
            message,
            param,
        }
    }

    pub(crate) fn bad(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            param: Some(param),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = if self.status.is_client_error() {
            "invalid_request_error"
        } else {
            "server_error"
        };
        let body = json!({"error": {"message": self.message, "type": kind, "param": self.param}});
        (self.status, Json(body)).into_response()
    }
}

#[derive(Debug, Deserialize)]
struct ApiMessage {
    role: String,
    content: Value,
}

#[derive(Debug, Deserialize)]
struct ChatRequest {
    messages: Vec<ApiMessage>,
    #[serde(default)]
    stream: Option<bool>,
    temperature: Option<f64>,
    top_k: Option<usize>,
    top_p: Option<f64>,
    min_p: Option<f64>,
    repetition_penalty: Option<f64>,
    max_tokens: Option<usize>,
    max_completion_tokens: Option<usize>,
    seed: Option<u64>,
    stop: Option<Value>,
    n: Option<usize>,
    stream_options: Option<Value>,
}

fn content_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        // OpenAI content parts: [{"type":"text","text":…}, …]
        Value::Array(parts) => parts
            .iter()
            .map(|p| p["text"].as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .map(|v| v.concat()),
        _ => None,
    }
}

/// Checks sampling knobs against upstream's limits; the error names the offending field.
pub(crate) fn check_sampling(
    temperature: f64,
    top_k: usize,
    max_tokens: usize,
) -> Result<(), ApiError> {
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::bad(
            "temperature",
            format!("temperature must be between 0 and 2, got {temperature}"),
        ));
    }
    if top_k > limits::MAX_TOP_K {
        return Err(ApiError::bad(
            "top_k",
            format!(
                "top_k must be between 0 and {}, got {top_k}",
                limits::MAX_TOP_K
            ),
        ));
    }
    if !(1..=limits::MAX_TOKENS).contains(&max_tokens) {
        return Err(ApiError::bad(
            "max_tokens",
            format!(
                "max_tokens must be between 1 and {}, got {max_tokens}",
                limits::MAX_TOKENS
            ),
        ));
    }
    Ok(())
}

/// Checks a request and renders its prompt; returns the prompt and the sampling parameters.
fn prepare(
    state: &AppState,
    body: &[u8],
    web_defaults: bool,
) -> Result<(ChatRequest, Vec<u32>, GenerationParams), ApiError> {
    let req: ChatRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad("body", format!("invalid JSON request: {e}")))?;
    if req.messages.is_empty() {
        return Err(ApiError::bad(
            "messages",
            "at least one message is required",
        ));
    }
    if req.messages.len() > limits::MAX_MESSAGES {
        return Err(ApiError::bad(
            "messages",
            format!(
                "too many messages: {} > {}",
                req.messages.len(),
                limits::MAX_MESSAGES
            ),
        ));
    }
    let mut total = 0;
    let mut messages = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        let role = match m.role.as_str() {
            "user" => MessageRole::User,
            "assistant" => MessageRole::Assistant,
            "system" => MessageRole::System,
            other => {
                return Err(ApiError::bad(
                    "messages",
                    format!("message {i}: role must be user, assistant or system, not {other:?}"),
                ));
            }
        };
        let text = content_text(&m.content).ok_or_else(|| {
            ApiError::bad(
                "messages",
                format!("message {i}: content must be a string or text parts"),
            )
        })?;
        let chars = text.chars().count();
        if chars > limits::MAX_MESSAGE_CHARS {
            return Err(ApiError::bad(
                "messages",
                format!(
                    "message {i} is too long: {chars} > {} characters",
                    limits::MAX_MESSAGE_CHARS
                ),
            ));
        }
        total += chars;
        messages.push(Message::new(role, text));
    }
    if total > limits::MAX_TOTAL_CHARS {
        return Err(ApiError::bad(
            "messages",
            format!(
                "conversation too long: {total} > {} characters",
                limits::MAX_TOTAL_CHARS
            ),
        ));
    }
    if messages.last().map(|m| m.role) != Some(MessageRole::User) {
        return Err(ApiError::bad(
            "messages",
            "the last message must be from the user",
        ));
    }
    let temperature = req
        .temperature
        .unwrap_or(if web_defaults { 0.8 } else { 1.0 });
    let top_k = req.top_k.unwrap_or(50);
    let max_tokens = req.max_completion_tokens.or(req.max_tokens).unwrap_or(512);
    check_sampling(temperature, top_k, max_tokens)?;
    let stop = match &req.stop {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::bad("stop", "stop must be a string or a list of strings"))?,
        Some(_) => {
            return Err(ApiError::bad(
                "stop",
                "stop must be a string or a list of strings",
            ));
        }
    };
    if req.n.unwrap_or(1) != 1 {
        return Err(ApiError::bad("n", "only n = 1 is supported"));
    }
    // Render like a conversation whose last (assistant) turn is being written.
    messages.push(Message::new(MessageRole::Assistant, String::new()));
    let prompt = state
        .tokenizer
        .render_for_completion(&Conversation { messages }, usize::MAX)
        .map_err(|e| ApiError::bad("messages", e.to_string()))?;
    let room = state.sequence_len.saturating_sub(prompt.len());
    if room == 0 {
        return Err(ApiError::bad(
            "messages",
            format!(
                "the conversation ({} tokens) fills the model's context ({})",
                prompt.len(),
                state.sequence_len
            ),
        ));
    }
    let params = GenerationParams {
        temperature,
        top_k: (top_k > 0).then_some(top_k),
        top_p: req.top_p.unwrap_or(1.0),
        min_p: req.min_p.unwrap_or(0.0),
        repetition_penalty: req.repetition_penalty.unwrap_or(1.0),
        max_tokens: max_tokens.min(room),
        seed: req.seed,
        stop,
        num_samples: 1,
        ..GenerationParams::default()
    };
    nanochat_core::Validate::validate(&params).map_err(|e| {
        let field = match e.field.as_str() {
            "top_p" => "top_p",
            "min_p" => "min_p",
            "repetition_penalty" => "repetition_penalty",
            _ => "body",
        };
        ApiError::bad(field, e.to_string())
    })?;
    Ok((req, prompt, params))
}

pub(crate) fn start_job(
    state: &AppState,
    prompt: Vec<u32>,
    params: GenerationParams,
) -> Result<mpsc::UnboundedReceiver<(usize, GenEvent)>, ApiError> {
    let pool = state.pool.get().ok_or(ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: "the model is still loading".into(),
        param: None,
    })?;
    if state.closing.load(Ordering::Relaxed) {
        return Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the server is shutting down".into(),
            param: None,
        });
    }
    state.stats.requests.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::unbounded_channel();
    if !pool.submit(
        Job {
            prompt,
            params,
            events: tx,
        },
        &state.stats,
    ) {
        return Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "no model worker is running".into(),
            param: None,
        });
    }
    Ok(rx)
}

pub(crate) fn finish_str(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

async fn upstream_chat(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (_, prompt, params) = prepare(&state, &body, true)?;
    let rx = start_job(&state, prompt, params)?;
    let stream = UnboundedReceiverStream::new(rx).map(|(gpu, ev)| {
        let data = match ev {
            GenEvent::Text(t) => json!({"token": t, "gpu": gpu}),
            GenEvent::Done { .. } => json!({"done": true}),
            GenEvent::Error(e) => json!({"error": e, "done": true}),
        };
        Ok::<_, Infallible>(Event::default().data(data.to_string()))
    });
    Ok(Sse::new(stream).into_response())
}

async fn openai_chat(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (req, prompt, params) = prepare(&state, &body, false)?;
    let mut rx = start_job(&state, prompt, params)?;
    let id = format!("chatcmpl-{}", state.ids.fetch_add(1, Ordering::Relaxed));
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let model = state.model_id.clone();
    if req.stream.unwrap_or(false) {
        let include_usage = req
            .stream_options
            .as_ref()
            .and_then(|o| o["include_usage"].as_bool())
            .unwrap_or(false);
        let chunk = move |delta: Value, finish: Option<&str>| {
            json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        let first = chunk(json!({"role": "assistant", "content": ""}), None);
        let (tx, out) = mpsc::unbounded_channel::<String>();
        let _ = tx.send(first.to_string());
        tokio::spawn(async move {
            while let Some((_, ev)) = rx.recv().await {
                match ev {
                    GenEvent::Text(t) => {
                        if tx
                            .send(chunk(json!({"content": t}), None).to_string())
                            .is_err()
                        {
                            return;
                        }
                    }
                    GenEvent::Done {
                        finish,
                        prompt_tokens,
                        completion_tokens,
                    } => {
                        let mut last = chunk(json!({}), Some(finish_str(finish)));
                        if include_usage {
                            last["usage"] = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens});
                        }
                        let _ = tx.send(last.to_string());
                        break;
                    }
                    GenEvent::Error(e) => {
                        let _ = tx.send(
                            json!({"error": {"message": e, "type": "server_error"}}).to_string(),
                        );
                        break;
                    }
                }
            }
            let _ = tx.send("[DONE]".to_string());
        });
        let stream = UnboundedReceiverStream::new(out)
            .map(|d| Ok::<_, Infallible>(Event::default().data(d)));
        return Ok(Sse::new(stream).into_response());
    }
    let done = collect(&mut rx).await?;
    let (p, c) = (done.prompt_tokens, done.completion_tokens);
    let body = json!({
        "id": id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": done.text}, "finish_reason": finish_str(done.finish)}],
        "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
    });
    Ok(Json(body).into_response())
}

/// A whole (non-streamed) answer.
pub(crate) struct Completed {
    pub(crate) text: String,
    pub(crate) finish: FinishReason,
    pub(crate) prompt_tokens: usize,
    pub(crate) completion_tokens: usize,
}

/// Gathers a job's text pieces until it finishes; a worker error or a vanished worker is a 500.
pub(crate) async fn collect(
    rx: &mut mpsc::UnboundedReceiver<(usize, GenEvent)>,
) -> Result<Completed, ApiError> {
    let mut text = String::new();
    while let Some((_, ev)) = rx.recv().await {
        match ev {
            GenEvent::Text(t) => text.push_str(&t),
            GenEvent::Done {
                finish,
                prompt_tokens,
                completion_tokens,
            } => {
                return Ok(Completed {
                    text,
                    finish,
                    prompt_tokens,
                    completion_tokens,
                });
            }
            GenEvent::Error(e) => {
                return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e, None));
            }
        }
    }
    Err(ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the worker stopped".into(),
        None,
    ))
}

async fn models(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(
        json!({"object": "list", "data": [{"id": state.model_id, "object": "model", "created": 0, "owned_by": "nanochat"}]}),
    )
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    match state.pool.get() {
        Some(p) => {
            Json(json!({"status": "ok", "ready": true, "num_workers": p.workers})).into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "loading", "ready": false})),
        )
            .into_response(),
    }
}

fn snapshot(s: &Stats) -> [(&'static str, &'static str, f64); 7] {
    let ttft_n = s.ttft_count.load(Ordering::Relaxed);
    let completion = s.completion_tokens.load(Ordering::Relaxed) as f64;
    let decode_s = s.decode_micros.load(Ordering::Relaxed) as f64 / 1e6;
    [
        (
            "nanochat_requests_total",
            "counter",
            s.requests.load(Ordering::Relaxed) as f64,
        ),
        (
            "nanochat_request_errors_total",
            "counter",
            s.errors.load(Ordering::Relaxed) as f64,
        ),
        (
            "nanochat_prompt_tokens_total",
            "counter",
            s.prompt_tokens.load(Ordering::Relaxed) as f64,
        ),
        ("nanochat_completion_tokens_total", "counter", completion),
        (
            "nanochat_queue_depth",
            "gauge",
            s.queue_depth.load(Ordering::Relaxed) as f64,
        ),
        (
            "nanochat_time_to_first_token_seconds_avg",
            "gauge",
            if ttft_n == 0 {
                0.0
            } else {
                s.ttft_micros.load(Ordering::Relaxed) as f64 / 1e6 / ttft_n as f64
            },
        ),
        (
            "nanochat_generation_tokens_per_second",
            "gauge",
            if decode_s > 0.0 {
                completion / decode_s
            } else {
                0.0
            },
        ),
    ]
}

async fn stats(State(state): State<Arc<AppState>>) -> Json<Value> {
    let mut v = json!({"model": state.model_id, "ready": state.pool.get().is_some(),
                       "num_workers": state.pool.get().map_or(0, |p| p.workers)});
    for (name, _, value) in snapshot(&state.stats) {
        v[name.trim_start_matches("nanochat_")] = json!(value);
    }
    Json(v)
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut out = String::new();
    for (name, kind, value) in snapshot(&state.stats) {
        out.push_str(&format!("# TYPE {name} {kind}\n{name} {value}\n"));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

async fn index() -> Html<&'static str> {
    Html(UI_HTML)
}

/// The routes over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/health", get(health))
        .route("/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/chat/completions", post(upstream_chat))
        .route("/v1/chat/completions", post(openai_chat))
        .merge(crate::sessions::routes())
        .layer(DefaultBodyLimit::max(limits::MAX_BODY))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then finishes the requests in flight.
pub async fn serve(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let closing = state.clone();
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            shutdown.await;
            closing.closing.store(true, Ordering::Relaxed);
        })
        .await
}
