//! The four lifecycles of the data model as state machines whose illegal transitions return
//! an error (upstream has none; the data model of nanochat-rs names them):
//!
//! - checkpoint: Created → Saved → Loaded → Validated → InUse → Saved (→ Loaded …);
//! - training: Initialized → Training → CheckpointSaved → Training … → CheckpointSaved →
//!   Completed, with Interrupted → Resumed → Training from any running state;
//! - inference: Created → ModelLoaded → Ready → Processing → Streaming → Complete | Error, and
//!   back to Ready for the next request;
//! - tokenizer: Untrained → Training → Trained → Loaded.
//!
//! [`Lifecycle`] holds the current state and the timestamped history of transitions. Its
//! fields are private: the only way to change the state is [`Lifecycle::advance`], which
//! refuses what the table forbids, and a lifecycle read back from a file is replayed through
//! the same table (a recorded history with an illegal step does not deserialise). The code that
//! does the work owns the lifecycle and advances it: the training `Run` (nanochat-train), the
//! checkpoint writer and [`crate::checkpoint_handle::Checkpoint`], the tokenizer trainer and
//! loader, the inference engine.
//!
//! The state cannot be assigned directly:
//!
//! ```compile_fail,E0616
//! use nanochat_core::lifecycle::{CheckpointState, Lifecycle};
//! fn skip_validation(l: &mut Lifecycle<CheckpointState>) {
//!     l.state = CheckpointState::InUse; // error[E0616]: field `state` is private
//! }
//! ```
//!
//! while the same jump asked of [`Lifecycle::advance`] compiles and is refused at run time:
//!
//! ```
//! use nanochat_core::lifecycle::{CheckpointState, Lifecycle};
//! fn skip_validation(l: &mut Lifecycle<CheckpointState>) -> bool {
//!     l.advance(CheckpointState::InUse, l.history()[0].1).is_err()
//! }
//! let json = r#"{"state":"created","history":[["created","2026-01-01T00:00:00Z"]]}"#;
//! let mut l: Lifecycle<CheckpointState> = serde_json::from_str(json)?;
//! assert!(skip_validation(&mut l), "Created → InUse is illegal");
//! assert_eq!(l.state(), CheckpointState::Created);
//! // A recorded history is replayed through the table too.
//! let forged = r#"{"state":"in_use","history":[["created","2026-01-01T00:00:00Z"],["in_use","2026-01-01T00:00:00Z"]]}"#;
//! assert!(serde_json::from_str::<Lifecycle<CheckpointState>>(forged).is_err());
//! # Ok::<(), serde_json::Error>(())
//! ```

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A state of one of the lifecycles.
pub trait LifecycleState: Copy + Eq + fmt::Debug + 'static {
    /// The lifecycle's name, for errors.
    const NAME: &'static str;
    /// Where every instance starts.
    const INITIAL: Self;
    /// States reachable from `self` in one transition.
    fn next_states(self) -> &'static [Self];
    /// Whether `self → next` is legal.
    fn can_transition_to(self, next: Self) -> bool {
        self.next_states().contains(&next)
    }
}

/// An illegal transition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal {lifecycle} transition {from} → {to} (allowed from {from}: {allowed})")]
pub struct LifecycleError {
    /// Which lifecycle.
    pub lifecycle: &'static str,
    /// Current state.
    pub from: String,
    /// Requested state.
    pub to: String,
    /// The legal next states.
    pub allowed: String,
}

/// Checkpoint lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointState {
    /// Built in memory, not yet on disk.
    Created,
    /// Written to disk (files renamed into place, meta last).
    Saved,
    /// Read back from disk.
    Loaded,
    /// CRCs, version and config checked.
    Validated,
    /// Weights in a model being trained or served.
    InUse,
}

impl LifecycleState for CheckpointState {
    const NAME: &'static str = "checkpoint";
    const INITIAL: Self = CheckpointState::Created;
    fn next_states(self) -> &'static [Self] {
        use CheckpointState::*;
        match self {
            Created => &[Saved],
            Saved => &[Loaded],
            Loaded => &[Validated],
            Validated => &[InUse],
            InUse => &[Saved],
        }
    }
}

/// Training-run lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainingState {
    /// Config resolved, model and optimizer built.
    Initialized,
    /// Taking optimizer steps.
    Training,
    /// A checkpoint was just written.
    CheckpointSaved,
    /// Stopped early (signal, error); the last checkpoint is intact.
    Interrupted,
    /// Restored from the last checkpoint.
    Resumed,
    /// Finished after its final checkpoint.
    Completed,
}

