//! The HTTP server over real loopback HTTP with a small random model: health turns ready when
//! the workers attach, the OpenAI endpoints answer streaming (chunks, finish_reason, [DONE])
//! and non-streaming (usage), upstream's endpoint streams `{"token"}`…`{"done":true}`, bad
//! requests get a 4xx JSON naming the field, and the server keeps serving after each; every
//! request's recorded lifecycle (Created → … → Complete | Error); the API key. Sessions are in
//! `sessions.rs`.

mod common;

use std::io::{BufRead, BufReader, Write};

use common::{agent, finished_request, get_json, post, sse_data, start, states};
use serde_json::{Value, json};

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
    // logit_bias: +100 on byte 'x' (token 120 of the byte-level vocabulary) forces it.
    let (status, body) =
        chat(json!({"logit_bias": {"120": 100}, "temperature": 0, "max_tokens": 4}));
    assert_eq!(status, 200, "{body}");
    let forced: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(forced["choices"][0]["message"]["content"], "xxxx", "{body}");
    // n: several choices from one prefill, each with its index; usage counts them all.
    let (status, body) = chat(json!({"n": 3, "max_tokens": 4, "temperature": 0,
                                     "logit_bias": {"120": 100}}));
    assert_eq!(status, 200, "{body}");
    let v3: Value = serde_json::from_str(&body).unwrap();
    let choices = v3["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3, "{body}");
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(
            (c["index"].as_u64(), &c["message"]["content"]),
            (Some(i as u64), &json!("xxxx"))
        );
    }
    assert_eq!(v3["usage"]["completion_tokens"], 12);
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
    // The choice's end, then (include_usage) a last chunk with no choices and the usage.
    let end = &chunks[chunks.len() - 2];
    assert!(["stop", "length"].contains(&end["choices"][0]["finish_reason"].as_str().unwrap()));
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
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
        (
            r#"{"messages":[{"role":"user","content":"x"}],"presence_penalty":3}"#,
            "presence_penalty",
        ),
        (r#"{"messages":[{"role":"user","content":"x"}],"n":9}"#, "n"),
        (
            r#"{"messages":[{"role":"user","content":"x"}],"logit_bias":{"99999":1}}"#,
            "logit_bias",
        ),
        (
            r#"{"messages":[{"role":"user","content":"x"}],"logit_bias":{"7":-101}}"#,
            "logit_bias",
        ),
        (
            r#"{"messages":[{"role":"user","content":"x"}],"logit_bias":{"x":1}}"#,
            "logit_bias",
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
    assert!(metrics.contains("nanochat_requests_total 6"), "{metrics}");
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
fn requests_are_recorded_through_their_lifecycle() {
    let (url, _state) = start();
    let health = get_json(&format!("{url}/health"));
    assert_eq!(health["state"], "ready");
    let stats = get_json(&format!("{url}/stats"));
    assert_eq!(
        states(&stats["lifecycle"]),
        ["created", "model_loaded", "ready"]
    );
    // Answered: Complete.
    let body =
        json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0});
    let (status, text) = post(&format!("{url}/v1/chat/completions"), &body.to_string());
    assert_eq!(status, 200, "{text}");
    let id = serde_json::from_str::<Value>(&text).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = finished_request(&url, &id);
    assert_eq!(
        states(&r["lifecycle"]),
        [
            "created",
            "model_loaded",
            "ready",
            "processing",
            "streaming",
            "complete"
        ]
    );
    // A streaming client that leaves after the first text: Error, with the reason. The
    // worker notices at its next token, so a reply that ends first would be Complete; each
    // try asks for the whole context, and a finished reply is retried.
    let addr = url.trim_start_matches("http://");
    let mut outcomes = Vec::new();
    for attempt in 0..5 {
        let body = json!({"messages": [{"role": "user", "content": format!("Tell me a long story {attempt}")}],
                          "max_tokens": 4096, "temperature": 0, "stream": true})
        .to_string();
        let mut sock = std::net::TcpStream::connect(addr).unwrap();
        write!(
            sock,
            "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut reader = BufReader::new(sock.try_clone().unwrap());
        // Read up to the first generated text (the role chunk before it comes from the
        // handler, before any worker has the job): the request is then streaming.
        let mut id = None;
        let mut line = String::new();
        while id.is_none() && reader.read_line(&mut line).unwrap() > 0 {
            if let Some(data) = line.trim().strip_prefix("data:") {
                id = serde_json::from_str::<Value>(data.trim())
                    .ok()
                    .filter(|v| v["choices"][0]["delta"]["content"].is_string())
                    .filter(|v| v["choices"][0]["delta"]["role"].is_null())
                    .map(|v| v["id"].as_str().unwrap().to_string());
            }
            line.clear();
        }
        let id = id.expect("a chunk of generated text");
        sock.shutdown(std::net::Shutdown::Both).unwrap();
        drop((reader, sock));
        let r = finished_request(&url, &id);
        let s = states(&r["lifecycle"]);
        assert_eq!(
            s[..5],
            [
                "created",
                "model_loaded",
                "ready",
                "processing",
                "streaming"
            ]
        );
        outcomes.push(r.clone());
        if s[5] == "error" {
            assert_eq!(r["error"], "the client disconnected during generation");
            break;
        }
        assert_eq!(s[5], "complete", "{r}");
    }
    assert_eq!(
        states(&outcomes.last().unwrap()["lifecycle"])
            .last()
            .unwrap(),
        "error",
        "the client left {} times and every reply finished first: {outcomes:?}",
        outcomes.len()
    );
    let stats = get_json(&format!("{url}/stats"));
    assert!(
        stats["requests"]["by_state"]["error"].as_u64().unwrap() >= 1,
        "{stats}"
    );
}

#[test]
fn an_api_key_guards_every_route_but_health_and_the_page() {
    let (url, state) = start();
    assert!(state.require_api_key("  ".into()).is_err(), "an empty key");
    state.require_api_key("sk-test".into()).unwrap();
    let call = |method: &str, path: &str, key: Option<&str>| {
        let a = agent();
        let url = format!("{url}{path}");
        let mut req = match method {
            "GET" => a.get(&url).force_send_body(),
            _ => a.post(&url),
        };
        req = req.header("Content-Type", "application/json");
        if let Some(k) = key {
            req = req.header("Authorization", &format!("Bearer {k}"));
        }
        let body = match path {
            "/v1/sessions" => json!({}),
            _ => json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}),
        };
        let mut r = req
            .send(if method == "GET" {
                String::new()
            } else {
                body.to_string()
            })
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    };
    assert_eq!(call("GET", "/health", None).0, 200);
    assert_eq!(call("GET", "/", None).0, 200);
    for (method, path) in [
        ("GET", "/v1/models"),
        ("GET", "/stats"),
        ("GET", "/metrics"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/chat/completions"),
        ("POST", "/v1/sessions"),
    ] {
        let (status, body) = call(method, path, None);
        assert_eq!(status, 401, "{path}: {body}");
        let e: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(e["error"]["type"], "invalid_request_error", "{body}");
        assert_eq!(call(method, path, Some("sk-wrong")).0, 401, "{path}");
        let (status, body) = call(method, path, Some("sk-test"));
        assert!(status == 200 || status == 201, "{path}: {status} {body}");
    }
}

