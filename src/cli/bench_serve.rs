//! `nanochat bench serve`: what a server gives concurrent clients. It starts `nanochat serve`
//! on a checkpoint (or uses `--url`), then for each client count (default 1, 8, 32) runs that
//! many clients at once, each sending `--requests` streaming chat completions one after the
//! other (greedy, `--max-tokens`, usage in the last chunk). It reports the aggregate generated
//! tokens per second (all clients' completion tokens over the wall time of the level) and the
//! p50 / p99 time to first token, as a table and one JSON line per level.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// Flags of `bench serve`.
#[derive(clap::Args, Debug)]
pub struct ServeBenchArgs {
    /// A running server to measure (`http://host:port`); else one is started on the checkpoint.
    #[arg(long)]
    url: Option<String>,
    /// Checkpoint source for the started server (base, mid, sft, rl).
    #[arg(short = 'i', long, default_value = "sft")]
    source: String,
    /// Model tag for the started server (default: the largest).
    #[arg(short = 'g', long)]
    model_tag: Option<String>,
    /// Device of the started server.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Client counts to measure, in order.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    clients: Vec<usize>,
    /// Requests each client sends, one after the other.
    #[arg(long, default_value_t = 2)]
    requests: usize,
    /// Tokens per answer (an answer may stop earlier at <|assistant_end|>).
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `nanochat serve --port 0` and returns it with its address once it is ready.
fn start_server(args: &ServeBenchArgs) -> anyhow::Result<(Killed, String)> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["serve", "-i", &args.source, "--port", "0"])
        .args(["--device", &args.device])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped());
    if let Some(tag) = &args.model_tag {
        cmd.args(["-g", tag]);
    }
    let mut child = cmd.spawn().context("starting nanochat serve")?;
    let stdout = child.stdout.take().context("serve's stdout")?;
    let server = Killed(child);
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first)?;
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .with_context(|| format!("serve printed no address: {first:?}"))?
        .trim_end_matches('/')
        .to_string();
    let agent = agent();
    let start = Instant::now();
    while agent
        .get(&format!("{url}/health"))
        .call()
        .map_or(true, |r| r.status() != 200)
    {
        if start.elapsed() > Duration::from_secs(300) {
            bail!("serve did not become ready in 300 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok((server, url))
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// One streaming request: (time to first content, completion tokens).
fn one_request(agent: &ureq::Agent, url: &str, body: &str) -> anyhow::Result<(Duration, u64)> {
    let start = Instant::now();
    let mut r = agent
        .post(&format!("{url}/v1/chat/completions"))
        .header("Content-Type", "application/json")
        .send(body)?;
    if r.status() != 200 {
        bail!("{}: {}", r.status(), r.body_mut().read_to_string()?);
    }
    let (mut ttft, mut tokens) = (None, 0);
    for line in BufReader::new(r.body_mut().as_reader()).lines() {
        let line = line?;
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let v: Value = serde_json::from_str(data)?;
        let content = v["choices"][0]["delta"]["content"].as_str().unwrap_or("");
        if ttft.is_none() && !content.is_empty() {
            ttft = Some(start.elapsed());
        }
        if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
            tokens = n;
        }
    }
    Ok((ttft.unwrap_or_else(|| start.elapsed()), tokens))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

pub fn run(args: ServeBenchArgs) -> anyhow::Result<()> {
    let (_server, url) = match &args.url {
        Some(u) => (None, u.trim_end_matches('/').to_string()),
        None => {
            let (s, u) = start_server(&args)?;
            (Some(s), u)
        }
    };
    let body = json!({"messages": [{"role": "user", "content": "Tell me a story about a dragon."}],
                      "max_tokens": args.max_tokens, "temperature": 0, "stream": true,
                      "stream_options": {"include_usage": true}})
    .to_string();
    // Warm-up: one request, not counted.
    one_request(&agent(), &url, &body)?;
    println!(
        "{:>7} {:>9} {:>8} {:>12} {:>10} {:>10}",
        "clients", "requests", "tokens", "agg tok/s", "TTFT p50", "TTFT p99"
    );
    let mut lines = Vec::new();
    for &clients in &args.clients {
        let results: Mutex<Vec<(Duration, u64)>> = Mutex::new(Vec::new());
        let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..clients {
                s.spawn(|| {
                    let agent = agent();
                    for _ in 0..args.requests {
                        match one_request(&agent, &url, &body) {
                            Ok(r) => results.lock().expect("results").push(r),
                            Err(e) => failures.lock().expect("failures").push(e.to_string()),
                        }
                    }
                });
            }
        });
        let wall = start.elapsed().as_secs_f64();
        let failures = failures.into_inner().expect("failures");
        if let Some(f) = failures.first() {
            bail!("{} of the requests failed, e.g. {f}", failures.len());
        }
        let results = results.into_inner().expect("results");
        let tokens: u64 = results.iter().map(|r| r.1).sum();
        let mut ttft: Vec<Duration> = results.iter().map(|r| r.0).collect();
        ttft.sort();
        let line = json!({"clients": clients, "requests": results.len(), "tokens": tokens,
                          "seconds": wall, "aggregate_tok_per_s": tokens as f64 / wall,
                          "ttft_p50_ms": percentile(&ttft, 0.5), "ttft_p99_ms": percentile(&ttft, 0.99)});
        println!(
            "{:>7} {:>9} {:>8} {:>12.1} {:>8.0}ms {:>8.0}ms",
            clients,
            results.len(),
            tokens,
            tokens as f64 / wall,
            percentile(&ttft, 0.5),
            percentile(&ttft, 0.99)
        );
        lines.push(line);
    }
    for l in lines {
        println!("{l}");
    }
    Ok(())
}
