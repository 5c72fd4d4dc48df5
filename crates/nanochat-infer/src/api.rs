//! The OpenAI-compatible request types, their checks and the JSON error every endpoint answers
//! with (upstream v0 `scripts/chat_web.py`: its `ChatRequest`, `validate_chat_request` and
//! limits).
//!
//! Design: serde parses a request into typed fields (`stop` is a string or a list of strings,
//! a role is a [`MessageRole`], content a string or OpenAI text parts); a parse error is a 400
//! whose `param` is the top-level field serde stopped at (`body` for malformed JSON), found
//! with `serde_path_to_error`. The checks serde cannot express (upstream's limits, the context
//! left for the reply) follow in `ChatRequest::prepare`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use nanochat_core::conversation::{Conversation, Message, MessageRole};
use nanochat_core::{GenerationParams, ResponseFormat};
use nanochat_tokenizer::Tokenizer;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::engine::FinishReason;
use crate::sampling::TokenLogprobs;

/// Upstream's request limits.
pub mod limits {
    /// Messages per request.
    pub const MAX_MESSAGES: usize = 500;
    /// Characters per message.
    pub const MAX_MESSAGE_CHARS: usize = 8000;
    /// Characters over all messages.
    pub const MAX_TOTAL_CHARS: usize = 32000;
    /// Largest top_k.
    pub const MAX_TOP_K: usize = 200;
    /// Largest max_tokens.
    pub const MAX_TOKENS: usize = 4096;
    /// Largest n (choices per request).
    pub const MAX_CHOICES: usize = 8;
    /// Largest request body (bytes).
    pub const MAX_BODY: usize = 1 << 20;
}

/// A 4xx/5xx with an OpenAI-style JSON body naming the offending field.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    pub(crate) param: Option<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>, param: Option<&str>) -> Self {
        let (message, param) = (message.into(), param.map(str::to_string));
        Self {
            status,
            message,
            param,
        }
    }

    /// A 400 naming `param`.
    pub(crate) fn bad(param: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message, Some(param))
    }

    /// A 500 (a worker failed or stopped).
    pub(crate) fn internal(message: impl ToString) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message.to_string(), None)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = if self.status.is_client_error() {
            "invalid_request_error"
        } else {
            "server_error"
        };
        let body = json!({"error": {"message": self.message, "type": kind, "param": self.param}});
        (self.status, Json(body)).into_response()
    }
}

/// Parses a JSON body; a bad one is a 400 naming the top-level field where parsing failed
/// (`body` for malformed JSON or trailing characters).
pub(crate) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner().to_string();
        // A required top-level field that is absent has no path: its name is in the message.
        let missing = inner
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
            .filter(|_| e.path().iter().next().is_none());
        let param = match (e.path().iter().next(), missing) {
            (Some(serde_path_to_error::Segment::Map { key }), _) if e.inner().is_data() => key,
            (None, Some(field)) => field,
            _ => "body",
        };
        ApiError::bad(param, format!("invalid JSON request: {e}"))
    })?;
    de.end()
        .map_err(|e| ApiError::bad("body", format!("invalid JSON request: {e}")))?;
    Ok(value)
}

/// A message's content: a string or OpenAI's text parts `[{"type": "text", "text": …}, …]`.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "content must be a string or a list of text parts"
)]
enum Content {
    Text(String),
    Parts(Vec<TextPart>),
}

#[derive(Debug, Deserialize)]
struct TextPart {
    text: String,
}

impl Content {
    fn text(&self) -> String {
        match self {
            Content::Text(s) => s.clone(),
            Content::Parts(parts) => parts.iter().map(|p| p.text.as_str()).collect(),
        }
    }
}

/// `stop`: one string or a list of them, as the OpenAI API allows.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "stop must be a string or a list of strings")]
pub(crate) enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    /// The stop strings as a list.
    pub(crate) fn to_vec(&self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s.clone()],
            Stop::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct ApiMessage {
    role: MessageRole,
    content: Content,
}

