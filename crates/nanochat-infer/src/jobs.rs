//! The plumbing between the HTTP handlers and the model workers (upstream v0
//! `scripts/chat_web.py`: the app state holding the worker pool, and a request's trip through
//! it): the shared [`AppState`], [`start_job`] (admit a request: the model is loaded, the
//! server is not closing, a worker takes the job) and [`collect`] (gather a whole answer).
//!
//! Design: a job's events come back on an unbounded channel; streaming handlers forward them
//! as SSE frames, the others [`collect`] them. Dropping the receiver (the client left) makes
//! the worker stop generating.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use axum::http::StatusCode;
use nanochat_core::GenerationParams;
use nanochat_tokenizer::Tokenizer;
use tokio::sync::mpsc;

use crate::api::ApiError;
use crate::engine::FinishReason;
use crate::session_store::Sessions;
use crate::workers::{GenEvent, Job, Stats, WorkerPool};

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
            sessions: Sessions::default(),
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

/// The events of one job: `(worker index, event)`.
pub(crate) type Events = mpsc::UnboundedReceiver<(usize, GenEvent)>;

/// Queues a generation; a 503 while the model loads, during shutdown or without workers.
pub(crate) fn start_job(
    state: &AppState,
    prompt: Vec<u32>,
    params: GenerationParams,
) -> Result<Events, ApiError> {
    let unavailable = |m: &str| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, m, None);
    let pool = state
        .pool
        .get()
        .ok_or_else(|| unavailable("the model is still loading"))?;
    if state.closing.load(Ordering::Relaxed) {
        return Err(unavailable("the server is shutting down"));
    }
    state.stats.requests.fetch_add(1, Ordering::Relaxed);
    let (events, rx) = mpsc::unbounded_channel();
    let job = Job {
        prompt,
        params,
        events,
    };
    if !pool.submit(job, &state.stats) {
        return Err(unavailable("no model worker is running"));
    }
    Ok(rx)
}

/// A whole (non-streamed) answer.
pub(crate) struct Completed {
    pub(crate) text: String,
    pub(crate) finish: FinishReason,
    pub(crate) prompt_tokens: usize,
    pub(crate) completion_tokens: usize,
}

/// Gathers a job's text pieces until it finishes; a worker error or a vanished worker is a 500.
pub(crate) async fn collect(rx: &mut Events) -> Result<Completed, ApiError> {
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
            GenEvent::Error(e) => return Err(ApiError::internal(e)),
        }
    }
    Err(ApiError::internal("the worker stopped"))
}
