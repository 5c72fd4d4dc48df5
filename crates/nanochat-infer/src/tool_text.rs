//! Calculator calls as readable text (no upstream counterpart: upstream's `chat_web.py` streams
//! the special tokens as they are): the engine writes a tool call as
//! `<|python_start|>12+10<|python_end|><|output_start|>22<|output_end|>`; the OpenAI endpoints
//! and sessions show it as `` `12+10` → 22 ``. Upstream's own endpoint keeps the raw tokens
//! (the web page draws them as a block).
//!
//! Design: a streaming filter over the text pieces, so it works however the pieces are cut: a
//! tail that could still become a marker is held back until the next piece (or the end)
//! decides.

/// The markers and what each becomes.
const MARKERS: [(&str, &str); 4] = [
    ("<|python_start|>", "`"),
    ("<|python_end|>", "`"),
    ("<|output_start|>", " → "),
    ("<|output_end|>", ""),
];

/// Rewrites tool-call markers in a stream of text pieces.
#[derive(Debug, Default)]
pub struct ToolText {
    pending: String,
}

impl ToolText {
    /// The text of `piece` that is certain now, markers rewritten.
    pub fn push(&mut self, piece: &str) -> String {
        self.pending.push_str(piece);
        let mut out = String::new();
        loop {
            let next = MARKERS
                .iter()
                .filter_map(|(m, r)| self.pending.find(m).map(|at| (at, *m, *r)))
                .min_by_key(|(at, _, _)| *at);
            match next {
                Some((at, marker, with)) => {
                    out.push_str(&self.pending[..at]);
                    out.push_str(with);
                    self.pending.drain(..at + marker.len());
                }
                None => break,
            }
        }
        // Keep back the longest tail that is the start of a marker.
        let hold = (1..=self.pending.len())
            .rev()
            .filter(|&k| self.pending.is_char_boundary(self.pending.len() - k))
            .find(|&k| {
                let tail = &self.pending[self.pending.len() - k..];
                MARKERS.iter().any(|(m, _)| m.starts_with(tail))
            })
            .unwrap_or(0);
        let cut = self.pending.len() - hold;
        out.push_str(&self.pending[..cut]);
        self.pending.drain(..cut);
        out
    }

    /// Whatever is still held back (the stream ended: it was no marker).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// A whole text, markers rewritten.
    pub fn rewrite(text: &str) -> String {
        let mut f = Self::default();
        let mut out = f.push(text);
        out.push_str(&f.finish());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAW: &str =
        "So <|python_start|>12+10<|python_end|><|output_start|>22<|output_end|>, 22 <|.";

    #[test]
    fn a_tool_call_reads_as_text_however_the_pieces_are_cut() {
        let want = "So `12+10` → 22, 22 <|.";
        assert_eq!(ToolText::rewrite(RAW), want);
        for size in 1..=7 {
            let mut f = ToolText::default();
            let chars: Vec<char> = RAW.chars().collect();
            let mut out = String::new();
            for chunk in chars.chunks(size) {
                out.push_str(&f.push(&chunk.iter().collect::<String>()));
            }
            out.push_str(&f.finish());
            assert_eq!(out, want, "pieces of {size}");
        }
    }

    #[test]
    fn text_without_markers_passes_at_once() {
        let mut f = ToolText::default();
        assert_eq!(f.push("a < b → c"), "a < b → c");
        assert_eq!(f.push("x <"), "x ", "`<` could start a marker");
        assert_eq!(f.push(" y"), "< y");
        assert_eq!(f.finish(), "");
    }
}
