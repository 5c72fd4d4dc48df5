//! Import of upstream's `tokenizer.pkl`: a pickled `tiktoken.Encoding` whose state is
//! `{name, pat_str, mergeable_ranks: {bytes: int}, special_tokens: {str: int}}`. Read with
//! `serde-pickle` (no Python), which replaces the `tiktoken.core.Encoding` class by its state.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use nanochat_core::fs::read;
use nanochat_core::{SpecialTokens, TokenizerConfig, Vocabulary};
use serde_pickle::{DeOptions, HashableValue, Value};

use crate::error::TokenizerError;
use crate::tokenizer::Tokenizer;

fn bad(path: &Path, reason: impl Into<String>) -> TokenizerError {
    TokenizerError::BadFile {
        path: path.to_path_buf(),
        line: 0,
        reason: reason.into(),
    }
}

fn field<'a>(
    path: &Path,
    state: &'a BTreeMap<HashableValue, Value>,
    name: &str,
) -> Result<&'a Value, TokenizerError> {
    state
        .get(&HashableValue::String(name.to_string()))
        .ok_or_else(|| bad(path, format!("pickled Encoding has no `{name}`")))
}

fn as_rank(path: &Path, v: &Value, what: &str) -> Result<u32, TokenizerError> {
    match v {
        Value::I64(i) => {
            u32::try_from(*i).map_err(|_| bad(path, format!("{what}: rank {i} out of range")))
        }
        other => Err(bad(
            path,
            format!("{what}: expected an int rank, got {other:?}"),
        )),
    }
}

/// Reads upstream's `tokenizer.pkl` into a tokenizer (checked like any other).
pub fn import_pickle(path: &Path) -> Result<Tokenizer, TokenizerError> {
    let bytes = read(path)?;
    let value =
        serde_pickle::value_from_slice(&bytes, DeOptions::new().replace_unresolved_globals())
            .map_err(|e| bad(path, format!("not a readable pickle: {e}")))?;
    let Value::Dict(state) = value else {
        return Err(bad(
            path,
            "expected a pickled tiktoken.Encoding (a dict state)",
        ));
    };
    let pattern = match field(path, &state, "pat_str")? {
        Value::String(s) => s.clone(),
        other => {
            return Err(bad(
                path,
                format!("pat_str: expected a string, got {other:?}"),
            ));
        }
    };
    let Value::Dict(ranks_v) = field(path, &state, "mergeable_ranks")? else {
        return Err(bad(path, "mergeable_ranks: expected a dict"));
    };
    let mut ranks = HashMap::with_capacity(ranks_v.len());
    for (k, v) in ranks_v {
        let HashableValue::Bytes(token) = k else {
            return Err(bad(
                path,
                format!("mergeable_ranks: expected bytes keys, got {k:?}"),
            ));
        };
        ranks.insert(token.clone(), as_rank(path, v, "mergeable_ranks")?);
    }
    let Value::Dict(special_v) = field(path, &state, "special_tokens")? else {
        return Err(bad(path, "special_tokens: expected a dict"));
    };
    let mut ids = BTreeMap::new();
    for (k, v) in special_v {
        let HashableValue::String(name) = k else {
            return Err(bad(
                path,
                format!("special_tokens: expected string keys, got {k:?}"),
            ));
        };
        ids.insert(name.clone(), Some(as_rank(path, v, "special_tokens")?));
    }
    let vocab = Vocabulary::from_ranks(ranks).map_err(|e| TokenizerError::invalid(path, e))?;
    let config = TokenizerConfig {
        pattern,
        vocab_size: vocab.len() + ids.len(),
        special_tokens: SpecialTokens { ids },
    };
    Tokenizer::from_parts(config, vocab, path)
}
