//! The report card (upstream v0 `nanochat/report.py`): every stage logs a section of
//! `- key: value` lines into `$NANOCHAT_BASE_DIR/report/<section>.md`; `generate` joins the
//! header (git, hardware, software, code size), the sections in pipeline order and a summary
//! table (Metric × BASE/MID/SFT/RL) into `report/report.md`, and copies it to a destination.
//!
//! Section values: floats are written with 4 decimals; a string ending in `.png` is embedded
//! as an image (relative to the report folder). Evaluations log their result files
//! (`- result: <path>`), which are read when the report is generated
//! ([`crate::report_results`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{DateTime, Utc};
use nanochat_core::fs::{IoError, write_atomic};
use serde_json::Value;

use crate::report_results::{RESULT_KEY, expand, fmt_value, reference};

/// Sections in pipeline order (upstream's names).
pub const SECTIONS: [&str; 11] = [
    "tokenizer-training",
    "tokenizer-evaluation",
    "base-model-training",
    "base-model-evaluation",
    "midtraining",
    "chat-evaluation-mid",
    "chat-sft",
    "chat-evaluation-sft",
    "chat-rl",
    "chat-evaluation-rl",
    "speedrun",
];

/// Rows of the summary table (the CORE row takes whichever `CORE…` key was logged).
pub const SUMMARY_ROWS: [&str; 8] = [
    "CORE",
    "ARC-Challenge",
    "ARC-Easy",
    "GSM8K",
    "HumanEval",
    "MMLU",
    "SpellingBee",
    "ChatCORE",
];

const RUN_STARTED: &str = "Run started: ";

/// The report folder of a base dir.
#[derive(Debug, Clone)]
pub struct Report {
    dir: PathBuf,
}

fn title(slug: &str) -> String {
    let fixed = match slug {
        "chat-sft" => Some("Chat SFT"),
        "chat-rl" => Some("Chat RL"),
        "chat-evaluation-mid" => Some("Chat evaluation (mid)"),
        "chat-evaluation-sft" => Some("Chat evaluation (SFT)"),
        "chat-evaluation-rl" => Some("Chat evaluation (RL)"),
        _ => None,
    };
    if let Some(t) = fixed {
        return t.to_string();
    }
    let s = slug.replace('-', " ");
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => s,
    }
}

fn git(args: &[&str], repo: &Path) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(repo)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn memory_gb() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: f64 = text
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0 / 1024.0)
}

/// Characters, lines and files of the git-tracked source (`rs, md, toml, html, sh, py`).
fn bloat(repo: &Path) -> Option<(usize, usize, usize)> {
    let files = git(&["ls-files"], repo)?;
    let (mut chars, mut lines, mut n) = (0, 0, 0);
    for f in files.lines() {
        let keep = ["rs", "md", "toml", "html", "sh", "py"]
            .iter()
            .any(|e| f.ends_with(&format!(".{e}")));
        if !keep {
            continue;
        }
        if let Ok(t) = std::fs::read_to_string(repo.join(f)) {
            chars += t.chars().count();
            lines += t.lines().count();
            n += 1;
        }
    }
    Some((chars, lines, n))
}

/// Parses the `- key: value` lines of a section.
pub fn parse_section(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("- "))
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

