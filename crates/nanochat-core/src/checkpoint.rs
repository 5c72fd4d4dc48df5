//! What a checkpoint records besides its tensors: [`CheckpointMetadata`] (step, losses,
//! learning rate, timings, free-form state such as upstream's `user_config`,
//! `dataloader_state_dict` and `loop_state`) and the file-level part of a ModelCheckpoint,
//! [`CheckpointMeta`], which is the content of `meta_{step:06}.json`: format version, model
//! config, metadata, and the size and CRC32 of every file of the checkpoint.
//!
//! The meta file protects itself too: its first key is `"crc32"`, the CRC32 of the file's own
//! bytes with those eight hex digits zeroed. Any changed byte anywhere is detected.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model_config::ModelConfig;
use crate::validation::{
    Rule, VResult, Validate, ValidationError, check_finite, check_non_negative,
};

/// The current checkpoint format version. Readers accept versions up to this one.
pub const FORMAT_VERSION: u32 = 1;

/// Wall-clock facts about a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timings {
    /// When the checkpoint was written.
    pub created_at: DateTime<Utc>,
    /// Seconds spent training so far (upstream `total_training_time`, first steps excluded).
    pub total_training_time: f64,
    /// Mean milliseconds per optimizer step over the last logging window, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_time_ms: Option<f64>,
}

/// Training facts saved with a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    /// Optimizer steps taken.
    pub step: u64,
    /// Smoothed training loss (nats/token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_loss: Option<f64>,
    /// Validation loss (nats/token: the mean over the counted targets; special tokens, which
    /// have no bytes, are not counted, as in `val_bpb`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    /// Validation bits per byte (upstream `val_bpb`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_bpb: Option<f64>,
    /// Learning-rate multiplier at this step (the one the step this checkpoint resumes at
    /// uses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<f64>,
    /// Timings.
    pub timings: Timings,
    /// Everything else (upstream's `user_config`, `dataloader_state_dict`, `loop_state`,
    /// `device_batch_size`, `max_seq_len`, `total_batch_size` …), kept verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl CheckpointMetadata {
    /// Metadata for `step` written now, with nothing else known yet.
    pub fn new(step: u64, now: DateTime<Utc>) -> Self {
        Self {
            step,
            train_loss: None,
            val_loss: None,
            val_bpb: None,
            learning_rate: None,
            timings: Timings {
                created_at: now,
                total_training_time: 0.0,
                step_time_ms: None,
            },
            extra: BTreeMap::new(),
        }
    }
}

impl Validate for CheckpointMetadata {
    fn validate(&self) -> VResult {
        const E: &str = "CheckpointMetadata";
        for (field, v) in [
            ("train_loss", self.train_loss),
            ("val_loss", self.val_loss),
            ("val_bpb", self.val_bpb),
            ("learning_rate", self.learning_rate),
        ] {
            if let Some(v) = v {
                check_non_negative(E, field, v)?;
            }
        }
        check_non_negative(
            E,
            "timings.total_training_time",
            self.timings.total_training_time,
        )?;
        if let Some(ms) = self.timings.step_time_ms {
            check_finite(E, "timings.step_time_ms", ms)?;
        }
        Ok(())
    }
}

/// Size and checksum of one file of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRecord {
    /// Length in bytes.
    pub bytes: u64,
    /// CRC32 (IEEE) of the content, as eight lowercase hex digits.
    #[serde(with = "hex32")]
    pub crc32: u32,
}

/// The content of `meta_{step:06}.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// CRC32 of this file with these digits zeroed (set when written).
    #[serde(with = "hex32")]
    pub crc32: u32,
    /// Format version ([`FORMAT_VERSION`] when written).
    pub format_version: u32,
    /// The model's configuration.
    pub model_config: ModelConfig,
    /// Training facts (flattened: `step`, `val_bpb` … sit at the top level as upstream's).
    #[serde(flatten)]
    pub metadata: CheckpointMetadata,
    /// Every other file of the checkpoint, by file name.
    pub files: BTreeMap<String, FileRecord>,
}

impl CheckpointMeta {
    /// A meta for a model with metadata; files are added by the writer.
    pub fn new(model_config: ModelConfig, metadata: CheckpointMetadata) -> Self {
        Self {
            crc32: 0,
            format_version: FORMAT_VERSION,
            model_config,
            metadata,
            files: BTreeMap::new(),
        }
    }

    /// The step.
    pub fn step(&self) -> u64 {
        self.metadata.step
    }
}

impl Validate for CheckpointMeta {
    fn validate(&self) -> VResult {
        if self.format_version == 0 || self.format_version > FORMAT_VERSION {
            return Err(ValidationError::new(
                "CheckpointMeta",
                "format_version",
                self.format_version,
                Rule::InRange(crate::validation::Interval::closed(
                    1.0,
                    FORMAT_VERSION as f64,
                )),
            ));
        }
        self.model_config
            .validate()
            .map_err(|e| e.within("model_config"))?;
        self.metadata.validate()
    }
}

/// Serde for a `u32` as eight lowercase hex digits.
pub(crate) mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:08x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let s = String::deserialize(d)?;
        let ok = s.len() == 8
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !ok {
            return Err(D::Error::custom(format!(
                "{s:?} is not eight lowercase hex digits"
            )));
        }
        u32::from_str_radix(&s, 16).map_err(D::Error::custom)
    }
}
