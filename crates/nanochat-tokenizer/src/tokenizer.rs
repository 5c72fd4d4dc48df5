//! The tokenizer: our ranks and special tokens in a `tiktoken_rs::CoreBPE` for encoding and
//! decoding (upstream `RustBPETokenizer` in `nanochat/tokenizer.py`), plus its files.
//!
//! On disk (`$NANOCHAT_BASE_DIR/tokenizer/`):
//! - `tokenizer.tiktoken`: the mergeable ranks, one `base64(bytes) rank` line each (tiktoken's
//!   format);
//! - `tokenizer.json`: pattern, vocabulary size and special tokens ([`TokenizerConfig`]);
//! - `token_bytes.json`: the byte length of every token id, 0 for specials (upstream's
//!   `token_bytes.pt`, used for bits per byte);
//! - `tokenizer_state.json`: how it was trained, its lifecycle ([`crate::state_file`]).
//!
//! Loading checks every rule of the Tokenizer entity, the merges included: every token past
//! the 256 bytes must be the merge of two lower-ranked tokens.
//!
//! Upstream's `tokenizer.pkl` is read by [`crate::pickle`].

use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use nanochat_core::fs::{read, write_atomic};
use nanochat_core::lifecycle::{Lifecycle, TokenizerState};
use nanochat_core::tokenizer_config::SPECIAL_TOKENS;
use nanochat_core::{SpecialTokens, TokenizerConfig, Validate, Vocabulary};
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use tiktoken_rs::CoreBPE;

use crate::error::TokenizerError;
use crate::pretokenize::Splitter;

/// File name of the mergeable ranks.
pub const RANKS_FILE: &str = "tokenizer.tiktoken";
/// File name of the descriptor.
pub const CONFIG_FILE: &str = "tokenizer.json";
/// File name of the per-token byte lengths.
pub const TOKEN_BYTES_FILE: &str = "token_bytes.json";