impl LifecycleState for TrainingState {
    const NAME: &'static str = "training";
    const INITIAL: Self = TrainingState::Initialized;
    fn next_states(self) -> &'static [Self] {
        use TrainingState::*;
        match self {
            Initialized => &[Training, Interrupted],
            Training => &[CheckpointSaved, Interrupted],
            CheckpointSaved => &[Training, Completed, Interrupted],
            Interrupted => &[Resumed],
            Resumed => &[Training, Interrupted],
            Completed => &[],
        }
    }
}

/// Inference lifecycle of an engine or a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InferenceState {
    /// Nothing loaded yet.
    Created,
    /// Weights and tokenizer loaded.
    ModelLoaded,
    /// Waiting for a request.
    Ready,
    /// Prefilling a prompt.
    Processing,
    /// Emitting tokens.
    Streaming,
    /// The request finished.
    Complete,
    /// The request (or loading) failed.
    Error,
}

impl LifecycleState for InferenceState {
    const NAME: &'static str = "inference";
    const INITIAL: Self = InferenceState::Created;
    fn next_states(self) -> &'static [Self] {
        use InferenceState::*;
        match self {
            Created => &[ModelLoaded, Error],
            ModelLoaded => &[Ready, Error],
            Ready => &[Processing],
            Processing => &[Streaming, Error],
            Streaming => &[Complete, Error],
            Complete => &[Ready],
            Error => &[Ready],
        }
    }
}

/// Tokenizer lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenizerState {
    /// Nothing learned yet (training options checked).
    Untrained,
    /// Counting chunks and learning merges.
    Training,
    /// Merges learned: a complete tokenizer (saved with this history).
    Trained,
    /// Read back from its files and checked.
    Loaded,
}

impl LifecycleState for TokenizerState {
    const NAME: &'static str = "tokenizer";
    const INITIAL: Self = TokenizerState::Untrained;
    fn next_states(self) -> &'static [Self] {
        use TokenizerState::*;
        match self {
            Untrained => &[Training],
            Training => &[Trained],
            Trained => &[Loaded],
            Loaded => &[],
        }
    }
}

/// A state machine with its history. Serialised as `{"state": …, "history": [[state, time] …]}`;
/// deserialising replays the history through [`Lifecycle::advance`], so a record that starts
/// anywhere but the initial state, makes an illegal step, or whose `state` is not its last
/// entry is refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    try_from = "RecordedLifecycle<S>",
    bound(deserialize = "S: LifecycleState + Deserialize<'de>")
)]
pub struct Lifecycle<S> {
    state: S,
    history: Vec<(S, DateTime<Utc>)>,
}

/// A lifecycle as written in a file, before it is replayed.
#[derive(Deserialize)]
struct RecordedLifecycle<S> {
    state: S,
    history: Vec<(S, DateTime<Utc>)>,
}

impl<S: LifecycleState> TryFrom<RecordedLifecycle<S>> for Lifecycle<S> {
    type Error = String;
    fn try_from(rec: RecordedLifecycle<S>) -> Result<Self, String> {
        let mut entries = rec.history.into_iter();
        let (first, at) = entries
            .next()
            .ok_or_else(|| format!("{} lifecycle: empty history", S::NAME))?;
        if first != S::INITIAL {
            return Err(format!(
                "{} lifecycle: history starts at {first:?}, must start at {:?}",
                S::NAME,
                S::INITIAL
            ));
        }
        let mut lifecycle = Lifecycle::new(at);
        for (next, at) in entries {
            lifecycle.advance(next, at).map_err(|e| e.to_string())?;
        }
        if lifecycle.state != rec.state {
            return Err(format!(
                "{} lifecycle: state {:?} is not the last entry of its history ({:?})",
                S::NAME,
                rec.state,
                lifecycle.state
            ));
        }
        Ok(lifecycle)
    }
}

