//! The three lifecycles of the data model as state machines whose illegal transitions return
//! an error:
//!
//! - checkpoint: Created → Saved → Loaded → Validated → InUse → Saved (→ Loaded …);
//! - training: Initialized → Training → CheckpointSaved → Training … → CheckpointSaved →
//!   Completed, with Interrupted → Resumed → Training from any running state;
//! - inference: Created → ModelLoaded → Ready → Processing → Streaming → Complete | Error, and
//!   back to Ready for the next request.
//!
//! [`Lifecycle`] holds the current state and the timestamped history of transitions.

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

/// A state machine with its history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lifecycle<S> {
    state: S,
    history: Vec<(S, DateTime<Utc>)>,
}

impl<S: LifecycleState> Lifecycle<S> {
    /// Starts in the initial state at `now`.
    pub fn new(now: DateTime<Utc>) -> Self {
        Self {
            state: S::INITIAL,
            history: vec![(S::INITIAL, now)],
        }
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
