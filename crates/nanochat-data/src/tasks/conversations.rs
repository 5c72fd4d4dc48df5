//! General conversation datasets for mid-training and SFT (upstream `tasks/customjson.py`,
//! `tasks/smoltalk.py`): a user's own JSONL file, the identity conversations, and the chosen
//! side of Anthropic HH-RLHF (the offline stand-in for SmolTalk). They teach the chat format;
//! they have no grader (`evaluate` is always false).
//!
//! # The JSONL conversation format
//!
//! One conversation per line: `{"messages": [{"role": "user", "content": "Hi"},
//! {"role": "assistant", "content": "Hello!"}]}`. Roles: an optional leading `system`, then
//! `user` and `assistant` alternating, starting with `user` and ending with `assistant`.
//! `content` is a string, or for assistant messages a list of parts
//! `{"type": "text"|"python"|"python_output", "text": …}` (tool use). Every line is checked
//! when the file is loaded; the first bad line is reported with its number and the rule it
//! breaks, before any training starts.

use std::path::Path;

use nanochat_core::{Conversation, Message, MessageRole, Validate};

use super::{Task, TaskError, jsonl, read_gz, read_text};

fn check(path: &Path, line: usize, c: &Conversation) -> Result<(), TaskError> {
    c.validate().map_err(|error| TaskError::Invalid {
        path: path.to_path_buf(),
        line,
        error: Box::new(error),
    })?;
    if c.messages.last().map(|m| m.role) != Some(MessageRole::Assistant) {
        return Err(TaskError::parse(
            path,
            line,
            "the last message must be from the assistant (there is nothing to learn otherwise)",
        ));
    }
    Ok(())
}

/// A named list of conversations without a grader: a user's JSONL file (upstream
/// `CustomJSON`), the identity conversations, or HH-RLHF.
#[derive(Debug, Clone)]
pub struct Conversations {
    name: String,
    conversations: Vec<Conversation>,
    skipped: usize,
}

impl Task for Conversations {
    fn name(&self) -> &str {
        &self.name
    }
    fn len(&self) -> usize {
        self.conversations.len()
    }
    fn get(&self, index: usize) -> Conversation {
        self.conversations[index].clone()
    }
    fn evaluate(&self, _: usize, _: &str) -> bool {
        false
    }
}

impl Conversations {
    /// A user's JSONL file (`.jsonl` or `.jsonl.gz`), every line read and validated; named
    /// after the file.
    pub fn jsonl(path: &Path) -> Result<Self, TaskError> {
        let text = if path.extension().is_some_and(|e| e == "gz") {
            read_gz(path)?
        } else {
            read_text(path)?
        };
        let mut conversations = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let c: Conversation = serde_json::from_str(line).map_err(|e| {
                TaskError::parse(
                    path,
                    i + 1,
                    format!("expected {{\"messages\": [{{\"role\", \"content\"}}, …]}}: {e}"),
                )
            })?;
            check(path, i + 1, &c)?;
            conversations.push(c);
        }
        if conversations.is_empty() {
            return Err(TaskError::Missing {
                path: path.to_path_buf(),
                reason: "no conversations".into(),
            });
        }
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "custom".into());
        Ok(Self {
            name,
            conversations,
            skipped: 0,
        })
    }

    /// Conversations that did not parse into a valid dialog and were left out (HH-RLHF).
    pub fn skipped(&self) -> usize {
        self.skipped
    }
}

/// Replaces FastChat's names with ours.
fn rename(text: &str) -> String {
    text.replace(
        "Large Model Systems Organization (LMSYS)",
        "the nanochat-rs project",
    )
    .replace(
        "Large Model Systems Organization",
        "the nanochat-rs project",
    )
    .replace("LMSYS", "nanochat-rs")
    .replace("Vicuna", "nanochat")
}

impl Conversations {
    /// `Identity`: FastChat's dummy identity conversations (a ShareGPT JSON array,
    /// `[{"conversations": [{"from", "value"}]}]`) with the assistant renamed to nanochat, so
    /// that the model knows what it is.
    pub fn identity(path: &Path) -> Result<Self, TaskError> {
        #[derive(serde::Deserialize)]
        struct Turn {
            from: String,
            value: String,
        }
        #[derive(serde::Deserialize)]
        struct Record {
            conversations: Vec<Turn>,
        }
        let text = read_text(path)?;
        let records: Vec<Record> = serde_json::from_str(&text)
            .map_err(|e| TaskError::parse(path, e.line(), format!("bad JSON: {e}")))?;
        let mut conversations = Vec::new();
        for (i, r) in records.into_iter().enumerate() {
            let mut messages = Vec::new();
            for t in r.conversations {
                let role = match t.from.as_str() {
                    "human" | "user" => MessageRole::User,
                    "gpt" | "assistant" => MessageRole::Assistant,
                    "system" => MessageRole::System,
                    other => {
                        return Err(TaskError::parse(
                            path,
                            i + 1,
                            format!("record {}: unknown speaker `{other}`", i + 1),
                        ));
                    }
                };
                messages.push(Message::new(role, rename(&t.value)));
            }
            let c = Conversation { messages };
            check(path, i + 1, &c)?;
            conversations.push(c);
        }
        Ok(Self {
            name: "Identity".into(),
            conversations,
            skipped: 0,
        })
    }
}

