//! `cargo xtask speedrun`: the pipeline as child processes of the `nanochat` binary, one stage
//! after the other, with a marker file per finished stage (`<base>/speedrun/<stage>.done`,
//! holding its wall time) so that rerunning continues where it stopped; an interrupted
//! pretraining resumes from its last checkpoint.
//!
//! Stages (upstream v0 `speedrun.sh`): report reset → tok-train → tok-eval → warmup (the GPU
//! kernel caches filled for pretraining's shapes, `base-train --warmup-only`; instant on the
//! CPU) → base-train → base-eval → mid-train → chat-eval (mid) → chat-sft → chat-eval (sft) →
//! chat-rl → chat-eval (rl) → report generate. The wall time of every stage is logged into the report
//! (section `speedrun`), which ends the run with its summary table.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// Flags.
#[derive(clap::Args)]
pub struct Args {
    /// Recipe: cpu (a tiny model, minutes on 2 cores), d12, d20 or d24 (GPU; upstream's).
    #[arg(long, default_value = "cpu")]
    preset: String,
    /// The offline data folder (pretrain/, eval_bundle/, …); default $NANOCHAT_DATA_DIR or
    /// ../shared/data.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Device: `auto`, `cpu`, `wgpu[:N]`, `cuda[:N]`.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Artifacts folder (default $NANOCHAT_BASE_DIR or ~/.cache/nanochat).
    #[arg(long)]
    base_dir: Option<PathBuf>,
    /// Data-parallel replicas (upstream's `torchrun --nproc_per_node`): passed as `--devices`
    /// to every training and evaluation stage; ranks use `--device` and the devices after it.
    #[arg(long, visible_alias = "nproc")]
    devices: Option<usize>,
}

/// A preset's flags per stage, as command lines.
struct Preset {
    vocab_size: &'static str,
    depth: &'static str,
    train: String,
    eval: &'static str,
    mid: &'static str,
    sft: &'static str,
    rl: &'static str,
    chat_eval: &'static str,
}

fn preset(name: &str) -> Result<Preset> {
    Ok(match name {
        "cpu" => Preset {
            vocab_size: "8192",
            depth: "4",
            train: "--max-seq-len 256 --window-pattern L --device-batch-size 8 \
                    --total-batch-size 2048 --num-iterations 120 --warmup-steps 10 \
                    --eval-every 40 --eval-tokens 32768 --sample-every 120 --save-every 40"
                .into(),
            eval: "--max-per-task 6 --split-tokens 32768",
            mid: "--mixture HHRLHF:600,MCExtra:600,GSM8K:600,Identity,SimpleSpelling:400,SpellingBee:400 \
                  --num-iterations 60 --save-every 20 --eval-every 30 --eval-tokens 16384",
            sft: "--mixture HHRLHF:400,MMLU:400,GSM8K:600,Identity,SimpleSpelling:300,SpellingBee:300 \
                  --num-iterations 60 --save-every 20 --eval-every 30 --eval-tokens 16384",
            rl: "--num-steps 12 --examples-per-step 4 --num-samples 4 --max-new-tokens 64 \
                 --eval-every 0 --eval-examples 16 --eval-k 2 --save-every 4",
            chat_eval: "-x 100 -m 96 --spelling-size 100",
        },
        "d12" | "d20" | "d24" => Preset {
            vocab_size: "32768",
            depth: match name {
                "d12" => "12",
                "d20" => "20",
                _ => "24",
            },
            train: format!(
                "--save-every 500 --target-param-data-ratio {}",
                if name == "d24" { 8 } else { 12 }
            ),
            eval: "--max-per-task 500",
            mid: "--save-every 200",
            sft: "--save-every 200",
            rl: "",
            chat_eval: "",
        },
        other => bail!("--preset {other}: expected cpu, d12, d20 or d24"),
    })
}

fn last_step(dir: &Path) -> Option<u64> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            name.strip_prefix("meta_")?
                .strip_suffix(".json")?
                .parse()
                .ok()
        })
        .max()
}

