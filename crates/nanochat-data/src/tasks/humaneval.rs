//! HumanEval (upstream `tasks/humaneval.py`): 164 Python functions. The model's reply is
//! reduced to its first fenced code block (or the whole reply), the prompt's imports are put
//! in front and the problem's tests after it, and the program runs in the sandbox
//! ([`crate::execution`]); it passes when the process exits cleanly.

use std::path::Path;

use nanochat_core::{Conversation, Message, MessageRole};

use super::{Task, TaskError, jsonl, read_gz};
use crate::execution::{Sandbox, SandboxLimits};

/// One problem.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Problem {
    /// `HumanEval/N`.
    pub task_id: String,
    /// Signature and docstring.
    pub prompt: String,
    /// The reference body.
    pub canonical_solution: String,
    /// The `check(candidate)` function.
    pub test: String,
    /// The function under test.
    pub entry_point: String,
}

/// The HumanEval problems with a sandbox to run them in.
pub struct HumanEval {
    problems: Vec<Problem>,
    sandbox: Sandbox,
}

/// The import lines of a prompt (upstream `extract_imports`).
pub fn extract_imports(prompt: &str) -> String {
    prompt
        .lines()
        .filter(|l| l.starts_with("import ") || l.starts_with("from "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first ```` ```python ```` (or bare ```` ``` ````) block of a reply, else the reply
/// (upstream `extract_program`).
pub fn extract_program(completion: &str) -> String {
    let mut search = completion;
    while let Some(start) = search.find("```") {
        let after = &search[start + 3..];
        let after = after.strip_prefix("python").unwrap_or(after);
        // `\s*\n`: optional spaces, then a newline.
        let trimmed = after.trim_start_matches([' ', '\t', '\r']);
        if let Some(body) = trimmed.strip_prefix('\n')
            && let Some(end) = body.find("\n```")
        {
            return body[..end].trim().to_string();
        }
        search = &search[start + 3..];
    }
    completion.trim().to_string()
}

impl HumanEval {
    /// Reads `HumanEval.jsonl.gz` and finds `python3` for the sandbox.
    pub fn load(path: &Path) -> Result<Self, TaskError> {
        let text = read_gz(path)?;
        let problems = jsonl::<Problem>(path, &text).map(|row| row.map(|(_, p)| p));
        let problems = problems.collect::<Result<Vec<_>, _>>()?;
        let sandbox = Sandbox::new(SandboxLimits::default()).map_err(|e| TaskError::Missing {
            path: path.to_path_buf(),
            reason: format!("HumanEval needs a sandbox: {e}"),
        })?;
        Ok(Self { problems, sandbox })
    }

    /// The problems.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// The program that checks `completion` against problem `index`.
    pub fn program(&self, index: usize, completion: &str) -> String {
        let p = &self.problems[index];
        format!(
            "{}\n\n{}\n\n{}\ncheck({})",
            extract_imports(&p.prompt),
            extract_program(completion),
            p.test,
            p.entry_point
        )
    }
}

impl Task for HumanEval {
    fn name(&self) -> &str {
        "HumanEval"
    }
    fn len(&self) -> usize {
        self.problems.len()
    }
    fn get(&self, index: usize) -> Conversation {
        let p = &self.problems[index];
        Conversation {
            messages: vec![
                Message::new(MessageRole::User, p.prompt.as_str()),
                Message::new(
                    MessageRole::Assistant,
                    format!("{}\n{}", p.prompt, p.canonical_solution),
                ),
            ],
        }
    }
    fn evaluate(&self, index: usize, response: &str) -> bool {
        self.sandbox.run(&self.program(index, response)).success
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_extraction() {
        assert_eq!(
            extract_program("Here:\n```python\ndef f():\n    return 1\n```\nbye"),
            "def f():\n    return 1"
        );
        assert_eq!(extract_program("```\nx = 1\n```"), "x = 1");
        assert_eq!(extract_program("  x = 2\n"), "x = 2");
        assert_eq!(
            extract_imports("from typing import List\nimport math\n\ndef f(): pass"),
            "from typing import List\nimport math"
        );
    }
}
