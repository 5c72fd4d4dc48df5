//! Sampling parameters of a generation request (upstream `Engine.generate` knobs plus the
//! standard ones users expect from OpenAI-style servers: top-p, min-p, repetition, presence
//! and frequency penalties, logit bias, stop strings, seed).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::validation::{
    Interval, VResult, Validate, check_at_most, check_positive, check_positive_f, check_range,
};

const ENTITY: &str = "GenerationParams";

/// How to sample a completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerationParams {
    /// Softmax temperature in [0, 2]; 0 means greedy (argmax).
    pub temperature: f64,
    /// Keep only the k most likely tokens; `None` (or 0 in JSON/CLI) turns the filter off.
    #[serde(with = "crate::serde_util::zero_is_none")]
    pub top_k: Option<usize>,
    /// Nucleus sampling: keep the smallest set of tokens with probability mass ≥ top_p.
    pub top_p: f64,
    /// Drop tokens whose probability is below `min_p` × the top token's.
    pub min_p: f64,
    /// Divide positive logits (multiply negative ones) of recently seen tokens by this; 1 = off.
    pub repetition_penalty: f64,
    /// How many recent tokens the repetition penalty looks at.
    pub repetition_window: usize,
    /// OpenAI's presence penalty in [-2, 2]: subtracted once from the logit of every token
    /// already in the completion.
    pub presence_penalty: f64,
    /// OpenAI's frequency penalty in [-2, 2]: subtracted from a token's logit once per time it
    /// is already in the completion.
    pub frequency_penalty: f64,
    /// Added to the logits of these token ids before sampling, each in [-100, 100] (OpenAI's
    /// `logit_bias`; -100 bans a token, 100 forces it).
    #[serde(with = "crate::serde_util::token_keys")]
    pub logit_bias: BTreeMap<u32, f64>,
    /// Maximum new tokens.
    pub max_tokens: usize,
    /// Seed of the sampler; the same seed gives the same text.
    pub seed: Option<u64>,
    /// Stop when the text ends with one of these (the stop string is not returned).
    pub stop: Vec<String>,
    /// Completions per prompt.
    pub num_samples: usize,
    /// Report each generated token's log-probability under the model (its raw distribution:
    /// before temperature, penalties and filters) with this many most likely alternatives,
    /// 0–[`MAX_TOP_LOGPROBS`] (OpenAI's `logprobs` / `top_logprobs`); `None`: off.
    pub logprobs: Option<usize>,
    /// Constrain the completion to JSON (OpenAI's `response_format`); `None`: free text.
    pub response_format: Option<ResponseFormat>,
}

/// A shape the completion's text must have (OpenAI's `response_format`, less `text`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ResponseFormat {
    /// Any JSON object.
    JsonObject,
    /// JSON valid under this JSON Schema.
    JsonSchema {
        /// The schema (a JSON object).
        schema: serde_json::Value,
    },
}

/// The most alternatives `logprobs` reports per token (OpenAI's limit for `top_logprobs`).
pub const MAX_TOP_LOGPROBS: usize = 20;

impl Default for GenerationParams {
    /// Upstream's web defaults: temperature 0.8, top-k 50, 512 tokens.
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: Some(50),
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            repetition_window: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: BTreeMap::new(),
            max_tokens: 512,
            seed: None,
            stop: Vec::new(),
            num_samples: 1,
            logprobs: None,
            response_format: None,
        }
    }
}

impl GenerationParams {
    /// Greedy decoding of up to `max_tokens`.
    pub fn greedy(max_tokens: usize) -> Self {
        Self {
            temperature: 0.0,
            top_k: None,
            max_tokens,
            ..Self::default()
        }
    }

    /// Checks the rules that need the model: `top_k <= vocab_size`, every `logit_bias` id
    /// below `vocab_size`, and `max_tokens <= remaining_context`.
    pub fn validate_for(&self, vocab_size: usize, remaining_context: usize) -> VResult {
        self.validate()?;
        if let Some(k) = self.top_k {
            check_at_most(ENTITY, "top_k", k as u64, "vocab_size", vocab_size as u64)?;
        }
        if let Some(&id) = self.logit_bias.keys().next_back() {
            check_at_most(
                ENTITY,
                "logit_bias",
                u64::from(id) + 1,
                "vocab_size (token ids are below it)",
                vocab_size as u64,
            )?;
        }
        check_at_most(
            ENTITY,
            "max_tokens",
            self.max_tokens as u64,
            "remaining context",
            remaining_context as u64,
        )
    }
}

impl Validate for GenerationParams {
    fn validate(&self) -> VResult {
        check_range(
            ENTITY,
            "temperature",
            self.temperature,
            Interval::closed(0.0, 2.0),
        )?;
        if let Some(k) = self.top_k {
            check_positive(ENTITY, "top_k", k as u64)?;
        }
        check_range(ENTITY, "top_p", self.top_p, Interval::open_closed(0.0, 1.0))?;
        check_range(ENTITY, "min_p", self.min_p, Interval::closed(0.0, 1.0))?;
        check_positive_f(ENTITY, "repetition_penalty", self.repetition_penalty)?;
        let penalty = Interval::closed(-2.0, 2.0);
        check_range(ENTITY, "presence_penalty", self.presence_penalty, penalty)?;
        check_range(ENTITY, "frequency_penalty", self.frequency_penalty, penalty)?;
        for (id, &bias) in &self.logit_bias {
            let field = format!("logit_bias[{id}]");
            check_range(ENTITY, &field, bias, Interval::closed(-100.0, 100.0))?;
        }
        check_positive(ENTITY, "max_tokens", self.max_tokens as u64)?;
        check_positive(ENTITY, "num_samples", self.num_samples as u64)?;
        if let Some(k) = self.logprobs {
            check_at_most(
                ENTITY,
                "logprobs",
                k as u64,
                "MAX_TOP_LOGPROBS",
                MAX_TOP_LOGPROBS as u64,
            )?;
        }
        for (i, s) in self.stop.iter().enumerate() {
            if s.is_empty() {
                return Err(crate::validation::ValidationError::new(
                    ENTITY,
                    format!("stop[{i}]"),
                    "\"\"",
                    crate::validation::Rule::NotEmpty,
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logit_bias_reads_openai_string_keys_and_checks_ids_and_range() {
        let p: GenerationParams =
            serde_json::from_str(r#"{"logit_bias": {"7": -100, "300": 5.5}}"#).unwrap();
        assert_eq!(p.logit_bias[&7], -100.0);
        p.validate_for(301, 512).unwrap();
        let e = p.validate_for(300, 512).unwrap_err();
        assert_eq!(e.field, "logit_bias");
        let e =
            serde_json::from_str::<GenerationParams>(r#"{"logit_bias": {"x": 1}}"#).unwrap_err();
        assert!(e.to_string().contains("\"x\" is not a token id"), "{e}");
        let far: GenerationParams = serde_json::from_str(r#"{"logit_bias": {"3": 101}}"#).unwrap();
        assert_eq!(far.validate().unwrap_err().field, "logit_bias[3]");
        let p: GenerationParams = serde_json::from_str(r#"{"presence_penalty": -2.5}"#).unwrap();
        assert_eq!(p.validate().unwrap_err().field, "presence_penalty");
    }

    #[test]
    fn zero_top_k_means_off() {
        let p: GenerationParams = serde_json::from_str(r#"{"top_k": 0}"#).unwrap();
        assert_eq!(p.top_k, None);
        p.validate().unwrap();
    }
}
