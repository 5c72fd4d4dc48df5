//! Finding checkpoints on disk (upstream `find_last_step` and `find_largest_model` in
//! `nanochat/checkpoint_manager.py`): the completed steps of a folder, the model tag to load
//! when none is given, and the folder, tag and step that `--source / --model-tag / --step`
//! name. A step counts only once its meta exists (see [`crate::checkpoint_manager`]).

use std::fs;
use std::path::{Path, PathBuf};

use crate::checkpoint_manager::{CheckpointError, Source};
use crate::fs::IoError;

/// Steps that have a meta file in `dir`, ascending (a step without its meta never completed).
pub fn list_steps(dir: &Path) -> Result<Vec<u64>, CheckpointError> {
    let entries = fs::read_dir(dir).map_err(|e| IoError::new("list", dir, e))?;
    let mut steps = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| IoError::new("list", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(digits) = name
            .strip_prefix("meta_")
            .and_then(|s| s.strip_suffix(".json"))
            && !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && let Ok(step) = digits.parse()
        {
            steps.push(step);
        }
    }
    steps.sort_unstable();
    Ok(steps)
}

/// Where upstream's `load_model(source, …)` looks: `<base>/<source>_checkpoints/<model_tag>/`,
/// the largest `dN` tag unless `model_tag` is given, the last step unless `step` is. Returns the
/// folder, the tag and the step.
pub fn find_checkpoint(
    base_dir: &Path,
    source: Source,
    model_tag: Option<&str>,
    step: Option<u64>,
) -> Result<(PathBuf, String, u64), CheckpointError> {
    let root = base_dir.join(source.dir_name());
    let tag = match model_tag {
        Some(t) => t.to_string(),
        None => find_largest_model(&root)?,
    };
    let dir = root.join(&tag);
    let step = match step {
        Some(s) => s,
        None => find_last_step(&dir)?,
    };
    Ok((dir, tag, step))
}

/// The highest completed step in `dir` (upstream `find_last_step`).
pub fn find_last_step(dir: &Path) -> Result<u64, CheckpointError> {
    list_steps(dir)?
        .pop()
        .ok_or_else(|| CheckpointError::NotFound {
            dir: dir.to_path_buf(),
            reason: "no meta_*.json files".into(),
        })
}

/// The model tag to load when none is given (upstream `find_largest_model`): among tags that
/// hold a completed checkpoint, the largest `d<N>`; otherwise the most recently modified.
pub fn find_largest_model(checkpoints_dir: &Path) -> Result<String, CheckpointError> {
    let entries =
        fs::read_dir(checkpoints_dir).map_err(|e| IoError::new("list", checkpoints_dir, e))?;
    let mut tags: Vec<(Option<u64>, std::time::SystemTime, String)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| IoError::new("list", checkpoints_dir, e))?;
        let path = entry.path();
        let Some(tag) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !path.is_dir() || list_steps(&path).map(|s| s.is_empty()).unwrap_or(true) {
            continue;
        }
        let depth = tag.strip_prefix('d').and_then(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        });
        let mtime = entry
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(std::time::UNIX_EPOCH);
        tags.push((depth, mtime, tag));
    }
    // Depth-tagged first (largest depth, newest on ties), then the newest other tag.
    tags.sort_by(|a, b| {
        b.0.is_some()
            .cmp(&a.0.is_some())
            .then(b.0.cmp(&a.0))
            .then(b.1.cmp(&a.1))
    });
    tags.into_iter()
        .next()
        .map(|t| t.2)
        .ok_or_else(|| CheckpointError::NotFound {
            dir: checkpoints_dir.to_path_buf(),
            reason: "no model tag folder holds a completed checkpoint".into(),
        })
}