#[test]
fn raw_completions_answer_in_openai_text_completion_shape() {
    let (url, _state) = start();
    let ask = |body: Value| post(&format!("{url}/v1/completions"), &body.to_string());
    let (status, body) = ask(
        json!({"prompt": "The capital of France is", "max_tokens": 5,
                                    "temperature": 0, "logit_bias": {"120": 100}}),
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "text_completion");
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    // No chat template: the forced byte comes straight after the prompt.
    assert_eq!(v["choices"][0]["text"], "xxxxx", "{body}");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 5);
    // <|bos|> + 24 byte tokens.
    assert_eq!(v["usage"]["prompt_tokens"], 25);
    // Streaming: the same text in text_completion chunks, then [DONE].
    let (status, body) = ask(
        json!({"prompt": ["The capital of France is"], "max_tokens": 5,
                                    "temperature": 0, "logit_bias": {"120": 100}, "stream": true}),
    );
    assert_eq!(status, 200, "{body}");
    let frames = sse_data(&body);
    assert_eq!(frames.last().unwrap(), "[DONE]");
    let text: String = frames[..frames.len() - 1]
        .iter()
        .map(|f| serde_json::from_str::<Value>(f).unwrap())
        .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(text, "xxxxx");
    // Bad requests name the field.
    for (body, field) in [
        (json!({"max_tokens": 5}), "prompt"),
        (json!({"prompt": ""}), "prompt"),
        (json!({"prompt": ["a", "b"]}), "prompt"),
        (json!({"prompt": 7}), "prompt"),
        (json!({"prompt": "a", "echo": true}), "echo"),
        (json!({"prompt": "a", "temperature": 5}), "temperature"),
        (json!({"prompt": "a", "n": 9}), "n"),
    ] {
        let (status, text) = ask(body.clone());
        assert_eq!(status, 400, "{body}: {text}");
        let e: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(e["error"]["param"], field, "{body}: {text}");
    }
    // n > 1 streams too: every chunk names its choice, each choice ends once.
    let (status, text) = ask(json!({"prompt": "a", "n": 2, "stream": true, "max_tokens": 3}));
    assert_eq!(status, 200, "{text}");
    let frames = sse_data(&text);
    let ends: Vec<u64> = frames[..frames.len() - 1]
        .iter()
        .map(|f| serde_json::from_str::<Value>(f).unwrap())
        .filter(|c| c["choices"][0]["finish_reason"].is_string())
        .map(|c| c["choices"][0]["index"].as_u64().unwrap())
        .collect();
    assert_eq!(ends, [0, 1], "{text}");
}

