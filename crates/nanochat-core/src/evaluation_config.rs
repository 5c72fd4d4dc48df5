//! How an evaluation was run, stored with its [`EvaluationResult`](crate::EvaluationResult):
//! the settings of upstream's `scripts/base_eval.py` (`--max-per-task`, `--split-tokens`,
//! `--device-batch-size`) and `scripts/chat_eval.py` (`-x`, `-n`, `-m`, `-t`, `-k`, `-b`),
//! one variant per kind of evaluation, so a result says what its numbers mean.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::validation::{VResult, Validate, check_non_negative, check_positive};

const ENTITY: &str = "EvaluationConfig";

/// The settings of one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum EvaluationConfig {
    /// CORE over the DCLM eval bundle (`base-eval --eval core`).
    Core {
        /// The eval bundle folder.
        bundle_dir: PathBuf,
        /// Examples per task (`None`: all).
        max_per_task: Option<usize>,
        /// Data-parallel ranks the examples were strided over.
        world_size: usize,
    },
    /// Bits per byte on the pretraining shards (`base-eval --eval bpb`).
    Bpb {
        /// The shard folder (the last shard is validation).
        data_dir: PathBuf,
        /// Tokens evaluated per split.
        split_tokens: u64,
        /// Rows per batch.
        device_batch_size: usize,
        /// Tokens per row (the model's context).
        seq_len: usize,
        /// Data-parallel ranks the batches were strided over.
        world_size: usize,
    },
    /// Chat tasks (`chat-eval`).
    Chat {
        /// Problems per task (`None`: all).
        max_problems: Option<usize>,
        /// Rows per forward pass for categorical tasks.
        batch_size: usize,
        /// Samples per generative problem (pass@n).
        num_samples: usize,
        /// New tokens per reply at most.
        max_new_tokens: usize,
        /// Sampling temperature (0 = greedy).
        temperature: f64,
        /// Top-k.
        top_k: usize,
        /// Base seed (problem `i` samples with `seed + i`).
        seed: u64,
    },
}

impl Validate for EvaluationConfig {
    fn validate(&self) -> VResult {
        let positive = |field: &str, v: usize| check_positive(ENTITY, field, v as u64);
        match self {
            EvaluationConfig::Core {
                max_per_task,
                world_size,
                ..
            } => {
                if let Some(m) = max_per_task {
                    positive("max_per_task", *m)?;
                }
                positive("world_size", *world_size)
            }
            EvaluationConfig::Bpb {
                split_tokens,
                device_batch_size,
                seq_len,
                world_size,
                ..
            } => {
                check_positive(ENTITY, "split_tokens", *split_tokens)?;
                positive("device_batch_size", *device_batch_size)?;
                positive("seq_len", *seq_len)?;
                positive("world_size", *world_size)
            }
            EvaluationConfig::Chat {
                max_problems,
                batch_size,
                num_samples,
                max_new_tokens,
                temperature,
                ..
            } => {
                if let Some(m) = max_problems {
                    positive("max_problems", *m)?;
                }
                positive("batch_size", *batch_size)?;
                positive("num_samples", *num_samples)?;
                positive("max_new_tokens", *max_new_tokens)?;
                check_non_negative(ENTITY, "temperature", *temperature)
            }
        }
    }
}