/// A `/chat/completions` or `/v1/chat/completions` request; `/v1/completions` reads its
/// sampling fields through it too (with no `messages`), so they are defined once.
#[derive(Debug, Deserialize)]
pub(crate) struct ChatRequest {
    #[serde(default)]
    messages: Vec<ApiMessage>,
    pub(crate) stream: Option<bool>,
    temperature: Option<f64>,
    top_k: Option<usize>,
    top_p: Option<f64>,
    min_p: Option<f64>,
    repetition_penalty: Option<f64>,
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    #[serde(default, with = "nanochat_core::serde_util::token_keys")]
    logit_bias: std::collections::BTreeMap<u32, f64>,
    max_tokens: Option<usize>,
    max_completion_tokens: Option<usize>,
    seed: Option<u64>,
    stop: Option<Stop>,
    n: Option<usize>,
    /// Chat: `true` / `false`; text completions: the number of alternatives (0–20).
    logprobs: Option<Value>,
    top_logprobs: Option<usize>,
    pub(crate) stream_options: Option<Value>,
    response_format: Option<Value>,
}

/// Checks sampling knobs against upstream's limits; the error names the offending field.
pub(crate) fn check_sampling(
    temperature: f64,
    top_k: usize,
    max_tokens: usize,
) -> Result<(), ApiError> {
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::bad(
            "temperature",
            format!("temperature must be between 0 and 2, got {temperature}"),
        ));
    }
    if top_k > limits::MAX_TOP_K {
        let max = limits::MAX_TOP_K;
        return Err(ApiError::bad(
            "top_k",
            format!("top_k must be between 0 and {max}, got {top_k}"),
        ));
    }
    if !(1..=limits::MAX_TOKENS).contains(&max_tokens) {
        let max = limits::MAX_TOKENS;
        return Err(ApiError::bad(
            "max_tokens",
            format!("max_tokens must be between 1 and {max}, got {max_tokens}"),
        ));
    }
    Ok(())
}

