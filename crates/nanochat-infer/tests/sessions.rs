//! Server-side sessions over real loopback HTTP: history, token counts (the content's
//! tokenization; the template counted on top), trimming, the session's lifecycle, its sampling
//! defaults with per-message overrides, and an empty reply that leaves the history usable.

mod common;

use common::{agent, get_json, post, start, states};
use serde_json::{Value, json};

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
    // "Hi there" is 8 byte tokens: the count is the content's tokenization; the
    // user_start/user_end pair around each message is counted in tokens_used.
    assert_eq!(msgs[0]["token_count"], 8);
    assert!(msgs[0]["timestamp"].is_string());
    let reply_tokens = msgs[1]["token_count"].as_u64().unwrap();
    assert_eq!(s["tokens_used"], 8 + 2 + reply_tokens + 2);
    assert_eq!(
        s["tokens_used"].as_u64().unwrap() + s["remaining_context"].as_u64().unwrap(),
        96
    );
    assert_eq!(s["state"], "complete");
    assert_eq!(
        states(&s["lifecycle"]),
        [
            "created",
            "model_loaded",
            "ready",
            "processing",
            "streaming",
            "complete"
        ]
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

#[test]
fn sessions_keep_sampling_defaults_and_survive_an_empty_reply() {
    let (url, _state) = start();
    let create = |generation: Value| {
        let (status, body) = post(
            &format!("{url}/v1/sessions"),
            &json!({"generation": generation}).to_string(),
        );
        assert_eq!(status, 201, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["state"], "ready");
        (v["id"].as_str().unwrap().to_string(), v)
    };
    let send = |id: &str, body: Value| {
        let (status, text) = post(
            &format!("{url}/v1/sessions/{id}/messages"),
            &body.to_string(),
        );
        assert_eq!(status, 200, "{text}");
        serde_json::from_str::<Value>(&text).unwrap()
    };
    // Greedy replies of at most 6 tokens, from the session's defaults alone.
    let (a, created) = create(json!({"temperature": 0, "max_tokens": 6}));
    assert_eq!(created["generation"]["temperature"], 0.0);
    assert_eq!(created["generation"]["max_tokens"], 6);
    let first = send(&a, json!({"content": "Hello"}));
    assert!(
        first["usage"]["completion_tokens"].as_u64().unwrap() <= 6,
        "{first}"
    );
    let reply = first["message"]["content"].as_str().unwrap().to_string();
    // A second session whose default stop string is the reply's first character: the same
    // greedy reply is cut to nothing. The empty reply is returned, the turn is not stored,
    // and the session keeps answering (no user, user history).
    let stop = reply.chars().next().map(String::from);
    let (b, _) =
        create(json!({"temperature": 0, "max_tokens": 6, "stop": stop.iter().collect::<Vec<_>>()}));
    let empty = send(&b, json!({"content": "Hello"}));
    assert_eq!(empty["message"]["content"], "", "{empty}");
    assert_eq!(empty["kept"], false);
    let s = get_json(&format!("{url}/v1/sessions/{b}"));
    assert_eq!(s["messages"].as_array().unwrap().len(), 0, "{s}");
    assert_eq!(s["state"], "complete");
    // The message's own stop list overrides the session's: the reply is kept this time,
    // unless the model's greedy reply is itself empty.
    let kept = send(&b, json!({"content": "Hello", "stop": []}));
    assert_eq!(kept["message"]["content"], reply.as_str());
    let s = get_json(&format!("{url}/v1/sessions/{b}"));
    let msgs = s["messages"].as_array().unwrap();
    assert_eq!(
        msgs.len(),
        if reply.trim().is_empty() { 0 } else { 2 },
        "{s}"
    );
    if let Some(user) = msgs.first() {
        assert_eq!(
            (&user["role"], &user["token_count"]),
            (&json!("user"), &json!(5))
        );
    }
    // Bad defaults are refused at creation, naming the field under `generation`.
    for (generation, field) in [
        (json!({"temperature": 5}), "generation.temperature"),
        (json!({"top_p": 0}), "generation.top_p"),
        (json!({"num_samples": 2}), "generation.num_samples"),
        (json!({"bogus": 1}), "generation"),
    ] {
        let (status, text) = post(
            &format!("{url}/v1/sessions"),
            &json!({"generation": generation}).to_string(),
        );
        assert_eq!(status, 400, "{generation}: {text}");
        let e: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(e["error"]["param"], field, "{text}");
    }
}
