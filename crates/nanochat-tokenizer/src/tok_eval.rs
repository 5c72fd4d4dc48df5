//! Tokenizer compression compared with GPT-2's and GPT-4's (upstream `scripts/tok_eval.py`):
//! bytes per token on a few kinds of text and on the data's train and validation shards.
//! GPT-2 (`r50k_base`) and GPT-4 (`cl100k_base`) ship inside tiktoken-rs, so this runs offline.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tiktoken_rs::CoreBPE;

use crate::error::TokenizerError;
use crate::tokenizer::Tokenizer;

/// A sample of text to measure on; documents are encoded separately (in parallel).
#[derive(Debug, Clone)]
pub struct EvalText {
    /// Short name for the table.
    pub name: String,
    /// The documents.
    pub docs: Vec<String>,
}

/// One tokenizer on one text.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Compression {
    /// UTF-8 bytes of the text.
    pub bytes: u64,
    /// Tokens it encodes to.
    pub tokens: u64,
}

impl Compression {
    /// Bytes per token (higher is better).
    pub fn ratio(&self) -> f64 {
        self.bytes as f64 / self.tokens.max(1) as f64
    }
}

/// The whole comparison: per text, GPT-2, GPT-4 and ours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokEvalResult {
    /// Vocabulary sizes: GPT-2, GPT-4, ours.
    pub vocab_sizes: [usize; 3],
    /// `(text name, [gpt2, gpt4, ours])`.
    pub rows: Vec<(String, [Compression; 3])>,
}

fn measure(
    docs: &[String],
    encode: impl Fn(&str) -> Vec<u32> + Sync,
    decode: impl Fn(&[u32]) -> Option<String> + Sync,
) -> Result<Compression, TokenizerError> {
    docs.par_iter()
        .map(|d| {
            let ids = encode(d);
            if decode(&ids).as_deref() != Some(d.as_str()) {
                return Err(TokenizerError::Train(format!(
                    "round trip failed on a document starting {:?}",
                    &d[..d.len().min(40)]
                )));
            }
            Ok(Compression {
                bytes: d.len() as u64,
                tokens: ids.len() as u64,
            })
        })
        .try_reduce(
            || Compression {
                bytes: 0,
                tokens: 0,
            },
            |a, b| {
                Ok(Compression {
                    bytes: a.bytes + b.bytes,
                    tokens: a.tokens + b.tokens,
                })
            },
        )
}

fn measure_tiktoken(bpe: &CoreBPE, docs: &[String]) -> Result<Compression, TokenizerError> {
    measure(docs, |t| bpe.encode_ordinary(t), |ids| bpe.decode(ids).ok())
}

/// Measures GPT-2, GPT-4 and `ours` on every text; checks that each decodes back exactly.
pub fn evaluate(ours: &Tokenizer, texts: &[EvalText]) -> Result<TokEvalResult, TokenizerError> {
    let gpt2 = tiktoken_rs::r50k_base_singleton();
    let gpt4 = tiktoken_rs::cl100k_base_singleton();
    let mut rows = Vec::new();
    for t in texts {
        let g2 = measure_tiktoken(gpt2, &t.docs)?;
        let g4 = measure_tiktoken(gpt4, &t.docs)?;
        let o = measure(&t.docs, |s| ours.encode(s), |ids| ours.decode(ids).ok())?;
        rows.push((t.name.clone(), [g2, g4, o]));
    }
    Ok(TokEvalResult {
        vocab_sizes: [50257, 100277, ours.vocab_size()],
        rows,
    })
}