impl ChatRequest {
    /// Whether a stream ends with `usage` (`stream_options.include_usage`).
    pub(crate) fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o["include_usage"].as_bool())
            .unwrap_or(false)
    }

    /// How many alternatives per token to report, if any: the chat endpoint's `logprobs:
    /// true` with `top_logprobs` (0–20), or text completions' `logprobs: <n>` (`legacy`).
    fn logprobs(&self, legacy: bool) -> Result<Option<usize>, ApiError> {
        let max = nanochat_core::MAX_TOP_LOGPROBS;
        let n = match (&self.logprobs, legacy) {
            (None | Some(Value::Null) | Some(Value::Bool(false)), false) => {
                if self.top_logprobs.is_some() {
                    return Err(ApiError::bad(
                        "top_logprobs",
                        "top_logprobs needs logprobs: true",
                    ));
                }
                return Ok(None);
            }
            (Some(Value::Bool(true)), false) => self.top_logprobs.unwrap_or(0),
            (None | Some(Value::Null), true) => return Ok(None),
            (Some(v), true) => v.as_u64().map_or(usize::MAX, |n| n as usize),
            (Some(_), false) => {
                return Err(ApiError::bad("logprobs", "logprobs must be true or false"));
            }
        };
        let field = if legacy { "logprobs" } else { "top_logprobs" };
        if n > max {
            return Err(ApiError::bad(
                field,
                format!("{field} must be an integer between 0 and {max}"),
            ));
        }
        Ok(Some(n))
    }

    /// OpenAI's `response_format`: `{"type": "text"}` (the default), `{"type":
    /// "json_object"}`, or `{"type": "json_schema", "json_schema": {"name", "schema",
    /// "strict"}}`. Chat only: a text completion with one is refused.
    fn response_format(&self, legacy: bool) -> Result<Option<ResponseFormat>, ApiError> {
        let Some(v) = self.response_format.as_ref().filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        let bad = |m: &str| Err(ApiError::bad("response_format", m));
        if legacy {
            return bad("response_format is for chat completions (/v1/chat/completions)");
        }
        match v.get("type").and_then(Value::as_str) {
            Some("text") => Ok(None),
            Some("json_object") => Ok(Some(ResponseFormat::JsonObject)),
            Some("json_schema") => match v.get("json_schema").map(|j| j.get("schema")) {
                Some(Some(schema)) if schema.is_object() => Ok(Some(ResponseFormat::JsonSchema {
                    schema: schema.clone(),
                })),
                Some(Some(_)) => bad("response_format.json_schema.schema must be a JSON object"),
                _ => bad("response_format.json_schema.schema is required"),
            },
            _ => bad(r#"response_format.type must be "text", "json_object" or "json_schema""#),
        }
    }

    /// The checked sampling parameters for a reply with `room` tokens left in the context,
    /// from a model of `vocab_size` tokens; `temperature` is the endpoint's default, `legacy`
    /// says the request is a text completion (its `logprobs` is a number). Errors name the
    /// field.
    pub(crate) fn params(
        &self,
        temperature: f64,
        vocab_size: usize,
        room: usize,
        legacy: bool,
    ) -> Result<GenerationParams, ApiError> {
        let temperature = self.temperature.unwrap_or(temperature);
        let top_k = self.top_k.unwrap_or(50);
        let max_tokens = self.max_completion_tokens.or(self.max_tokens);
        let max_tokens = max_tokens.unwrap_or(512);
        check_sampling(temperature, top_k, max_tokens)?;
        let n = self.n.unwrap_or(1);
        if !(1..=limits::MAX_CHOICES).contains(&n) {
            let max = limits::MAX_CHOICES;
            return Err(ApiError::bad(
                "n",
                format!("n must be between 1 and {max}, got {n}"),
            ));
        }
        let params = GenerationParams {
            temperature,
            top_k: (top_k > 0).then_some(top_k),
            top_p: self.top_p.unwrap_or(1.0),
            min_p: self.min_p.unwrap_or(0.0),
            repetition_penalty: self.repetition_penalty.unwrap_or(1.0),
            presence_penalty: self.presence_penalty.unwrap_or(0.0),
            frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
            logit_bias: self.logit_bias.clone(),
            max_tokens: max_tokens.min(room),
            seed: self.seed,
            stop: self.stop.as_ref().map_or_else(Vec::new, Stop::to_vec),
            num_samples: n,
            logprobs: self.logprobs(legacy)?,
            response_format: self.response_format(legacy)?,
            ..GenerationParams::default()
        };
        params.validate_for(vocab_size, room).map_err(|e| {
            // `logit_bias[7]` → `logit_bias`: the request's field.
            let field = e.field.split('[').next().unwrap_or("body");
            let field = match field {
                f @ ("top_p" | "min_p" | "repetition_penalty" | "presence_penalty"
                | "frequency_penalty" | "logit_bias") => f,
                _ => "body",
            };
            ApiError::bad(field, e.to_string())
        })?;
        Ok(params)
    }

    /// Checks the request against upstream's limits and renders its prompt for a model with
    /// `sequence_len` positions; returns the prompt and the sampling parameters. `web_defaults`
    /// picks upstream's web temperature (0.8) over OpenAI's (1).
    pub(crate) fn prepare(
        &self,
        tokenizer: &Tokenizer,
        sequence_len: usize,
        web_defaults: bool,
    ) -> Result<(Vec<u32>, GenerationParams), ApiError> {
        let count = self.messages.len();
        if count == 0 {
            return Err(ApiError::bad(
                "messages",
                "at least one message is required",
            ));
        }
        if count > limits::MAX_MESSAGES {
            let max = limits::MAX_MESSAGES;
            return Err(ApiError::bad(
                "messages",
                format!("too many messages: {count} > {max}"),
            ));
        }
        let mut total = 0;
        let mut messages = Vec::new();
        for (i, m) in self.messages.iter().enumerate() {
            let text = m.content.text();
            let (chars, max) = (text.chars().count(), limits::MAX_MESSAGE_CHARS);
            if chars > max {
                return Err(ApiError::bad(
                    "messages",
                    format!("message {i} is too long: {chars} > {max} characters"),
                ));
            }
            total += chars;
            messages.push(Message::new(m.role, text));
        }
        if total > limits::MAX_TOTAL_CHARS {
            let max = limits::MAX_TOTAL_CHARS;
            return Err(ApiError::bad(
                "messages",
                format!("conversation too long: {total} > {max} characters"),
            ));
        }
        if messages.last().map(|m| m.role) != Some(MessageRole::User) {
            return Err(ApiError::bad(
                "messages",
                "the last message must be from the user",
            ));
        }
        // The sampling fields first: a bad one is reported before the prompt's length.
        let temperature = if web_defaults { 0.8 } else { 1.0 };
        let vocab = tokenizer.vocab_size();
        self.params(temperature, vocab, usize::MAX, false)?;
        // Render like a conversation whose last (assistant) turn is being written.
        messages.push(Message::new(MessageRole::Assistant, String::new()));
        let prompt = tokenizer
            .render_for_completion(&Conversation { messages }, usize::MAX)
            .map_err(|e| ApiError::bad("messages", e.to_string()))?;
        let room = sequence_len.saturating_sub(prompt.len());
        if room == 0 {
            let used = prompt.len();
            return Err(ApiError::bad(
                "messages",
                format!(
                    "the conversation ({used} tokens) fills the model's context ({sequence_len})"
                ),
            ));
        }
        let params = self.params(temperature, vocab, room, false)?;
        Ok((prompt, params))
    }
}

