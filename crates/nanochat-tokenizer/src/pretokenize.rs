//! Splitting text into chunks before BPE (upstream's `SPLIT_PATTERN`, applied with
//! fancy-regex by rustbpe and tiktoken).
//!
//! For upstream's pattern (and GPT-4's, which differs only in `\p{N}{1,3}`) this module has a
//! hand-written scanner that produces exactly the chunks fancy-regex's leftmost-first
//! backtracking gives, an order of magnitude faster. Its character classes (`\p{L}`, `\p{N}`,
//! `\s`) come from `regex-syntax`, the same Unicode tables the regex engines use. The
//! equivalence is property-tested against fancy-regex on arbitrary strings. Any other pattern
//! goes through fancy-regex itself.
//!
//! The pattern, alternative by alternative, and how the scanner decides each:
//!
//! 1. `'(?i:[sdmt]|ll|ve|re)`: an apostrophe and a contraction (case-insensitive, so `'ſ`
//!    counts: U+017F folds to `s`);
//! 2. `[^\r\n\p{L}\p{N}]?+\p{L}+`: a letter run, optionally led by one character that is
//!    neither a newline, a letter nor a number;
//! 3. `\p{N}{1,D}`: up to D numbers (D = 2 for nanochat, 3 for GPT-4);
//! 4. ` ?[^\s\p{L}\p{N}]++[\r\n]*`: punctuation/symbols, optionally led by a space, then
//!    newlines;
//! 5. `\s*[\r\n]`: whitespace up to and including its last newline;
//! 6. `\s+(?!\S)`: whitespace not followed by a non-space — the run minus its last character
//!    when a non-space follows;
//! 7. `\s+`: any remaining whitespace run.

use std::sync::OnceLock;

use fancy_regex::Regex;
use nanochat_core::tokenizer_config::SPLIT_PATTERN;
use regex_syntax::hir::{Class, HirKind};

use crate::error::TokenizerError;

/// GPT-4's (cl100k) split pattern: upstream's with `\p{N}{1,3}`.
pub const GPT4_PATTERN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+";

/// Character classes the pattern distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Cls {
    Other = 0,
    Letter = 1,
    Number = 2,
    Space = 3,
}

struct Tables {
    bmp: Vec<u8>,
    astral: [Vec<(u32, u32)>; 3],
}

fn ranges_of(pattern: &str) -> Vec<(u32, u32)> {
    let hir = regex_syntax::Parser::new()
        .parse(pattern)
        .expect("a valid Unicode class");
    match hir.kind() {
        HirKind::Class(Class::Unicode(cls)) => cls
            .ranges()
            .iter()
            .map(|r| (r.start() as u32, r.end() as u32))
            .collect(),
        other => panic!("{pattern} is not a Unicode class: {other:?}"),
    }
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut bmp = vec![Cls::Other as u8; 0x10000];
        let mut astral: [Vec<(u32, u32)>; 3] = Default::default();
        for (i, (pattern, cls)) in [
            (r"\p{L}", Cls::Letter),
            (r"\p{N}", Cls::Number),
            (r"\s", Cls::Space),
        ]
        .into_iter()
        .enumerate()
        {
            for (lo, hi) in ranges_of(pattern) {
                for c in lo..=hi.min(0xFFFF) {
                    bmp[c as usize] = cls as u8;
                }
                if hi > 0xFFFF {
                    astral[i].push((lo.max(0x10000), hi));
                }
            }
        }
        Tables { bmp, astral }
    })
}

#[inline]
fn class_of(t: &Tables, c: char) -> Cls {
    let u = c as u32;
    if u < 0x10000 {
        return match t.bmp[u as usize] {
            1 => Cls::Letter,
            2 => Cls::Number,
            3 => Cls::Space,
            _ => Cls::Other,
        };
    }
    for (i, cls) in [Cls::Letter, Cls::Number, Cls::Space]
        .into_iter()
        .enumerate()
    {
        let ranges = &t.astral[i];
        let idx = ranges.partition_point(|&(_, hi)| hi < u);
        if idx < ranges.len() && ranges[idx].0 <= u {
            return cls;
        }
    }
    Cls::Other
}

/// Splits text into pre-tokenization chunks.
#[derive(Debug, Clone)]
pub enum Splitter {
    /// The hand-written scanner for upstream's (`max_digits` 2) or GPT-4's (3) pattern.
    Fast {
        /// Longest run of numbers in one chunk.
        max_digits: usize,
    },
    /// Any other pattern, through fancy-regex.
    Regex(Box<Regex>),
}

impl Splitter {
    /// The splitter for `pattern`: the fast scanner when it is upstream's or GPT-4's pattern,
    /// fancy-regex otherwise.
    pub fn new(pattern: &str) -> Result<Self, TokenizerError> {
        if pattern == SPLIT_PATTERN {
            return Ok(Splitter::Fast { max_digits: 2 });
        }
        if pattern == GPT4_PATTERN {
            return Ok(Splitter::Fast { max_digits: 3 });
        }
        Self::regex(pattern)
    }

