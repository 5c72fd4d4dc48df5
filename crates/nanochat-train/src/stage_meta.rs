//! What a training stage stores in its checkpoint's meta besides the model and the optimizer
//! (upstream: the `meta_data` dict each script passes to `save_checkpoint`: `user_config`,
//! `device_batch_size`, `max_seq_len`, `total_batch_size`, `dataloader_state_dict`,
//! `loop_state`), as **typed** serde structs instead of string keys.
//!
//! Each stage defines its own meta struct (`BaseMeta`, `ChatMeta`, `RlMeta`), made of the
//! [`RunMeta`] every stage writes and the next stage inherits, the stage's [`RankStates`] (every
//! rank's loader position) and its loop state. [`write()`] flattens it into
//! [`CheckpointMetadata::extra`] under upstream's key names, so the meta files read the same as
//! before and as upstream's; [`read()`] parses it back, naming the folder when it does not fit.

use std::collections::BTreeMap;
use std::path::Path;

use nanochat_core::checkpoint_manager::meta_file_name;
use nanochat_core::validation::{VResult, check_positive_f};
use nanochat_core::{CheckpointMetadata, TrainingConfiguration, Validate};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::TrainError;
use nanochat_data::chat_loader::ChatLoaderState;
use nanochat_data::dataloader::LoaderState;

/// The batch and configuration of a run: written by every stage, inherited by the next one
/// (a field a checkpoint lacks reads as `None`, and the reader picks its default).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    /// The pretraining configuration (post-training keeps its source's, with its own batch).
    #[serde(default)]
    pub user_config: TrainingConfiguration,
    /// Rows per micro-batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_batch_size: Option<usize>,
    /// Sequence length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_seq_len: Option<usize>,
    /// Tokens per optimizer step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_batch_size: Option<u64>,
}

impl RunMeta {
    /// What `meta` holds of a run (what it lacks reads as `None`, a meta that does not parse
    /// as the defaults: upstream's scripts tolerate older checkpoints the same way).
    pub fn of(meta: &CheckpointMetadata) -> Self {
        serde_json::from_value(extra_object(meta)).unwrap_or_default()
    }
}

/// The learning rates a post-training stage may set instead of inheriting its source's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct LrOverrides {
    /// Embedding learning rate (default: the source's).
    #[cfg_attr(feature = "cli", arg(long))]
    pub embedding_lr: Option<f64>,
    /// lm_head learning rate (default: the source's).
    #[cfg_attr(feature = "cli", arg(long))]
    pub unembedding_lr: Option<f64>,
    /// Muon learning rate (default: the source's).
    #[cfg_attr(feature = "cli", arg(long))]
    pub matrix_lr: Option<f64>,
}

impl Validate for LrOverrides {
    fn validate(&self) -> VResult {
        let lrs = [
            ("embedding_lr", self.embedding_lr),
            ("unembedding_lr", self.unembedding_lr),
            ("matrix_lr", self.matrix_lr),
        ];
        for (field, lr) in lrs {
            if let Some(lr) = lr {
                check_positive_f("LrOverrides", field, lr)?;
            }
        }
        Ok(())
    }
}

/// The pretraining configuration stored in the meta of the checkpoint in `dir`
/// (`user_config`), with `lrs` overriding its learning rates and weight decay off, as
/// post-training uses it. A missing, malformed or invalid `user_config` is an error naming
/// the meta file and the field: post-training never trains on defaults it was not given.
pub fn inherited_config(
    meta: &CheckpointMetadata,
    dir: &Path,
    lrs: &LrOverrides,
) -> Result<TrainingConfiguration, TrainError> {
    let file = dir.join(meta_file_name(meta.step));
    let bad = |field: String, reason: String| TrainError::Inherited {
        file: file.clone(),
        field,
        reason,
    };
    let value = meta.extra.get("user_config").ok_or_else(|| {
        bad(
            "user_config".into(),
            "is missing: post-training inherits its source's training configuration \
             (a checkpoint from upstream's PyTorch goes through `nanochat import`, which \
             writes it)"
                .into(),
        )
    })?;
    let mut cfg: TrainingConfiguration = serde_path_to_error::deserialize(value)
        .map_err(|e| bad(format!("user_config.{}", e.path()), e.inner().to_string()))?;
    cfg.validate()
        .map_err(|e| bad(format!("user_config.{}", e.field), e.to_string()))?;
    let o = &mut cfg.optimizer;
    o.embedding_lr = lrs.embedding_lr.unwrap_or(o.embedding_lr);
    o.unembedding_lr = lrs.unembedding_lr.unwrap_or(o.unembedding_lr);
    o.matrix_lr = lrs.matrix_lr.unwrap_or(o.matrix_lr);
    o.weight_decay = 0.0;
    Ok(cfg)
}

/// Where a loader state type is kept in the meta: rank 0's under [`ONE`](Self::ONE)
/// (upstream's field), every rank's under [`ALL`](Self::ALL) when there is more than one.
pub trait RankStateKeys {
    /// Rank 0's state.
    const ONE: &'static str;
    /// Every rank's state, in rank order.
    const ALL: &'static str;
}

impl RankStateKeys for LoaderState {
    const ONE: &'static str = "dataloader_state_dict";
    const ALL: &'static str = "dataloader_states";
}

impl RankStateKeys for ChatLoaderState {
    const ONE: &'static str = "loader_state";
    const ALL: &'static str = "loader_states";
}

/// Meta key: the ranks that wrote the checkpoint.
pub const WORLD_SIZE_KEY: &str = "world_size";

/// Every rank's loader state, in rank order, and so the world size that wrote them.
#[derive(Debug, Clone, PartialEq)]
pub struct RankStates<S>(pub Vec<S>);