impl Report {
    /// `<base_dir>/report`.
    pub fn new(base_dir: &Path) -> Self {
        Self {
            dir: base_dir.join("report"),
        }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn section_path(&self, slug: &str) -> PathBuf {
        self.dir.join(format!("{slug}.md"))
    }

    /// Starts a new report: removes old sections and writes the header (git state of `repo`,
    /// hardware, software, code size, start time).
    pub fn reset(&self, repo: &Path, hardware: &str) -> Result<(), IoError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| IoError::new("create", &self.dir, e))?;
        for slug in SECTIONS {
            let p = self.section_path(slug);
            if p.exists() {
                std::fs::remove_file(&p).map_err(|e| IoError::new("remove", &p, e))?;
            }
        }
        let mut h = String::from("# nanochat training report\n\n");
        let now = Utc::now();
        let _ = writeln!(h, "Generated: {}\n", now.format("%Y-%m-%d %H:%M:%S UTC"));
        h.push_str("## Environment\n\n### Git Information\n");
        let unknown = || "unknown".to_string();
        let _ = writeln!(
            h,
            "- Branch: {}",
            git(&["rev-parse", "--abbrev-ref", "HEAD"], repo).unwrap_or_else(unknown)
        );
        let _ = writeln!(
            h,
            "- Commit: {}",
            git(&["rev-parse", "--short", "HEAD"], repo).unwrap_or_else(unknown)
        );
        let dirty = git(&["status", "--porcelain"], repo).map(|s| !s.is_empty());
        let _ = writeln!(
            h,
            "- Dirty: {}",
            dirty.map_or_else(unknown, |d| d.to_string())
        );
        let _ = writeln!(
            h,
            "- Message: {}",
            git(&["log", "-1", "--format=%s"], repo).unwrap_or_else(unknown)
        );
        h.push_str("\n### Hardware\n");
        let _ = writeln!(
            h,
            "- Platform: {} {}",
            std::env::consts::OS,
            std::env::consts::ARCH
        );
        let _ = writeln!(
            h,
            "- CPUs: {}",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        if let Some(gb) = memory_gb() {
            let _ = writeln!(h, "- Memory: {gb:.1} GB");
        }
        let _ = writeln!(h, "- Device: {hardware}");
        h.push_str("\n### Software\n");
        let _ = writeln!(h, "- nanochat-rs: {}", env!("CARGO_PKG_VERSION"));
        h.push_str("- burn: 0.21.0\n");
        if let Some((chars, lines, files)) = bloat(repo) {
            h.push_str("\n### Bloat\n");
            let _ = writeln!(h, "- Characters: {chars}");
            let _ = writeln!(h, "- Lines: {lines}");
            let _ = writeln!(h, "- Files: {files}");
            let _ = writeln!(h, "- Tokens (approx): {}", chars / 4);
        }
        let _ = writeln!(h, "\n{RUN_STARTED}{}\n", now.to_rfc3339());
        write_atomic(&self.dir.join("header.md"), h.as_bytes())
    }