    /// Always fancy-regex (the reference the fast scanner is tested against).
    pub fn regex(pattern: &str) -> Result<Self, TokenizerError> {
        let re = Regex::new(pattern).map_err(|e| TokenizerError::BadPattern {
            pattern: pattern.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Splitter::Regex(Box::new(re)))
    }

    /// Calls `f` with every chunk of `text`, in order. The chunks concatenate to `text`.
    /// Only a custom pattern can fail (fancy-regex's backtracking limit on pathological input).
    pub fn for_each<'a>(
        &self,
        text: &'a str,
        mut f: impl FnMut(&'a str),
    ) -> Result<(), TokenizerError> {
        match self {
            Splitter::Fast { max_digits } => {
                let t = tables();
                let mut i = 0;
                while i < text.len() {
                    let end = chunk_end(t, text, i, *max_digits);
                    f(&text[i..end]);
                    i = end;
                }
            }
            Splitter::Regex(re) => {
                for m in re.find_iter(text) {
                    let m = m.map_err(|e| TokenizerError::BadPattern {
                        pattern: re.as_str().to_string(),
                        reason: format!("matching failed: {e}"),
                    })?;
                    f(m.as_str());
                }
            }
        }
        Ok(())
    }

    /// The chunks of `text` as a vector.
    pub fn split<'a>(&self, text: &'a str) -> Result<Vec<&'a str>, TokenizerError> {
        let mut out = Vec::new();
        self.for_each(text, |c| out.push(c))?;
        Ok(out)
    }
}

#[inline]
fn char_at(s: &str, i: usize) -> Option<(char, usize)> {
    s[i..].chars().next().map(|c| (c, c.len_utf8()))
}

/// End (byte offset) of the chunk that starts at byte `i`.
fn chunk_end(t: &Tables, s: &str, i: usize, max_digits: usize) -> usize {
    let (c, len) = char_at(s, i).expect("i is a char boundary inside s");
    let j = i + len;
    let next = char_at_opt(s, j);
    // 1. Contractions.
    if c == '\''
        && let Some((c2, l2)) = next
    {
        if matches!(
            c2,
            's' | 'd' | 'm' | 't' | 'S' | 'D' | 'M' | 'T' | '\u{17F}'
        ) {
            return j + l2;
        }
        if let Some((c3, l3)) = char_at_opt(s, j + l2)
            && c2.is_ascii()
            && c3.is_ascii()
            && matches!(
                (c2.to_ascii_lowercase(), c3.to_ascii_lowercase()),
                ('l', 'l') | ('v', 'e') | ('r', 'e')
            )
        {
            return j + l2 + l3;
        }
    }
    let cls = class_of(t, c);
    let next_cls = next.map(|(n, _)| class_of(t, n));
    // 2. Letters, optionally led by one non-newline, non-letter, non-number character.
    if cls == Cls::Letter {
        return run_end(t, s, j, Cls::Letter);
    }
    if c != '\r' && c != '\n' && cls != Cls::Number && next_cls == Some(Cls::Letter) {
        return run_end(t, s, j + next.map_or(0, |n| n.1), Cls::Letter);
    }
    // 3. Numbers.
    if cls == Cls::Number {
        let mut end = j;
        let mut count = 1;
        while count < max_digits {
            match char_at_opt(s, end) {
                Some((n, l)) if class_of(t, n) == Cls::Number => {
                    end += l;
                    count += 1;
                }
                _ => break,
            }
        }
        return end;
    }
    // 4. Symbols, optionally led by a space, then newlines.
    if cls == Cls::Other {
        return newlines_end(s, run_end(t, s, j, Cls::Other));
    }
    if c == ' ' && next_cls == Some(Cls::Other) {
        return newlines_end(s, run_end(t, s, j + next.map_or(0, |n| n.1), Cls::Other));
    }
    // c is whitespace. 5. Up to the last newline of the whitespace run.
    let mut last_newline = None;
    let mut last_start = i;
    let mut k = i;
    while let Some((w, l)) = char_at_opt(s, k) {
        if class_of(t, w) != Cls::Space {
            break;
        }
        if w == '\r' || w == '\n' {
            last_newline = Some(k + l);
        }
        last_start = k;
        k += l;
    }
    if let Some(end) = last_newline {
        return end;
    }
    // 6. The run, minus its last character when a non-space follows; 7. else the run.
    if k < s.len() && last_start > i {
        return last_start;
    }
    k
}

#[inline]
fn char_at_opt(s: &str, i: usize) -> Option<(char, usize)> {
    if i < s.len() { char_at(s, i) } else { None }
}

/// End of the run of `cls` characters starting at `i`.
#[inline]
fn run_end(t: &Tables, s: &str, mut i: usize, cls: Cls) -> usize {
    while let Some((c, l)) = char_at_opt(s, i) {
        if class_of(t, c) != cls {
            break;
        }
        i += l;
    }
    i
}

/// End of the run of `\r` / `\n` starting at `i`.
#[inline]
fn newlines_end(s: &str, mut i: usize) -> usize {
    let b = s.as_bytes();
    while i < b.len() && (b[i] == b'\r' || b[i] == b'\n') {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(text: &str) {
        let fast = Splitter::new(SPLIT_PATTERN).unwrap();
        let slow = Splitter::regex(SPLIT_PATTERN).unwrap();
        assert_eq!(
            fast.split(text).unwrap(),
            slow.split(text).unwrap(),
            "{text:?}"
        );
    }

    #[test]
    fn edge_cases_match_fancy_regex() {
        for text in [
            "Hello world!",
            "hello    world\n\n\n  ",
            "It's a dog's life; they'll we've I'd 'ſ 'LL 'Ve 'rE 'llama",
            "1234567 + 89 = 1234656 ٣٤٥ ²³",
            "  \n  hello\t\tx\t5 \r\n\r\n(\"quoted\") ...\n\n",
            "   leading spaces",
            "trailing   ",
            "\u{a0}nbsp\u{2028}line\u{3000}ideographic",
            "emoji 🌍🎉 mixed 你好世界 and e\u{301}",
            "",
            "'",
            " '",
            "a'",
            "x\r\ny\n\rz",
        ] {
            both(text);
        }
    }
}
