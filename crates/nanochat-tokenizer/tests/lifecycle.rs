//! The tokenizer's lifecycle through the real trainer, writer and loader: Untrained → Training
//! → Trained recorded in `tokenizer_state.json`, Loaded on load; folders without the record
//! still load; a record or ranks file that breaks a rule is refused, naming the file.

use std::fs;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use nanochat_core::TokenizerState;
use nanochat_tokenizer::state_file::STATE_FILE;
use nanochat_tokenizer::tok_train::{TokTrainOptions, train_tokenizer};
use nanochat_tokenizer::tokenizer::RANKS_FILE;
use nanochat_tokenizer::{Tokenizer, TokenizerError};

/// A tokenizer trained on a few KB of text with 40 merges.
fn trained() -> Tokenizer {
    let docs = (0..60).map(|i| {
        Ok::<_, String>(format!(
            "the cat {i} sat on the mat; the dog sat on the log near the cat number {}",
            i * 7
        ))
    });
    let opts = TokTrainOptions {
        vocab_size: 256 + 9 + 40,
        ..Default::default()
    };
    train_tokenizer(docs, &opts).unwrap().0
}

fn states(tok: &Tokenizer) -> Vec<TokenizerState> {
    let l = tok.lifecycle().expect("a recorded lifecycle");
    l.history().iter().map(|(s, _)| *s).collect()
}

#[test]
fn trained_saved_loaded() {
    use TokenizerState::*;
    let tok = trained();
    assert_eq!(states(&tok), [Untrained, Training, Trained]);
    let dir = tempfile::tempdir().unwrap();
    tok.save(dir.path()).unwrap();
    let recorded: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join(STATE_FILE)).unwrap()).unwrap();
    assert_eq!(recorded["state"], "trained");
    assert_eq!(recorded["history"].as_array().unwrap().len(), 3);

    let back = Tokenizer::load(dir.path()).unwrap();
    assert_eq!(states(&back), [Untrained, Training, Trained, Loaded]);
    assert_eq!(back.encode("the cat sat"), tok.encode("the cat sat"));
    // Saving a loaded tokenizer elsewhere records its training, so it loads again.
    let again = tempfile::tempdir().unwrap();
    back.save(again.path()).unwrap();
    let twice = Tokenizer::load(again.path()).unwrap();
    assert_eq!(states(&twice), [Untrained, Training, Trained, Loaded]);
}

#[test]
fn folder_without_a_record_still_loads() {
    let dir = tempfile::tempdir().unwrap();
    trained().save(dir.path()).unwrap();
    fs::remove_file(dir.path().join(STATE_FILE)).unwrap();
    let back = Tokenizer::load(dir.path()).unwrap();
    assert!(back.lifecycle().is_none());
    // Saving it does not invent a history (and clears a stale one).
    fs::write(dir.path().join(STATE_FILE), "stale").unwrap();
    back.save(dir.path()).unwrap();
    assert!(!dir.path().join(STATE_FILE).exists());
}

#[test]
fn record_that_skips_training_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    trained().save(dir.path()).unwrap();
    let path = dir.path().join(STATE_FILE);
    let mut record: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    record["history"].as_array_mut().unwrap().remove(1);
    fs::write(&path, record.to_string()).unwrap();
    let err = Tokenizer::load(dir.path()).unwrap_err();
    assert!(matches!(err, TokenizerError::BadFile { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(STATE_FILE) && msg.contains("Untrained → Trained"),
        "{msg}"
    );
}

#[test]
fn ranks_that_are_not_merges_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tok = trained();
    tok.save(dir.path()).unwrap();
    // The last rank becomes three bytes that no two lower-ranked tokens join into.
    let path = dir.path().join(RANKS_FILE);
    let text = fs::read_to_string(&path).unwrap();
    let last = tok.vocab().len() - 1;
    let forged: String = text
        .lines()
        .map(|l| match l.ends_with(&format!(" {last}")) {
            true => format!("{} {last}\n", BASE64.encode([0xf0u8, 0x00, 0xf1])),
            false => format!("{l}\n"),
        })
        .collect();
    fs::write(&path, forged).unwrap();
    let err = Tokenizer::load(dir.path()).unwrap_err();
    assert!(matches!(err, TokenizerError::Invalid { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("tokenizer.tiktoken") && msg.contains(&format!("tokens[{last}]")),
        "{msg}"
    );
}