    /// Writes section `slug` with `entries` (replacing an earlier one).
    pub fn log(
        &self,
        slug: &str,
        entries: &[(impl AsRef<str>, Value)],
    ) -> Result<PathBuf, IoError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| IoError::new("create", &self.dir, e))?;
        let mut s = format!(
            "## {}\ntimestamp: {}\n\n",
            title(slug),
            Utc::now().to_rfc3339()
        );
        for (k, v) in entries {
            let k = k.as_ref();
            match v {
                Value::String(p) if p.ends_with(".png") => {
                    let _ = writeln!(s, "\n![{k}]({p})\n");
                }
                _ => {
                    let _ = writeln!(s, "- {k}: {}", fmt_value(v));
                }
            }
        }
        s.push('\n');
        let path = self.section_path(slug);
        write_atomic(&path, s.as_bytes())?;
        Ok(path)
    }

    /// Writes section `slug` with `entries` followed by the result files of an evaluation
    /// (`- result: <path>`, relative to the base dir), which [`Report::generate`] reads.
    pub fn log_results(
        &self,
        slug: &str,
        entries: &[(String, Value)],
        files: &[PathBuf],
    ) -> Result<PathBuf, IoError> {
        let base = self.base_dir();
        let mut all = entries.to_vec();
        for f in files {
            all.push((RESULT_KEY.to_string(), Value::String(reference(f, base))));
        }
        self.log(slug, &all)
    }

    /// The base dir this report belongs to.
    fn base_dir(&self) -> &Path {
        self.dir.parent().unwrap_or(Path::new("."))
    }

    /// A section's text with its result files read in ([`expand`]).
    fn section_text(&self, slug: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.section_path(slug)).ok()?;
        Some(expand(&text, self.base_dir()))
    }

    /// The key-values of a logged section, if it exists.
    pub fn section(&self, slug: &str) -> Option<BTreeMap<String, String>> {
        self.section_text(slug).map(|t| parse_section(&t))
    }

    /// Joins header, sections and summary into `report/report.md` and returns its text.
    pub fn generate(&self) -> Result<String, IoError> {
        let header = std::fs::read_to_string(self.dir.join("header.md")).unwrap_or_default();
        let mut out = header.clone();
        let mut last_time: Option<DateTime<Utc>> = None;
        for slug in SECTIONS {
            if let Some(t) = self.section_text(slug) {
                if let Some(ts) = t
                    .lines()
                    .find_map(|l| l.strip_prefix("timestamp: "))
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                {
                    let ts = ts.with_timezone(&Utc);
                    last_time = Some(last_time.map_or(ts, |l| l.max(ts)));
                }
                out.push_str(&t);
            }
        }
        out.push_str(&self.summary());
        let started = header
            .lines()
            .find_map(|l| l.strip_prefix(RUN_STARTED))
            .and_then(|s| DateTime::parse_from_rfc3339(s.trim()).ok());
        if let (Some(s), Some(e)) = (started, last_time) {
            let secs = (e - s.with_timezone(&Utc)).num_seconds().max(0);
            let _ = writeln!(
                out,
                "\nTotal wall clock time: {}h{}m\n",
                secs / 3600,
                (secs % 3600) / 60
            );
        }
        write_atomic(&self.dir.join("report.md"), out.as_bytes())?;
        Ok(out)
    }

    /// The summary table: rows [`SUMMARY_ROWS`], columns for the stages that were evaluated.
    pub fn summary(&self) -> String {
        let cols: Vec<(&str, BTreeMap<String, String>)> = [
            ("BASE", "base-model-evaluation"),
            ("MID", "chat-evaluation-mid"),
            ("SFT", "chat-evaluation-sft"),
            ("RL", "chat-evaluation-rl"),
        ]
        .into_iter()
        .filter_map(|(c, slug)| self.section(slug).map(|s| (c, s)))
        .collect();
        let mut s = String::from("## Summary\n\n");
        if cols.is_empty() {
            s.push_str("(no evaluations logged yet)\n");
            return s;
        }
        let _ = write!(s, "| Metric |");
        for (c, _) in &cols {
            let _ = write!(s, " {c} |");
        }
        s.push_str("\n|---|");
        s.push_str(&"---|".repeat(cols.len()));
        s.push('\n');
        for row in SUMMARY_ROWS {
            let cells: Vec<String> = cols
                .iter()
                .map(|(_, kv)| {
                    let v = if row == "CORE" {
                        kv.iter()
                            .find(|(k, _)| k.starts_with("CORE"))
                            .map(|(k, v)| format!("{v} ({k})"))
                    } else {
                        kv.get(row).cloned()
                    };
                    v.unwrap_or_else(|| "-".into())
                })
                .collect();
            if cells.iter().all(|c| c == "-") {
                continue;
            }
            let _ = writeln!(s, "| {row} | {} |", cells.join(" | "));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sections_and_summary() {
        let dir = tempfile::tempdir().unwrap();
        let r = Report::new(dir.path());
        r.reset(Path::new("."), "cpu").unwrap();
        r.log(
            "base-model-evaluation",
            &[("CORE-18", json!(0.0123)), ("hellaswag", json!(0.3))],
        )
        .unwrap();
        r.log(
            "chat-evaluation-sft",
            &[
                ("ARC-Easy", json!(0.26)),
                ("ChatCORE", json!(0.01)),
                ("plot", json!("x.png")),
            ],
        )
        .unwrap();
        let text = r.generate().unwrap();
        assert!(text.contains("## Base model evaluation"));
        assert!(text.contains("| Metric | BASE | SFT |"), "{text}");
        assert!(text.contains("| CORE | 0.0123 (CORE-18) | - |"), "{text}");
        assert!(text.contains("| ARC-Easy | - | 0.2600 |"), "{text}");
        assert!(text.contains("![plot](x.png)"));
        assert!(text.contains("Total wall clock time: 0h0m"));
        assert!(dir.path().join("report/report.md").exists());
    }

    #[test]
    fn generate_reads_the_result_files_and_old_sections() {
        use crate::base_eval::{CoreResult, Evaluated, TaskScore};
        use crate::base_results::{bpb_result, core_result};
        use nanochat_core::EvaluationConfig;
        let dir = tempfile::tempdir().unwrap();
        let of = Evaluated {
            checkpoint: dir.path().join("base_checkpoints/d4"),
            step: 7,
        };
        let task = TaskScore {
            label: "hellaswag".into(),
            examples: 10,
            accuracy: 0.3,
            centered: 0.1,
            seconds: 1.0,
        };
        let core = CoreResult {
            label: "CORE-18".into(),
            core_metric: 0.0123,
            tasks: vec![task],
            skipped: vec!["jeopardy".into()],
            gpt2_same_tasks: Some(0.12),
        };
        let core_cfg = EvaluationConfig::Core {
            bundle_dir: "b".into(),
            max_per_task: None,
            world_size: 1,
        };
        let bpb_cfg = EvaluationConfig::Bpb {
            data_dir: "d".into(),
            split_tokens: 1024,
            device_batch_size: 2,
            seq_len: 32,
            world_size: 1,
        };
        let r = crate::BaseEvalReport {
            core: Some(core_result(&core, &of, core_cfg).unwrap()),
            bpb: Some(bpb_result(Some(1.5), None, &of, bpb_cfg).unwrap()),
        };
        let files = r.save(dir.path()).unwrap();
        let report = Report::new(dir.path());
        report.reset(Path::new("."), "cpu").unwrap();
        report
            .log_results("base-model-evaluation", &[], &files)
            .unwrap();
        // A section from before result files: plain key-values, read as they are.
        report
            .log("chat-evaluation-sft", &[("ARC-Easy", json!(0.26))])
            .unwrap();
        let s = report.section("base-model-evaluation").unwrap();
        assert_eq!(s["train_bpb"], "1.5000");
        assert_eq!(s["CORE-18"], "0.0123");
        assert_eq!(s["GPT-2 124M on the same tasks"], "0.1200");
        assert_eq!(s["centered hellaswag"], "0.1000");
        assert!(!s.contains_key("val_bpb"));
        let text = report.generate().unwrap();
        assert!(
            text.contains("- result: base_eval/d4_000007_core.json\n- CORE-18: 0.0123"),
            "{text}"
        );
        assert!(text.contains("| CORE | 0.0123 (CORE-18) | - |"), "{text}");
        assert!(text.contains("| ARC-Easy | - | 0.2600 |"), "{text}");
        // The report shows what the files hold: change a file, and the report follows.
        let mut changed = r.core.clone().unwrap();
        changed.aggregate = Some(0.5);
        std::fs::write(&files[0], serde_json::to_vec(&changed).unwrap()).unwrap();
        assert!(
            report
                .generate()
                .unwrap()
                .contains("| CORE | 0.5000 (CORE-18)")
        );
        // A file that is gone or breaks a rule is named, not silently skipped.
        std::fs::write(&files[1], b"{\"model\": \"\"}").unwrap();
        std::fs::remove_file(&files[0]).unwrap();
        let text = report.generate().unwrap();
        assert!(
            text.contains("- result: base_eval/d4_000007_core.json (unreadable: "),
            "{text}"
        );
        assert!(
            text.contains("- result: base_eval/d4_000007_bpb.json (unreadable: "),
            "{text}"
        );
    }
}
