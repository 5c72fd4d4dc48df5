//! The bad-input battery (#21): malformed JSON, wrong types for every field, unknown roles,
//! invalid UTF-8, oversized bodies, wrong methods and routes, on every endpoint,
//! 10 000 of them mixed with valid requests from 8 concurrent clients. Every bad request must
//! get a 4xx whose body is OpenAI's JSON error (with a message), every valid one a 200; no
//! 5xx, no panic, and the server is healthy and still answers afterwards.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use common::{agent, start};
use serde_json::{Value, json};

/// (path, body bytes) of requests that must be refused with a 4xx JSON error.
fn bad_requests() -> Vec<(&'static str, Vec<u8>)> {
    let chat = "/v1/chat/completions";
    let mut out: Vec<(&'static str, Vec<u8>)> = Vec::new();
    let texts = [
        "",
        "{",
        "{not json",
        "null",
        "[]",
        "42",
        "\"messages\"",
        r#"{"messages":[]}"#,
        r#"{"messages":{}}"#,
        r#"{"messages":"hi"}"#,
        r#"{"messages":[{"role":"user"}]}"#,
        r#"{"messages":[{"content":"x"}]}"#,
        r#"{"messages":[{"role":"robot","content":"x"}]}"#,
        r#"{"messages":[{"role":7,"content":"x"}]}"#,
        r#"{"messages":[{"role":"user","content":null}]}"#,
        r#"{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#,
        r#"{"messages":[{"role":"assistant","content":"x"}]}"#,
        r#"{"messages":[{"role":"user","content":"x"}]} trailing"#,
    ];
    for t in texts {
        out.push((chat, t.as_bytes().to_vec()));
    }
    let fields = [
        ("temperature", json!("hot")),
        ("temperature", json!(-1)),
        ("temperature", json!(1e300)),
        ("top_k", json!(-3)),
        ("top_k", json!(1.5)),
        ("top_p", json!(0)),
        ("min_p", json!(2)),
        ("max_tokens", json!(0)),
        ("max_tokens", json!("many")),
        ("max_tokens", json!(1u64 << 40)),
        ("max_completion_tokens", json!(-1)),
        ("n", json!(0)),
        ("n", json!(99)),
        ("seed", json!(-1)),
        ("seed", json!("x")),
        ("stop", json!(5)),
        ("stop", json!([""])),
        ("stream", json!("yes")),
        ("presence_penalty", json!(3)),
        ("frequency_penalty", json!(-2.5)),
        ("logit_bias", json!({"x": 1})),
        ("logit_bias", json!({"1": 1000})),
        ("logit_bias", json!({"99999999": 1})),
        ("logprobs", json!("yes")),
        ("top_logprobs", json!(50)),
        ("repetition_penalty", json!(-1)),
    ];
    for (field, value) in fields {
        let mut body = json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 1});
        body[field] = value;
        out.push((chat, body.to_string().into_bytes()));
    }
    // Invalid UTF-8, inside a string and as the whole body.
    let mut utf8 = br#"{"messages":[{"role":"user","content":""#.to_vec();
    utf8.extend([0xff, 0xfe, 0xc3]);
    utf8.extend(br#""}]}"#);
    out.push((chat, utf8));
    out.push((chat, vec![0x80; 64]));
    // The other endpoints.
    for (path, body) in [
        ("/v1/completions", "{}"),
        ("/v1/completions", r#"{"prompt": 7}"#),
        ("/v1/completions", r#"{"prompt": "a", "logprobs": 99}"#),
        ("/v1/completions", r#"{"prompt": "a", "echo": true}"#),
        ("/chat/completions", "{bad"),
        ("/chat/completions", r#"{"messages":[]}"#),
        ("/v1/sessions", r#"{"generation": {"temperature": 9}}"#),
        ("/v1/sessions/nope/messages", r#"{"content": "hi"}"#),
    ] {
        out.push((path, body.as_bytes().to_vec()));
    }
    out
}

/// POSTs a 2 MiB body over a raw connection and reads the answer. The server answers (and
/// closes) before the body has been sent, so a client that insists on writing it all sees a
/// broken pipe: the body is written from another thread whose errors are ignored.
fn oversized_post(url: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://").to_string();
    for _ in 0..5 {
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        let body = vec![b' '; 2 << 20];
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let mut writer = stream.try_clone().unwrap();
        let sender = std::thread::spawn(move || {
            let _ = writer.write_all(head.as_bytes());
            let _ = writer.write_all(&body);
        });
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw);
        let _ = stream.shutdown(std::net::Shutdown::Both);
        let _ = sender.join();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let Some(status) = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
        else {
            continue; // reset before anything was read: try again
        };
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        return (status, body);
    }
    panic!("no answer to the oversized request in 5 tries");
}

fn is_json_error(body: &str) -> bool {
    serde_json::from_str::<Value>(body).is_ok_and(|v| v["error"]["message"].is_string())
}

#[test]
fn bad_requests_get_json_4xx_and_the_server_stays_healthy() {
    let (url, _state) = start();
    let bad = bad_requests();
    let a = agent();
    // Each case once, looked at closely.
    for (path, body) in &bad {
        let mut r = a
            .post(&format!("{url}{path}"))
            .header("Content-Type", "application/json")
            .send(&body[..])
            .unwrap();
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        assert!(
            (400..500).contains(&status) && is_json_error(&text),
            "{path} {:?}: {status} {text}",
            String::from_utf8_lossy(body)
        );
    }
    // Too large: answered 413 as soon as the length is known.
    let (status, text) = oversized_post(&url, "/v1/chat/completions");
    assert_eq!(status, 413, "{text}");
    assert!(is_json_error(&text), "{text}");
    // A wrong method, an unknown route.
    let mut r = a.get(&format!("{url}/v1/chat/completions")).call().unwrap();
    let text = r.body_mut().read_to_string().unwrap_or_default();
    assert_eq!(r.status().as_u16(), 405, "{text}");
    assert!(is_json_error(&text), "{text}");
    let mut r = a.get(&format!("{url}/no/such/route")).call().unwrap();
    let text = r.body_mut().read_to_string().unwrap_or_default();
    assert_eq!(r.status().as_u16(), 404, "{text}");
    assert!(is_json_error(&text), "{text}");

    // 10 000 requests from 8 clients: bad ones, and every 500th a valid one.
    let total = 10_000;
    let (next, ok, errors) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let valid = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2,
                       "temperature": 0})
    .to_string();
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                let a = agent();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let (path, body, want_ok) = if i % 500 == 0 {
                        ("/v1/chat/completions", valid.as_bytes(), true)
                    } else {
                        let (p, b) = &bad[i % bad.len()];
                        (*p, &b[..], false)
                    };
                    let mut r = a
                        .post(&format!("{url}{path}"))
                        .header("Content-Type", "application/json")
                        .send(body)
                        .unwrap();
                    let status = r.status().as_u16();
                    let text = r.body_mut().read_to_string().unwrap_or_default();
                    let good = if want_ok {
                        status == 200
                    } else {
                        (400..500).contains(&status) && is_json_error(&text)
                    };
                    if good {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!("{path}: {status} {text}");
                    }
                }
            });
        }
    });
    assert_eq!(errors.load(Ordering::Relaxed), 0);
    assert_eq!(ok.load(Ordering::Relaxed), total);
    // Healthy, no worker error, and it still answers.
    let mut r = a.get(&format!("{url}/health")).call().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let health: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(health["ready"], true);
    let mut r = a.get(&format!("{url}/stats")).call().unwrap();
    let stats: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(stats["request_errors_total"].as_f64(), Some(0.0), "{stats}");
    assert_eq!(
        stats["requests"]["by_state"]["error"],
        Value::Null,
        "{stats}"
    );
    let mut r = a
        .post(&format!("{url}/v1/chat/completions"))
        .header("Content-Type", "application/json")
        .send(valid.as_str())
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert!(v["choices"][0]["message"]["content"].is_string());
}
