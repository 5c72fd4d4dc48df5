//! The HTTP server over real loopback HTTP with a small random model: health turns ready when
//! the workers attach, the OpenAI endpoint answers streaming (chunks, finish_reason, [DONE])
//! and non-streaming (usage), upstream's endpoint streams `{"token"}`…`{"done":true}`, bad
//! requests get a 4xx JSON naming the field, and the server keeps serving after each.

use std::io::{BufRead, BufReader};
use std::sync::Arc;

use burn::backend::Flex;
use burn::tensor::backend::Backend;
use nanochat_core::ModelConfig;
use nanochat_core::tokenizer_config::Vocabulary;
use nanochat_infer::Engine;
use nanochat_infer::server::{AppState, WorkerPool, serve};
use nanochat_model::Gpt;
use nanochat_tokenizer::{SPLIT_PATTERN, Tokenizer};
use serde_json::{Value, json};

type B = Flex;

fn start() -> (String, Arc<AppState>) {
    let tok = Arc::new(
        Tokenizer::from_vocab(Vocabulary::from_merges(&[]).unwrap(), SPLIT_PATTERN).unwrap(),
    );
    let config = ModelConfig {
        sequence_len: 256,
        vocab_size: tok.vocab_size(),
        n_layer: 2,
        n_head: 2,
        n_kv_head: 1,
        n_embd: 64,
        window_pattern: "L".into(),
        ..ModelConfig::from_depth(2).unwrap()
    };
    let state = AppState::new("nanochat-test".into(), tok.clone(), config.sequence_len);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let s = state.clone();
    std::thread::spawn(move || {
        rt.block_on(serve(s, listener, std::future::pending()))
            .unwrap();
    });
    let url = format!("http://{addr}");
    // Not ready before the model is attached.
    let r = agent().get(&format!("{url}/health")).call().unwrap();
    assert_eq!(r.status(), 503);
    B::seed(&Default::default(), 1);
    let model = Gpt::<B>::init(&config, &Default::default()).unwrap();
    let engine = Engine::new(model, tok).unwrap();
    state.set_pool(WorkerPool::start(vec![engine], state.stats.clone()));
    (url, state)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn post(url: &str, body: &str) -> (u16, String) {
    let mut r = agent()
        .post(url)
        .header("Content-Type", "application/json")
        .send(body)
        .unwrap();
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
}

fn sse_data(body: &str) -> Vec<String> {
    BufReader::new(body.as_bytes())
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| l.strip_prefix("data:").map(|d| d.trim().to_string()))
        .collect()
}