/// OpenAI's `usage` object.
pub(crate) fn usage(prompt_tokens: usize, completion_tokens: usize) -> Value {
    json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
           "total_tokens": prompt_tokens + completion_tokens})
}

/// Seconds since the Unix epoch (OpenAI's `created`).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A token as OpenAI shows it: its text (lossy where it is part of a character) and bytes.
fn token_text(tokenizer: &Tokenizer, id: u32) -> (String, Vec<u8>) {
    let bytes = tokenizer.decode_single_token_bytes(id).unwrap_or_default();
    (String::from_utf8_lossy(&bytes).into_owned(), bytes)
}

/// The chat endpoint's `logprobs` of a choice: `{"content": [{token, logprob, bytes,
/// top_logprobs}]}`, or `null` when they were not asked for.
pub(crate) fn chat_logprobs(
    tokenizer: &Tokenizer,
    asked: bool,
    logprobs: &[TokenLogprobs],
) -> Value {
    if !asked {
        return Value::Null;
    }
    let entry = |id: u32, lp: f32| {
        let (token, bytes) = token_text(tokenizer, id);
        json!({"token": token, "logprob": lp, "bytes": bytes})
    };
    let content: Vec<Value> = logprobs
        .iter()
        .map(|t| {
            let mut e = entry(t.token, t.logprob);
            e["top_logprobs"] = t.top.iter().map(|&(id, lp)| entry(id, lp)).collect();
            e
        })
        .collect();
    json!({ "content": content })
}

/// Text completions' `logprobs`: `{tokens, token_logprobs, top_logprobs, text_offset}` with
/// offsets counted from `offset`, or `null` when they were not asked for.
pub(crate) fn completion_logprobs(
    tokenizer: &Tokenizer,
    asked: bool,
    logprobs: &[TokenLogprobs],
    mut offset: usize,
) -> Value {
    if !asked {
        return Value::Null;
    }
    let (mut tokens, mut lps, mut tops, mut offsets) = (vec![], vec![], vec![], vec![]);
    for t in logprobs {
        let (text, _) = token_text(tokenizer, t.token);
        offsets.push(offset);
        offset += text.len();
        tokens.push(text);
        lps.push(t.logprob);
        let top: serde_json::Map<String, Value> = t
            .top
            .iter()
            .map(|&(id, lp)| (token_text(tokenizer, id).0, json!(lp)))
            .collect();
        tops.push(Value::Object(top));
    }
    json!({"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets})
}

/// The OpenAI name of a finish reason.
pub(crate) fn finish_str(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(body: &str) -> (Option<String>, String) {
        let e = parse::<ChatRequest>(body.as_bytes()).unwrap_err();
        (e.param, e.message)
    }

    #[test]
    fn serde_parses_stop_roles_and_content_and_names_the_bad_field() {
        let r: ChatRequest = parse(br#"{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"text":"b"}]}],"stop":"x"}"#).unwrap();
        assert_eq!(r.messages[0].content.text(), "ab");
        assert!(matches!(r.stop, Some(Stop::One(ref s)) if s == "x"));
        let r: ChatRequest = parse(br#"{"messages":[],"stop":["a","b"]}"#).unwrap();
        assert!(matches!(r.stop, Some(Stop::Many(ref v)) if v.len() == 2));
        assert!(parse::<ChatRequest>(br#"{"messages":[],"stop":null}"#).is_ok());
        let (p, m) = param(r#"{"messages":[],"stop":[1]}"#);
        assert_eq!(p.as_deref(), Some("stop"));
        assert!(
            m.contains("stop must be a string or a list of strings"),
            "{m}"
        );
        let (p, m) = param(r#"{"messages":[{"role":"robot","content":"x"}]}"#);
        assert_eq!(p.as_deref(), Some("messages"));
        assert!(m.contains("robot"), "{m}");
        let (p, m) = param(r#"{"messages":[{"role":"user","content":7}]}"#);
        assert_eq!(p.as_deref(), Some("messages"));
        assert!(m.contains("content must be a string"), "{m}");
        assert_eq!(param("{not json").0.as_deref(), Some("body"));
        assert_eq!(param(r#"{"messages":[]} x"#).0.as_deref(), Some("body"));
    }
}
