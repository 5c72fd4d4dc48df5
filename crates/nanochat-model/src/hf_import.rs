//! Import of a Hugging Face folder into a model here: the two formats `nanochat export` writes
//! ([`HfFormat`]: transformers' built-in `NanoChatForCausalLM`, also what others upload in that
//! format, and this project's remote-code `nanochat_rs`), so a model round-trips. The folder's
//! `config.json` decides; anything else is refused, naming the file, the field and the value.
//!
//! Weights come from `model.safetensors` or the shards listed in
//! `model.safetensors.index.json`. Built-in names are mapped back to upstream's
//! ([`crate::hf_export::BUILTIN_LAYER_NAMES`]); remote-code folders already use upstream's
//! names. `tokenizer.json` is read back into mergeable ranks, a split pattern and special tokens
//! ([`hf_tokenizer`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::TensorData;
use burn::tensor::backend::Backend;
use nanochat_core::{ModelConfig, Validate, Vocabulary};
use serde_json::Value;

use crate::gpt::Gpt;
use crate::hf_export::{BUILTIN_LAYER_NAMES, HfFormat, bytes_to_unicode};
use crate::weights::{WeightsError, load_named, read_safetensors};

/// Why a Hugging Face folder cannot be imported.
#[derive(Debug, thiserror::Error)]
pub enum HfImportError {
    /// A file is missing or unreadable.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A field has a value this import cannot represent.
    #[error("{path}: {field} = {value}: {rule}")]
    Field {
        /// The file.
        path: PathBuf,
        /// The field.
        field: String,
        /// Its value.
        value: String,
        /// What it must be.
        rule: String,
    },
    /// The weights do not fit the configuration.
    #[error(transparent)]
    Weights(#[from] WeightsError),
}

/// Whether `dir` looks like a Hugging Face model folder (`config.json` and safetensors).
pub fn is_hf_folder(dir: &Path) -> bool {
    dir.join("config.json").is_file()
        && (dir.join("model.safetensors").is_file()
            || dir.join("model.safetensors.index.json").is_file())
}

fn read_json(path: &Path) -> Result<Value, HfImportError> {
    let text = std::fs::read_to_string(path).map_err(|e| HfImportError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| HfImportError::File {
        path: path.to_path_buf(),
        reason: format!("not JSON: {e}"),
    })
}

/// Reads `config.json`: the model's configuration and which format the folder is in.
pub fn hf_model_config(dir: &Path) -> Result<(ModelConfig, HfFormat), HfImportError> {
    let path = dir.join("config.json");
    let v = read_json(&path)?;
    let field = |name: &str, value: &Value, rule: &str| HfImportError::Field {
        path: path.clone(),
        field: name.to_string(),
        value: value.to_string(),
        rule: rule.to_string(),
    };
    let usize_of = |name: &str| -> Result<usize, HfImportError> {
        let x = &v[name];
        x.as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| field(name, x, "must be a non-negative integer"))
    };
    let f64_of = |x: &Value, name: &str| -> Result<f64, HfImportError> {
        x.as_f64().ok_or_else(|| field(name, x, "must be a number"))
    };
    let bool_of = |name: &str| -> Result<bool, HfImportError> {
        v[name]
            .as_bool()
            .ok_or_else(|| field(name, &v[name], "must be true or false"))
    };
    let (config, format) = match v["model_type"].as_str() {
        Some("nanochat") => {
            let n_embd = usize_of("hidden_size")?;
            let n_head = usize_of("num_attention_heads")?;
            if v["hidden_act"] != "relu2" {
                return Err(field("hidden_act", &v["hidden_act"], "must be \"relu2\""));
            }
            if !v["head_dim"].is_null() && v["head_dim"].as_u64() != Some((n_embd / n_head) as u64)
            {
                return Err(field(
                    "head_dim",
                    &v["head_dim"],
                    "must be hidden_size / heads",
                ));
            }
            if v["attention_bias"].as_bool() == Some(true) {
                return Err(field(
                    "attention_bias",
                    &v["attention_bias"],
                    "must be false",
                ));
            }
            if v["tie_word_embeddings"].as_bool() == Some(true) {
                return Err(field(
                    "tie_word_embeddings",
                    &v["tie_word_embeddings"],
                    "must be false",
                ));
            }
            let theta = if v["rope_parameters"]["rope_theta"].is_null() {
                &v["rope_theta"]
            } else {
                &v["rope_parameters"]["rope_theta"]
            };
            let softcap = &v["final_logit_softcapping"];
            let mut c = ModelConfig {
                sequence_len: usize_of("max_position_embeddings")?,
                vocab_size: usize_of("vocab_size")?,
                n_layer: usize_of("num_hidden_layers")?,
                n_head,
                n_kv_head: usize_of("num_key_value_heads")?,
                n_embd,
                ..ModelConfig::default()
            }
            .with_v0_features();
            c.rope_base = f64_of(theta, "rope_parameters.rope_theta")?;
            c.logit_softcap = if softcap.is_null() {
                0.0
            } else {
                f64_of(softcap, "final_logit_softcapping")?
            };
            (c, HfFormat::Builtin)
        }
        Some("nanochat_rs") => {
            let window = &v["window_pattern"];
            let c = ModelConfig {
                sequence_len: usize_of("sequence_len")?,
                vocab_size: usize_of("vocab_size")?,
                n_layer: usize_of("n_layer")?,
                n_head: usize_of("n_head")?,
                n_kv_head: usize_of("n_kv_head")?,
                n_embd: usize_of("n_embd")?,
                window_pattern: window
                    .as_str()
                    .ok_or_else(|| field("window_pattern", window, "must be a string"))?
                    .to_string(),
                rope_base: f64_of(&v["rope_base"], "rope_base")?,
                value_embeds: bool_of("value_embeds")?,
                smear: bool_of("smear")?,
                backout: bool_of("backout")?,
                layer_lambdas: bool_of("layer_lambdas")?,
                qk_scale: f64_of(&v["qk_scale"], "qk_scale")?,
                logit_softcap: f64_of(&v["logit_softcap"], "logit_softcap")?,
                vocab_pad_multiple: usize_of("vocab_pad_multiple")?,
                ..ModelConfig::default()
            };
            (c, HfFormat::RemoteCode)
        }
        _ => {
            return Err(field(
                "model_type",
                &v["model_type"],
                "must be \"nanochat\" (transformers' NanoChatForCausalLM) or \"nanochat_rs\" \
                 (exported by nanochat-rs with remote code)",
            ));
        }
    };
    config.validate().map_err(|e| HfImportError::Field {
        path: path.clone(),
        field: e.field.clone(),
        value: String::new(),
        rule: e.to_string(),
    })?;
    Ok((config, format))
}

