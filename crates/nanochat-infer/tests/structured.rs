//! Structured output through the HTTP server: `response_format` `json_schema` answers always
//! parse and follow the schema (sampled, several choices, streamed or whole), `json_object`
//! answers are JSON objects (or a prefix of one when `max_tokens` cuts them), a session can
//! default to a schema, and a format that cannot be used is a 400 naming `response_format`.
//!
//! The model has noisy weights, so unconstrained it writes bytes at random: every structure in
//! the answers comes from the constraint.

mod common;

use common::{post, sse_data, start_with};
use serde_json::{Value, json};

/// A schema whose longest answer is well within `max_tokens` (one token per byte here), so
/// every answer must end with `stop`.
fn bounded_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 6},
            "count": {"type": "integer", "minimum": 0, "maximum": 99},
            "ok": {"type": "boolean"},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2}
        },
        "required": ["name", "count", "ok", "tags"],
        "additionalProperties": false
    })
}

fn chat(url: &str, body: &Value) -> (u16, Value) {
    let (status, text) = post(&format!("{url}/v1/chat/completions"), &body.to_string());
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn request(format: Value, extra: Value) -> Value {
    let mut body = json!({
        "model": "m",
        "messages": [{"role": "user", "content": "Describe a thing."}],
        "max_tokens": 180,
        "temperature": 1.0,
        "seed": 7,
        "response_format": format,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn check_follows_schema(content: &str) {
    let v: Value =
        serde_json::from_str(content).unwrap_or_else(|e| panic!("not JSON ({e}): {content:?}"));
    let o = v.as_object().expect("an object");
    let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["count", "name", "ok", "tags"], "{content}");
    assert!(
        v["name"].as_str().unwrap().chars().count() <= 6,
        "{content}"
    );
    assert!(
        (0..=99).contains(&v["count"].as_i64().unwrap()),
        "{content}"
    );
    assert!(v["ok"].is_boolean(), "{content}");
    let tags = v["tags"].as_array().unwrap();
    assert!(
        tags.len() <= 2 && tags.iter().all(|t| t == "a" || t == "b"),
        "{content}"
    );
}

#[test]
fn json_schema_answers_parse_and_follow_the_schema_whole_and_streamed() {
    let (url, _) = start_with(Some(0.5), "L");
    let format = json!({"type": "json_schema",
        "json_schema": {"name": "thing", "schema": bounded_schema(), "strict": true}});
    let (status, v) = chat(&url, &request(format.clone(), json!({"n": 4})));
    assert_eq!(status, 200, "{v}");
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 4);
    for c in choices {
        assert_eq!(c["finish_reason"], "stop", "{c}");
        check_follows_schema(c["message"]["content"].as_str().unwrap());
    }
    // The four sampled answers differ: the constraint shapes them, it does not fix them.
    let distinct: std::collections::BTreeSet<&str> = choices
        .iter()
        .map(|c| c["message"]["content"].as_str().unwrap())
        .collect();
    assert!(distinct.len() > 1, "{distinct:?}");

    // Streamed, the pieces concatenate to the same answer as the whole one (same seed).
    let (_, whole) = chat(&url, &request(format.clone(), json!({})));
    let body = request(format, json!({"stream": true}));
    let (status, text) = post(&format!("{url}/v1/chat/completions"), &body.to_string());
    assert_eq!(status, 200, "{text}");
    let streamed: String = sse_data(&text)
        .iter()
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| {
            let v: Value = serde_json::from_str(d).unwrap();
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(streamed, whole["choices"][0]["message"]["content"]);
    check_follows_schema(&streamed);
}

#[test]
fn json_object_answers_are_objects_or_a_cut_prefix_of_one() {
    let (url, _) = start_with(Some(0.5), "L");
    let (status, v) = chat(
        &url,
        &request(json!({"type": "json_object"}), json!({"n": 4})),
    );
    assert_eq!(status, 200, "{v}");
    for c in v["choices"].as_array().unwrap() {
        let content = c["message"]["content"].as_str().unwrap();
        assert!(content.starts_with('{'), "{content:?}");
        match serde_json::from_str::<Value>(content) {
            Ok(v) => {
                assert!(v.is_object(), "{content}");
                assert_eq!(c["finish_reason"], "stop");
            }
            // Cut by max_tokens: still a prefix of valid JSON (only its end is missing).
            Err(e) => {
                assert!(e.is_eof(), "{e}: {content:?}");
                assert_eq!(c["finish_reason"], "length");
            }
        }
    }
}

#[test]
fn unusable_response_formats_are_400s_naming_the_field() {
    let (url, _) = start_with(None, "L");
    let bad = [
        json!({"type": "xml"}),
        json!({"type": "json_schema"}),
        json!({"type": "json_schema", "json_schema": {"name": "x", "schema": 3}}),
        // A reference to nothing: llguidance refuses to compile it.
        json!({"type": "json_schema", "json_schema": {"name": "x", "schema":
            {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}}}),
        json!("json"),
    ];
    for format in bad {
        let (status, v) = chat(&url, &request(format.clone(), json!({})));
        assert_eq!(status, 400, "{format} → {v}");
        assert_eq!(v["error"]["param"], "response_format", "{format} → {v}");
    }
    // Plain text is the default, spelled out or not.
    let (status, v) = chat(
        &url,
        &request(json!({"type": "text"}), json!({"max_tokens": 4})),
    );
    assert_eq!(status, 200, "{v}");
    // Text completions have no response_format.
    let body = json!({"model": "m", "prompt": "x", "max_tokens": 4,
        "response_format": {"type": "json_object"}});
    let (status, text) = post(&format!("{url}/v1/completions"), &body.to_string());
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("\"param\":\"response_format\""), "{text}");
}

#[test]
fn a_session_can_default_to_a_json_schema() {
    let (url, _) = start_with(Some(0.5), "L");
    let bad = json!({"generation": {"response_format": {"type": "json_schema",
        "schema": {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}}}});
    let (status, text) = post(&format!("{url}/v1/sessions"), &bad.to_string());
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("\"param\":\"generation.response_format\""),
        "{text}"
    );
    let create = json!({"generation": {"temperature": 1.0, "max_tokens": 120,
        "response_format": {"type": "json_schema", "schema": bounded_schema()}}});
    let (status, text) = post(&format!("{url}/v1/sessions"), &create.to_string());
    assert_eq!(status, 201, "{text}");
    let id = serde_json::from_str::<Value>(&text).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    for turn in ["Describe a thing.", "And another."] {
        let body = json!({"content": turn, "seed": 5});
        let (status, text) = post(
            &format!("{url}/v1/sessions/{id}/messages"),
            &body.to_string(),
        );
        assert_eq!(status, 200, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        check_follows_schema(v["message"]["content"].as_str().unwrap());
    }
}
