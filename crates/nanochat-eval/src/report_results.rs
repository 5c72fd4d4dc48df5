//! Evaluation results in the report card (upstream v0 `report.py` copies each evaluation's
//! numbers into its section). Here an evaluation's section names its result files
//! (`- result: base_eval/d4_000100_core.json`, relative to the base dir) and the report reads
//! them when it is generated: each `result` line is followed by the lines rendered from the
//! [`EvaluationResult`] it names, so the report card shows what the files hold. Sections
//! written before result files existed (plain `- key: value` lines) read as they are.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use nanochat_core::{EvaluationResult, Measure, Validate};
use serde_json::{Value, json};

use crate::base_results::GPT2_KEY;

/// The section key of a result file.
pub const RESULT_KEY: &str = "result";

/// The key-values of a result, as the report card shows them: accuracy results give the
/// aggregate under the metric's name (`CORE-18`, `ChatCORE`), GPT-2's CORE on the same tasks
/// when known, and per task its accuracy and centered accuracy; bits-per-byte results give
/// `<split>_bpb` per split.
pub fn render(r: &EvaluationResult) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    match r.measure {
        Measure::Accuracy => {
            if let Some(a) = r.aggregate {
                out.push((r.metric.clone(), json!(a)));
            }
            if let Some(g) = r.extra.get(GPT2_KEY) {
                out.push(("GPT-2 124M on the same tasks".into(), g.clone()));
            }
            for (task, acc) in &r.scores {
                out.push((task.clone(), json!(acc)));
                if let Some(c) = r.centered.get(task) {
                    out.push((format!("centered {task}"), json!(c)));
                }
            }
        }
        Measure::BitsPerByte => {
            for (split, v) in &r.scores {
                out.push((format!("{split}_bpb"), json!(v)));
            }
        }
    }
    out
}

/// Reads and validates the result file `path` (relative to `base_dir` unless absolute).
pub fn read(path: &str, base_dir: &Path) -> Result<EvaluationResult, String> {
    let full = resolve(path, base_dir);
    let bytes = std::fs::read(&full).map_err(|e| format!("{}: {e}", full.display()))?;
    let r: EvaluationResult =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", full.display()))?;
    r.validate()
        .map_err(|e| format!("{}: {e}", full.display()))?;
    Ok(r)
}

fn resolve(path: &str, base_dir: &Path) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

/// How a section names `file`: relative to `base_dir` when it lies inside it.
pub fn reference(file: &Path, base_dir: &Path) -> String {
    file.strip_prefix(base_dir)
        .unwrap_or(file)
        .display()
        .to_string()
}

/// A section's text with the lines of every result file it names inserted after the file's
/// `- result:` line; a file that cannot be read or breaks a rule is marked unreadable there.
pub fn expand(text: &str, base_dir: &Path) -> String {
    let prefix = format!("- {RESULT_KEY}: ");
    let mut out = String::new();
    for line in text.lines() {
        let Some(path) = line.strip_prefix(&prefix).map(str::trim) else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        match read(path, base_dir) {
            Ok(r) => {
                let _ = writeln!(out, "{line}");
                for (k, v) in render(&r) {
                    let _ = writeln!(out, "- {k}: {}", fmt_value(&v));
                }
            }
            Err(e) => {
                let _ = writeln!(out, "{line} (unreadable: {e})");
            }
        }
    }
    out
}

/// A section value as written: floats with 4 decimals, strings as they are.
pub(crate) fn fmt_value(v: &Value) -> String {
    match v {
        Value::Number(n) if n.is_f64() => format!("{:.4}", n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
