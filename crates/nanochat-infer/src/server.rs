//! The HTTP server (upstream v0 `scripts/chat_web.py`, plus the OpenAI-compatible API users
//! expect): axum on tokio, a pool of model workers (one thread per engine) fed by a queue.
//!
//! - `GET /` the chat page ([`UI_HTML`]); `GET /health` (503 until a model is loaded, with the
//!   server's lifecycle state and, if loading failed, why); `GET /stats` (counters, the server's
//!   state, and every request's lifecycle: in flight and the last few, by id — see
//!   [`crate::requests`]); `GET /metrics` (Prometheus text);
//! - `POST /chat/completions`: upstream's SSE stream `data: {"token": …, "gpu": n}` … `{"done": true}`;
//! - `POST /v1/chat/completions` (OpenAI shape, `stream` true → `chat.completion.chunk` SSE
//!   frames and `data: [DONE]`, false → one JSON with `usage`; calculator calls as readable
//!   text, [`ToolText`]); `POST /v1/completions` (a raw prompt, no chat template, as a base
//!   model is used; `completions.rs`); `GET /v1/models`;
//! - `/v1/sessions`: server-side conversations ([`crate::sessions`]).
//!
//! With an API key ([`AppState::require_api_key`], `serve --api-key`), every route but
//! `/health` and the page wants `Authorization: Bearer <key>` (401 otherwise; see `auth.rs`).
//!
//! Requests are checked against upstream's limits (≤ 500 messages, ≤ 8000 characters per
//! message, ≤ 32000 in all, temperature 0–2, top_k 0–200, max_tokens 1–4096); a violation is a
//! 400 whose JSON names the field. Bodies over 1 MiB get 413. The worker stops generating when
//! the client disconnects.
//!
//! Design: this file holds the routes and the response shapes only; the request types and
//! their checks are in [`crate::api`], the trip through the workers in `jobs`
//! ([`AppState`], `start_job`, `collect`), the workers in [`crate::workers`].

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;

pub use crate::api::{ApiError, limits};
use crate::api::{ChatRequest, chat_logprobs, finish_str, parse, unix_now, usage};
pub use crate::jobs::AppState;
use crate::jobs::{Frame, collect, openai_stream, start_job};
use crate::tool_text::ToolText;
use crate::workers::GenEvent;
pub use crate::workers::{DEFAULT_MAX_BATCH, Stats, WorkerPool};

/// The bundled chat page.
pub const UI_HTML: &str = include_str!("ui.html");

/// Parses and checks a chat request; returns it, its prompt and the sampling parameters.
fn prepare(
    state: &AppState,
    body: &[u8],
    web_defaults: bool,
) -> Result<(ChatRequest, Vec<u32>, nanochat_core::GenerationParams), ApiError> {
    let req: ChatRequest = parse(body)?;
    let (prompt, params) = req.prepare(&state.tokenizer, state.sequence_len, web_defaults)?;
    if let Some(format) = &params.response_format {
        state
            .grammars
            .compile(format)
            .map_err(|e| ApiError::bad("response_format", e.to_string()))?;
    }
    Ok((req, prompt, params))
}

async fn upstream_chat(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (_, prompt, params) = prepare(&state, &body, true)?;
    if params.num_samples > 1 {
        return Err(ApiError::bad(
            "n",
            "this endpoint streams one answer: n must be 1",
        ));
    }
    let rx = start_job(&state, format!("chat-{}", state.next_id()), prompt, params)?;
    let stream = UnboundedReceiverStream::new(rx).filter_map(|(gpu, ev)| {
        let data = match ev {
            GenEvent::Text { text, .. } => json!({"token": text, "gpu": gpu}),
            GenEvent::Finished { .. } => return None,
            GenEvent::Done { .. } => json!({"done": true}),
            GenEvent::Error(e) => json!({"error": e, "done": true}),
        };
        Some(Ok::<_, Infallible>(Event::default().data(data.to_string())))
    });
    Ok(Sse::new(stream).into_response())
}

