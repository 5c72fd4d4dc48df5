//! Export to a Hugging Face folder that transformers loads, in one of two formats:
//!
//! - **built-in** ([`HfFormat::Builtin`]): transformers' own `NanoChatForCausalLM`
//!   (`model_type: "nanochat"`), which implements the original architecture: RoPE,
//!   parameter-free QK-norm, ReLU² MLP, untied embeddings, logit soft cap, full causal
//!   attention. Weights under its names, vocabulary padding rows cropped. A model using
//!   anything else (value embeddings, smear, backout, per-layer lambdas, sliding windows, a q/k
//!   scale other than 1) cannot be expressed in it: the export refuses with the list of such
//!   features.
//! - **remote code** ([`HfFormat::RemoteCode`]): the current architecture, with this project's
//!   own transformers code in the folder (`configuration_nanochat_rs.py`,
//!   `modeling_nanochat_rs.py`, from `src/hf_remote/`, a port of upstream HEAD's `gpt.py`),
//!   named by `auto_map` in `config.json`: `from_pretrained(dir, trust_remote_code=True)`.
//!   Weights keep upstream's names and shapes (padded vocabulary rows included).
//!
//! Both carry the tokenizer as `tokenizer.json` (byte-level BPE), `tokenizer_config.json` (with
//! a chat template that renders like `render_conversation`) and `special_tokens_map.json`,
//! and `generation_config.json`. `cargo xtask hf-check` loads both kinds in transformers and
//! compares logits, greedy generation and the chat template with ours (docs/interop.md).

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::TensorData;
use burn::tensor::backend::Backend;
use nanochat_core::fs::write_atomic;
use nanochat_core::model_config::{SMEAR_GATE_CHANNELS, VE_GATE_CHANNELS};
use nanochat_core::{TokenizerConfig, Vocabulary};
use serde_json::{Value, json};

use crate::gpt::Gpt;
use crate::weights::{WeightsError, named_tensors, to_safetensors};

/// Why a model cannot be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The architecture uses features transformers' NanoChat does not have.
    #[error(
        "transformers' built-in NanoChat class cannot express this model: it uses {}. Export it \
         with remote code (`--format remote-code`, the default for such models), or train the \
         original architecture (`base-train --arch v0`)",
        .0.join(", ")
    )]
    Unsupported(Vec<String>),
    /// The tokenizer does not belong to the model.
    #[error("tokenizer vocabulary {tokenizer} does not match the model's vocab_size {model}")]
    VocabMismatch {
        /// Tokenizer vocabulary size.
        tokenizer: usize,
        /// Model vocabulary size.
        model: usize,
    },
    /// Tensors or files.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// Writing.
    #[error(transparent)]
    Io(#[from] nanochat_core::fs::IoError),
    /// The tokenizer's ranks are not a merge sequence.
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] nanochat_core::ValidationError),
}

/// Which Hugging Face format an export writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HfFormat {
    /// transformers' built-in `NanoChatForCausalLM` (original architecture only).
    Builtin,
    /// This project's transformers code shipped in the folder (any architecture here).
    RemoteCode,
}

impl HfFormat {
    /// The built-in format when the model fits it, else remote code.
    pub fn for_model(config: &nanochat_core::ModelConfig) -> Self {
        if unsupported_features(config).is_empty() {
            Self::Builtin
        } else {
            Self::RemoteCode
        }
    }

    /// Its name in flags and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Builtin => "builtin",
            Self::RemoteCode => "remote-code",
        }
    }
}

/// The transformers code of the remote-code format, written into the folder as is.
pub const REMOTE_CODE: [(&str, &str); 2] = [
    (
        "configuration_nanochat_rs.py",
        include_str!("hf_remote/configuration_nanochat_rs.py"),
    ),
    (
        "modeling_nanochat_rs.py",
        include_str!("hf_remote/modeling_nanochat_rs.py"),
    ),
];

/// The features of `config` that transformers' built-in NanoChat cannot represent.
pub fn unsupported_features(config: &nanochat_core::ModelConfig) -> Vec<String> {
    let mut out = Vec::new();
    if config.value_embeds {
        out.push("value embeddings".to_string());
    }
    if config.smear {
        out.push("smear".to_string());
    }
    if config.backout {
        out.push("backout".to_string());
    }
    if config.layer_lambdas {
        out.push("per-layer resid/x0 lambdas".to_string());
    }
    if config
        .window_sizes()
        .iter()
        .any(|w| w.left < config.sequence_len)
    {
        out.push(format!(
            "sliding windows (pattern {:?})",
            config.window_pattern
        ));
    }
    if config.qk_scale != 1.0 {
        out.push(format!("q/k scale {}", config.qk_scale));
    }
    if config.dropout != 0.0 {
        out.push(format!("dropout {}", config.dropout));
    }
    out
}

