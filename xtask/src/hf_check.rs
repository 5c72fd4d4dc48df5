//! `cargo xtask hf-check`: our Hugging Face exports checked in transformers itself. In a
//! fresh base folder it trains a tokenizer and two small models, one of each architecture
//! (`base-train --arch current` → the remote-code format, `--arch v0` → transformers' built-in
//! `NanoChatForCausalLM`), exports each with `nanochat export --reference`, and runs
//! `xtask/scripts/hf_check.py` on it: logits against ours (max abs diff ≤ 1e-4, float32),
//! greedy `generate` against our greedy tokens, the tokenizer's encoding and
//! `apply_chat_template` against our renderer. Then each export is imported back
//! (`nanochat import`) and exported again: the weights must come back byte for byte.
//! `--checkpoint SOURCE:TAG` adds checkpoints of an existing base folder (a speedrun's).
//!
//! torch, transformers and safetensors come from PyPI into `target/hf-venv` on first use
//! (about 1.5 minutes and 5.6 GB: PyPI's torch is the CUDA build, which also runs on the
//! CPU), or from `--python`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::nanochat_bin::{base_train, exec, tok_train};

/// Flags.
#[derive(clap::Args)]
pub struct Args {
    /// A Python that already has torch, transformers and safetensors.
    #[arg(long)]
    python: Option<PathBuf>,
    /// Also check these checkpoints of --base-dir (e.g. `sft:d4`), besides the two trained here.
    #[arg(long, value_name = "SOURCE:TAG")]
    checkpoint: Vec<String>,
    /// Base folder of the --checkpoint models (default: $NANOCHAT_BASE_DIR, else
    /// ~/.cache/nanochat).
    #[arg(long)]
    base_dir: Option<PathBuf>,
}

/// One model through export, transformers and back; returns the checker's summary.
fn check(
    bin: &Path,
    python: &Path,
    script: &Path,
    base: &Path,
    work: &Path,
    (source, tag): (&str, &str),
) -> Result<serde_json::Value> {
    let name = format!("{source}-{tag}");
    let export = work.join(format!("export-{name}"));
    let reference = work.join(format!("reference-{name}.json"));
    let _ = std::fs::remove_dir_all(&export);
    let (e, r) = (export.to_string_lossy(), reference.to_string_lossy());
    print!(
        "{}",
        exec(
            bin,
            base,
            &["export", &e, "-i", source, "-g", tag, "--reference", &r]
        )?
    );
    let out = Command::new(python)
        .arg(script)
        .args([&export, &reference])
        .arg("--require-tokenizer")
        .output()
        .context("starting the checker")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    let mut summary: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .with_context(|| {
            format!(
                "the checker printed no summary:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    // Round trip: import the folder into a scratch base folder, export again, compare.
    let back_base = work.join(format!("roundtrip-{name}"));
    let _ = std::fs::remove_dir_all(&back_base);
    std::fs::create_dir_all(&back_base)?;
    exec(bin, &back_base, &["import", &e, "--model-tag", "back"])?;
    let again = work.join(format!("export-{name}-again"));
    let _ = std::fs::remove_dir_all(&again);
    exec(
        bin,
        &back_base,
        &[
            "export",
            &again.to_string_lossy(),
            "-i",
            "base",
            "-g",
            "back",
        ],
    )?;
    let same = std::fs::read(export.join("model.safetensors"))?
        == std::fs::read(again.join("model.safetensors"))?;
    println!(
        "{} round trip (import, export again): weights {}",
        if same { "PASS" } else { "FAIL" },
        if same { "byte-identical" } else { "differ" }
    );
    summary["model"] = name.into();
    summary["roundtrip"] = same.into();
    Ok(summary)
}

pub fn run(root: &Path, args: Args) -> Result<()> {
    let start = Instant::now();
    let python = match args.python {
        Some(p) => p,
        None => crate::venv::python(
            root,
            "hf-venv",
            &["torch", "transformers", "safetensors"],
            "torch, transformers, safetensors",
        )?,
    };
    let bin = crate::nanochat_bin::build(root)?;
    let script = root.join("xtask/scripts/hf_check.py");
    let work = root.join("target/hf-check");
    let base = work.join("base");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base)?;

    tok_train(&bin, &base)?;
    for arch in ["current", "v0"] {
        base_train(
            &bin,
            &base,
            &[
                "--arch",
                arch,
                "--model-tag",
                arch,
                "--depth",
                "2",
                "--device-batch-size",
                "2",
                "--total-batch-size",
                "512",
                "--num-iterations",
                "8",
            ],
        )?;
    }
    let mut summaries = Vec::new();
    for arch in ["current", "v0"] {
        summaries.push(check(&bin, &python, &script, &base, &work, ("base", arch))?);
    }
    let theirs = args
        .base_dir
        .or_else(|| std::env::var_os("NANOCHAT_BASE_DIR").map(PathBuf::from))
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/nanochat")
        });
    for c in &args.checkpoint {
        let (source, tag) = c
            .split_once(':')
            .with_context(|| format!("--checkpoint {c}: expected SOURCE:TAG, e.g. sft:d4"))?;
        summaries.push(check(
            &bin,
            &python,
            &script,
            &theirs,
            &work,
            (source, tag),
        )?);
    }

    println!(
        "\n{:<16} {:<8} {:>14} {:>7} {:>9} {:>5} {:>8} {:>10}",
        "model", "format", "max |Δlogit|", "greedy", "tokenizer", "chat", "load s", "round trip"
    );
    let mut failed = false;
    for s in &summaries {
        let ok = s["passed"] == true && s["roundtrip"] == true;
        failed |= !ok;
        let text = |key: &str| match &s[key] {
            serde_json::Value::String(t) => t.clone(),
            v => v.to_string(),
        };
        println!(
            "{:<16} {:<8} {:>14} {:>7} {:>9} {:>5} {:>8} {:>10}",
            text("model"),
            text("format"),
            s["max_abs_logit_diff"]
                .as_f64()
                .map_or("-".into(), |d| format!("{d:.3e}")),
            text("greedy_match"),
            text("tokenizer_match"),
            text("chat_template_match"),
            text("load_s"),
            text("roundtrip")
        );
    }
    println!("hf-check took {:.0} s", start.elapsed().as_secs_f64());
    if failed {
        bail!("hf-check failed (see above)");
    }
    Ok(())
}
