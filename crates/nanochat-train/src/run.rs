//! The scaffold every training stage (pretraining, midtraining, SFT, RL) runs in: what
//! upstream's `base_train.py`, `chat_sft.py` and `chat_rl.py` each write around their steps,
//! written once.
//!
//! A [`Run`] owns the progress bar, rank-0 logging, the `metrics.jsonl` writer (cut back to the
//! resumed step, validation results that ride on the next step's line), the save / stop
//! [`Cadence`], the checkpoint writing, and interrupts: on Ctrl-C or SIGTERM the run finishes
//! its step, saves a checkpoint and stops with [`TrainError::Interrupted`], which names the
//! resume command; a second signal exits at once (the checkpoint writer is crash-safe, so the
//! last good checkpoint stays). A stage's loop keeps only what is its own: how a
//! batch is made, how the loss is computed, what is evaluated, what its meta holds
//! ([`crate::stage_meta`]).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use burn::tensor::backend::{AutodiffBackend, Backend};
use indicatif::{ProgressBar, ProgressStyle};
use nanochat_core::checkpoint_manager::{self as files, optim_file_name};
use nanochat_core::fs::IoError;
use nanochat_core::lifecycle::{Lifecycle, TrainingState, state_name};
use nanochat_core::{CheckpointMeta, CheckpointMetadata, Source};
use nanochat_model::Gpt;
use nanochat_model::checkpoint::{load_checkpoint, save_checkpoint};
use nanochat_model::distributed::Rank;
use nanochat_model::weights::{read_safetensors, to_safetensors};
use serde::Serialize;

use crate::error::TrainError;
use crate::optim::MuonAdamW;

/// When a stage saves and stops (the eval and sample cadences are the stage's own; see
/// [`Cadence::due`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Cadence {
    /// Checkpoint every N steps (the last step is always saved; `None`/0: only then).
    pub save_every: Option<u64>,
    /// The step this run resumed at (not saved again).
    pub resume_from_step: Option<u64>,
    /// Save and stop at this step without finishing.
    pub stop_after: Option<u64>,
}

impl Cadence {
    /// Saves every `save_every` steps, resumed at `resume_from_step`, stops at `stop_after`.
    pub fn new(
        save_every: Option<u64>,
        resume_from_step: Option<u64>,
        stop_after: Option<u64>,
    ) -> Self {
        Cadence {
            save_every,
            resume_from_step,
            stop_after,
        }
    }

    /// Whether a task run every `every` steps is due at `step`: at multiples of `every` and at
    /// the last step; never when `every` is unset or 0.
    pub fn due(every: Option<u64>, step: u64, last: bool) -> bool {
        every.is_some_and(|e| e > 0 && (last || step.is_multiple_of(e)))
    }

    /// Whether the run stops at `step` (`stop_after`).
    pub fn stop_here(&self, step: u64) -> bool {
        self.stop_after == Some(step)
    }

    /// Whether a checkpoint is written at `step`: the last step, every `save_every`, and the
    /// `stop_after` step, but not the step the run resumed at.
    pub fn save_due(&self, step: u64, last: bool) -> bool {
        let resumed_here = self.resume_from_step == Some(step);
        let periodic = step > 0 && !resumed_here && Self::due(self.save_every, step, false);
        last || periodic || (self.stop_here(step) && !resumed_here)
    }
}

/// The progress bar of a run.
#[derive(Debug, Clone, Copy)]
pub enum Bar {
    /// A known number of steps.
    Steps(u64),
    /// Epoch progress in per mille (post-training: the horizon is one pass over the data).
    Epoch,
}

/// One rank's view of a running stage: bar, log, metrics and checkpoints (rank 0 writes; the
/// other ranks' calls do nothing).
pub struct Run {
    dir: PathBuf,
    master: bool,
    interrupted: bool,
    lifecycle: Lifecycle<TrainingState>,
    bar: ProgressBar,
    metrics: Option<(File, PathBuf)>,
    pending_val: Option<f64>,
    /// When to save and stop.
    pub cadence: Cadence,
}