/// GPT-2's reversible byte → printable character map used by byte-level BPE files.
pub fn bytes_to_unicode() -> [char; 256] {
    let mut map = ['\0'; 256];
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut extra = 0;
    for b in 0..256u32 {
        map[b as usize] = if printable(b) {
            char::from_u32(b).expect("latin-1")
        } else {
            extra += 1;
            char::from_u32(255 + extra).expect("valid code point")
        };
    }
    map
}

fn token_string(map: &[char; 256], bytes: &[u8]) -> String {
    bytes.iter().map(|&b| map[b as usize]).collect()
}

/// `tokenizer.json` in the `tokenizers` library's format.
pub fn tokenizer_json(config: &TokenizerConfig, vocab: &Vocabulary) -> Result<Value, ExportError> {
    let map = bytes_to_unicode();
    let tokens: serde_json::Map<String, Value> = vocab
        .tokens()
        .iter()
        .enumerate()
        .map(|(id, b)| (token_string(&map, b), json!(id)))
        .collect();
    let merges: Vec<Value> = vocab
        .recover_merges()?
        .into_iter()
        .map(|(a, b)| {
            let s = |id: u32| {
                token_string(&map, vocab.token_bytes(id).expect("merge parts are tokens"))
            };
            json!([s(a), s(b)])
        })
        .collect();
    let mut specials: Vec<(&str, u32)> = config.special_tokens.assigned().collect();
    specials.sort_by_key(|(_, id)| *id);
    let added: Vec<Value> = specials
        .iter()
        .map(|(name, id)| {
            json!({"id": id, "content": name, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": config.pattern}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
        ]},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": tokens, "merges": merges
        }
    }))
}

/// A Jinja chat template that renders like `render_conversation` + `render_for_completion`:
/// a leading system message is merged into the first user message with a blank line.
pub const CHAT_TEMPLATE: &str = "<|bos|>{% set ns = namespace(system='') %}{% for message in messages %}\
{% if message['role'] == 'system' %}{% set ns.system = message['content'] + '\\n\\n' %}\
{% elif message['role'] == 'user' %}<|user_start|>{{ ns.system }}{{ message['content'] }}<|user_end|>{% set ns.system = '' %}\
{% elif message['role'] == 'assistant' %}<|assistant_start|>{{ message['content'] }}<|assistant_end|>{% endif %}{% endfor %}\
{% if add_generation_prompt %}<|assistant_start|>{% endif %}";

fn special(config: &TokenizerConfig, name: &str) -> u32 {
    config
        .special_tokens
        .id(name)
        .expect("validated tokenizers have every special token")
}

/// Writes the folder in `format` (None: [`HfFormat::for_model`]) and returns the format
/// written. `vocab`/`tokenizer` must be the model's tokenizer. Asking for the built-in
/// format for a model it cannot express is refused with the features in the way.
pub fn export_hf<B: Backend>(
    model: &Gpt<B>,
    tokenizer: &TokenizerConfig,
    vocab: &Vocabulary,
    dir: &Path,
    format: Option<HfFormat>,
) -> Result<HfFormat, ExportError> {
    let c = model.config();
    let format = format.unwrap_or_else(|| HfFormat::for_model(c));
    if format == HfFormat::Builtin {
        let unsupported = unsupported_features(c);
        if !unsupported.is_empty() {
            return Err(ExportError::Unsupported(unsupported));
        }
    }
    if tokenizer.vocab_size != c.vocab_size {
        return Err(ExportError::VocabMismatch {
            tokenizer: tokenizer.vocab_size,
            model: c.vocab_size,
        });
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| nanochat_core::fs::IoError::new("create directory", dir, e))?;
    let (bos, end) = (
        special(tokenizer, "<|bos|>"),
        special(tokenizer, "<|assistant_end|>"),
    );
    let (tensors, mut config) = match format {
        HfFormat::Builtin => (builtin_tensors(model)?, builtin_config(c)),
        HfFormat::RemoteCode => (named_tensors(model)?, remote_config(c)),
    };
    for (key, value) in [
        ("bos_token_id", json!(bos)),
        ("eos_token_id", json!([end, bos])),
        ("pad_token_id", json!(bos)),
        ("tie_word_embeddings", json!(false)),
        ("torch_dtype", json!("float32")),
    ] {
        config[key] = value;
    }
    let meta = [("format".to_string(), "pt".to_string())]
        .into_iter()
        .collect();
    write_atomic(
        &dir.join("model.safetensors"),
        &to_safetensors(&tensors, Some(meta))?,
    )?;
    if format == HfFormat::RemoteCode {
        for (file, code) in REMOTE_CODE {
            write_atomic(&dir.join(file), code.as_bytes())?;
        }
    }
    let generation = json!({"bos_token_id": bos, "eos_token_id": [end, bos], "pad_token_id": bos});
    let tok_config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|bos|>",
        "eos_token": "<|assistant_end|>",
        "pad_token": "<|bos|>",
        "model_max_length": c.sequence_len,
        "clean_up_tokenization_spaces": false,
        "chat_template": CHAT_TEMPLATE,
    });
    let special_map =
        json!({"bos_token": "<|bos|>", "eos_token": "<|assistant_end|>", "pad_token": "<|bos|>"});
    for (file, value) in [
        ("config.json", config),
        ("generation_config.json", generation),
        ("tokenizer.json", tokenizer_json(tokenizer, vocab)?),
        ("tokenizer_config.json", tok_config),
        ("special_tokens_map.json", special_map),
    ] {
        let text = serde_json::to_string_pretty(&value).expect("json") + "\n";
        write_atomic(&dir.join(file), text.as_bytes())?;
    }
    Ok(format)
}

