//! Multiple-choice tasks graded categorically (upstream `tasks/arc.py`, `tasks/mmlu.py` and
//! `common.render_mc`): ARC-Easy/Challenge from the CORE bundle's test files, MMLU from its
//! CSVs, and `sft/mc_extra` (the offline stand-in for MMLU's auxiliary_train).

use std::path::Path;

use nanochat_core::{Conversation, Message, MessageRole};

use super::{EvalKind, Task, TaskError, jsonl, read_text};

const LETTERS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// Upstream's multiple-choice prompt: the letter comes after each choice, with no space, so
/// that the answer letter is a single token the model has seen in the same position.
pub fn render_mc(question: &str, letters: &[String], choices: &[String]) -> String {
    let mut q = format!("Multiple Choice question: {question}\n");
    for (letter, choice) in letters.iter().zip(choices) {
        q.push_str(&format!("- {choice}={letter}\n"));
    }
    q.push_str("\nRespond only with the letter of the correct answer.");
    q
}

#[derive(Debug, Clone)]
struct Item {
    question: String,
    choices: Vec<String>,
    answer: usize,
    /// The question already lists its options as letters (some mc_extra sets).
    inline_letters: bool,
}

/// A multiple-choice dataset.
#[derive(Debug, Clone)]
pub struct MultipleChoice {
    name: String,
    items: Vec<Item>,
}

fn letters(n: usize) -> Vec<String> {
    LETTERS[..n]
        .iter()
        .map(|&c| (c as char).to_string())
        .collect()
}

impl MultipleChoice {
    /// Reads a CORE-bundle style JSONL (`{"query", "choices", "gold"}`), as ARC's test split
    /// and `mc_extra` are stored. `Question: ` prefixes and `Answer:` suffixes are removed.
    pub fn from_bundle_jsonl(name: &str, path: &Path) -> Result<Self, TaskError> {
        let mut items = Vec::new();
        Self::read_bundle_jsonl(path, &mut items)?;
        if items.is_empty() {
            return Err(TaskError::Missing {
                path: path.to_path_buf(),
                reason: "no questions".into(),
            });
        }
        Ok(Self {
            name: name.to_string(),
            items,
        })
    }

    fn read_bundle_jsonl(path: &Path, items: &mut Vec<Item>) -> Result<(), TaskError> {
        #[derive(serde::Deserialize)]
        struct Row {
            query: String,
            choices: Vec<String>,
            gold: usize,
        }
        let text = read_text(path)?;
        for row in jsonl::<Row>(path, &text) {
            let (i, row) = row?;
            if row.choices.len() < 2 || row.choices.len() > LETTERS.len() {
                return Err(TaskError::parse(
                    path,
                    i + 1,
                    format!("expected 2..=26 choices, got {}", row.choices.len()),
                ));
            }
            if row.gold >= row.choices.len() {
                return Err(TaskError::parse(
                    path,
                    i + 1,
                    format!(
                        "gold {} is not below the {} choices",
                        row.gold,
                        row.choices.len()
                    ),
                ));
            }
            let q = row.query.trim();
            let q = q.strip_prefix("Question:").unwrap_or(q).trim();
            let q = q.strip_suffix("Answer:").unwrap_or(q).trim_end();
            let inline = row
                .choices
                .iter()
                .zip(letters(row.choices.len()))
                .all(|(c, l)| c.trim() == l);
            items.push(Item {
                question: q.to_string(),
                choices: row.choices,
                answer: row.gold,
                inline_letters: inline,
            });
        }
        Ok(())
    }

