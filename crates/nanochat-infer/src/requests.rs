//! The inference lifecycle of the server and of every generation request (no upstream
//! counterpart: upstream v0 `scripts/chat_web.py` keeps no record of its requests), shown by
//! `/health` and `/stats` the way llama.cpp's server shows its slots.
//!
//! - the server: Created → ModelLoaded → Ready when its workers attach ([`ServerState`]), or
//!   → Error when loading fails (then `/health` says why);
//! - a request: Created → ModelLoaded (admitted: the model is there) → Ready (queued) →
//!   Processing (a worker took it) → Streaming (first token) → Complete | Error.
//!
//! Design: every move goes through [`Lifecycle::advance`] inside this file; handlers and
//! workers hold a `RequestHandle` whose methods name the step (`queued`, `processing`,
//! `streaming`, `finish`). Finished requests are kept in a bounded list (the last
//! [`RECENT_REQUESTS`]) with their whole history and error, so a user can see what happened
//! to a request by its id.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::Utc;
use nanochat_core::lifecycle::{InferenceState, Lifecycle, LifecycleError, state_name};
use serde::Serialize;
use serde_json::{Value, json};

/// Finished requests kept for `/stats`.
pub const RECENT_REQUESTS: usize = 32;

/// The server's own lifecycle and the reason loading failed, if it did.
pub struct ServerState {
    inner: Mutex<(Lifecycle<InferenceState>, Option<String>)>,
}

impl Default for ServerState {
    fn default() -> Self {
        Self {
            inner: Mutex::new((Lifecycle::new(Utc::now()), None)),
        }
    }
}

impl ServerState {
    fn lock(&self) -> MutexGuard<'_, (Lifecycle<InferenceState>, Option<String>)> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The model is loaded and its workers run: Created → ModelLoaded → Ready.
    pub(crate) fn loaded(&self) -> Result<(), LifecycleError> {
        let mut g = self.lock();
        let mut next = g.0.clone();
        next.advance(InferenceState::ModelLoaded, Utc::now())?;
        next.advance(InferenceState::Ready, Utc::now())?;
        g.0 = next;
        Ok(())
    }

    /// Loading failed: Created → Error, with the reason.
    pub(crate) fn failed(&self, reason: String) -> Result<(), LifecycleError> {
        let mut g = self.lock();
        g.0.advance(InferenceState::Error, Utc::now())?;
        g.1 = Some(reason);
        Ok(())
    }

    /// The current state and, after a failed load, why.
    pub fn state(&self) -> (InferenceState, Option<String>) {
        let g = self.lock();
        (g.0.state(), g.1.clone())
    }

    /// The lifecycle as JSON (`{"state", "history": [["created", time], …]}`).
    pub(crate) fn lifecycle(&self) -> Value {
        serde_json::to_value(&self.lock().0).unwrap_or(Value::Null)
    }
}

/// One request's record.
#[derive(Debug, Clone, Serialize)]
pub struct Tracked {
    /// The id the client saw (`chatcmpl-…`, or the session's id and message number).
    pub id: String,
    /// Its lifecycle so far.
    pub lifecycle: Lifecycle<InferenceState>,
    /// Why it ended in Error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The requests in flight and the last finished ones.
#[derive(Default)]
pub struct Requests {
    inner: Mutex<Log>,
}

#[derive(Default)]
struct Log {
    active: HashMap<String, Tracked>,
    recent: VecDeque<Tracked>,
}

impl Requests {
    fn lock(&self) -> MutexGuard<'_, Log> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records request `id`, admitted with the model loaded: Created → ModelLoaded.
    pub(crate) fn admit(self: &Arc<Self>, id: String) -> RequestHandle {
        let now = Utc::now();
        let mut lifecycle = Lifecycle::new(now);
        // Created → ModelLoaded is always legal.
        let _ = lifecycle.advance(InferenceState::ModelLoaded, now);
        let tracked = Tracked {
            id: id.clone(),
            lifecycle,
            error: None,
        };
        self.lock().active.insert(id.clone(), tracked);
        RequestHandle {
            log: self.clone(),
            id,
            finished: false,
        }
    }

    /// The record of request `id` (in flight or recent).
    pub fn get(&self, id: &str) -> Option<Tracked> {
        let g = self.lock();
        g.active
            .get(id)
            .or_else(|| g.recent.iter().find(|t| t.id == id))
            .cloned()
    }

