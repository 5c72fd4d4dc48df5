//! `nanochat doctor`'s pretraining data lines: the data folder as the `TrainingDataset` base-train
//! would train on, checked the same way (`PretrainingData::prepare`: rules, files, parquet magic
//! bytes and footers, rows per shard), and the dataset each base model's latest checkpoint
//! records in its meta (with any of its shards gone since).

use std::path::Path;

use nanochat::core::checkpoint_manager::{list_steps, load_meta};
use nanochat::core::paths::pretrain_data_dir;
use nanochat::core::{Source, TrainingDataset};
use nanochat::data::pretraining::{PretrainingData, describe, local_dataset};

/// Prints the lines through `line(ok, what, detail)`.
pub fn report(base: &Path, line: impl Fn(bool, &str, String)) {
    let data = pretrain_data_dir();
    match local_dataset(&data).and_then(PretrainingData::prepare) {
        Ok(d) => line(true, "pretrain data", d.summary()),
        Err(e) => line(false, "pretrain data", e.to_string()),
    }
    let root = base.join(Source::Base.dir_name());
    let Ok(entries) = std::fs::read_dir(&root) else {
        return;
    };
    let mut dirs: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    dirs.sort();
    for dir in dirs {
        let Some(&step) = list_steps(&dir)
            .ok()
            .and_then(|s| s.last().copied())
            .as_ref()
        else {
            continue;
        };
        let tag = dir
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let what = format!("{tag}@{step} data");
        let recorded = load_meta(&dir, step)
            .map_err(|e| e.to_string())
            .map(|m| m.metadata.extra.get("dataset").cloned());
        match recorded {
            Err(e) => line(false, &what, format!("meta unreadable: {e}")),
            Ok(None) => line(
                true,
                &what,
                "not recorded (checkpoint written before datasets were stored)".into(),
            ),
            Ok(Some(v)) => match serde_json::from_value::<TrainingDataset>(v) {
                Err(e) => line(false, &what, format!("recorded dataset unreadable: {e}")),
                Ok(ds) => match ds.check_files() {
                    Ok(()) => line(true, &what, describe(&ds)),
                    Err(e) => line(false, &what, format!("{} — now: {e}", describe(&ds))),
                },
            },
        }
    }
}
