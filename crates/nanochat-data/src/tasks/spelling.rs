//! Spelling tasks built from a word list (upstream `tasks/spellingbee.py`): SpellingBee asks
//! how many times a letter occurs in a word and answers by spelling the word out, counting,
//! and checking with a calculator call `'word'.count('x')` before the final `#### n`;
//! SimpleSpelling asks to spell a word letter by letter. Examples are generated from the
//! index with CPython's random so that every index gives the same example on every run; the
//! test split uses a disjoint seed range.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use nanochat_core::{ContentPart, Conversation, Message, MessageContent, MessageRole};

use super::{Task, TaskError, TaskSplit, extract_answer};
use crate::py_random::PyRandom;

/// Seeds of test examples start here (upstream's offset), disjoint from training's.
const TEST_SEED_OFFSET: u64 = 10_000_000;

const TEMPLATES: &[&str] = &[
    "How many {letter} are in the word {word}",
    "How many {letter}s are in {word}",
    "Count the number of {letter} in {word}",
    "How many times does {letter} appear in {word}",
    "In the word {word}, how many {letter} are there",
    "What is the count of letter {letter} in {word}",
    "How often does the letter {letter} occur in {word}",
    "Tell me how many {letter} there are in {word}",
];

/// Reads the words of a zip archive holding one `*.txt` word list (one word per line).
pub fn load_words(path: &Path) -> Result<Arc<Vec<String>>, TaskError> {
    let file =
        std::fs::File::open(path).map_err(|e| nanochat_core::fs::IoError::new("open", path, e))?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| TaskError::parse(path, 0, format!("bad zip: {e}")))?;
    let mut text = String::new();
    let mut found = false;
    for i in 0..zip.len() {
        let mut f = zip
            .by_index(i)
            .map_err(|e| TaskError::parse(path, 0, format!("bad zip entry {i}: {e}")))?;
        if f.name().ends_with(".txt") {
            f.read_to_string(&mut text)
                .map_err(|e| TaskError::parse(path, 0, format!("reading {}: {e}", f.name())))?;
            found = true;
            break;
        }
    }
    if !found {
        return Err(TaskError::Missing {
            path: path.to_path_buf(),
            reason: "no .txt word list in the archive".into(),
        });
    }
    let words: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
        .map(str::to_string)
        .collect();
    if words.is_empty() {
        return Err(TaskError::Missing {
            path: path.to_path_buf(),
            reason: "the word list is empty".into(),
        });
    }
    Ok(Arc::new(words))
}

fn seed(split: TaskSplit, index: usize) -> u64 {
    match split {
        TaskSplit::Train => index as u64,
        TaskSplit::Test => TEST_SEED_OFFSET + index as u64,
    }
}

/// "How many r are in strawberry?"
pub struct SpellingBee {
    words: Arc<Vec<String>>,
    size: usize,
    split: TaskSplit,
}

struct Bee {
    user: String,
    word: String,
    letter: char,
    count: usize,
}

impl SpellingBee {
    /// `size` examples over the word list in `path` (a zip).
    pub fn load(path: &Path, size: usize, split: TaskSplit) -> Result<Self, TaskError> {
        Ok(Self::new(load_words(path)?, size, split))
    }

    /// `size` examples over `words`.
    pub fn new(words: Arc<Vec<String>>, size: usize, split: TaskSplit) -> Self {
        Self { words, size, split }
    }

    fn example(&self, index: usize) -> Bee {
        let mut rng = PyRandom::new(seed(self.split, index));
        let word = rng.choice(&self.words).clone();
        let chars: Vec<char> = word.chars().collect();
        let letter = if rng.random() < 0.9 {
            *rng.choice(&chars)
        } else {
            let alphabet: Vec<char> = ('a'..='z').collect();
            *rng.choice(&alphabet)
        };
        let count = chars.iter().filter(|&&c| c == letter).count();
        let mut template = rng.choice(TEMPLATES).to_string();
        if rng.random() < 0.3 {
            template = template.to_lowercase();
        }
        let quotes = ["", "'", "\""];
        let lq = *rng.choice(&quotes);
        let wq = *rng.choice(&quotes);
        let mut user = template
            .replace("{letter}", &format!("{lq}{letter}{lq}"))
            .replace("{word}", &format!("{wq}{word}{wq}"));
        if rng.random() < 0.5 {
            user.push('?');
        }
        Bee {
            user,
            word,
            letter,
            count,
        }
    }
}