    /// MMLU from `<subject>_<split>.csv` files (headerless `question,A,B,C,D,answer`) in the
    /// given split folders under `root` (e.g. `test`, or `dev` + `val` for training).
    pub fn mmlu(root: &Path, splits: &[&str]) -> Result<Self, TaskError> {
        let mut items = Vec::new();
        for split in splits {
            let dir = root.join(split);
            let mut files: Vec<_> = std::fs::read_dir(&dir)
                .map_err(|e| nanochat_core::fs::IoError::new("list", &dir, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "csv"))
                .collect();
            files.sort();
            for path in files {
                let text = read_text(&path)?;
                let mut rdr = csv::ReaderBuilder::new()
                    .has_headers(false)
                    .from_reader(text.as_bytes());
                for (i, rec) in rdr.records().enumerate() {
                    let rec = rec.map_err(|e| TaskError::parse(&path, i + 1, e.to_string()))?;
                    if rec.len() != 6 {
                        return Err(TaskError::parse(
                            &path,
                            i + 1,
                            format!(
                                "expected 6 fields (question,A,B,C,D,answer), got {}",
                                rec.len()
                            ),
                        ));
                    }
                    let answer = match &rec[5] {
                        "A" => 0,
                        "B" => 1,
                        "C" => 2,
                        "D" => 3,
                        other => {
                            return Err(TaskError::parse(
                                &path,
                                i + 1,
                                format!("answer must be A, B, C or D, got `{other}`"),
                            ));
                        }
                    };
                    items.push(Item {
                        question: rec[0].to_string(),
                        choices: (1..5).map(|k| rec[k].to_string()).collect(),
                        answer,
                        inline_letters: false,
                    });
                }
            }
        }
        if items.is_empty() {
            return Err(TaskError::Missing {
                path: root.to_path_buf(),
                reason: format!("no MMLU rows in {splits:?}"),
            });
        }
        Ok(Self {
            name: "MMLU".into(),
            items,
        })
    }

    /// Every `*.jsonl` under `root` (recursively, sorted), bundle format.
    pub fn mc_extra(root: &Path) -> Result<Self, TaskError> {
        let mut files = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let rd = std::fs::read_dir(&dir)
                .map_err(|e| nanochat_core::fs::IoError::new("list", &dir, e))?;
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "jsonl") {
                    files.push(p);
                }
            }
        }
        files.sort();
        let mut items = Vec::new();
        for f in &files {
            Self::read_bundle_jsonl(f, &mut items)?;
        }
        if items.is_empty() {
            return Err(TaskError::Missing {
                path: root.to_path_buf(),
                reason: "no *.jsonl questions".into(),
            });
        }
        Ok(Self {
            name: "MCExtra".into(),
            items,
        })
    }

    fn prompt(&self, item: &Item) -> String {
        let l = letters(item.choices.len());
        if item.inline_letters {
            format!(
                "{}\n\nRespond only with the letter of the correct answer.",
                item.question
            )
        } else {
            render_mc(&item.question, &l, &item.choices)
        }
    }
}

impl Task for MultipleChoice {
    fn name(&self) -> &str {
        &self.name
    }
    fn len(&self) -> usize {
        self.items.len()
    }
    fn get(&self, index: usize) -> Conversation {
        let item = &self.items[index];
        let answer = letters(item.choices.len())[item.answer].clone();
        Conversation {
            messages: vec![
                Message::new(MessageRole::User, self.prompt(item)),
                Message::new(MessageRole::Assistant, answer),
            ],
        }
    }
    fn eval_kind(&self) -> EvalKind {
        EvalKind::Categorical
    }
    fn letters(&self, index: usize) -> Option<Vec<String>> {
        Some(letters(self.items[index].choices.len()))
    }
    fn evaluate(&self, index: usize, response: &str) -> bool {
        let item = &self.items[index];
        response.trim() == letters(item.choices.len())[item.answer]
    }
    fn baseline(&self) -> f64 {
        // Upstream centers ARC and MMLU on 0.25 (four choices).
        0.25
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_matches_upstream_layout() {
        let l = letters(2);
        let p = render_mc("Is water wet?", &l, &["yes".into(), "no".into()]);
        assert_eq!(
            p,
            "Multiple Choice question: Is water wet?\n- yes=A\n- no=B\n\nRespond only with the letter of the correct answer."
        );
    }

    #[test]
    fn bad_rows_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.jsonl");
        std::fs::write(
            &p,
            "{\"query\":\"Question: q\\nAnswer:\",\"choices\":[\"a\",\"b\"],\"gold\":1}\n{\"query\":\"q\",\"choices\":[\"a\"],\"gold\":0}\n",
        )
        .unwrap();
        let e = MultipleChoice::from_bundle_jsonl("t", &p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.jsonl:2") && e.contains("choices"), "{e}");
        std::fs::write(
            &p,
            "{\"query\":\"Question: q\\nAnswer:\",\"choices\":[\"a\",\"b\"],\"gold\":1}\n",
        )
        .unwrap();
        let t = MultipleChoice::from_bundle_jsonl("t", &p).unwrap();
        let c = t.get(0);
        assert!(
            c.messages[0]
                .content
                .to_plain_text()
                .starts_with("Multiple Choice question: q\n")
        );
        assert!(t.evaluate(0, "B") && !t.evaluate(0, "A"));
    }
}