impl Run {
    /// Opens the run writing to `dir` at `start_step`: on rank 0 (`master`), `metrics.jsonl`
    /// cut back to the lines before `start_step` when resuming and opened for appending; the
    /// bar drawn when `progress` and rank 0.
    pub fn open(
        dir: &Path,
        master: bool,
        progress: bool,
        bar: Bar,
        cadence: Cadence,
        start_step: u64,
    ) -> Result<Self, TrainError> {
        let metrics = if master {
            if cadence.resume_from_step.is_some() {
                truncate_metrics(dir, start_step)?;
                tracing::info!("resuming from step {start_step} of {}", dir.display());
            }
            Some(open_metrics(dir)?)
        } else {
            None
        };
        let (len, template) = match bar {
            Bar::Steps(n) => (n, STEPS_TEMPLATE),
            Bar::Epoch => (1000, EPOCH_TEMPLATE),
        };
        let pb = if progress && master {
            ProgressBar::new(len)
        } else {
            ProgressBar::hidden()
        };
        pb.set_style(ProgressStyle::with_template(template).expect("static template"));
        if let Bar::Steps(_) = bar {
            pb.set_position(start_step);
        }
        // A new run starts uninterrupted (a process may run several, as tests do).
        interrupt_flag().store(false, Ordering::SeqCst);
        let lifecycle = training_lifecycle(dir, cadence.resume_from_step)?;
        pb.set_message(state_name(lifecycle.state()));
        if master && cadence.resume_from_step.is_some() {
            tracing::info!("training state: {}", lifecycle.path());
        }
        Ok(Run {
            dir: dir.to_path_buf(),
            master,
            interrupted: false,
            lifecycle,
            bar: pb,
            metrics,
            pending_val: None,
            cadence,
        })
    }

    /// What to do at `step`, before training it: `(save, stop)`. Saves at the last step, on
    /// the cadence, at `stop_after`, and when interrupted (the ranks agree: one interrupted
    /// rank stops them all); stops at the last step, at `stop_after` and when interrupted.
    pub fn at_step<B: Backend>(
        &mut self,
        step: u64,
        last: bool,
        rank: &Rank<B>,
    ) -> Result<(bool, bool), TrainError> {
        let local = f64::from(u8::from(interrupt_flag().load(Ordering::SeqCst)));
        self.interrupted = rank.sum_f64(&[local])?[0] > 0.0;
        if self.interrupted {
            self.log(format!("interrupted: saving step {step} and stopping"));
        }
        let save = self.cadence.save_due(step, last) || self.interrupted;
        let stop = last || self.cadence.stop_here(step) || self.interrupted;
        // The training lifecycle: Training ⇄ CheckpointSaved, then Completed or Interrupted.
        if self.lifecycle.state() == TrainingState::CheckpointSaved {
            self.advance(TrainingState::Training)?;
        }
        if save {
            self.advance(TrainingState::CheckpointSaved)?;
        }
        if stop {
            let end = match last {
                true => TrainingState::Completed,
                false => TrainingState::Interrupted,
            };
            self.advance(end)?;
            self.log(format!("training state: {}", state_name(end)));
        }
        Ok((save, stop))
    }

    /// One step of the training lifecycle, shown at the start of the progress bar.
    fn advance(&mut self, next: TrainingState) -> Result<(), TrainError> {
        self.lifecycle.advance(next, chrono::Utc::now())?;
        self.bar.set_message(state_name(next));
        Ok(())
    }

    /// Where the run is in its lifecycle (saved with each checkpoint as `training_state`).
    pub fn lifecycle(&self) -> &Lifecycle<TrainingState> {
        &self.lifecycle
    }

    /// The checkpoint folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Logs `line` on rank 0, above the bar.
    pub fn log(&self, line: impl AsRef<str>) {
        if self.master {
            self.bar.suspend(|| tracing::info!("{}", line.as_ref()));
        }
    }

    /// Moves the bar (steps, or per mille of the epoch).
    pub fn set_position(&self, pos: u64) {
        self.bar.set_position(pos);
    }

    /// Logs the validation bits per byte measured before `step`; it rides on that step's
    /// metrics line ([`Run::take_val`]).
    pub fn validated(&mut self, step: u64, bpb: f64) {
        self.pending_val = Some(bpb);
        self.log(format!("Step {step:05} | Validation bpb: {bpb:.6}"));
    }

    /// The validation result waiting for a metrics line.
    pub fn take_val(&mut self) -> Option<f64> {
        self.pending_val.take()
    }

    /// Appends `line` to `metrics.jsonl` (rank 0).
    pub fn record<M: Serialize>(&mut self, line: &M) -> Result<(), TrainError> {
        if let Some((file, path)) = &mut self.metrics {
            let text = serde_json::to_string(line)
                .map_err(|e| TrainError::Data(format!("metrics line: {e}")))?;
            writeln!(file, "{text}").map_err(|e| IoError::new("append", &*path, e))?;
        }
        Ok(())
    }

