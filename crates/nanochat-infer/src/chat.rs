//! A chat conversation held as tokens (upstream `scripts/chat_cli.py`'s loop): `<|bos|>`, then
//! per turn `<|user_start|>…<|user_end|><|assistant_start|>`, the assistant's generated tokens,
//! and `<|assistant_end|>`. Text streams out as it is generated, whole characters only.

use burn::tensor::backend::Backend;
use nanochat_core::GenerationParams;
use nanochat_tokenizer::StreamDecoder;

use crate::engine::{Engine, EngineError, RowOutput};

/// One conversation with an engine.
pub struct Chat<'e, B: Backend> {
    engine: &'e Engine<B>,
    tokens: Vec<u32>,
}

impl<'e, B: Backend> Chat<'e, B> {
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
        let bos = tok.bos_token_id();
        let single = GenerationParams {
            num_samples: 1,
            ..params.clone()
        };
        let mut decoder = StreamDecoder::new();
        let mut failed = None;
        let mut done = false;
        let out = self.engine.generate(&prompt, &single, |step| {
            let t = step.tokens[0];
            if done || t == end || t == bos {
                done = true;
                return false;
            }
            match decoder.push(&tok, t) {
                Ok(piece) if !piece.is_empty() => on_text(&piece),
                Ok(_) => {}
                Err(e) => failed = Some(e),
            }
            true
        })?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        let tail = decoder.finish();
        if !tail.is_empty() {
            on_text(&tail);
        }
        let row = out.into_iter().next().expect("one row");
        self.tokens = prompt;
        self.tokens.extend(&row.tokens);
        self.tokens.push(end);
        Ok(row)
    }
}
