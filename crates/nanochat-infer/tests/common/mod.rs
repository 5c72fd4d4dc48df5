//! What the server tests share: a server on loopback with a small random model, and HTTP
//! helpers.

#![allow(dead_code)] // each test file uses its own subset

use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::backend::Flex;
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use nanochat_core::ModelConfig;
use nanochat_core::tokenizer_config::Vocabulary;
use nanochat_infer::Engine;
use nanochat_infer::server::{AppState, DEFAULT_MAX_BATCH, WorkerPool, serve};
use nanochat_model::Gpt;
use nanochat_tokenizer::{SPLIT_PATTERN, Tokenizer};
use serde_json::Value;

type B = Flex;

/// Every weight of a model plus N(0, σ) noise: a random init's output projections are zero
/// (upstream's init), so attention would not affect the logits at all.
struct Noise(f64);

impl<B: Backend> ModuleMapper<B> for Noise {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, t, mapper) = param.consume();
        let noise = Tensor::random(t.shape(), Distribution::Normal(0.0, self.0), &t.device());
        Param::from_mapped_value(id, t + noise, mapper)
    }
}

/// A server on a small random model, decoding up to [`DEFAULT_MAX_BATCH`] sequences at once.
pub fn start() -> (String, Arc<AppState>) {
    start_with(None, "L")
}

/// A server whose model has noisy weights (`sigma`: attention and every layer matter) and
/// the given window pattern.
pub fn start_with(sigma: Option<f64>, window_pattern: &str) -> (String, Arc<AppState>) {
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
        window_pattern: window_pattern.into(),
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
    // Not ready before the model is attached, and no session can start.
    let mut r = agent().get(&format!("{url}/health")).call().unwrap();
    assert_eq!(r.status(), 503);
    let health: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(health["state"], "created");
    assert_eq!(post(&format!("{url}/v1/sessions"), "").0, 503);
    // The backend's generator is global: tests running at once would interleave their draws
    // and get different weights (and replies) from run to run.
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let model = {
        let _one_at_a_time = INIT.lock().unwrap_or_else(|e| e.into_inner());
        B::seed(&Default::default(), 1);
        let model = Gpt::<B>::init(&config, &Default::default()).unwrap();
        match sigma {
            Some(s) => model.map(&mut Noise(s)),
            None => model,
        }
    };
    let engine = Engine::new(model, tok).unwrap();
    state.set_pool(WorkerPool::start(
        vec![engine],
        state.stats.clone(),
        DEFAULT_MAX_BATCH,
    ));
    (url, state)
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

pub fn post(url: &str, body: &str) -> (u16, String) {
    let mut r = agent()
        .post(url)
        .header("Content-Type", "application/json")
        .send(body)
        .unwrap();
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
}

pub fn sse_data(body: &str) -> Vec<String> {
    BufReader::new(body.as_bytes())
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| l.strip_prefix("data:").map(|d| d.trim().to_string()))
        .collect()
}

/// The state names of a serialized lifecycle (`{"state", "history": [[state, time], …]}`).
pub fn states(lifecycle: &Value) -> Vec<String> {
    lifecycle["history"]
        .as_array()
        .unwrap_or_else(|| panic!("no history in {lifecycle}"))
        .iter()
        .map(|e| e[0].as_str().unwrap().to_string())
        .collect()
}

pub fn get_json(url: &str) -> Value {
    let mut r = agent().get(url).call().unwrap();
    serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap()
}

/// The record of request `id` in `/stats` once it has finished (waits up to 10 s).
pub fn finished_request(url: &str, id: &str) -> Value {
    let start = Instant::now();
    loop {
        let stats = get_json(&format!("{url}/stats"));
        let recent = stats["requests"]["recent"].as_array().unwrap();
        if let Some(r) = recent.iter().find(|r| r["id"] == id) {
            return r.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{id} never finished: {stats}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
