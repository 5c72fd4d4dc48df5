//! `nanochat doctor`: what this build and machine can do and what is missing — backends
//! compiled in and working, cores and memory, the GPU kernel caches, the tokenizer, pretraining
//! shards, the CORE eval bundle, and checkpoints — each missing piece with the command that
//! provides it. The tokenizer and each checkpoint show where they are in their lifecycles
//! ([`lifecycle_lines`]).

use std::path::Path;

use nanochat::core::Source;
use nanochat::core::checkpoint_manager::list_steps;
use nanochat::core::paths::{eval_bundle_dir, tokenizer_dir};
use nanochat::tokenizer::Tokenizer;

fn line(ok: bool, what: &str, detail: impl std::fmt::Display) {
    println!(
        "{} {what:<18} {detail}",
        if ok { "[ok]  " } else { "[miss]" }
    );
}

fn mem_gib(key: &str) -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: f64 = text
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0 / 1024.0)
}

/// The GPU kernel caches: where, and which GPUs have been tuned (with their sizes).
fn kernel_cache_line() {
    use nanochat::model::kernel_cache::{self, ENV};
    let root = kernel_cache::root();
    let gpus = kernel_cache::summary(&root);
    let tuned: Vec<String> = gpus
        .iter()
        .filter(|g| g.files > 0)
        .map(|g| {
            format!(
                "{} ({} files, {:.1} MB)",
                g.gpu,
                g.files,
                g.bytes as f64 / 1e6
            )
        })
        .collect();
    line(
        true,
        "kernel cache",
        if tuned.is_empty() {
            format!(
                "{} (empty: the first GPU run autotunes and compiles its kernels; ${ENV} moves it)",
                root.display()
            )
        } else {
            format!("{} — tuned for: {}", root.display(), tuned.join(", "))
        },
    );
}

