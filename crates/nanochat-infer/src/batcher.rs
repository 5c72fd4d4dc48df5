//! Continuous batching (what vLLM, TGI and llama.cpp's server do; upstream's `chat_web.py`
//! gives each request a worker of its own): the sequences of every running request decode
//! together, one batched forward per step, and requests join and leave between steps.
//!
//! Design:
//! - One [`KvCache`] whose rows are slots. A request is prefilled alone in a cache of its own
//!   (in chunks of at most [`PREFILL_CHUNK`] tokens per step, so a long prompt does not stall
//!   the running ones for long), then copied into free rows (`n` rows for `n` choices), each
//!   choice a [`Sequence`] with the seed `seed + i`, as in [`Engine::generate`].
//! - Each step every running sequence chooses its next token from its own logits, runs the
//!   tool state machine and stop strings, streams its text, and leaves when it ends; the others
//!   decode one token each in one forward over the cache's first rows. Rows at different
//!   lengths take the model's ragged path (each row's own position and keys); a free row among
//!   them decodes a dummy token that is thrown away. The cache grows by doubling up to
//!   `max_batch` rows (a request of `n` choices is admitted alone if it needs more).
//! - A sequence's tokens depend only on its request (prompt, parameters, seed) and its logits:
//!   a greedy request gives the same text alone or batched with others (tested).
//! - A client that leaves frees its rows at the next step. A panic inside a step fails the
//!   requests running then (a 500 / an SSE error frame), not the worker.

use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Mutex, TryLockError};
use std::time::Instant;

use nanochat_model::{FusedOps, KvCache};

use crate::engine::{Engine, FinishReason, last_logits, to_ids};
use crate::sequence::Sequence;
use crate::workers::{GenEvent, Job, Stats, panic_text};

/// Prompt tokens prefilled per step at most (a longer prompt takes several steps).
pub const PREFILL_CHUNK: usize = 512;

/// A request with rows in the batch (or being prefilled).
struct Running {
    job: Job,
    start: Instant,
    /// Rows not finished yet.
    live: usize,
    completion_tokens: usize,
    /// Choice 0's finish (what `Done` reports).
    finish: FinishReason,
    first_piece: bool,
}

/// A row of the batch: which request and choice, its sequence and its next logits.
struct Row {
    job: usize,
    index: usize,
    seq: Sequence,
    logits: Vec<f32>,
}

/// A request being prefilled in a cache of its own.
struct Prefill<B: FusedOps> {
    job: usize,
    cache: KvCache<B>,
    done: usize,
    /// The logits after the whole prompt, once it is done.
    first: Option<Vec<f32>>,
}

/// Runs `f`, adding its duration in µs to `counter`.
fn timed<R>(counter: &AtomicU64, f: impl FnOnce() -> R) -> R {
    let start = Instant::now();
    let r = f();
    counter.fetch_add(start.elapsed().as_micros() as u64, Ordering::Relaxed);
    r
}

/// One worker's batch.
pub(crate) struct Batcher<'e, B: FusedOps> {
    worker: usize,
    engine: &'e Engine<B>,
    stats: &'e Stats,
    max_batch: usize,
    cache: Option<KvCache<B>>,
    rows: Vec<Option<Row>>,
    jobs: Vec<Option<Running>>,
    prefills: VecDeque<Prefill<B>>,
}

impl<'e, B: FusedOps> Batcher<'e, B> {
    pub(crate) fn new(
        worker: usize,
        engine: &'e Engine<B>,
        stats: &'e Stats,
        max_batch: usize,
    ) -> Self {
        Self {
            worker,
            engine,
            stats,
            max_batch: max_batch.max(1),
            cache: None,
            rows: Vec::new(),
            jobs: Vec::new(),
            prefills: VecDeque::new(),
        }
    }

