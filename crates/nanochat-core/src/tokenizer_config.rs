//! The tokenizer's data: split pattern, special tokens, the byte-level vocabulary (tiktoken
//! "mergeable ranks") and its merges, with their consistency rules (upstream
//! `nanochat/tokenizer.py`). Training and encoding live in `nanochat-tokenizer`; this module
//! only holds and checks the data.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::validation::{
    Rule, VResult, Validate, ValidationError, check_not_blank, check_positive,
};

/// Upstream's split pattern (GPT-4 style, numbers split into runs of 1–2 digits).
pub const SPLIT_PATTERN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+";

/// The nine special tokens, in upstream's order; they take the last ids of the vocabulary.
pub const SPECIAL_TOKENS: [&str; 9] = [
    "<|bos|>",
    "<|user_start|>",
    "<|user_end|>",
    "<|assistant_start|>",
    "<|assistant_end|>",
    "<|python_start|>",
    "<|python_end|>",
    "<|output_start|>",
    "<|output_end|>",
];

/// Special-token names mapped to ids. A name whose id is `None` is declared but unassigned,
/// which [`Validate`] rejects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct SpecialTokens {
    /// Name → id.
    pub ids: BTreeMap<String, Option<u32>>,
}

impl SpecialTokens {
    /// Upstream's nine specials with consecutive ids starting at `first_id`.
    pub fn upstream(first_id: u32) -> Self {
        let ids = SPECIAL_TOKENS
            .iter()
            .enumerate()
            .map(|(i, name)| (name.to_string(), Some(first_id + i as u32)))
            .collect();
        Self { ids }
    }

    /// The id of a special token, if it has one.
    pub fn id(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied().flatten()
    }

    /// Number of special tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Pairs with ids (unassigned ones are skipped).
    pub fn assigned(&self) -> impl Iterator<Item = (&str, u32)> {
        self.ids
            .iter()
            .filter_map(|(k, v)| v.map(|id| (k.as_str(), id)))
    }
}

impl Validate for SpecialTokens {
    fn validate(&self) -> VResult {
        for name in SPECIAL_TOKENS {
            if !self.ids.contains_key(name) {
                return Err(ValidationError::new(
                    "SpecialTokens",
                    name,
                    "missing",
                    Rule::OneOf {
                        allowed: &SPECIAL_TOKENS,
                    },
                ));
            }
        }
        let mut seen: HashMap<u32, &str> = HashMap::new();
        for (name, id) in &self.ids {
            let Some(id) = id else {
                return Err(ValidationError::new(
                    "SpecialTokens",
                    name.as_str(),
                    "null",
                    Rule::HasId,
                ));
            };
            if let Some(other) = seen.insert(*id, name) {
                return Err(ValidationError::new(
                    "SpecialTokens",
                    name.as_str(),
                    format!("{id} (also the id of {other})"),
                    Rule::Unique {
                        within: "special token ids",
                    },
                ));
            }
        }
        Ok(())
    }
}

/// The tokenizer's JSON descriptor (`tokenizer.json` beside `tokenizer.tiktoken`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerConfig {
    /// Regex that splits text into chunks before BPE.
    pub pattern: String,
    /// Total vocabulary: mergeable ranks + special tokens.
    pub vocab_size: usize,
    /// Special tokens and their ids.
    pub special_tokens: SpecialTokens,
}

impl TokenizerConfig {
    /// Upstream's layout for a vocabulary of `vocab_size`: specials take the last nine ids.
    pub fn upstream(vocab_size: usize) -> Self {
        let first = vocab_size.saturating_sub(SPECIAL_TOKENS.len()) as u32;
        Self {
            pattern: SPLIT_PATTERN.to_string(),
            vocab_size,
            special_tokens: SpecialTokens::upstream(first),
        }
    }

    /// Checks this descriptor against the vocabulary it describes: the vocab size equals ranks
    /// plus specials, and special ids are outside the ranks and below the vocab size.
    pub fn validate_with(&self, vocab: &Vocabulary) -> VResult {
        self.validate()?;
        let expected = vocab.len() + self.special_tokens.len();
        if self.vocab_size != expected {
            return Err(ValidationError::new(
                "TokenizerConfig",
                "vocab_size",
                self.vocab_size,
                Rule::Equals {
                    what: "mergeable ranks + special tokens".into(),
                    expected: format!(
                        "{} + {} = {expected}",
                        vocab.len(),
                        self.special_tokens.len()
                    ),
                },
            ));
        }
        for (name, id) in self.special_tokens.assigned() {
            if (id as usize) < vocab.len() || id as usize >= self.vocab_size {
                return Err(ValidationError::new(
                    "TokenizerConfig",
                    format!("special_tokens[{name}]"),
                    id,
                    Rule::Pattern {
                        expected: "an id after every mergeable rank and below vocab_size",
                    },
                ));
            }
        }
        Ok(())
    }
}