impl Task for SpellingBee {
    fn name(&self) -> &str {
        "SpellingBee"
    }
    fn len(&self) -> usize {
        self.size
    }
    fn get(&self, index: usize) -> Conversation {
        let b = self.example(index);
        let spelled: Vec<String> = b.word.chars().map(String::from).collect();
        let mut manual = format!(
            "We are asked to count the letter '{}' in the word '{}'. Let me spell the word out first:\n{}:{}\n\nNow count the '{}':\n",
            b.letter,
            b.word,
            b.word,
            spelled.join(","),
            b.letter
        );
        let mut running = 0;
        for (i, c) in b.word.chars().enumerate() {
            if c == b.letter {
                running += 1;
                manual.push_str(&format!("{}:{c} hit! count={running}\n", i + 1));
            } else {
                manual.push_str(&format!("{}:{c}\n", i + 1));
            }
        }
        manual.push_str(&format!(
            "\nThat gives {running}.\n\nLet me double check with Python:\n\n"
        ));
        let parts = vec![
            ContentPart::Text { text: manual },
            ContentPart::Python {
                text: format!("'{}'.count('{}')", b.word, b.letter),
            },
            ContentPart::PythonOutput {
                text: b.count.to_string(),
            },
            ContentPart::Text {
                text: format!(
                    "\n\nPython gives {} as well.\n\nMy final answer is:\n\n#### {}",
                    b.count, b.count
                ),
            },
        ];
        Conversation {
            messages: vec![
                Message::new(MessageRole::User, b.user),
                Message::new(MessageRole::Assistant, MessageContent::Parts(parts)),
            ],
        }
    }
    fn evaluate(&self, index: usize, response: &str) -> bool {
        let b = self.example(index);
        extract_answer(response).is_some_and(|a| a == b.count.to_string())
    }
}

/// "Spell the word: apple" → "apple:a,p,p,l,e".
pub struct SimpleSpelling {
    words: Arc<Vec<String>>,
    size: usize,
    split: TaskSplit,
}

impl SimpleSpelling {
    /// `size` examples over the word list in `path` (a zip).
    pub fn load(path: &Path, size: usize, split: TaskSplit) -> Result<Self, TaskError> {
        Ok(Self::new(load_words(path)?, size, split))
    }

    /// `size` examples over `words`.
    pub fn new(words: Arc<Vec<String>>, size: usize, split: TaskSplit) -> Self {
        Self { words, size, split }
    }

    fn word(&self, index: usize) -> String {
        // A different stream from SpellingBee's for the same index.
        let mut rng = PyRandom::new(seed(self.split, index) ^ 0x5eed_5eed);
        rng.choice(&self.words).clone()
    }

    fn spelled(word: &str) -> String {
        let letters: Vec<String> = word.chars().map(String::from).collect();
        format!("{word}:{}", letters.join(","))
    }
}

impl Task for SimpleSpelling {
    fn name(&self) -> &str {
        "SimpleSpelling"
    }
    fn len(&self) -> usize {
        self.size
    }
    fn get(&self, index: usize) -> Conversation {
        let w = self.word(index);
        Conversation {
            messages: vec![
                Message::new(MessageRole::User, format!("Spell the word: {w}")),
                Message::new(MessageRole::Assistant, Self::spelled(&w)),
            ],
        }
    }
    fn evaluate(&self, index: usize, response: &str) -> bool {
        response.trim() == Self::spelled(&self.word(index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bee_answers_are_correct_and_deterministic() {
        let words = Arc::new(vec![
            "strawberry".to_string(),
            "banana".into(),
            "kiwi".into(),
        ]);
        let t = SpellingBee::new(words.clone(), 50, TaskSplit::Train);
        let test = SpellingBee::new(words, 50, TaskSplit::Test);
        let mut differs = false;
        for i in 0..50 {
            let c = t.get(i);
            assert_eq!(c, t.get(i));
            let reply = c.messages[1].content.to_plain_text();
            assert!(t.evaluate(i, &reply), "{reply}");
            let MessageContent::Parts(parts) = &c.messages[1].content else {
                panic!()
            };
            let ContentPart::Python { text } = &parts[1] else {
                panic!()
            };
            let ContentPart::PythonOutput { text: out } = &parts[2] else {
                panic!()
            };
            // The tool call is one the engine's calculator evaluates.
            let (w, l) = text
                .strip_prefix('\'')
                .and_then(|s| s.split_once("'.count('"))
                .unwrap();
            let l = l.trim_end_matches("')");
            assert_eq!(w.matches(l).count().to_string(), *out);
            differs |= c != test.get(i);
        }
        assert!(differs, "train and test must differ");
    }
}
