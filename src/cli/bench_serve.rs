//! `nanochat bench serve`: what a server gives concurrent clients. It starts `nanochat serve`
//! on a checkpoint (or uses `--url`), then for each client count `c` (default 1, 8, 32) sends
//! `c × --requests` streaming chat completions (greedy, `--max-tokens`, usage in the last
//! chunk) through `c` clients at once: each client takes the next request of the level's pool
//! as soon as its previous answer is complete (vLLM's `benchmark_serving --max-concurrency`),
//! so the server sees `c` requests in flight until the pool runs dry. Request `i` asks about
//! topic `i mod 8`, so every level has the same mix of prompt and answer lengths. It reports
//! the aggregate generated tokens per second (all completion tokens over the wall time of the
//! level) and the p50 / p99 time to first token, as a table and one JSON line per level.
//! `--vs-unbatched` measures the same binary again with batching off (`serve --max-batch 1`)
//! and prints the ratios.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// Requests per client: a level with `c` clients sends `c ×` this many, each client taking
    /// the next one when its previous answer is complete.
    #[arg(long, default_value_t = 4)]
    requests: usize,
    /// Tokens per answer (an answer may stop earlier at <|assistant_end|>).
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// `serve --max-batch` of the started server.
    #[arg(long)]
    max_batch: Option<usize>,
    /// Also measure a server started with batching off (`--max-batch 1`), and print the
    /// batched / unbatched ratio per level.
    #[arg(long, conflicts_with = "url")]
    vs_unbatched: bool,
}

/// What the clients ask: request `i` takes topic `i mod 8`.
const TOPICS: [&str; 8] = [
    "a dragon",
    "the sea",
    "a very small robot who wants to become a gardener",
    "rain",
    "two friends who build a boat and sail around the world",
    "the moon",
    "a library at night",
    "a cat",
];

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `nanochat serve --port 0` and returns it with its address once it is ready.
fn start_server(
    args: &ServeBenchArgs,
    max_batch: Option<usize>,
) -> anyhow::Result<(Killed, String)> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["serve", "-i", &args.source, "--port", "0"])
        .args(["--device", &args.device])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped());
    if let Some(tag) = &args.model_tag {
        cmd.args(["-g", tag]);
    }
    if let Some(b) = max_batch {
        cmd.args(["--max-batch", &b.to_string()]);
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

/// One level's result.
struct Level {
    clients: usize,
    requests: usize,
    tokens: u64,
    seconds: f64,
    ttft: Vec<Duration>,
}

impl Level {
    fn tok_per_s(&self) -> f64 {
        self.tokens as f64 / self.seconds
    }

    fn json(&self, batching: &str) -> Value {
        json!({"batching": batching, "clients": self.clients, "requests": self.requests,
               "tokens": self.tokens, "seconds": self.seconds,
               "aggregate_tok_per_s": self.tok_per_s(),
               "ttft_p50_ms": percentile(&self.ttft, 0.5),
               "ttft_p99_ms": percentile(&self.ttft, 0.99)})
    }
}

fn body(args: &ServeBenchArgs, request: usize) -> String {
    let topic = TOPICS[request % TOPICS.len()];
    json!({"messages": [{"role": "user", "content": format!("Tell me a story about {topic}.")}],
           "max_tokens": args.max_tokens, "temperature": 0, "stream": true,
           "stream_options": {"include_usage": true}})
    .to_string()
}

/// Every level against the server at `url`, printed as a table.
fn measure(args: &ServeBenchArgs, url: &str, label: &str) -> anyhow::Result<Vec<Level>> {
    // Warm-up: one request, not counted.
    one_request(&agent(), url, &body(args, 0))?;
    println!("{label}");
    println!(
        "{:>7} {:>9} {:>8} {:>12} {:>10} {:>10}",
        "clients", "requests", "tokens", "agg tok/s", "TTFT p50", "TTFT p99"
    );
    let mut levels = Vec::new();
    for &clients in &args.clients {
        let results: Mutex<Vec<(Duration, u64)>> = Mutex::new(Vec::new());
        let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
        let start = Instant::now();
        let (total, next) = (clients * args.requests, AtomicUsize::new(0));
        std::thread::scope(|s| {
            for _ in 0..clients {
                let (results, failures, next) = (&results, &failures, &next);
                s.spawn(move || {
                    let agent = agent();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            break;
                        }
                        match one_request(&agent, url, &body(args, i)) {
                            Ok(r) => results.lock().expect("results").push(r),
                            Err(e) => failures.lock().expect("failures").push(e.to_string()),
                        }
                    }
                });
            }
        });
        let seconds = start.elapsed().as_secs_f64();
        let failures = failures.into_inner().expect("failures");
        if let Some(f) = failures.first() {
            bail!("{} of the requests failed, e.g. {f}", failures.len());
        }
        let results = results.into_inner().expect("results");
        let mut ttft: Vec<Duration> = results.iter().map(|r| r.0).collect();
        ttft.sort();
        let level = Level {
            clients,
            requests: results.len(),
            tokens: results.iter().map(|r| r.1).sum(),
            seconds,
            ttft,
        };
        println!(
            "{:>7} {:>9} {:>8} {:>12.1} {:>8.0}ms {:>8.0}ms",
            clients,
            level.requests,
            level.tokens,
            level.tok_per_s(),
            percentile(&level.ttft, 0.5),
            percentile(&level.ttft, 0.99)
        );
        levels.push(level);
    }
    Ok(levels)
}

pub fn run(args: ServeBenchArgs) -> anyhow::Result<()> {
    let batched = match &args.url {
        Some(u) => measure(&args, u.trim_end_matches('/'), &format!("server at {u}"))?,
        None => {
            let (_server, url) = start_server(&args, args.max_batch)?;
            let label = match args.max_batch {
                Some(b) => format!("serve --max-batch {b}"),
                None => "serve (continuous batching, default --max-batch)".to_string(),
            };
            measure(&args, &url, &label)?
        }
    };
    if let Some((base, rest)) = batched.split_first() {
        for l in rest {
            println!(
                "{} clients: {:.2}x the aggregate tok/s of {}",
                l.clients,
                l.tok_per_s() / base.tok_per_s(),
                base.clients
            );
        }
    }
    let mut lines: Vec<Value> = batched.iter().map(|l| l.json("on")).collect();
    if args.vs_unbatched {
        let (_server, url) = start_server(&args, Some(1))?;
        let off = measure(&args, &url, "serve --max-batch 1 (batching off)")?;
        println!("{:>7} {:>22}", "clients", "batched / unbatched");
        for (on, off) in batched.iter().zip(&off) {
            println!(
                "{:>7} {:>21.2}x",
                on.clients,
                on.tok_per_s() / off.tok_per_s()
            );
        }
        lines.extend(off.iter().map(|l| l.json("off")));
    }
    for l in lines {
        println!("{l}");
    }
    Ok(())
}