impl Validate for TokenizerConfig {
    fn validate(&self) -> VResult {
        check_not_blank("TokenizerConfig", "pattern", &self.pattern)?;
        check_positive("TokenizerConfig", "vocab_size", self.vocab_size as u64)?;
        self.special_tokens
            .validate()
            .map_err(|e| e.within("special_tokens"))
    }
}

/// Byte-level BPE vocabulary: token bytes ↔ rank (= token id). Ranks 0..255 are the single
/// bytes; every later rank is the concatenation of two earlier tokens (its merge).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Vocabulary {
    ranks: HashMap<Vec<u8>, u32>,
    inverse: Vec<Vec<u8>>,
}

impl Vocabulary {
    /// Builds from a rank map, checking that the inverse is consistent: ranks are exactly
    /// `0..len` with no rank used twice.
    pub fn from_ranks(ranks: HashMap<Vec<u8>, u32>) -> Result<Self, ValidationError> {
        let mut inverse: Vec<Option<Vec<u8>>> = vec![None; ranks.len()];
        for (bytes, &rank) in &ranks {
            let slot = inverse.get_mut(rank as usize).ok_or_else(|| {
                ValidationError::new(
                    "Vocabulary",
                    "ranks",
                    rank,
                    Rule::InverseConsistent {
                        detail: format!("rank {rank} >= number of tokens {}", ranks.len()),
                    },
                )
            })?;
            if let Some(prev) = slot {
                return Err(ValidationError::new(
                    "Vocabulary",
                    "ranks",
                    rank,
                    Rule::InverseConsistent {
                        detail: format!("rank {rank} used by both {prev:?} and {bytes:?}"),
                    },
                ));
            }
            *slot = Some(bytes.clone());
        }
        // With len entries, each rank < len and none repeated, every slot is filled.
        let inverse = inverse.into_iter().map(|b| b.unwrap_or_default()).collect();
        let vocab = Self { ranks, inverse };
        vocab.validate()?;
        Ok(vocab)
    }

    /// Builds from token bytes in rank order.
    pub fn from_tokens(tokens: Vec<Vec<u8>>) -> Result<Self, ValidationError> {
        let mut ranks = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            if ranks.insert(t.clone(), i as u32).is_some() {
                return Err(ValidationError::new(
                    "Vocabulary",
                    format!("tokens[{i}]"),
                    format!("{t:?}"),
                    Rule::Unique {
                        within: "vocabulary",
                    },
                ));
            }
        }
        let vocab = Self {
            ranks,
            inverse: tokens,
        };
        vocab.validate()?;
        Ok(vocab)
    }

    /// Builds from a list of merges applied to the 256 single bytes (merge `i` creates id
    /// `256 + i`), checking every merge.
    pub fn from_merges(merges: &[(u32, u32)]) -> Result<Self, ValidationError> {
        let mut tokens: Vec<Vec<u8>> = (0u8..=255).map(|b| vec![b]).collect();
        for (i, &(a, b)) in merges.iter().enumerate() {
            let new_id = 256 + i as u32;
            if a >= new_id || b >= new_id {
                return Err(ValidationError::new(
                    "Vocabulary",
                    format!("merges[{i}]"),
                    format!("({a}, {b})"),
                    Rule::ValidMerge {
                        detail: format!("both parts must be earlier tokens (< {new_id})"),
                    },
                ));
            }
            let mut t = tokens[a as usize].clone();
            t.extend_from_slice(&tokens[b as usize]);
            tokens.push(t);
        }
        Self::from_tokens(tokens)
    }

    /// Number of tokens (mergeable ranks).
    pub fn len(&self) -> usize {
        self.inverse.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.inverse.is_empty()
    }

    /// The rank map.
    pub fn ranks(&self) -> &HashMap<Vec<u8>, u32> {
        &self.ranks
    }

    /// The bytes of token `id`.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.inverse.get(id as usize).map(Vec::as_slice)
    }

    /// Tokens in rank order.
    pub fn tokens(&self) -> &[Vec<u8>] {
        &self.inverse
    }

    /// Recovers the merge that produced every token of rank ≥ 256 by running BPE on the
    /// token's bytes with only lower ranks (tiktoken's construction). Fails if some token is
    /// not the merge of two lower-ranked tokens.
    pub fn recover_merges(&self) -> Result<Vec<(u32, u32)>, ValidationError> {
        let mut merges = Vec::with_capacity(self.len().saturating_sub(256));
        for (rank, bytes) in self.inverse.iter().enumerate().skip(256) {
            let rank = rank as u32;
            let parts = bpe_parts(&self.ranks, bytes, rank);
            let pair = match parts.as_slice() {
                [a, b] => (self.ranks[*a], self.ranks[*b]),
                _ => {
                    return Err(ValidationError::new(
                        "Vocabulary",
                        format!("tokens[{rank}]"),
                        format!("{bytes:?}"),
                        Rule::ValidMerge {
                            detail: format!(
                                "BPE with lower ranks leaves {} parts, not 2",
                                parts.len()
                            ),
                        },
                    ));
                }
            };
            merges.push(pair);
        }
        Ok(merges)
    }
}

