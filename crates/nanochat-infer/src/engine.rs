//! The inference engine (upstream `nanochat/engine.py`, `Engine`): one batch-1 prefill of the
//! prompt, its KV cache replicated to `num_samples` rows, then token-by-token decoding where
//! every row runs upstream's state machine — forced tokens first, the calculator tool on
//! `<|python_end|>` (its result injected as `<|output_start|>…<|output_end|>`), completion on
//! `<|assistant_end|>` or `<|bos|>` — plus stop strings and `max_tokens`.
//!
//! [`Engine::generate`] streams: the callback sees each step's token column (and whether each
//! token was sampled or forced) and can stop early. [`Engine::generate_batch`] collects. Each
//! row is a [`Sequence`]; the server's continuous batching (`batcher`) steps the same
//! sequences for many requests at once.

use nanochat_model::FusedOps;
use std::sync::Arc;

use burn::tensor::{Int, Tensor, TensorData};
use nanochat_core::{GenerationParams, ValidationError};
use nanochat_model::Gpt;
use nanochat_tokenizer::{Tokenizer, TokenizerError};

use crate::calculator::use_calculator;
use crate::grammar::{GrammarError, Grammars};
use crate::sampling::TokenLogprobs;
use crate::sequence::Sequence;

/// Why generation could not run.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Bad sampling parameters (or a prompt too long for them).
    #[error(transparent)]
    Params(#[from] ValidationError),
    /// Tokenizer failure.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// Empty prompt.
    #[error("the prompt has no tokens")]
    EmptyPrompt,
    /// An unusable `response_format`, or its constraint failing.
    #[error(transparent)]
    Grammar(#[from] GrammarError),
}

/// Why a row stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// `<|assistant_end|>`, `<|bos|>` or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
}

/// One decoding step: the token chosen for every row, and 1 if it was sampled, 0 if forced.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Next token per row.
    pub tokens: Vec<u32>,
    /// 1 = sampled, 0 = forced (tool output).
    pub masks: Vec<u8>,
    /// Each row's token log-probabilities, when `GenerationParams::logprobs` asks for them.
    pub logprobs: Vec<Option<TokenLogprobs>>,
    /// Each row's text that became safe to show in this step (whole characters, never the
    /// start of a stop string), with the log-probabilities of its tokens.
    pub pieces: Vec<Option<(String, Vec<TokenLogprobs>)>>,
}

/// What one row produced.
#[derive(Debug, Clone, PartialEq)]
pub struct RowOutput {
    /// Generated tokens (the terminal token excluded).
    pub tokens: Vec<u32>,
    /// Their masks (1 sampled, 0 forced).
    pub masks: Vec<u8>,
    /// Decoded text of `tokens`.
    pub text: String,
    /// `tokens`' log-probabilities (empty unless `GenerationParams::logprobs` is set).
    pub logprobs: Vec<TokenLogprobs>,
    /// Why it stopped.
    pub finish_reason: FinishReason,
}

/// The special tokens the state machine reacts to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Specials {
    pub(crate) bos: u32,
    pub(crate) assistant_end: u32,
    pub(crate) python_start: u32,
    pub(crate) python_end: u32,
    output_start: u32,
    output_end: u32,
}

/// A model and its tokenizer, ready to generate.
pub struct Engine<B: FusedOps> {
    model: Gpt<B>,
    tokenizer: Arc<Tokenizer>,
    specials: Specials,
    grammars: Grammars,
}

/// Token ids as a `[rows, len / rows]` int tensor.
pub(crate) fn to_ids<B: FusedOps>(v: &[u32], rows: usize, device: &B::Device) -> Tensor<B, 2, Int> {
    let data: Vec<i64> = v.iter().map(|&x| x as i64).collect();
    let cols = data.len() / rows.max(1);
    Tensor::from_data(TensorData::new(data, [rows, cols]), device)
}

/// The last position's logits of every row, read back to the host.
pub(crate) fn last_logits<B: FusedOps>(logits: Tensor<B, 3>) -> Vec<Vec<f32>> {
    let [b, t, v] = logits.dims();
    let flat: Vec<f32> = logits
        .narrow(1, t - 1, 1)
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("float logits");
    (0..b).map(|i| flat[i * v..(i + 1) * v].to_vec()).collect()
}