/// A byte-level BPE tokenizer with nanochat's special tokens.
#[derive(Clone)]
pub struct Tokenizer {
    config: TokenizerConfig,
    vocab: Vocabulary,
    bpe: CoreBPE,
    encoder: FxHashMap<Vec<u8>, u32>,
    splitter: Splitter,
    bos: u32,
    /// The training history (at Trained), when known: what `save` records.
    training: Option<Lifecycle<TokenizerState>>,
    /// Where this tokenizer is in its lifecycle (Trained, or Loaded), when known.
    lifecycle: Option<Lifecycle<TokenizerState>>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.config.vocab_size)
            .field("pattern", &self.config.pattern)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Builds a tokenizer from mergeable ranks and a pattern; upstream's nine special tokens
    /// take the ids after the ranks.
    pub fn from_vocab(vocab: Vocabulary, pattern: &str) -> Result<Self, TokenizerError> {
        let n = vocab.len();
        let config = TokenizerConfig {
            pattern: pattern.to_string(),
            vocab_size: n + SPECIAL_TOKENS.len(),
            special_tokens: SpecialTokens::upstream(n as u32),
        };
        Self::from_parts(config, vocab, Path::new("<memory>"))
    }

    /// Builds a tokenizer from a descriptor and its vocabulary, checking every rule of the
    /// Tokenizer entity (`origin` names the source in errors).
    pub fn from_parts(
        config: TokenizerConfig,
        vocab: Vocabulary,
        origin: &Path,
    ) -> Result<Self, TokenizerError> {
        config
            .validate_with(&vocab)
            .map_err(|e| TokenizerError::invalid(origin, e))?;
        let bos = config
            .special_tokens
            .id("<|bos|>")
            .expect("validated: bos has an id");
        let encoder: FxHashMap<Vec<u8>, u32> =
            vocab.ranks().iter().map(|(k, v)| (k.clone(), *v)).collect();
        let specials: FxHashMap<String, u32> = config
            .special_tokens
            .assigned()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let bpe = CoreBPE::new(encoder.clone(), specials, &config.pattern).map_err(|e| {
            TokenizerError::BadPattern {
                pattern: config.pattern.clone(),
                reason: e.to_string(),
            }
        })?;
        let splitter = Splitter::new(&config.pattern)?;
        Ok(Self {
            config,
            vocab,
            bpe,
            encoder,
            splitter,
            bos,
            training: None,
            lifecycle: None,
        })
    }

    /// Attaches the training history of a tokenizer just trained (at Trained).
    pub(crate) fn with_training(mut self, training: Lifecycle<TokenizerState>) -> Self {
        self.lifecycle = Some(training.clone());
        self.training = Some(training);
        self
    }

    /// Where this tokenizer is in its lifecycle: Trained just after [`crate::tok_train`],
    /// Loaded after [`load`](Self::load); `None` when its training was not recorded (built
    /// from ranks in memory, imported from upstream, or saved before lifecycles were).
    pub fn lifecycle(&self) -> Option<&Lifecycle<TokenizerState>> {
        self.lifecycle.as_ref()
    }

    /// The descriptor (pattern, vocabulary size, special tokens).
    pub fn config(&self) -> &TokenizerConfig {
        &self.config
    }

    /// The mergeable ranks.
    pub fn vocab(&self) -> &Vocabulary {
        &self.vocab
    }

    /// The pre-tokenization splitter for this tokenizer's pattern.
    pub fn splitter(&self) -> &Splitter {
        &self.splitter
    }

    /// Total vocabulary size, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    /// The id of `<|bos|>`.
    pub fn bos_token_id(&self) -> u32 {
        self.bos
    }

    /// The id of a special token by name (upstream `encode_special`).
    pub fn encode_special(&self, name: &str) -> Result<u32, TokenizerError> {
        self.config
            .special_tokens
            .id(name)
            .ok_or_else(|| TokenizerError::UnknownSpecial {
                name: name.to_string(),
            })
    }

    /// Whether `id` is a special token.
    pub fn is_special(&self, id: u32) -> bool {
        id as usize >= self.vocab.len() && (id as usize) < self.config.vocab_size
    }

    /// Encodes ordinary text: special-token strings in it stay text.
    ///
    /// With upstream's (or GPT-4's) pattern the chunks come from the exact fast scanner and
    /// each chunk is merged with tiktoken-rs's `byte_pair_split`, which gives the same ids as
    /// `CoreBPE::encode_ordinary` (tested) several times faster; any other pattern goes through
    /// `CoreBPE` directly.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        if !matches!(self.splitter, Splitter::Fast { .. }) {
            return self.bpe.encode_ordinary(text);
        }
        let mut ids = Vec::with_capacity(text.len() / 4 + 1);
        let _ = self.splitter.for_each(text, |piece| {
            let bytes = piece.as_bytes();
            match self.encoder.get(bytes) {
                Some(&id) => ids.push(id),
                None => ids.extend(
                    tiktoken_rs::byte_pair_split(bytes, &self.encoder)
                        .iter()
                        .map(|p| self.encoder[*p]),
                ),
            }
        });
        ids
    }

    /// Encodes with `tiktoken_rs::CoreBPE::encode_ordinary` (the reference for [`encode`](Self::encode)).
    pub fn encode_reference(&self, text: &str) -> Vec<u32> {
        self.bpe.encode_ordinary(text)
    }

    /// Encodes text with optional token ids before and after (upstream `prepend`/`append`).
    pub fn encode_with(&self, text: &str, prepend: Option<u32>, append: Option<u32>) -> Vec<u32> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 2);
        ids.extend(prepend);
        ids.extend(self.encode(text));
        ids.extend(append);
        ids
    }

    /// Encodes many texts in parallel (rayon), each with optional prepend/append ids.
    pub fn encode_batch<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        prepend: Option<u32>,
        append: Option<u32>,
    ) -> Vec<Vec<u32>> {
        texts
            .par_iter()
            .map(|t| self.encode_with(t.as_ref(), prepend, append))
            .collect()
    }

    /// Encodes text in which special-token strings become their ids.
    pub fn encode_with_specials(&self, text: &str) -> Vec<u32> {
        self.bpe.encode_with_special_tokens(text)
    }

    /// The bytes of one token (upstream `decode_single_token_bytes`).
    pub fn decode_single_token_bytes(&self, id: u32) -> Result<Vec<u8>, TokenizerError> {
        if let Some(b) = self.vocab.token_bytes(id) {
            return Ok(b.to_vec());
        }
        self.config
            .special_tokens
            .assigned()
            .find(|(_, v)| *v == id)
            .map(|(k, _)| k.as_bytes().to_vec())
            .ok_or(TokenizerError::UnknownToken {
                id,
                vocab_size: self.config.vocab_size,
            })
    }

    /// The bytes of a token sequence.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>, TokenizerError> {
        self.bpe
            .decode_bytes(ids)
            .map_err(|e| TokenizerError::UnknownToken {
                id: e.token,
                vocab_size: self.config.vocab_size,
            })
    }

    /// Decodes to text; invalid UTF-8 (a split multi-byte character) becomes U+FFFD, as
    /// tiktoken's `decode` does.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        Ok(String::from_utf8_lossy(&self.decode_bytes(ids)?).into_owned())
    }

    /// One token as text (upstream `id_to_token`).
    pub fn id_to_token(&self, id: u32) -> Result<String, TokenizerError> {
        self.decode(&[id])
    }

    /// Byte length of every token id, 0 for special tokens (upstream `token_bytes`).
    pub fn token_bytes(&self) -> Vec<u32> {
        (0..self.config.vocab_size as u32)
            .map(|id| self.vocab.token_bytes(id).map_or(0, |b| b.len() as u32))
            .collect()
    }

    /// Writes `tokenizer.tiktoken`, `tokenizer.json`, `token_bytes.json` and the training
    /// history (`tokenizer_state.json`, removed when there is none) into `dir` (atomically,
    /// each).
    pub fn save(&self, dir: &Path) -> Result<(), TokenizerError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| nanochat_core::fs::IoError::new("create directory", dir, e))?;
        let mut ranks = String::with_capacity(self.vocab.len() * 16);
        for (rank, bytes) in self.vocab.tokens().iter().enumerate() {
            let _ = writeln!(ranks, "{} {rank}", BASE64.encode(bytes));
        }
        write_atomic(&dir.join(RANKS_FILE), ranks.as_bytes())?;
        let config = serde_json::to_string_pretty(&self.config).expect("config serialises") + "\n";
        write_atomic(&dir.join(CONFIG_FILE), config.as_bytes())?;
        let token_bytes =
            serde_json::to_string(&self.token_bytes()).expect("numbers serialise") + "\n";
        write_atomic(&dir.join(TOKEN_BYTES_FILE), token_bytes.as_bytes())?;
        crate::state_file::write(dir, self.training.as_ref())?;
        Ok(())
    }

    /// Loads a tokenizer saved by [`save`](Self::save), checking every rule of the Tokenizer
    /// entity (the merges included) and that `token_bytes.json` (if present) agrees with the
    /// ranks. A recorded training history moves Trained → Loaded.
    pub fn load(dir: &Path) -> Result<Self, TokenizerError> {
        let config_path = dir.join(CONFIG_FILE);
        let config_text =
            String::from_utf8(read(&config_path)?).map_err(|e| TokenizerError::BadFile {
                path: config_path.clone(),
                line: 0,
                reason: format!("not UTF-8: {e}"),
            })?;
        let config: TokenizerConfig =
            serde_json::from_str(&config_text).map_err(|e| TokenizerError::BadFile {
                path: config_path.clone(),
                line: e.line(),
                reason: e.to_string(),
            })?;
        config
            .validate()
            .map_err(|e| TokenizerError::invalid(&config_path, e))?;
        let ranks_path = dir.join(RANKS_FILE);
        let vocab = read_tiktoken(&ranks_path)?;
        let mut tok = Self::from_parts(config, vocab, dir)?;
        let tb_path = dir.join(TOKEN_BYTES_FILE);
        if tb_path.exists() {
            let stored: Vec<u32> =
                serde_json::from_slice(&read(&tb_path)?).map_err(|e| TokenizerError::BadFile {
                    path: tb_path.clone(),
                    line: e.line(),
                    reason: e.to_string(),
                })?;
            if stored != tok.token_bytes() {
                return Err(TokenizerError::BadFile {
                    path: tb_path,
                    line: 0,
                    reason: "byte lengths disagree with tokenizer.tiktoken (stale file?)".into(),
                });
            }
        }
        if let Some(training) = crate::state_file::read_trained(dir)? {
            let mut lifecycle = training.clone();
            lifecycle
                .advance_now(TokenizerState::Loaded)
                .map_err(|e| TokenizerError::BadFile {
                    path: dir.join(crate::state_file::STATE_FILE),
                    line: 0,
                    reason: e.to_string(),
                })?;
            tok.training = Some(training);
            tok.lifecycle = Some(lifecycle);
        }
        Ok(tok)
    }
}

