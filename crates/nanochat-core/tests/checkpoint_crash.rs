//! A writer process killed (SIGKILL) while a checkpoint is half written leaves the previous
//! checkpoint loadable. The test re-runs its own binary as the writer, waits until the writer
//! is parked at the chosen point, kills it, and inspects the directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use std::{env, fs, thread};

use chrono::{DateTime, Utc};
use nanochat_core::checkpoint_manager::{
    find_last_step, list_steps, model_file_name, optim_file_name, read_file, verify_checkpoint,
};
use nanochat_core::*;

const CHILD_ENV: &str = "NANOCHAT_CRASH_CHILD";

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_760_000_000, 0).unwrap()
}

fn meta(step: u64) -> CheckpointMeta {
    CheckpointMeta::new(
        ModelConfig::from_depth(2).unwrap(),
        CheckpointMetadata::new(step, now()),
    )
}

fn save(dir: &Path, step: u64, fill: u8) {
    let mut w = CheckpointWriter::new(dir, step).unwrap();
    w.write_bytes(&model_file_name(step), &vec![fill; 1 << 16])
        .unwrap();
    w.write_bytes(&optim_file_name(step, 0), &vec![fill; 1 << 12])
        .unwrap();
    w.commit(meta(step)).unwrap();
}

/// Where the child parks before being killed.
#[derive(Clone, Copy, Debug)]
enum Point {
    /// New step: temp files written and fsynced, nothing renamed.
    BeforeRename,
    /// New step: files renamed into place, meta not yet written.
    BeforeMeta,
    /// Re-saving an existing step: temp files written, nothing renamed.
    OverwriteBeforeRename,
}

fn child(dir: &Path, point: Point) -> ! {
    let (step, fill) = match point {
        Point::OverwriteBeforeRename => (1, 0xBB),
        _ => (2, 0xCC),
    };
    let mut w = CheckpointWriter::new(dir, step).unwrap();
    w.write_bytes(&model_file_name(step), &vec![fill; 1 << 16])
        .unwrap();
    w.write_bytes(&optim_file_name(step, 0), &vec![fill; 1 << 12])
        .unwrap();
    if matches!(point, Point::BeforeMeta) {
        w.publish_files().unwrap();
    }
    fs::write(dir.join("parked"), b"").unwrap();
    loop {
        thread::sleep(Duration::from_secs(60));
    }
}

/// Runs this test binary's `test_name` as a child writer parked at `point`, then kills it.
fn kill_writer_at(dir: &Path, test_name: &str, point: Point) {
    let mut child = Command::new(env::current_exe().unwrap())
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{:?}|{}", point, dir.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dir.join("parked").exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("writer exited early with {status}");
        }
        assert!(Instant::now() < deadline, "writer never reached {point:?}");
        thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL: no destructors, no cleanup.
    child.wait().unwrap();
    fs::remove_file(dir.join("parked")).unwrap();
}

/// In the child process, parks at the requested point instead of testing.
fn maybe_child() {
    if let Ok(spec) = env::var(CHILD_ENV) {
        let (point, dir) = spec.split_once('|').unwrap();
        let point = match point {
            "BeforeRename" => Point::BeforeRename,
            "BeforeMeta" => Point::BeforeMeta,
            _ => Point::OverwriteBeforeRename,
        };
        child(&PathBuf::from(dir), point);
    }
}

fn check_step_one_intact(dir: &Path) {
    assert_eq!(
        find_last_step(dir).unwrap(),
        1,
        "the half-written step must not count"
    );
    let meta =
        verify_checkpoint(dir, 1).unwrap_or_else(|e| panic!("previous checkpoint broken: {e}"));
    let model = read_file(dir, &meta, &model_file_name(1)).unwrap();
    assert!(
        model.iter().all(|&b| b == 0xAA),
        "previous model bytes changed"
    );
}

fn verify_checkpoint_last(dir: &Path) -> Result<CheckpointMeta, CheckpointError> {
    verify_checkpoint(dir, find_last_step(dir)?)
}

#[test]
fn killed_before_rename_keeps_previous_checkpoint() {
    maybe_child();
    let dir = tempfile::tempdir().unwrap();
    save(dir.path(), 1, 0xAA);
    kill_writer_at(
        dir.path(),
        "killed_before_rename_keeps_previous_checkpoint",
        Point::BeforeRename,
    );
    // The killed writer left its temp files behind; they are ignored.
    assert!(
        dir.path()
            .join(".model_000002.safetensors.partial")
            .exists()
    );
    check_step_one_intact(dir.path());
    verify_checkpoint_last(dir.path()).unwrap();
    // A later save of the same step succeeds over the leftovers.
    save(dir.path(), 2, 0xDD);
    assert_eq!(list_steps(dir.path()).unwrap(), vec![1, 2]);
    verify_checkpoint_last(dir.path()).unwrap();
}

#[test]
fn killed_before_meta_keeps_previous_checkpoint() {
    maybe_child();
    let dir = tempfile::tempdir().unwrap();
    save(dir.path(), 1, 0xAA);
    kill_writer_at(
        dir.path(),
        "killed_before_meta_keeps_previous_checkpoint",
        Point::BeforeMeta,
    );
    assert!(
        dir.path().join(model_file_name(2)).exists(),
        "step 2's data was published"
    );
    check_step_one_intact(dir.path());
}

#[test]
fn killed_while_overwriting_keeps_old_version() {
    maybe_child();
    let dir = tempfile::tempdir().unwrap();
    save(dir.path(), 1, 0xAA);
    kill_writer_at(
        dir.path(),
        "killed_while_overwriting_keeps_old_version",
        Point::OverwriteBeforeRename,
    );
    check_step_one_intact(dir.path());
}
