//! GSM8K grade-school math (upstream `tasks/gsm8k.py`). The reference answers carry
//! `<<48/2=24>>` calculator annotations; they become tool calls in the assistant message
//! (a python part with the expression, a python-output part with the result), so training
//! teaches the model to call the calculator the engine provides. Graded by the `#### n` answer.

use std::path::Path;

use nanochat_core::{ContentPart, Conversation, Message, MessageContent, MessageRole};

use super::{Task, TaskError, extract_answer, jsonl, read_text};

/// GSM8K problems.
#[derive(Debug, Clone)]
pub struct Gsm8k {
    rows: Vec<(String, String)>,
}

/// Splits an annotated answer into text, tool-call and tool-output parts.
pub fn answer_parts(answer: &str) -> Vec<ContentPart> {
    let mut parts = Vec::new();
    let mut rest = answer;
    while let Some(start) = rest.find("<<") {
        let Some(len) = rest[start + 2..].find(">>") else {
            break;
        };
        let inner = &rest[start + 2..start + 2 + len];
        if inner.contains('>') {
            // Not an annotation (upstream's `[^>]+`): keep as text.
            parts.push(ContentPart::Text {
                text: rest[..start + 2].to_string(),
            });
            rest = &rest[start + 2..];
            continue;
        }
        if start > 0 {
            parts.push(ContentPart::Text {
                text: rest[..start].to_string(),
            });
        }
        let (expr, result) = inner.rsplit_once('=').unwrap_or((inner, ""));
        parts.push(ContentPart::Python {
            text: expr.to_string(),
        });
        parts.push(ContentPart::PythonOutput {
            text: result.to_string(),
        });
        rest = &rest[start + 2 + len + 2..];
    }
    if !rest.is_empty() {
        parts.push(ContentPart::Text {
            text: rest.to_string(),
        });
    }
    // Merge adjacent text parts produced by the non-annotation path.
    let mut merged: Vec<ContentPart> = Vec::new();
    for p in parts {
        if let (Some(ContentPart::Text { text: a }), ContentPart::Text { text: b }) =
            (merged.last_mut(), &p)
        {
            a.push_str(b);
            continue;
        }
        merged.push(p);
    }
    merged
}

impl Gsm8k {
    /// Reads `{"question", "answer"}` JSONL.
    pub fn load(path: &Path) -> Result<Self, TaskError> {
        #[derive(serde::Deserialize)]
        struct Row {
            question: String,
            answer: String,
        }
        let text = read_text(path)?;
        let mut rows = Vec::new();
        for row in jsonl::<Row>(path, &text) {
            let (i, r) = row?;
            if extract_answer(&r.answer).is_none() {
                return Err(TaskError::parse(path, i + 1, "answer has no `#### n` line"));
            }
            rows.push((r.question, r.answer));
        }
        Ok(Self { rows })
    }

    /// The reference answer (`#### n`) of problem `index`.
    pub fn reference(&self, index: usize) -> String {
        extract_answer(&self.rows[index].1).unwrap_or_default()
    }
}

impl Task for Gsm8k {
    fn name(&self) -> &str {
        "GSM8K"
    }
    fn len(&self) -> usize {
        self.rows.len()
    }
    fn get(&self, index: usize) -> Conversation {
        let (q, a) = &self.rows[index];
        Conversation {
            messages: vec![
                Message::new(MessageRole::User, q.as_str()),
                Message::new(
                    MessageRole::Assistant,
                    MessageContent::Parts(answer_parts(a)),
                ),
            ],
        }
    }
    fn evaluate(&self, index: usize, response: &str) -> bool {
        extract_answer(response).is_some_and(|p| p == self.reference(index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_become_tool_calls() {
        let parts = answer_parts("She has 48/2 = <<48/2=24>>24 left.\n#### 24");
        assert_eq!(
            parts,
            vec![
                ContentPart::Text {
                    text: "She has 48/2 = ".into()
                },
                ContentPart::Python {
                    text: "48/2".into()
                },
                ContentPart::PythonOutput { text: "24".into() },
                ContentPart::Text {
                    text: "24 left.\n#### 24".into()
                },
            ]
        );
        let plain: String = parts.iter().map(ContentPart::text).collect();
        assert!(plain.ends_with("#### 24"));
    }
}