/// `logprobs` on both OpenAI endpoints, streamed and not: one entry per generated token, each
/// a log-probability (≤ 0) with the requested number of alternatives, most likely first, the
/// chosen token among them when it is the greedy pick; the same numbers streamed and whole;
/// bad values name the field.
#[test]
fn logprobs_come_back_per_token_on_both_endpoints() {
    let (url, _state) = start();
    let chat = |extra: Value| {
        let mut body = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 6,
                              "temperature": 0, "seed": 3});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        post(&format!("{url}/v1/chat/completions"), &body.to_string())
    };
    let (status, body) = chat(json!({"logprobs": true, "top_logprobs": 3}));
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(
        content.len() as u64,
        v["usage"]["completion_tokens"].as_u64().unwrap(),
        "{body}"
    );
    let mut joined: Vec<u8> = Vec::new();
    for e in content {
        let lp = e["logprob"].as_f64().unwrap();
        assert!(lp <= 0.0, "{e}");
        let top = e["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3, "{e}");
        let tops: Vec<f64> = top.iter().map(|t| t["logprob"].as_f64().unwrap()).collect();
        assert!(tops.windows(2).all(|w| w[0] >= w[1]), "{e}");
        // Greedy: the chosen token is the most likely one.
        assert_eq!(top[0]["token"], e["token"], "{e}");
        assert_eq!(top[0]["logprob"], e["logprob"], "{e}");
        joined.extend(
            e["bytes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_u64().unwrap() as u8),
        );
    }
    assert_eq!(
        String::from_utf8_lossy(&joined),
        v["choices"][0]["message"]["content"].as_str().unwrap(),
        "{body}"
    );
    // Not asked for: null.
    let (_, plain) = chat(json!({}));
    let plain: Value = serde_json::from_str(&plain).unwrap();
    assert!(plain["choices"][0]["logprobs"].is_null());
    // Streamed: the same entries, spread over the chunks.
    let (status, body) = chat(json!({"logprobs": true, "top_logprobs": 3, "stream": true}));
    assert_eq!(status, 200, "{body}");
    let frames = sse_data(&body);
    let streamed: Vec<Value> = frames[..frames.len() - 1]
        .iter()
        .map(|f| serde_json::from_str::<Value>(f).unwrap())
        .filter_map(|c| c["choices"][0]["logprobs"]["content"].as_array().cloned())
        .flatten()
        .collect();
    assert_eq!(&streamed, content);
    // Text completions: OpenAI's legacy shape, the number being the alternatives.
    let (status, body) = post(
        &format!("{url}/v1/completions"),
        &json!({"prompt": "Hello", "max_tokens": 4, "temperature": 0, "logprobs": 2}).to_string(),
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let lp = &v["choices"][0]["logprobs"];
    assert_eq!(lp["tokens"].as_array().unwrap().len(), 4, "{body}");
    assert_eq!(lp["token_logprobs"].as_array().unwrap().len(), 4, "{body}");
    assert_eq!(
        lp["top_logprobs"][0].as_object().unwrap().len(),
        2,
        "{body}"
    );
    assert_eq!(lp["text_offset"][0], 0, "{body}");
    // Bad values name the field.
    for (extra, field) in [
        (json!({"top_logprobs": 2}), "top_logprobs"),
        (
            json!({"logprobs": true, "top_logprobs": 21}),
            "top_logprobs",
        ),
        (json!({"logprobs": 3}), "logprobs"),
    ] {
        let (status, text) = chat(extra.clone());
        assert_eq!(status, 400, "{extra}: {text}");
        let e: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(e["error"]["param"], field, "{extra}: {text}");
    }
    let (status, text) = post(
        &format!("{url}/v1/completions"),
        &json!({"prompt": "Hello", "logprobs": 50}).to_string(),
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("\"param\":\"logprobs\""), "{text}");
}