pub fn run(root: &Path, args: Args) -> Result<()> {
    let p = preset(&args.preset)?;
    let base = args.base_dir.clone().unwrap_or_else(|| {
        std::env::var_os("NANOCHAT_BASE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/nanochat")
            })
    });
    let data = args.data_dir.clone().unwrap_or_else(|| {
        std::env::var_os("NANOCHAT_DATA_DIR").map_or(root.join("../shared/data"), PathBuf::from)
    });
    let data = data
        .canonicalize()
        .with_context(|| format!("data folder {}", data.display()))?;
    let markers = base.join("speedrun");
    std::fs::create_dir_all(&markers)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(&cargo);
    build
        .args(["build", "--release", "--bin", "nanochat"])
        .current_dir(root);
    if args.device.starts_with("cuda") {
        build.args(["--features", "cuda"]);
    } else if args.device.starts_with("wgpu") {
        build.args(["--features", "wgpu"]);
    }
    if !build.status()?.success() {
        bail!("building nanochat failed");
    }
    let target = std::env::var("CARGO_TARGET_DIR").map_or(root.join("target"), PathBuf::from);
    let bin = target.join("release/nanochat");
    let tag = format!("d{}", p.depth);
    let total = Instant::now();
    let dev = args.device.as_str();
    // Every stage's command line; the training and evaluation stages also get `--devices`.
    let on = format!("-g {tag} --device {dev} --no-progress");
    let (ce, d) = (p.chat_eval, p.depth);
    let stages: Vec<(&str, String)> = vec![
        ("report-reset", format!("report reset --device {dev}")),
        (
            "tok-train",
            format!("tok-train --vocab-size {} --no-progress", p.vocab_size),
        ),
        ("tok-eval", "tok-eval".into()),
        // The run's kernels tuned ahead of it, so that pretraining's first step is not
        // minutes of silent tuning on a GPU with a cold cache (a no-op on the CPU).
        (
            "warmup",
            format!(
                "base-train --depth {d} --model-tag {tag} --device {dev} --no-progress {} --warmup-only",
                p.train
            ),
        ),
        (
            "base-train",
            format!(
                "base-train --depth {d} --model-tag {tag} --device {dev} --no-progress {}",
                p.train
            ),
        ),
        ("base-eval", format!("base-eval {on} {}", p.eval)),
        ("mid-train", format!("mid-train {on} {}", p.mid)),
        ("chat-eval-mid", format!("chat-eval -i mid {on} {ce}")),
        ("chat-sft", format!("chat-sft -i mid {on} {}", p.sft)),
        ("chat-eval-sft", format!("chat-eval -i sft {on} {ce}")),
        ("chat-rl", format!("chat-rl -i sft {on} {}", p.rl)),
        (
            "chat-eval-rl",
            format!("chat-eval -i rl {on} -a GSM8K {ce}"),
        ),
    ];
    let devices = args.devices.map(|n| n.to_string());
    let stages: Vec<(&str, Vec<String>)> = stages
        .into_iter()
        .map(|(name, line)| {
            let mut v: Vec<String> = line.split_whitespace().map(String::from).collect();
            let parallel = !matches!(name, "report-reset" | "tok-train" | "tok-eval" | "warmup");
            if let (true, Some(n)) = (parallel, &devices) {
                v.extend(["--devices".to_string(), n.clone()]);
            }
            (name, v)
        })
        .collect();
    let resumable = |name: &str| -> Option<PathBuf> {
        let dir = match name {
            "base-train" => "base_checkpoints",
            "mid-train" => "mid_checkpoints",
            "chat-sft" => "chatsft_checkpoints",
            "chat-rl" => "chatrl_checkpoints",
            _ => return None,
        };
        Some(base.join(dir).join(&tag))
    };
    for (name, mut cmd_args) in stages {
        let marker = markers.join(format!("{name}.done"));
        if marker.exists() {
            println!(
                "==> {name}: done earlier ({}), skipped",
                std::fs::read_to_string(&marker)?.trim()
            );
            continue;
        }
        if let Some(step) = resumable(name).and_then(|d| last_step(&d)) {
            println!("==> {name}: resuming from step {step}");
            cmd_args.extend(["--resume-from-step".to_string(), step.to_string()]);
        }
        println!("\n==> {name}: nanochat {}", cmd_args.join(" "));
        let start = Instant::now();
        let status = Command::new(&bin)
            .args(&cmd_args)
            .env("NANOCHAT_BASE_DIR", &base)
            .env("NANOCHAT_DATA_DIR", &data)
            .current_dir(root)
            .status()
            .with_context(|| format!("starting {}", bin.display()))?;
        if !status.success() {
            bail!(
                "stage {name} failed ({status}); rerun `cargo xtask speedrun` to continue from it"
            );
        }
        let secs = start.elapsed().as_secs_f64();
        std::fs::write(&marker, format!("{secs:.0} s\n"))?;
        println!("<== {name}: {secs:.0} s");
    }
    println!(
        "\nSpeedrun stages finished in {:.0} s this invocation.",
        total.elapsed().as_secs_f64()
    );
    // Stage wall times into the report, then the report card.
    let mut section = String::from("## Speedrun\n");
    section.push_str(&format!("timestamp: {}\n\n", now_rfc3339()));
    let mut sum = 0.0;
    for (name, _) in STAGE_NAMES.iter().map(|n| (*n, ())) {
        if let Ok(t) = std::fs::read_to_string(markers.join(format!("{name}.done"))) {
            let secs: f64 = t.trim().trim_end_matches(" s").parse().unwrap_or(0.0);
            sum += secs;
            section.push_str(&format!("- {name} (s): {secs:.0}\n"));
            println!("  {name:<14} {}", t.trim());
        }
    }
    section.push_str(&format!("- all stages (min): {:.1}\n\n", sum / 60.0));
    let report_dir = base.join("report");
    std::fs::create_dir_all(&report_dir)?;
    std::fs::write(report_dir.join("speedrun.md"), section)?;
    let status = Command::new(&bin)
        .args(["report", "generate", "--out"])
        .arg(root.join("report.md"))
        .env("NANOCHAT_BASE_DIR", &base)
        .current_dir(root)
        .status()?;
    if !status.success() {
        bail!("report generate failed ({status})");
    }
    println!(
        "\nTalk to the result:  {} chat-cli -i rl -g {tag}   (or -i sft)\n\
         Serve it:            {} serve -i rl -g {tag}   then open http://localhost:8000",
        bin.display(),
        bin.display()
    );
    Ok(())
}

const STAGE_NAMES: [&str; 12] = [
    "report-reset",
    "tok-train",
    "tok-eval",
    "warmup",
    "base-train",
    "base-eval",
    "mid-train",
    "chat-eval-mid",
    "chat-sft",
    "chat-eval-sft",
    "chat-rl",
    "chat-eval-rl",
];

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339()
}