/// Merges `bytes` greedily by lowest rank, using only ranks below `max_rank`; returns the parts.
fn bpe_parts<'a>(ranks: &HashMap<Vec<u8>, u32>, bytes: &'a [u8], max_rank: u32) -> Vec<&'a [u8]> {
    let mut parts: Vec<&[u8]> = (0..bytes.len()).map(|i| &bytes[i..i + 1]).collect();
    loop {
        let mut best: Option<(usize, u32)> = None;
        for i in 0..parts.len().saturating_sub(1) {
            let start = parts[i].as_ptr() as usize - bytes.as_ptr() as usize;
            let joined = &bytes[start..start + parts[i].len() + parts[i + 1].len()];
            if let Some(&r) = ranks.get(joined)
                && r < max_rank
                && best.is_none_or(|(_, br)| r < br)
            {
                best = Some((i, r));
            }
        }
        let Some((i, _)) = best else { break };
        let start = parts[i].as_ptr() as usize - bytes.as_ptr() as usize;
        parts[i] = &bytes[start..start + parts[i].len() + parts[i + 1].len()];
        parts.remove(i + 1);
    }
    parts
}

impl Validate for Vocabulary {
    /// Ranks 0..255 are the 256 single bytes; the map and its inverse agree.
    fn validate(&self) -> VResult {
        if self.ranks.len() != self.inverse.len() {
            return Err(ValidationError::new(
                "Vocabulary",
                "ranks",
                self.ranks.len(),
                Rule::InverseConsistent {
                    detail: format!(
                        "{} ranks but {} inverse entries",
                        self.ranks.len(),
                        self.inverse.len()
                    ),
                },
            ));
        }
        for (id, bytes) in self.inverse.iter().enumerate() {
            if self.ranks.get(bytes) != Some(&(id as u32)) {
                return Err(ValidationError::new(
                    "Vocabulary",
                    format!("inverse[{id}]"),
                    format!("{bytes:?}"),
                    Rule::InverseConsistent {
                        detail: format!("ranks maps it to {:?}", self.ranks.get(bytes)),
                    },
                ));
            }
        }
        for b in 0..256usize.min(self.inverse.len()) {
            if self.inverse[b] != [b as u8] {
                return Err(ValidationError::new(
                    "Vocabulary",
                    format!("inverse[{b}]"),
                    format!("{:?}", self.inverse[b]),
                    Rule::Pattern {
                        expected: "the single byte equal to its rank (ranks 0..255)",
                    },
                ));
            }
        }
        if self.inverse.len() < 256 {
            return Err(ValidationError::new(
                "Vocabulary",
                "ranks",
                self.inverse.len(),
                Rule::AtLeast {
                    limit_name: "the 256 byte tokens".into(),
                    limit: "256".into(),
                },
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_round_trip_through_ranks() {
        let merges = vec![(104, 101), (256, 108), (108, 111), (257, 258)]; // he, hel, lo, hello
        let v = Vocabulary::from_merges(&merges).unwrap();
        assert_eq!(v.token_bytes(259), Some(&b"hello"[..]));
        assert_eq!(v.recover_merges().unwrap(), merges);
    }

    #[test]
    fn upstream_layout_puts_specials_last() {
        let c = TokenizerConfig::upstream(32768);
        assert_eq!(c.special_tokens.id("<|bos|>"), Some(32759));
        assert_eq!(c.special_tokens.id("<|output_end|>"), Some(32767));
        c.validate().unwrap();
    }
}
