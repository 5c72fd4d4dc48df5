//! `POST /v1/completions` (OpenAI's legacy text completions; no upstream counterpart: upstream
//! serves chat only): a raw prompt, no chat template, continued by the model, as a base model
//! is used. `prompt` is a string or a list of one string; `stream` gives `text_completion`
//! chunks and `data: [DONE]`; `n` > 1 (not streamed) gives that many choices. The sampling fields are the chat endpoint's ([`ChatRequest`]),
//! with OpenAI's default temperature 1.
//!
//! Design: the body is read twice, once for this endpoint's own fields and once as a
//! `ChatRequest` for the sampling ones, so those are defined (and checked) in one place; the
//! generation goes through the same jobs and workers as chat.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::api::{
    ApiError, ChatRequest, completion_logprobs, finish_str, limits, parse, unix_now, usage,
};
use crate::jobs::{AppState, Frame, collect, openai_stream, start_job};

/// `prompt`: a string, or OpenAI's list of prompts (one here).
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "prompt must be a string or a list of one string"
)]
enum Prompt {
    One(String),
    Many(Vec<String>),
}

/// This endpoint's own fields (the rest are read as a [`ChatRequest`]).
#[derive(Debug, Deserialize)]
struct CompletionRequest {
    prompt: Prompt,
    echo: Option<bool>,
    suffix: Option<String>,
    best_of: Option<usize>,
}

/// The prompt's text, checked against the limits.
fn prompt_text(req: &CompletionRequest) -> Result<String, ApiError> {
    let text = match &req.prompt {
        Prompt::One(s) => s.clone(),
        Prompt::Many(v) if v.len() == 1 => v[0].clone(),
        Prompt::Many(v) => {
            let n = v.len();
            return Err(ApiError::bad(
                "prompt",
                format!("one prompt per request, got {n}"),
            ));
        }
    };
    if text.is_empty() {
        return Err(ApiError::bad("prompt", "the prompt may not be empty"));
    }
    let (chars, max) = (text.chars().count(), limits::MAX_TOTAL_CHARS);
    if chars > max {
        return Err(ApiError::bad(
            "prompt",
            format!("prompt too long: {chars} > {max} characters"),
        ));
    }
    if req.echo == Some(true) {
        return Err(ApiError::bad("echo", "echo is not supported"));
    }
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad("suffix", "suffix is not supported"));
    }
    if req.best_of.is_some_and(|n| n != 1) {
        return Err(ApiError::bad("best_of", "only best_of = 1 is supported"));
    }
    Ok(text)
}

pub(crate) async fn completions(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: CompletionRequest = parse(&body)?;
    let sampling: ChatRequest = parse(&body)?;
    let text = prompt_text(&req)?;
    // Like upstream's base-model sampling: <|bos|> then the text.
    let mut prompt = vec![state.tokenizer.bos_token_id()];
    prompt.extend(state.tokenizer.encode(&text));
    let room = state.sequence_len.saturating_sub(prompt.len());
    if room == 0 {
        let (used, n) = (prompt.len(), state.sequence_len);
        return Err(ApiError::bad(
            "prompt",
            format!("the prompt ({used} tokens) fills the model's context ({n})"),
        ));
    }
    let params = sampling.params(1.0, state.tokenizer.vocab_size(), room, true)?;
    let (asked, params_n) = (params.logprobs.is_some(), params.num_samples.max(1));
    let tokenizer = state.tokenizer.clone();
    let id = format!("cmpl-{}", state.next_id());
    let mut rx = start_job(&state, id.clone(), prompt, params)?;
    let created = unix_now();
    let model = state.model_id.clone();
    let head =
        move || json!({"id": id, "object": "text_completion", "created": created, "model": model});
    if sampling.stream.unwrap_or(false) {
        // Offsets of the streamed tokens count on from the choice's previous chunks' text.
        let mut offsets = vec![0; params_n];
        let frame = move |f: Frame| {
            let mut v = head();
            v["choices"] = match f {
                Frame::Text(i, t, lp) => {
                    let logprobs = completion_logprobs(&tokenizer, asked, &lp, offsets[i]);
                    offsets[i] += t.len();
                    json!([{"text": t, "index": i, "logprobs": logprobs, "finish_reason": null}])
                }
                Frame::End(i, finish) => json!([{"text": "", "index": i, "logprobs": null,
                                                 "finish_reason": finish_str(finish)}]),
                Frame::Usage => json!([]),
            };
            v
        };
        return Ok(openai_stream(
            Vec::new(),
            rx,
            sampling.include_usage(),
            frame,
        ));
    }
    let done = collect(&mut rx).await?;
    let (p, c) = (done.prompt_tokens, done.completion_tokens);
    let mut body = head();
    body["choices"] = done
        .choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({"text": c.text, "index": i,
                   "logprobs": completion_logprobs(&tokenizer, asked, &c.logprobs, 0),
                   "finish_reason": finish_str(c.finish)})
        })
        .collect();
    body["usage"] = usage(p, c);
    Ok(Json(body).into_response())
}