pub fn run(base: &Path) -> anyhow::Result<()> {
    println!(
        "nanochat {} — base dir {}",
        env!("CARGO_PKG_VERSION"),
        base.display()
    );
    let compiled = nanochat::model::compiled_backends();
    line(
        true,
        "backends",
        format!("compiled in: {}", compiled.join(", ")),
    );
    let auto = nanochat::model::backend::resolve_auto();
    let gpu = !matches!(auto, nanochat::core::DeviceSpec::Cpu);
    line(
        gpu,
        "accelerator",
        if gpu {
            format!("`--device auto` uses {auto}")
        } else if compiled.iter().any(|b| *b == "cuda" || *b == "wgpu") {
            "GPU backend compiled in but no working device found: `--device auto` uses the CPU"
                .to_string()
        } else {
            "none compiled in (rebuild with `--features cuda` or `--features wgpu` for a GPU); the CPU works".to_string()
        },
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem = match (mem_gib("MemTotal:"), mem_gib("MemAvailable:")) {
        (Some(t), Some(a)) => format!(", {a:.1} of {t:.1} GiB memory free"),
        _ => String::new(),
    };
    line(true, "machine", format!("{cores} cores{mem}"));
    if compiled.iter().any(|b| *b == "cuda" || *b == "wgpu") {
        kernel_cache_line();
    }

    let tok_dir = tokenizer_dir(base);
    match Tokenizer::load(&tok_dir) {
        Ok(t) => line(
            true,
            "tokenizer",
            format!(
                "vocab {} in {} — {}",
                t.vocab_size(),
                tok_dir.display(),
                lifecycle_lines::tokenizer(&t)
            ),
        ),
        Err(e) => line(
            false,
            "tokenizer",
            format!("{e} — run `nanochat tok-train`"),
        ),
    }
    super::doctor_dataset::report(base, line);
    let bundle = eval_bundle_dir();
    match nanochat::eval::Bundle::open(&bundle) {
        Ok(b) => {
            let present = b.tasks.iter().filter(|t| b.data_path(t).exists()).count();
            line(
                present == b.tasks.len(),
                "CORE bundle",
                format!(
                    "{present} of {} tasks in {} (reported as CORE-{present})",
                    b.tasks.len(),
                    bundle.display()
                ),
            );
        }
        Err(e) => line(
            false,
            "CORE bundle",
            format!("{e} — base-eval's CORE needs the eval bundle (set NANOCHAT_DATA_DIR)"),
        ),
    }
    let data_root = nanochat::core::paths::data_dir();
    let needed = [
        "tasks/gsm8k/train.jsonl",
        "tasks/gsm8k/test.jsonl",
        "tasks/mmlu/test",
        "tasks/humaneval/HumanEval.jsonl.gz",
        "words/words_alpha.zip",
        "sft/hh_rlhf_harmless_base_test.jsonl.gz",
        "sft/mc_extra",
        "eval_bundle/eval_data/world_knowledge/arc_easy.jsonl",
    ];
    let missing: Vec<&str> = needed
        .iter()
        .copied()
        .filter(|p| !data_root.join(p).exists())
        .collect();
    line(
        missing.is_empty(),
        "task data",
        if missing.is_empty() {
            format!(
                "mid/SFT/RL mixtures and chat evals in {}",
                data_root.display()
            )
        } else {
            format!(
                "missing in {}: {} — set NANOCHAT_DATA_DIR to the offline data folder",
                data_root.display(),
                missing.join(", ")
            )
        },
    );
    match nanochat::data::Sandbox::new(nanochat::data::SandboxLimits::default()) {
        Ok(sb) => line(true, "code sandbox", format!("python3, {}", sb.isolation())),
        Err(e) => line(false, "code sandbox", format!("{e} — HumanEval cannot run")),
    }
    for source in [Source::Base, Source::Mid, Source::Sft, Source::Rl] {
        let root = base.join(source.dir_name());
        let mut found = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&root) {
            for e in entries.flatten() {
                let dir = e.path();
                if let Ok(steps) = list_steps(&dir)
                    && let Some(&last) = steps.last()
                {
                    found.push(format!(
                        "{} (step {last}, {})",
                        e.file_name().to_string_lossy(),
                        lifecycle_lines::checkpoint(&dir, last)
                    ));
                }
            }
        }
        found.sort();
        let what = format!("{} checkpoints", source.as_str());
        if found.is_empty() {
            let hint = match source {
                Source::Base => "`nanochat base-train`",
                Source::Mid => "`nanochat mid-train`",
                Source::Sft => "`nanochat chat-sft`",
                Source::Rl => "`nanochat chat-rl`",
            };
            line(false, &what, format!("none in {} — {hint}", root.display()));
        } else {
            line(true, &what, found.join(", "));
        }
    }
    Ok(())
}

/// The lifecycle states doctor shows: the tokenizer's and each last checkpoint's.
mod lifecycle_lines {
    use std::path::Path;

    use nanochat::core::checkpoint_handle::Checkpoint;
    use nanochat::tokenizer::Tokenizer;

    /// `loaded (trained <date>)`, or why the tokenizer has no recorded lifecycle.
    pub fn tokenizer(t: &Tokenizer) -> String {
        let Some(l) = t.lifecycle() else {
            return "loaded (its training was not recorded: imported, or trained before \
                    tokenizer_state.json existed)"
                .to_string();
        };
        let trained = l
            .history()
            .iter()
            .find(|(s, _)| *s == nanochat::core::TokenizerState::Trained)
            .map(|(_, at)| format!(" (trained {})", at.format("%Y-%m-%d %H:%M UTC")))
            .unwrap_or_default();
        let state = format!("{:?}", l.state()).to_lowercase();
        format!("{state}{trained}")
    }

    /// The checkpoint's lifecycle once doctor has loaded its meta (`created → saved → loaded,
    /// saved <date>`; the weights are validated when a stage loads them), or the error that
    /// stopped it before Loaded.
    pub fn checkpoint(dir: &Path, step: u64) -> String {
        match Checkpoint::load(dir, step) {
            Ok(c) => {
                let saved = c
                    .lifecycle()
                    .history()
                    .iter()
                    .find(|(s, _)| *s == nanochat::core::CheckpointState::Saved)
                    .map(|(_, at)| format!(" {}", at.format("%Y-%m-%d %H:%M UTC")))
                    .unwrap_or_default();
                format!("{}, saved{saved}", c.describe())
            }
            Err(e) => format!("its meta does not load: {e}"),
        }
    }
}