impl<S: Clone> RankStates<S> {
    /// The state of `rank`, checking that the run resumes with the world size that wrote it.
    pub fn for_rank(&self, rank: usize, world_size: usize, dir: &Path) -> Result<S, TrainError> {
        let written = self.0.len();
        if written != world_size {
            return Err(TrainError::Resume(format!(
                "{}: the checkpoint was written by {written} rank(s) and this run has \
                 {world_size}; resume with the same --devices × --num-nodes",
                dir.display()
            )));
        }
        self.0.get(rank).cloned().ok_or_else(|| {
            TrainError::Resume(format!(
                "{}: meta has no loader state for rank {rank}",
                dir.display()
            ))
        })
    }
}

impl<S: Serialize + RankStateKeys> Serialize for RankStates<S> {
    fn serialize<Z: Serializer>(&self, z: Z) -> Result<Z::Ok, Z::Error> {
        use serde::ser::{Error, SerializeMap};
        let first = self
            .0
            .first()
            .ok_or_else(|| Z::Error::custom("no loader state"))?;
        let mut map = z.serialize_map(None)?;
        map.serialize_entry(WORLD_SIZE_KEY, &self.0.len())?;
        map.serialize_entry(S::ONE, first)?;
        if self.0.len() > 1 {
            map.serialize_entry(S::ALL, &self.0)?;
        }
        map.end()
    }
}

impl<'de, S: DeserializeOwned + RankStateKeys> Deserialize<'de> for RankStates<S> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut map = BTreeMap::<String, serde_json::Value>::deserialize(d)?;
        let world = map
            .get(WORLD_SIZE_KEY)
            .and_then(|v| v.as_u64())
            .unwrap_or(1) as usize;
        let (key, value) = if world == 1 {
            (
                S::ONE,
                map.remove(S::ONE)
                    .map(|v| serde_json::Value::Array(vec![v])),
            )
        } else {
            (S::ALL, map.remove(S::ALL))
        };
        let value = value.ok_or_else(|| D::Error::custom(format!("no `{key}`")))?;
        let states: Vec<S> =
            serde_json::from_value(value).map_err(|e| D::Error::custom(format!("{key}: {e}")))?;
        if states.len() != world {
            return Err(D::Error::custom(format!(
                "`{key}` holds {} state(s) for a world size of {world}",
                states.len()
            )));
        }
        Ok(RankStates(states))
    }
}

/// A stage's typed meta, flattened into `meta.extra`.
pub fn write<T: Serialize>(meta: &mut CheckpointMetadata, typed: &T) -> Result<(), TrainError> {
    match serde_json::to_value(typed) {
        Ok(serde_json::Value::Object(fields)) => {
            meta.extra.extend(fields);
            Ok(())
        }
        Ok(other) => Err(TrainError::Data(format!(
            "stage meta is not an object: {other}"
        ))),
        Err(e) => Err(TrainError::Data(format!("stage meta: {e}"))),
    }
}

/// `meta.extra` as one JSON object, for typed reading.
fn extra_object(meta: &CheckpointMetadata) -> serde_json::Value {
    serde_json::Value::Object(meta.extra.clone().into_iter().collect())
}

/// A stage's typed meta from `meta.extra` of the checkpoint in `dir`.
pub fn read<T: DeserializeOwned>(meta: &CheckpointMetadata, dir: &Path) -> Result<T, TrainError> {
    serde_json::from_value(extra_object(meta))
        .map_err(|e| TrainError::Resume(format!("{} (step {}): {e}", dir.display(), meta.step)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Pos(u64);
    impl RankStateKeys for Pos {
        const ONE: &'static str = "pos";
        const ALL: &'static str = "positions";
    }
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Meta {
        #[serde(flatten)]
        run: RunMeta,
        #[serde(flatten)]
        loaders: RankStates<Pos>,
        loop_state: f64,
    }

    #[test]
    fn flattens_under_upstream_keys_and_reads_back() {
        let typed = Meta {
            run: RunMeta {
                device_batch_size: Some(4),
                ..RunMeta::default()
            },
            loaders: RankStates(vec![Pos(3), Pos(5)]),
            loop_state: 1.5,
        };
        let mut meta = CheckpointMetadata::new(7, chrono::Utc::now());
        write(&mut meta, &typed).unwrap();
        assert_eq!(meta.extra["world_size"], 2);
        assert_eq!(meta.extra["pos"], 3);
        assert_eq!(meta.extra["positions"], serde_json::json!([3, 5]));
        assert_eq!(meta.extra["device_batch_size"], 4);
        let back: Meta = read(&meta, Path::new("d")).unwrap();
        assert_eq!(back, typed);
        assert_eq!(back.loaders.for_rank(1, 2, Path::new("d")).unwrap(), Pos(5));
        let err = back.loaders.for_rank(0, 1, Path::new("d")).unwrap_err();
        assert!(err.to_string().contains("written by 2 rank(s)"), "{err}");
        assert_eq!(RunMeta::of(&meta).device_batch_size, Some(4));
    }

    #[test]
    fn one_rank_writes_only_upstreams_field() {
        let mut meta = CheckpointMetadata::new(1, chrono::Utc::now());
        write(&mut meta, &RankStates(vec![Pos(9)])).unwrap();
        assert!(!meta.extra.contains_key("positions"));
        let back: RankStates<Pos> = read(&meta, Path::new("d")).unwrap();
        assert_eq!(back.0, vec![Pos(9)]);
        meta.extra.remove("pos");
        let err = read::<RankStates<Pos>>(&meta, Path::new("ckpt")).unwrap_err();
        assert!(err.to_string().contains("ckpt (step 1): no `pos`"), "{err}");
    }
}
