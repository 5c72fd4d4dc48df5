//! Export to a Hugging Face folder: refused for features transformers' NanoChat lacks; for the
//! original architecture the tokenizer encodes like ours (checked with the `tokenizers` crate),
//! the chat template renders like `render_conversation`, and the weights map back exactly.

use std::collections::BTreeMap;

use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};
use nanochat_core::paths::tokenizer_fixture_dir;
use nanochat_core::{Conversation, ModelConfig};
use nanochat_model::Gpt;
use nanochat_model::hf_export::{CHAT_TEMPLATE, ExportError, export_hf};
use nanochat_model::weights::{load_named, read_safetensors};
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

#[test]
fn head_architecture_is_refused_with_reasons() {
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
    let err = export_hf(&m, t.config(), t.vocab(), dir.path()).unwrap_err();
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
    export_hf(&m, t.config(), t.vocab(), dir.path()).unwrap();

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
    let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    let hf_tensors = read_safetensors(&bytes, "", "model.safetensors".as_ref()).unwrap();
    let back_names: BTreeMap<&str, &str> = [
        ("model.embed_tokens.weight", "transformer.wte.weight"),
        ("lm_head.weight", "lm_head.weight"),
    ]
    .into_iter()
    .collect();
    let renamed: Vec<(String, TensorData)> = hf_tensors
        .into_iter()
        .map(|(n, d)| {
            let ours = back_names
                .get(n.as_str())
                .map(|s| s.to_string())
                .unwrap_or_else(|| {
                    n.replace("model.layers.", "transformer.h.")
                        .replace("self_attn.q_proj", "attn.c_q")
                        .replace("self_attn.k_proj", "attn.c_k")
                        .replace("self_attn.v_proj", "attn.c_v")
                        .replace("self_attn.o_proj", "attn.c_proj")
                        .replace("mlp.fc1", "mlp.c_fc")
                        .replace("mlp.fc2", "mlp.c_proj")
                });
            (ours, d)
        })
        .collect();
    let mut back = Gpt::<B>::init(&config, &Default::default()).unwrap();
    load_named(&mut back, renamed, "model.safetensors".as_ref()).unwrap();
    let idx = Tensor::<B, 2, Int>::from_data(
        TensorData::new(
            (0..32i64).map(|i| i * 61 % 2048).collect::<Vec<_>>(),
            [1, 32],
        ),
        &Default::default(),
    );
    let (a, b) = (
        m.forward(idx.clone(), None).into_data(),
        back.forward(idx, None).into_data(),
    );
    assert_eq!(a.as_bytes(), b.as_bytes());
}