/// Parses one `\n\nHuman: … \n\nAssistant: …` transcript.
pub fn parse_transcript(text: &str) -> Option<Conversation> {
    let mut messages: Vec<Message> = Vec::new();
    let mut rest = text;
    loop {
        let h = rest.find("\n\nHuman: ");
        let a = rest.find("\n\nAssistant: ");
        let (pos, role, len) = match (h, a) {
            (Some(h), Some(a)) if h < a => (h, MessageRole::User, 9),
            (Some(h), None) => (h, MessageRole::User, 9),
            (_, Some(a)) => (a, MessageRole::Assistant, 13),
            (None, None) => break,
        };
        if let Some(last) = messages.last_mut() {
            last.content = rest[..pos].trim().to_string().into();
        }
        messages.push(Message::new(role, ""));
        rest = &rest[pos + len..];
    }
    let last = messages.last_mut()?;
    last.content = rest.trim().to_string().into();
    let c = Conversation { messages };
    (c.validate().is_ok() && c.messages.last().map(|m| m.role) == Some(MessageRole::Assistant))
        .then_some(c)
}

impl Conversations {
    /// `HHRLHF`: Anthropic HH-RLHF (harmless-base test, gzipped JSONL `{"chosen",
    /// "rejected"}`), the `chosen` dialogs split at `\n\nHuman: ` and `\n\nAssistant: `.
    /// Dialogs that do not alternate or end with the assistant are skipped (and counted).
    pub fn hh_rlhf(path: &Path) -> Result<Self, TaskError> {
        #[derive(serde::Deserialize)]
        struct Row {
            chosen: String,
        }
        let text = read_gz(path)?;
        let mut conversations = Vec::new();
        let mut skipped = 0;
        for row in jsonl::<Row>(path, &text) {
            let (_, r) = row?;
            match parse_transcript(&r.chosen) {
                Some(c) => conversations.push(c),
                None => skipped += 1,
            }
        }
        if skipped > 0 {
            tracing::debug!("{}: skipped {skipped} malformed dialogs", path.display());
        }
        Ok(Self {
            name: "HHRLHF".into(),
            conversations,
            skipped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcripts_split_into_turns() {
        let c = parse_transcript(
            "\n\nHuman: hi there\n\nAssistant: hello\n\nHuman: bye\n\nAssistant: ciao",
        )
        .unwrap();
        assert_eq!(c.messages.len(), 4);
        assert_eq!(c.messages[2].content.to_plain_text(), "bye");
        assert_eq!(c.messages[3].role, MessageRole::Assistant);
        assert!(parse_transcript("\n\nHuman: only a question").is_none());
    }

    #[test]
    fn bad_jsonl_line_names_file_line_and_rule() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mine.jsonl");
        let good =
            r#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]}"#;
        let cases = [
            (
                r#"{"messages":[{"role":"user","content":"hi"},{"role":"user","content":"yo"}]}"#,
                "messages[1].role",
            ),
            (
                r#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"  "}]}"#,
                "messages[1].content",
            ),
            (
                r#"{"messages":[{"role":"robot","content":"hi"}]}"#,
                "expected {\"messages\"",
            ),
            (
                r#"{"messages":[{"role":"user","content":"hi"}]}"#,
                "last message",
            ),
            ("not json", "expected {\"messages\""),
        ];
        for (bad, rule) in cases {
            std::fs::write(&p, format!("{good}\n{good}\n{bad}\n")).unwrap();
            let e = Conversations::jsonl(&p).unwrap_err().to_string();
            assert!(e.contains("mine.jsonl:3:"), "{e}");
            assert!(e.contains(rule), "{e} should mention {rule}");
        }
        std::fs::write(&p, format!("{good}\n\n{good}\n")).unwrap();
        assert_eq!(Conversations::jsonl(&p).unwrap().len(), 2);
    }
}
