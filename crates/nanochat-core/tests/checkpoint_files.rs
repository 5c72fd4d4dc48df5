//! Checkpoint files on disk: round trip, corruption detection (every byte of every file),
//! version checks, step discovery.

use std::fs;
use std::path::Path;

use chrono::{DateTime, Utc};
use nanochat_core::checkpoint_manager::{
    find_largest_model, find_last_step, list_steps, load_meta, meta_file_name, model_file_name,
    optim_file_name, read_file, verify_checkpoint,
};
use nanochat_core::*;
use proptest::prelude::*;

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_760_000_000, 0).unwrap()
}

fn config() -> ModelConfig {
    ModelConfig {
        sequence_len: 256,
        vocab_size: 512,
        ..ModelConfig::from_depth(2).unwrap()
    }
}

/// Writes a checkpoint with a model and one optimizer shard; returns the meta.
fn save(dir: &Path, step: u64, model: &[u8], optim: &[u8]) -> CheckpointMeta {
    let mut w = CheckpointWriter::new(dir, step).unwrap();
    w.write_bytes(&model_file_name(step), model).unwrap();
    w.write_bytes(&optim_file_name(step, 0), optim).unwrap();
    let mut md = CheckpointMetadata::new(step, now());
    md.val_bpb = Some(1.25);
    md.extra.insert(
        "loop_state".into(),
        serde_json::json!({"min_val_bpb": 1.25}),
    );
    w.commit(CheckpointMeta::new(config(), md)).unwrap()
}

#[test]
fn save_load_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let saved = save(dir.path(), 7, b"model bytes", b"optimizer bytes");
    let meta = verify_checkpoint(dir.path(), 7).unwrap();
    assert_eq!(meta, saved);
    assert_eq!(meta.model_config, config());
    assert_eq!(meta.metadata.extra["loop_state"]["min_val_bpb"], 1.25);
    assert_eq!(
        read_file(dir.path(), &meta, &model_file_name(7)).unwrap(),
        b"model bytes"
    );
    assert_eq!(
        read_file(dir.path(), &meta, &optim_file_name(7, 0)).unwrap(),
        b"optimizer bytes"
    );
    // The meta sits at the top level like upstream's: step and val_bpb are plain keys.
    let raw: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join(meta_file_name(7))).unwrap()).unwrap();
    assert_eq!(raw["step"], 7);
    assert_eq!(raw["val_bpb"], 1.25);
    assert_eq!(raw["format_version"], 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    /// Changing any one byte of any file of a checkpoint is detected, and the error names that
    /// file.
    #[test]
    fn any_flipped_byte_is_detected(
        model in prop::collection::vec(any::<u8>(), 1..3000),
        optim in prop::collection::vec(any::<u8>(), 1..3000),
        which in 0usize..3,
        position in any::<prop::sample::Index>(),
        xor in 1u8..=255,
    ) {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), 3, &model, &optim);
        let name = [model_file_name(3), optim_file_name(3, 0), meta_file_name(3)][which].clone();
        let path = dir.path().join(&name);
        let mut bytes = fs::read(&path).unwrap();
        let i = position.index(bytes.len());
        bytes[i] ^= xor;
        fs::write(&path, &bytes).unwrap();
        let err = verify_checkpoint(dir.path(), 3).expect_err("corruption must be detected");
        let msg = err.to_string();
        prop_assert!(msg.contains(&name), "error does not name {}: {}", name, msg);
    }
}

#[test]
fn truncation_and_missing_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    save(dir.path(), 1, &[7u8; 100], b"o");
    let model = dir.path().join(model_file_name(1));
    fs::write(&model, [7u8; 99]).unwrap();
    let err = verify_checkpoint(dir.path(), 1).unwrap_err();
    assert!(
        matches!(
            err,
            CheckpointError::SizeMismatch {
                expected: 100,
                actual: 99,
                ..
            }
        ),
        "{err}"
    );
    fs::remove_file(&model).unwrap();
    let err = verify_checkpoint(dir.path(), 1).unwrap_err();
    assert!(matches!(err, CheckpointError::MissingFile { .. }), "{err}");
    assert!(err.to_string().contains("model_000001.safetensors"));
}

