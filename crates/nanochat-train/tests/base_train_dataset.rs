//! Pretraining refuses a bad dataset before step 0 (missing shard, empty folder, non-parquet
//! file), through the real `base_train` entry point, with a message naming the file and the
//! rule and without writing a checkpoint; a good run records the dataset in its meta, and a
//! meta written before that field existed still reads.

mod common;

use common::{byte_tokenizer, write_shards};

use std::path::Path;

use burn::backend::{Autodiff, Flex};
use nanochat_core::checkpoint_manager::{checkpoint_dir, load_meta};
use nanochat_core::{LRSchedule, Source, TrainingConfiguration, TrainingDataset, Validate};
use nanochat_data::pretraining::local_dataset;
use nanochat_model::ComputeDtype;
use nanochat_train::base_train::BaseMeta;
use nanochat_train::{BaseTrainArgs, TrainError, base_train, stage_meta};

type B = Autodiff<Flex>;

fn args(base: &Path, dataset: TrainingDataset) -> BaseTrainArgs {
    BaseTrainArgs {
        config: TrainingConfiguration {
            depth: 2,
            aspect_ratio: 32,
            head_dim: 32,
            max_seq_len: 32,
            window_pattern: "SL".into(),
            num_iterations: Some(1),
            device_batch_size: 2,
            total_batch_size: Some(64),
            schedule: LRSchedule {
                warmup_steps: 0,
                ..LRSchedule::default()
            },
            eval_every: None,
            core_metric_every: None,
            sample_every: None,
            save_every: None,
            ..TrainingConfiguration::default()
        },
        base_dir: base.to_path_buf(),
        dataset,
        compute_dtype: ComputeDtype::F32,
        peak_flops: None,
        stop_after: None,
        progress: false,
        distributed: None,
        fail_at: None,
    }
}

/// Runs base-train on `dataset` and returns its refusal, checking nothing was trained.
fn refused(dataset: TrainingDataset) -> String {
    let base = tempfile::tempdir().unwrap();
    let err = base_train::<B>(
        &args(base.path(), dataset),
        byte_tokenizer(),
        &Default::default(),
    )
    .unwrap_err();
    assert!(matches!(err, TrainError::Dataset(_)), "{err}");
    let ckpt = checkpoint_dir(base.path(), Source::Base, "d2");
    assert!(!ckpt.exists(), "refused before step 0, yet {ckpt:?} exists");
    err.to_string()
}

#[test]
fn bad_datasets_are_refused_before_step_0() {
    // A shard listed in the dataset and gone by the time training starts.
    let data = tempfile::tempdir().unwrap();
    write_shards(data.path(), 8);
    let dataset = local_dataset(data.path()).unwrap();
    std::fs::remove_file(data.path().join("shard_00001.parquet")).unwrap();
    let msg = refused(dataset);
    assert!(msg.contains("shard_00001.parquet"), "{msg}");
    assert!(msg.contains("path does not exist"), "{msg}");

    // A folder with no shards.
    let empty = tempfile::tempdir().unwrap();
    let msg = refused(local_dataset(empty.path()).unwrap());
    assert!(msg.contains("shards = [] (in "), "{msg}");
    assert!(msg.contains("must not be empty"), "{msg}");

    // A file named like a shard that is not parquet.
    let data = tempfile::tempdir().unwrap();
    write_shards(data.path(), 8);
    std::fs::write(
        data.path().join("shard_00002.parquet"),
        "not parquet at all",
    )
    .unwrap();
    let msg = refused(local_dataset(data.path()).unwrap());
    assert!(msg.contains("shard_00002.parquet"), "{msg}");
    assert!(msg.contains("must be a parquet file"), "{msg}");
}

#[test]
fn the_checkpoint_meta_records_the_dataset() {
    let data = tempfile::tempdir().unwrap();
    write_shards(data.path(), 8);
    let base = tempfile::tempdir().unwrap();
    let dataset = local_dataset(data.path()).unwrap();
    let summary = base_train::<B>(
        &args(base.path(), dataset),
        byte_tokenizer(),
        &Default::default(),
    )
    .unwrap();
    let dir = checkpoint_dir(base.path(), Source::Base, "d2");
    let meta = load_meta(&dir, summary.step).unwrap();
    let typed: BaseMeta = stage_meta::read(&meta.metadata, &dir).unwrap();
    let recorded = typed.dataset.expect("dataset in the meta");
    recorded.validate().unwrap();
    let rows: Vec<u64> = recorded
        .metadata
        .as_ref()
        .unwrap()
        .shards
        .iter()
        .map(|s| s.documents)
        .collect();
    assert_eq!(rows, [8, 8, 8]);
    assert_eq!(recorded.shard_paths().len(), 3);
    assert!(
        !recorded.preprocessing.is_empty(),
        "the loader's steps are recorded"
    );

    // A meta from before the field existed reads, without a dataset.
    let mut old = meta.metadata.clone();
    old.extra.remove("dataset");
    let typed: BaseMeta = stage_meta::read(&old, &dir).unwrap();
    assert!(typed.dataset.is_none());
}
