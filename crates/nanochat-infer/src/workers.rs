//! The model workers behind the HTTP server (upstream v0 `chat_web.py`'s `WorkerPool`): one
//! thread per engine (one per device), all fed from one queue. Each worker decodes many
//! requests at once (the `batcher` module); each job streams its text pieces back to the
//! request that submitted it, and the counters behind `/stats` and `/metrics` are updated as
//! it goes.

use nanochat_model::FusedOps;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};

use nanochat_core::GenerationParams;
use tokio::sync::mpsc;

use crate::batcher::Batcher;
use crate::engine::{Engine, FinishReason};
use crate::requests::RequestHandle;
use crate::sampling::TokenLogprobs;

/// A whole answer: its text, why it ended, its tokens' log-probabilities (when asked for).
#[derive(Debug, Clone)]
pub(crate) struct Choice {
    pub(crate) text: String,
    pub(crate) finish: FinishReason,
    pub(crate) logprobs: Vec<TokenLogprobs>,
}

/// What a worker sends back while generating.
#[derive(Debug)]
pub(crate) enum GenEvent {
    /// A piece of choice `index`'s text, and the log-probabilities of its tokens (when asked
    /// for).
    Text {
        index: usize,
        text: String,
        logprobs: Vec<TokenLogprobs>,
    },
    /// Choice `index` ended.
    Finished {
        index: usize,
        finish: FinishReason,
    },
    /// The job ended (after every choice's `Finished`); `finish` is choice 0's.
    Done {
        finish: FinishReason,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    Error(String),
}

/// One generation request for a worker.
pub(crate) struct Job {
    pub(crate) prompt: Vec<u32>,
    pub(crate) params: GenerationParams,
    pub(crate) events: mpsc::UnboundedSender<(usize, GenEvent)>,
    /// Its lifecycle record, moved by the worker.
    pub(crate) request: RequestHandle,
}

/// Counters behind `/stats` and `/metrics`.
#[derive(Default)]
pub struct Stats {
    pub(crate) requests: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) prompt_tokens: AtomicU64,
    pub(crate) completion_tokens: AtomicU64,
    pub(crate) queue_depth: AtomicUsize,
    pub(crate) ttft_micros: AtomicU64,
    pub(crate) ttft_count: AtomicU64,
    pub(crate) decode_micros: AtomicU64,
    /// Batched decode steps, and the rows they decoded (mean batch = rows / steps).
    pub(crate) decode_steps: AtomicU64,
    pub(crate) decode_rows: AtomicU64,
    /// Time inside prefill forwards and inside decode forwards (where a worker's time goes).
    pub(crate) prefill_micros: AtomicU64,
    pub(crate) decode_forward_micros: AtomicU64,
    /// Sequences decoding now, over all workers.
    pub(crate) running: AtomicUsize,
}

/// Sequences one worker decodes at once by default (`serve --max-batch`): beyond about this
/// many, a 2-core CPU's step time grows as fast as the batch.
pub const DEFAULT_MAX_BATCH: usize = 32;

/// A pool of engines, one thread each, sharing one queue; each runs a continuous batch of up
/// to `max_batch` sequences (the `batcher` module).
pub struct WorkerPool {
    tx: Mutex<std_mpsc::Sender<Job>>,
    pub(crate) workers: usize,
}

impl WorkerPool {
    /// Starts one worker thread per engine, each decoding up to `max_batch` sequences at once
    /// (1 turns batching off: one request at a time per worker).
    pub fn start<B: FusedOps>(engines: Vec<Engine<B>>, stats: Arc<Stats>, max_batch: usize) -> Self
    where
        Engine<B>: Send + 'static,
    {
        let (tx, rx) = std_mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let workers = engines.len();
        for (idx, engine) in engines.into_iter().enumerate() {
            let rx = rx.clone();
            let stats = stats.clone();
            std::thread::Builder::new()
                .name(format!("nanochat-worker-{idx}"))
                .spawn(move || Batcher::new(idx, &engine, &stats, max_batch).run(&rx))
                .expect("spawn worker");
        }
        Self {
            tx: Mutex::new(tx),
            workers,
        }
    }

    pub(crate) fn submit(&self, job: Job, stats: &Stats) -> bool {
        stats.queue_depth.fetch_add(1, Ordering::Relaxed);
        let ok = self.tx.lock().expect("queue lock").send(job).is_ok();
        if !ok {
            stats.queue_depth.fetch_sub(1, Ordering::Relaxed);
        }
        ok
    }
}

/// A panic's message.
pub(crate) fn panic_text(p: &(dyn std::any::Any + Send)) -> &str {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}