/// transformers' name for one of upstream's tensor names (built-in format).
pub fn builtin_name(name: &str) -> Option<String> {
    if name == "transformer.wte.weight" {
        return Some("model.embed_tokens.weight".into());
    }
    if name == "lm_head.weight" {
        return Some(name.into());
    }
    let rest = name.strip_prefix("transformer.h.")?;
    let (layer, param) = rest.split_once('.')?;
    let hf = BUILTIN_LAYER_NAMES
        .iter()
        .find(|(ours, _)| *ours == param)?
        .1;
    Some(format!("model.layers.{layer}.{hf}"))
}

/// Upstream's per-layer parameter names and transformers' built-in ones.
pub const BUILTIN_LAYER_NAMES: [(&str, &str); 6] = [
    ("attn.c_q.weight", "self_attn.q_proj.weight"),
    ("attn.c_k.weight", "self_attn.k_proj.weight"),
    ("attn.c_v.weight", "self_attn.v_proj.weight"),
    ("attn.c_proj.weight", "self_attn.o_proj.weight"),
    ("mlp.c_fc.weight", "mlp.fc1.weight"),
    ("mlp.c_proj.weight", "mlp.fc2.weight"),
];

/// The weights under transformers' built-in names, vocabulary padding rows cropped.
fn builtin_tensors<B: Backend>(model: &Gpt<B>) -> Result<Vec<(String, TensorData)>, ExportError> {
    let vocab_size = model.config().vocab_size;
    let mut out: BTreeMap<String, TensorData> = BTreeMap::new();
    for (name, data) in named_tensors(model)? {
        let hf = builtin_name(&name)
            .ok_or_else(|| ExportError::Unsupported(vec![format!("tensor {name}")]))?;
        let data = if hf.ends_with("embed_tokens.weight") || hf == "lm_head.weight" {
            let cols = data.shape[1];
            let v: Vec<f32> = data.to_vec::<f32>().map_err(|e| WeightsError::Unreadable {
                path: name.clone().into(),
                reason: format!("{e:?}"),
            })?;
            TensorData::new(v[..vocab_size * cols].to_vec(), [vocab_size, cols])
        } else {
            data
        };
        out.insert(hf, data);
    }
    Ok(out.into_iter().collect())
}

fn builtin_config(c: &nanochat_core::ModelConfig) -> Value {
    json!({
        "architectures": ["NanoChatForCausalLM"],
        "model_type": "nanochat",
        "vocab_size": c.vocab_size,
        "hidden_size": c.n_embd,
        "intermediate_size": 4 * c.n_embd,
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "num_key_value_heads": c.n_kv_head,
        "head_dim": c.head_dim(),
        "max_position_embeddings": c.sequence_len,
        "hidden_act": "relu2",
        "rms_norm_eps": f32::EPSILON,
        "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_base},
        "final_logit_softcapping": if c.logit_softcap > 0.0 { json!(c.logit_softcap) } else { Value::Null },
        "attention_bias": false,
        "attention_dropout": 0.0,
    })
}

/// `config.json` of the remote-code format: upstream's `GPTConfig` fields and the switches of
/// [`nanochat_core::ModelConfig`], read by `configuration_nanochat_rs.py`.
fn remote_config(c: &nanochat_core::ModelConfig) -> Value {
    json!({
        "architectures": ["NanoChatRsForCausalLM"],
        "model_type": "nanochat_rs",
        "auto_map": {
            "AutoConfig": "configuration_nanochat_rs.NanoChatRsConfig",
            "AutoModelForCausalLM": "modeling_nanochat_rs.NanoChatRsForCausalLM",
        },
        "sequence_len": c.sequence_len,
        "vocab_size": c.vocab_size,
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "n_kv_head": c.n_kv_head,
        "n_embd": c.n_embd,
        "window_pattern": c.window_pattern,
        "rope_base": c.rope_base,
        "value_embeds": c.value_embeds,
        "smear": c.smear,
        "backout": c.backout,
        "layer_lambdas": c.layer_lambdas,
        "qk_scale": c.qk_scale,
        "logit_softcap": c.logit_softcap,
        "vocab_pad_multiple": c.vocab_pad_multiple,
        "padded_vocab_size": c.padded_vocab_size(),
        "ve_gate_channels": VE_GATE_CHANNELS,
        "smear_gate_channels": SMEAR_GATE_CHANNELS,
        "use_cache": true,
    })
}
