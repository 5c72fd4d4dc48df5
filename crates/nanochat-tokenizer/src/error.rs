//! The tokenizer crate's error type.

use std::path::PathBuf;

use nanochat_core::ValidationError;
use nanochat_core::fs::IoError;

/// Everything that can go wrong training, loading, using or rendering with a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The split pattern does not compile (or failed on some input).
    #[error("bad split pattern {pattern:?}: {reason}")]
    BadPattern {
        /// The pattern.
        pattern: String,
        /// Why.
        reason: String,
    },
    /// A tokenizer file is malformed.
    #[error("{path}:{line}: {reason}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 when not line-based).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The tokenizer's data breaks a rule of the Tokenizer entity.
    #[error("{path}: {source}")]
    Invalid {
        /// Where the data came from.
        path: PathBuf,
        /// The rule.
        #[source]
        source: Box<ValidationError>,
    },
    /// A token id outside the vocabulary.
    #[error("token id {id} is not in the vocabulary (size {vocab_size})")]
    UnknownToken {
        /// The id.
        id: u32,
        /// The vocabulary size.
        vocab_size: usize,
    },
    /// A special token name the tokenizer does not have.
    #[error("{name:?} is not a special token of this tokenizer")]
    UnknownSpecial {
        /// The name.
        name: String,
    },
    /// A conversation that cannot be rendered.
    #[error("cannot render conversation: message {index}: {reason}")]
    Render {
        /// Index of the offending message (after merging a system message).
        index: usize,
        /// Why.
        reason: String,
    },
    /// Training parameters are out of range.
    #[error("cannot train: {0}")]
    Train(String),
    /// A lifecycle step out of order.
    #[error(transparent)]
    Lifecycle(#[from] nanochat_core::LifecycleError),
    /// Reading the training data failed.
    #[error("reading training data: {0}")]
    Data(String),
}

impl TokenizerError {
    /// Wraps a validation error with the file it came from.
    pub fn invalid(path: impl Into<PathBuf>, source: ValidationError) -> Self {
        TokenizerError::Invalid {
            path: path.into(),
            source: Box::new(source),
        }
    }
}
