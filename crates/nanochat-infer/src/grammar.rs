//! Structured output: OpenAI's `response_format` (`json_object`, `json_schema`) as a token
//! mask per decoding step, through [llguidance](https://github.com/guidance-ai/llguidance).
//!
//! Why llguidance and not outlines-core: outlines-core compiles a schema to a regular
//! expression and precomputes, for every DFA state, which tokens may follow. That cannot
//! express `json_object` (JSON nests without bound: not regular), and the index is built up
//! front for every new schema (seconds for large ones). llguidance runs an Earley parser over a
//! lazily built lexer and computes each step's mask on demand (tens of µs for a vocabulary of
//! this size), takes any JSON Schema it can compile, and is what llama.cpp, vLLM, SGLang and
//! mistral.rs use. It is a plain Rust crate with no native dependencies; we build it without
//! its default features (no rayon, no `referencing`: local `#/$defs/…` references work).
//!
//! The tokenizer is handed to llguidance as a [`TokEnv`]: every token's bytes (special tokens
//! as `0xFF` + their name, llguidance's convention), `<|assistant_end|>` as end of sequence,
//! and our own BPE for the strings a grammar fixes. JSON is compact (no free whitespace) unless
//! the schema's own `x-guidance` says otherwise, so a small model cannot pad an answer with
//! spaces until it runs out of tokens.

use std::sync::{Arc, OnceLock};

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use nanochat_core::ResponseFormat;
use nanochat_tokenizer::Tokenizer;
use serde_json::{Value, json};

/// A `response_format` that cannot be used, or a constraint that failed while decoding.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GrammarError {
    /// The tokenizer could not be described to llguidance.
    #[error("structured output is unavailable for this tokenizer: {0}")]
    Tokenizer(String),
    /// The schema does not compile (unsupported keyword, unsatisfiable, not an object…).
    #[error("response_format: {0}")]
    Schema(String),
    /// The constraint reached a state with no allowed token (a bug, reported rather than
    /// sampled around).
    #[error("the response_format constraint failed while decoding: {0}")]
    Decode(String),
}

/// Our tokenizer as llguidance sees it.
struct NanochatTokEnv {
    trie: TokTrie,
    tokenizer: Arc<Tokenizer>,
}

impl TokenizerEnv for NanochatTokEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        match std::str::from_utf8(s) {
            Ok(text) => self.tokenizer.encode(text),
            // Not UTF-8 (a fragment of a character): the longest tokens that spell it.
            Err(_) => self.trie.greedy_tokenize(s),
        }
    }
}

/// Compiles `response_format`s for one tokenizer (the llguidance parser factory is built on
/// first use and shared by every request after).
pub struct Grammars {
    tokenizer: Arc<Tokenizer>,
    factory: OnceLock<Result<ParserFactory, GrammarError>>,
}

impl Grammars {
    /// Grammars for `tokenizer` (nothing is built until the first [`Grammars::compile`]).
    pub fn new(tokenizer: Arc<Tokenizer>) -> Self {
        Self {
            tokenizer,
            factory: OnceLock::new(),
        }
    }

    fn factory(&self) -> Result<&ParserFactory, GrammarError> {
        self.factory
            .get_or_init(|| build_factory(&self.tokenizer))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// A fresh constraint for `format`; a schema llguidance cannot compile is an error that
    /// says why.
    pub fn compile(&self, format: &ResponseFormat) -> Result<Constraint, GrammarError> {
        let schema = match format {
            ResponseFormat::JsonObject => json!({"type": "object"}),
            ResponseFormat::JsonSchema { schema } => {
                if !schema.is_object() {
                    return Err(GrammarError::Schema(
                        "json_schema.schema must be a JSON object".into(),
                    ));
                }
                schema.clone()
            }
        };
        let schema = compact_by_default(schema);
        let parser = self
            .factory()?
            .create_parser(TopLevelGrammar::from_json_schema(schema))
            .map_err(|e| GrammarError::Schema(e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(GrammarError::Schema(e));
        }
        Ok(Constraint { matcher })
    }
}

/// `schema` with `x-guidance: {whitespace_flexible: false}` unless it sets its own.
fn compact_by_default(mut schema: Value) -> Value {
    if let Some(obj) = schema.as_object_mut() {
        obj.entry("x-guidance")
            .or_insert_with(|| json!({"whitespace_flexible": false}));
    }
    schema
}

fn build_factory(tokenizer: &Tokenizer) -> Result<ParserFactory, GrammarError> {
    let fail = |e: String| GrammarError::Tokenizer(e);
    let vocab = tokenizer.vocab_size();
    let eos = tokenizer
        .encode_special("<|assistant_end|>")
        .map_err(|e| fail(e.to_string()))?;
    let mut words = Vec::with_capacity(vocab);
    for id in 0..vocab as u32 {
        let bytes = tokenizer
            .decode_single_token_bytes(id)
            .map_err(|e| fail(e.to_string()))?;
        words.push(if tokenizer.is_special(id) {
            [&[TokTrie::SPECIAL_TOKEN_MARKER][..], &bytes].concat()
        } else {
            bytes
        });
    }
    let mut info = TokRxInfo::new(vocab as u32, eos);
    info.tok_bos = Some(tokenizer.bos_token_id());
    let env: TokEnv = Arc::new(NanochatTokEnv {
        trie: TokTrie::from(&info, &words),
        tokenizer: Arc::new(tokenizer.clone()),
    });
    let mut factory = ParserFactory::new_simple(&env).map_err(|e| fail(e.to_string()))?;
    factory.quiet();
    Ok(factory)
}

/// One sequence's constraint: which tokens may come next, and the tokens it has taken.
pub struct Constraint {
    matcher: Matcher,
}

impl Constraint {
    /// Sets every token the grammar does not allow next to −∞ in `logits` (ids past the
    /// tokenizer's vocabulary too). Once the value is complete only `<|assistant_end|>` is left.
    pub fn mask(&mut self, logits: &mut [f32]) -> Result<(), GrammarError> {
        let allowed = self
            .matcher
            .compute_mask_or_eos()
            .map_err(|e| GrammarError::Decode(e.to_string()))?;
        if allowed.num_set() == 0 {
            return Err(GrammarError::Decode("no token is allowed".into()));
        }
        for (id, l) in logits.iter_mut().enumerate() {
            if id >= allowed.len() || !allowed.is_allowed(id as TokenId) {
                *l = f32::NEG_INFINITY;
            }
        }
        Ok(())
    }

    /// Advances past `token` (one the mask allowed).
    pub fn consume(&mut self, token: u32) -> Result<(), GrammarError> {
        if self.matcher.is_stopped() {
            return Ok(()); // the value is complete: only the end token follows
        }
        self.matcher
            .consume_token(token)
            .map_err(|e| GrammarError::Decode(e.to_string()))
    }
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("stopped", &self.matcher.is_stopped())
            .finish()
    }
}
