//! The plumbing between the HTTP handlers and the model workers (upstream v0
//! `scripts/chat_web.py`: the app state holding the worker pool, and a request's trip through
//! it): the shared [`AppState`], [`start_job`] (admit a request: the model is loaded, the
//! server is not closing, a worker takes the job; the request's lifecycle is recorded in
//! [`Requests`]), [`collect`] (gather a whole answer) and [`openai_stream`] (send it as
//! OpenAI's SSE frames).
//!
//! Design: a job's events come back on an unbounded channel; streaming handlers forward them
//! as SSE frames, the others [`collect`] them. Dropping the receiver (the client left) makes
//! the worker stop generating.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use std::convert::Infallible;

use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use nanochat_core::GenerationParams;
use nanochat_tokenizer::Tokenizer;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::api::{ApiError, usage};
use crate::engine::FinishReason;
use crate::grammar::Grammars;
use crate::requests::{Requests, ServerState};
use crate::sampling::TokenLogprobs;
use crate::session_store::Sessions;
use crate::workers::{Choice, GenEvent, Job, Stats, WorkerPool};

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
    pub sessions: Sessions,
    /// The server's lifecycle (loading, ready, failed).
    pub server: ServerState,
    /// Every request's lifecycle: those in flight and the last finished ones.
    pub requests: Arc<Requests>,
    /// Compiles `response_format`s (a bad schema is a 400 before the request is queued).
    pub grammars: Grammars,
    api_key: OnceLock<String>,
    ids: AtomicU64,
}

impl AppState {
    /// State for a model called `model_id` (workers attached later with [`AppState::set_pool`]).
    pub fn new(model_id: String, tokenizer: Arc<Tokenizer>, sequence_len: usize) -> Arc<Self> {
        Arc::new(Self {
            model_id,
            grammars: Grammars::new(tokenizer.clone()),
            tokenizer,
            sequence_len,
            pool: OnceLock::new(),
            stats: Arc::new(Stats::default()),
            closing: AtomicBool::new(false),
            sessions: Sessions::default(),
            server: ServerState::default(),
            requests: Arc::new(Requests::default()),
            api_key: OnceLock::new(),
            ids: AtomicU64::new(0),
        })
    }

    /// From now on every route but `/health` and the page wants `Authorization: Bearer
    /// <key>` (the `auth` middleware). The first key set stays; an empty key is refused.
    pub fn require_api_key(&self, key: String) -> Result<(), String> {
        if key.trim().is_empty() {
            return Err("the API key may not be empty".into());
        }
        self.api_key
            .set(key)
            .map_err(|_| "an API key is already set".to_string())
    }

    /// The key requests must carry, if any.
    pub(crate) fn api_key(&self) -> Option<&str> {
        self.api_key.get().map(String::as_str)
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Attaches the workers; the server turns Ready and `/health` ok.
    pub fn set_pool(&self, pool: WorkerPool) {
        if self.pool.set(pool).is_ok()
            && let Err(e) = self.server.loaded()
        {
            tracing::warn!("{e}");
        }
    }

    /// Loading the model failed: the server turns Error and `/health` says why (it keeps
    /// answering 503).
    pub fn load_failed(&self, reason: impl ToString) {
        if let Err(e) = self.server.failed(reason.to_string()) {
            tracing::warn!("{e}");
        }
    }
}

/// The events of one job: `(worker index, event)`.
pub(crate) type Events = mpsc::UnboundedReceiver<(usize, GenEvent)>;

/// Queues a generation recorded under `id`; a 503 while the model loads (or after it failed
/// to), during shutdown or without workers.
pub(crate) fn start_job(
    state: &AppState,
    id: String,
    prompt: Vec<u32>,
    params: GenerationParams,
) -> Result<Events, ApiError> {
    let unavailable = |m: &str| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, m, None);
    let pool = state
        .pool
        .get()
        .ok_or_else(|| match state.server.state().1 {
            Some(why) => unavailable(&format!("the model failed to load: {why}")),
            None => unavailable("the model is still loading"),
        })?;
    if state.closing.load(Ordering::Relaxed) {
        return Err(unavailable("the server is shutting down"));
    }
    state.stats.requests.fetch_add(1, Ordering::Relaxed);
    let (events, rx) = mpsc::unbounded_channel();
    let request = state.requests.admit(id);
    request.queued();
    let job = Job {
        prompt,
        params,
        events,
        request,
    };
    if !pool.submit(job, &state.stats) {
        return Err(unavailable("no model worker is running"));
    }
    Ok(rx)
}