/// Renders upstream's comparison tables (GPT-2 vs ours, GPT-4 vs ours) as text.
pub fn format_table(r: &TokEvalResult) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Vocab sizes: GPT-2 {}, GPT-4 {}, ours {}",
        r.vocab_sizes[0], r.vocab_sizes[1], r.vocab_sizes[2]
    );
    for (b, base) in ["GPT-2", "GPT-4"].iter().enumerate() {
        let _ = writeln!(out, "\nComparison with {base}:");
        let _ = writeln!(out, "{}", "=".repeat(86));
        let _ = writeln!(
            out,
            "{:<16} {:>10} {:>9} {:>7} {:>9} {:>7} {:>9}  Better",
            "Text", "Bytes", "Tokens", "Ratio", "Tokens", "Ratio", "Diff"
        );
        let _ = writeln!(out, "{:<16} {:>10} {:>17} {:>17}", "", "", base, "Ours");
        let _ = writeln!(out, "{}", "-".repeat(86));
        for (name, c) in &r.rows {
            let (theirs, ours) = (c[b], c[2]);
            // Fewer tokens is better: positive means ours is better.
            let diff =
                (theirs.tokens as f64 - ours.tokens as f64) / theirs.tokens.max(1) as f64 * 100.0;
            let better = match theirs.ratio().partial_cmp(&ours.ratio()) {
                Some(std::cmp::Ordering::Greater) => *base,
                Some(std::cmp::Ordering::Less) => "Ours",
                _ => "Tie",
            };
            let _ = writeln!(
                out,
                "{:<16} {:>10} {:>9} {:>7.2} {:>9} {:>7.2} {:>+8.1}%  {better}",
                name,
                theirs.bytes,
                theirs.tokens,
                theirs.ratio(),
                ours.tokens,
                ours.ratio(),
                diff
            );
        }
    }
    out
}

/// Short samples of different kinds of text, written for this evaluation.
pub fn sample_texts() -> Vec<EvalText> {
    let samples: [(&str, &str); 5] = [
        (
            "news",
            "The city council voted 7-2 on Tuesday to approve a $48 million plan to rebuild the \
             riverside bridge, which has been closed to heavy trucks since an inspection last March \
             found corroded steel in two of its support beams. Construction is expected to begin in \
             the spring and last about 18 months, officials said, with one lane kept open for most of \
             that time. Business owners on both banks welcomed the decision but asked for a clear \
             detour plan before work starts.",
        ),
        (
            "korean",
            "오늘 아침 서울의 기온은 영하 5도까지 떨어졌습니다. 기상청은 이번 주말까지 추운 날씨가 \
             이어질 것으로 예상하며, 외출할 때 따뜻한 옷을 준비하라고 당부했습니다. 한편 남부 지방에는 \
             눈이 내릴 가능성이 있어 도로 안전에 주의가 필요합니다.",
        ),
        (
            "code",
            "fn fibonacci(n: u64) -> u64 {\n    let (mut a, mut b) = (0u64, 1u64);\n    for _ in 0..n {\n        \
             (a, b) = (b, a.wrapping_add(b));\n    }\n    a\n}\n\n#[test]\nfn first_terms() {\n    let got: Vec<u64> = \
             (0..10).map(fibonacci).collect();\n    assert_eq!(got, [0, 1, 1, 2, 3, 5, 8, 13, 21, 34]);\n}\n\n\
             def mean(xs):\n    \"\"\"Arithmetic mean of a non-empty list.\"\"\"\n    return sum(xs) / len(xs)\n",
        ),
        (
            "math",
            "\\begin{theorem}\nFor every integer $n \\ge 1$, $\\sum_{k=1}^{n} (2k-1) = n^2$.\n\\end{theorem}\n\
             \\begin{proof}\nBy induction on $n$. For $n = 1$ both sides equal $1$. Assume \
             $\\sum_{k=1}^{n} (2k-1) = n^2$; then $\\sum_{k=1}^{n+1} (2k-1) = n^2 + 2n + 1 = (n+1)^2$.\n\
             \\end{proof}\nHence $1 + 3 + 5 + \\dots + 99 = 50^2 = 2500$, and $\\int_0^1 x^2\\,dx = \\tfrac{1}{3}$.",
        ),
        (
            "science",
            "Mitochondria generate most of a eukaryotic cell's ATP through oxidative phosphorylation: \
             electrons from NADH and FADH₂ pass along complexes I–IV of the inner membrane, pumping \
             protons into the intermembrane space, and ATP synthase uses the resulting electrochemical \
             gradient (Δp ≈ 180–220 mV) to phosphorylate ADP. Uncoupling proteins dissipate that \
             gradient as heat, which brown adipose tissue exploits for thermogenesis at about 37 °C.",
        ),
    ];
    samples
        .iter()
        .map(|(n, t)| EvalText {
            name: n.to_string(),
            docs: vec![t.to_string()],
        })
        .collect()
}
