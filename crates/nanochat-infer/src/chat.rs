//! A chat conversation held as tokens (upstream `scripts/chat_cli.py`'s loop): `<|bos|>`, then
//! per turn `<|user_start|>…<|user_end|><|assistant_start|>`, the assistant's generated tokens,
//! and `<|assistant_end|>`. Text streams out as it is generated, whole characters only.

use nanochat_core::GenerationParams;
use nanochat_model::FusedOps;

use crate::engine::{Engine, EngineError, RowOutput};
use crate::sampling::TokenLogprobs;

/// One conversation with an engine.
pub struct Chat<'e, B: FusedOps> {
    engine: &'e Engine<B>,
    tokens: Vec<u32>,
}

impl<'e, B: FusedOps> Chat<'e, B> {
    /// A new conversation (just `<|bos|>`).
    pub fn new(engine: &'e Engine<B>) -> Self {
        Self {
            tokens: vec![engine.tokenizer().bos_token_id()],
            engine,
        }
    }

    /// The conversation so far, as tokens.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Forgets the conversation.
    pub fn clear(&mut self) {
        self.tokens.truncate(1);
    }

    /// The tokens left for a reply to `user` within the model's context.
    pub fn room_for(&self, user: &str) -> usize {
        let tok = self.engine.tokenizer();
        // The conversation, the user turn with its two markers, `<|assistant_start|>`.
        let prompt = self.tokens.len() + tok.encode(user).len() + 3;
        self.engine
            .model()
            .config()
            .sequence_len
            .saturating_sub(prompt)
    }

    /// Adds a user message, generates the assistant's reply (streaming its text pieces to
    /// `on_text`) and appends it to the conversation.
    pub fn send(
        &mut self,
        user: &str,
        params: &GenerationParams,
        mut on_text: impl FnMut(&str),
    ) -> Result<RowOutput, EngineError> {
        let tok = self.engine.tokenizer().clone();
        let mut prompt = self.tokens.clone();
        prompt.push(tok.encode_special("<|user_start|>")?);
        prompt.extend(tok.encode(user));
        prompt.push(tok.encode_special("<|user_end|>")?);
        prompt.push(tok.encode_special("<|assistant_start|>")?);
        let end = tok.encode_special("<|assistant_end|>")?;
        let row = stream_reply(self.engine, &prompt, params, |piece, _| {
            on_text(piece);
            true
        })?;
        self.tokens = prompt;
        self.tokens.extend(&row.tokens);
        self.tokens.push(end);
        Ok(row)
    }
}

/// Generates one reply to `prompt` (which ends with `<|assistant_start|>`), calling `on_text`
/// with each whole-character piece of text as it is produced, and the log-probabilities of
/// the tokens since the previous piece when `params.logprobs` asks for them (return `false`
/// to stop, e.g. when the client went away). The reply ends at `<|assistant_end|>`/`<|bos|>`,
/// a stop string or `max_tokens`.
pub fn stream_reply<B: FusedOps>(
    engine: &Engine<B>,
    prompt: &[u32],
    params: &GenerationParams,
    mut on_text: impl FnMut(&str, Vec<TokenLogprobs>) -> bool,
) -> Result<RowOutput, EngineError> {
    let single = GenerationParams {
        num_samples: 1,
        ..params.clone()
    };
    let mut rows = engine.generate(prompt, &single, |step| match step.pieces[0].clone() {
        Some((text, logprobs)) => on_text(&text, logprobs),
        None => true,
    })?;
    Ok(rows.remove(0))
}