/// A whole (non-streamed) answer.
pub(crate) struct Completed {
    /// Every choice, in order (one with `n` = 1).
    pub(crate) choices: Vec<Choice>,
    pub(crate) prompt_tokens: usize,
    pub(crate) completion_tokens: usize,
}

/// Gathers a job's text pieces, choice by choice, until it finishes; a worker error or a
/// vanished worker is a 500.
pub(crate) async fn collect(rx: &mut Events) -> Result<Completed, ApiError> {
    let mut choices: Vec<Choice> = Vec::new();
    let choice = |choices: &mut Vec<Choice>, index: usize| {
        while choices.len() <= index {
            choices.push(Choice {
                text: String::new(),
                finish: FinishReason::Length,
                logprobs: Vec::new(),
            });
        }
        index
    };
    while let Some((_, ev)) = rx.recv().await {
        match ev {
            GenEvent::Text {
                index,
                text,
                logprobs,
            } => {
                let i = choice(&mut choices, index);
                choices[i].text.push_str(&text);
                choices[i].logprobs.extend(logprobs);
            }
            GenEvent::Finished { index, finish } => {
                let i = choice(&mut choices, index);
                choices[i].finish = finish;
            }
            GenEvent::Done {
                finish,
                prompt_tokens,
                completion_tokens,
            } => {
                let i = choice(&mut choices, 0);
                if choices.len() == 1 {
                    choices[i].finish = finish;
                }
                return Ok(Completed {
                    choices,
                    prompt_tokens,
                    completion_tokens,
                });
            }
            GenEvent::Error(e) => return Err(ApiError::internal(e)),
        }
    }
    Err(ApiError::internal("the worker stopped"))
}

/// What an OpenAI stream frame carries: a piece of choice `index`'s text (with its tokens'
/// log-probabilities when asked for), the end of a choice, or (with `include_usage`) the
/// final usage chunk, whose `choices` are empty.
pub(crate) enum Frame {
    Text(usize, String, Vec<TokenLogprobs>),
    End(usize, FinishReason),
    Usage,
}

/// A job's events as OpenAI's SSE stream: `first` (the opening frames, if any), one frame per
/// piece of text and one per choice's end, built by `frame`, a usage frame when
/// `include_usage`, an error frame if the worker fails, then `data: [DONE]`. A client that
/// leaves drops the receiver, which stops the worker.
pub(crate) fn openai_stream(
    first: Vec<Value>,
    rx: Events,
    include_usage: bool,
    mut frame: impl FnMut(Frame) -> Value + Send + 'static,
) -> Response {
    let frames = UnboundedReceiverStream::new(rx).filter_map(move |(_, ev)| match ev {
        GenEvent::Text {
            index,
            text,
            logprobs,
        } => Some(frame(Frame::Text(index, text, logprobs))),
        GenEvent::Finished { index, finish } => Some(frame(Frame::End(index, finish))),
        GenEvent::Done {
            prompt_tokens,
            completion_tokens,
            ..
        } => include_usage.then(|| {
            let mut last = frame(Frame::Usage);
            last["usage"] = usage(prompt_tokens, completion_tokens);
            last
        }),
        GenEvent::Error(e) => Some(json!({"error": {"message": e, "type": "server_error"}})),
    });
    let stream = tokio_stream::iter(first)
        .chain(frames)
        .map(|v| v.to_string())
        .chain(tokio_stream::once("[DONE]".to_string()))
        .map(|d| Ok::<_, Infallible>(Event::default().data(d)));
    Sse::new(stream).into_response()
}