/// Reads a tiktoken ranks file (`base64(bytes) rank` per line) into a checked vocabulary: ranks
/// consistent, the 256 bytes first, every later token the merge of two lower-ranked ones.
pub fn read_tiktoken(path: &Path) -> Result<Vocabulary, TokenizerError> {
    let bytes = read(path)?;
    let text = String::from_utf8(bytes).map_err(|e| TokenizerError::BadFile {
        path: path.to_path_buf(),
        line: 0,
        reason: format!("not UTF-8: {e}"),
    })?;
    let mut ranks = std::collections::HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| TokenizerError::BadFile {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        };
        let (b64, rank) = line
            .split_once(' ')
            .ok_or_else(|| bad("expected `base64 rank`".into()))?;
        let token = BASE64
            .decode(b64)
            .map_err(|e| bad(format!("bad base64: {e}")))?;
        let rank: u32 = rank
            .trim()
            .parse()
            .map_err(|e| bad(format!("bad rank: {e}")))?;
        if ranks.insert(token, rank).is_some() {
            return Err(bad(format!("token {b64} listed twice")));
        }
    }
    let vocab = Vocabulary::from_ranks(ranks).map_err(|e| TokenizerError::invalid(path, e))?;
    vocab
        .recover_merges()
        .map_err(|e| TokenizerError::invalid(path, e))?;
    Ok(vocab)
}
