//! Export to a Hugging Face folder: the built-in format is refused for features transformers'
//! NanoChat lacks, and such a model goes to the remote-code format by default; for the original
//! architecture the tokenizer encodes like ours (checked with the `tokenizers` crate), the chat
//! template renders like `render_conversation`; both formats import back (`hf_import`) to a
//! model with bit-identical logits, and `tokenizer.json` reads back to the same vocabulary.
//! (transformers itself loads them in `cargo xtask hf-check`.)

use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};
use nanochat_core::paths::tokenizer_fixture_dir;
use nanochat_core::{Conversation, ModelConfig};
use nanochat_model::Gpt;
use nanochat_model::hf_export::{CHAT_TEMPLATE, ExportError, HfFormat, REMOTE_CODE, export_hf};
use nanochat_model::hf_import::{hf_tokenizer, import_hf};
use nanochat_tokenizer::pickle::import_pickle;

type B = Flex;

fn tok() -> nanochat_tokenizer::Tokenizer {
    import_pickle(&tokenizer_fixture_dir().join("tokenizer.pkl")).unwrap()
}

fn v0_config(vocab: usize) -> ModelConfig {
    ModelConfig {
        sequence_len: 128,
        vocab_size: vocab,
        n_layer: 2,
        n_head: 2,
        n_kv_head: 1,
        n_embd: 64,
        ..ModelConfig::default()
    }
    .with_v0_features()
}

fn same_logits(a: &Gpt<B>, b: &Gpt<B>) {
    let idx = Tensor::<B, 2, Int>::from_data(
        TensorData::new(
            (0..32i64).map(|i| i * 61 % 2048).collect::<Vec<_>>(),
            [1, 32],
        ),
        &Default::default(),
    );
    let (x, y) = (
        a.forward(idx.clone(), None).into_data(),
        b.forward(idx, None).into_data(),
    );
    assert_eq!(x.as_bytes(), y.as_bytes());
}