/// Every tensor of the folder's safetensors file(s), with upstream's names.
fn read_weights(dir: &Path, format: HfFormat) -> Result<Vec<(String, TensorData)>, HfImportError> {
    let index = dir.join("model.safetensors.index.json");
    let files: Vec<PathBuf> = if index.is_file() {
        let v = read_json(&index)?;
        let map = v["weight_map"]
            .as_object()
            .ok_or_else(|| HfImportError::File {
                path: index.clone(),
                reason: "no weight_map object".into(),
            })?;
        let mut names: Vec<&str> = map.values().filter_map(Value::as_str).collect();
        names.sort();
        names.dedup();
        names.into_iter().map(|n| dir.join(n)).collect()
    } else {
        vec![dir.join("model.safetensors")]
    };
    let back: BTreeMap<&str, &str> = BUILTIN_LAYER_NAMES.iter().map(|(o, h)| (*h, *o)).collect();
    let mut out = Vec::new();
    for file in files {
        let bytes = std::fs::read(&file).map_err(|e| HfImportError::File {
            path: file.clone(),
            reason: e.to_string(),
        })?;
        for (name, data) in read_safetensors(&bytes, "", &file)? {
            let ours = match format {
                HfFormat::RemoteCode => name,
                HfFormat::Builtin => match name.as_str() {
                    "model.embed_tokens.weight" => "transformer.wte.weight".to_string(),
                    "lm_head.weight" => name,
                    _ => name
                        .strip_prefix("model.layers.")
                        .and_then(|rest| rest.split_once('.'))
                        .and_then(|(layer, param)| {
                            back.get(param)
                                .map(|p| format!("transformer.h.{layer}.{p}"))
                        })
                        .ok_or_else(|| HfImportError::Field {
                            path: file.clone(),
                            field: "tensor".into(),
                            value: name.clone(),
                            rule: "not a parameter of transformers' NanoChatForCausalLM".into(),
                        })?,
                },
            };
            out.push((ours, data));
        }
    }
    Ok(out)
}

