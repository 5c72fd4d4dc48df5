//! Packing conversations into training rows (upstream HEAD `chat_sft.py`
//! `sft_data_generator_bos_bestfit`, and v0 `mid_train.py`'s generator).
//!
//! Conversations come from a [`TaskMixture`] in its shuffled order, are rendered with the chat
//! template (truncated to `T + 1` tokens) into a buffer, and rows of `T + 1` tokens are filled
//! best-fit: repeatedly the longest buffered conversation that still fits. When none fits:
//! - [`PackMode::Pad`] (SFT) pads the rest of the row with BOS and target −1, so no
//!   conversation is ever cut; targets outside the assistant's tokens (mask 0) are −1 too;
//! - [`PackMode::Crop`] (midtraining) crops the shortest conversation to fill the row exactly,
//!   and trains on every token, as upstream's midtraining does.
//!
//! The state ([`ChatLoaderState`]) is the mixture cursor plus the cursors of the buffered
//! conversations, so resuming re-renders exactly the same buffer: resume is exact.

use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use nanochat_tokenizer::{Tokenizer, TokenizerError};
use serde::{Deserialize, Serialize};

use crate::tasks::TaskMixture;

/// What to do when no buffered conversation fits the rest of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PackMode {
    /// Pad with BOS (target −1) and mask non-assistant targets (SFT).
    Pad,
    /// Crop the shortest conversation to fill the row; train on all tokens (midtraining).
    Crop,
}

/// Where the loader is: resume from here to get the same next batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ChatLoaderState {
    /// Conversations pulled from the mixture so far (over epochs: index = cursor % len).
    pub cursor: u64,
    /// Cursors of the conversations in the buffer, in buffer order.
    pub buffer: Vec<u64>,
}

/// One batch of `[B, T]` inputs and targets (−1 = not trained).
#[derive(Debug, Clone)]
pub struct ChatBatch {
    /// Inputs, row-major `[B, T]`.
    pub inputs: Vec<i64>,
    /// Targets, row-major `[B, T]`.
    pub targets: Vec<i64>,
    /// `B`.
    pub batch_size: usize,
    /// `T`.
    pub seq_len: usize,
    /// State after this batch.
    pub state: ChatLoaderState,
}

impl ChatBatch {
    /// Targets that are trained (≥ 0).
    pub fn valid_targets(&self) -> usize {
        self.targets.iter().filter(|&&t| t >= 0).count()
    }

    /// `(inputs, targets)` as tensors.
    pub fn to_tensors<B: Backend>(
        &self,
        device: &B::Device,
    ) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
        let shape = [self.batch_size, self.seq_len];
        (
            Tensor::from_data(TensorData::new(self.inputs.clone(), shape), device),
            Tensor::from_data(TensorData::new(self.targets.clone(), shape), device),
        )
    }
}

/// The loader.
pub struct ChatLoader {
    mixture: TaskMixture,
    tokenizer: Arc<Tokenizer>,
    batch_size: usize,
    seq_len: usize,
    mode: PackMode,
    buffer_size: usize,
    cursor: u64,
    stride: u64,
    buffer: Vec<(u64, Vec<u32>, Vec<u8>)>,
}

impl ChatLoader {
    /// A loader over `mixture` making `[batch_size, seq_len]` batches, from `state` (or the
    /// start). Upstream's buffer holds 100 conversations.
    pub fn new(
        mixture: TaskMixture,
        tokenizer: Arc<Tokenizer>,
        batch_size: usize,
        seq_len: usize,
        mode: PackMode,
        state: Option<&ChatLoaderState>,
    ) -> Result<Self, TokenizerError> {
        Self::for_rank(mixture, tokenizer, batch_size, seq_len, mode, state, 0, 1)
    }

