//! Multi-node data parallelism through the binary, as on two machines: `nanochat orchestrator`
//! and two `base-train --num-nodes 2` processes (one CPU rank each) on 127.0.0.1.
//!
//! - The two nodes train bit for bit like one process with two ranks: every checkpoint's
//!   model and optimizer files, every loss and every validation bits-per-byte.
//! - One node killed mid-run: the other stops with an error that says what happened, within a
//!   bounded time (no hang), and the last checkpoint on disk resumes the run on two nodes to
//!   the same final weights as the run that was never interrupted.
//!
//! Every wait here is bounded: a hang fails the test instead of stalling CI.

mod common;

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{Running, command, nanochat, ok, tok_train};
use nanochat::core::checkpoint_manager::verify_checkpoint;

const STEPS: u64 = 8;

fn train_args(tag: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "base-train",
        "--depth",
        "1",
        "--max-seq-len",
        "64",
        "--device-batch-size",
        "1",
        "--total-batch-size",
        "128",
        "--num-iterations",
        &STEPS.to_string(),
        "--eval-every",
        "4",
        "--eval-tokens",
        "128",
        "--sample-every",
        "-1",
        "--save-every",
        "2",
        "--device",
        "cpu",
        "--no-progress",
        "--model-tag",
        tag,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Waits at most `limit` for `child`; a child still running then is killed and the test fails.
fn wait_bounded(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("poll the child") {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("{what} still running after {limit:?}: hung");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One run across two nodes: the orchestrator, then node 0 and node 1 with their logs in files.
struct TwoNodes {
    _orchestrator: Running,
    nodes: Vec<Running>,
    logs: Vec<PathBuf>,
}

impl TwoNodes {
    fn start(base: &Path, args: &[String]) -> Self {
        let port = free_port();
        let orchestrator = Running(
            command(base, &["orchestrator", "--port", &port.to_string()])
                .stdout(Stdio::null())
                .spawn()
                .expect("the orchestrator starts"),
        );
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the orchestrator never listened"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let orchestrator_at = format!("127.0.0.1:{port}");
        let mut nodes = Vec::new();
        let mut logs = Vec::new();
        for node in 0..2 {
            let data_port = free_port().to_string();
            let log = base.join(format!(
                "node{node}-{}.log",
                std::process::id() ^ port as u32
            ));
            let out = File::create(&log).unwrap();
            let mut args = args.to_vec();
            for (flag, value) in [
                // A hang in the collective fails the run in a minute (the default is 10).
                ("--collective-timeout", "60".to_string()),
                ("--devices", "1".to_string()),
                ("--num-nodes", "2".to_string()),
                ("--node-rank", node.to_string()),
                ("--orchestrator", orchestrator_at.clone()),
                ("--node-address", format!("127.0.0.1:{data_port}")),
                ("--data-port", data_port.clone()),
            ] {
                args.extend([flag.to_string(), value]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let child = command(base, &args)
                .env("RUST_LOG", "info")
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .expect("a node starts");
            nodes.push(Running(child));
            logs.push(log);
        }
        Self {
            _orchestrator: orchestrator,
            nodes,
            logs,
        }
    }

    fn log(&self, node: usize) -> String {
        std::fs::read_to_string(&self.logs[node]).unwrap_or_default()
    }

    /// Both nodes' exit statuses (each within `limit`).
    fn wait(&mut self, limit: Duration) -> Vec<ExitStatus> {
        (0..2)
            .map(|n| wait_bounded(&mut self.nodes[n].0, limit, &format!("node {n}")))
            .collect()
    }

    /// Runs to the end; both nodes must succeed.
    fn run(base: &Path, args: &[String]) {
        let mut run = Self::start(base, args);
        for (n, status) in run.wait(Duration::from_secs(600)).into_iter().enumerate() {
            assert!(status.success(), "node {n}: {status}\n{}", run.log(n));
        }
    }
}

/// The loss and val bpb of every step of a run's `metrics.jsonl`.
fn curves(dir: &Path) -> Vec<(serde_json::Value, serde_json::Value)> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["loss"].clone(), v["val_bpb"].clone())
        })
        .collect()
}

fn assert_same_files(a: &Path, b: &Path, step: u64) {
    for name in [
        format!("model_{step:06}.safetensors"),
        format!("optim_{step:06}_rank0.safetensors"),
    ] {
        let (x, y) = (std::fs::read(a.join(&name)), std::fs::read(b.join(&name)));
        assert!(
            x.as_ref().ok() == y.as_ref().ok() && x.is_ok(),
            "{name} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}

#[test]
fn two_nodes_train_like_two_ranks_and_a_dead_node_stops_the_run_resumably() {
    let base = tempfile::tempdir().unwrap();
    let b = base.path();
    tok_train(b);
    let dir = |tag: &str| b.join("base_checkpoints").join(tag);

    // The reference: one process, two ranks.
    let one = nanochat(
        b,
        &train_args("one", &["--devices", "2"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    ok(&one, "base-train --devices 2");

    // Two nodes, one rank each: the same run bit for bit.
    TwoNodes::run(b, &train_args("two", &[]));
    for step in (2..=STEPS).step_by(2) {
        assert_same_files(&dir("one"), &dir("two"), step);
    }
    let reference = curves(&dir("one"));
    assert!(reference.iter().any(|(_, bpb)| bpb.is_number()));
    assert_eq!(curves(&dir("two")), reference);

    // Node 1 dies at step 3: node 0 stops with an error that says why, in bounded time.
    let mut run = TwoNodes::start(b, &train_args("killed", &[]));
    let start = Instant::now();
    while !run.log(0).contains("step 00003/") {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "node 0 never reached step 3:\n{}",
            run.log(0)
        );
        assert!(
            run.nodes[0].0.try_wait().unwrap().is_none(),
            "node 0 ended early:\n{}",
            run.log(0)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    run.nodes[1].0.kill().unwrap();
    let killed_at = Instant::now();
    // Timeout (60 s) + the supervisor's grace (10 s) is the worst case; a closed connection
    // is seen at once.
    let status = wait_bounded(&mut run.nodes[0].0, Duration::from_secs(90), "node 0");
    let waited = killed_at.elapsed();
    let log = run.log(0);
    assert!(!status.success(), "node 0 succeeded without node 1:\n{log}");
    assert!(
        log.contains("Error: rank 0 of 2 failed")
            && (log.contains("another node died") || log.contains("dead, hung or unreachable")),
        "{log}"
    );
    eprintln!("node 0 stopped {waited:?} after node 1 was killed");
    drop(run);

    // The last checkpoint on disk is whole and resumes the run to the reference's weights.
    let last = std::fs::read_dir(dir("killed"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("meta_")?
                .strip_suffix(".json")?
                .parse::<u64>()
                .ok()
        })
        .max()
        .expect("a checkpoint was saved before the kill");
    assert!((2..STEPS).contains(&last), "last checkpoint {last}");
    verify_checkpoint(&dir("killed"), last).unwrap();
    TwoNodes::run(
        b,
        &train_args("killed", &["--resume-from-step", &last.to_string()]),
    );
    assert_same_files(&dir("one"), &dir("killed"), STEPS);
}