/// Loads the folder's model on `device`; every parameter must be present with its shape.
pub fn import_hf<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(Gpt<B>, HfFormat), HfImportError> {
    let (config, format) = hf_model_config(dir)?;
    let tensors = read_weights(dir, format)?;
    let mut model = Gpt::<B>::skeleton(&config, device).map_err(|e| HfImportError::Field {
        path: dir.join("config.json"),
        field: e.field.clone(),
        value: String::new(),
        rule: e.to_string(),
    })?;
    load_named(&mut model, tensors, &dir.join("model.safetensors"))?;
    Ok((model, format))
}

/// What `tokenizer.json` holds, read back.
#[derive(Debug, Clone)]
pub struct HfTokenizer {
    /// Mergeable ranks: token bytes by id.
    pub vocabulary: Vocabulary,
    /// The split pattern.
    pub pattern: String,
    /// Special tokens and their ids.
    pub special_tokens: Vec<(String, u32)>,
}

/// Reads `tokenizer.json` (byte-level BPE, as `export` writes it).
pub fn hf_tokenizer(path: &Path) -> Result<HfTokenizer, HfImportError> {
    let v = read_json(path)?;
    let field = |name: &str, value: &Value, rule: &str| HfImportError::Field {
        path: path.to_path_buf(),
        field: name.to_string(),
        value: value.to_string(),
        rule: rule.to_string(),
    };
    if v["model"]["type"] != "BPE" {
        return Err(field("model.type", &v["model"]["type"], "must be \"BPE\""));
    }
    let mut byte_of = BTreeMap::new();
    for (b, c) in bytes_to_unicode().iter().enumerate() {
        byte_of.insert(*c, b as u8);
    }
    let vocab = v["model"]["vocab"]
        .as_object()
        .ok_or_else(|| field("model.vocab", &Value::Null, "must be an object"))?;
    let mut tokens: Vec<Option<Vec<u8>>> = vec![None; vocab.len()];
    for (text, id) in vocab {
        let id = id
            .as_u64()
            .filter(|&i| (i as usize) < tokens.len())
            .ok_or_else(|| field("model.vocab", id, "ids must be 0..len without gaps"))?;
        let bytes = text
            .chars()
            .map(|c| byte_of.get(&c).copied())
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| {
                field(
                    "model.vocab",
                    &Value::String(text.clone()),
                    "not byte-level BPE",
                )
            })?;
        tokens[id as usize] = Some(bytes);
    }
    let tokens: Vec<Vec<u8>> = tokens.into_iter().collect::<Option<_>>().ok_or_else(|| {
        field(
            "model.vocab",
            &Value::Null,
            "ids must be 0..len without gaps",
        )
    })?;
    let vocabulary = Vocabulary::from_tokens(tokens).map_err(|e| HfImportError::Field {
        path: path.to_path_buf(),
        field: "model.vocab".into(),
        value: String::new(),
        rule: e.to_string(),
    })?;
    let pattern = v["pre_tokenizer"]["pretokenizers"]
        .as_array()
        .and_then(|p| p.iter().find_map(|s| s["pattern"]["Regex"].as_str()))
        .ok_or_else(|| {
            field(
                "pre_tokenizer",
                &v["pre_tokenizer"],
                "must have a Split with a Regex pattern",
            )
        })?
        .to_string();
    let special_tokens = v["added_tokens"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| {
                    Some((t["content"].as_str()?.to_string(), t["id"].as_u64()? as u32))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(HfTokenizer {
        vocabulary,
        pattern,
        special_tokens,
    })
}