    /// Writes the checkpoint of `step` (rank 0): the model, `meta`, and the optimizer state as
    /// `optim_<step>_rank0`.
    pub fn save<B: AutodiffBackend>(
        &self,
        model: &Gpt<B>,
        opt: &MuonAdamW<B::InnerBackend>,
        meta: CheckpointMetadata,
    ) -> Result<(), TrainError> {
        if !self.master {
            return Ok(());
        }
        let mut meta = meta;
        meta.extra
            .insert(TRAINING_STATE_KEY.into(), json_value(&self.lifecycle)?);
        let step = meta.step;
        let optim = to_safetensors(&opt.state_tensors(), None)?;
        save_checkpoint(&self.dir, model, meta, &[(optim_file_name(step, 0), optim)])?;
        self.log(format!("saved step {step} to {}", self.dir.display()));
        Ok(())
    }

    /// Ends the run at `step`: a validation with no step after it gets its own metrics line;
    /// the bar is cleared. An interrupted run ends in [`TrainError::Interrupted`].
    pub fn finish(mut self, step: u64) -> Result<(), TrainError> {
        if let Some(v) = self.pending_val.take() {
            self.record(&serde_json::json!({"step": step, "val_bpb": v}))?;
        }
        self.bar.finish_and_clear();
        match self.interrupted {
            true => Err(TrainError::Interrupted {
                step,
                dir: self.dir,
            }),
            false => Ok(()),
        }
    }
}

/// Meta key of the run's training lifecycle (state and timestamped history).
pub const TRAINING_STATE_KEY: &str = "training_state";

fn json_value<T: Serialize>(value: &T) -> Result<serde_json::Value, TrainError> {
    serde_json::to_value(value).map_err(|e| TrainError::Data(format!("{TRAINING_STATE_KEY}: {e}")))
}

/// The lifecycle of a run starting now: Initialized → Training, or, resuming from the
/// checkpoint at `resume_from_step` in `dir`, that checkpoint's lifecycle → Interrupted (unless
/// it stopped there already) → Resumed → Training. A checkpoint without one (written before
/// runs recorded it, or unreadable: the stage reports that), or of a run that completed,
/// starts a new history at Interrupted.
fn training_lifecycle(
    dir: &Path,
    resume_from_step: Option<u64>,
) -> Result<Lifecycle<TrainingState>, TrainError> {
    use TrainingState::*;
    let now = chrono::Utc::now();
    let mut lifecycle = Lifecycle::new(now);
    if let Some(step) = resume_from_step {
        let saved = files::load_meta(dir, step)
            .ok()
            .and_then(|m| m.metadata.extra.get(TRAINING_STATE_KEY).cloned());
        if let Some(l) =
            saved.and_then(|v| serde_json::from_value::<Lifecycle<TrainingState>>(v).ok())
            && l.state() != Completed
        {
            lifecycle = l;
        }
        if lifecycle.state() != Interrupted {
            lifecycle.advance(Interrupted, now)?;
        }
        lifecycle.advance(Resumed, now)?;
    }
    lifecycle.advance(Training, now)?;
    Ok(lifecycle)
}

/// Set by SIGINT and SIGTERM once the first run of the process has opened; a second signal
/// while it is set exits the process at once (status 130).
fn interrupt_flag() -> &'static Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            // Order matters: the exit is checked before the flag is set by this signal.
            let registered =
                signal_hook::flag::register_conditional_shutdown(signal, 130, flag.clone())
                    .and_then(|_| signal_hook::flag::register(signal, flag.clone()));
            if let Err(e) = registered {
                tracing::warn!("Ctrl-C will stop the run without saving: {e}");
            }
        }
        flag
    })
}

/// One line of `metrics.jsonl`: what every stage records of a step.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct StepMetrics {
    /// Step index (the optimizer step just taken).
    pub step: u64,
    /// The step's loss: pretraining, of its last micro-batch; post-training, token-weighted
    /// over the whole step.
    pub loss: f64,
    /// Debiased EMA of the loss.
    pub smooth_loss: f64,
    /// LR multiplier.
    pub lrm: f64,
    /// Step time (s).
    pub dt: f64,
    /// Tokens processed per second (all ranks).
    pub tok_per_sec: f64,
    /// Model FLOPs utilisation (%), when the device's peak is known.
    pub mfu: Option<f64>,
    /// Data epoch (pretraining).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Progress through the epoch (post-training).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    /// Validation bpb measured before this step, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_bpb: Option<f64>,
}

/// Folds `loss` into the EMA `smooth` (upstream's β = 0.9) and returns it debiased for `step`.
pub fn smooth_loss(smooth: &mut f64, loss: f64, step: u64) -> f64 {
    *smooth = 0.9 * *smooth + 0.1 * loss;
    debiased(*smooth, step)
}

/// The EMA `smooth` after `step + 1` updates, debiased.
pub fn debiased(smooth: f64, step: u64) -> f64 {
    smooth / (1.0 - 0.9f64.powi(step as i32 + 1))
}

