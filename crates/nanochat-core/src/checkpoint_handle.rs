//! One checkpoint through its lifecycle, Created → Saved → Loaded → Validated → InUse
//! ([`CheckpointState`]). Upstream's `nanochat/checkpoint_manager.py` (`load_checkpoint`,
//! `build_model`) does the same work with no states; here each step of the work is the only
//! thing that moves the state:
//!
//! - [`CheckpointWriter::commit`](crate::CheckpointWriter::commit) starts a checkpoint at Created
//!   and records Saved, with the history, in the meta it writes ([`CHECKPOINT_STATE_KEY`]);
//! - [`Checkpoint::load`] reads that meta back and decodes it (its own CRC32, format version
//!   and rules, as [`load_meta`] does) → Loaded;
//! - [`Checkpoint::validate`] reads the files the caller needs, checks each one's recorded size
//!   and CRC32, and runs the caller's checks on them (the model crate builds the model from the
//!   config and checks every tensor against it) → Validated only when all of that passed; a
//!   failure leaves the handle at Loaded. [`Checkpoint::verify_files`] validates every listed
//!   file, for tools that load nothing;
//! - [`Checkpoint::put_in_use`] once the weights are in a model that is trained or served →
//!   InUse.
//!
//! The lifecycle is a private field of the handle, so no other code can set it, and each step
//! called out of order is refused with [`CheckpointError::Lifecycle`]. A checkpoint written
//! before lifecycles were recorded has none in its meta; its meta exists, so it counts as
//! Saved at its `timings.created_at`.

use std::path::{Path, PathBuf};

use chrono::Utc;

use crate::checkpoint::CheckpointMeta;
use crate::checkpoint_manager::{
    CheckpointError, load_meta, meta_file_name, read_file, verify_file,
};
use crate::lifecycle::{CheckpointState, Lifecycle, state_name};

/// Meta key of a checkpoint's lifecycle (state and timestamped history), written at Saved.
pub const CHECKPOINT_STATE_KEY: &str = "checkpoint_state";

/// A checkpoint on disk that has been loaded, and where it is in its lifecycle.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    dir: PathBuf,
    meta: CheckpointMeta,
    lifecycle: Lifecycle<CheckpointState>,
}

impl Checkpoint {
    /// Reads and decodes the meta of `step` in `dir` (Saved → Loaded). Errors name the file:
    /// a step never completed, a meta whose CRC, version or rules fail, or a recorded lifecycle
    /// that does not replay or is not at Saved.
    pub fn load(dir: &Path, step: u64) -> Result<Self, CheckpointError> {
        let meta = load_meta(dir, step)?;
        let path = dir.join(meta_file_name(step));
        let mut lifecycle = recorded_lifecycle(&meta, &path)?;
        lifecycle
            .advance(CheckpointState::Loaded, Utc::now())
            .map_err(|e| CheckpointError::lifecycle(&path, e))?;
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            meta,
            lifecycle,
        })
    }

    /// Reads the files named in `files` (each checked against its recorded size and CRC32),
    /// hands them in that order to `check`, and moves Loaded → Validated when `check` succeeds.
    /// On any error the handle stays where it was.
    pub fn validate<T, E: From<CheckpointError>>(
        &mut self,
        files: &[&str],
        check: impl FnOnce(&Self, Vec<Vec<u8>>) -> Result<T, E>,
    ) -> Result<T, E> {
        // Refuse before reading anything when the handle is not at Loaded.
        let mut probe = self.lifecycle.clone();
        probe
            .advance(CheckpointState::Validated, Utc::now())
            .map_err(|e| CheckpointError::lifecycle(self.meta_path(), e))?;
        let mut contents = Vec::with_capacity(files.len());
        for name in files {
            contents.push(read_file(&self.dir, &self.meta, name)?);
        }
        let out = check(self, contents)?;
        self.advance(CheckpointState::Validated)?;
        Ok(out)
    }

    /// Validates by checking the size and CRC32 of every file the meta lists (streamed).
    pub fn verify_files(&mut self) -> Result<(), CheckpointError> {
        self.validate(&[], |c, _| {
            for name in c.meta.files.keys() {
                verify_file(&c.dir, &c.meta, name)?;
            }
            Ok(())
        })
    }

    /// Validated → InUse: the weights are in a model that is trained or served.
    pub fn put_in_use(&mut self) -> Result<(), CheckpointError> {
        self.advance(CheckpointState::InUse)
    }

    fn advance(&mut self, next: CheckpointState) -> Result<(), CheckpointError> {
        let path = self.meta_path();
        self.lifecycle
            .advance(next, Utc::now())
            .map_err(|e| CheckpointError::lifecycle(path, e))
    }

    /// The current state.
    pub fn state(&self) -> CheckpointState {
        self.lifecycle.state()
    }

    /// The lifecycle: the state and every state entered, with when (from Created at write).
    pub fn lifecycle(&self) -> &Lifecycle<CheckpointState> {
        &self.lifecycle
    }

    /// The history as `created → saved → loaded …`, for logs.
    pub fn describe(&self) -> String {
        self.lifecycle.path()
    }

    /// The decoded meta (config, metadata, file records).
    pub fn meta(&self) -> &CheckpointMeta {
        &self.meta
    }

    /// The meta, giving up the handle.
    pub fn into_meta(self) -> CheckpointMeta {
        self.meta
    }

    /// The checkpoint's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The step.
    pub fn step(&self) -> u64 {
        self.meta.step()
    }

    /// `<dir>/meta_<step>.json`.
    pub fn meta_path(&self) -> PathBuf {
        self.dir.join(meta_file_name(self.step()))
    }

    /// Reads one listed file, checking its size and CRC32 (e.g. an optimizer shard).
    pub fn read_file(&self, name: &str) -> Result<Vec<u8>, CheckpointError> {
        read_file(&self.dir, &self.meta, name)
    }
}

/// The lifecycle recorded in `meta` (read from `path`), which a committed meta leaves at
/// Saved; one written before lifecycles were recorded counts as Saved at its creation time.
pub fn recorded_lifecycle(
    meta: &CheckpointMeta,
    path: &Path,
) -> Result<Lifecycle<CheckpointState>, CheckpointError> {
    let Some(value) = meta.metadata.extra.get(CHECKPOINT_STATE_KEY) else {
        let at = meta.metadata.timings.created_at;
        let mut lifecycle = Lifecycle::new(at);
        lifecycle
            .advance(CheckpointState::Saved, at)
            .map_err(|e| CheckpointError::lifecycle(path, e))?;
        return Ok(lifecycle);
    };
    let lifecycle: Lifecycle<CheckpointState> =
        serde_json::from_value(value.clone()).map_err(|e| CheckpointError::Lifecycle {
            path: path.to_path_buf(),
            reason: format!("{CHECKPOINT_STATE_KEY}: {e}"),
        })?;
    if lifecycle.state() != CheckpointState::Saved {
        return Err(CheckpointError::Lifecycle {
            path: path.to_path_buf(),
            reason: format!(
                "{CHECKPOINT_STATE_KEY}.state = {}: a written checkpoint records saved",
                state_name(lifecycle.state())
            ),
        });
    }
    Ok(lifecycle)
}
