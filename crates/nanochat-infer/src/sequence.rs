//! One generated sequence (a row of upstream's `Engine.generate`): its sampler, the tool-use
//! state machine, stop strings, `max_tokens`, and its text as it can be shown.
//!
//! Each step [`Sequence::choose`]s the next token (a forced one first: the calculator's result,
//! mask 0; otherwise sampled from the row's logits with its own seeded generator), then
//! [`Sequence::accept`]s it: `<|assistant_end|>` or `<|bos|>` ends the row; tokens between
//! `<|python_start|>` and `<|python_end|>` form an expression whose result is queued as
//! `<|output_start|>…<|output_end|>`; the text is decoded incrementally and cut at the first
//! stop string. [`Sequence::take_piece`] hands out the text that is safe to show: whole
//! characters, never a tail that could still become a stop string.
//!
//! With a `response_format`, each sampled token is drawn from the logits masked by the row's
//! [`Constraint`] (what the JSON grammar allows next), and accepted tokens advance it.
//!
//! The engine's batch of samples and the server's continuous batching both step sequences;
//! a sequence's tokens depend only on its prompt, parameters, seed and logits, never on which
//! other rows it was decoded with.

use std::collections::VecDeque;

use nanochat_core::GenerationParams;
use nanochat_model::FusedOps;
use nanochat_tokenizer::StreamDecoder;

use crate::engine::{Engine, EngineError, FinishReason, RowOutput};
use crate::grammar::Constraint;
use crate::sampling::{Sampler, TokenLogprobs, token_logprobs};

/// A token chosen for a sequence: the id, 1 if sampled or 0 if forced, and its
/// log-probabilities when asked for.
#[derive(Debug, Clone)]
pub struct Chosen {
    /// Token id.
    pub token: u32,
    /// 1 = sampled, 0 = forced (tool output).
    pub mask: u8,
    /// Its log-probabilities (when `GenerationParams::logprobs` is set).
    pub logprobs: Option<TokenLogprobs>,
}

/// One row being generated.
pub struct Sequence {
    sampler: Sampler,
    forced: VecDeque<u32>,
    in_python: bool,
    python_expr: Vec<u32>,
    out: Vec<u32>,
    masks: Vec<u8>,
    logprobs: Vec<TokenLogprobs>,
    recent: Vec<u32>,
    text: String,
    decoder: StreamDecoder,
    finish: Option<FinishReason>,
    steps: usize,
    /// Bytes of `text` already handed out by `take_piece`, and the log-probabilities since.
    sent: usize,
    unsent_logprobs: Vec<TokenLogprobs>,
    constraint: Option<Constraint>,
}

impl Sequence {
    /// A sequence continuing `prompt`, sampling with `seed`, constrained by
    /// `params.response_format` (compiled here: an unusable schema is an error).
    pub fn new<B: FusedOps>(
        engine: &Engine<B>,
        prompt: &[u32],
        params: &GenerationParams,
        seed: u64,
    ) -> Result<Self, EngineError> {
        let constraint = params
            .response_format
            .as_ref()
            .map(|f| engine.grammars().compile(f))
            .transpose()?;
        Ok(Self {
            sampler: Sampler::new(seed),
            forced: VecDeque::new(),
            in_python: false,
            python_expr: Vec::new(),
            out: Vec::new(),
            masks: Vec::new(),
            logprobs: Vec::new(),
            recent: prompt.to_vec(),
            text: String::new(),
            decoder: StreamDecoder::new(),
            finish: None,
            steps: 0,
            sent: 0,
            unsent_logprobs: Vec::new(),
            constraint,
        })
    }

    /// Whether the sequence has ended (its last token accepted, or `max_tokens` reached).
    pub fn is_finished(&self) -> bool {
        self.finish.is_some()
    }

    /// Tokens generated so far (the terminal token excluded).
    pub fn generated(&self) -> usize {
        self.out.len()
    }

