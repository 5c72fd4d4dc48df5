//! Invariants over arbitrary input: round trips, streaming, and the fast splitter's equivalence
//! with fancy-regex.

use std::sync::OnceLock;

use nanochat_core::paths::tokenizer_fixture_dir;
use nanochat_tokenizer::pickle::import_pickle;
use nanochat_tokenizer::pretokenize::{GPT4_PATTERN, Splitter};
use nanochat_tokenizer::{SPLIT_PATTERN, StreamDecoder, Tokenizer};
use proptest::prelude::*;

fn tok() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| import_pickle(&tokenizer_fixture_dir().join("tokenizer.pkl")).unwrap())
}

/// Strings that stress the split pattern: contractions (with the long s that folds to `s`),
/// every kind of whitespace and newline, Unicode numbers and letters, marks, symbols, emoji.
fn tricky() -> impl Strategy<Value = String> {
    let atoms = prop::sample::select(vec![
        "'",
        "s",
        "S",
        "ſ",
        "t",
        "ll",
        "LL",
        "lL",
        "ve",
        "VE",
        "re",
        "Re",
        "d",
        "m",
        "a",
        "Z",
        "é",
        "e\u{301}",
        " ",
        "  ",
        "\t",
        "\n",
        "\r",
        "\r\n",
        "\u{a0}",
        "\u{2028}",
        "\u{3000}",
        "\u{b}",
        "\u{c}",
        "\u{85}",
        "0",
        "12",
        "345",
        "٣",
        "²",
        "Ⅻ",
        "½",
        ".",
        "!",
        "(",
        "\"",
        "#",
        "+",
        "-",
        "…",
        "—",
        "€",
        "你好",
        "한국",
        "🌍",
        "🎉",
        "\u{200d}",
        "\u{fe0f}",
        "\u{1d49c}",
        "\u{10400}",
        "<|bos|>",
        "\u{0}",
    ]);
    prop::collection::vec(atoms, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn fast_splitter_equals_fancy_regex(s in prop_oneof![tricky(), any::<String>()]) {
        for pattern in [SPLIT_PATTERN, GPT4_PATTERN] {
            let fast = Splitter::new(pattern).unwrap();
            let slow = Splitter::regex(pattern).unwrap();
            let is_fast = matches!(fast, Splitter::Fast { .. });
            prop_assert!(is_fast);
            prop_assert_eq!(fast.split(&s).unwrap(), slow.split(&s).unwrap());
        }
    }

    #[test]
    fn decode_inverts_encode(s in prop_oneof![tricky(), any::<String>()]) {
        let t = tok();
        prop_assert_eq!(t.encode(&s), t.encode_reference(&s));
        prop_assert_eq!(t.decode(&t.encode(&s)).unwrap(), s.clone());
        // Special-token strings in ordinary text stay text.
        prop_assert!(t.encode(&s).iter().all(|&id| !t.is_special(id)));
    }

    #[test]
    fn streaming_concatenates_to_decode(ids in prop::collection::vec(0u32..2048, 0..64)) {
        let t = tok();
        let mut d = StreamDecoder::new();
        let mut out = String::new();
        for &id in &ids {
            out.push_str(&d.push(t, id).unwrap());
        }
        out.push_str(&d.finish());
        prop_assert_eq!(out, t.decode(&ids).unwrap());
    }
}

#[test]
fn special_token_text_is_not_special() {
    let t = tok();
    let ids = t.encode("<|bos|>hi");
    assert!(!ids.contains(&t.bos_token_id()));
    assert_eq!(t.encode_with_specials("<|bos|>hi")[0], t.bos_token_id());
    assert!(t.encode_special("<|nope|>").is_err());
    assert!(t.decode(&[999_999]).is_err());
}
