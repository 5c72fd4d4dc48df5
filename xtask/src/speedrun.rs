//! `cargo xtask speedrun`: the pipeline as child processes of the `nanochat` binary, one stage
//! after the other, with a marker file per finished stage (`<base>/speedrun/<stage>.done`,
//! holding its wall time) so that rerunning continues where it stopped; an interrupted
//! pretraining resumes from its last checkpoint.
//!
//! Stages today: tokenizer → tok-eval → base-train → base-eval. Midtraining, SFT, RL, chat
//! evals and the report card are not ported yet; the run says so at the end instead of
//! pretending.

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
}

struct Preset {
    vocab_size: &'static str,
    depth: &'static str,
    train: Vec<&'static str>,
    eval: Vec<&'static str>,
}

fn preset(name: &str) -> Result<Preset> {
    Ok(match name {
        "cpu" => Preset {
            vocab_size: "8192",
            depth: "4",
            train: vec![
                "--max-seq-len",
                "256",
                "--window-pattern",
                "L",
                "--device-batch-size",
                "8",
                "--total-batch-size",
                "2048",
                "--num-iterations",
                "200",
                "--warmup-steps",
                "10",
                "--eval-every",
                "50",
                "--eval-tokens",
                "32768",
                "--sample-every",
                "200",
                "--save-every",
                "50",
            ],
            eval: vec!["--max-per-task", "16", "--split-tokens", "32768"],
        },
        "d12" | "d20" | "d24" => Preset {
            vocab_size: "32768",
            depth: match name {
                "d12" => "12",
                "d20" => "20",
                _ => "24",
            },
            train: vec![
                "--save-every",
                "500",
                "--target-param-data-ratio",
                if name == "d24" { "8" } else { "12" },
            ],
            eval: vec!["--max-per-task", "500"],
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
    let ckpt = base.join("base_checkpoints").join(&tag);
    let total = Instant::now();
    let stages: Vec<(&str, Vec<String>)> = vec![
        (
            "tok-train",
            vec![
                "tok-train".into(),
                "--vocab-size".into(),
                p.vocab_size.into(),
                "--no-progress".into(),
            ],
        ),
        ("tok-eval", vec!["tok-eval".into()]),
        ("base-train", {
            let mut v: Vec<String> = [
                "base-train",
                "--depth",
                p.depth,
                "--model-tag",
                &tag,
                "--device",
                &args.device,
                "--no-progress",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            v.extend(p.train.iter().map(|s| s.to_string()));
            v
        }),
        ("base-eval", {
            let mut v: Vec<String> = ["base-eval", "--model-tag", &tag, "--device", &args.device]
                .iter()
                .map(|s| s.to_string())
                .collect();
            v.extend(p.eval.iter().map(|s| s.to_string()));
            v
        }),
    ];
    for (name, mut cmd_args) in stages {
        let marker = markers.join(format!("{name}.done"));
        if marker.exists() {
            println!(
                "==> {name}: done earlier ({}), skipped",
                std::fs::read_to_string(&marker)?.trim()
            );
            continue;
        }
        if name == "base-train"
            && let Some(step) = last_step(&ckpt)
        {
            println!("==> base-train: resuming from step {step}");
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
    for stage in ["tok-train", "tok-eval", "base-train", "base-eval"] {
        if let Ok(t) = std::fs::read_to_string(markers.join(format!("{stage}.done"))) {
            println!("  {stage:<12} {}", t.trim());
        }
    }
    println!(
        "Not ported yet: midtraining, SFT, RL, chat evals, report card.\n\
         Talk to the base model:  {} chat-cli --source base -g {tag} -p \"The capital of France is\"\n\
         Serve it:                {} serve --source base -g {tag}",
        bin.display(),
        bin.display()
    );
    Ok(())
}
