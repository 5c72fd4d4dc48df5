//! Incremental, UTF-8-safe detokenization for streaming output.
//!
//! Tokens are byte sequences; a multi-byte character can be split across tokens. Decoding each
//! token on its own (as some ports do) prints broken characters. [`StreamDecoder`] keeps the
//! bytes of an unfinished character until the next token completes it, so every piece it emits
//! is whole text, and the pieces concatenate to exactly [`Tokenizer::decode`] of all the tokens
//! (invalid bytes become U+FFFD the same way).

use crate::error::TokenizerError;
use crate::tokenizer::Tokenizer;

/// Turns a stream of token ids into a stream of text pieces.
#[derive(Debug, Default, Clone)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    /// A decoder with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one token; returns the text that is now complete (possibly empty).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<String, TokenizerError> {
        let bytes = tokenizer.decode_single_token_bytes(id)?;
        Ok(self.push_bytes(&bytes))
    }

    /// Adds raw bytes; returns the text that is now complete.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut consumed = 0;
        loop {
            match std::str::from_utf8(&self.pending[consumed..]) {
                Ok(s) => {
                    out.push_str(s);
                    consumed = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(
                        std::str::from_utf8(&self.pending[consumed..consumed + valid])
                            .expect("valid prefix"),
                    );
                    consumed += valid;
                    match e.error_len() {
                        // Invalid bytes: replaced, exactly as lossy decoding of the whole does.
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            consumed += n;
                        }
                        // An unfinished character at the end: wait for more bytes.
                        None => break,
                    }
                }
            }
        }
        self.pending.drain(..consumed);
        out
    }

    /// Whether bytes of an unfinished character are held back.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Ends the stream: any unfinished character becomes U+FFFD.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_character_is_held_back() {
        let mut d = StreamDecoder::new();
        let euro = "€".as_bytes(); // E2 82 AC
        assert_eq!(d.push_bytes(&euro[..1]), "");
        assert_eq!(d.push_bytes(&euro[1..2]), "");
        assert_eq!(d.push_bytes(&[euro[2], b'!']), "€!");
        assert!(!d.has_pending());
    }

    #[test]
    fn invalid_bytes_match_lossy_decoding() {
        let bytes = [0xE2, 0x82, b'A', 0xFF, 0xF0, 0x9F];
        let mut d = StreamDecoder::new();
        let mut out: String = bytes.iter().map(|b| d.push_bytes(&[*b])).collect();
        out.push_str(&d.finish());
        assert_eq!(out, String::from_utf8_lossy(&bytes));
    }
}
