//! The model workers behind the HTTP server (upstream v0 `chat_web.py`'s `WorkerPool`): one
//! thread per engine (one per device), all fed from one queue; each job streams its text
//! pieces back to the request that submitted it, and the counters behind `/stats` and
//! `/metrics` are updated as it goes.

use nanochat_model::FusedOps;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use nanochat_core::GenerationParams;
use tokio::sync::mpsc;

use crate::chat::stream_reply;
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
    /// A piece of text, and the log-probabilities of its tokens (when asked for).
    Text(String, Vec<TokenLogprobs>),
    /// Every choice, for a job of `num_samples` > 1 (not streamed).
    Choices(Vec<Choice>),
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
}

/// A pool of engines, one thread each, sharing one queue.
pub struct WorkerPool {
    tx: Mutex<std_mpsc::Sender<Job>>,
    pub(crate) workers: usize,
}

impl WorkerPool {
    /// Starts one worker thread per engine.
    pub fn start<B: FusedOps>(engines: Vec<Engine<B>>, stats: Arc<Stats>) -> Self
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
                .spawn(move || {
                    loop {
                        let job = match rx.lock().expect("queue lock").recv() {
                            Ok(j) => j,
                            Err(_) => return, // server gone
                        };
                        stats.queue_depth.fetch_sub(1, Ordering::Relaxed);
                        run_job(idx, &engine, job, &stats);
                    }
                })
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

/// Runs one job: Processing while prefilling, Streaming from the first piece, then Complete,
/// or Error when generation fails or the client left before the end.
fn run_job<B: FusedOps>(idx: usize, engine: &Engine<B>, job: Job, stats: &Stats) {
    let start = Instant::now();
    let Job {
        prompt,
        params,
        events,
        request,
    } = job;
    request.processing();
    if events.is_closed() {
        request.finish(Err("the client left before generation started".into()));
        return;
    }
    if params.num_samples > 1 {
        return run_choices(idx, engine, &prompt, &params, &events, request, stats);
    }
    let (mut first, mut client_left) = (true, false);
    // A bug that panics inside generation fails this request, not the worker: the engine
    // keeps no state between requests (each has its own KV cache).
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        stream_reply(engine, &prompt, &params, |piece, logprobs| {
            if first {
                first = false;
                request.streaming();
                stats
                    .ttft_micros
                    .fetch_add(start.elapsed().as_micros() as u64, Ordering::Relaxed);
                stats.ttft_count.fetch_add(1, Ordering::Relaxed);
            }
            client_left = events
                .send((idx, GenEvent::Text(piece.to_string(), logprobs)))
                .is_err();
            !client_left
        })
        .map_err(|e| e.to_string())
    }))
    .unwrap_or_else(|p| Err(format!("generation panicked: {}", panic_text(&*p))));
    stats
        .decode_micros
        .fetch_add(start.elapsed().as_micros() as u64, Ordering::Relaxed);
    let event = match result {
        Ok(row) => {
            stats
                .prompt_tokens
                .fetch_add(prompt.len() as u64, Ordering::Relaxed);
            stats
                .completion_tokens
                .fetch_add(row.tokens.len() as u64, Ordering::Relaxed);
            if first {
                // Nothing to stream (an empty answer): still a step through Streaming.
                request.streaming();
            }
            request.finish(if client_left {
                Err("the client disconnected during generation".into())
            } else {
                Ok(())
            });
            GenEvent::Done {
                finish: row.finish_reason,
                prompt_tokens: prompt.len(),
                completion_tokens: row.tokens.len(),
            }
        }
        Err(e) => {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            request.finish(Err(e.clone()));
            GenEvent::Error(e)
        }
    };
    let _ = events.send((idx, event));
}

/// Runs a job of several choices (`num_samples` rows decoded together from one prefill, as
/// upstream's `generate_batch`); they come back whole, not streamed.
fn run_choices<B: FusedOps>(
    idx: usize,
    engine: &Engine<B>,
    prompt: &[u32],
    params: &GenerationParams,
    events: &mpsc::UnboundedSender<(usize, GenEvent)>,
    request: RequestHandle,
    stats: &Stats,
) {
    let start = Instant::now();
    let mut first = true;
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        engine
            .generate(prompt, params, |_| {
                if first {
                    first = false;
                    request.streaming();
                }
                !events.is_closed()
            })
            .map_err(|e| e.to_string())
    }))
    .unwrap_or_else(|p| Err(format!("generation panicked: {}", panic_text(&*p))));
    stats
        .decode_micros
        .fetch_add(start.elapsed().as_micros() as u64, Ordering::Relaxed);
    match result {
        Ok(rows) => {
            let completion: usize = rows.iter().map(|r| r.tokens.len()).sum();
            stats
                .prompt_tokens
                .fetch_add(prompt.len() as u64, Ordering::Relaxed);
            stats
                .completion_tokens
                .fetch_add(completion as u64, Ordering::Relaxed);
            let left = events.is_closed();
            request.finish(if left {
                Err("the client disconnected during generation".into())
            } else {
                Ok(())
            });
            let choices = rows
                .iter()
                .map(|r| Choice {
                    text: r.text.clone(),
                    finish: r.finish_reason,
                    logprobs: r.logprobs.clone(),
                })
                .collect();
            let _ = events.send((idx, GenEvent::Choices(choices)));
            let finish = rows
                .first()
                .map_or(FinishReason::Length, |r| r.finish_reason);
            let _ = events.send((
                idx,
                GenEvent::Done {
                    finish,
                    prompt_tokens: prompt.len(),
                    completion_tokens: completion,
                },
            ));
        }
        Err(e) => {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            request.finish(Err(e.clone()));
            let _ = events.send((idx, GenEvent::Error(e)));
        }
    }
}

/// A panic's message.
fn panic_text(p: &(dyn std::any::Any + Send)) -> &str {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}
