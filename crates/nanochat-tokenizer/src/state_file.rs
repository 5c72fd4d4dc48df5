//! The tokenizer's lifecycle on disk (no upstream counterpart: upstream's `tok_train.py` keeps
//! no record of how a tokenizer came to be).
//!
//! Training drives a tokenizer Untrained → Training → Trained ([`crate::tok_train`]); saving
//! writes that history to `tokenizer_state.json` next to the other tokenizer files; loading
//! replays it through the lifecycle table, requires it to end at Trained, and advances it to
//! Loaded ([`crate::Tokenizer::load`]). A tokenizer folder without the file (written before the
//! lifecycle was recorded, or imported from upstream's pickle) still loads, with no lifecycle.

use std::path::Path;

use nanochat_core::fs::{IoError, read, write_atomic};
use nanochat_core::lifecycle::{Lifecycle, TokenizerState};

use crate::error::TokenizerError;

/// File name of the recorded lifecycle.
pub const STATE_FILE: &str = "tokenizer_state.json";

/// Writes `lifecycle` (a tokenizer's training, at Trained) to `<dir>/tokenizer_state.json`, or
/// removes a stale file when there is none to record.
pub(crate) fn write(
    dir: &Path,
    lifecycle: Option<&Lifecycle<TokenizerState>>,
) -> Result<(), TokenizerError> {
    let path = dir.join(STATE_FILE);
    let Some(lifecycle) = lifecycle else {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(IoError::new("remove", &path, e).into())
            }
            _ => Ok(()),
        };
    };
    let text = serde_json::to_string_pretty(lifecycle).map_err(|e| TokenizerError::BadFile {
        path: path.clone(),
        line: 0,
        reason: e.to_string(),
    })? + "\n";
    write_atomic(&path, text.as_bytes())?;
    Ok(())
}

/// Reads `<dir>/tokenizer_state.json` if present: a history that replays and ends at Trained.
pub(crate) fn read_trained(
    dir: &Path,
) -> Result<Option<Lifecycle<TokenizerState>>, TokenizerError> {
    let path = dir.join(STATE_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let bad = |line: usize, reason: String| TokenizerError::BadFile {
        path: path.clone(),
        line,
        reason,
    };
    let lifecycle: Lifecycle<TokenizerState> =
        serde_json::from_slice(&read(&path)?).map_err(|e| bad(e.line(), e.to_string()))?;
    if lifecycle.state() != TokenizerState::Trained {
        return Err(bad(
            0,
            format!(
                "state = {:?}: a saved tokenizer records Trained (its training history)",
                lifecycle.state()
            ),
        ));
    }
    Ok(Some(lifecycle))
}