#[test]
fn endpoints_over_real_http() {
    let (url, _state) = start();
    let health: Value = serde_json::from_str(
        &agent()
            .get(&format!("{url}/health"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(health["ready"], true);

    let chat = |extra: Value| {
        let mut body = json!({"model": "nanochat-test", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi ✓"}], "max_tokens": 12, "seed": 1});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        post(&format!("{url}/v1/chat/completions"), &body.to_string())
    };
    // Non-streaming: one JSON with usage.
    let (status, body) = chat(json!({}));
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["choices"][0]["message"]["content"].is_string());
    let usage = &v["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
    // Streaming: role chunk, content chunks, a finish_reason, then [DONE]; same text as above.
    let (status, body) = chat(json!({"stream": true, "stream_options": {"include_usage": true}}));
    assert_eq!(status, 200);
    let frames = sse_data(&body);
    assert_eq!(frames.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = frames[..frames.len() - 1]
        .iter()
        .map(|f| serde_json::from_str(f).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        text,
        v["choices"][0]["message"]["content"].as_str().unwrap()
    );
    let last = chunks.last().unwrap();
    assert!(["stop", "length"].contains(&last["choices"][0]["finish_reason"].as_str().unwrap()));
    assert!(last["usage"]["completion_tokens"].is_u64());

    // Upstream's endpoint.
    let (status, body) = post(
        &format!("{url}/chat/completions"),
        r#"{"messages":[{"role":"user","content":"Hello"}],"max_tokens":8,"temperature":0}"#,
    );
    assert_eq!(status, 200);
    let frames = sse_data(&body);
    assert_eq!(frames.last().unwrap(), r#"{"done":true}"#);

    // Bad requests: 4xx with a message naming the field; the server keeps serving.
    let cases = [
        ("{not json", "body"),
        (r#"{"messages":[]}"#, "messages"),
        (
            r#"{"messages":[{"role":"user","content":"x"}],"temperature":3}"#,
            "temperature",
        ),
        (
            r#"{"messages":[{"role":"user","content":"x"}],"top_k":500}"#,
            "top_k",
        ),
        (
            r#"{"messages":[{"role":"user","content":"x"}],"max_tokens":0}"#,
            "max_tokens",
        ),
        (
            r#"{"messages":[{"role":"robot","content":"x"}]}"#,
            "messages",
        ),
        (
            r#"{"messages":[{"role":"user","content":"x"}],"top_p":7}"#,
            "top_p",
        ),
    ];
    for (body, field) in cases {
        let (status, text) = post(&format!("{url}/v1/chat/completions"), body);
        assert_eq!(status, 400, "{body}: {text}");
        let e: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(e["error"]["param"], field, "{body}: {text}");
        assert!(!e["error"]["message"].as_str().unwrap().is_empty());
    }
    let long = "a".repeat(8001);
    let (status, _) = post(
        &format!("{url}/v1/chat/completions"),
        &json!({"messages": [{"role": "user", "content": long}]}).to_string(),
    );
    assert_eq!(status, 400);
    let huge = format!(
        r#"{{"messages":[{{"role":"user","content":"{}"}}]}}"#,
        "b".repeat(2 << 20)
    );
    // The server answers 413 from the Content-Length alone and closes; a client still
    // writing the body may then see a broken pipe instead of the answer. Retry those; every
    // answer that does arrive must be a 413.
    let mut seen = false;
    for _ in 0..10 {
        match agent()
            .post(&format!("{url}/v1/chat/completions"))
            .header("Content-Type", "application/json")
            .send(&huge)
        {
            Ok(r) => {
                assert_eq!(r.status().as_u16(), 413);
                seen = true;
                break;
            }
            Err(ureq::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ) => {}
            Err(e) => panic!("oversized body: {e}"),
        }
    }
    assert!(seen, "no 413 in 10 tries");

    // Still serving; models, stats and metrics reflect the traffic.
    let (status, _) = chat(json!({}));
    assert_eq!(status, 200);
    let models: Value = serde_json::from_str(
        &agent()
            .get(&format!("{url}/v1/models"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(models["data"][0]["id"], "nanochat-test");
    let metrics = agent()
        .get(&format!("{url}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(metrics.contains("nanochat_requests_total 4"), "{metrics}");
    let page = agent()
        .get(&format!("{url}/"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(page.contains("<title>nanochat</title>"));
}

#[test]
fn sessions_keep_history_count_tokens_and_trim() {
    let (url, state) = start();
    let get = |path: &str| {
        let mut r = agent().get(&format!("{url}{path}")).call().unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    };
    // A small window so that the third exchange must drop the first.
    let (status, body) = post(&format!("{url}/v1/sessions"), r#"{"context_window": 96}"#);
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let send = |text: &str| {
        let body = json!({"content": text, "max_tokens": 8, "seed": 3, "temperature": 0.0});
        post(
            &format!("{url}/v1/sessions/{id}/messages"),
            &body.to_string(),
        )
    };
    let (status, body) = send("Hi there");
    assert_eq!(status, 200, "{body}");
    let first: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(first["trimmed"], 0);
    let (_, body) = get(&format!("/v1/sessions/{id}"));
    let s: Value = serde_json::from_str(&body).unwrap();
    let msgs = s["messages"].as_array().unwrap();
    assert_eq!(msgs[0]["role"], "user");
    assert_eq!(msgs[0]["content"], "Hi there");
    // "Hi there" is 8 byte tokens + user_start/user_end.
    assert_eq!(msgs[0]["token_count"], 10);
    assert!(msgs[0]["timestamp"].is_string());
    assert_eq!(s["state"], "complete");
    assert_eq!(
        s["tokens_used"].as_u64().unwrap() + s["remaining_context"].as_u64().unwrap(),
        96
    );
    // Longer messages: the history outgrows the window and the oldest turns are trimmed.
    let mut trimmed = 0;
    for i in 0..4 {
        let (status, body) = send(&format!("message number {i} with some more words"));
        assert_eq!(status, 200, "{body}");
        trimmed += serde_json::from_str::<Value>(&body).unwrap()["trimmed"]
            .as_u64()
            .unwrap();
    }
    assert!(trimmed >= 2, "nothing trimmed");
    let (_, body) = get(&format!("/v1/sessions/{id}"));
    let s: Value = serde_json::from_str(&body).unwrap();
    assert_ne!(s["messages"][0]["content"], "Hi there");
    // Bad input is a 4xx naming the field; unknown sessions are 404; delete works.
    let (status, body) = post(
        &format!("{url}/v1/sessions/{id}/messages"),
        r#"{"content": "x", "temperature": 9}"#,
    );
    assert_eq!(status, 400);
    assert!(body.contains("temperature"));
    // A blank message is refused before anything is generated, not as a 500 after.
    let (status, body) = post(
        &format!("{url}/v1/sessions/{id}/messages"),
        r#"{"content": "  "}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("content") && body.contains("blank"), "{body}");
    let (status, _) = post(
        &format!("{url}/v1/sessions"),
        r#"{"context_window": 100000}"#,
    );
    assert_eq!(status, 400);
    let mut r = agent()
        .delete(&format!("{url}/v1/sessions/{id}"))
        .call()
        .unwrap();
    assert_eq!(r.status(), 204);
    let _ = r.body_mut().read_to_string();
    assert_eq!(get(&format!("/v1/sessions/{id}")).0, 404);
    assert_eq!(send("hello?").0, 404);
    assert!(state.sessions.is_empty());
}
