//! A checkpoint's lifecycle through the real writer and loader: Created → Saved recorded in the
//! meta, Loaded, Validated only when the CRCs pass, InUse; corruption stops it at Loaded; steps
//! out of order and forged records are refused.

use std::fs;
use std::path::Path;

use chrono::DateTime;
use nanochat_core::checkpoint_handle::{CHECKPOINT_STATE_KEY, Checkpoint};
use nanochat_core::checkpoint_manager::{encode_meta, meta_file_name, model_file_name};
use nanochat_core::*;

fn save(dir: &Path, step: u64) -> CheckpointMeta {
    let mut w = CheckpointWriter::new(dir, step).unwrap();
    w.write_bytes(&model_file_name(step), b"model bytes")
        .unwrap();
    let md = CheckpointMetadata::new(step, DateTime::from_timestamp(1_760_000_000, 0).unwrap());
    let config = ModelConfig {
        sequence_len: 256,
        vocab_size: 512,
        ..ModelConfig::from_depth(2).unwrap()
    };
    w.commit(CheckpointMeta::new(config, md)).unwrap()
}

fn states(c: &Checkpoint) -> Vec<CheckpointState> {
    c.lifecycle().history().iter().map(|(s, _)| *s).collect()
}

#[test]
fn saved_loaded_validated_in_use() {
    use CheckpointState::*;
    let dir = tempfile::tempdir().unwrap();
    let saved = save(dir.path(), 3);
    // The meta on disk records Saved with its history.
    let recorded = &saved.metadata.extra[CHECKPOINT_STATE_KEY];
    assert_eq!(recorded["state"], "saved");
    assert_eq!(recorded["history"][0][0], "created");

    let mut c = Checkpoint::load(dir.path(), 3).unwrap();
    assert_eq!(c.state(), Loaded);
    let err = c.put_in_use().unwrap_err();
    assert!(matches!(err, CheckpointError::Lifecycle { .. }), "{err}");
    assert!(err.to_string().contains("Loaded → InUse"), "{err}");
    c.verify_files().unwrap();
    assert_eq!(c.state(), Validated);
    c.put_in_use().unwrap();
    assert_eq!(states(&c), [Created, Saved, Loaded, Validated, InUse]);
    assert_eq!(
        c.lifecycle().path(),
        "created → saved → loaded → validated → in_use"
    );
    // Validating twice is refused before anything is read.
    assert!(c.verify_files().is_err());
    assert_eq!(c.state(), InUse);
}

#[test]
fn corrupted_checkpoint_stops_at_loaded() {
    let dir = tempfile::tempdir().unwrap();
    save(dir.path(), 1);
    let path = dir.path().join(model_file_name(1));
    let mut bytes = fs::read(&path).unwrap();
    bytes[0] ^= 1;
    fs::write(&path, bytes).unwrap();
    let mut c = Checkpoint::load(dir.path(), 1).unwrap();
    let err = c.verify_files().unwrap_err();
    assert!(matches!(err, CheckpointError::CrcMismatch { .. }), "{err}");
    assert!(
        err.to_string().contains("model_000001.safetensors"),
        "{err}"
    );
    assert_eq!(c.state(), CheckpointState::Loaded);
    assert!(c.put_in_use().is_err(), "never validated, never in use");
}

#[test]
fn forged_and_legacy_records() {
    let dir = tempfile::tempdir().unwrap();
    let mut meta = save(dir.path(), 2);
    let meta_path = dir.path().join(meta_file_name(2));
    // A record claiming InUse straight after Created does not replay.
    meta.metadata.extra.insert(
        CHECKPOINT_STATE_KEY.into(),
        serde_json::json!({"state": "in_use", "history": [
            ["created", "2026-01-01T00:00:00Z"], ["in_use", "2026-01-01T00:00:00Z"]]}),
    );
    fs::write(&meta_path, encode_meta(&mut meta)).unwrap();
    let err = Checkpoint::load(dir.path(), 2).unwrap_err();
    assert!(err.to_string().contains("Created → InUse"), "{err}");
    // A meta from before lifecycles were recorded loads as saved at its creation time.
    meta.metadata.extra.remove(CHECKPOINT_STATE_KEY);
    fs::write(&meta_path, encode_meta(&mut meta)).unwrap();
    let c = Checkpoint::load(dir.path(), 2).unwrap();
    assert_eq!(c.lifecycle().path(), "created → saved → loaded");
    assert_eq!(
        c.lifecycle().history()[1].1,
        meta.metadata.timings.created_at
    );
}