    /// Serves jobs from `queue` until it closes.
    pub(crate) fn run(&mut self, queue: &Mutex<std_mpsc::Receiver<Job>>) {
        loop {
            if self.is_idle() {
                // Nothing running: wait for work.
                let job = match queue.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                match job {
                    Ok(job) => self.admit(job),
                    Err(_) => return, // the server is gone
                }
            }
            // Take more while there is room (never waiting on a worker that waits for work).
            while self.has_room() {
                let job = match queue.try_lock() {
                    Ok(rx) => rx.try_recv().ok(),
                    Err(TryLockError::WouldBlock) => None,
                    Err(TryLockError::Poisoned(_)) => return,
                };
                match job {
                    Some(job) => self.admit(job),
                    None => break,
                }
            }
            let step = panic::catch_unwind(AssertUnwindSafe(|| {
                self.prefill_some();
                self.step();
            }));
            if let Err(p) = step {
                self.fail_all(&format!("generation panicked: {}", panic_text(&*p)));
            }
        }
    }

    fn is_idle(&self) -> bool {
        self.prefills.is_empty() && self.rows.iter().all(Option::is_none)
    }

    /// Rows in use or promised to requests being prefilled.
    fn rows_wanted(&self) -> usize {
        let busy = self.rows.iter().filter(|r| r.is_some()).count();
        let pending: usize = self
            .prefills
            .iter()
            .filter_map(|p| self.jobs[p.job].as_ref())
            .map(|r| r.job.params.num_samples.max(1))
            .sum();
        busy + pending
    }

    fn has_room(&self) -> bool {
        self.rows_wanted() < self.max_batch
    }

    /// Takes a job: checks it, then queues its prefill.
    fn admit(&mut self, job: Job) {
        self.stats.queue_depth.fetch_sub(1, Ordering::Relaxed);
        job.request.processing();
        if job.events.is_closed() {
            job.request
                .finish(Err("the client left before generation started".into()));
            return;
        }
        if let Err(e) = self.engine.validate(&job.prompt, &job.params) {
            let e = e.to_string();
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            job.request.finish(Err(e.clone()));
            let _ = job.events.send((self.worker, GenEvent::Error(e)));
            return;
        }
        let cache = self.engine.model().new_kv_cache(1, job.prompt.len());
        let running = Running {
            live: job.params.num_samples.max(1),
            job,
            start: Instant::now(),
            completion_tokens: 0,
            finish: FinishReason::Length,
            first_piece: true,
        };
        let slot = match self.jobs.iter().position(Option::is_none) {
            Some(i) => {
                self.jobs[i] = Some(running);
                i
            }
            None => {
                self.jobs.push(Some(running));
                self.jobs.len() - 1
            }
        };
        self.prefills.push_back(Prefill {
            job: slot,
            cache,
            done: 0,
            first: None,
        });
    }

    /// Prefills up to [`PREFILL_CHUNK`] prompt tokens, oldest request first; a request whose
    /// prompt is done moves into the batch when its rows are free.
    fn prefill_some(&mut self) {
        let mut budget = PREFILL_CHUNK;
        while budget > 0 {
            let Some(p) = self.prefills.front_mut() else {
                return;
            };
            let Some(running) = self.jobs[p.job].as_ref() else {
                self.prefills.pop_front();
                continue;
            };
            if running.job.events.is_closed() {
                let p = self.prefills.pop_front().expect("front");
                self.drop_job(p.job, "the client disconnected during generation");
                continue;
            }
            let n = running.job.params.num_samples.max(1);
            if p.first.is_none() {
                let prompt = &running.job.prompt;
                let take = (prompt.len() - p.done).min(budget);
                let model = self.engine.model();
                let ids = to_ids::<B>(&prompt[p.done..p.done + take], 1, &model.device());
                let cache = &mut p.cache;
                let logits = timed(&self.stats.prefill_micros, || {
                    B::run_ops(|| last_logits(model.forward_last(ids, Some(cache))))
                });
                p.done += take;
                budget -= take;
                if p.done < prompt.len() {
                    continue;
                }
                p.first = logits.into_iter().next();
            }
            // Room for its rows: alone if it needs more than max_batch.
            let busy = self.rows.iter().filter(|r| r.is_some()).count();
            if busy > 0 && busy + n > self.max_batch {
                return; // decode first; rows free up as sequences end
            }
            let mut p = self.prefills.pop_front().expect("front");
            let first = p.first.take().unwrap_or_default();
            self.start_rows(p, first, n);
        }
    }