    /// `/stats`' view: how many requests are in each state, those in flight, and the recent
    /// ones (newest first) with their histories.
    pub(crate) fn snapshot(&self) -> Value {
        let g = self.lock();
        let mut by_state = BTreeMap::<String, usize>::new();
        for t in g.active.values().chain(g.recent.iter()) {
            *by_state.entry(state_name(t.lifecycle.state())).or_default() += 1;
        }
        let mut active: Vec<&Tracked> = g.active.values().collect();
        active.sort_by(|a, b| a.id.cmp(&b.id));
        let active: Vec<Value> = active
            .iter()
            .map(|t| json!({"id": t.id, "state": t.lifecycle.state()}))
            .collect();
        json!({
            "by_state": by_state,
            "active": active,
            "recent": g.recent.iter().rev().collect::<Vec<_>>(),
        })
    }
}

/// A request in flight; its methods are the steps of its lifecycle. Dropped without
/// [`RequestHandle::finish`] (its job was never run), it is filed with the state it reached.
pub(crate) struct RequestHandle {
    log: Arc<Requests>,
    id: String,
    finished: bool,
}

impl RequestHandle {
    fn advance(&self, next: InferenceState, error: Option<String>) {
        let mut g = self.log.lock();
        let Some(t) = g.active.get_mut(&self.id) else {
            return;
        };
        match t.lifecycle.advance(next, Utc::now()) {
            Ok(()) => t.error = t.error.take().or(error),
            Err(e) => tracing::warn!(request = %self.id, "{e}"),
        }
    }

    /// Waiting for a worker: ModelLoaded → Ready.
    pub(crate) fn queued(&self) {
        self.advance(InferenceState::Ready, None);
    }

    /// A worker took it (prefill): Ready → Processing.
    pub(crate) fn processing(&self) {
        self.advance(InferenceState::Processing, None);
    }

    /// The first token is out: Processing → Streaming.
    pub(crate) fn streaming(&self) {
        self.advance(InferenceState::Streaming, None);
    }

    /// Done: → Complete, or → Error with the reason.
    pub(crate) fn finish(mut self, result: Result<(), String>) {
        match result {
            Ok(()) => self.advance(InferenceState::Complete, None),
            Err(e) => self.advance(InferenceState::Error, Some(e)),
        }
        self.file();
    }

    /// Moves the record from the active set to the recent list.
    fn file(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        let mut g = self.log.lock();
        if let Some(t) = g.active.remove(&self.id) {
            if g.recent.len() == RECENT_REQUESTS {
                g.recent.pop_front();
            }
            g.recent.push_back(t);
        }
    }
}

impl Drop for RequestHandle {
    fn drop(&mut self) {
        self.file();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use InferenceState::*;

    fn states(t: &Tracked) -> Vec<InferenceState> {
        t.lifecycle.history().iter().map(|(s, _)| *s).collect()
    }

    #[test]
    fn a_request_is_recorded_through_its_lifecycle() {
        let log = Arc::new(Requests::default());
        let r = log.admit("a".into());
        r.queued();
        r.processing();
        // Out of order: refused, the record keeps its state.
        r.finish(Ok(()));
        let t = log.get("a").unwrap();
        assert_eq!(states(&t), [Created, ModelLoaded, Ready, Processing]);
        let r = log.admit("b".into());
        r.queued();
        r.processing();
        r.streaming();
        r.finish(Err("the client disconnected".into()));
        let t = log.get("b").unwrap();
        assert_eq!(
            states(&t),
            [Created, ModelLoaded, Ready, Processing, Streaming, Error]
        );
        assert_eq!(t.error.as_deref(), Some("the client disconnected"));
        let snap = log.snapshot();
        assert_eq!(snap["by_state"]["error"], 1);
        assert_eq!(snap["recent"][0]["id"], "b");
        for i in 0..RECENT_REQUESTS {
            log.admit(format!("c{i}")).finish(Ok(()));
        }
        assert!(
            log.get("a").is_none(),
            "only the last {RECENT_REQUESTS} are kept"
        );
    }

    #[test]
    fn the_server_is_ready_only_after_loading() {
        let s = ServerState::default();
        assert_eq!(s.state().0, Created);
        s.loaded().unwrap();
        assert_eq!(s.state().0, Ready);
        assert!(
            s.failed("late".into()).is_err(),
            "Ready → Error is not a step"
        );
        let s = ServerState::default();
        s.failed("no such checkpoint".into()).unwrap();
        assert_eq!(s.state(), (Error, Some("no such checkpoint".into())));
    }
}