/// A state's name as metas, logs and the server write it (`checkpoint_saved`, `in_use`).
pub fn state_name<S: Serialize + fmt::Debug>(state: S) -> String {
    serde_json::to_value(&state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{state:?}"))
}

impl<S: LifecycleState + Serialize> Lifecycle<S> {
    /// The states entered, in order, by name: `created → saved → loaded`.
    pub fn path(&self) -> String {
        let names: Vec<String> = self.history.iter().map(|(s, _)| state_name(*s)).collect();
        names.join(" → ")
    }
}

impl<S: LifecycleState> Lifecycle<S> {
    /// Starts in the initial state at `now`.
    pub fn new(now: DateTime<Utc>) -> Self {
        Self {
            state: S::INITIAL,
            history: vec![(S::INITIAL, now)],
        }
    }

    /// Starts in the initial state now.
    pub fn start() -> Self {
        Self::new(Utc::now())
    }

    /// [`advance`](Self::advance) now.
    pub fn advance_now(&mut self, next: S) -> Result<(), LifecycleError> {
        self.advance(next, Utc::now())
    }

    /// The current state.
    pub fn state(&self) -> S {
        self.state
    }

    /// Every state entered, with when.
    pub fn history(&self) -> &[(S, DateTime<Utc>)] {
        &self.history
    }

    /// Moves to `next`, or returns an error and stays where it is.
    pub fn advance(&mut self, next: S, now: DateTime<Utc>) -> Result<(), LifecycleError> {
        if !self.state.can_transition_to(next) {
            return Err(LifecycleError {
                lifecycle: S::NAME,
                from: format!("{:?}", self.state),
                to: format!("{next:?}"),
                allowed: format!("{:?}", self.state.next_states()),
            });
        }
        self.state = next;
        self.history.push((next, now));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> DateTime<Utc> {
        DateTime::from_timestamp(0, 0).unwrap()
    }

    #[test]
    fn checkpoint_cycle() {
        use CheckpointState::*;
        let mut l = Lifecycle::<CheckpointState>::new(t());
        for s in [Saved, Loaded, Validated, InUse, Saved] {
            l.advance(s, t()).unwrap();
        }
        let err = l.advance(InUse, t()).unwrap_err();
        assert_eq!(err.from, "Saved");
        assert_eq!(
            l.state(),
            Saved,
            "a refused transition leaves the state unchanged"
        );
    }

    #[test]
    fn training_resume_and_completion() {
        use TrainingState::*;
        let mut l = Lifecycle::<TrainingState>::new(t());
        for s in [
            Training,
            CheckpointSaved,
            Training,
            Interrupted,
            Resumed,
            Training,
            CheckpointSaved,
            Completed,
        ] {
            l.advance(s, t()).unwrap();
        }
        assert!(
            l.advance(Training, t()).is_err(),
            "nothing follows Completed"
        );
        // A run cannot complete without its final checkpoint.
        let mut l = Lifecycle::<TrainingState>::new(t());
        l.advance(Training, t()).unwrap();
        assert!(l.advance(Completed, t()).is_err());
    }

    #[test]
    fn tokenizer_cycle() {
        use TokenizerState::*;
        let mut l = Lifecycle::<TokenizerState>::new(t());
        assert!(
            l.advance(Trained, t()).is_err(),
            "no merges without training"
        );
        for s in [Training, Trained, Loaded] {
            l.advance(s, t()).unwrap();
        }
        assert!(l.advance(Training, t()).is_err(), "nothing follows Loaded");
        let back: Lifecycle<TokenizerState> =
            serde_json::from_value(serde_json::to_value(&l).unwrap()).unwrap();
        assert_eq!(back, l);
    }

    #[test]
    fn recorded_history_is_replayed() {
        let ok = r#"{"state":"trained","history":[["untrained","1970-01-01T00:00:00Z"],["training","1970-01-01T00:00:00Z"],["trained","1970-01-01T00:00:00Z"]]}"#;
        let l: Lifecycle<TokenizerState> = serde_json::from_str(ok).unwrap();
        assert_eq!(l.state(), TokenizerState::Trained);
        let skipped = ok.replace(r#"["training","1970-01-01T00:00:00Z"],"#, "");
        let err = serde_json::from_str::<Lifecycle<TokenizerState>>(&skipped).unwrap_err();
        assert!(err.to_string().contains("Untrained → Trained"), "{err}");
        let lying = ok.replace(r#""state":"trained""#, r#""state":"loaded""#);
        assert!(serde_json::from_str::<Lifecycle<TokenizerState>>(&lying).is_err());
        let late = ok.replace(r#"[["untrained","1970-01-01T00:00:00Z"],"#, "[");
        assert!(serde_json::from_str::<Lifecycle<TokenizerState>>(&late).is_err());
    }

    #[test]
    fn inference_request_cycle() {
        use InferenceState::*;
        let mut l = Lifecycle::<InferenceState>::new(t());
        for s in [
            ModelLoaded,
            Ready,
            Processing,
            Streaming,
            Complete,
            Ready,
            Processing,
            Error,
            Ready,
        ] {
            l.advance(s, t()).unwrap();
        }
        assert!(
            l.advance(Streaming, t()).is_err(),
            "Ready cannot stream before processing"
        );
    }
}