    /// Copies a prefilled request into `n` free rows, one sequence per choice.
    fn start_rows(&mut self, p: Prefill<B>, first: Vec<f32>, n: usize) {
        let Some(running) = self.jobs[p.job].as_ref() else {
            return;
        };
        let (prompt, params) = (&running.job.prompt, &running.job.params);
        let seed = params.seed.unwrap_or(42);
        let seqs: Result<Vec<Sequence>, _> = (0..n as u64)
            .map(|i| Sequence::new(self.engine, prompt, params, seed.wrapping_add(i)))
            .collect();
        let seqs = match seqs {
            Ok(seqs) => seqs,
            Err(e) => return self.fail_job(p.job, &e.to_string()),
        };
        let mut free: Vec<usize> = (0..self.rows.len())
            .filter(|&r| self.rows[r].is_none())
            .take(n)
            .collect();
        while free.len() < n {
            free.push(self.rows.len());
            self.rows.push(None);
        }
        let seq_len = self.engine.model().config().sequence_len;
        let cache = self
            .cache
            .get_or_insert_with(|| self.engine.model().new_kv_cache(n.max(1), seq_len));
        if cache.batch() < self.rows.len() {
            let want =
                (cache.batch() * 2).clamp(self.rows.len(), self.max_batch.max(self.rows.len()));
            cache.grow_rows(want);
        }
        self.stats.running.fetch_add(n, Ordering::Relaxed);
        for ((i, &r), seq) in free.iter().enumerate().zip(seqs) {
            cache.load_row(r, &p.cache, 0);
            self.rows[r] = Some(Row {
                job: p.job,
                index: i,
                seq,
                logits: first.clone(),
            });
        }
    }

    /// One decode step over every running row.
    fn step(&mut self) {
        let mut inputs: Vec<(usize, u32)> = Vec::new();
        for r in 0..self.rows.len() {
            let Some(row) = self.rows[r].as_mut() else {
                continue;
            };
            let Some(running) = self.jobs[row.job].as_mut() else {
                self.rows[r] = None;
                self.stats.running.fetch_sub(1, Ordering::Relaxed);
                continue;
            };
            if running.job.events.is_closed() {
                let job = row.job;
                self.drop_job(job, "the client disconnected during generation");
                continue;
            }
            let params = &running.job.params;
            let chosen = match row.seq.choose(&row.logits, params) {
                Ok(chosen) => chosen,
                Err(e) => {
                    let job = row.job;
                    self.fail_job(job, &e.to_string());
                    continue;
                }
            };
            let token = chosen.token;
            if let Err(e) = row.seq.accept(self.engine, chosen, params) {
                let job = row.job;
                self.fail_job(job, &e.to_string());
                continue;
            }
            if let Some((text, logprobs)) = row.seq.take_piece(&params.stop) {
                if running.first_piece {
                    running.first_piece = false;
                    running.job.request.streaming();
                    let ttft = running.start.elapsed().as_micros() as u64;
                    self.stats.ttft_micros.fetch_add(ttft, Ordering::Relaxed);
                    self.stats.ttft_count.fetch_add(1, Ordering::Relaxed);
                }
                let index = row.index;
                let event = GenEvent::Text {
                    index,
                    text,
                    logprobs,
                };
                let _ = running.job.events.send((self.worker, event));
            }
            if row.seq.is_finished() {
                self.finish_row(r);
            } else {
                inputs.push((r, token));
            }
        }
        self.decode(&inputs);
    }