impl<B: FusedOps> Engine<B> {
    /// An engine over `model` (inference backend) and `tokenizer`.
    pub fn new(model: Gpt<B>, tokenizer: Arc<Tokenizer>) -> Result<Self, EngineError> {
        let s = |n: &str| tokenizer.encode_special(n);
        let specials = Specials {
            bos: tokenizer.bos_token_id(),
            assistant_end: s("<|assistant_end|>")?,
            python_start: s("<|python_start|>")?,
            python_end: s("<|python_end|>")?,
            output_start: s("<|output_start|>")?,
            output_end: s("<|output_end|>")?,
        };
        Ok(Self {
            model,
            grammars: Grammars::new(tokenizer.clone()),
            tokenizer,
            specials,
        })
    }

    /// The model.
    pub fn model(&self) -> &Gpt<B> {
        &self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.tokenizer
    }

    /// The `response_format` compiler for this engine's tokenizer.
    pub fn grammars(&self) -> &Grammars {
        &self.grammars
    }

    pub(crate) fn specials(&self) -> Specials {
        self.specials
    }

    /// Checks `prompt` and `params` against the model and tokenizer.
    pub(crate) fn validate(
        &self,
        prompt: &[u32],
        params: &GenerationParams,
    ) -> Result<(), EngineError> {
        if prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        let remaining = self
            .model
            .config()
            .sequence_len
            .saturating_sub(prompt.len());
        params.validate_for(self.tokenizer.vocab_size(), remaining)?;
        if let Some(format) = &params.response_format {
            self.grammars.compile(format)?;
        }
        Ok(())
    }

    /// The tokens forced after `<|python_end|>` for the expression tokens between
    /// `<|python_start|>` and it: `<|output_start|>result<|output_end|>`, or nothing when the
    /// calculator refuses the expression.
    pub fn tool_response(&self, expr_tokens: &[u32]) -> Result<Vec<u32>, EngineError> {
        if expr_tokens.is_empty() {
            return Ok(Vec::new());
        }
        let expr = self.tokenizer.decode(expr_tokens)?;
        Ok(match use_calculator(&expr) {
            Some(result) => {
                let mut v = vec![self.specials.output_start];
                v.extend(self.tokenizer.encode(&result));
                v.push(self.specials.output_end);
                v
            }
            None => Vec::new(),
        })
    }

    /// Generates `params.num_samples` continuations of `prompt`, calling `on_step` after every
    /// step (return `false` to stop). Returns every row's output.
    pub fn generate(
        &self,
        prompt: &[u32],
        params: &GenerationParams,
        mut on_step: impl FnMut(&Step) -> bool,
    ) -> Result<Vec<RowOutput>, EngineError> {
        self.validate(prompt, params)?;
        let device = self.model.device();
        let n = params.num_samples.max(1);

        // Prefill once at batch 1, then replicate the cache to n rows.
        let mut prefill = self.model.new_kv_cache(1, prompt.len());
        let ids = to_ids::<B>(prompt, 1, &device);
        let model = &self.model;
        let first =
            B::run_ops(|| last_logits(model.forward_last(ids, Some(&mut prefill)))).remove(0);
        let mut cache = prefill.replicate(n, prompt.len() + params.max_tokens);
        drop(prefill);
        let mut logits: Vec<Vec<f32>> = vec![first; n];

        let seed = params.seed.unwrap_or(42);
        let mut rows: Vec<Sequence> = (0..n as u64)
            .map(|i| Sequence::new(self, prompt, params, seed.wrapping_add(i)))
            .collect::<Result<_, _>>()?;
        loop {
            let mut step = Step {
                tokens: Vec::with_capacity(n),
                masks: Vec::with_capacity(n),
                logprobs: Vec::with_capacity(n),
                pieces: Vec::with_capacity(n),
            };
            for (row, logits) in rows.iter_mut().zip(&logits) {
                let chosen = row.choose(logits, params)?;
                step.tokens.push(chosen.token);
                step.masks.push(chosen.mask);
                step.logprobs.push(chosen.logprobs.clone());
                row.accept(self, chosen, params)?;
                step.pieces.push(row.take_piece(&params.stop));
            }
            if !on_step(&step) || rows.iter().all(Sequence::is_finished) {
                break;
            }
            let ids = to_ids::<B>(&step.tokens, n, &device);
            logits = B::run_ops(|| last_logits(model.forward(ids, Some(&mut cache))));
        }
        Ok(rows.into_iter().map(Sequence::into_output).collect())
    }

    /// Non-streaming generation (upstream `generate_batch`): every row's tokens and masks.
    pub fn generate_batch(
        &self,
        prompt: &[u32],
        params: &GenerationParams,
    ) -> Result<Vec<RowOutput>, EngineError> {
        self.generate(prompt, params, |_| true)
    }
}
