//! Rendering conversations into token ids and a training mask (upstream
//! `RustBPETokenizer.render_conversation` and `render_for_completion`).
//!
//! Layout: `<|bos|>`, then per user message `<|user_start|> text <|user_end|>`, per assistant
//! message `<|assistant_start|> … <|assistant_end|>`. The mask is 1 exactly on the tokens the
//! assistant is trained to produce: its text, its python tool calls with their delimiters, and
//! `<|assistant_end|>`; tool outputs (`<|output_start|> … <|output_end|>`) come from the tool
//! at inference time and are masked out, as is everything the user wrote.
//!
//! A leading system message is merged into the first user message (`system + "\n\n" + user`).
//! Roles must then alternate user, assistant, user …; anything else is an error naming the
//! message.

use nanochat_core::{ContentPart, Conversation, Message, MessageContent, MessageRole};

use crate::error::TokenizerError;
use crate::tokenizer::Tokenizer;

/// Upstream's default truncation length.
pub const DEFAULT_MAX_TOKENS: usize = 2048;

struct Specials {
    user_start: u32,
    user_end: u32,
    assistant_start: u32,
    assistant_end: u32,
    python_start: u32,
    python_end: u32,
    output_start: u32,
    output_end: u32,
}

impl Specials {
    fn of(t: &Tokenizer) -> Result<Self, TokenizerError> {
        Ok(Self {
            user_start: t.encode_special("<|user_start|>")?,
            user_end: t.encode_special("<|user_end|>")?,
            assistant_start: t.encode_special("<|assistant_start|>")?,
            assistant_end: t.encode_special("<|assistant_end|>")?,
            python_start: t.encode_special("<|python_start|>")?,
            python_end: t.encode_special("<|python_end|>")?,
            output_start: t.encode_special("<|output_start|>")?,
            output_end: t.encode_special("<|output_end|>")?,
        })
    }
}

fn err(index: usize, reason: impl Into<String>) -> TokenizerError {
    TokenizerError::Render {
        index,
        reason: reason.into(),
    }
}

/// Merges a leading system message into the first user message, as upstream does.
fn merge_system(messages: &[Message]) -> Result<Vec<Message>, TokenizerError> {
    let Some(first) = messages.first() else {
        return Err(err(0, "the conversation has no messages"));
    };
    if first.role != MessageRole::System {
        return Ok(messages.to_vec());
    }
    let Some(user) = messages.get(1).filter(|m| m.role == MessageRole::User) else {
        return Err(err(
            1,
            "a system message must be followed by a user message",
        ));
    };
    let (MessageContent::Text(sys), MessageContent::Text(text)) = (&first.content, &user.content)
    else {
        return Err(err(0, "system and first user message must be plain text"));
    };
    let mut merged = user.clone();
    merged.content = MessageContent::Text(format!("{sys}\n\n{text}"));
    let mut out = vec![merged];
    out.extend_from_slice(&messages[2..]);
    Ok(out)
}

impl Tokenizer {
    /// Renders a conversation into `(ids, mask)`, truncated to `max_tokens`.
    pub fn render_conversation(
        &self,
        conversation: &Conversation,
        max_tokens: usize,
    ) -> Result<(Vec<u32>, Vec<u8>), TokenizerError> {
        let messages = merge_system(&conversation.messages)?;
        let s = Specials::of(self)?;
        let mut ids = vec![self.bos_token_id()];
        let mut mask = vec![0u8];
        let mut add = |tokens: &[u32], m: u8| {
            ids.extend_from_slice(tokens);
            mask.extend(std::iter::repeat_n(m, tokens.len()));
        };
        for (i, message) in messages.iter().enumerate() {
            let expected = if i % 2 == 0 {
                MessageRole::User
            } else {
                MessageRole::Assistant
            };
            if message.role != expected {
                return Err(err(
                    i,
                    format!("is from {} but should be from {expected}", message.role),
                ));
            }
            match (&message.role, &message.content) {
                (MessageRole::User, MessageContent::Text(text)) => {
                    add(&[s.user_start], 0);
                    add(&self.encode(text), 0);
                    add(&[s.user_end], 0);
                }
                (MessageRole::User, MessageContent::Parts(_)) => {
                    return Err(err(i, "user messages must be plain text"));
                }
                (_, content) => {
                    add(&[s.assistant_start], 0);
                    match content {
                        MessageContent::Text(text) => add(&self.encode(text), 1),
                        MessageContent::Parts(parts) => {
                            for part in parts {
                                let tokens = self.encode(part.text());
                                match part {
                                    ContentPart::Text { .. } => add(&tokens, 1),
                                    ContentPart::Python { .. } => {
                                        add(&[s.python_start], 1);
                                        add(&tokens, 1);
                                        add(&[s.python_end], 1);
                                    }
                                    ContentPart::PythonOutput { .. } => {
                                        add(&[s.output_start], 0);
                                        add(&tokens, 0);
                                        add(&[s.output_end], 0);
                                    }
                                }
                            }
                        }
                    }
                    add(&[s.assistant_end], 1);
                }
            }
        }
        ids.truncate(max_tokens);
        mask.truncate(max_tokens);
        Ok((ids, mask))
    }

    /// Renders a conversation without its final assistant message and primes the assistant:
    /// the prompt for sampling a completion (RL, evaluation). Truncates like upstream at
    /// `max_tokens` before appending `<|assistant_start|>`.
    pub fn render_for_completion(
        &self,
        conversation: &Conversation,
        max_tokens: usize,
    ) -> Result<Vec<u32>, TokenizerError> {
        let last = conversation.messages.len().saturating_sub(1);
        if conversation.messages.last().map(|m| m.role) != Some(MessageRole::Assistant) {
            return Err(err(last, "the last message must be from the assistant"));
        }
        let prompt = Conversation {
            messages: conversation.messages[..last].to_vec(),
        };
        let (mut ids, _) = self.render_conversation(&prompt, max_tokens)?;
        ids.push(self.encode_special("<|assistant_start|>")?);
        Ok(ids)
    }
}