    /// One forward over the first rows: `inputs` are the running rows' tokens.
    fn decode(&mut self, inputs: &[(usize, u32)]) {
        let (Some(&(last, _)), Some(cache)) = (inputs.last(), self.cache.as_mut()) else {
            return;
        };
        let rows = last + 1;
        let mut column = vec![0u32; rows];
        for &(r, t) in inputs {
            column[r] = t;
        }
        let model = self.engine.model();
        let ids = to_ids::<B>(&column, rows, &model.device());
        let logits = timed(&self.stats.decode_forward_micros, || {
            B::run_ops(|| last_logits(model.forward(ids, Some(cache))))
        });
        self.stats.decode_steps.fetch_add(1, Ordering::Relaxed);
        self.stats
            .decode_rows
            .fetch_add(inputs.len() as u64, Ordering::Relaxed);
        for (r, row) in self.rows[..rows].iter().enumerate() {
            if row.is_none() {
                cache.clear_row(r); // a free row's dummy token
            }
        }
        for (r, l) in logits.into_iter().enumerate() {
            if let Some(row) = self.rows[r].as_mut() {
                row.logits = l;
            }
        }
    }

    /// A row's sequence ended: its choice is finished; the request is done with its last row.
    fn finish_row(&mut self, r: usize) {
        let Some(row) = self.rows[r].take() else {
            return;
        };
        self.stats.running.fetch_sub(1, Ordering::Relaxed);
        if let Some(cache) = self.cache.as_mut() {
            cache.clear_row(r);
        }
        let Some(running) = self.jobs[row.job].as_mut() else {
            return;
        };
        let out = row.seq.into_output();
        running.completion_tokens += out.tokens.len();
        if row.index == 0 {
            running.finish = out.finish_reason;
        }
        let event = GenEvent::Finished {
            index: row.index,
            finish: out.finish_reason,
        };
        let _ = running.job.events.send((self.worker, event));
        running.live -= 1;
        if running.live > 0 {
            return;
        }
        let Some(running) = self.jobs[row.job].take() else {
            return;
        };
        let (prompt_tokens, completion_tokens) =
            (running.job.prompt.len(), running.completion_tokens);
        let s = self.stats;
        s.prompt_tokens
            .fetch_add(prompt_tokens as u64, Ordering::Relaxed);
        s.completion_tokens
            .fetch_add(completion_tokens as u64, Ordering::Relaxed);
        s.decode_micros.fetch_add(
            running.start.elapsed().as_micros() as u64,
            Ordering::Relaxed,
        );
        if running.first_piece {
            // Nothing was shown (an empty answer): still a step through Streaming.
            running.job.request.streaming();
        }
        running.job.request.finish(Ok(()));
        let done = GenEvent::Done {
            finish: running.finish,
            prompt_tokens,
            completion_tokens,
        };
        let _ = running.job.events.send((self.worker, done));
    }

    /// Removes a request and frees its rows (the client left).
    fn drop_job(&mut self, job: usize, why: &str) {
        if let Some(running) = self.release(job) {
            running.job.request.finish(Err(why.into()));
        }
    }

    /// Fails a request: an error event, its rows freed.
    fn fail_job(&mut self, job: usize, why: &str) {
        if let Some(running) = self.release(job) {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            running.job.request.finish(Err(why.into()));
            let _ = running
                .job
                .events
                .send((self.worker, GenEvent::Error(why.into())));
        }
    }

    fn release(&mut self, job: usize) -> Option<Running> {
        for (r, row) in self.rows.iter_mut().enumerate() {
            if row.as_ref().is_some_and(|x| x.job == job) {
                *row = None;
                self.stats.running.fetch_sub(1, Ordering::Relaxed);
                if let Some(cache) = self.cache.as_mut() {
                    cache.clear_row(r);
                }
            }
        }
        self.prefills.retain(|p| p.job != job);
        self.jobs.get_mut(job).and_then(Option::take)
    }

    /// Fails every request (a panic inside a step) and starts over with an empty batch.
    fn fail_all(&mut self, why: &str) {
        for job in 0..self.jobs.len() {
            self.fail_job(job, why);
        }
        let left = self.rows.iter().filter(|r| r.is_some()).count();
        self.stats.running.fetch_sub(left, Ordering::Relaxed);
        self.rows.clear();
        self.prefills.clear();
        self.cache = None;
    }
}