    /// The loader of data-parallel rank `rank` of `world_size`: it reads conversations
    /// `rank, rank + world_size, …` of the mixture (upstream's `cursor = ddp_rank;
    /// cursor += ddp_world_size`).
    #[allow(clippy::too_many_arguments)]
    pub fn for_rank(
        mixture: TaskMixture,
        tokenizer: Arc<Tokenizer>,
        batch_size: usize,
        seq_len: usize,
        mode: PackMode,
        state: Option<&ChatLoaderState>,
        rank: usize,
        world_size: usize,
    ) -> Result<Self, TokenizerError> {
        let mut l = Self {
            mixture,
            tokenizer,
            batch_size,
            seq_len,
            mode,
            buffer_size: 100,
            cursor: rank as u64,
            stride: world_size.max(1) as u64,
            buffer: Vec::new(),
        };
        if let Some(s) = state {
            for &c in &s.buffer {
                let (ids, mask) = l.render(c)?;
                l.buffer.push((c, ids, mask));
            }
            l.cursor = s.cursor;
        }
        Ok(l)
    }

    fn render(&self, cursor: u64) -> Result<(Vec<u32>, Vec<u8>), TokenizerError> {
        let n = self.mixture.len() as u64;
        let conv = self.mixture.get((cursor % n) as usize);
        self.tokenizer.render_conversation(&conv, self.seq_len + 1)
    }

    /// Conversations per epoch.
    pub fn epoch_len(&self) -> usize {
        self.mixture.len()
    }

    /// Fraction of epochs pulled so far (`cursor / len`).
    pub fn progress(&self) -> f64 {
        self.cursor as f64 / self.mixture.len().max(1) as f64
    }

    /// The current state.
    pub fn state(&self) -> ChatLoaderState {
        ChatLoaderState {
            cursor: self.cursor,
            buffer: self.buffer.iter().map(|b| b.0).collect(),
        }
    }

    fn refill(&mut self) -> Result<(), TokenizerError> {
        while self.buffer.len() < self.buffer_size && !self.mixture.is_empty() {
            let (ids, mask) = self.render(self.cursor)?;
            self.buffer.push((self.cursor, ids, mask));
            self.cursor += self.stride;
        }
        Ok(())
    }

    /// The next batch.
    pub fn next_batch(&mut self) -> Result<ChatBatch, TokenizerError> {
        let (b, t) = (self.batch_size, self.seq_len);
        let cap = t + 1;
        let bos = self.tokenizer.bos_token_id();
        let mut inputs = Vec::with_capacity(b * t);
        let mut targets = Vec::with_capacity(b * t);
        for _ in 0..b {
            let mut ids: Vec<u32> = Vec::with_capacity(cap);
            let mut mask: Vec<u8> = Vec::with_capacity(cap);
            while ids.len() < cap {
                self.refill()?;
                let room = cap - ids.len();
                let best = self
                    .buffer
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.1.len() <= room)
                    .max_by_key(|(i, c)| (c.1.len(), std::cmp::Reverse(*i)))
                    .map(|(i, _)| i);
                match (best, self.mode) {
                    (Some(i), _) => {
                        let (_, cid, cm) = self.buffer.remove(i);
                        ids.extend(cid);
                        mask.extend(cm);
                    }
                    (None, PackMode::Pad) => {
                        ids.resize(cap, bos);
                        mask.resize(cap, 0);
                    }
                    (None, PackMode::Crop) => {
                        let i = self
                            .buffer
                            .iter()
                            .enumerate()
                            .min_by_key(|(i, c)| (c.1.len(), *i))
                            .map(|(i, _)| i)
                            .expect("buffer refilled");
                        let (_, cid, cm) = self.buffer.remove(i);
                        ids.extend_from_slice(&cid[..room]);
                        mask.extend_from_slice(&cm[..room]);
                    }
                }
            }
            inputs.extend(ids[..t].iter().map(|&v| v as i64));
            for k in 1..cap {
                let train = self.mode == PackMode::Crop || mask[k] == 1;
                targets.push(if train { ids[k] as i64 } else { -1 });
            }
        }
        Ok(ChatBatch {
            inputs,
            targets,
            batch_size: b,
            seq_len: t,
            state: self.state(),
        })
    }
}
