//! Bad input gives clear errors naming the file, line or message, and never panics.

use std::fs;

use nanochat_core::paths::tokenizer_fixture_dir;
use nanochat_core::{Conversation, Message, MessageContent, MessageRole};
use nanochat_tokenizer::pickle::import_pickle;
use nanochat_tokenizer::tokenizer::{CONFIG_FILE, RANKS_FILE, TOKEN_BYTES_FILE};
use nanochat_tokenizer::{Tokenizer, TokenizerError};

fn saved() -> (tempfile::TempDir, Tokenizer) {
    let tok = import_pickle(&tokenizer_fixture_dir().join("tokenizer.pkl")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    tok.save(dir.path()).unwrap();
    (dir, tok)
}

#[test]
fn bad_ranks_line_names_file_and_line() {
    let (dir, _) = saved();
    let path = dir.path().join(RANKS_FILE);
    let mut text = fs::read_to_string(&path).unwrap();
    text.push_str("not-base64!! 5000\n");
    fs::write(&path, text).unwrap();
    let err = Tokenizer::load(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("tokenizer.tiktoken:2040") && err.contains("base64"),
        "{err}"
    );
}

#[test]
fn inconsistent_vocab_size_is_a_rule_error() {
    let (dir, _) = saved();
    let path = dir.path().join(CONFIG_FILE);
    let text = fs::read_to_string(&path)
        .unwrap()
        .replace("\"vocab_size\": 2048", "\"vocab_size\": 4096");
    fs::write(&path, text).unwrap();
    let err = Tokenizer::load(dir.path()).unwrap_err();
    assert!(matches!(err, TokenizerError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("vocab_size = 4096"), "{err}");
}

#[test]
fn missing_special_token_is_named() {
    let (dir, _) = saved();
    let path = dir.path().join(CONFIG_FILE);
    let text = fs::read_to_string(&path)
        .unwrap()
        .replace("\"<|python_end|>\": 2045,", "");
    fs::write(&path, text).unwrap();
    let err = Tokenizer::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("<|python_end|>"), "{err}");
}

#[test]
fn stale_token_bytes_are_detected() {
    let (dir, _) = saved();
    fs::write(dir.path().join(TOKEN_BYTES_FILE), "[1, 2, 3]").unwrap();
    let err = Tokenizer::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("token_bytes.json"), "{err}");
}

#[test]
fn garbage_pickle_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.pkl");
    fs::write(&path, b"\x80\x04not really a pickle").unwrap();
    let err = import_pickle(&path).unwrap_err().to_string();
    assert!(err.contains("tokenizer.pkl"), "{err}");
}

#[test]
fn render_errors_name_the_message() {
    let (_, tok) = saved();
    let user = |t: &str| Message::new(MessageRole::User, t);
    let bad = Conversation {
        messages: vec![user("a"), user("b")],
    };
    let err = tok.render_conversation(&bad, 2048).unwrap_err().to_string();
    assert!(
        err.contains("message 1") && err.contains("assistant"),
        "{err}"
    );
    let sys_only = Conversation {
        messages: vec![Message::new(MessageRole::System, "x")],
    };
    assert!(tok.render_conversation(&sys_only, 2048).is_err());
    let parts_user = Conversation {
        messages: vec![Message {
            content: MessageContent::Parts(vec![]),
            ..user("x")
        }],
    };
    assert!(tok.render_conversation(&parts_user, 2048).is_err());
    assert!(
        tok.render_for_completion(
            &Conversation {
                messages: vec![user("q")]
            },
            2048
        )
        .is_err()
    );
    assert!(
        tok.render_conversation(&Conversation { messages: vec![] }, 2048)
            .is_err()
    );
}