async fn openai_chat(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (req, prompt, params) = prepare(&state, &body, false)?;
    let (asked, n) = (params.logprobs.is_some(), params.num_samples.max(1));
    let tokenizer = state.tokenizer.clone();
    let id = format!("chatcmpl-{}", state.next_id());
    let mut rx = start_job(&state, id.clone(), prompt, params)?;
    let created = unix_now();
    let model = state.model_id.clone();
    if req.stream.unwrap_or(false) {
        let chunk = move |choices: Value| {
            json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": choices})
        };
        let choice = |index: usize, delta: Value, logprobs: Value, finish: Option<&str>| json!([{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]);
        let first = (0..n)
            .map(|i| {
                chunk(choice(
                    i,
                    json!({"role": "assistant", "content": ""}),
                    Value::Null,
                    None,
                ))
            })
            .collect();
        // Tool calls are rewritten as readable text (`ToolText`, one per choice); what it held
        // back rides on the choice's last chunk.
        let mut tool_text: Vec<ToolText> = (0..n).map(|_| ToolText::default()).collect();
        let frame = move |f: Frame| match f {
            Frame::Text(i, t, lp) => chunk(choice(
                i,
                json!({"content": tool_text[i].push(&t)}),
                chat_logprobs(&tokenizer, asked, &lp),
                None,
            )),
            Frame::End(i, finish) => {
                let rest = tool_text[i].finish();
                let delta = if rest.is_empty() {
                    json!({})
                } else {
                    json!({ "content": rest })
                };
                chunk(choice(i, delta, Value::Null, Some(finish_str(finish))))
            }
            Frame::Usage => chunk(json!([])),
        };
        return Ok(openai_stream(first, rx, req.include_usage(), frame));
    }
    let done = collect(&mut rx).await?;
    let (p, c) = (done.prompt_tokens, done.completion_tokens);
    let choices: Vec<Value> = done
        .choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({"index": i, "message": {"role": "assistant", "content": ToolText::rewrite(&c.text)},
                   "logprobs": chat_logprobs(&tokenizer, asked, &c.logprobs),
                   "finish_reason": finish_str(c.finish)})
        })
        .collect();
    let body = json!({
        "id": id, "object": "chat.completion", "created": created, "model": model,
        "choices": choices,
        "usage": usage(p, c)
    });
    Ok(Json(body).into_response())
}

async fn models(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(
        json!({"object": "list", "data": [{"id": state.model_id, "object": "model", "created": 0, "owned_by": "nanochat"}]}),
    )
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    let (lifecycle, error) = state.server.state();
    match (state.pool.get(), error) {
        (Some(p), _) => Json(
            json!({"status": "ok", "ready": true, "state": lifecycle, "num_workers": p.workers}),
        )
        .into_response(),
        (None, error) => {
            let status = if error.is_some() { "error" } else { "loading" };
            let body =
                json!({"status": status, "ready": false, "state": lifecycle, "error": error});
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

fn snapshot(s: &Stats) -> [(&'static str, &'static str, f64); 12] {
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
    let (ttft_n, completion) = (get(&s.ttft_count), get(&s.completion_tokens));
    let decode_s = get(&s.decode_micros) / 1e6;
    let ttft = if ttft_n == 0.0 {
        0.0
    } else {
        get(&s.ttft_micros) / 1e6 / ttft_n
    };
    let speed = if decode_s > 0.0 {
        completion / decode_s
    } else {
        0.0
    };
    let queue = s.queue_depth.load(Ordering::Relaxed) as f64;
    let steps = get(&s.decode_steps);
    let batch = if steps > 0.0 {
        get(&s.decode_rows) / steps
    } else {
        0.0
    };
    [
        ("nanochat_requests_total", "counter", get(&s.requests)),
        ("nanochat_request_errors_total", "counter", get(&s.errors)),
        (
            "nanochat_prompt_tokens_total",
            "counter",
            get(&s.prompt_tokens),
        ),
        ("nanochat_completion_tokens_total", "counter", completion),
        ("nanochat_queue_depth", "gauge", queue),
        ("nanochat_time_to_first_token_seconds_avg", "gauge", ttft),
        ("nanochat_generation_tokens_per_second", "gauge", speed),
        ("nanochat_decode_steps_total", "counter", steps),
        ("nanochat_decode_batch_rows_avg", "gauge", batch),
        (
            "nanochat_prefill_seconds_total",
            "counter",
            get(&s.prefill_micros) / 1e6,
        ),
        (
            "nanochat_decode_seconds_total",
            "counter",
            get(&s.decode_forward_micros) / 1e6,
        ),
        (
            "nanochat_running_sequences",
            "gauge",
            s.running.load(Ordering::Relaxed) as f64,
        ),
    ]
}

async fn stats(State(state): State<Arc<AppState>>) -> Json<Value> {
    let mut v = json!({"model": state.model_id, "ready": state.pool.get().is_some(),
                       "num_workers": state.pool.get().map_or(0, |p| p.workers),
                       "state": state.server.state().0, "lifecycle": state.server.lifecycle(),
                       "requests": state.requests.snapshot()});
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
        .route("/v1/completions", post(crate::completions::completions))
        .merge(crate::sessions::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::require_key,
        ))
        .layer(DefaultBodyLimit::max(limits::MAX_BODY))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route", None) })
        .layer(axum::middleware::map_response(json_errors))
        .with_state(state)
}

/// The errors axum answers by itself (a body over the limit, a wrong method or content type,
/// an unknown route) in OpenAI's JSON error shape like ours, instead of plain text.
async fn json_errors(res: Response) -> Response {
    let json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !res.status().is_client_error() || json {
        return res;
    }
    let (parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        parts
            .status
            .canonical_reason()
            .unwrap_or("bad request")
            .to_string()
    } else {
        text
    };
    ApiError::new(parts.status, message, None).into_response()
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
