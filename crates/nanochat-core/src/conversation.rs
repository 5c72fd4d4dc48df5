//! Messages and conversations (upstream's `{"messages": [{"role", "content"}]}` format, with
//! tool-call parts as `tasks/gsm8k.py` renders them). Live chat sessions are in
//! [`crate::session`].
//!
//! A message's content is either a string or a list of parts `{"type": "text" | "python" |
//! "python_output", "text": …}`, exactly as upstream's `render_conversation` accepts them.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::validation::{Rule, VResult, Validate, ValidationError, check_not_blank};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String", into = "String")]
pub enum MessageRole {
    /// Instructions merged into the first user message when rendered.
    System,
    /// The person.
    User,
    /// The model.
    Assistant,
}

impl MessageRole {
    /// The allowed role names.
    pub const NAMES: [&'static str; 3] = ["user", "assistant", "system"];

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageRole::System => "system",
            MessageRole::User => "user",
            MessageRole::Assistant => "assistant",
        }
    }
}

impl fmt::Display for MessageRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MessageRole {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "system" => Ok(MessageRole::System),
            "user" => Ok(MessageRole::User),
            "assistant" => Ok(MessageRole::Assistant),
            other => Err(ValidationError::new(
                "Message",
                "role",
                format!("{other:?}"),
                Rule::OneOf {
                    allowed: &Self::NAMES,
                },
            )),
        }
    }
}

impl TryFrom<String> for MessageRole {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<MessageRole> for String {
    fn from(r: MessageRole) -> String {
        r.as_str().to_string()
    }
}

/// One part of a structured assistant message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ContentPart {
    /// Plain text (trained on).
    Text {
        /// The text.
        text: String,
    },
    /// A calculator/python expression the model writes (trained on).
    Python {
        /// The expression.
        text: String,
    },
    /// The tool's output, inserted by the engine (not trained on).
    PythonOutput {
        /// The output.
        text: String,
    },
}

impl ContentPart {
    /// The part's text.
    pub fn text(&self) -> &str {
        match self {
            ContentPart::Text { text }
            | ContentPart::Python { text }
            | ContentPart::PythonOutput { text } => text,
        }
    }
}

/// A message's content: a string, or a list of parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Structured parts (tool use).
    Parts(Vec<ContentPart>),
}

impl MessageContent {
    /// All text concatenated (parts joined without separators).
    pub fn to_plain_text(&self) -> String {
        match self {
            MessageContent::Text(t) => t.clone(),
            MessageContent::Parts(p) => p.iter().map(ContentPart::text).collect(),
        }
    }
}

impl From<&str> for MessageContent {
    fn from(s: &str) -> Self {
        MessageContent::Text(s.to_string())
    }
}

impl From<String> for MessageContent {
    fn from(s: String) -> Self {
        MessageContent::Text(s)
    }
}

/// A chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who wrote it.
    pub role: MessageRole,
    /// What it says.
    pub content: MessageContent,
    /// When it was written (absent in datasets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<DateTime<Utc>>,
    /// Its length in tokens, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_count: Option<usize>,
}

impl Message {
    /// A message with no timestamp or token count.
    pub fn new(role: MessageRole, content: impl Into<MessageContent>) -> Self {
        Self {
            role,
            content: content.into(),
            timestamp: None,
            token_count: None,
        }
    }

    /// The same message stamped with `t`.
    pub fn at(mut self, t: DateTime<Utc>) -> Self {
        self.timestamp = Some(t);
        self
    }

    /// Checks `token_count` against a tokenizer: `count` returns the number of tokens the
    /// tokenizer gives this content. Passes when no count is recorded.
    pub fn check_token_count(&self, count: impl FnOnce(&MessageContent) -> usize) -> VResult {
        if let Some(recorded) = self.token_count {
            let actual = count(&self.content);
            if recorded != actual {
                return Err(ValidationError::new(
                    "Message",
                    "token_count",
                    recorded,
                    Rule::Equals {
                        what: "the tokenization of content".into(),
                        expected: actual.to_string(),
                    },
                ));
            }
        }
        Ok(())
    }
}

impl Validate for Message {
    fn validate(&self) -> VResult {
        match &self.content {
            MessageContent::Text(t) => check_not_blank("Message", "content", t),
            MessageContent::Parts(parts) => {
                if parts.is_empty() {
                    return Err(ValidationError::new(
                        "Message",
                        "content",
                        "[]",
                        Rule::NotEmpty,
                    ));
                }
                for (i, p) in parts.iter().enumerate() {
                    // A tool may legitimately print nothing; what the model writes may not be empty.
                    if !matches!(p, ContentPart::PythonOutput { .. }) {
                        check_not_blank("Message", &format!("content[{i}].text"), p.text())?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// Checks a list of messages: each valid, timestamps non-decreasing, and the role order
/// upstream renders (an optional leading system message, then user and assistant alternating,
/// starting with user).
pub fn validate_messages(entity: &'static str, messages: &[Message]) -> VResult {
    let mut last_time: Option<DateTime<Utc>> = None;
    let start = usize::from(
        messages
            .first()
            .is_some_and(|m| m.role == MessageRole::System),
    );
    for (i, m) in messages.iter().enumerate() {
        m.validate().map_err(|e| ValidationError {
            entity,
            ..e.within(&format!("messages[{i}]"))
        })?;
        if let Some(t) = m.timestamp {
            if let Some(prev) = last_time
                && t < prev
            {
                return Err(ValidationError::new(
                    entity,
                    format!("messages[{i}].timestamp"),
                    t.to_rfc3339(),
                    Rule::Chronological {
                        previous: prev.to_rfc3339(),
                    },
                ));
            }
            last_time = Some(t);
        }
        if i >= start {
            let expected = if (i - start) % 2 == 0 {
                MessageRole::User
            } else {
                MessageRole::Assistant
            };
            if m.role != expected {
                return Err(ValidationError::new(
                    entity,
                    format!("messages[{i}].role"),
                    m.role,
                    Rule::Order {
                        expected: "optional system first, then user and assistant alternating, starting with user",
                    },
                ));
            }
        }
    }
    Ok(())
}

/// A conversation as datasets store it (`{"messages": [...]}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    /// The messages in order.
    pub messages: Vec<Message>,
}

impl Validate for Conversation {
    fn validate(&self) -> VResult {
        if self.messages.is_empty() {
            return Err(ValidationError::new(
                "Conversation",
                "messages",
                "[]",
                Rule::NotEmpty,
            ));
        }
        validate_messages("Conversation", &self.messages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_conversation_json_parses() {
        let json = r#"{"messages": [
            {"role": "user", "content": "What is 2+3?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Let me compute. "},
                {"type": "python", "text": "2+3"},
                {"type": "python_output", "text": "5"},
                {"type": "text", "text": " so 5"}]}]}"#;
        let c: Conversation = serde_json::from_str(json).unwrap();
        c.validate().unwrap();
        assert_eq!(
            c.messages[1].content.to_plain_text(),
            "Let me compute. 2+35 so 5"
        );
    }

    #[test]
    fn bad_role_names_the_rule() {
        let err =
            serde_json::from_str::<Message>(r#"{"role": "bot", "content": "x"}"#).unwrap_err();
        assert!(
            err.to_string()
                .contains("must be one of: user, assistant, system"),
            "{err}"
        );
    }
}