#[test]
fn newer_format_and_foreign_metas_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut meta = save(dir.path(), 2, b"m", b"o");
    meta.format_version = 2;
    let bytes = nanochat_core::checkpoint_manager::encode_meta(&mut meta);
    fs::write(dir.path().join(meta_file_name(2)), bytes).unwrap();
    let err = load_meta(dir.path(), 2).unwrap_err();
    assert!(
        matches!(
            err,
            CheckpointError::UnsupportedVersion {
                found: 2,
                supported: 1,
                ..
            }
        ),
        "{err}"
    );

    // An upstream meta (no crc32, no format_version) points the user to the importer.
    fs::write(
        dir.path().join(meta_file_name(3)),
        br#"{"step": 3, "model_config": {}}"#,
    )
    .unwrap();
    let err = load_meta(dir.path(), 3).unwrap_err();
    assert!(err.to_string().contains("nanochat import"), "{err}");
}

#[test]
fn resaving_a_step_replaces_it_consistently() {
    let dir = tempfile::tempdir().unwrap();
    save(dir.path(), 5, b"first", b"o1");
    save(dir.path(), 5, b"second", b"o2");
    let meta = verify_checkpoint(dir.path(), 5).unwrap();
    assert_eq!(
        read_file(dir.path(), &meta, &model_file_name(5)).unwrap(),
        b"second"
    );
}

#[test]
fn steps_count_only_once_their_meta_exists() {
    let dir = tempfile::tempdir().unwrap();
    save(dir.path(), 10, b"a", b"b");
    save(dir.path(), 200, b"a", b"b");
    // Step 300: data published, meta never written (a crash between the two).
    let mut w = CheckpointWriter::new(dir.path(), 300).unwrap();
    w.write_bytes(&model_file_name(300), b"x").unwrap();
    w.publish_files().unwrap();
    // A stray partial file and an unrelated file.
    fs::write(dir.path().join(".meta_000400.json.partial"), b"{").unwrap();
    fs::write(dir.path().join("notes.txt"), b"hi").unwrap();
    assert_eq!(list_steps(dir.path()).unwrap(), vec![10, 200]);
    assert_eq!(find_last_step(dir.path()).unwrap(), 200);
}

#[test]
fn largest_model_prefers_deepest_completed_tag() {
    let root = tempfile::tempdir().unwrap();
    for tag in ["d4", "d12", "d20", "custom"] {
        let dir = root.path().join(tag);
        fs::create_dir_all(&dir).unwrap();
        if tag != "d20" {
            save(&dir, 1, b"m", b"o");
        }
    }
    // d20 holds no completed checkpoint, so d12 wins over d4 and "custom".
    assert_eq!(find_largest_model(root.path()).unwrap(), "d12");
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        find_largest_model(empty.path()).unwrap_err(),
        CheckpointError::NotFound { .. }
    ));
}

#[test]
fn file_names_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = CheckpointWriter::new(dir.path(), 1).unwrap();
    for bad in ["../escape.bin", ".hidden", "meta_000001.json", ""] {
        assert!(w.write_bytes(bad, b"x").is_err(), "{bad:?} accepted");
    }
    w.write_bytes("model_000001.safetensors", b"x").unwrap();
    assert!(
        w.write_bytes("model_000001.safetensors", b"y").is_err(),
        "duplicate accepted"
    );
}

#[test]
fn meta_must_match_the_writer_step_and_rules() {
    let dir = tempfile::tempdir().unwrap();
    let w = CheckpointWriter::new(dir.path(), 1).unwrap();
    let err = w
        .commit(CheckpointMeta::new(
            config(),
            CheckpointMetadata::new(2, now()),
        ))
        .unwrap_err();
    assert!(err.to_string().contains("step"), "{err}");
    let w = CheckpointWriter::new(dir.path(), 1).unwrap();
    let mut md = CheckpointMetadata::new(1, now());
    md.train_loss = Some(f64::NAN);
    let err = w.commit(CheckpointMeta::new(config(), md)).unwrap_err();
    assert!(err.to_string().contains("train_loss"), "{err}");
    assert!(
        list_steps(dir.path()).unwrap().is_empty(),
        "nothing is written for a rejected meta"
    );
}