    /// The next token: a forced one if queued, else sampled from `logits` (masked by the
    /// constraint, if any; log-probabilities stay the model's own).
    pub fn choose(
        &mut self,
        logits: &[f32],
        params: &GenerationParams,
    ) -> Result<Chosen, EngineError> {
        let (token, mask) = match (self.forced.pop_front(), &mut self.constraint) {
            (Some(t), _) => (t, 0),
            (None, None) => (
                self.sampler.sample(logits, &self.recent, &self.out, params),
                1,
            ),
            (None, Some(c)) => {
                let mut masked = logits.to_vec();
                c.mask(&mut masked)?;
                let t = self
                    .sampler
                    .sample(&masked, &self.recent, &self.out, params);
                (t, 1)
            }
        };
        let logprobs = params.logprobs.map(|k| token_logprobs(logits, token, k));
        Ok(Chosen {
            token,
            mask,
            logprobs,
        })
    }

    /// Runs the state machine on the chosen token. After it the sequence may be finished.
    pub fn accept<B: FusedOps>(
        &mut self,
        engine: &Engine<B>,
        chosen: Chosen,
        params: &GenerationParams,
    ) -> Result<(), EngineError> {
        if self.is_finished() {
            return Ok(());
        }
        let sp = engine.specials();
        let token = chosen.token;
        if let Some(c) = &mut self.constraint {
            c.consume(token)?;
        }
        self.steps += 1;
        self.recent.push(token);
        if token == sp.assistant_end || token == sp.bos {
            self.finish = Some(FinishReason::Stop);
            return Ok(());
        }
        self.out.push(token);
        self.masks.push(chosen.mask);
        if let Some(lp) = chosen.logprobs {
            self.logprobs.push(lp.clone());
            self.unsent_logprobs.push(lp);
        }
        self.text
            .push_str(&self.decoder.push(engine.tokenizer(), token)?);
        if token == sp.python_start {
            self.in_python = true;
            self.python_expr.clear();
        } else if token == sp.python_end && self.in_python {
            self.in_python = false;
            self.forced.extend(engine.tool_response(&self.python_expr)?);
            self.python_expr.clear();
        } else if self.in_python {
            self.python_expr.push(token);
        }
        if let Some(cut) = params
            .stop
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| self.text.find(s.as_str()))
            .min()
        {
            self.text.truncate(cut);
            self.decoder = StreamDecoder::new(); // nothing after the stop string is shown
            self.finish = Some(FinishReason::Stop);
        } else if self.steps >= params.max_tokens {
            self.finish = Some(FinishReason::Length);
        }
        Ok(())
    }

    /// Ends the sequence early (its reason: `max_tokens`, as when generation is cut short).
    pub fn stop(&mut self) {
        self.finish.get_or_insert(FinishReason::Length);
    }

    /// The text not handed out yet that is safe to show, with its tokens' log-probabilities:
    /// everything once the sequence is finished (the decoder flushed), otherwise all but a
    /// tail that could be the start of a stop string. `None` when there is nothing new.
    pub fn take_piece(&mut self, stop: &[String]) -> Option<(String, Vec<TokenLogprobs>)> {
        let limit = if self.is_finished() {
            self.text.push_str(&self.decoder.finish());
            self.text.len()
        } else {
            let hold = stop
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| {
                    (1..s.len())
                        .rev()
                        .find(|&k| s.is_char_boundary(k) && self.text.ends_with(&s[..k]))
                        .unwrap_or(0)
                })
                .max()
                .unwrap_or(0);
            self.text.len() - hold
        };
        let flush = self.is_finished() && !self.unsent_logprobs.is_empty();
        if limit <= self.sent && !flush {
            return None;
        }
        let piece = self.text[self.sent..limit.max(self.sent)].to_string();
        self.sent = limit.max(self.sent);
        Some((piece, std::mem::take(&mut self.unsent_logprobs)))
    }

    /// What the row produced.
    pub fn into_output(mut self) -> RowOutput {
        self.text.push_str(&self.decoder.finish());
        RowOutput {
            tokens: self.out,
            masks: self.masks,
            logprobs: self.logprobs,
            text: self.text,
            finish_reason: self.finish.unwrap_or(FinishReason::Length),
        }
    }
}