#[test]
fn head_architecture_is_refused_for_the_builtin_format_with_reasons() {
    let t = tok();
    let c = ModelConfig {
        vocab_size: 2048,
        ..v0_config(2048)
    };
    let head = ModelConfig {
        value_embeds: true,
        smear: true,
        window_pattern: "SSL".into(),
        sequence_len: 1024,
        qk_scale: 1.2,
        ..c
    };
    let m = Gpt::<B>::init(&head, &Default::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = export_hf(
        &m,
        t.config(),
        t.vocab(),
        dir.path(),
        Some(HfFormat::Builtin),
    )
    .unwrap_err();
    let ExportError::Unsupported(list) = &err else {
        panic!("{err}")
    };
    let msg = list.join("; ");
    assert!(
        msg.contains("value embeddings")
            && msg.contains("smear")
            && msg.contains("sliding windows")
            && msg.contains("q/k scale"),
        "{msg}"
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing written"
    );
}

#[test]
fn v0_model_exports_a_loadable_folder() {
    let t = tok();
    let config = v0_config(t.vocab_size());
    let m = Gpt::<B>::init(&config, &Default::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let format = export_hf(&m, t.config(), t.vocab(), dir.path(), None).unwrap();
    assert_eq!(format, HfFormat::Builtin);

    // The tokenizer, read by Hugging Face's own library, encodes like ours.
    let hf = tokenizers::Tokenizer::from_file(dir.path().join("tokenizer.json")).unwrap();
    for line in std::fs::read_to_string(tokenizer_fixture_dir().join("encodings.jsonl"))
        .unwrap()
        .lines()
    {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let text = v["text"].as_str().unwrap();
        if text.contains("<|") {
            continue; // special-token text: HF parses added tokens, `encode` keeps them as text
        }
        let ids: Vec<u32> = hf.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(ids, t.encode(text), "{text:?}");
    }

    // The chat template renders the fixture conversations to the same ids (specials parsed).
    let env = {
        let mut e = minijinja::Environment::new();
        e.add_template("chat", CHAT_TEMPLATE).unwrap();
        e
    };
    for line in std::fs::read_to_string(tokenizer_fixture_dir().join("conversations.jsonl"))
        .unwrap()
        .lines()
    {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let conv: Conversation = serde_json::from_value(v["conversation"].clone()).unwrap();
        let plain = conv
            .messages
            .iter()
            .all(|m| matches!(m.content, nanochat_core::MessageContent::Text(_)));
        if !plain || v.get("max_tokens").and_then(|m| m.as_u64()) != Some(2048) {
            continue;
        }
        let msgs: Vec<serde_json::Value> = conv
            .messages
            .iter()
            .map(|m| serde_json::json!({"role": m.role.as_str(), "content": m.content.to_plain_text()}))
            .collect();
        let text = env
            .get_template("chat")
            .unwrap()
            .render(minijinja::context! { messages => msgs, add_generation_prompt => false })
            .unwrap();
        let ids: Vec<u32> = hf.encode(text.as_str(), false).unwrap().get_ids().to_vec();
        assert_eq!(
            ids,
            t.render_conversation(&conv, 2048).unwrap().0,
            "{text:?}"
        );
    }

    // config.json describes the model; the weights map back onto it exactly.
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["model_type"], "nanochat");
    assert_eq!(cfg["num_key_value_heads"], 1);
    assert_eq!(cfg["rope_parameters"]["rope_theta"], 10_000.0);
    let (back, format) = import_hf::<B>(dir.path(), &Default::default()).unwrap();
    assert_eq!(format, HfFormat::Builtin);
    assert_eq!(back.config(), m.config());
    same_logits(&m, &back);
    // tokenizer.json reads back to the same ranks and special tokens.
    let hf = hf_tokenizer(&dir.path().join("tokenizer.json")).unwrap();
    assert_eq!(hf.vocabulary.ranks(), t.vocab().ranks());
    assert_eq!(hf.pattern, t.config().pattern);
    for (name, id) in hf.special_tokens {
        assert_eq!(t.config().special_tokens.id(&name), Some(id), "{name}");
    }
}

#[test]
fn head_architecture_exports_with_remote_code_and_imports_back() {
    let t = tok();
    let head = ModelConfig {
        sequence_len: 512,
        vocab_size: t.vocab_size(),
        n_layer: 3,
        n_head: 2,
        n_kv_head: 1,
        n_embd: 64,
        window_pattern: "SL".into(),
        ..ModelConfig::default()
    };
    let m = Gpt::<B>::init(&head, &Default::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let format = export_hf(&m, t.config(), t.vocab(), dir.path(), None).unwrap();
    assert_eq!(format, HfFormat::RemoteCode);
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["model_type"], "nanochat_rs");
    assert_eq!(
        cfg["auto_map"]["AutoModelForCausalLM"],
        "modeling_nanochat_rs.NanoChatRsForCausalLM"
    );
    assert_eq!(cfg["padded_vocab_size"], head.padded_vocab_size());
    for (file, code) in REMOTE_CODE {
        assert_eq!(
            std::fs::read_to_string(dir.path().join(file)).unwrap(),
            code
        );
    }
    let (back, format) = import_hf::<B>(dir.path(), &Default::default()).unwrap();
    assert_eq!(format, HfFormat::RemoteCode);
    assert_eq!(back.config().window_pattern, "SL");
    same_logits(&m, &back);
    // Not a nanochat folder: refused, naming the file, the field and the value.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(
        other.path().join("config.json"),
        r#"{"model_type": "llama"}"#,
    )
    .unwrap();
    std::fs::copy(
        dir.path().join("model.safetensors"),
        other.path().join("model.safetensors"),
    )
    .unwrap();
    let err = import_hf::<B>(other.path(), &Default::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("config.json: model_type = \"llama\": must be \"nanochat\""),
        "{err}"
    );
}