/// Loads `optim_<step>_rank0` of the checkpoint in `dir` into `opt`.
pub fn load_optimizer_state<B: Backend>(
    opt: &mut MuonAdamW<B>,
    dir: &Path,
    meta: &CheckpointMeta,
    step: u64,
    device: &B::Device,
) -> Result<(), TrainError> {
    let name = optim_file_name(step, 0);
    let bytes = files::read_file(dir, meta, &name)?;
    opt.load_state_tensors(read_safetensors(&bytes, "", &dir.join(&name))?, device)?;
    Ok(())
}

/// The checkpoint a post-training stage starts from, found and its meta read, its weights not
/// loaded yet: the stage validates what it inherits first.
pub struct SourceCheckpoint {
    /// Its folder.
    pub dir: PathBuf,
    /// Its model tag.
    pub tag: String,
    /// Its meta (config, metadata, files).
    pub meta: CheckpointMeta,
}

impl SourceCheckpoint {
    /// `base_dir`'s `source` checkpoint of `model_tag` (default the largest `dN`) at `step`
    /// (default the last), as upstream's `load_model` finds it.
    pub fn find(
        base_dir: &Path,
        source: Source,
        model_tag: Option<&str>,
        step: Option<u64>,
    ) -> Result<Self, TrainError> {
        let (dir, tag, step) = files::find_checkpoint(base_dir, source, model_tag, step)?;
        let meta = files::load_meta(&dir, step)?;
        Ok(SourceCheckpoint { dir, tag, meta })
    }

    /// The model the stage starts from: its own checkpoint at `resume_from_step` in `dir` (with
    /// that checkpoint's meta), else these weights.
    pub fn start<B: Backend>(
        &self,
        dir: &Path,
        resume_from_step: Option<u64>,
        device: &B::Device,
    ) -> Result<(Gpt<B>, Option<CheckpointMeta>), TrainError> {
        match resume_from_step {
            None => Ok((
                load_checkpoint::<B>(&self.dir, self.meta.metadata.step, device)?.0,
                None,
            )),
            Some(step) => {
                let (model, meta) = load_checkpoint::<B>(dir, step, device)?;
                Ok((model, Some(meta)))
            }
        }
    }
}

/// `<dir>/metrics.jsonl`.
pub fn metrics_path(dir: &Path) -> PathBuf {
    dir.join("metrics.jsonl")
}

fn open_metrics(dir: &Path) -> Result<(File, PathBuf), TrainError> {
    std::fs::create_dir_all(dir).map_err(|e| IoError::new("create", dir, e))?;
    let path = metrics_path(dir);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| IoError::new("open", &path, e))?;
    Ok((file, path))
}

/// Keeps the metrics lines of steps before `step` (a resume rewrites what follows).
fn truncate_metrics(dir: &Path, step: u64) -> Result<(), TrainError> {
    let path = metrics_path(dir);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s < step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    nanochat_core::fs::write_atomic(&path, kept.as_bytes())?;
    Ok(())
}

const STEPS_TEMPLATE: &str =
    "{msg:16} {bar:40} {pos}/{len} steps [{elapsed_precise} < {eta_precise}]";
const EPOCH_TEMPLATE: &str =
    "{msg:16} {bar:40} {percent}% of the epoch [{elapsed_precise} < {eta_precise}]";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cadence() {
        assert!(Cadence::due(Some(5), 10, false) && Cadence::due(Some(5), 0, false));
        assert!(!Cadence::due(Some(5), 7, false) && Cadence::due(Some(5), 7, true));
        assert!(!Cadence::due(None, 7, true) && !Cadence::due(Some(0), 0, true));
        let c = Cadence {
            save_every: Some(4),
            resume_from_step: Some(4),
            stop_after: Some(6),
        };
        assert!(!c.save_due(0, false) && !c.save_due(4, false) && c.save_due(8, false));
        assert!(c.save_due(6, false) && c.stop_here(6) && c.save_due(5, true));
    }

    #[test]
    fn metrics_are_cut_back_on_resume() {
        let dir = tempfile::tempdir().unwrap();
        let mut run = Run::open(
            dir.path(),
            true,
            false,
            Bar::Steps(9),
            Cadence::default(),
            0,
        )
        .unwrap();
        for step in 0..3 {
            run.record(&serde_json::json!({ "step": step })).unwrap();
        }
        run.validated(3, 1.25);
        run.finish(3).unwrap();
        let resume = Cadence {
            resume_from_step: Some(2),
            ..Cadence::default()
        };
        Run::open(dir.path(), true, false, Bar::Epoch, resume, 2).unwrap();
        let text = std::fs::read_to_string(metrics_path(dir.path())).unwrap();
        assert_eq!(text, "{\"step\":0}\n{\"step\":1}\n");
    }
}
